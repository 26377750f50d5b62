//! Property tests (proptest) for the code that parses hostile input: request validation,
//! Emirates ID check digits, page tokens, the REST mapping and timestamp conversions.
//! 256 cases per property unless PROPTEST_CASES says otherwise; the fuzz targets in
//! fuzz/ go further (docs/security.md).

use std::collections::HashSet;
use std::sync::OnceLock;

use jisr::adapters::rest::mapping::apply;
use jisr::adapters::rest::RestMapping;
use jisr::api::information_request::{validate_request, validate_response};
use jisr::api::paging::{self, IdPage};
use jisr::api::referral::validate_submit;
use jisr::api::validate::{is_emirates_id, timestamp_ms, Violations};
use jisr::common::contract::names_a_field;
use jisr::common::error::ApiError;
use jisr::common::time::timestamp;
use jisr::directory::Directory;
use jisr::pb::v1::respond_to_information_request_request::Response;
use jisr::pb::v1::*;
use jisr::tls::Registry;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use prost::Message;
use prost_types::Timestamp;
use serde_json::{Map, Value};

use crate::common::{information_request_to, referral_to, sample_config, submit};

/// The calling agency of every request here.
const CALLER: &str = "social-services";
/// A fixed "now" (2026-09-21), so failures reproduce.
const NOW_MS: i64 = 1_790_000_000_000;
/// The range of valid `Timestamp` seconds (0001-01-01 to 9999-12-31).
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::new(sample_config().agency_ids()))
}

fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        Directory::from_config(&sample_config().directory()).expect("sample directory")
    })
}

// ---------------------------------------------------------------------------------------
// Field paths against the contract

/// The violations of a failed validation (and a failure if it failed otherwise).
fn violations<T>(result: &Result<T, ApiError>) -> Vec<(String, String)> {
    match result {
        Ok(_) => Vec::new(),
        Err(ApiError::Invalid(v)) => {
            assert!(!v.is_empty(), "INVALID_ARGUMENT without violations");
            v.iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        }
        Err(e) => panic!("validation failed with something other than violations: {e:?}"),
    }
}

fn check_paths(
    found: &[(String, String)],
    message: &str,
    len: &dyn Fn(&str) -> Option<usize>,
) -> Result<(), TestCaseError> {
    for (field, description) in found {
        prop_assert!(
            names_a_field(message, field, len),
            "violation {:?} ({}) names no field of {}",
            field,
            description,
            message
        );
        prop_assert!(
            !description.is_empty(),
            "violation {:?} says nothing",
            field
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Strategies: mostly plausible values, with edge cases and garbage mixed in

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[ -~]{0,12}",
        1 => Just(String::new()),
        1 => Just(" \t\n".to_string()),
        1 => "\\PC{0,8}",
        1 => (0usize..3).prop_map(|n| "x".repeat(4000 + n)),
    ]
    .boxed()
}

fn agency() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(vec!["housing", "charity", "police", "family-court", CALLER]).prop_map(String::from),
        1 => select(vec!["", "nobody", "HOUSING", "housing "]).prop_map(String::from),
        1 => text(),
    ]
.boxed()
}

fn service_code() -> BoxedStrategy<String> {
    let codes: Vec<String> = directory()
        .services()
        .iter()
        .map(|s| s.code.clone())
        .collect();
    prop_oneof![
        4 => select(codes),
        1 => "[a-z.-]{0,66}",
        1 => text(),
    ]
    .boxed()
}

fn enum_number(known: i32) -> BoxedStrategy<i32> {
    prop_oneof![4 => 0..=known + 1, 1 => any::<i32>()].boxed()
}

fn request_id() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[A-Za-z0-9._:-]{1,40}",
        1 => Just(String::new()),
        1 => Just("r".repeat(129)),
        1 => text(),
    ]
    .boxed()
}

fn ulid() -> BoxedStrategy<String> {
    any::<u128>()
        .prop_map(|n| ulid::Ulid(n).to_string())
        .boxed()
}

