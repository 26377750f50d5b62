//! The canonical JSON of a delivery, before any agency's mapping: the envelope
//! (`delivery_id`, `attempt`, `created_at`, `kind`) and the payload's fields beside it, with
//! their proto (snake_case) names, enums as their short names ("HOUSING"), timestamps as
//! RFC 3339 and nested messages as objects. Every field is present (null when unset), so
//! agencies see one shape.
//!
//! For a referral, `created_at` is the delivery's (as for every kind); the referral's own
//! creation time is its first `status_history` entry's `changed_at`.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::delivery::OutboundDelivery;
use crate::domain::payload::{
    KIND_CLEARANCE_REQUEST, KIND_INFORMATION_REQUEST, KIND_INFORMATION_RESPONSE, KIND_REFERRAL,
    KIND_STATUS_UPDATE,
};
use crate::pb::adapter_v1::{
    delivery, status_update, ApplicationStatusUpdate, InformationRequestStatusUpdate,
    ReferralStatusUpdate,
};
use crate::pb::v1::{
    Application, ApplicationStatus, Clearance, ClearanceStatus, Consent, ContactDetails,
    DeclineReason, DocumentReference, IdentifierType, InformationRequest, InformationRequestStatus,
    PersonIdentifier, Referral, ReferralCategory, ReferralOutcome, ReferralPriority,
    ReferralStatus, StatusChange, StatusReason, Subject,
};

/// The message kind (`referral`, `information_request`, `information_response`,
/// `clearance_request` or `status_update`) and its canonical JSON object, or why the rest adapter cannot carry it.
pub fn canonical(d: &OutboundDelivery) -> Result<(&'static str, Map<String, Value>), String> {
    let (kind, payload) = match &d.message.payload {
        Some(delivery::Payload::Referral(r)) => (KIND_REFERRAL, referral(r)),
        Some(delivery::Payload::InformationRequest(r)) => {
            (KIND_INFORMATION_REQUEST, information_request(r))
        }
        Some(delivery::Payload::InformationResponse(r)) => {
            (KIND_INFORMATION_RESPONSE, information_request(r))
        }
        Some(delivery::Payload::ClearanceRequest(a)) => (KIND_CLEARANCE_REQUEST, application(a)),
        Some(delivery::Payload::StatusUpdate(u)) => match &u.target {
            Some(status_update::Target::Referral(u)) => (KIND_STATUS_UPDATE, status_update(u)),
            Some(status_update::Target::InformationRequest(u)) => {
                (KIND_STATUS_UPDATE, information_request_status(u))
            }
            Some(status_update::Target::Application(u)) => {
                (KIND_STATUS_UPDATE, application_status(u))
            }
            None => return Err("the status update names no referral or request".into()),
        },
        None => return Err("the delivery carries no payload".into()),
    };
    let meta = d.message.metadata.as_ref();
    let mut out = payload;
    out.insert("delivery_id".into(), json!(d.delivery_id));
    out.insert("attempt".into(), json!(d.attempt));
    out.insert(
        "created_at".into(),
        timestamp(meta.and_then(|m| m.created_at.as_ref())),
    );
    out.insert("kind".into(), json!(kind));
    Ok((kind, out))
}

fn referral(r: &Referral) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id));
    m.insert("request_id".into(), json!(r.request_id));
    m.insert("from_agency".into(), json!(r.from_agency));
    m.insert("to_agency".into(), json!(r.to_agency));
    m.insert("service_code".into(), json!(r.service_code));
    m.insert(
        "category".into(),
        enum_name::<ReferralCategory>(r.category, "REFERRAL_CATEGORY_"),
    );
    m.insert(
        "priority".into(),
        enum_name::<ReferralPriority>(r.priority, "REFERRAL_PRIORITY_"),
    );
    m.insert(
        "subject".into(),
        r.subject.as_ref().map_or(Value::Null, subject),
    );
    m.insert("summary".into(), json!(r.summary));
    m.insert("reason".into(), json!(r.reason));
    m.insert(
        "attachments".into(),
        Value::Array(r.attachments.iter().map(document).collect()),
    );
    m.insert(
        "consent".into(),
        r.consent.as_ref().map_or(Value::Null, consent),
    );
    m.insert("due_at".into(), timestamp(r.due_at.as_ref()));
    m.insert(
        "status".into(),
        enum_name::<ReferralStatus>(r.status, "REFERRAL_STATUS_"),
    );
    m.insert(
        "status_history".into(),
        Value::Array(
            r.status_history
                .iter()
                .map(|c| Value::Object(status_change(c)))
                .collect(),
        ),
    );
    m.insert("created_at".into(), timestamp(r.created_at.as_ref()));
    m.insert("updated_at".into(), timestamp(r.updated_at.as_ref()));
    m.insert("trace_id".into(), json!(r.trace_id));
    m.insert("overdue".into(), json!(r.overdue));
    m.insert(
        "outcome".into(),
        enum_name::<ReferralOutcome>(r.outcome, "REFERRAL_OUTCOME_"),
    );
    m
}

