//! `jisr bench`: drives SubmitReferral (or GetReferral) over mTLS with C connections and N
//! calls in flight for D seconds, then prints throughput and latency percentiles as one JSON
//! line. With `--baseline` it first measures an in-process echo over the same transport
//! (`echo.rs`), with the same C, N and D, and gives every figure with its ratio to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tonic::transport::Channel;

use super::echo::EchoServer;
use crate::pb::v1::audit_service_client::AuditServiceClient;
use crate::pb::v1::referral_service_client::ReferralServiceClient;
use crate::pb::v1::*;
use crate::server::config::Config;
use crate::tls::client::AgencyCredentials;

#[derive(Args)]
pub struct BenchArgs {
    /// TLS connections (C).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once across all connections (N).
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Seconds to run (D).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The calls measured, one after the other (comma-separated), each printing its line.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "submit")]
    rpc: Vec<Rpc>,
    /// The agency that calls AuditService for `--rpc audit` (it must hold the auditor role).
    #[arg(long, default_value = "digital")]
    auditor: String,
    /// Sending agency.
    #[arg(long, default_value = "social-services")]
    from: String,
    /// Receiving agency.
    #[arg(long, default_value = "housing")]
    to: String,
    /// A service the receiving agency offers.
    #[arg(long, default_value = "housing-support")]
    service: String,
    /// Gateway address (default: listen_addr from the config).
    #[arg(long)]
    addr: Option<String>,
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Run against an in-process gateway whose recipient is a simulated agency system
    /// behind the grpc adapter, and also measure delivery: deliveries per second and the
    /// time from SubmitReferral's reply to the agency receiving the referral.
    #[arg(long)]
    sandbox: bool,
    /// First measure an in-process echo of the same RPC over the same TLS and HTTP/2 stack
    /// (same connections, in-flight and duration), and report every figure with its ratio
    /// to that baseline.
    #[arg(long)]
    baseline: bool,
    /// With --sandbox: before the run, write this many referrals (a third sent by --from,
    /// a third received by it, a third between two other agencies), each with its event,
    /// and as many audit entries, straight into the sandbox's store, so the cost of a call
    /// can be compared at 1,000 and 1,000,000 rows.
    #[arg(long, default_value_t = 0, requires = "sandbox")]
    seed: u64,
}

/// The RPC a benchmark drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rpc {
    /// SubmitReferral: each call a new, valid referral with its own request_id.
    Submit,
    /// GetReferral of referrals submitted before the run (read path).
    Get,
    /// ListReferrals, both directions (the default), first page.
    List,
    /// ListReferrals, received only, first page.
    ListReceived,
    /// WatchReferralEvents from the oldest event: the time to its first event.
    Watch,
    /// QueryAuditEvents, first page, as --auditor.
    Audit,
    /// QueryAuditEvents of the last hour, first page.
    AuditSince,
    /// QueryAuditEvents of one target id, first page.
    AuditTarget,
}

impl Rpc {
    fn method(self) -> &'static str {
        match self {
            Rpc::Submit => "SubmitReferral",
            Rpc::Get => "GetReferral",
            Rpc::List => "ListReferrals",
            Rpc::ListReceived => "ListReferrals (received)",
            Rpc::Watch => "WatchReferralEvents (from the oldest)",
            Rpc::Audit => "QueryAuditEvents",
            Rpc::AuditSince => "QueryAuditEvents (last hour)",
            Rpc::AuditTarget => "QueryAuditEvents (one target)",
        }
    }
}

/// How many referrals a GetReferral run reads, round-robin.
const GET_SET: usize = 100;

