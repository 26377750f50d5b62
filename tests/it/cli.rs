//! The `jisr` binary itself: a newcomer's first commands.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jisr::tls::identity::agency_identity;

use crate::common::free_port;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Environment that points the sample config at a temp dir.
fn jisr(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jisr"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("JISR_TLS__DEV_PKI_DIR", dir.join("pki"))
        .env("JISR_TLS__CA_CERT", dir.join("pki/ca.pem"))
        .env("JISR_TLS__SERVER_CERT", dir.join("pki/server.pem"))
        .env("JISR_TLS__SERVER_KEY", dir.join("pki/server.key"))
        .env("JISR_TLS__CRLS", format!("[{:?}]", dir.join("pki/crl.pem")))
        .env("JISR_AUDIT__SIGNING_KEY", dir.join("pki/audit-signing.key"))
        .env(
            "JISR_DELIVERY__CLIENT_CERT",
            dir.join("pki/gateway-client.pem"),
        )
        .env(
            "JISR_DELIVERY__CLIENT_KEY",
            dir.join("pki/gateway-client.key"),
        )
        .env(
            "JISR_DATABASE__URL",
            format!("sqlite://{}/db/jisr.db", dir.display()),
        )
        .env("JISR_DOCUMENTS__DIR", dir.join("documents"))
        .env("JISR_LISTEN_ADDR", "127.0.0.1:0")
        .env("JISR_ADMIN__LISTEN_ADDR", "127.0.0.1:0")
        .env("JISR_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

#[test]
fn certs_init_issues_one_agency_certificate_per_registered_agency() {
    let dir = tempfile::tempdir().unwrap();
    let out = jisr(dir.path()).args(["certs", "init"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = jisr::server::config::Config::parse(
        std::path::Path::new("config/jisr.toml"),
        include_str!("../../config/jisr.toml"),
        Vec::new(),
    )
    .unwrap();
    for agency in &config.agencies {
        let pem =
            std::fs::read(dir.path().join(format!("pki/agencies/{}.pem", agency.id))).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        let id = agency_identity(&der, &config.trust_domain, |_| true).unwrap();
        assert_eq!(id.agency_id, agency.id);
        let key =
            std::fs::read_to_string(dir.path().join(format!("pki/agencies/{}.key", agency.id)))
                .unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }
    // It will not silently replace an existing CA.
    let again = jisr(dir.path()).args(["certs", "init"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn serve_on_a_fresh_checkout_creates_the_pki_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = jisr(dir.path())
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut created, mut listening) = (false, false);
    while Instant::now() < deadline && !(created && listening) {
        let Some(Ok(line)) = lines.next() else { break };
        created |= line.contains("created a development PKI");
        listening |= line.contains("gateway listening");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        created && listening,
        "created={created} listening={listening}"
    );
    assert!(dir.path().join("pki/agencies/housing.pem").exists());
    assert!(
        dir.path().join("db/jisr.db").exists(),
        "the SQLite file and its directory are created"
    );
}

/// Eight replicas started at once on a fresh checkout, five times over: one creates the
/// development PKI, the others wait for it and use it (without the lock, some rounds had
/// two creators, and a replica could read an audit key another was still writing, and exit).
#[test]
fn replicas_started_together_create_the_development_pki_once() {
    for _ in 0..5 {
        replicas_race_for_a_fresh_pki();
    }
}

fn replicas_race_for_a_fresh_pki() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..8)
        .map(|i| {
            jisr(dir.path())
                .arg("serve")
                .env(
                    "JISR_DATABASE__URL",
                    format!("sqlite://{}/db{i}/jisr.db", dir.path().display()),
                )
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let watchers: Vec<_> = children
        .into_iter()
        .map(|mut child| {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
                let deadline = Instant::now() + Duration::from_secs(60);
                let (mut created, mut listening, mut seen) = (false, false, Vec::new());
                while Instant::now() < deadline && !listening {
                    let Some(Ok(line)) = lines.next() else { break };
                    created |= line.contains("created a development PKI");
                    listening |= line.contains("gateway listening");
                    seen.push(line);
                }
                let _ = child.kill();
                let _ = child.wait();
                (created, listening, seen)
            })
        })
        .collect();
    let mut creators = 0;
    for w in watchers {
        let (created, listening, seen) = w.join().unwrap();
        assert!(listening, "a replica did not start: {seen:#?}");
        creators += usize::from(created);
    }
    assert_eq!(creators, 1, "exactly one replica created the PKI");
    assert!(dir.path().join("pki/audit-signing.key").exists());
}

#[test]
fn config_check_reports_policy_mistakes_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let sample = include_str!("../../config/jisr.toml");
    // Social Services' first policy rule now names an agency that does not exist, and a
    // service Housing does not offer.
    let bad = sample.replacen(
        "refer_to = [\"family-court\"",
        "refer_to = [\"nowhere\", \"housing/no-such-service\", \"family-court\"",
        1,
    );
    assert_ne!(bad, sample, "the sample's first refer_to rule moved");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = jisr(dir.path())
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy mistakes")
            && err.contains("agencies[0].policy.refer_to[0] (agency social-services): \"nowhere\" names no registered agency")
            && err.contains("housing offers no service \"no-such-service\""),
        "{err}"
    );
}

#[test]
fn a_bad_setting_stops_the_start_naming_key_value_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let out = jisr(dir.path())
        .args(["config", "check"])
        .env("JISR_DATABASE__MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database.max_connections")
            && err.contains("lots")
            && err.contains("JISR_DATABASE__MAX_CONNECTIONS"),
        "{err}"
    );
    let ok = jisr(dir.path()).args(["config", "check"]).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let agencies = jisr::server::config::Config::parse(
        std::path::Path::new("config/jisr.toml"),
        include_str!("../../config/jisr.toml"),
        Vec::new(),
    )
    .unwrap()
    .agencies
    .len();
    let summary = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        summary.contains(&format!("{agencies} agencies")),
        "{summary}"
    );
}

