//! `jisr demo`: the closed loop of a referral, end to end, on loopback, with nothing to set
//! up: a gateway and simulated agency systems in a temporary directory. It prints a
//! timeline and exits 0, or non-zero naming the step that failed.
//!
//! Agencies, one per adapter kind: the Social Services Department pulls from its inbox
//! (`inbox`); the Housing Department's system is called over mTLS (`grpc`); the Charity
//! Association's system takes HTTPS/JSON, reshaped by a declarative mapping (`rest`).
//!
//! `jisr demo joint` walks an application for the building completion certificate through
//! its nine clearances instead (`joint.rs`).

mod joint;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tonic::transport::Channel;

use super::sandbox::Sandbox;
use crate::pb::adapter_v1::inbox_service_client::InboxServiceClient;
use crate::pb::adapter_v1::{
    delivery, status_update, AckDeliveryRequest, AckOutcome, Delivery, PullDeliveriesRequest,
};
use crate::pb::v1::referral_service_client::ReferralServiceClient;
use crate::pb::v1::*;
use crate::simulation::MockEndpoint;

pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct Timeline {
    started: Instant,
    step: usize,
}

impl Timeline {
    pub(super) fn new() -> Timeline {
        Timeline {
            started: Instant::now(),
            step: 0,
        }
    }
    pub(super) fn ok(&mut self, text: String) {
        self.step += 1;
        println!(
            "[{:>7.3}s] step {:>2} ✓ {text}",
            self.started.elapsed().as_secs_f64(),
            self.step
        );
    }
    pub(super) fn fail(&self, name: &str, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("demo step {} ({name}) failed: {e:#}", self.step + 1)
    }
}

/// Which loop the demo walks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Scenario {
    /// A referral across three agencies, one per adapter kind.
    Referral,
    /// An application for a joint service through its clearances.
    Joint,
}

pub async fn run(scenario: Scenario) -> anyhow::Result<()> {
    if let Scenario::Joint = scenario {
        return joint::run().await;
    }
    println!("Jisr demo: a referral's closed loop across three agencies, on loopback.\n");
    let mapping: crate::adapters::rest::RestMappings = toml::from_str(CHARITY_MAPPING)?;
    let (sandbox, systems) = Sandbox::start(&["housing"], &["charity"], mapping)
        .await
        .context("starting the sandbox")?;
    println!("  gateway on {} (mTLS, TLS 1.3)", sandbox.addr());
    println!("  Social Services Department: pulls from its inbox           (adapter inbox)");
    println!("  Housing Department:         its system is called over gRPC (adapter grpc)");
    println!("  Charity Association:        its system takes HTTPS/JSON    (adapter rest)\n");
    let mut t = Timeline::new();
    let result = walk(&sandbox, &systems, &mut t).await;
    conclude(
        sandbox,
        t,
        result,
        "The loop closed: every status change reached the sender. Done.",
    )
    .await
}

/// Ends a demo: the walk's failure, or the audit trail it wrote verified and `done`.
pub(super) async fn conclude(
    sandbox: Sandbox,
    mut t: Timeline,
    walked: anyhow::Result<()>,
    done: &str,
) -> anyhow::Result<()> {
    let verify = sandbox_verify(sandbox).await;
    match (walked, verify) {
        (Ok(()), Ok(summary)) => {
            t.ok(summary);
            println!("\n{done}");
            Ok(())
        }
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(t.fail("verify the audit trail", e)),
    }
}

