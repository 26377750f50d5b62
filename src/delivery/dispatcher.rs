//! Drains the outbox: leases due deliveries of agencies that take pushes, delivers each
//! through the agency's adapter, and records the outcome, with a per-agency concurrency
//! limit and circuit breaker. A lease outlives one attempt's deadline, so a delivery whose
//! gateway died mid-attempt is offered again when its lease ends (at least once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::breaker::{Admit, Breaker};
use super::DeliveryConfig;
use super::{after_retryable_failure, Adapter, DeliveryError, OutboundDelivery};
use crate::common::time::now_ms;
use crate::common::ApiError;
use crate::domain::exchange::gateway::{settle_delivery, Fate};
use crate::pb::adapter_v1::{Delivery, DeliveryMetadata};
use crate::store::outbox::OutboxRow;
use crate::store::Store;
use crate::telemetry::metrics::{metrics, AdapterLabels, AttemptLabels, BREAKER_HALF_OPEN};
use crate::telemetry::traces;

/// How many times its concurrency an agency may have leased ahead of attempts.
const PREFETCH: usize = 4;

/// Agencies whose deliveries are pushed, with their adapters.
pub type Adapters = HashMap<String, Arc<dyn Adapter>>;

pub struct Dispatcher {
    store: Store,
    adapters: Arc<Adapters>,
    settings: DeliveryConfig,
    limits: HashMap<String, Arc<Semaphore>>,
    /// Per agency: deliveries leased and not yet attempted to the end.
    queued: HashMap<String, Arc<AtomicUsize>>,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
    /// Poked when a delivery finishes and frees a slot.
    kick: Notify,
}

impl Dispatcher {
    pub fn new(store: Store, adapters: Adapters, settings: DeliveryConfig) -> Dispatcher {
        let limits = adapters
            .keys()
            .map(|a| {
                (
                    a.clone(),
                    Arc::new(Semaphore::new(settings.per_agency_concurrency)),
                )
            })
            .collect();
        let queued = adapters
            .keys()
            .map(|a| (a.clone(), Arc::new(AtomicUsize::new(0))))
            .collect();
        Dispatcher {
            store,
            queued,
            adapters: Arc::new(adapters),
            settings,
            limits,
            breakers: Arc::new(Mutex::new(HashMap::new())),
            kick: Notify::new(),
        }
    }