fn information_request(r: &InformationRequest) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id));
    m.insert("request_id".into(), json!(r.request_id));
    m.insert("from_agency".into(), json!(r.from_agency));
    m.insert("to_agency".into(), json!(r.to_agency));
    m.insert("referral_id".into(), json!(r.referral_id));
    m.insert(
        "subject".into(),
        r.subject.as_ref().map_or(Value::Null, subject),
    );
    m.insert(
        "questions".into(),
        Value::Array(
            r.questions
                .iter()
                .map(|q| {
                    json!({
                        "code": q.code,
                        "text": q.text,
                        "document_requested": q.document_requested,
                    })
                })
                .collect(),
        ),
    );
    m.insert("due_at".into(), timestamp(r.due_at.as_ref()));
    m.insert(
        "status".into(),
        enum_name::<InformationRequestStatus>(r.status, "INFORMATION_REQUEST_STATUS_"),
    );
    m.insert(
        "answers".into(),
        Value::Array(
            r.answers
                .iter()
                .map(|a| {
                    json!({
                        "question_code": a.question_code,
                        "value": a.value,
                        "documents": a.documents.iter().map(document).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ),
    );
    m.insert(
        "decline_reason".into(),
        enum_name::<DeclineReason>(r.decline_reason, "DECLINE_REASON_"),
    );
    m.insert("decline_note".into(), json!(r.decline_note));
    m.insert("created_at".into(), timestamp(r.created_at.as_ref()));
    m.insert("updated_at".into(), timestamp(r.updated_at.as_ref()));
    m.insert("overdue".into(), json!(r.overdue));
    m
}

fn information_request_status(u: &InformationRequestStatusUpdate) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "information_request_id".into(),
        json!(u.information_request_id),
    );
    m.insert(
        "status".into(),
        enum_name::<InformationRequestStatus>(u.status, "INFORMATION_REQUEST_STATUS_"),
    );
    m.insert("changed_at".into(), timestamp(u.changed_at.as_ref()));
    m.insert("overdue".into(), json!(u.overdue));
    m
}

fn application(a: &Application) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    m.insert("request_id".into(), json!(a.request_id));
    m.insert("lead_agency".into(), json!(a.lead_agency));
    m.insert("service_code".into(), json!(a.service_code));
    m.insert(
        "subject".into(),
        a.subject.as_ref().map_or(Value::Null, subject),
    );
    m.insert("summary".into(), json!(a.summary));
    m.insert(
        "references".into(),
        Value::Array(
            a.references
                .iter()
                .map(|r| json!({ "name": r.name, "value": r.value }))
                .collect(),
        ),
    );
    m.insert(
        "attachments".into(),
        Value::Array(a.attachments.iter().map(document).collect()),
    );
    m.insert(
        "status".into(),
        enum_name::<ApplicationStatus>(a.status, "APPLICATION_STATUS_"),
    );
    m.insert(
        "clearances".into(),
        Value::Array(a.clearances.iter().map(clearance).collect()),
    );
    m.insert("required_approvals".into(), json!(a.required_approvals));
    m.insert("due_at".into(), timestamp(a.due_at.as_ref()));
    m.insert(
        "expected_completion_at".into(),
        timestamp(a.expected_completion_at.as_ref()),
    );
    m.insert("decided_at".into(), timestamp(a.decided_at.as_ref()));
    m.insert("created_at".into(), timestamp(a.created_at.as_ref()));
    m.insert("updated_at".into(), timestamp(a.updated_at.as_ref()));
    m.insert("overdue".into(), json!(a.overdue));
    m.insert("trace_id".into(), json!(a.trace_id));
    m.insert("withdrawal_reason".into(), json!(a.withdrawal_reason));
    m
}

fn clearance(c: &Clearance) -> Value {
    json!({
        "agency": c.agency,
        "status": enum_name::<ClearanceStatus>(c.status, "CLEARANCE_STATUS_"),
        "after": c.after,
        "requested_at": timestamp(c.requested_at.as_ref()),
        "due_at": timestamp(c.due_at.as_ref()),
        "decided_at": timestamp(c.decided_at.as_ref()),
        "overdue": c.overdue,
        "deemed_approved": c.deemed_approved,
        "conditions": c.conditions,
        "reason": c.reason,
        "note": c.note,
        "information_request_id": c.information_request_id,
        "updated_at": timestamp(c.updated_at.as_ref()),
    })
}

