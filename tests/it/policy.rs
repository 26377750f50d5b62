//! Authorization over the wire: the per-agency policy (default deny), officer tokens, and
//! the matrix of every RPC against every kind of caller. Each refusal is checked to be the
//! right status and to be audited with the rule that made it.

use std::collections::BTreeSet;

use jisr::audit::entry::{AuditEntry, Decision};
use jisr::common::contract::served_rpcs;
use jisr::domain::policy::PolicyConfig;
use jisr::layers::officer::testing::{TestIssuer, TEST_AUDIENCE, TEST_ISSUER};
use jisr::pb::adapter_v1::inbox_service_client::InboxServiceClient;
use jisr::pb::adapter_v1::{AckDeliveryRequest, AckOutcome, PullDeliveriesRequest};
use jisr::pb::v1::audit_service_client::AuditServiceClient;
use jisr::pb::v1::directory_service_client::DirectoryServiceClient;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::audit::entries;
use crate::common::*;

/// The agency the matrix strips of every grant.
const NO_GRANT: &str = "roads-transport";

/// What a call should end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answered OK.
    Ok,
    /// Let through by policy; the handler may still refuse the input (e.g. an audit proof
    /// for a leaf that is not covered yet), but not with a denial.
    Allowed,
    /// Refused with this code, and audited as a denial.
    Denied(Code),
}
use Expect::*;

const PD: Expect = Denied(Code::PermissionDenied);
/// A document the caller may not read is NOT_FOUND (its existence is not disclosed).
const HIDDEN: Expect = Denied(Code::NotFound);

/// One row per RPC the gateway serves: the agency that owns what the call is about, and
/// the expected outcome for [the owner, an unrelated agency, the auditor, an agency with
/// no grant]. A new RPC without a row fails `every_rpc_has_a_row`.
const MATRIX: &[(&str, &str, [Expect; 4])] = &[
    (
        "jisr.v1.ReferralService/SubmitReferral",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.ReferralService/GetReferral",
        "social-services",
        [Ok, PD, PD, PD],
    ),
    (
        "jisr.v1.ReferralService/ListReferrals",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.ReferralService/UpdateReferralStatus",
        "housing",
        [Ok, PD, PD, PD],
    ),
    (
        "jisr.v1.ReferralService/WatchReferralEvents",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.InformationRequestService/RequestInformation",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.InformationRequestService/RespondToInformationRequest",
        "housing",
        [Ok, PD, PD, PD],
    ),
    (
        "jisr.v1.InformationRequestService/GetInformationRequest",
        "social-services",
        [Ok, PD, PD, PD],
    ),
    (
        "jisr.v1.InformationRequestService/ListInformationRequests",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.ApplicationService/SubmitApplication",
        "city-municipality",
        [Ok, PD, PD, PD],
    ),
    (
        "jisr.v1.ApplicationService/GetApplication",
        "city-municipality",
        [Ok, PD, Ok, PD],
    ),
    (
        "jisr.v1.ApplicationService/ListApplications",
        "city-municipality",
        [Ok, PD, Ok, PD],
    ),
    // The digital office clears too, but only after the others: its clearance waits.
    (
        "jisr.v1.ApplicationService/UpdateClearance",
        "planning-survey",
        [Ok, PD, Allowed, PD],
    ),
    (
        "jisr.v1.ApplicationService/WithdrawApplication",
        "city-municipality",
        [Ok, PD, PD, PD],
    ),
    (
        "jisr.v1.DocumentService/UploadDocument",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.DocumentService/DownloadDocument",
        "social-services",
        [Ok, HIDDEN, HIDDEN, PD],
    ),
    (
        "jisr.v1.DirectoryService/ListAgencies",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.DirectoryService/SearchServices",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.DirectoryService/RecommendAgency",
        "social-services",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.v1.AuditService/QueryAuditEvents",
        "digital",
        [Ok, PD, Ok, PD],
    ),
    (
        "jisr.v1.AuditService/GetCheckpoint",
        "digital",
        [Allowed, PD, Allowed, PD],
    ),
    (
        "jisr.v1.AuditService/GetInclusionProof",
        "digital",
        [Allowed, PD, Allowed, PD],
    ),
    (
        "jisr.v1.AuditService/GetConsistencyProof",
        "digital",
        [Allowed, PD, Allowed, PD],
    ),
    (
        "jisr.adapter.v1.InboxService/PullDeliveries",
        "housing",
        [Ok, Ok, Ok, PD],
    ),
    (
        "jisr.adapter.v1.InboxService/AckDelivery",
        "housing",
        [Ok, HIDDEN, HIDDEN, PD],
    ),
];