/// The Luhn check digit that completes `body` (the digit is appended on the right).
fn luhn(body: &str) -> u32 {
    let sum: u32 = body
        .chars()
        .rev()
        .map(|c| c.to_digit(10).expect("digits"))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                (d * 2) / 10 + (d * 2) % 10
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// A valid Emirates ID, 15 digits (784, a year, a serial, the check digit).
fn emirates_id_digits() -> BoxedStrategy<String> {
    (1900u32..2100, 0u32..10_000_000)
        .prop_map(|(year, serial)| {
            let body = format!("784{year}{serial:07}");
            format!("{body}{}", luhn(&body))
        })
        .boxed()
}

fn dashed(id: &str) -> String {
    format!("{}-{}-{}-{}", &id[..3], &id[3..7], &id[7..14], &id[14..])
}

fn emirates_id() -> BoxedStrategy<String> {
    (emirates_id_digits(), any::<bool>())
        .prop_map(|(id, dash)| if dash { dashed(&id) } else { id })
        .boxed()
}

fn identifier() -> BoxedStrategy<PersonIdentifier> {
    (
        enum_number(4),
        prop_oneof![emirates_id(), "[0-9A-Z-]{0,22}", text()],
        prop_oneof![
            Just(String::new()),
            select(vec!["SA", "KW", "IN", "sa", "KWT"]).prop_map(String::from),
            "[A-Z]{2}",
        ],
    )
        .prop_map(|(t, value, issuing_country)| PersonIdentifier {
            r#type: t,
            value,
            issuing_country,
        })
        .boxed()
}

fn timestamp_value() -> BoxedStrategy<Timestamp> {
    let now = NOW_MS / 1000;
    prop_oneof![
        3 => (now - 100_000..now + 40_000_000, 0..1_000_000_000i32),
        1 => (MIN_SECONDS - 1..=MAX_SECONDS + 1, any::<i32>()),
        1 => (any::<i64>(), any::<i32>()),
    ]
    .prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
    .boxed()
}

fn subject() -> BoxedStrategy<Subject> {
    let contact = (
        prop_oneof![Just(String::new()), "\\+?[0-9]{0,16}", text()],
        prop_oneof![Just(String::new()), "[a-z ]{0,5}@[a-z.]{0,8}", text()],
        text(),
    )
        .prop_map(|(phone, email, address)| ContactDetails {
            phone,
            email,
            address,
        });
    (
        prop::option::weighted(0.9, identifier()),
        text(),
        text(),
        prop_oneof![Just(String::new()), "[0-9+-]{4}-[0-9]{2}-[0-9]{2}", text()],
        prop::option::of(contact),
    )
        .prop_map(
            |(identifier, full_name, full_name_ar, date_of_birth, contact)| Subject {
                identifier,
                full_name,
                full_name_ar,
                date_of_birth,
                contact,
            },
        )
        .boxed()
}

fn document() -> BoxedStrategy<DocumentReference> {
    let shared = select(vec![
        format!("sha256:{}", "a".repeat(64)),
        format!("sha256:{}", "0".repeat(64)),
    ]);
    (
        prop_oneof![2 => "sha256:[0-9a-f]{64}", 1 => shared, 1 => "sha256:[0-9a-fA-F]{0,66}", 1 => text()],
        text(),
    )
        .prop_map(|(document_id, title)| DocumentReference { document_id, title })
.boxed()
}

fn documents() -> BoxedStrategy<Vec<DocumentReference>> {
    prop_oneof![8 => vec(document(), 0..4), 1 => vec(document(), 20..23)].boxed()
}

fn consent() -> BoxedStrategy<Consent> {
    (
        text(),
        text(),
        prop::option::weighted(0.9, timestamp_value()),
    )
        .prop_map(|(reference, scope, expires_at)| Consent {
            reference,
            scope,
            expires_at,
        })
        .boxed()
}

/// Any referral, output-only fields included (they must be ignored).
fn referral() -> BoxedStrategy<Referral> {
    let input = (
        agency(),
        service_code(),
        enum_number(11),
        enum_number(4),
        prop::option::weighted(0.9, subject()),
        text(),
        text(),
        documents(),
        prop::option::of(consent()),
    );
    let output = (
        text(),
        agency(),
        enum_number(9),
        prop::option::of(timestamp_value()),
        any::<bool>(),
    );
    (input, output)
        .prop_map(
            |(
                (
                    to_agency,
                    service_code,
                    category,
                    priority,
                    subject,
                    summary,
                    reason,
                    attachments,
                    consent,
                ),
                (id, from_agency, status, due_at, overdue),
            )| Referral {
                id,
                from_agency,
                to_agency,
                service_code,
                category,
                priority,
                subject,
                summary,
                reason,
                attachments,
                consent,
                due_at,
                status,
                overdue,
                ..Referral::default()
            },
        )
        .boxed()
}

fn question() -> BoxedStrategy<Question> {
    (
        prop_oneof![
            select(vec!["income", "household-income", "a"]).prop_map(String::from),
            "[a-z._-]{0,66}",
            text()
        ],
        text(),
        any::<bool>(),
    )
        .prop_map(|(code, text, document_requested)| Question {
            code,
            text,
            document_requested,
        })
        .boxed()
}

fn information_request() -> BoxedStrategy<InformationRequest> {
    (
        agency(),
        prop_oneof![Just(String::new()), ulid(), text()],
        prop::option::weighted(0.9, subject()),
        prop_oneof![8 => vec(question(), 0..4), 1 => vec(question(), 49..52)],
        prop::option::of(timestamp_value()),
        (text(), enum_number(6), text()),
    )
        .prop_map(
            |(to_agency, referral_id, subject, questions, due_at, (id, status, decline_note))| {
                InformationRequest {
                    id,
                    to_agency,
                    referral_id,
                    subject,
                    questions,
                    due_at,
                    status,
                    decline_note,
                    ..InformationRequest::default()
                }
            },
        )
        .boxed()
}

fn answer() -> BoxedStrategy<Answer> {
    (
        prop_oneof![select(vec!["income", "a"]).prop_map(String::from), text()],
        text(),
        documents(),
    )
        .prop_map(|(question_code, value, documents)| Answer {
            question_code,
            value,
            documents,
        })
        .boxed()
}

fn response() -> BoxedStrategy<RespondToInformationRequestRequest> {
    let reply = prop_oneof![
        prop_oneof![4 => vec(answer(), 0..4), 1 => vec(answer(), 50..52)]
            .prop_map(|answers| Response::Answers(InformationRequestAnswers { answers })),
        (enum_number(6), text()).prop_map(|(reason, note)| Response::Decline(
            InformationRequestDecline { reason, note }
        )),
    ];
    (
        prop_oneof![ulid(), text()],
        request_id(),
        prop::option::weighted(0.9, reply),
    )
        .prop_map(|(information_request_id, request_id, response)| {
            RespondToInformationRequestRequest {
                information_request_id,
                request_id,
                response,
            }
        })
        .boxed()
}

/// The referral validation keeps of `r`: its input fields only.
fn input_fields(r: &Referral) -> Referral {
    Referral {
        to_agency: r.to_agency.clone(),
        service_code: r.service_code.clone(),
        category: r.category,
        priority: r.priority,
        subject: r.subject.clone(),
        summary: r.summary.clone(),
        reason: r.reason.clone(),
        attachments: r.attachments.clone(),
        consent: r.consent.clone(),
        ..Referral::default()
    }
}

/// Breaks one field of a valid referral to housing (`variant` picks how); returns the
/// path the violation must name.
fn break_referral(r: &mut Referral, which: usize, variant: usize) -> &'static str {
    let pick = |options: &[&str]| options[variant % options.len()].to_string();
    let subject = r.subject.as_mut().expect("a subject");
    let consent = r.consent.as_mut().expect("a consent");
    match which {
        0 => {
            // (The caller itself is also refused, but then on service_code too.)
            r.to_agency = pick(&["", "nobody", "Housing"]);
            "referral.to_agency"
        }
        1 => {
            // financial-aid is a service of charity, not of housing.
            r.service_code = pick(&["", "bad code", "financial-aid", "-x"]);
            "referral.service_code"
        }
        2 => {
            r.category = [0, 99, -1][variant % 3];
            "referral.category"
        }
        3 => {
            r.priority = [0, 5, i32::MIN][variant % 3];
            "referral.priority"
        }
        4 => {
            r.summary = pick(&["", " \n\t", &"x".repeat(4001)]);
            "referral.summary"
        }
        5 => {
            r.reason = "ر".repeat(4001);
            "referral.reason"
        }
        6 => {
            let id = subject.identifier.as_mut().expect("an identifier");
            let mut digits: Vec<char> = id.value.chars().filter(|c| *c != '-').collect();
            let at = 3 + variant % 12;
            let d = digits[at].to_digit(10).expect("a digit");
            digits[at] = char::from_digit((d + 1 + (variant as u32 % 9)) % 10, 10).expect("digit");
            id.value = digits.into_iter().collect();
            "referral.subject.identifier.value"
        }
        7 => {
            subject.identifier.as_mut().expect("an identifier").r#type = [0, 77][variant % 2];
            "referral.subject.identifier.type"
        }
        8 => {
            subject.full_name = pick(&["", "  "]);
            subject.full_name_ar = String::new();
            "referral.subject.full_name"
        }
        9 => {
            subject.date_of_birth = pick(&[
                "1990-02-30",
                "3000-01-01",
                "1899-12-31",
                "90-1-1",
                "1990-13-01",
            ]);
            "referral.subject.date_of_birth"
        }
        10 => {
            subject.contact.as_mut().expect("contact").phone =
                pick(&["0501234567", "+0501234567", "+12", "+97150123456x"]);
            "referral.subject.contact.phone"
        }
        11 => {
            subject.contact.as_mut().expect("contact").email =
                pick(&["no-at", "a@b", "a b@c.ae", "@x.ae", "a@.ae"]);
            "referral.subject.contact.email"
        }
        12 => {
            r.attachments = vec![DocumentReference {
                document_id: pick(&[
                    "sha256:XYZ",
                    "sha1:abc",
                    &format!("sha256:{}", "A".repeat(64)),
                ]),
                title: String::new(),
            }];
            "referral.attachments[0].document_id"
        }
        13 => {
            consent.expires_at = [
                None,
                Some(timestamp(NOW_MS - 1)),
                Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
            ][variant % 3];
            "referral.consent.expires_at"
        }
        14 => {
            consent.reference = pick(&["", " "]);
            "referral.consent.reference"
        }
        _ => {
            r.subject = None;
            "referral.subject"
        }
    }
}