fn application_status(u: &ApplicationStatusUpdate) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("application_id".into(), json!(u.application_id));
    m.insert(
        "status".into(),
        enum_name::<ApplicationStatus>(u.status, "APPLICATION_STATUS_"),
    );
    m.insert("clearance_agency".into(), json!(u.clearance_agency));
    m.insert(
        "clearance_status".into(),
        enum_name::<ClearanceStatus>(u.clearance_status, "CLEARANCE_STATUS_"),
    );
    m.insert("changed_at".into(), timestamp(u.changed_at.as_ref()));
    m.insert("overdue".into(), json!(u.overdue));
    m.insert(
        "expected_completion_at".into(),
        timestamp(u.expected_completion_at.as_ref()),
    );
    m.insert("actor_agency".into(), json!(u.actor_agency));
    m.insert("note".into(), json!(u.note));
    m
}

fn status_update(u: &ReferralStatusUpdate) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("referral_id".into(), json!(u.referral_id));
    let change = u.change.clone().unwrap_or_default();
    m.extend(status_change(&change));
    m.insert("overdue".into(), json!(u.overdue));
    m
}

fn status_change(c: &StatusChange) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "status".into(),
        enum_name::<ReferralStatus>(c.status, "REFERRAL_STATUS_"),
    );
    m.insert("actor_agency".into(), json!(c.actor_agency));
    m.insert("changed_at".into(), timestamp(c.changed_at.as_ref()));
    m.insert(
        "reason_code".into(),
        enum_name::<StatusReason>(c.reason_code, "STATUS_REASON_"),
    );
    m.insert("note".into(), json!(c.note));
    m.insert(
        "outcome".into(),
        enum_name::<ReferralOutcome>(c.outcome, "REFERRAL_OUTCOME_"),
    );
    m
}

fn subject(s: &Subject) -> Value {
    json!({
        "identifier": s.identifier.as_ref().map_or(Value::Null, identifier),
        "full_name": s.full_name,
        "full_name_ar": s.full_name_ar,
        "date_of_birth": s.date_of_birth,
        "contact": s.contact.as_ref().map_or(Value::Null, contact),
    })
}