    /// Runs until `shutdown` turns true; attempts in flight finish or keep their lease.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let mut wake = self.store.outbox_changes();
        let this = Arc::new(self);
        tokio::spawn(async move {
            let mut last_sweep = Instant::now();
            loop {
                if *shutdown.borrow_and_update() {
                    return;
                }
                wake.borrow_and_update();
                if let Err(e) = this.clone().dispatch_due().await {
                    tracing::error!(error = %e, "dispatching deliveries failed; retrying");
                }
                if last_sweep.elapsed() >= Duration::from_secs(1) {
                    last_sweep = Instant::now();
                    if let Err(e) = this.expire_stale().await {
                        tracing::error!(error = %e, "dead-lettering stale deliveries failed; retrying");
                    }
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = this.kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(this.settings.poll_interval_ms)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        })
    }

    /// Leases what agencies can take soon and starts delivering it. Per agency whose breaker
    /// allows, up to a window of `PREFETCH` times its concurrency is kept leased ahead, so a
    /// freed slot is refilled at once instead of after a round trip through the writer.
    /// Attempts wait for a slot in lease order (the semaphore is fair).
    async fn dispatch_due(self: Arc<Self>) -> Result<(), ApiError> {
        let now = Instant::now();
        let window = self.settings.per_agency_concurrency * PREFETCH;
        // Per agency, how many to lease: a window's worth while its breaker is closed, the
        // one probe when it is half-open, none while it is open.
        let mut probes = Vec::new();
        let wanted: Vec<(String, i64)> = {
            let mut breakers = self.breakers();
            self.limits
                .keys()
                .filter_map(|agency| {
                    let queued = self
                        .queued
                        .get(agency)
                        .map_or(0, |q| q.load(Ordering::Acquire));
                    match self.breaker(&mut breakers, agency).admit(now) {
                        Admit::All if queued < window => {
                            Some((agency.clone(), (window - queued) as i64))
                        }
                        Admit::Probe => {
                            metrics().breaker(agency, BREAKER_HALF_OPEN);
                            probes.push(agency.clone());
                            Some((agency.clone(), 1))
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let lease_ms = self.settings.timeout_ms as i64 * 2 + 1000;
        let leased = self
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    let at = now_ms();
                    let mut rows = Vec::new();
                    for (agency, n) in wanted {
                        rows.extend(tx.lease_due(&agency, at, at + lease_ms, n).await?);
                    }
                    Ok::<_, ApiError>(rows)
                })
            })
            .await;
        let rows = match leased {
            Ok((rows, _)) => rows,
            Err(e) => {
                self.unused_probes(&probes, &[]);
                return Err(e);
            }
        };
        self.unused_probes(&probes, &rows);
        for row in rows {
            let (Some(limit), Some(queued)) =
                (self.limits.get(&row.agency), self.queued.get(&row.agency))
            else {
                continue;
            };
            let (limit, queued) = (limit.clone(), queued.clone());
            let probe = probes.contains(&row.agency);
            queued.fetch_add(1, Ordering::AcqRel);
            let this = self.clone();
            tokio::spawn(async move {
                let outcome = match limit.acquire_owned().await {
                    // Leased while the breaker was closed, and it opened since: not sent.
                    Ok(_permit) if !probe && !this.breaker_closed(&row.agency) => Attempted::Held,
                    Ok(_permit) => Attempted::Sent(this.attempt(&row).await),
                    Err(_) => Attempted::Held,
                };
                // The limit protects the agency's system: its slot is free once it answered.
                // The row stays leased until recorded, so nothing overtakes it meanwhile.
                queued.fetch_sub(1, Ordering::AcqRel);
                this.kick.notify_one();
                if let Err(e) = this.record(&row, outcome).await {
                    tracing::error!(delivery_id = %row.delivery_id, error = %e, "recording a delivery outcome failed; its lease will expire and it will be retried");
                }
            });
        }
        Ok(())
    }

    /// Dead-letters deliveries older than `max_age_secs` that are not in flight, whatever
    /// their adapter (an inbox nobody pulls, an agency behind an open breaker).
    async fn expire_stale(&self) -> Result<(), ApiError> {
        let max_age_ms = self.settings.max_age_secs as i64 * 1000;
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    let now = now_ms();
                    let mut given_up = Vec::new();
                    for row in tx.stale(now - max_age_ms, now, 100).await? {
                        let error = format!("not delivered within {} s", max_age_ms / 1000);
                        tracing::warn!(delivery_id = %row.delivery_id, agency = %row.agency, "delivery dead-lettered: too old");
                        settle_delivery(tx, &row, Fate::GivenUp { error: &error }, now).await?;
                        given_up.push(row.agency);
                    }
                    Ok::<_, ApiError>(given_up)
                })
            })
            .await
            .map(|(given_up, _)| given_up.iter().for_each(|agency| dead_letter(agency)))
    }

    async fn attempt(&self, row: &OutboxRow) -> Result<String, DeliveryError> {
        let Some(adapter) = self.adapters.get(&row.agency) else {
            return Err(DeliveryError::Permanent(format!(
                "no push adapter for agency {}",
                row.agency
            )));
        };
        let mut message = Delivery::decode(row.payload.as_slice()).map_err(|e| {
            DeliveryError::Permanent(format!("stored payload cannot be decoded: {e}"))
        })?;
        let span = attempt_span(row, adapter.kind());
        message.metadata = Some(DeliveryMetadata {
            delivery_id: row.delivery_id.clone(),
            attempt: row.attempts as u32,
            created_at: Some(crate::common::time::timestamp(row.created_at)),
            // The attempt's own span as the parent, when traces are exported.
            traceparent: traces::traceparent(&span).unwrap_or_else(|| row.traceparent.clone()),
        });
        let outbound = OutboundDelivery {
            delivery_id: row.delivery_id.clone(),
            agency: row.agency.clone(),
            attempt: row.attempts as u32,
            message,
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(
            Duration::from_millis(self.settings.timeout_ms),
            tracing::Instrument::instrument(adapter.deliver(&outbound), span.clone()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Retryable(format!(
                "no answer within {} ms",
                self.settings.timeout_ms
            ))),
        };
        let outcome = match &result {
            Ok(_) => "delivered",
            Err(DeliveryError::Retryable(_)) => "failed",
            Err(DeliveryError::Permanent(_)) => "refused",
        };
        let m = metrics();
        m.delivery_attempts
            .get_or_create(&AttemptLabels {
                adapter: adapter.kind().into(),
                agency: row.agency.clone().into(),
                outcome: outcome.into(),
            })
            .inc();
        m.delivery_duration
            .get_or_create(&AdapterLabels {
                adapter: adapter.kind().into(),
            })
            .observe(started.elapsed().as_secs_f64());
        span.record("jisr.delivery.outcome", outcome);
        if result.is_err() {
            span.record("error.type", outcome);
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// Records an attempt's outcome (and, through the exchange, what it means for the
    /// exchange) in one transaction.
    async fn record(&self, row: &OutboxRow, attempted: Attempted) -> Result<(), ApiError> {
        let age_ms = now_ms() - row.created_at;
        let decision = match attempted {
            // Back in line, uncounted, for when the breaker lets attempts through again.
            Attempted::Held => Outcome::Held(self.settings.breaker_cooldown_ms as i64),
            Attempted::Sent(outcome) => {
                self.note_breaker(&row.agency, &outcome);
                match outcome {
                    Ok(receipt) => Outcome::Delivered(receipt),
                    Err(DeliveryError::Permanent(e)) => Outcome::Dead(format!("refused: {e}")),
                    Err(DeliveryError::Retryable(e)) => match after_retryable_failure(
                        &self.settings,
                        row.attempts as u32,
                        age_ms,
                        &e,
                    ) {
                        Ok(delay) => Outcome::Retry(e, delay.as_millis() as i64),
                        Err(why) => Outcome::Dead(why),
                    },
                }
            }
        };
        match &decision {
            Outcome::Delivered(_) => {
                tracing::debug!(delivery_id = %row.delivery_id, agency = %row.agency, "delivered")
            }
            Outcome::Retry(e, delay) => {
                tracing::info!(delivery_id = %row.delivery_id, agency = %row.agency, attempt = row.attempts, retry_in_ms = delay, error = %e, "delivery failed; will retry")
            }
            Outcome::Dead(e) => {
                tracing::warn!(delivery_id = %row.delivery_id, agency = %row.agency, error = %e, "delivery dead-lettered")
            }
            Outcome::Held(_) => {
                tracing::debug!(delivery_id = %row.delivery_id, agency = %row.agency, "held: the agency's circuit breaker is open")
            }
        }
        let row = row.clone();
        let agency = row.agency.clone();
        self.store
            .write(None, move |tx| {
                Box::pin(async move {
                    let now = now_ms();
                    // Only while our lease holds: after it ended, another attempt owns it.
                    let current = tx.delivery(&row.delivery_id).await?;
                    if current.is_none_or(|c| {
                        c.state != crate::store::outbox::LEASED || c.attempts != row.attempts
                    }) {
                        return Ok(false);
                    }
                    match decision {
                        Outcome::Delivered(receipt) => {
                            settle_delivery(tx, &row, Fate::Delivered { receipt: &receipt }, now)
                                .await?
                        }
                        Outcome::Retry(e, delay) => {
                            tx.reschedule(&row.delivery_id, &e, now + delay, now)
                                .await?
                        }
                        Outcome::Dead(e) => {
                            settle_delivery(tx, &row, Fate::GivenUp { error: &e }, now).await?;
                            return Ok(true);
                        }
                        Outcome::Held(delay) => {
                            tx.release(&row.delivery_id, now + delay, now).await?
                        }
                    }
                    Ok::<_, ApiError>(false)
                })
            })
            .await
            .map(|(given_up, _)| {
                if given_up {
                    dead_letter(&agency);
                }
            })
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker<'b>(
        &self,
        breakers: &'b mut HashMap<String, Breaker>,
        agency: &str,
    ) -> &'b mut Breaker {
        breakers.entry(agency.to_string()).or_insert_with(|| {
            Breaker::new(
                self.settings.breaker_failures,
                Duration::from_millis(self.settings.breaker_cooldown_ms),
            )
        })
    }

    fn breaker_closed(&self, agency: &str) -> bool {
        self.breakers().get(agency).is_none_or(Breaker::is_closed)
    }

    /// Probes handed out for agencies that had nothing due (none of `rows` is theirs).
    fn unused_probes(&self, probes: &[String], rows: &[OutboxRow]) {
        let mut breakers = self.breakers();
        for agency in probes {
            if !rows.iter().any(|r| &r.agency == agency) {
                self.breaker(&mut breakers, agency)
                    .probe_unused(Instant::now());
            }
        }
    }

    fn note_breaker(&self, agency: &str, outcome: &Result<String, DeliveryError>) {
        let mut breakers = self.breakers();
        let b = self.breaker(&mut breakers, agency);
        match outcome {
            // An answer, even a refusal, shows the agency's system is up.
            Ok(_) | Err(DeliveryError::Permanent(_)) => b.answered(),
            Err(DeliveryError::Retryable(_)) => {
                if b.failed(Instant::now()) {
                    tracing::warn!(%agency, cooldown_ms = self.settings.breaker_cooldown_ms, "circuit breaker open");
                }
            }
        }
        metrics().breaker(agency, b.level());
    }
}

/// Counts a delivery given up (committed as dead-lettered).
fn dead_letter(agency: &str) {
    metrics()
        .dead_letters
        .get_or_create(&crate::telemetry::metrics::AgencyLabels {
            agency: agency.to_string().into(),
        })
        .inc();
}

/// A delivery attempt's client span, continuing the trace of the call that enqueued it
/// (none unless traces are exported).
fn attempt_span(row: &OutboxRow, adapter: &'static str) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: traces::TARGET,
        "deliver",
        otel.name = format!("deliver {adapter}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        jisr.adapter = adapter,
        jisr.agency = %row.agency,
        jisr.delivery.id = %row.delivery_id,
        jisr.delivery.kind = %row.kind,
        jisr.delivery.attempt = row.attempts,
        jisr.delivery.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    traces::continue_trace(&span, Some(&row.traceparent));
    span
}

/// What happened to a leased delivery.
enum Attempted {
    /// Sent to the agency's adapter, with its answer.
    Sent(Result<String, DeliveryError>),
    /// Not sent: the agency's breaker opened while it waited (or the dispatcher stopped).
    Held,
}

enum Outcome {
    Delivered(String),
    Retry(String, i64),
    Dead(String),
    /// Released uncounted, to be leased again after this many ms.
    Held(i64),
}