async fn walk(
    sandbox: &Sandbox,
    housing_system: &MockEndpoint,
    t: &mut Timeline,
) -> anyhow::Result<()> {
    let mut social = ReferralServiceClient::new(sandbox.channel("social-services").await?);
    let mut housing = ReferralServiceClient::new(sandbox.channel("housing").await?);
    let mut social_inbox = InboxServiceClient::new(sandbox.channel("social-services").await?);

    let submitted = social
        .submit_referral(SubmitReferralRequest {
            request_id: format!("demo-{}", ulid::Ulid::new()),
            referral: Some(family_referral(
                "housing",
                "housing-support",
                ReferralCategory::Housing,
                ReferralPriority::Urgent,
                "Family of five facing eviction; needs emergency housing support.",
            )),
        })
        .await
        .map_err(|s| t.fail("submit the referral", anyhow::anyhow!("{s}")))?
        .into_inner();
    let id = submitted
        .referral
        .as_ref()
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let leaf = submitted.audit_receipt.as_ref().map_or(0, |r| r.leaf_index);
    t.ok(format!("Social Services submitted referral {id} to Housing (SUBMITTED; audit receipt: leaf {leaf})"));

    let want = format!("referral {id}");
    housing_system
        .wait_for("the referral", |a| a.what == want, STEP_TIMEOUT)
        .await
        .map_err(|e| t.fail("deliver to Housing's system", e))?;
    t.ok("Housing's system received it through the grpc adapter".into());

    hear(&mut social_inbox, &id, ReferralStatus::Delivered)
        .await
        .map_err(|e| t.fail("tell the sender DELIVERED", e))?;
    t.ok("the gateway marked it DELIVERED; Social Services heard it in its inbox".into());

    for (status, outcome, what) in [
        (
            ReferralStatus::Accepted,
            ReferralOutcome::Unspecified,
            "accepted the case",
        ),
        (
            ReferralStatus::InProgress,
            ReferralOutcome::Unspecified,
            "started work (IN_PROGRESS)",
        ),
        (
            ReferralStatus::Completed,
            ReferralOutcome::Resolved,
            "completed it (outcome RESOLVED)",
        ),
    ] {
        let name = format!("Housing sets {status:?}");
        housing
            .update_referral_status(UpdateReferralStatusRequest {
                referral_id: id.clone(),
                request_id: format!("demo-{}", ulid::Ulid::new()),
                status: status as i32,
                outcome: outcome as i32,
                ..Default::default()
            })
            .await
            .map_err(|s| t.fail(&name, anyhow::anyhow!("{s}")))?;
        hear(&mut social_inbox, &id, status)
            .await
            .map_err(|e| t.fail(&format!("tell the sender {status:?}"), e))?;
        t.ok(format!("Housing {what}; Social Services heard it"));
    }

    let history = social
        .get_referral(GetReferralRequest {
            referral_id: id.clone(),
        })
        .await
        .map_err(|s| t.fail("read the history", anyhow::anyhow!("{s}")))?
        .into_inner()
        .referral
        .map(|r| r.status_history)
        .unwrap_or_default();
    let path: Vec<String> = history
        .iter()
        .map(|c| {
            format!(
                "{} (by {})",
                c.status()
                    .as_str_name()
                    .trim_start_matches("REFERRAL_STATUS_"),
                c.actor_agency
            )
        })
        .collect();
    if path.len() != 5 {
        bail!(t.fail(
            "read the history",
            anyhow::anyhow!("expected 5 status changes, got {path:?}")
        ));
    }
    t.ok(format!(
        "history as the sender sees it: {}",
        path.join(" → ")
    ));

    // Onward: Housing refers the family to the Charity Association, whose system takes REST.
    let onward = housing
        .submit_referral(SubmitReferralRequest {
            request_id: format!("demo-{}", ulid::Ulid::new()),
            referral: Some(family_referral(
                "charity",
                "financial-aid",
                ReferralCategory::FinancialHardship,
                ReferralPriority::Routine,
                "Rehoused; needs help with the first months' rent.",
            )),
        })
        .await
        .map_err(|s| t.fail("refer onward to the charity", anyhow::anyhow!("{s}")))?
        .into_inner()
        .referral
        .map(|r| r.id)
        .unwrap_or_default();
    t.ok(format!(
        "Housing referred the family onward to the Charity Association ({onward})"
    ));
    let arrived = housing_system
        .wait_for(
            "the onward referral at the charity",
            |a| a.what.starts_with("rest ") && a.referral_id == onward,
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| t.fail("deliver to the charity's REST system", e))?;
    let body: serde_json::Value =
        serde_json::from_str(arrived.what.trim_start_matches("rest ")).unwrap_or_default();
    t.ok(format!(
        "the Charity's system received it as JSON, reshaped by its mapping: {}",
        serde_json::json!({ "case": body["case"], "source": body["source"] })
    ));
    let delivered = format!("status {onward} DELIVERED");
    housing_system
        .wait_for(
            "DELIVERED at Housing's system",
            |a| a.what == delivered,
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| t.fail("tell Housing's system DELIVERED", e))?;
    t.ok("DELIVERED; Housing's own system heard it through the grpc adapter".into());
    Ok(())
}

