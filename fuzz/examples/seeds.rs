//! Writes the small seed corpus of each target to fuzz/seeds/<target>/: valid requests
//! and deliveries, encoded, so libFuzzer starts past the decoder. Run from the repo root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::path::Path;

use jisr::pb::adapter_v1::{delivery, status_update, Delivery, DeliveryMetadata, StatusUpdate};
use jisr::pb::adapter_v1::{InformationRequestStatusUpdate, ReferralStatusUpdate};
use jisr::pb::v1::respond_to_information_request_request::Response;
use jisr::pb::v1::*;
use prost::Message;

const EMIRATES_ID: &str = "784-1990-1234567-6";
const DOCUMENT: &str = "sha256:b2ce1e0f7e1e3ad4f1c8a5ff3b0d3e4b6c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5";

fn subject() -> Subject {
    Subject {
        identifier: Some(PersonIdentifier {
            r#type: IdentifierType::EmiratesId as i32,
            value: EMIRATES_ID.into(),
            issuing_country: String::new(),
        }),
        full_name: "Mariam Test".into(),
        full_name_ar: "مريم اختبار".into(),
        date_of_birth: "1985-04-12".into(),
        contact: Some(ContactDetails {
            phone: "+971501234567".into(),
            email: "mariam@example.ae".into(),
            address: "Dubai".into(),
        }),
    }
}

fn referral() -> Referral {
    Referral {
        to_agency: "housing".into(),
        service_code: "housing-support".into(),
        category: ReferralCategory::Housing as i32,
        priority: ReferralPriority::Urgent as i32,
        subject: Some(subject()),
        summary: "Family of five facing eviction.".into(),
        reason: "Housing support is in the recipient's mandate.".into(),
        attachments: vec![DocumentReference {
            document_id: DOCUMENT.into(),
            title: "Salary certificate".into(),
        }],
        consent: Some(Consent {
            reference: "CONSENT-42".into(),
            scope: "social-case-referral".into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: 4_102_444_800,
                nanos: 0,
            }),
        }),
        ..Referral::default()
    }
}

fn information_request() -> InformationRequest {
    InformationRequest {
        to_agency: "housing".into(),
        referral_id: "01J8ZQ5V6W7X8Y9Z0A1B2C3D4E".into(),
        subject: Some(subject()),
        questions: vec![
            Question {
                code: "household-income".into(),
                text: "What is the household's monthly income?".into(),
                document_requested: false,
            },
            Question {
                code: "salary-certificate".into(),
                text: "Please share the latest salary certificate.".into(),
                document_requested: true,
            },
        ],
        due_at: Some(prost_types::Timestamp {
            seconds: 1_790_500_000,
            nanos: 0,
        }),
        ..InformationRequest::default()
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let submit = SubmitReferralRequest {
        request_id: "req-1".into(),
        referral: Some(referral()),
    };
    write("validate_referral", "valid", &submit.encode_to_vec());
    let mut passport = submit.clone();
    if let Some(id) = passport
        .referral
        .as_mut()
        .and_then(|r| r.subject.as_mut())
        .and_then(|s| s.identifier.as_mut())
    {
        id.r#type = IdentifierType::Passport as i32;
        id.value = "N1234567".into();
        id.issuing_country = "IN".into();
    }
    write("validate_referral", "passport", &passport.encode_to_vec());

    // validate_information_request: first byte even = request, odd = response.
    let ask = RequestInformationRequest {
        request_id: "req-2".into(),
        information_request: Some(information_request()),
    };
    write(
        "validate_information_request",
        "request",
        &[[0].as_slice(), &ask.encode_to_vec()].concat(),
    );
    let answer = RespondToInformationRequestRequest {
        information_request_id: "01J8ZQ5V6W7X8Y9Z0A1B2C3D4E".into(),
        request_id: "req-3".into(),
        response: Some(Response::Answers(InformationRequestAnswers {
            answers: vec![Answer {
                question_code: "household-income".into(),
                value: "12000 AED".into(),
                documents: vec![DocumentReference {
                    document_id: DOCUMENT.into(),
                    title: "Salary".into(),
                }],
            }],
        })),
    };
    write(
        "validate_information_request",
        "answer",
        &[[1].as_slice(), &answer.encode_to_vec()].concat(),
    );
    let decline = RespondToInformationRequestRequest {
        response: Some(Response::Decline(InformationRequestDecline {
            reason: DeclineReason::Other as i32,
            note: "Outside our records".into(),
        })),
        ..answer
    };
    write(
        "validate_information_request",
        "decline",
        &[[1].as_slice(), &decline.encode_to_vec()].concat(),
    );

    // rest_mapping: 1 (canonical), the delivery's length (u16 LE), the delivery, then
    // bytes for the mapping.
    let metadata = Some(DeliveryMetadata {
        delivery_id: "01DEL".into(),
        attempt: 1,
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000_000,
        }),
        ..DeliveryMetadata::default()
    });
    let deliveries = [
        ("referral", delivery::Payload::Referral(referral())),
        (
            "information_request",
            delivery::Payload::InformationRequest(information_request()),
        ),
        (
            "status_update",
            delivery::Payload::StatusUpdate(StatusUpdate {
                target: Some(status_update::Target::Referral(ReferralStatusUpdate {
                    referral_id: "01REF".into(),
                    change: Some(StatusChange {
                        status: ReferralStatus::Rejected as i32,
                        actor_agency: "housing".into(),
                        changed_at: Some(prost_types::Timestamp::default()),
                        reason_code: StatusReason::OutsideMandate as i32,
                        note: "not ours".into(),
                        outcome: 0,
                    }),
                    overdue: false,
                })),
            }),
        ),
        (
            "information_request_status",
            delivery::Payload::StatusUpdate(StatusUpdate {
                target: Some(status_update::Target::InformationRequest(
                    InformationRequestStatusUpdate {
                        information_request_id: "01IR".into(),
                        status: 3,
                        changed_at: None,
                        overdue: true,
                    },
                )),
            }),
        ),
    ];
    for (name, payload) in deliveries {
        let d = Delivery {
            metadata: metadata.clone(),
            payload: Some(payload),
            visibility_deadline: None,
        };
        let bytes = d.encode_to_vec();
        let mut seed = vec![1u8];
        seed.extend_from_slice(&u16::try_from(bytes.len()).expect("small").to_le_bytes());
        seed.extend_from_slice(&bytes);
        // Mapping choices: a few renames, flattens, constants and drops.
        seed.extend_from_slice(&[3, 0, 1, 2, 5, 1, 0, 2, 1, 4, 0, 3, 2, 1, 0, 0, 7, 9, 2, 6]);
        write("rest_mapping", name, &seed);
    }
}