#[test]
fn jisr_demo_walks_the_closed_loop_and_exits_zero_with_nothing_set_up() {
    let dir = tempfile::tempdir().unwrap();
    // From an empty directory: the demo needs no config, certificates or database.
    let out = Command::new(env!("CARGO_BIN_EXE_jisr"))
        .current_dir(dir.path())
        .arg("demo")
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    for step in [
        "Housing's system received it through the grpc adapter",
        "Social Services heard it in its inbox",
        "Housing completed it (outcome RESOLVED); Social Services heard it",
        "reshaped by its mapping",
        "Housing's own system heard it through the grpc adapter",
        "the audit trail verifies",
        "The loop closed",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}

#[test]
fn jisr_demo_joint_takes_an_application_through_its_clearances_to_approved() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jisr"))
        .current_dir(dir.path())
        .args(["demo", "joint"])
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    let steps = [
        "expected completion 20",
        "waiting for their prerequisites: civil-defence, digital",
        "its clearance is INFORMATION_REQUESTED",
        "the lead answered; the utilities authority reviewed and APPROVED",
        "now civil defence is asked",
        "the application is APPROVED",
        "the lead's own system heard the decision",
        "the audit trail verifies",
    ];
    let mut at = 0;
    for step in steps {
        let found = stdout[at..]
            .find(step)
            .unwrap_or_else(|| panic!("missing {step:?} (in this order) in:\n{stdout}"));
        at += found;
    }
}