/// The Charity Association's mapping, as an operator would write it in config/jisr.toml.
const CHARITY_MAPPING: &str = r#"
[referral]
path = "/cases"
rename = { "id" = "case.jisr_id", "subject.full_name" = "case.beneficiary", "summary" = "case.summary" }
constants = { "source" = "jisr" }
drop = ["attachments", "consent", "status_history"]
"#;

/// The demo family's case, referred to `to`.
fn family_referral(
    to: &str,
    service: &str,
    category: ReferralCategory,
    priority: ReferralPriority,
    summary: &str,
) -> Referral {
    Referral {
        to_agency: to.into(),
        service_code: service.into(),
        category: category as i32,
        priority: priority as i32,
        subject: demo_subject("Demo Family", "أسرة تجريبية"),
        summary: summary.into(),
        ..Referral::default()
    }
}

/// Pulls the sender's inbox until the status update for `id` arrives; acknowledges all.
async fn hear(
    inbox: &mut InboxServiceClient<Channel>,
    id: &str,
    want: ReferralStatus,
) -> anyhow::Result<()> {
    pull_until(inbox, |d| match &d.payload {
        Some(delivery::Payload::StatusUpdate(u)) => matches!(
            &u.target,
            Some(status_update::Target::Referral(r))
                if r.referral_id == id && r.change.as_ref().is_some_and(|c| c.status() == want)
        ),
        _ => false,
    })
    .await
    .with_context(|| format!("no {want:?} update for {id}"))
}

/// The demo's person, by the sample Emirates ID number.
pub(super) fn demo_subject(name: &str, name_ar: &str) -> Option<Subject> {
    super::client::subject("784-1990-1234567-6".into(), name.into(), name_ar.into())
}

/// Pulls `inbox` until a delivery `want` accepts arrives; acknowledges everything.
pub(super) async fn pull_until(
    inbox: &mut InboxServiceClient<Channel>,
    want: impl Fn(&Delivery) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while Instant::now() < deadline {
        let pulled = inbox
            .pull_deliveries(PullDeliveriesRequest {
                max_deliveries: 10,
                wait: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
            })
            .await?
            .into_inner()
            .deliveries;
        let mut found = false;
        for d in pulled {
            found |= want(&d);
            inbox
                .ack_delivery(AckDeliveryRequest {
                    delivery_id: d.metadata.map(|m| m.delivery_id).unwrap_or_default(),
                    outcome: AckOutcome::Accepted as i32,
                    receipt_id: "demo".into(),
                    error_message: String::new(),
                })
                .await?;
        }
        if found {
            return Ok(());
        }
    }
    bail!("nothing arrived within {STEP_TIMEOUT:?}")
}

/// Stops the gateway (its final checkpoint) and verifies the audit trail it wrote.
async fn sandbox_verify(mut sandbox: Sandbox) -> anyhow::Result<String> {
    let config = sandbox.config.clone();
    let key = std::fs::read_to_string(crate::audit::verifier_key_path(&config.audit.signing_key))?;
    sandbox.stop().await?;
    let db = crate::store::Store::open_reads(&config.database).await?;
    let reports = crate::audit::verify::verify(
        &db,
        &crate::audit::verify::VerifyOptions {
            log_id: None,
            verifier_key: key.trim().to_string(),
            trusted_note: None,
            grace_ms: 0,
            progress: false,
        },
    )
    .await?;
    db.close().await;
    let r = reports.first().context("no audit log was written")?;
    Ok(format!(
        "the audit trail verifies: {} entries, every one covered by a signed checkpoint",
        r.entries
    ))
}