/// A dotted path into `doc` to an existing value, for each one.
fn paths_of(doc: &Map<String, Value>, prefix: Option<&str>, out: &mut Vec<String>) {
    for (k, v) in doc {
        let path = prefix.map_or_else(|| k.clone(), |p| format!("{p}.{k}"));
        if let Value::Object(inner) = v {
            paths_of(inner, Some(&path), out);
        }
        out.push(path);
    }
}

/// The value at a dotted path of object keys.
fn at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, k| v.as_object()?.get(k))
}

/// Object keys that collide often (and never contain '.', so paths split as built).
fn key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["a", "b", "c", "a_b", "", "id", "subject"]).prop_map(String::from),
        1 => "[a-z_]{0,3}",
    ]
    .boxed()
}

fn json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn object() -> BoxedStrategy<Map<String, Value>> {
    btree_map(key(), json(), 1..6)
        .prop_map(|m| m.into_iter().collect())
        .boxed()
}

fn path() -> BoxedStrategy<String> {
    prop_oneof![
        6 => vec(key(), 1..4).prop_map(|k| k.join(".")),
        1 => any::<String>(),
    ]
    .boxed()
}

fn mapping() -> BoxedStrategy<RestMapping> {
    (
        btree_map(path(), path(), 0..4),
        vec(path(), 0..3),
        btree_map(path(), json(), 0..3),
        vec(path(), 0..3),
    )
        .prop_map(|(rename, flatten, constants, drop)| RestMapping {
            path: String::new(),
            rename,
            flatten,
            constants,
            drop,
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Any SubmitReferralRequest: no panic; an error is INVALID_ARGUMENT whose violations
    /// each name a field of the request; an accepted one keeps only the input fields.
    #[test]
    fn referral_validation_names_real_fields(
        request_id in request_id(),
        referral in prop::option::weighted(0.95, referral()),
    ) {
        let req = SubmitReferralRequest { request_id, referral };
        let result = validate_submit(registry(), directory(), CALLER, &req, NOW_MS);
        let attachments = req.referral.as_ref().map_or(0, |r| r.attachments.len());
        check_paths(
            &violations(&result),
            ".jisr.v1.SubmitReferralRequest",
            &|p| (p == "referral.attachments").then_some(attachments),
        )?;
        if let Ok(out) = result {
            prop_assert_eq!(out, input_fields(req.referral.as_ref().unwrap()));
        }
    }

    /// Bytes off the wire, decoded as a SubmitReferralRequest, never panic validation.
    #[test]
    fn referral_validation_of_any_bytes_does_not_panic(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(req) = SubmitReferralRequest::decode(bytes.as_slice()) {
            let _ = violations(&validate_submit(registry(), directory(), CALLER, &req, NOW_MS));
        }
    }

    /// A valid referral (any Emirates ID with its check digit, any attachments of the
    /// right shape, any output-only fields) is accepted as its input fields; breaking any
    /// one field is reported on exactly that field's path.
    #[test]
    fn one_broken_field_is_named(
        id in emirates_id(),
        attachments in vec(document().prop_filter("well-formed", |d| {
            d.document_id.len() == 71 && d.title.chars().count() <= 200
                && d.document_id.strip_prefix("sha256:").is_some_and(|h| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        }), 0..3),
        noise in (text(), any::<i32>()),
        which in 0usize..16,
        variant in any::<usize>(),
    ) {
        let mut r = referral_to("housing");
        r.subject.as_mut().unwrap().identifier.as_mut().unwrap().value = id;
        let mut attachments = attachments;
        let mut seen = HashSet::new();
        attachments.retain(|a| seen.insert(a.document_id.clone()));
        r.attachments = attachments;
        r.id = noise.0.clone();
        r.from_agency = noise.0;
        r.status = noise.1;
        let ok = validate_submit(registry(), directory(), CALLER, &submit("req-1", r.clone()), NOW_MS);
        prop_assert_eq!(ok.as_ref().ok(), Some(&input_fields(&r)), "{:?}", violations(&ok));

        let path = break_referral(&mut r, which, variant);
        let found = violations(&validate_submit(registry(), directory(), CALLER, &submit("req-1", r), NOW_MS));
        prop_assert!(
            found.iter().any(|(f, _)| f == path),
            "breaking {} was reported as {:?}", path, found
        );
        prop_assert!(found.iter().all(|(f, _)| f == path), "more than {} reported: {:?}", path, found);
    }

    /// Any RequestInformationRequest: as for referrals.
    #[test]
    fn information_request_validation_names_real_fields(
        request_id in request_id(),
        request in prop::option::weighted(0.95, information_request()),
        valid_base in any::<bool>(),
    ) {
        // Half the time a valid request with one generated part, so some are accepted.
        let request = match (valid_base, request) {
            (true, Some(r)) => Some(InformationRequest {
                questions: r.questions,
                due_at: r.due_at,
                ..information_request_to("housing")
            }),
            (_, r) => r,
        };
        let req = RequestInformationRequest { request_id, information_request: request };
        let result = validate_request(registry(), CALLER, &req, NOW_MS);
        let questions = req.information_request.as_ref().map_or(0, |r| r.questions.len());
        check_paths(
            &violations(&result),
            ".jisr.v1.RequestInformationRequest",
            &|p| (p == "information_request.questions").then_some(questions),
        )?;
        if let Ok(out) = result {
            let r = req.information_request.unwrap();
            prop_assert_eq!(out, InformationRequest {
                to_agency: r.to_agency,
                referral_id: r.referral_id,
                subject: r.subject,
                questions: r.questions,
                due_at: r.due_at,
                ..InformationRequest::default()
            });
        }
    }

    /// Any RespondToInformationRequestRequest: no panic, violations name real fields.
    #[test]
    fn information_response_validation_names_real_fields(req in response()) {
        let result = validate_response(&req);
        let answers = match &req.response {
            Some(Response::Answers(a)) => a.answers.clone(),
            _ => Vec::new(),
        };
        check_paths(
            &violations(&result),
            ".jisr.v1.RespondToInformationRequestRequest",
            &|p| {
                if p == "answers.answers" {
                    return Some(answers.len());
                }
                let i: usize = p
                    .strip_prefix("answers.answers[")?
                    .strip_suffix("].documents")?
                    .parse()
                    .ok()?;
                answers.get(i).map(|a| a.documents.len())
            },
        )?;
        if result.is_ok() {
            prop_assert!(req.response.is_some());
        }
    }

    /// An Emirates ID with its Luhn check digit is valid (with or without dashes); any
    /// single-digit change anywhere makes it invalid.
    #[test]
    fn emirates_id_check_digit(id in emirates_id_digits()) {
        prop_assert!(is_emirates_id(&id), "{} is valid", id);
        prop_assert!(is_emirates_id(&dashed(&id)), "{} is valid", dashed(&id));
        for at in 0..id.len() {
            for delta in 1..10 {
                let mut digits: Vec<u32> = id.chars().map(|c| c.to_digit(10).unwrap()).collect();
                digits[at] = (digits[at] + delta) % 10;
                let changed: String = digits.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect();
                prop_assert!(!is_emirates_id(&changed), "{} (from {}) is invalid", changed, id);
                prop_assert!(!is_emirates_id(&dashed(&changed)));
            }
        }
    }

    /// A page token decodes for the fingerprint it was issued for, to its key, and for
    /// no other; whatever decodes is exactly the token issued for that key.
    #[test]
    fn page_tokens_are_bound_to_their_fingerprint(
        key in prop_oneof![ulid(), "\\PC{0,30}"],
        fingerprint in "\\PC{0,20}",
        other in "\\PC{0,20}",
        garbage in prop_oneof!["[A-Za-z0-9_-]{0,60}", "\\PC{0,60}"],
    ) {
        let token = paging::encode(&key, &fingerprint);
        prop_assert_eq!(paging::decode(&token, &fingerprint), Some(key.clone()));
        if other != fingerprint {
            prop_assert_eq!(paging::decode(&token, &other), None);
        }
        if let Some(k) = paging::decode(&garbage, &fingerprint) {
            prop_assert_eq!(paging::encode(&k, &fingerprint), garbage);
        }
    }

    /// A list page resumes from a token only under the filters it was issued for.
    #[test]
    fn id_pages_accept_only_their_own_tokens(
        id in ulid(),
        fingerprint in "[a-z|0-9]{0,20}",
        other in "[a-z|0-9]{0,20}",
        size in -5i32..600,
    ) {
        let token = paging::encode(&id, &fingerprint);
        let mut v = Violations::default();
        let page = IdPage::new(&mut v, size, &token, fingerprint.clone(), (50, 500));
        prop_assert_eq!(v.finish().is_ok(), (0..=500).contains(&size));
        prop_assert_eq!(page.before_id, Some(id));
        prop_assert!((1..=500).contains(&page.size));
        if other != fingerprint {
            let mut v = Violations::default();
            let page = IdPage::new(&mut v, 10, &token, other, (50, 500));
            prop_assert!(page.before_id.is_none());
            let found = violations(&v.finish());
            prop_assert!(found.iter().any(|(f, _)| f == "page_token"), "{:?}", found);
        }
    }

    /// `apply` never panics, and when it succeeds it answers an object.
    #[test]
    fn rest_mapping_never_panics(doc in object(), m in mapping()) {
        if let Ok(out) = apply(&m, doc) {
            prop_assert!(out.is_object());
        }
    }

    /// Renaming a present path to a fresh one moves its value there and removes it
    /// from where it was.
    #[test]
    fn rest_mapping_rename_moves_the_value(
        (doc, from) in object().prop_flat_map(|doc| {
            let mut paths = Vec::new();
            paths_of(&doc, None, &mut paths);
            (Just(doc), select(paths))
        }),
        tail in vec(key(), 0..3),
    ) {
        // "_moved_" is longer than any generated key, so the target is fresh.
        let to = std::iter::once("_moved_".to_string()).chain(tail).collect::<Vec<_>>().join(".");
        let before = Value::Object(doc.clone());
        let value = at(&before, &from).cloned().expect("a present path");
        let m = RestMapping {
            rename: [(from.clone(), to.clone())].into_iter().collect(),
            ..RestMapping::default()
        };
        let out = apply(&m, doc).expect("a rename to a fresh path succeeds");
        prop_assert_eq!(at(&out, &to), Some(&value));
        prop_assert_eq!(at(&out, &from), None);
    }

    /// Unix milliseconds -> Timestamp -> milliseconds is the identity over the whole
    /// valid range, and the Timestamp is normalized (nanos in 0..1e9, whole ms).
    #[test]
    fn timestamps_round_trip(ms in MIN_SECONDS * 1000..=MAX_SECONDS * 1000 + 999) {
        let t = timestamp(ms);
        prop_assert!((0..1_000_000_000).contains(&t.nanos));
        prop_assert_eq!(t.nanos % 1_000_000, 0);
        prop_assert_eq!(timestamp_ms(&t), Some(ms));
    }

    /// A Timestamp converts to milliseconds only when well-formed, truncating below
    /// the millisecond; back again it is the same instant to the millisecond.
    #[test]
    fn timestamp_ms_accepts_only_well_formed(
        seconds in prop_oneof![MIN_SECONDS - 2..=MAX_SECONDS + 2, any::<i64>()],
        nanos in prop_oneof![0..1_000_000_000i32, any::<i32>()],
    ) {
        let t = Timestamp { seconds, nanos };
        let valid = (MIN_SECONDS..=MAX_SECONDS).contains(&seconds) && (0..1_000_000_000).contains(&nanos);
        match timestamp_ms(&t) {
            Some(ms) => {
                prop_assert!(valid);
                prop_assert_eq!(timestamp(ms), Timestamp { seconds, nanos: nanos / 1_000_000 * 1_000_000 });
            }
            None => prop_assert!(!valid),
        }
    }
}