/// The README's joint-service commands against a `jisr serve` process: the lead applies, a
/// clearing agency approves with a condition, the dependent clearance is then requested, a
/// premature move is refused with its reason, the lead withdraws.
#[test]
fn jisr_client_applies_clears_and_withdraws_an_application() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut gateway = jisr(dir.path())
        .arg("serve")
        .env("JISR_LISTEN_ADDR", &addr)
        .env("JISR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "jisr serve never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = |agency: &str, args: &[&str]| {
        jisr(dir.path())
            .env("JISR_LISTEN_ADDR", &addr)
            .env("JISR_LOG", "warn")
            .args(["client", "--as", agency])
            .args(args)
            .output()
            .unwrap()
    };
    let out = client(
        "city-municipality",
        &[
            "apply",
            "--service",
            "building-completion-certificate",
            "--emirates-id",
            "784-1990-1234567-6",
            "--name",
            "Mariam Test",
            "--ref",
            "plot-number=118-204",
        ],
    );
    let applied = succeeded(&out);
    let id = applied
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {applied}"))
        .to_string();
    assert!(
        applied.contains("IN_PROGRESS") && applied.contains("plot-number: 118-204"),
        "{applied}"
    );
    let refused = client("civil-defence", &["clear", &id, "--status", "approved"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("TRANSITION_NOT_ALLOWED") && stderr.contains("planning-survey"),
        "{stderr}"
    );
    let approved = client(
        "planning-survey",
        &[
            "clear",
            &id,
            "--status",
            "approved",
            "--condition",
            "setback kept",
        ],
    );
    let approved = succeeded(&approved);
    assert!(approved.contains("condition: setback kept"), "{approved}");
    assert!(
        !approved.contains("civil-defence") && !approved.contains("electricity-water-gas"),
        "it sees its own clearance only: {approved}"
    );
    let seen = client("city-municipality", &["application", &id]);
    let seen = succeeded(&seen);
    let line = |agency: &str| {
        seen.lines()
            .find(|l| l.trim_start().starts_with(agency))
            .unwrap_or_else(|| panic!("no {agency} in {seen}"))
            .to_string()
    };
    assert!(line("planning-survey").contains("APPROVED"), "{seen}");
    assert!(
        line("civil-defence").contains("REQUESTED"),
        "requested once planning approved: {seen}"
    );
    assert!(line("digital").contains("WAITING"), "{seen}");
    let withdrawn = client(
        "city-municipality",
        &["withdraw", &id, "--reason", "the owner sold the plot"],
    );
    assert!(succeeded(&withdrawn).contains("WITHDRAWN"));
    let _ = gateway.kill();
    let _ = gateway.wait();
}

#[test]
fn certs_revoke_puts_the_agency_certificate_on_the_development_crl() {
    use jisr::tls::crl;
    let dir = tempfile::tempdir().unwrap();
    let init = jisr(dir.path()).args(["certs", "init"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let listed = || {
        let pem = std::fs::read(dir.path().join("pki/crl.pem")).unwrap();
        let ders = crl::parse_pem(&pem).unwrap();
        crl::info(&ders[0]).unwrap()
    };
    let empty = listed();
    assert!(empty.revoked.is_empty() && empty.issuer.contains("Jisr development CA"));
    assert!(!empty.is_expired(time::OffsetDateTime::now_utc()));

    let revoke = |agency: &str| {
        jisr(dir.path())
            .args([
                "certs",
                "revoke",
                agency,
                "--reason",
                "laptop stolen, ticket 77",
            ])
            .output()
            .unwrap()
    };
    let out = revoke("housing");
    let stdout = succeeded(&out);
    let cert = std::fs::read_to_string(dir.path().join("pki/agencies/housing.pem")).unwrap();
    let serial = jisr::tls::pki::serial_of_pem(&cert).unwrap();
    assert!(
        stdout.contains("revoked") && stdout.contains(&serial),
        "{stdout}"
    );
    let crl = listed();
    assert!(crl.lists(&serial) && crl.revoked.len() == 1, "{crl:?}");
    // The revocation is in the node's audit log: who, which certificate, why.
    let db = rusqlite::Connection::open(dir.path().join("db/jisr.db")).unwrap();
    let bytes: Vec<u8> = db
        .query_row(
            "SELECT entry FROM audit_entries WHERE method = 'jisr.operator/CertsRevoke'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let entry = jisr::audit::entry::AuditEntry::decode(&bytes).unwrap();
    assert_eq!(entry.reason, "laptop stolen, ticket 77");
    assert!(entry.officer_subject.starts_with("os:"), "{entry:?}");
    assert_eq!(
        entry.target_ids,
        vec![format!("cert:{serial}"), "agency:housing".to_string()]
    );

    // Twice is once; another agency joins the list; an unknown one is an error.
    let again = revoke("housing");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already"));
    let police = revoke("police");
    assert!(police.status.success());
    assert_eq!(listed().revoked.len(), 2);
    assert!(listed().lists(&serial));
    let unknown = revoke("ministry-of-magic");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("ministry-of-magic.pem"));
}

#[test]
fn bench_baseline_reports_the_echo_and_each_ratio_to_it() {
    // A functional check of the measuring tool (the numbers themselves are in
    // docs/benchmarks.md): one second against the sandbox gateway and the echo.
    let dir = tempfile::tempdir().unwrap();
    for rpc in ["submit", "get"] {
        let out = jisr(dir.path())
            .args([
                "bench",
                "--sandbox",
                "--baseline",
                "--rpc",
                rpc,
                "--duration",
                "1",
                "--connections",
                "1",
                "--in-flight",
                "2",
            ])
            .env("JISR_LOG", "warn")
            // One agency's load: the per-agency limits raised (docs/benchmarks.md).
            .env("JISR_LIMITS__REQUESTS_PER_SECOND", "1000000")
            .env("JISR_LIMITS__BURST", "1000000")
            .output()
            .unwrap();
        let stdout = succeeded(&out);
        let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(line["errors"], 0, "{line}");
        assert_eq!(line["baseline"]["errors"], 0, "{line}");
        assert!(line["ok"].as_u64().unwrap() > 0, "{line}");
        assert!(line["baseline"]["ok"].as_u64().unwrap() > 0, "{line}");
        let ratio = line["ratio_to_baseline"]["throughput"].as_f64().unwrap();
        let expected = line["throughput_rps"].as_f64().unwrap()
            / line["baseline"]["throughput_rps"].as_f64().unwrap();
        assert!((ratio - expected).abs() < 0.01, "{line}");
        assert!(
            line["ratio_to_baseline"]["p50"].as_f64().unwrap() > 0.0,
            "{line}"
        );
    }
}

/// The stdout of a command that must have succeeded (else both outputs, in the failure).
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
