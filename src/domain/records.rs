//! The plain data of exchanges as they are stored: the vocabulary of the storage trait
//! (`domain::storage`) that `store` implements. No behaviour here.

/// Outbox states.
pub const PENDING: &str = "pending";
pub const LEASED: &str = "leased";
pub const DELIVERED: &str = "delivered";
pub const DEAD: &str = "dead";

#[derive(Debug, Clone)]
pub struct ReferralRow {
    pub id: String,
    pub from_agency: String,
    pub to_agency: String,
    pub request_id: String,
    pub service_code: String,
    pub category: String,
    pub priority: String,
    pub status: String,
    pub due_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The jisr.v1.Referral as submitted, protobuf-encoded.
    pub body: Vec<u8>,
}

/// An event of a referral, of an information request (`information_request_id`
/// non-empty; its `referral_id` is the referral it belongs to, or empty), or of an
/// application (`application_id` non-empty; `status` is the application's, and a
/// clearance's events name the clearing agency and the clearance's status).
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    pub referral_id: &'a str,
    pub information_request_id: &'a str,
    pub application_id: &'a str,
    pub clearance_agency: &'a str,
    pub clearance_status: &'a str,
    pub from_agency: &'a str,
    pub to_agency: &'a str,
    pub event_type: &'a str,
    pub status: &'a str,
    pub actor_agency: &'a str,
    pub reason_code: &'a str,
    pub note: &'a str,
    pub outcome: &'a str,
    pub occurred_at: i64,
}

impl NewEvent<'_> {
    /// The event as stored, once inserted as number `seq`.
    pub fn stored(&self, seq: i64) -> EventRow {
        EventRow {
            seq,
            referral_id: self.referral_id.to_string(),
            information_request_id: self.information_request_id.to_string(),
            application_id: self.application_id.to_string(),
            clearance_agency: self.clearance_agency.to_string(),
            clearance_status: self.clearance_status.to_string(),
            from_agency: self.from_agency.to_string(),
            to_agency: self.to_agency.to_string(),
            event_type: self.event_type.to_string(),
            status: self.status.to_string(),
            actor_agency: self.actor_agency.to_string(),
            reason_code: self.reason_code.to_string(),
            note: self.note.to_string(),
            outcome: self.outcome.to_string(),
            occurred_at: self.occurred_at,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventRow {
    pub seq: i64,
    /// Empty for an information request that stands alone.
    pub referral_id: String,
    /// Empty for a referral's own events.
    pub information_request_id: String,
    /// Set for an application's events.
    pub application_id: String,
    /// Set for a clearance's events.
    pub clearance_agency: String,
    pub clearance_status: String,
    pub from_agency: String,
    pub to_agency: String,
    pub event_type: String,
    pub status: String,
    pub actor_agency: String,
    pub reason_code: String,
    pub note: String,
    pub outcome: String,
    pub occurred_at: i64,
}

#[derive(Debug, Clone)]
pub struct InformationRequestRow {
    pub id: String,
    pub from_agency: String,
    pub to_agency: String,
    pub request_id: String,
    /// Empty when the request stands alone.
    pub referral_id: String,
    pub status: String,
    pub due_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The jisr.v1.InformationRequest as sent, with its response once there is one.
    pub body: Vec<u8>,
}

/// An application for a joint service.
#[derive(Debug, Clone)]
pub struct ApplicationRow {
    pub id: String,
    pub lead_agency: String,
    pub request_id: String,
    pub service_code: String,
    pub status: String,
    /// The expected completion at submission.
    pub due_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The jisr.v1.Application with every clearance's state, protobuf-encoded.
    pub body: Vec<u8>,
}

/// One clearance's row beside its application's body: who clears it, and its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearanceRow {
    pub application_id: String,
    pub agency: String,
    pub status: String,
    /// Set once requested.
    pub due_at: Option<i64>,
    /// Requested, open, and its deadline not handled yet.
    pub awaiting_deadline: bool,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub delivery_id: String,
    pub agency: String,
    pub kind: String,
    pub subject_id: String,
    pub payload: Vec<u8>,
    pub traceparent: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_error: String,
    pub receipt_id: String,
}

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub agency: &'a str,
    pub kind: &'a str,
    pub subject_id: &'a str,
    pub payload: Vec<u8>,
    pub traceparent: &'a str,
}

/// The first response recorded for an idempotency key.
#[derive(Debug)]
pub struct IdempotentRecord {
    pub method: String,
    pub request_sha256: Vec<u8>,
    pub response: Vec<u8>,
}
