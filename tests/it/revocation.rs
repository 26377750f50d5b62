//! Revocation and rotation over real TLS: CRLs enforced in the handshake, expired CRLs,
//! files reloaded while serving (on change and on SIGHUP) without dropping open
//! connections, a broken file keeping the configuration in force, and the per-agency
//! connection limit.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jisr::pb::v1::referral_service_client::ReferralServiceClient;
use jisr::pb::v1::GetReferralRequest;
use jisr::server::Gateway;
use jisr::tls::pki::{CertAuthority, Issued, LeafSpec, Revocation};
use jisr::tls::ExpiredCrl;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::common::*;
use crate::tls::{creds, refused};

/// A test bench whose gateway checks its TLS files every second.
fn reloading_env() -> TestEnv {
    let mut env = TestEnv::sqlite();
    env.config.tls.reload_interval_secs = 1;
    env
}

/// Replaces a file the way an operator should: write a sibling, rename it over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn crl_path(env: &TestEnv) -> &Path {
    &env.config.tls.crls[0]
}

/// A current CRL of `ca` listing `revoked` (certificates).
fn crl_of(ca: &CertAuthority, revoked: &[&Issued]) -> String {
    let now = OffsetDateTime::now_utc();
    let revoked: Vec<Revocation> = revoked
        .iter()
        .map(|i| Revocation::new(&i.serial().expect("serial"), now))
        .collect();
    ca.crl(
        &revoked,
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )
    .expect("CRL")
}

/// One call on `channel`: true when the gateway answered it (any application answer,
/// here NotFound or a policy's PermissionDenied), false when the connection was refused.
async fn answered(channel: &Channel) -> bool {
    let status = ReferralServiceClient::new(channel.clone())
        .get_referral(GetReferralRequest {
            referral_id: ulid::Ulid::new().to_string(),
        })
        .await
        .expect_err("no such referral");
    match status.code() {
        tonic::Code::NotFound | tonic::Code::PermissionDenied => true,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => false,
        _ => panic!("unexpected answer {status:?}"),
    }
}

/// Connects with `issued` and makes one call, which must be answered.
async fn served(env: &TestEnv, gw: &Gateway, issued: &Issued) -> Channel {
    let channel = env.channel(gw, issued).await.expect("connects");
    assert!(
        answered(&channel).await,
        "the gateway must serve this client"
    );
    channel
}