/// What one run measured.
struct Measured {
    /// Latency of each successful call, µs, sorted.
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    /// Submitted referral id → when its reply arrived (delivery latency).
    replies: HashMap<String, Instant>,
    started: Instant,
    elapsed_s: f64,
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed_s
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.latencies_us.len(),
            "errors": self.errors,
            "first_error": self.first_error,
            "throughput_rps": round1(self.throughput()),
            "p50_ms": self.percentile_ms(50.0),
            "p90_ms": self.percentile_ms(90.0),
            "p99_ms": self.percentile_ms(99.0),
            "p999_ms": self.percentile_ms(99.9),
            "max_ms": self.latencies_us.last().map_or(0.0, |m| *m as f64 / 1000.0),
        })
    }

    /// Each figure divided by the baseline's (throughput: higher is better; latency: lower).
    fn ratio_to(&self, base: &Measured) -> serde_json::Value {
        let r = |a: f64, b: f64| {
            if b > 0.0 {
                (a / b * 1000.0).round() / 1000.0
            } else {
                0.0
            }
        };
        serde_json::json!({
            "throughput": r(self.throughput(), base.throughput()),
            "p50": r(self.percentile_ms(50.0), base.percentile_ms(50.0)),
            "p90": r(self.percentile_ms(90.0), base.percentile_ms(90.0)),
            "p99": r(self.percentile_ms(99.0), base.percentile_ms(99.0)),
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The `p`-th percentile of sorted µs latencies, in ms (nearest rank).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[idx.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

async fn connect_all(
    addr: &str,
    server_name: &str,
    creds: &AgencyCredentials,
    n: usize,
) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            crate::tls::client::connect(addr, server_name, creds)
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(channels)
}

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.in_flight > 0 && args.duration > 0,
        "connections, in-flight and duration must be positive"
    );
    anyhow::ensure!(
        !args.baseline || args.rpc.iter().all(|r| matches!(r, Rpc::Submit | Rpc::Get)),
        "the echo baseline answers submit and get only"
    );
    // The gateway under test, and how to reach it.
    let mut sandbox = None;
    let (addr, server_name, target_config) = if args.sandbox {
        let (sb, sim) =
            super::sandbox::Sandbox::start(&[args.to.as_str()], &[], Default::default()).await?;
        let found = (sb.addr(), "localhost".to_string(), sb.config.clone());
        if args.seed > 0 {
            let store = &sb.gateway.as_ref().context("the sandbox's gateway")?.store;
            super::seed::seed(store, args.seed, &args.from, &args.to).await?;
        }
        sandbox = Some((sb, sim));
        found
    } else {
        (
            super::dial_addr(config, args.addr.as_deref()),
            args.server_name.clone(),
            config.clone(),
        )
    };
    for &rpc in &args.rpc {
        // AuditService answers auditors only.
        let caller = if matches!(rpc, Rpc::Audit | Rpc::AuditSince | Rpc::AuditTarget) {
            &args.auditor
        } else {
            &args.from
        };
        let creds = match &sandbox {
            Some((sb, _)) => sb.credentials(caller)?,
            None => super::dev_credentials(config, caller)?,
        };
        let channels = connect_all(&addr, &server_name, &creds, args.connections).await?;
        let reads = match rpc {
            Rpc::Get => seed(&channels[0], &args).await?,
            _ => Vec::new(),
        };
        let baseline = if args.baseline {
            let stored = match reads.first() {
                Some(id) => ReferralServiceClient::new(channels[0].clone())
                    .get_referral(GetReferralRequest {
                        referral_id: id.clone(),
                    })
                    .await?
                    .into_inner()
                    .referral
                    .unwrap_or_default(),
                None => Referral::default(),
            };
            let echo = EchoServer::start(&target_config, stored).await?;
            let echo_channels = connect_all(
                &echo.addr.to_string(),
                "localhost",
                &creds,
                args.connections,
            )
            .await?;
            let measured = load(&echo_channels, rpc, &args, &reads).await?;
            drop(echo_channels);
            echo.stop().await?;
            Some(measured)
        } else {
            None
        };
        let measured = load(&channels, rpc, &args, &reads).await?;
        let delivery = match &sandbox {
            Some((_, sim)) if rpc == Rpc::Submit => Some(
                delivery_report(sim, &measured.replies, measured.started, measured.elapsed_s).await,
            ),
            _ => None,
        };
        let mut line = serde_json::json!({
            "rpc": rpc.method(),
            "seeded": args.seed,
            "addr": addr,
            "connections": args.connections,
            "in_flight": args.in_flight,
            "duration_s": args.duration,
        });
        let fields = line.as_object_mut().context("a JSON object")?;
        if let serde_json::Value::Object(summary) = measured.summary() {
            fields.extend(summary);
        }
        if let Some(base) = &baseline {
            fields.insert("baseline".into(), base.summary());
            fields.insert("ratio_to_baseline".into(), measured.ratio_to(base));
        }
        fields.insert("delivery".into(), delivery.into());
        println!("{line}");
    }
    if let Some((mut sb, _)) = sandbox {
        sb.stop().await?;
    }
    Ok(())
}

/// Submits the referrals a GetReferral run reads; answers their ids.
async fn seed(channel: &Channel, args: &BenchArgs) -> anyhow::Result<Vec<String>> {
    let mut client = ReferralServiceClient::new(channel.clone());
    let run_id = ulid::Ulid::new().to_string();
    let mut ids = Vec::with_capacity(GET_SET);
    for i in 0..GET_SET {
        let answer = client
            .submit_referral(SubmitReferralRequest {
                request_id: format!("bench-seed-{run_id}-{i}"),
                referral: Some(sample_referral(&args.to, &args.service)),
            })
            .await
            .context("submitting the referrals GetReferral reads")?;
        if let Some(r) = answer.into_inner().referral {
            ids.push(r.id);
        }
    }
    Ok(ids)
}

fn audit_query(rpc: Rpc) -> QueryAuditEventsRequest {
    match rpc {
        Rpc::AuditSince => QueryAuditEventsRequest {
            start_time: Some(crate::common::time::timestamp(
                crate::common::time::now_ms() - 3_600_000,
            )),
            ..QueryAuditEventsRequest::default()
        },
        Rpc::AuditTarget => QueryAuditEventsRequest {
            target_id: "01J0000000BENCHTARGET00000".into(),
            ..QueryAuditEventsRequest::default()
        },
        _ => QueryAuditEventsRequest::default(),
    }
}

/// Opens a watch from the oldest event and waits for the first one.
async fn first_event(client: &mut ReferralServiceClient<Channel>) -> Result<(), tonic::Status> {
    let mut stream = client
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await?
        .into_inner();
    match stream.message().await? {
        Some(_) => Ok(()),
        None => Err(tonic::Status::not_found("the watch ended without an event")),
    }
}

/// N workers over the channels for D seconds.
async fn load(
    channels: &[Channel],
    rpc: Rpc,
    args: &BenchArgs,
    reads: &[String],
) -> anyhow::Result<Measured> {
    let run_id = ulid::Ulid::new().to_string();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut workers = Vec::with_capacity(args.in_flight);
    for worker in 0..args.in_flight {
        let channel = channels[worker % channels.len()].clone();
        let mut client = ReferralServiceClient::new(channel.clone());
        let mut auditor = AuditServiceClient::new(channel);
        let (to, service, run_id) = (args.to.clone(), args.service.clone(), run_id.clone());
        let reads = reads.to_vec();
        workers.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u64> = Vec::new();
            let mut replies: Vec<(String, Instant)> = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let t = Instant::now();
                let answer = match rpc {
                    Rpc::Submit => client
                        .submit_referral(SubmitReferralRequest {
                            request_id: format!("bench-{run_id}-{worker}-{seq}"),
                            referral: Some(sample_referral(&to, &service)),
                        })
                        .await
                        .map(|r| r.into_inner().referral),
                    Rpc::Get => client
                        .get_referral(GetReferralRequest {
                            referral_id: reads[(worker + seq as usize) % reads.len()].clone(),
                        })
                        .await
                        .map(|_| None),
                    Rpc::List | Rpc::ListReceived => client
                        .list_referrals(ListReferralsRequest {
                            direction: if rpc == Rpc::ListReceived {
                                ReferralDirection::Received as i32
                            } else {
                                ReferralDirection::Unspecified as i32
                            },
                            ..ListReferralsRequest::default()
                        })
                        .await
                        .map(|_| None),
                    Rpc::Watch => first_event(&mut client).await.map(|_| None),
                    Rpc::Audit | Rpc::AuditSince | Rpc::AuditTarget => auditor
                        .query_audit_events(audit_query(rpc))
                        .await
                        .map(|_| None),
                };
                match answer {
                    Ok(referral) => {
                        latencies_us.push(t.elapsed().as_micros() as u64);
                        if let Some(referral) = referral {
                            replies.push((referral.id, Instant::now()));
                        }
                    }
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
            }
            (latencies_us, errors, first_error, replies)
        }));
    }
    let mut m = Measured {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
        replies: HashMap::new(),
        started,
        elapsed_s: 0.0,
    };
    for w in workers {
        let (l, e, f, r) = w.await?;
        m.latencies_us.extend(l);
        m.errors += e;
        m.first_error = m.first_error.or(f);
        m.replies.extend(r);
    }
    m.elapsed_s = started.elapsed().as_secs_f64();
    m.latencies_us.sort_unstable();
    Ok(m)
}

