//! `jisr bench`: drives SubmitReferral over mTLS with C connections and N calls in flight
//! for D seconds, then prints throughput and latency percentiles as one JSON line.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tonic::transport::Channel;

use crate::pb::v1::referral_service_client::ReferralServiceClient;
use crate::pb::v1::*;
use crate::server::config::Config;

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
}

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.in_flight > 0 && args.duration > 0,
        "connections, in-flight and duration must be positive"
    );
    let mut sandbox = None;
    let mut channels: Vec<Channel> = Vec::with_capacity(args.connections);
    let addr = if args.sandbox {
        let (sb, sim) =
            super::sandbox::Sandbox::start(&[args.to.as_str()], &[], Default::default()).await?;
        for _ in 0..args.connections {
            channels.push(sb.channel(&args.from).await?);
        }
        let addr = sb.addr();
        sandbox = Some((sb, sim));
        addr
    } else {
        let creds = super::dev_credentials(config, &args.from)?;
        let addr = super::dial_addr(config, args.addr.as_deref());
        for _ in 0..args.connections {
            channels.push(
                crate::tls::client::connect(&addr, &args.server_name, &creds)
                    .await
                    .with_context(|| format!("connecting to {addr}"))?,
            );
        }
        addr
    };
    let run_id = ulid::Ulid::new().to_string();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut workers = Vec::with_capacity(args.in_flight);
    for worker in 0..args.in_flight {
        let mut client = ReferralServiceClient::new(channels[worker % channels.len()].clone());
        let (to, service, run_id) = (args.to.clone(), args.service.clone(), run_id.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u64> = Vec::new();
            let mut replies: Vec<(String, Instant)> = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let request = SubmitReferralRequest {
                    request_id: format!("bench-{run_id}-{worker}-{seq}"),
                    referral: Some(sample_referral(&to, &service)),
                };
                let t = Instant::now();
                match client.submit_referral(request).await {
                    Ok(r) => {
                        latencies_us.push(t.elapsed().as_micros() as u64);
                        if let Some(referral) = r.into_inner().referral {
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
    let mut latencies = Vec::new();
    let mut replies = std::collections::HashMap::new();
    let (mut errors, mut first_error) = (0, None);
    for w in workers {
        let (l, e, f, r) = w.await?;
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
        replies.extend(r);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivery = match sandbox {
        Some((mut sb, sim)) => {
            let report = delivery_report(&sim, &replies, started, elapsed).await;
            sb.stop().await?;
            Some(report)
        }
        None => None,
    };
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[idx.clamp(1, latencies.len()) - 1] as f64 / 1000.0
    };
    let line = serde_json::json!({
        "rpc": "SubmitReferral",
        "addr": addr,
        "connections": args.connections,
        "in_flight": args.in_flight,
        "duration_s": args.duration,
        "ok": latencies.len(),
        "errors": errors,
        "first_error": first_error,
        "throughput_rps": (latencies.len() as f64 / elapsed * 10.0).round() / 10.0,
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "p999_ms": pct(99.9),
        "max_ms": latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        "delivery": delivery,
    });
    println!("{line}");
    Ok(())
}

/// Waits for the simulated agency to receive every submitted referral (up to 60 s), then
/// measures deliveries per second during the run and reply-to-receipt latency.
async fn delivery_report(
    sim: &crate::simulation::MockEndpoint,
    replies: &std::collections::HashMap<String, Instant>,
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
    let pct = |p: f64| -> f64 {
        if lat_us.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * lat_us.len() as f64).ceil() as usize;
        lat_us[idx.clamp(1, lat_us.len()) - 1] as f64 / 1000.0
    };
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
