//! jisr.adapter.v1.InboxService: agencies that accept no inbound connection pull their
//! deliveries and acknowledge each. A delivery not acknowledged within the visibility
//! timeout is offered again (at least once); acknowledging is idempotent.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};

use super::validate::Violations;
use crate::common::error::{ApiError, Reason};
use crate::common::time::{now_ms, timestamp};
use crate::domain::exchange::gateway::{settle_delivery, Fate};
use crate::layers::{self as auth, Caller};
use crate::pb::adapter_v1::inbox_service_server::InboxService;
use crate::pb::adapter_v1::*;
use crate::store::outbox::{OutboxRow, DEAD, DELIVERED};
use crate::store::Store;

const DEFAULT_MAX: i32 = 10;
const MAX: i32 = 100;
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct InboxApi {
    store: Store,
    /// Agencies whose adapter is `inbox`.
    pullers: Arc<HashSet<String>>,
    visibility_ms: i64,
    /// The longest long-poll: 60 s, and a second inside the call deadline.
    max_wait: Duration,
}

impl InboxApi {
    /// `pullers`: the agencies whose adapter is `inbox`; a pulled delivery not acknowledged
    /// within `visibility` is offered again; long polls end a second inside `call_timeout`.
    pub fn new(
        store: Store,
        pullers: impl IntoIterator<Item = String>,
        visibility: Duration,
        call_timeout: Duration,
    ) -> InboxApi {
        InboxApi {
            store,
            pullers: Arc::new(pullers.into_iter().collect()),
            visibility_ms: visibility.as_millis() as i64,
            max_wait: MAX_WAIT.min(call_timeout.saturating_sub(Duration::from_secs(1))),
        }
    }
}

fn to_delivery(row: &OutboxRow) -> Result<Delivery, ApiError> {
    let mut d = Delivery::decode(row.payload.as_slice())
        .map_err(|e| ApiError::corrupt(format!("delivery {}: {e}", row.delivery_id)))?;
    d.metadata = Some(DeliveryMetadata {
        delivery_id: row.delivery_id.clone(),
        attempt: row.attempts as u32,
        created_at: Some(timestamp(row.created_at)),
        traceparent: row.traceparent.clone(),
    });
    d.visibility_deadline = Some(timestamp(row.next_attempt_at));
    Ok(d)
}

#[tonic::async_trait]
impl InboxService for InboxApi {
    async fn pull_deliveries(
        &self,
        request: Request<PullDeliveriesRequest>,
    ) -> Result<Response<PullDeliveriesResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.pull(&caller, request.into_inner()).await)
    }

    async fn ack_delivery(
        &self,
        request: Request<AckDeliveryRequest>,
    ) -> Result<Response<AckDeliveryResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.ack(&caller, request.into_inner()).await)
    }
}

impl InboxApi {
    async fn pull(
        &self,
        caller: &Caller,
        req: PullDeliveriesRequest,
    ) -> Result<PullDeliveriesResponse, ApiError> {
        let mut v = Violations::default();
        v.check(
            (0..=MAX).contains(&req.max_deliveries),
            "max_deliveries",
            format!("must be between 0 and {MAX} (0 means {DEFAULT_MAX})"),
        );
        let wait = match &req.wait {
            None => Duration::ZERO,
            Some(w) if w.seconds >= 0 && (0..1_000_000_000).contains(&w.nanos) => {
                Duration::new(w.seconds as u64, w.nanos as u32).min(self.max_wait)
            }
            Some(_) => {
                v.add("wait", "must be a non-negative duration");
                Duration::ZERO
            }
        };
        v.finish()?;
        if !self.pullers.contains(caller.agency()) {
            return Err(ApiError::refused(
                Reason::NotAnInboxAgency,
                format!(
                    "deliveries to {} are pushed to its endpoint by its adapter; only agencies with adapter kind \"inbox\" pull",
                    caller.agency()
                ),
            )
            .with("agency", caller.agency()));
        }
        let max = i64::from(if req.max_deliveries == 0 {
            DEFAULT_MAX
        } else {
            req.max_deliveries
        });
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.store.outbox_changes();
        loop {
            changes.borrow_and_update();
            let agency = caller.agency().to_string();
            let visibility = self.visibility_ms;
            let (rows, _) = self
                .store
                .write(None, move |tx| {
                    Box::pin(async move {
                        let now = now_ms();
                        tx.lease_due(&agency, now, now + visibility, max).await
                    })
                })
                .await?;
            if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
                let deliveries = rows.iter().map(to_delivery).collect::<Result<_, _>>()?;
                return Ok(PullDeliveriesResponse { deliveries });
            }
            // Long poll: wake on a new delivery, or look again when a lease may have ended.
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn ack(
        &self,
        caller: &Caller,
        req: AckDeliveryRequest,
    ) -> Result<AckDeliveryResponse, ApiError> {
        let mut v = Violations::default();
        v.ulid("delivery_id", &req.delivery_id);
        let outcome = v.enum_value::<AckOutcome>(
            "outcome",
            req.outcome,
            true,
            "ACCEPTED or REJECTED_PERMANENT",
        );
        v.max_len("receipt_id", &req.receipt_id, 200);
        v.max_len("error_message", &req.error_message, 2000);
        v.finish()?;
        let Some(outcome) = outcome else {
            // Not reached: a missing outcome is a violation, so finish() returned above.
            return Err(ApiError::Invalid(vec![tonic_types::FieldViolation::new(
                "outcome",
                "is required",
            )]));
        };
        caller.audit.set_target(&req.delivery_id, "");
        let agency = caller.agency().to_string();
        let (response, _) = self
            .store
            .write(Some(&caller.audit), move |tx| {
                Box::pin(async move {
                    let now = now_ms();
                    // Another agency's delivery is not found either (audited as a refusal).
                    let row = match tx.delivery(&req.delivery_id).await? {
                        Some(r) if r.agency == agency => r,
                        other => {
                            return Err(ApiError::Hidden {
                                kind: "delivery",
                                id: req.delivery_id.clone(),
                                refused_by: other.is_some().then_some("delivery.recipient"),
                            })
                        }
                    };
                    // Acknowledged before (a retried ack): nothing changes.
                    if row.state != DELIVERED && row.state != DEAD {
                        let error = format!("rejected by {agency}: {}", req.error_message);
                        let fate = if outcome == AckOutcome::Accepted {
                            Fate::Delivered {
                                receipt: &req.receipt_id,
                            }
                        } else {
                            Fate::GivenUp { error: &error }
                        };
                        settle_delivery(tx, &row, fate, now).await?;
                    }
                    let receipt = tx.audit_receipt()?;
                    Ok::<_, ApiError>(AckDeliveryResponse {
                        audit_receipt: Some(receipt.to_proto()),
                    })
                })
            })
            .await?;
        Ok(response)
    }
}
