//! What the gateway knows about one call while it runs, for its audit entry.
//!
//! The audit layer creates it for every request and puts it in the request's extensions;
//! handlers add what they learn (the request's hash, target ids, a refusal and its rule).
//! A write handler seals the entry inside its own transaction (and marks it recorded);
//! for every other call the layer appends the entry when the call ends.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::entry::{AuditEntry, Decision};
use crate::tls::identity::AgencyIdentity;

/// The rule that lets a call through before finer policy exists (issue #7): the caller
/// presented a valid certificate of a registered agency.
pub const RULE_REGISTERED_AGENCY: &str = "mtls.registered-agency";

pub struct AuditContext {
    method: String,
    started: Instant,
    trace_id: String,
    identity: Option<Arc<AgencyIdentity>>,
    state: Mutex<State>,
    /// Changes when a write of this call settles (commits or fails).
    settled: tokio::sync::watch::Sender<()>,
}

#[derive(Default)]
struct State {
    request_sha256: Vec<u8>,
    target_ids: Vec<String>,
    recipient_agency: String,
    decided_by: Option<(Decision, String)>,
    officer_subject: String,
    reason: String,
    recorded: bool,
    /// Writes of this call handed to the writer and not yet settled.
    writes_in_flight: usize,
}

impl AuditContext {
    pub fn new(
        method: &str,
        identity: Option<Arc<AgencyIdentity>>,
        trace_id: String,
    ) -> AuditContext {
        AuditContext {
            method: method.to_string(),
            started: Instant::now(),
            trace_id,
            identity,
            state: Mutex::new(State::default()),
            settled: tokio::sync::watch::channel(()).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The method's path, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The calling agency ("" before a certificate is known).
    pub fn caller_agency(&self) -> &str {
        self.identity.as_ref().map_or("", |i| i.agency_id.as_str())
    }

    /// Whether the call was let through (no rule refused it).
    pub fn allowed(&self) -> bool {
        !matches!(self.state().decided_by, Some((Decision::Deny, _)))
    }

    /// Records the SHA-256 of the request message (its protobuf encoding).
    pub fn set_request<M: prost::Message>(&self, message: &M) {
        self.state().request_sha256 = Sha256::digest(message.encode_to_vec()).to_vec();
    }

    /// The call is about `id`, exchanged with `recipient` (the other agency).
    pub fn set_target(&self, id: &str, recipient: &str) {
        let mut s = self.state();
        if !id.is_empty() && !s.target_ids.iter().any(|t| t == id) {
            s.target_ids.push(id.to_string());
        }
        if !recipient.is_empty() {
            s.recipient_agency = recipient.to_string();
        }
    }

    /// The call was refused by `rule`.
    pub fn deny(&self, rule: &str) {
        self.state().decided_by = Some((Decision::Deny, rule.to_string()));
    }

    /// The call was let through by `rule` (a finer rule than a registered certificate).
    pub fn allow(&self, rule: &str) {
        self.state().decided_by = Some((Decision::Allow, rule.to_string()));
    }

    /// The officer acting, from a verified token (never the token itself).
    /// Why an operator acted (their `--reason`).
    pub fn set_reason(&self, reason: &str) {
        self.state().reason = reason.to_string();
    }

    pub fn set_officer(&self, subject: &str) {
        self.state().officer_subject = subject.to_string();
    }

    /// The entry was written by the handler, in its transaction.
    pub fn mark_recorded(&self) {
        self.state().recorded = true;
    }

    /// A write carrying this call's entry was handed to the writer.
    pub fn begin_write(&self) {
        self.state().writes_in_flight += 1;
    }

    /// That write settled: committed with the entry sealed in it (`recorded`), or not.
    pub fn end_write(&self, recorded: bool) {
        {
            let mut s = self.state();
            s.writes_in_flight = s.writes_in_flight.saturating_sub(1);
            s.recorded |= recorded;
        }
        self.settled.send_replace(());
    }

    /// Waits until no write of this call is in flight. A call abandoned mid-write (its
    /// client went away, its deadline passed) is recorded only after this, and only if
    /// the write did not record it: exactly one entry either way.
    pub async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        while self.state().writes_in_flight > 0 {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_recorded(&self) -> bool {
        self.state().recorded
    }

    /// The entry as far as it is known; the writer fills in log id, leaf index, time and
    /// duration.
    pub fn entry(&self, grpc_code: i32) -> AuditEntry {
        let s = self.state();
        let (decision, rule) = match &s.decided_by {
            Some((decision, rule)) => (*decision, rule.clone()),
            None => (Decision::Allow, RULE_REGISTERED_AGENCY.to_string()),
        };
        AuditEntry {
            log_id: String::new(),
            leaf_index: 0,
            time_ms: 0,
            trace_id: self.trace_id.clone(),
            caller_agency: self
                .identity
                .as_ref()
                .map(|i| i.agency_id.clone())
                .unwrap_or_default(),
            cert_fingerprint: self
                .identity
                .as_ref()
                .map(|i| i.cert_fingerprint.clone())
                .unwrap_or_default(),
            cert_serial: self
                .identity
                .as_ref()
                .map(|i| i.cert_serial.clone())
                .unwrap_or_default(),
            officer_subject: s.officer_subject.clone(),
            method: self.method.clone(),
            target_ids: s.target_ids.clone(),
            recipient_agency: s.recipient_agency.clone(),
            decision,
            rule,
            grpc_code,
            duration_us: 0,
            request_sha256: s.request_sha256.clone(),
            reason: s.reason.clone(),
        }
    }
}