fn identifier(i: &PersonIdentifier) -> Value {
    json!({
        "type": enum_name::<IdentifierType>(i.r#type, "IDENTIFIER_TYPE_"),
        "value": i.value,
        "issuing_country": i.issuing_country,
    })
}

fn contact(c: &ContactDetails) -> Value {
    json!({ "phone": c.phone, "email": c.email, "address": c.address })
}

fn document(d: &DocumentReference) -> Value {
    json!({ "document_id": d.document_id, "title": d.title })
}

fn consent(c: &Consent) -> Value {
    json!({
        "reference": c.reference,
        "scope": c.scope,
        "expires_at": timestamp(c.expires_at.as_ref()),
    })
}

/// A proto enum's short name: its value name without the enum's prefix
/// (REFERRAL_CATEGORY_HOUSING -> "HOUSING"); an unknown number stays a number.
trait ProtoEnum: TryFrom<i32> {
    fn name(&self) -> &'static str;
}

macro_rules! proto_enum {
    ($($t:ty),*) => {$(
        impl ProtoEnum for $t {
            fn name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}
proto_enum!(
    ApplicationStatus,
    ClearanceStatus,
    DeclineReason,
    InformationRequestStatus,
    ReferralCategory,
    ReferralPriority,
    ReferralStatus,
    ReferralOutcome,
    StatusReason,
    IdentifierType
);

fn enum_name<E: ProtoEnum>(value: i32, prefix: &str) -> Value {
    match E::try_from(value) {
        Ok(e) => {
            let name = e.name();
            json!(name.strip_prefix(prefix).unwrap_or(name))
        }
        Err(_) => json!(value),
    }
}

/// RFC 3339 in UTC, or null when unset or out of range.
fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(|t| {
        let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    })
    .and_then(|t| t.format(&Rfc3339).ok())
    .map_or(Value::Null, Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::testkit::sample_delivery;
    use crate::pb::adapter_v1::{Delivery, DeliveryMetadata, StatusUpdate};

    #[test]
    fn a_referral_has_proto_names_short_enums_and_rfc3339_times() {
        let mut d = sample_delivery("01DEL", "charity", "01REF");
        d.message.metadata.as_mut().unwrap().created_at = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000_000,
        });
        if let Some(delivery::Payload::Referral(r)) = d.message.payload.as_mut() {
            r.category = ReferralCategory::Housing as i32;
            r.status = ReferralStatus::Submitted as i32;
            r.consent = Some(Consent {
                reference: "C-1".into(),
                scope: "s".into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 4_102_444_800,
                    nanos: 0,
                }),
            });
            r.subject = Some(Subject {
                identifier: Some(PersonIdentifier {
                    r#type: IdentifierType::EmiratesId as i32,
                    value: "784".into(),
                    issuing_country: String::new(),
                }),
                full_name: "Mariam".into(),
                ..Subject::default()
            });
        }
        let (kind, j) = canonical(&d).unwrap();
        assert_eq!(kind, "referral");
        assert_eq!(j["kind"], "referral");
        assert_eq!(j["delivery_id"], "01DEL");
        assert_eq!(j["attempt"], 1);
        assert_eq!(j["created_at"], "2023-11-14T22:13:20.005Z");
        assert_eq!(j["id"], "01REF");
        assert_eq!(j["category"], "HOUSING");
        assert_eq!(j["priority"], "UNSPECIFIED");
        assert_eq!(j["status"], "SUBMITTED");
        assert_eq!(j["consent"]["expires_at"], "2100-01-01T00:00:00Z");
        assert_eq!(j["subject"]["identifier"]["type"], "EMIRATES_ID");
        assert_eq!(j["subject"]["full_name"], "Mariam");
        assert_eq!(j["subject"]["contact"], Value::Null);
        assert_eq!(j["due_at"], Value::Null);
        assert_eq!(j["attachments"], json!([]));
    }

    #[test]
    fn information_requests_and_responses_have_their_own_kinds_and_fields() {
        let request = crate::pb::v1::InformationRequest {
            id: "01IR".into(),
            from_agency: "social-services".into(),
            to_agency: "charity".into(),
            questions: vec![crate::pb::v1::Question {
                code: "income".into(),
                text: "Monthly income?".into(),
                document_requested: true,
            }],
            status: InformationRequestStatus::Answered as i32,
            answers: vec![crate::pb::v1::Answer {
                question_code: "income".into(),
                value: "12000".into(),
                documents: vec![DocumentReference {
                    document_id: "sha256:ab".into(),
                    title: "Salary".into(),
                }],
            }],
            ..Default::default()
        };
        let mut d = sample_delivery("01DEL3", "charity", "unused");
        d.message.payload = Some(delivery::Payload::InformationResponse(request.clone()));
        let (kind, j) = canonical(&d).unwrap();
        assert_eq!(kind, "information_response");
        assert_eq!(j["kind"], "information_response");
        assert_eq!(j["id"], "01IR");
        assert_eq!(j["status"], "ANSWERED");
        assert_eq!(j["decline_reason"], "UNSPECIFIED");
        assert_eq!(
            j["questions"],
            json!([{"code": "income", "text": "Monthly income?", "document_requested": true}])
        );
        assert_eq!(j["answers"][0]["documents"][0]["document_id"], "sha256:ab");
        d.message.payload = Some(delivery::Payload::InformationRequest(request));
        assert_eq!(canonical(&d).unwrap().0, "information_request");
        d.message.payload = Some(delivery::Payload::StatusUpdate(StatusUpdate {
            target: Some(status_update::Target::InformationRequest(
                InformationRequestStatusUpdate {
                    information_request_id: "01IR".into(),
                    status: InformationRequestStatus::Expired as i32,
                    changed_at: None,
                    overdue: false,
                },
            )),
        }));
        let (kind, j) = canonical(&d).unwrap();
        assert_eq!(kind, "status_update");
        assert_eq!(j["information_request_id"], "01IR");
        assert_eq!(j["status"], "EXPIRED");
    }

    #[test]
    fn a_status_update_carries_the_change() {
        let d = OutboundDelivery {
            delivery_id: "01DEL2".into(),
            agency: "charity".into(),
            attempt: 3,
            message: Delivery {
                metadata: Some(DeliveryMetadata {
                    delivery_id: "01DEL2".into(),
                    attempt: 3,
                    ..DeliveryMetadata::default()
                }),
                payload: Some(delivery::Payload::StatusUpdate(StatusUpdate {
                    target: Some(status_update::Target::Referral(ReferralStatusUpdate {
                        referral_id: "01REF".into(),
                        change: Some(StatusChange {
                            status: ReferralStatus::Rejected as i32,
                            actor_agency: "charity".into(),
                            changed_at: Some(prost_types::Timestamp {
                                seconds: 0,
                                nanos: 0,
                            }),
                            reason_code: StatusReason::OutsideMandate as i32,
                            note: "not ours".into(),
                            outcome: 99,
                        }),
                        overdue: false,
                    })),
                })),
                visibility_deadline: None,
            },
        };
        let (kind, j) = canonical(&d).unwrap();
        assert_eq!(kind, "status_update");
        assert_eq!(
            Value::Object(j),
            json!({
                "delivery_id": "01DEL2", "attempt": 3, "created_at": null, "kind": "status_update",
                "referral_id": "01REF", "status": "REJECTED", "actor_agency": "charity",
                "changed_at": "1970-01-01T00:00:00Z", "reason_code": "OUTSIDE_MANDATE",
                "note": "not ours", "outcome": 99, "overdue": false,
            })
        );
    }
}