/// The callers of a row: the owner, an unrelated agency (police is party to nothing in the
/// matrix), the auditor (for the audit RPCs, the owner itself) and the agency with no grant.
fn callers(owner: &str) -> [&str; 4] {
    [owner, "police", "digital", NO_GRANT]
}

#[test]
fn every_rpc_has_a_row() {
    let rows: BTreeSet<String> = MATRIX.iter().map(|(rpc, ..)| rpc.to_string()).collect();
    let served: BTreeSet<String> = served_rpcs().into_iter().collect();
    assert_eq!(
        rows, served,
        "the authorization matrix must list exactly the RPCs the gateway serves"
    );
}

/// What the calls of the matrix are about: a referral from social-services to housing, an
/// information request from social-services to housing, a document of social-services, a
/// delivery waiting in housing's inbox, and a building completion certificate application
/// led by the city municipality (the digital office one of its clearing agencies).
struct World {
    referral_id: String,
    application_id: String,
    information_request_id: String,
    document_id: String,
    delivery_id: String,
}

async fn world(env: &TestEnv, gw: &Gateway) -> World {
    let mut social = env.client(gw, "social-services").await;
    let referral_id = submitted_id(&mut social, "matrix-r", referral_to("housing")).await;
    let information_request_id = information_client(env, gw, "social-services")
        .await
        .request_information(RequestInformationRequest {
            request_id: "matrix-ir".into(),
            information_request: Some(information_request_to("housing")),
        })
        .await
        .unwrap()
        .into_inner()
        .information_request
        .unwrap()
        .id;
    let document_id = uploaded(
        &mut document_client(env, gw, "social-services").await,
        b"matrix document",
    )
    .await
    .id;
    let mut inbox = inbox_client(env, gw, "housing").await;
    let delivery_id = inbox
        .pull_deliveries(PullDeliveriesRequest {
            max_deliveries: 1,
            wait: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
        .first()
        .and_then(|d| d.metadata.as_ref())
        .map(|m| m.delivery_id.clone())
        .expect("housing has a delivery");
    let application_id = application_client(env, gw, "city-municipality")
        .await
        .submit_application(SubmitApplicationRequest {
            request_id: "matrix-app".into(),
            application: Some(building_certificate()),
        })
        .await
        .unwrap()
        .into_inner()
        .application
        .unwrap()
        .id;
    World {
        referral_id,
        application_id,
        information_request_id,
        document_id,
        delivery_id,
    }
}

async fn inbox_client(
    env: &TestEnv,
    gw: &Gateway,
    agency: &str,
) -> InboxServiceClient<tonic::transport::Channel> {
    InboxServiceClient::new(env.channel(gw, &env.agency_cert(agency)).await.unwrap())
}

/// Makes the call `rpc` as `agency`; returns its status code.
async fn call(env: &TestEnv, gw: &Gateway, w: &World, rpc: &str, agency: &str, n: usize) -> Code {
    let channel = env.channel(gw, &env.agency_cert(agency)).await.unwrap();
    let mut referrals =
        jisr::pb::v1::referral_service_client::ReferralServiceClient::new(channel.clone());
    let mut information =
        jisr::pb::v1::information_request_service_client::InformationRequestServiceClient::new(
            channel.clone(),
        );
    let mut documents =
        jisr::pb::v1::document_service_client::DocumentServiceClient::new(channel.clone());
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut audit = AuditServiceClient::new(channel.clone());
    let mut applications =
        jisr::pb::v1::application_service_client::ApplicationServiceClient::new(channel.clone());
    let mut inbox = InboxServiceClient::new(channel);
    let key = format!("matrix-{agency}-{n}");
    let code = |r: Result<(), Status>| r.err().map_or(Code::Ok, |s| s.code());
    let method = rpc.rsplit('/').next().unwrap_or_default();
    match method {
        "SubmitReferral" => code(
            referrals
                .submit_referral(submit(&key, referral_to("housing")))
                .await
                .map(drop),
        ),
        "GetReferral" => code(
            referrals
                .get_referral(GetReferralRequest {
                    referral_id: w.referral_id.clone(),
                })
                .await
                .map(drop),
        ),
        "ListReferrals" => code(
            referrals
                .list_referrals(ListReferralsRequest::default())
                .await
                .map(drop),
        ),
        "UpdateReferralStatus" => code(
            referrals
                .update_referral_status(update(&w.referral_id, &key, ReferralStatus::Accepted))
                .await
                .map(drop),
        ),
        "WatchReferralEvents" => code(
            referrals
                .watch_referral_events(WatchReferralEventsRequest::default())
                .await
                .map(drop),
        ),
        "RequestInformation" => code(
            information
                .request_information(RequestInformationRequest {
                    request_id: key,
                    information_request: Some(information_request_to("housing")),
                })
                .await
                .map(drop),
        ),
        "RespondToInformationRequest" => code(
            information
                .respond_to_information_request(RespondToInformationRequestRequest {
                    information_request_id: w.information_request_id.clone(),
                    request_id: key,
                    response: Some(respond_to_information_request_request::Response::Decline(
                        InformationRequestDecline {
                            reason: DeclineReason::NotHeld as i32,
                            note: String::new(),
                        },
                    )),
                })
                .await
                .map(drop),
        ),
        "GetInformationRequest" => code(
            information
                .get_information_request(GetInformationRequestRequest {
                    information_request_id: w.information_request_id.clone(),
                })
                .await
                .map(drop),
        ),
        "ListInformationRequests" => code(
            information
                .list_information_requests(ListInformationRequestsRequest::default())
                .await
                .map(drop),
        ),
        "SubmitApplication" => code(
            applications
                .submit_application(SubmitApplicationRequest {
                    request_id: key,
                    application: Some(building_certificate()),
                })
                .await
                .map(drop),
        ),
        "GetApplication" => code(
            applications
                .get_application(GetApplicationRequest {
                    application_id: w.application_id.clone(),
                })
                .await
                .map(drop),
        ),
        "ListApplications" => code(
            applications
                .list_applications(ListApplicationsRequest::default())
                .await
                .map(drop),
        ),
        "UpdateClearance" => code(
            applications
                .update_clearance(UpdateClearanceRequest {
                    application_id: w.application_id.clone(),
                    request_id: key,
                    status: ClearanceStatus::Accepted as i32,
                    ..UpdateClearanceRequest::default()
                })
                .await
                .map(drop),
        ),
        "WithdrawApplication" => code(
            applications
                .withdraw_application(WithdrawApplicationRequest {
                    application_id: w.application_id.clone(),
                    request_id: key,
                    reason: "the applicant asked".into(),
                })
                .await
                .map(drop),
        ),
        "UploadDocument" => code(
            documents
                .upload_document(tokio_stream::iter(upload_messages(
                    "text/plain",
                    "matrix",
                    key.as_bytes(),
                    1024,
                )))
                .await
                .map(drop),
        ),
        "DownloadDocument" => code(downloaded(&mut documents, &w.document_id).await.map(drop)),
        "ListAgencies" => code(
            directory
                .list_agencies(ListAgenciesRequest::default())
                .await
                .map(drop),
        ),
        "SearchServices" => code(
            directory
                .search_services(SearchServicesRequest {
                    query: "housing".into(),
                    ..SearchServicesRequest::default()
                })
                .await
                .map(drop),
        ),
        "RecommendAgency" => code(
            directory
                .recommend_agency(RecommendAgencyRequest::default())
                .await
                .map(drop),
        ),
        "QueryAuditEvents" => code(
            audit
                .query_audit_events(QueryAuditEventsRequest::default())
                .await
                .map(drop),
        ),
        "GetCheckpoint" => code(
            audit
                .get_checkpoint(GetCheckpointRequest::default())
                .await
                .map(drop),
        ),
        "GetInclusionProof" => code(
            audit
                .get_inclusion_proof(GetInclusionProofRequest {
                    leaf_index: 0,
                    ..GetInclusionProofRequest::default()
                })
                .await
                .map(drop),
        ),
        "GetConsistencyProof" => code(
            audit
                .get_consistency_proof(GetConsistencyProofRequest {
                    first_tree_size: 1,
                    ..GetConsistencyProofRequest::default()
                })
                .await
                .map(drop),
        ),
        "PullDeliveries" => code(
            inbox
                .pull_deliveries(PullDeliveriesRequest::default())
                .await
                .map(drop),
        ),
        "AckDelivery" => code(
            inbox
                .ack_delivery(AckDeliveryRequest {
                    delivery_id: w.delivery_id.clone(),
                    outcome: AckOutcome::Accepted as i32,
                    ..AckDeliveryRequest::default()
                })
                .await
                .map(drop),
        ),
        other => panic!("the matrix has no call for {other}: add one"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_allows_and_denies_the_right_callers_and_audits_each_denial() {
    let mut env = TestEnv::sqlite();
    let stripped = env
        .config
        .agencies
        .iter_mut()
        .find(|a| a.id == NO_GRANT)
        .unwrap();
    stripped.policy = PolicyConfig::default();
    let gw = env.start().await;
    let w = world(&env, &gw).await;
    let mut failures = Vec::new();
    let mut denials = Vec::new();
    for (n, (rpc, owner, expected)) in MATRIX.iter().enumerate() {
        for (caller, want) in callers(owner).iter().zip(expected) {
            let got = call(&env, &gw, &w, rpc, caller, n).await;
            let ok = match want {
                Ok => got == Code::Ok,
                Allowed => !matches!(
                    got,
                    Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted
                ),
                Denied(code) => got == *code,
            };
            if !ok {
                failures.push(format!("{rpc} as {caller}: expected {want:?}, got {got:?}"));
            }
            if let Denied(_) = want {
                denials.push((format!("/{rpc}"), caller.to_string()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every denial reached the audit trail as a DENY naming its rule.
    let pool = gw.store.pool().clone();
    let mut logged: Vec<AuditEntry> = Vec::new();
    for _ in 0..100 {
        logged = entries(&pool).await;
        let all = denials.iter().all(|(m, a)| {
            logged
                .iter()
                .any(|e| &e.method == m && &e.caller_agency == a && e.decision == Decision::Deny)
        });
        if all {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (method, agency) in &denials {
        let entry = logged
            .iter()
            .find(|e| {
                &e.method == method && &e.caller_agency == agency && e.decision == Decision::Deny
            })
            .unwrap_or_else(|| panic!("no DENY entry for {method} by {agency}"));
        assert!(!entry.rule.is_empty());
        if agency == NO_GRANT {
            let rule = if method.starts_with("/jisr.v1.AuditService/") {
                "audit.auditor-role"
            } else {
                "policy.default-deny"
            };
            assert_eq!(entry.rule, rule, "{method}");
        }
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_and_requests_go_only_where_the_policy_allows_naming_the_rule() {
    let mut env = TestEnv::sqlite();
    // Telecom may not send referrals at all; police may refer only to housing's
    // housing-support service and ask only housing.
    let police = env
        .config
        .agencies
        .iter_mut()
        .find(|a| a.id == "police")
        .unwrap();
    police.policy.refer_to = vec![format!("housing/{}", service_of("housing"))];
    police.policy.ask = vec!["housing".into()];
    let gw = env.start().await;
    let mut police = env.client(&gw, "police").await;
    police
        .submit_referral(submit("ok", referral_to("housing")))
        .await
        .expect("the allowed target");
    let err = police
        .submit_referral(submit("no", referral_to("charity")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "POLICY_DENIED"
    );
    let mut info = information_client(&env, &gw, "police").await;
    let err = info
        .request_information(RequestInformationRequest {
            request_id: "ask-no".into(),
            information_request: Some(information_request_to("charity")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    info.request_information(RequestInformationRequest {
        request_id: "ask-ok".into(),
        information_request: Some(information_request_to("housing")),
    })
    .await
    .expect("police may ask housing");

    let telecom = env.channel(&gw, &env.agency_cert("telecom")).await.unwrap();
    let err = jisr::pb::v1::referral_service_client::ReferralServiceClient::new(telecom)
        .submit_referral(submit("t", referral_to("housing")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "POLICY_DENIED");
    assert_eq!(info.metadata["rule"], "policy.default-deny");

    let logged = eventually_entries(&gw, 6).await;
    let rules: Vec<(&str, Decision, &str)> = logged
        .iter()
        .filter(|e| e.caller_agency == "police" || e.caller_agency == "telecom")
        .map(|e| (e.caller_agency.as_str(), e.decision, e.rule.as_str()))
        .collect();
    let housing_rule = format!("policy.refer_to:housing/{}", service_of("housing"));
    assert_eq!(
        rules,
        vec![
            ("police", Decision::Allow, housing_rule.as_str()),
            ("police", Decision::Deny, "policy.refer_to.default-deny"),
            ("police", Decision::Deny, "policy.ask.default-deny"),
            ("police", Decision::Allow, "policy.ask:housing"),
            ("telecom", Decision::Deny, "policy.default-deny"),
        ]
    );
    gw.shutdown().await.unwrap();
}

async fn eventually_entries(gw: &Gateway, at_least: usize) -> Vec<AuditEntry> {
    let pool = gw.store.pool().clone();
    for _ in 0..100 {
        let got = entries(&pool).await;
        if got.len() >= at_least {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    entries(&pool).await
}

/// A referral submitted with `authorization: Bearer <token>`.
fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// The sample config with officer tokens checked against `issuer`'s JWKS, required for
/// social-services' SubmitReferral.
fn with_officers(issuer: &TestIssuer) -> TestEnv {
    let mut env = TestEnv::sqlite();
    let jwks = env._dir.path().join("jwks.json");
    issuer.write_jwks(&jwks).unwrap();
    env.config.officers.jwks_file = Some(jwks);
    env.config.officers.issuers = vec![TEST_ISSUER.into()];
    env.config.officers.audiences = vec![TEST_AUDIENCE.into()];
    let social = env
        .config
        .agencies
        .iter_mut()
        .find(|a| a.id == "social-services")
        .unwrap();
    social.policy.officer_required = vec!["jisr.v1.ReferralService/SubmitReferral".into()];
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_officer_subject_reaches_the_audit_entry_and_the_token_never_does() {
    let issuer = TestIssuer::new("key-1");
    let env = with_officers(&issuer);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let token = issuer.mint(&TestIssuer::claims("officer-4711"));

    // Required here: without a token the call is refused, naming the rule.
    let err = social
        .submit_referral(submit("none", referral_to("housing")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "OFFICER_TOKEN_REQUIRED"
    );
    let ok = social
        .submit_referral(with_token(submit("with", referral_to("housing")), &token))
        .await
        .expect("a valid officer token");
    let receipt = ok.into_inner().audit_receipt.unwrap();
    // Not required for other RPCs, but recorded when given.
    social
        .list_referrals(with_token(ListReferralsRequest::default(), &token))
        .await
        .unwrap();

    let logged = eventually_entries(&gw, 3).await;
    let required = &logged[0];
    assert_eq!(required.decision, Decision::Deny);
    assert_eq!(
        required.rule,
        "policy.officer_required:jisr.v1.ReferralService/SubmitReferral"
    );
    assert_eq!(required.officer_subject, "");
    let submitted = logged
        .iter()
        .find(|e| e.leaf_index == receipt.leaf_index)
        .unwrap();
    assert_eq!(submitted.officer_subject, "officer-4711");
    assert_eq!(logged[2].officer_subject, "officer-4711");
    let signature = token.rsplit('.').next().unwrap();
    for e in &logged {
        let bytes = String::from_utf8_lossy(&e.encode()).to_string();
        assert!(
            !bytes.contains(signature) && !bytes.contains(&token[..20]),
            "entry {} holds the token",
            e.leaf_index
        );
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_officer_tokens_are_refused_over_the_wire_and_audited() {
    let issuer = TestIssuer::new("key-1");
    let stranger = TestIssuer::new("key-1"); // same kid, another key
    let env = with_officers(&issuer);
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut claims = TestIssuer::claims("officer-1");
    let expired = {
        let mut c = claims.clone();
        c["exp"] = json!(jisr::layers::officer::testing::now_secs() - 3600);
        c
    };
    let wrong_audience = {
        let mut c = claims.clone();
        c["aud"] = json!("another-gateway");
        c
    };
    let exp_as_string = {
        let mut c = claims.clone();
        c["exp"] = json!("2099-01-01T00:00:00Z");
        c
    };
    claims["sub"] = json!("officer-1");
    let cases = [
        (
            "alg none",
            issuer.unsigned(&claims),
            "ALGORITHM_NOT_ALLOWED",
        ),
        ("a wrong key", stranger.mint(&claims), "BAD_SIGNATURE"),
        (
            "a wrong audience",
            issuer.mint(&wrong_audience),
            "WRONG_AUDIENCE",
        ),
        ("expired", issuer.mint(&expired), "TOKEN_EXPIRED"),
        (
            "exp of the wrong JSON type",
            issuer.mint(&exp_as_string),
            "INVALID_CLAIM",
        ),
        ("not a token", "a b c".to_string(), "TOKEN_MALFORMED"),
    ];
    for (i, (what, token, reason)) in cases.iter().enumerate() {
        let err = social
            .list_referrals(with_token(ListReferralsRequest::default(), token))
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        let info = err.get_details_error_info().unwrap();
        assert_eq!(&info.reason, reason, "{what}: {}", err.message());
        assert!(
            !err.message().contains(token.as_str()),
            "{what}: the refusal repeats the token"
        );
        let logged = eventually_entries(&gw, i + 1).await;
        let e = &logged[i];
        assert_eq!(
            (e.method.as_str(), e.decision, e.rule.as_str(), e.grpc_code),
            (
                "/jisr.v1.ReferralService/ListReferrals",
                Decision::Deny,
                "officer.token",
                Code::Unauthenticated as i32
            ),
            "{what}"
        );
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agencys_referral_can_be_neither_read_nor_updated() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let id = submitted_id(&mut social, "r", referral_to("housing")).await;
    let mut police = env.client(&gw, "police").await;
    let read = police
        .get_referral(GetReferralRequest {
            referral_id: id.clone(),
        })
        .await
        .unwrap_err();
    let write = police
        .update_referral_status(update(&id, "u", ReferralStatus::Accepted))
        .await
        .unwrap_err();
    for err in [&read, &write] {
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(err.get_details_error_info().unwrap().reason, "NOT_A_PARTY");
    }
    let logged = eventually_entries(&gw, 3).await;
    for method in ["GetReferral", "UpdateReferralStatus"] {
        assert!(
            logged.iter().any(|e| e.method.ends_with(method)
                && e.caller_agency == "police"
                && e.decision == Decision::Deny
                && e.rule == "referral.party"),
            "{method}"
        );
    }
    assert_eq!(
        fetched(&mut social, &id).await.status(),
        ReferralStatus::Submitted
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_officer_tokens_are_introspected_cached_and_refused_when_inactive() {
    use jisr::layers::officer::testing::{
        active_answer, MockIdp, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
    };
    let mut env = TestEnv::sqlite();
    let idp = MockIdp::start(&env.ca, TEST_CLIENT_ID, TEST_CLIENT_SECRET)
        .await
        .unwrap();
    // Read once by the verifier at start; no other test uses this variable.
    std::env::set_var("POLICY_TEST_IDP_SECRET", TEST_CLIENT_SECRET);
    env.config.officers = idp.officer_config(&env.config.tls.ca_cert, "POLICY_TEST_IDP_SECRET");
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    idp.set_introspection(
        "opaque-token-of-officer-9",
        active_answer("uaepass-officer-9"),
    );

    for _ in 0..2 {
        social
            .list_referrals(with_token(
                ListReferralsRequest::default(),
                "opaque-token-of-officer-9",
            ))
            .await
            .expect("an active token");
    }
    assert_eq!(
        idp.introspection_calls(),
        1,
        "the second call is answered from the cache"
    );
    let err = social
        .list_referrals(with_token(ListReferralsRequest::default(), "revoked-token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.get_details_error_info().unwrap().reason, "INACTIVE");
    idp.set_down(true);
    let err = social
        .list_referrals(with_token(ListReferralsRequest::default(), "another-token"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "the provider's trouble, not the token's"
    );
    assert!(err.get_details_retry_info().is_some());

    let logged = eventually_entries(&gw, 4).await;
    let subjects: Vec<(&str, Decision)> = logged
        .iter()
        .map(|e| (e.officer_subject.as_str(), e.decision))
        .collect();
    assert_eq!(
        subjects,
        vec![
            ("uaepass-officer-9", Decision::Allow),
            ("uaepass-officer-9", Decision::Allow),
            ("", Decision::Deny),
            ("", Decision::Deny),
        ]
    );
    gw.shutdown().await.unwrap();
}