/// Waits for the simulated agency to receive every submitted referral (up to 60 s), then
/// measures deliveries per second during the run and reply-to-receipt latency.
async fn delivery_report(
    sim: &crate::simulation::MockEndpoint,
    replies: &HashMap<String, Instant>,
    started: Instant,
    elapsed: f64,
) -> serde_json::Value {
    let load_end = started + Duration::from_secs_f64(elapsed);
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |sim: &crate::simulation::MockEndpoint| {
        sim.arrivals()
            .iter()
            .filter(|a| replies.contains_key(&a.referral_id))
            .count()
    };
    while count(sim) < replies.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = sim.arrivals();
    let mut lat_us: Vec<u64> = arrivals
        .iter()
        .filter_map(|a| {
            replies
                .get(&a.referral_id)
                .map(|r| a.at.saturating_duration_since(*r).as_micros() as u64)
        })
        .collect();
    lat_us.sort_unstable();
    let during = arrivals.iter().filter(|a| a.at <= load_end).count();
    let last = arrivals.iter().map(|a| a.at).max().unwrap_or(load_end);
    let pct = |p: f64| percentile_ms(&lat_us, p);
    serde_json::json!({
        "submitted": replies.len(),
        "delivered": lat_us.len(),
        "deliveries_per_s_during_load": (during as f64 / elapsed * 10.0).round() / 10.0,
        "backlog_drained_ms_after_load": last.saturating_duration_since(load_end).as_millis(),
        "reply_to_receipt_p50_ms": pct(50.0),
        "reply_to_receipt_p99_ms": pct(99.0),
        "reply_to_receipt_max_ms": lat_us.last().map_or(0.0, |m| *m as f64 / 1000.0),
    })
}

/// A valid referral with a realistic size.
fn sample_referral(to: &str, service: &str) -> Referral {
    Referral {
        to_agency: to.to_string(),
        service_code: service.to_string(),
        category: ReferralCategory::FinancialHardship as i32,
        priority: ReferralPriority::Routine as i32,
        subject: Some(Subject {
            identifier: Some(PersonIdentifier {
                r#type: IdentifierType::EmiratesId as i32,
                value: "784-1990-1234567-6".into(),
                issuing_country: String::new(),
            }),
            full_name: "Load Test Person".into(),
            full_name_ar: "شخص اختبار".into(),
            date_of_birth: "1990-01-01".into(),
            contact: None,
        }),
        summary: "Family of five facing eviction after loss of income; needs assessment for housing support.".into(),
        reason: "Housing support is within the receiving agency's mandate.".into(),
        ..Referral::default()
    }
}
