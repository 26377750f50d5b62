//! The audit trail: one entry per call, receipts proven against signed checkpoints, and
//! every kind of tampering named by `verify`.

use std::time::Duration;

use jisr::audit::checkpoint::NoteVerifier;
use jisr::audit::entry::{AuditEntry, Decision};
use jisr::audit::merkle;
use jisr::audit::verify::{verify, VerifyError, VerifyOptions};
use jisr::pb::v1::audit_service_client::AuditServiceClient;
use jisr::pb::v1::*;
use jisr::store::{Reads, Store};
use sqlx::AnyPool;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::*;

fn verifier_key(env: &TestEnv) -> String {
    std::fs::read_to_string(jisr::audit::verifier_key_path(
        &env.config.audit.signing_key,
    ))
    .unwrap()
    .trim()
    .to_string()
}

async fn auditor(
    env: &TestEnv,
    gw: &jisr::server::Gateway,
    agency: &str,
) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(env.channel(gw, &env.agency_cert(agency)).await.unwrap())
}

/// (method, code, decision, rule) of every entry, in log order.
pub async fn entries(pool: &AnyPool) -> Vec<AuditEntry> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT entry FROM audit_entries ORDER BY leaf_index")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.iter()
        .map(|(b,)| AuditEntry::decode(b).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_writes_exactly_one_entry_and_refused_handshakes_none() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut police = env.client(&gw, "police").await;

    let first = social
        .submit_referral(submit("k", referral_to("housing")))
        .await
        .unwrap()
        .into_inner();
    let id = first.referral.as_ref().unwrap().id.clone();
    let receipt = first
        .audit_receipt
        .clone()
        .expect("a write answers with a receipt");
    social
        .submit_referral(submit("k", referral_to("housing")))
        .await
        .unwrap(); // replayed
    let bad = social
        .submit_referral(submit("bad", referral_to("nowhere")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let denied = police
        .get_referral(GetReferralRequest {
            referral_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut complete = update(&id, "c", ReferralStatus::Completed);
    complete.outcome = ReferralOutcome::Resolved as i32;
    let mut housing = env.client(&gw, "housing").await;
    let refused = housing.update_referral_status(complete).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    social
        .list_referrals(ListReferralsRequest::default())
        .await
        .unwrap();
    let not_auditor = auditor(&env, &gw, "police")
        .await
        .get_checkpoint(GetCheckpointRequest::default())
        .await
        .unwrap_err();
    assert_eq!(not_auditor.code(), Code::PermissionDenied);
    use jisr::pb::v1::information_request_service_client::InformationRequestServiceClient;
    let invalid = InformationRequestServiceClient::new(
        env.channel(&gw, &env.agency_cert("charity")).await.unwrap(),
    )
    .get_information_request(GetInformationRequestRequest::default())
    .await
    .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    // A watch the client abandons is recorded when it goes.
    let stream = housing
        .watch_referral_events(WatchReferralEventsRequest::default())
        .await
        .unwrap();
    drop(stream);

    // A refused handshake is counted, not audited: no RPC was made.
    let stranger = jisr::tls::pki::CertAuthority::generate("other").unwrap();
    let foreign = stranger
        .issue(&jisr::tls::pki::LeafSpec::agency(TRUST_DOMAIN, "housing"))
        .unwrap();
    if let Ok(ch) = env.channel(&gw, &foreign).await {
        let _ = jisr::pb::v1::referral_service_client::ReferralServiceClient::new(ch)
            .list_referrals(ListReferralsRequest::default())
            .await;
    }
    eventually("the handshake refusal is counted", || {
        gw.tls_stats.refused() >= 1
    })
    .await;

    let pool = gw.store.pool().clone();
    let expected: Vec<(&str, i32, Decision, &str)> = vec![
        (
            "/jisr.v1.ReferralService/SubmitReferral",
            0,
            Decision::Allow,
            "policy.refer_to:housing",
        ),
        (
            "/jisr.v1.ReferralService/SubmitReferral",
            0,
            Decision::Allow,
            "policy.refer_to:housing",
        ),
        (
            "/jisr.v1.ReferralService/SubmitReferral",
            3,
            Decision::Allow,
            "policy.allow:jisr.v1.ReferralService/*",
        ),
        (
            "/jisr.v1.ReferralService/GetReferral",
            7,
            Decision::Deny,
            "referral.party",
        ),
        (
            "/jisr.v1.ReferralService/UpdateReferralStatus",
            9,
            Decision::Allow,
            "policy.allow:jisr.v1.ReferralService/*",
        ),
        (
            "/jisr.v1.ReferralService/ListReferrals",
            0,
            Decision::Allow,
            "policy.allow:jisr.v1.ReferralService/*",
        ),
        (
            "/jisr.v1.AuditService/GetCheckpoint",
            7,
            Decision::Deny,
            "audit.auditor-role",
        ),
        (
            "/jisr.v1.InformationRequestService/GetInformationRequest",
            3,
            Decision::Allow,
            "policy.allow:jisr.v1.InformationRequestService/*",
        ),
        (
            "/jisr.v1.ReferralService/WatchReferralEvents",
            1,
            Decision::Allow,
            "policy.allow:jisr.v1.ReferralService/*",
        ),
    ];
    let mut got = Vec::new();
    for _ in 0..100 {
        got = entries(&pool).await;
        if got.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary: Vec<_> = got
        .iter()
        .map(|e| (e.method.as_str(), e.grpc_code, e.decision, e.rule.as_str()))
        .collect();
    assert_eq!(summary, expected);

    // What an entry holds: identities and ids, hashes, never payloads.
    let submit_entry = &got[0];
    assert_eq!(submit_entry.leaf_index, receipt.leaf_index);
    assert_eq!(
        merkle::leaf_hash(&submit_entry.encode()).to_vec(),
        receipt.leaf_hash
    );
    assert_eq!(receipt.log_id, env.config.node_id);
    assert_eq!(submit_entry.caller_agency, "social-services");
    assert_eq!(submit_entry.recipient_agency, "housing");
    assert_eq!(submit_entry.target_ids, vec![id.clone()]);
    assert_eq!(submit_entry.cert_fingerprint.len(), 64);
    assert_eq!(submit_entry.request_sha256.len(), 32);
    assert_eq!(submit_entry.trace_id.len(), 32);
    for e in &got {
        let bytes = String::from_utf8_lossy(&e.encode()).to_string();
        for personal in ["Mariam", "784-1990", "eviction", "+971"] {
            assert!(
                !bytes.contains(personal),
                "entry {} leaks {personal:?}",
                e.leaf_index
            );
        }
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_receipt_is_proven_included_in_a_later_signed_checkpoint() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let receipt = social
        .submit_referral(submit("proof", referral_to("housing")))
        .await
        .unwrap()
        .into_inner()
        .audit_receipt
        .unwrap();
    let mut digital = auditor(&env, &gw, "digital").await;
    let first = loop {
        match digital
            .get_checkpoint(GetCheckpointRequest::default())
            .await
        {
            Ok(r) => break r.into_inner().checkpoint.unwrap(),
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    for i in 0..12 {
        social
            .submit_referral(submit(&format!("more-{i}"), referral_to("police")))
            .await
            .unwrap();
    }
    let verifier = NoteVerifier::parse(&verifier_key(&env)).unwrap();
    let proof = loop {
        let p = digital
            .get_inclusion_proof(GetInclusionProofRequest {
                log_id: receipt.log_id.clone(),
                leaf_index: receipt.leaf_index,
                tree_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        if p.tree_size > first.tree_size + 10 {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Checked with our own verifier, from the published key and the signed note alone.
    let checkpoint = proof.checkpoint.clone().unwrap();
    let signed = verifier
        .verify(&checkpoint.signed_note)
        .expect("the checkpoint is signed by the published key");
    assert_eq!(signed.tree_size, proof.tree_size);
    assert_eq!(proof.leaf_hash, receipt.leaf_hash);
    let path: Vec<merkle::Hash> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect();
    let leaf: merkle::Hash = receipt.leaf_hash.as_slice().try_into().unwrap();
    merkle::verify_inclusion(
        &leaf,
        receipt.leaf_index,
        signed.tree_size,
        &path,
        &signed.root_hash,
    )
    .expect("the receipt is included in the later checkpoint");
    let mut forged = leaf;
    forged[0] ^= 1;
    assert!(merkle::verify_inclusion(
        &forged,
        receipt.leaf_index,
        signed.tree_size,
        &path,
        &signed.root_hash
    )
    .is_err());

    // The later checkpoint extends the earlier one.
    let consistency = digital
        .get_consistency_proof(GetConsistencyProofRequest {
            log_id: String::new(),
            first_tree_size: first.tree_size,
            second_tree_size: signed.tree_size,
        })
        .await
        .unwrap()
        .into_inner();
    let path: Vec<merkle::Hash> = consistency
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect();
    let old_root: merkle::Hash = first.root_hash.as_slice().try_into().unwrap();
    merkle::verify_consistency(
        first.tree_size,
        signed.tree_size,
        &old_root,
        &signed.root_hash,
        &path,
    )
    .expect("consistent");

    // The auditor can find the entry by the referral it is about.
    let events = digital
        .query_audit_events(QueryAuditEventsRequest {
            agency: "social-services".into(),
            method: "/jisr.v1.ReferralService/SubmitReferral".into(),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events.events.len(), 5);
    assert!(!events.next_page_token.is_empty());
    assert_eq!(events.events[0].leaf_hash, receipt.leaf_hash);
    let denied = digital
        .query_audit_events(QueryAuditEventsRequest {
            decision: AuditDecision::Deny as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(denied.events.is_empty(), "nothing was refused");
    let err = digital
        .get_inclusion_proof(GetInclusionProofRequest {
            log_id: String::new(),
            leaf_index: 1_000_000,
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    gw.shutdown().await.unwrap();
}

/// A stopped gateway's log of about a dozen entries (so more than one checkpoint).
async fn stopped_log() -> (TestEnv, Reads, String) {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut housing = env.client(&gw, "housing").await;
    for i in 0..6 {
        let id = submitted_id(&mut social, &format!("t{i}"), referral_to("housing")).await;
        housing
            .get_referral(GetReferralRequest { referral_id: id })
            .await
            .unwrap();
    }
    gw.shutdown().await.unwrap();
    let db = Store::open_reads(&env.config.database).await.unwrap();
    let key = verifier_key(&env);
    (env, db, key)
}

async fn check(db: &Reads, key: &str, trusted: Option<String>) -> Result<(), VerifyError> {
    verify(
        db,
        &VerifyOptions {
            log_id: None,
            verifier_key: key.to_string(),
            trusted_note: trusted,
            grace_ms: 0,
            progress: false,
        },
    )
    .await
    .map(|_| ())
}

async fn exec(db: &Reads, sql: &str) {
    sqlx::query(sql).execute(db.pool()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_kind_of_tampering() {
    // Untouched: verify passes and reports the whole log.
    let (_env, db, key) = stopped_log().await;
    let reports = verify(
        &db,
        &VerifyOptions {
            log_id: None,
            verifier_key: key.clone(),
            trusted_note: None,
            grace_ms: 0,
            progress: false,
        },
    )
    .await
    .expect("an untouched log verifies");
    assert_eq!(reports[0].entries, 12);
    assert!(reports[0].checkpoints >= 2, "{reports:?}");
    assert_eq!(reports[0].latest_checkpoint, 12);

    // A changed field, in the query columns only.
    let (_env, db, key) = stopped_log().await;
    exec(
        &db,
        "UPDATE audit_entries SET caller_agency = 'police' WHERE leaf_index = 3",
    )
    .await;
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(err.contains("entry 3 has column caller_agency"), "{err}");

    // A changed field in the logged bytes.
    let (_env, db, key) = stopped_log().await;
    let (bytes,): (Vec<u8>,) =
        sqlx::query_as("SELECT entry FROM audit_entries WHERE leaf_index = 4")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let mut e = AuditEntry::decode(&bytes).unwrap();
    e.grpc_code = 0;
    e.duration_us += 1;
    sqlx::query("UPDATE audit_entries SET entry = $1 WHERE leaf_index = 4")
        .bind(e.encode())
        .execute(db.pool())
        .await
        .unwrap();
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(
        err.contains("entry 4 has a stored leaf hash that does not match"),
        "{err}"
    );

    // ...and with its leaf hash recomputed too: the signed root no longer matches.
    sqlx::query("UPDATE audit_entries SET leaf_hash = $1 WHERE leaf_index = 4")
        .bind(merkle::leaf_hash(&e.encode()).to_vec())
        .execute(db.pool())
        .await
        .unwrap();
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(
        err.contains("checkpoint of") && err.contains("signed root"),
        "{err}"
    );

    // A deleted entry.
    let (_env, db, key) = stopped_log().await;
    exec(&db, "DELETE FROM audit_entries WHERE leaf_index = 2").await;
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(err.contains("entry 2 is missing"), "{err}");

    // Two entries swapped.
    let (_env, db, key) = stopped_log().await;
    exec(
        &db,
        "UPDATE audit_entries SET leaf_index = -1 WHERE leaf_index = 5",
    )
    .await;
    exec(
        &db,
        "UPDATE audit_entries SET leaf_index = 5 WHERE leaf_index = 6",
    )
    .await;
    exec(
        &db,
        "UPDATE audit_entries SET leaf_index = 6 WHERE leaf_index = -1",
    )
    .await;
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(
        err.contains("entry 5 holds the signed content of entry 6") && err.contains("swapped"),
        "{err}"
    );

    // An entry appended out of band, with a valid encoding and leaf hash.
    let (_env, db, key) = stopped_log().await;
    let (bytes,): (Vec<u8>,) =
        sqlx::query_as("SELECT entry FROM audit_entries WHERE leaf_index = 11")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let mut extra = AuditEntry::decode(&bytes).unwrap();
    extra.leaf_index = 12;
    extra.caller_agency = "police".into();
    sqlx::query(
        "INSERT INTO audit_entries (log_id, leaf_index, time_ms, caller_agency, method, decision, targets, entry, leaf_hash) \
         VALUES ($1, 12, $2, 'police', $3, $4, $5, $6, $7)",
    )
    .bind(&extra.log_id)
    .bind(extra.time_ms)
    .bind(&extra.method)
    .bind(extra.decision.as_str())
    .bind(format!(" {} ", extra.target_ids.join(" ")))
    .bind(extra.encode())
    .bind(merkle::leaf_hash(&extra.encode()).to_vec())
    .execute(db.pool())
    .await
    .unwrap();
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(
        err.contains("entry 12 is not covered by any signed checkpoint"),
        "{err}"
    );

    // A forged checkpoint: a new root with a signature by another key under our name.
    let (env, db, key) = stopped_log().await;
    let other = jisr::audit::checkpoint::NoteSigner::from_pkcs8(
        &env.config.audit_origin(),
        &jisr::audit::checkpoint::NoteSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    let forged = other.sign(&jisr::audit::checkpoint::Checkpoint {
        origin: env.config.audit_origin(),
        tree_size: 12,
        root_hash: [7; 32],
    });
    sqlx::query("UPDATE audit_checkpoints SET note = $1, root_hash = $2 WHERE tree_size = 12")
        .bind(forged)
        .bind(vec![7u8; 32])
        .execute(db.pool())
        .await
        .unwrap();
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(
        err.contains("checkpoint of 12 entries has a signature that does not verify"),
        "{err}"
    );

    // A rolled-back log: the last entries and the checkpoint covering them removed. The log
    // left behind is self-consistent; the checkpoint the security team kept says otherwise.
    let (_env, db, key) = stopped_log().await;
    let (kept,): (String,) =
        sqlx::query_as("SELECT note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let (earlier,): (i64,) = sqlx::query_as("SELECT MIN(tree_size) FROM audit_checkpoints")
        .fetch_one(db.pool())
        .await
        .unwrap();
    for table in ["audit_entries", "audit_targets"] {
        exec(
            &db,
            &format!("DELETE FROM {table} WHERE leaf_index >= {earlier}"),
        )
        .await;
    }
    exec(
        &db,
        &format!("DELETE FROM audit_checkpoints WHERE tree_size > {earlier}"),
    )
    .await;
    check(&db, &key, None)
        .await
        .expect("without an anchor the truncated log looks whole");
    let err = check(&db, &key, Some(kept)).await.unwrap_err().to_string();
    assert!(err.contains("rolled back"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_cli_verifies_exports_and_proves_and_fails_loudly_on_tampering() {
    let (env, db, _) = stopped_log().await;
    let jisr = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jisr"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("JISR_DATABASE__URL", &env.config.database.url)
            .env("JISR_AUDIT__SIGNING_KEY", &env.config.audit.signing_key)
            .args(args)
            .output()
            .unwrap()
    };
    let out = jisr(&["audit", "verify", "--grace-ms", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("log jisr-1: OK — 12 entries"), "{stdout}");

    let out = jisr(&["audit", "export", "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(
        lines[0]["method"],
        "/jisr.v1.ReferralService/SubmitReferral"
    );
    assert_eq!(lines[1]["caller_agency"], "housing");
    let out = jisr(&[
        "audit",
        "export",
        "--format",
        "ocsf",
        "--since",
        "2000-01-01T00:00:00Z",
    ]);
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["class_uid"].as_i64(), first["activity_id"].as_i64()),
        (Some(6003), Some(1))
    );
    assert_eq!(first["api"]["operation"], "SubmitReferral");
    let out = jisr(&["audit", "export", "--until", "2000-01-01T00:00:00Z"]);
    assert!(out.stdout.is_empty(), "nothing before 2000");

    let out = jisr(&["audit", "proof", "--leaf", "7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (proof["leaf_index"].as_u64(), proof["verified"].as_bool()),
        (Some(7), Some(true))
    );

    exec(&db, "DELETE FROM audit_entries WHERE leaf_index = 9").await;
    let out = jisr(&["audit", "verify", "--grace-ms", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("entry 9 is missing"), "{stderr}");
}

/// The runbook's SQLite backup (an online copy while the gateway runs: `VACUUM INTO`, what
/// `sqlite3 .backup` also does) restores to a log `jisr audit verify` passes, and a checkpoint
/// kept from after the backup says the restored log was rolled back (docs/operations.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_gateway_runs_restores_and_verifies() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    for i in 0..4 {
        submitted_id(&mut social, &format!("before{i}"), referral_to("housing")).await;
    }
    let live = Store::open_reads(&env.config.database).await.unwrap();
    let backup = env._dir.path().join("backup.db");
    exec(&live, &format!("VACUUM INTO '{}'", backup.display())).await;
    for i in 0..3 {
        submitted_id(&mut social, &format!("after{i}"), referral_to("housing")).await;
    }
    gw.shutdown().await.unwrap();
    let trusted = env._dir.path().join("latest-checkpoint.txt");
    let (note,): (String,) =
        sqlx::query_as("SELECT note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1")
            .fetch_one(live.pool())
            .await
            .unwrap();
    std::fs::write(&trusted, note).unwrap();

    let verify = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jisr"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "JISR_DATABASE__URL",
                format!("sqlite://{}", backup.display()),
            )
            .env("JISR_AUDIT__SIGNING_KEY", &env.config.audit.signing_key)
            .args(["audit", "verify"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = verify(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("log jisr-1: OK — "), "{stdout}");
    let restored: u64 = stdout
        .split("OK — ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("an entry count in {stdout}"));
    assert!(
        restored >= 4,
        "the four submits before the backup: {stdout}"
    );

    let out = verify(&["--trusted", trusted.to_str().unwrap()]);
    assert!(!out.status.success(), "a later checkpoint than the backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rolled back"), "{stderr}");
}

/// QueryAuditEvents by target id and by time walk indexes (audit_targets; a time bound
/// resolved to a leaf position): each answers exactly the entries a filter over every
/// entry would, pages included, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_queries_by_target_and_time_answer_exactly_the_matching_entries() {
    by_target_and_time(TestEnv::sqlite()).await;
    if let Some(db) = postgres_database().await {
        by_target_and_time(TestEnv::with_database(Some(db.url.clone()))).await;
        db.drop_database().await;
    }
}

async fn by_target_and_time(env: TestEnv) {
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    let mut housing = env.client(&gw, "housing").await;
    let digital = auditor(&env, &gw, "digital").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submitted_id(&mut social, &format!("q{i}"), referral_to("housing")).await);
    }
    // Three more entries naming the first referral, across a time boundary.
    housing
        .get_referral(GetReferralRequest {
            referral_id: ids[0].clone(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let boundary = jisr::common::time::now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..2 {
        social
            .get_referral(GetReferralRequest {
                referral_id: ids[0].clone(),
            })
            .await
            .unwrap();
    }
    let all = |req: QueryAuditEventsRequest| {
        let mut digital = digital.clone();
        async move {
            let mut out = Vec::new();
            let mut req = QueryAuditEventsRequest {
                page_size: 2,
                ..req
            };
            loop {
                let page = digital
                    .query_audit_events(req.clone())
                    .await
                    .unwrap()
                    .into_inner();
                out.extend(page.events);
                if page.next_page_token.is_empty() {
                    return out;
                }
                req.page_token = page.next_page_token;
            }
        }
    };
    let everything = all(QueryAuditEventsRequest::default()).await;
    let time_of = |e: &AuditEvent| {
        let t = e.time.as_ref().unwrap();
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    };
    // Entry times never decrease along the log.
    assert!(everything
        .windows(2)
        .all(|w| time_of(&w[0]) <= time_of(&w[1])));

    let naming_first = all(QueryAuditEventsRequest {
        target_id: ids[0].clone(),
        ..Default::default()
    })
    .await;
    let expected: Vec<u64> = everything
        .iter()
        .filter(|e| e.target_ids.contains(&ids[0]))
        .map(|e| e.leaf_index)
        .collect();
    assert_eq!(expected.len(), 4, "submit and three reads name it");
    let got: Vec<u64> = naming_first.iter().map(|e| e.leaf_index).collect();
    assert_eq!(got, expected);

    let since = all(QueryAuditEventsRequest {
        start_time: Some(jisr::common::time::timestamp(boundary)),
        ..Default::default()
    })
    .await;
    let expected: Vec<u64> = everything
        .iter()
        .filter(|e| time_of(e) >= boundary)
        .map(|e| e.leaf_index)
        .collect();
    assert!(expected.len() >= 2, "{expected:?}");
    // The auditor's own queries since are logged too; up to the log as read above:
    let last = everything.last().unwrap().leaf_index;
    let got: Vec<u64> = since.iter().map(|e| e.leaf_index).collect();
    assert_eq!(got[..expected.len()], expected[..]);
    assert!(got[expected.len()..].iter().all(|i| *i > last), "{got:?}");

    let before = all(QueryAuditEventsRequest {
        end_time: Some(jisr::common::time::timestamp(boundary)),
        target_id: ids[0].clone(),
        ..Default::default()
    })
    .await;
    let expected: Vec<u64> = everything
        .iter()
        .filter(|e| time_of(e) < boundary && e.target_ids.contains(&ids[0]))
        .map(|e| e.leaf_index)
        .collect();
    assert_eq!(expected.len(), 2, "the submit and housing's read");
    assert_eq!(
        before.iter().map(|e| e.leaf_index).collect::<Vec<_>>(),
        expected
    );

    let nothing = all(QueryAuditEventsRequest {
        target_id: "01J0000000NOSUCHTARGET0000".into(),
        ..Default::default()
    })
    .await;
    assert!(nothing.is_empty());
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_changed_target_index() {
    for tamper in [
        "DELETE FROM audit_targets WHERE leaf_index = 3",
        "UPDATE audit_targets SET leaf_index = leaf_index + 1 WHERE leaf_index = 3",
        "INSERT INTO audit_targets (log_id, target_id, leaf_index) \
         SELECT log_id, 'someone-else', 3 FROM audit_entries WHERE leaf_index = 3",
    ] {
        let (_env, db, key) = stopped_log().await;
        check(&db, &key, None)
            .await
            .expect("untouched, it verifies");
        exec(&db, tamper).await;
        let err = check(&db, &key, None).await.unwrap_err().to_string();
        assert!(err.contains("audit_targets holds"), "{tamper}: {err}");
    }
}

/// A restart starts the tree from the frontier stored with the newest checkpoint: it reads
/// no entry that checkpoint covers (so restart time does not grow with the log), the log
/// goes on verifying, and tampering with old entries is still found by `verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_only_the_entries_after_the_newest_checkpoint() {
    let (env, db, key) = stopped_log().await;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    submitted_id(&mut social, "after-restart", referral_to("housing")).await;
    gw.shutdown().await.unwrap();
    check(&db, &key, None)
        .await
        .expect("the log continued from the stored frontier verifies");

    // Entry 0 goes missing. Reading every leaf, the writer refused to start ("no entry 0");
    // from the frontier it never looks at it. verify still names it.
    exec(&db, "DELETE FROM audit_entries WHERE leaf_index = 0").await;
    let gw = env.start().await;
    let mut social = env.client(&gw, "social-services").await;
    submitted_id(&mut social, "after-tampering", referral_to("housing")).await;
    gw.shutdown().await.unwrap();
    let err = check(&db, &key, None).await.unwrap_err().to_string();
    assert!(err.contains("entry 0 is missing"), "{err}");
}

/// Three nodes on one database, sharing one signing key file as replicas of one checkout
/// do: each signs as its own origin (`…/jisr/<node>`), each publishes its verifier key in
/// the file beside the key, and `verify` with that file checks every node's log against its
/// own key. Before, the file named the first node only and the others' logs failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_logs_verify_with_the_published_keys() {
    let pg = postgres_database().await;
    let env = TestEnv::with_database(pg.as_ref().map(|db| db.url.clone()));
    let nodes = ["node-a", "node-b", "node-c"];
    let mut gateways = Vec::new();
    for node in nodes {
        let mut config = env.config.clone();
        config.node_id = node.into();
        gateways.push(jisr::server::Gateway::start(&config).await.unwrap());
    }
    for (i, gw) in gateways.iter().enumerate() {
        let mut social = env.client(gw, "social-services").await;
        submitted_id(&mut social, &format!("node{i}"), referral_to("housing")).await;
    }
    for gw in gateways {
        gw.shutdown().await.unwrap();
    }
    let published = verifier_key(&env);
    for node in nodes {
        assert!(
            published
                .lines()
                .any(|l| l.contains(&format!("/jisr/{node}+"))),
            "{node} is in {published}"
        );
    }
    let db = Store::open_reads(&env.config.database).await.unwrap();
    let reports = verify(
        &db,
        &VerifyOptions {
            log_id: None,
            verifier_key: published.clone(),
            trusted_note: None,
            grace_ms: 0,
            progress: false,
        },
    )
    .await
    .expect("every node's log verifies with its own published key");
    let mut verified: Vec<_> = reports.iter().map(|r| r.log_id.clone()).collect();
    verified.sort();
    assert_eq!(verified, nodes);

    // With one node's key only, the others' logs are named, not passed.
    let only_a = published
        .lines()
        .find(|l| l.contains("/jisr/node-a+"))
        .unwrap();
    let err = check(&db, only_a, None).await.unwrap_err().to_string();
    assert!(err.contains("node-b"), "{err}");
    db.pool().close().await;
    if let Some(db) = pg {
        db.drop_database().await;
    }
}