/// Waits for the reloader to publish a configuration newer than `before` reloads.
async fn reloaded(gw: &Gateway, before: u64) {
    eventually("the gateway reloads its TLS files", || {
        gw.tls_stats.reloads() > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agency_certificate_is_refused_while_another_agency_of_the_same_ca_is_served() {
    let env = TestEnv::sqlite();
    let (housing, police) = (env.agency_cert("housing"), env.agency_cert("police"));
    replace(crl_path(&env), &crl_of(&env.ca, &[&housing]));
    let gw = env.start().await;

    served(&env, &gw, &police).await;
    let reason = refused(&env, &gw, creds(&env, &housing)).await;
    let serial = housing.serial().unwrap();
    assert!(
        reason.contains("revoked")
            && reason.contains("agency \"housing\"")
            && reason.contains(&serial),
        "{reason}"
    );
    // Another certificate of the same agency is not on the CRL.
    served(&env, &gw, &env.agency_cert("housing")).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_refuses_the_clients_it_covers_unless_expired_crl_is_accept() {
    let mut env = TestEnv::sqlite();
    let (housing, police) = (env.agency_cert("housing"), env.agency_cert("police"));
    let now = OffsetDateTime::now_utc();
    let expired = env
        .ca
        .crl(
            &[Revocation::new(&police.serial().unwrap(), now)],
            now - time::Duration::days(2),
            now - time::Duration::days(1),
        )
        .unwrap();
    replace(crl_path(&env), &expired);

    // By default (refuse), no client the CRL covers gets in.
    assert_eq!(env.config.tls.expired_crl, ExpiredCrl::Refuse);
    let gw = env.start().await;
    let reason = refused(&env, &gw, creds(&env, &housing)).await;
    assert!(
        reason.contains("past its nextUpdate") && reason.contains("agency \"housing\""),
        "{reason}"
    );
    gw.shutdown().await.unwrap();

    // accept: the CRL still counts, so what it revokes stays revoked.
    env.config.tls.expired_crl = ExpiredCrl::Accept;
    let gw = env.start().await;
    served(&env, &gw, &housing).await;
    let reason = refused(&env, &gw, creds(&env, &police)).await;
    assert!(reason.contains("revoked"), "{reason}");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_written_while_serving_refuses_the_next_handshake_and_spares_open_connections() {
    let env = reloading_env();
    let housing = env.agency_cert("housing");
    let gw = env.start().await;
    let open = served(&env, &gw, &housing).await;

    let before = gw.tls_stats.reloads();
    replace(crl_path(&env), &crl_of(&env.ca, &[&housing]));
    reloaded(&gw, before).await;

    // The connection opened before the reload keeps working...
    assert!(
        answered(&open).await,
        "an open connection survives a reload"
    );
    // ...while a new one with the revoked certificate is refused.
    let reason = refused(&env, &gw, creds(&env, &housing)).await;
    assert!(reason.contains("revoked"), "{reason}");
    served(&env, &gw, &env.agency_cert("police")).await;
    assert!(answered(&open).await);
    gw.shutdown().await.unwrap();
}

/// The serial of the certificate the gateway presents to a new connection.
async fn served_certificate_serial(env: &TestEnv, gw: &Gateway, client: &Issued) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(env.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(jisr::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = <X509Certificate as FromDer<_>>::from_der(der).unwrap();
    hex::encode(cert.tbs_certificate.raw_serial())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_served_to_new_connections_and_old_ones_keep_working() {
    let env = reloading_env();
    let housing = env.agency_cert("housing");
    let gw = env.start().await;
    let open = served(&env, &gw, &housing).await;
    let original = std::fs::read_to_string(&env.config.tls.server_cert).unwrap();
    let original = jisr::tls::pki::serial_of_pem(&original).unwrap();
    assert_eq!(
        served_certificate_serial(&env, &gw, &housing).await,
        original
    );

    let rotated = env
        .ca
        .issue(&LeafSpec::server(&["localhost".to_string()]))
        .unwrap();
    let before = gw.tls_stats.reloads();
    // Key first: a reload between the two writes fails (they do not match) and keeps
    // the old pair; the next one takes both.
    replace(&env.config.tls.server_key, &rotated.key_pem);
    replace(&env.config.tls.server_cert, &rotated.cert_pem);
    reloaded(&gw, before).await;
    assert_eq!(
        served_certificate_serial(&env, &gw, &housing).await,
        rotated.serial().unwrap()
    );
    assert!(
        answered(&open).await,
        "the old connection keeps its certificate"
    );
    served(&env, &gw, &housing).await;
    gw.shutdown().await.unwrap();
    // The reload that took effect is in the node's audit log (the failed one is not: it
    // changed nothing).
    let db = jisr::store::Store::open_reads(&env.config.database)
        .await
        .unwrap();
    let reloads: Vec<_> = crate::audit::entries(db.pool())
        .await
        .into_iter()
        .filter(|e| e.method == jisr::server::TLS_RELOAD)
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:#?}");
    assert!(
        reloads[0].reason.contains("TLS reloaded"),
        "{:?}",
        reloads[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trust_bundle_admits_a_second_ca_once_its_crl_is_there_too() {
    let env = reloading_env();
    let second = CertAuthority::generate("second agency CA").unwrap();
    let police = second
        .issue(&LeafSpec::agency(TRUST_DOMAIN, "police"))
        .unwrap();
    let gw = env.start().await;
    let reason = refused(&env, &gw, creds(&env, &police)).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");

    // The bundle now holds both CAs; the second has no CRL yet, so its agencies' status is
    // unknown and they are refused (fail closed).
    let before = gw.tls_stats.reloads();
    let bundle = format!("{}{}", env.ca.cert_pem(), second.cert_pem());
    replace(&env.config.tls.ca_cert, &bundle);
    reloaded(&gw, before).await;
    let reason = refused(&env, &gw, creds(&env, &police)).await;
    assert!(reason.contains("revocation status is unknown"), "{reason}");

    // With its CRL beside the first CA's, the second CA's agencies are served.
    let before = gw.tls_stats.reloads();
    let crls = format!("{}{}", crl_of(&env.ca, &[]), crl_of(&second, &[]));
    replace(crl_path(&env), &crls);
    reloaded(&gw, before).await;
    served(&env, &gw, &police).await;
    served(&env, &gw, &env.agency_cert("housing")).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_configuration_in_force_and_says_which() {
    let env = reloading_env();
    let housing = env.agency_cert("housing");
    let gw = env.start().await;

    for (path, junk) in [
        (
            crl_path(&env).to_owned(),
            "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
        ),
        (env.config.tls.server_key.clone(), "not a key"),
        (env.config.tls.ca_cert.clone(), ""),
    ] {
        let good = std::fs::read_to_string(&path).unwrap();
        let failures = gw.tls_stats.reload_failures();
        replace(&path, junk);
        eventually("the reload fails", || {
            gw.tls_stats.reload_failures() > failures
        })
        .await;
        let error = gw.tls_stats.last_reload_error().unwrap();
        assert!(error.contains(&path.display().to_string()), "{error}");
        // Still served with the previous configuration.
        served(&env, &gw, &housing).await;
        let before = gw.tls_stats.reloads();
        replace(&path, &good);
        reloaded(&gw, before).await;
    }

    // A good file after broken ones is taken.
    let before = gw.tls_stats.reloads();
    replace(crl_path(&env), &crl_of(&env.ca, &[&housing]));
    reloaded(&gw, before).await;
    let reason = refused(&env, &gw, creds(&env, &housing)).await;
    assert!(reason.contains("revoked"), "{reason}");
    gw.shutdown().await.unwrap();
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `jisr serve` as a process, killed when dropped.
struct GatewayProcess(std::process::Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_crl_long_before_the_interval() {
    let env = TestEnv::sqlite();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let gateway = GatewayProcess(
        serve_command(&env, &addr)
            // An hour: only SIGHUP can explain a reload within this test.
            .env("JISR_TLS__RELOAD_INTERVAL_SECS", "3600")
            .spawn()
            .unwrap(),
    );
    let housing = env.agency_cert("housing");
    let connect = || async { env.channel_at(&addr, &housing).await };
    let mut open = None;
    for _ in 0..400 {
        if let Ok(channel) = connect().await {
            open = Some(channel);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = open.expect("the gateway process comes up");
    assert!(answered(&open).await);

    replace(crl_path(&env), &crl_of(&env.ca, &[&housing]));
    // Not yet: nothing tells the gateway to look before the hour is up.
    let fresh = connect().await.expect("connects before the reload");
    assert!(answered(&fresh).await, "no reload without SIGHUP");

    let status = std::process::Command::new("kill")
        .args(["-HUP", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refused = match connect().await {
            Ok(channel) => !answered(&channel).await,
            Err(_) => true,
        };
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the CRL within 20 s (the interval is an hour)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered(&open).await,
        "the connection opened before SIGHUP keeps working"
    );
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_over_its_connection_limit_is_closed_and_a_closed_connection_frees_a_slot() {
    let mut env = TestEnv::sqlite();
    env.config.limits.max_connections_per_agency = 2;
    let gw = env.start().await;
    let housing = env.agency_cert("housing");

    let first = served(&env, &gw, &housing).await;
    let second = served(&env, &gw, &housing).await;
    assert_eq!(gw.tls_stats.open_connections("housing"), 2);
    let reason = refused(&env, &gw, creds(&env, &housing)).await;
    assert!(
        reason.contains("too many connections for agency \"housing\""),
        "{reason}"
    );
    // The limit is per agency; the open ones are untouched.
    let police = served(&env, &gw, &env.agency_cert("police")).await;
    assert!(answered(&first).await && answered(&second).await);

    drop(second);
    eventually("the closed connection frees its slot", || {
        gw.tls_stats.open_connections("housing") == 1
    })
    .await;
    let third = served(&env, &gw, &housing).await;
    assert_eq!(gw.tls_stats.open_connections("housing"), 2);
    assert!(answered(&first).await && answered(&third).await && answered(&police).await);
    gw.shutdown().await.unwrap();
}
