//! Refused TLS handshakes: each is refused by the gateway, for the reason we expect,
//! before any RPC runs.

use jisr::pb::v1::referral_service_client::ReferralServiceClient;
use jisr::pb::v1::GetReferralRequest;
use jisr::server::Gateway;
use jisr::tls::client::AgencyCredentials;
use jisr::tls::pki::{CertAuthority, Issued, LeafSpec};
use time::{Duration, OffsetDateTime};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::common::*;

/// Connects with `creds`, makes one call, and returns the refusal reasons the gateway
/// recorded. Panics if the call succeeds.
pub(crate) async fn refused(
    env: &TestEnv,
    gw: &Gateway,
    creds: Option<AgencyCredentials>,
) -> String {
    let before = gw.tls_stats.refused();
    let endpoint = match creds {
        Some(c) => jisr::tls::client::endpoint(&gw.addr.to_string(), "localhost", &c).unwrap(),
        None => Endpoint::from_shared(format!("https://{}", gw.addr))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(env.ca.cert_pem()))
                    .domain_name("localhost"),
            )
            .unwrap(),
    };
    if let Ok(channel) = endpoint.connect().await {
        let call = ReferralServiceClient::new(channel)
            .get_referral(GetReferralRequest {
                referral_id: ulid::Ulid::new().to_string(),
            })
            .await;
        let status = call.expect_err("a refused client must not get an answer");
        // The alert arrives as a broken connection; the code depends on when it lands.
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
    }
    eventually("the gateway records the refusal", || {
        gw.tls_stats.refused() > before
    })
    .await;
    // A client may retry a refused connection: wait until the count settles, so no late
    // retry spills into the next case, and return every reason recorded for this one.
    loop {
        let seen = gw.tls_stats.refused();
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        if gw.tls_stats.refused() == seen {
            break;
        }
    }
    let new = (gw.tls_stats.refused() - before) as usize;
    let recent = gw.tls_stats.recent_refusals();
    recent[recent.len().saturating_sub(new)..].join(" | ")
}

pub(crate) fn creds(env: &TestEnv, issued: &Issued) -> Option<AgencyCredentials> {
    Some(env.credentials(issued))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_valid_agency_certificate_are_refused() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let now = OffsetDateTime::now_utc();

    // A good certificate works, so the failures below are about the certificate.
    let mut ok = env.client(&gw, "housing").await;
    let err = ok
        .get_referral(GetReferralRequest {
            referral_id: ulid::Ulid::new().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(gw.tls_stats.refused(), 0);

    let reason = refused(&env, &gw, None).await;
    assert!(reason.contains("no certificates"), "{reason}");

    let stranger = CertAuthority::generate("someone else's CA").unwrap();
    let foreign = stranger
        .issue(&LeafSpec::agency(TRUST_DOMAIN, "housing"))
        .unwrap();
    let reason = refused(&env, &gw, creds(&env, &foreign)).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");

    let mut spec = LeafSpec::agency(TRUST_DOMAIN, "housing");
    spec.not_before = now - Duration::days(30);
    spec.not_after = now - Duration::days(1);
    let reason = refused(&env, &gw, creds(&env, &env.ca.issue(&spec).unwrap())).await;
    assert!(reason.to_lowercase().contains("expired"), "{reason}");

    let mut spec = LeafSpec::agency(TRUST_DOMAIN, "housing");
    spec.not_before = now + Duration::days(1);
    spec.not_after = now + Duration::days(30);
    let reason = refused(&env, &gw, creds(&env, &env.ca.issue(&spec).unwrap())).await;
    assert!(
        reason.to_lowercase().contains("not valid yet") || reason.contains("NotValidYet"),
        "{reason}"
    );

    let mut spec = LeafSpec::agency(TRUST_DOMAIN, "housing");
    spec.uris
        .push(format!("spiffe://{TRUST_DOMAIN}/agency/police"));
    let reason = refused(&env, &gw, creds(&env, &env.ca.issue(&spec).unwrap())).await;
    assert!(reason.contains("2 URI SANs"), "{reason}");

    let unregistered = env
        .ca
        .issue(&LeafSpec::agency(TRUST_DOMAIN, "ministry-of-magic"))
        .unwrap();
    let reason = refused(&env, &gw, creds(&env, &unregistered)).await;
    assert!(
        reason.contains("\"ministry-of-magic\" is not in the registry"),
        "{reason}"
    );

    let other_domain = env
        .ca
        .issue(&LeafSpec::agency("evil.example", "housing"))
        .unwrap();
    let reason = refused(&env, &gw, creds(&env, &other_domain)).await;
    assert!(
        reason.contains("is not spiffe://jisr.gov.ae/agency/"),
        "{reason}"
    );

    let mut spec = LeafSpec::agency(TRUST_DOMAIN, "housing");
    spec.client_auth = false;
    spec.server_auth = true;
    let reason = refused(&env, &gw, creds(&env, &env.ca.issue(&spec).unwrap())).await;
    assert!(
        reason.contains("Usage") || reason.contains("usage"),
        "{reason}"
    );

    let mut spec = LeafSpec::agency(TRUST_DOMAIN, "housing");
    spec.is_ca = true;
    let reason = refused(&env, &gw, creds(&env, &env.ca.issue(&spec).unwrap())).await;
    eprintln!("CA as leaf refused: {reason}");
    assert!(
        reason.contains("CaUsedAsEndEntity") || reason.contains("CA certificate"),
        "{reason}"
    );

    assert!(gw.tls_stats.refused() >= 9);
    assert!(gw.tls_stats.accepted() >= 1);
    gw.shutdown().await.unwrap();
}
