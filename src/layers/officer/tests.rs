//! The officer verifier against tokens minted by `testing::TestIssuer`, keys from a file or
//! the HTTPS `testing::MockIdp`, and introspection at the same mock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::testing::*;
use super::*;
use crate::tls::pki::CertAuthority;

const SECRET_ENV: &str = "TEST_IDP_CLIENT_SECRET";

struct Env {
    dir: tempfile::TempDir,
    ca: CertAuthority,
    ca_path: PathBuf,
}

fn minimal_config_text(ca: &Path) -> String {
    format!(
        "listen_addr = \"127.0.0.1:1\"\ntrust_domain = \"jisr.test\"\n\
         [tls]\nca_cert = '{}'\nserver_cert = 'b'\nserver_key = 'c'\n\
         [database]\nurl = \"sqlite://x.db\"\n",
        ca.display()
    )
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = CertAuthority::generate("officer test CA").expect("CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).expect("CA written");
        Env { dir, ca, ca_path }
    }

    fn verifier(&self, officers: OfficerConfig) -> OfficerVerifier {
        self.verifier_with_secret(officers, TEST_CLIENT_SECRET)
    }

    fn verifier_with_secret(&self, officers: OfficerConfig, secret: &str) -> OfficerVerifier {
        OfficerVerifier::with_secrets(&officers, &self.ca_path, |name| {
            (name == SECRET_ENV).then(|| secret.to_string())
        })
        .expect("verifier")
    }

    fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// A verifier of JWTs with keys from a file holding `issuer`'s key.
    fn file_verifier(&self, issuer: &TestIssuer) -> OfficerVerifier {
        issuer.write_jwks(&self.jwks_path()).expect("JWKS written");
        self.verifier(OfficerConfig {
            jwks_file: Some(self.jwks_path()),
            ..trusted()
        })
    }

    async fn idp(&self) -> MockIdp {
        MockIdp::start(&self.ca, TEST_CLIENT_ID, TEST_CLIENT_SECRET)
            .await
            .expect("mock identity provider")
    }

    /// A verifier of JWTs with keys from the mock's JWKS URL.
    fn url_verifier(&self, idp: &MockIdp) -> OfficerVerifier {
        self.verifier(OfficerConfig {
            introspection: None,
            ..idp.officer_config(&self.ca_path, SECRET_ENV)
        })
    }

    /// A verifier of opaque tokens by introspection at the mock.
    fn introspection_verifier(&self, idp: &MockIdp, secret: &str) -> OfficerVerifier {
        self.verifier_with_secret(
            OfficerConfig {
                jwks_url: None,
                ..idp.officer_config(&self.ca_path, SECRET_ENV)
            },
            secret,
        )
    }
}

/// Issuers and audiences of the test identity provider, nothing enabled.
fn trusted() -> OfficerConfig {
    OfficerConfig {
        issuers: vec![TEST_ISSUER.to_string()],
        audiences: vec![TEST_AUDIENCE.to_string()],
        ..OfficerConfig::default()
    }
}

/// No 10-character run of the token appears in `text`.
fn assert_no_token_material(token: &str, text: &str) {
    for window in token.as_bytes().windows(10) {
        let window = String::from_utf8_lossy(window);
        assert!(
            !text.contains(window.as_ref()),
            "token material {window:?} leaked into: {text}"
        );
    }
}

/// The refusal of `token`, checked to hold no part of it.
async fn refused(verifier: &OfficerVerifier, token: &str) -> OfficerError {
    let e = match verifier.verify(token).await {
        Ok(officer) => panic!("accepted: {officer:?}"),
        Err(e) => e,
    };
    assert_no_token_material(token, &e.to_string());
    assert_no_token_material(token, &format!("{e:?}"));
    assert_no_token_material(token, &format!("{verifier:?}"));
    e
}

fn claims_with(subject: &str, changes: Value) -> Value {
    let mut claims = TestIssuer::claims(subject);
    for (k, v) in changes.as_object().expect("an object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

// ---- JWT ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_jwt_names_the_officer() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    let claims = TestIssuer::claims("officer-17");
    let officer = v.verify(&issuer.mint(&claims)).await.expect("accepted");
    assert_eq!(officer.subject, "officer-17");
    assert_eq!(officer.issuer, TEST_ISSUER);
    assert_eq!(officer.via, VIA_JWT);
    assert_eq!(
        officer.expires_at.map(|t| t.unix_timestamp()),
        claims["exp"].as_i64()
    );
    // An audience array naming this gateway among others is fine.
    let token = issuer.mint(&claims_with(
        "officer-17",
        json!({ "aud": ["other-service", TEST_AUDIENCE] }),
    ));
    v.verify(&token).await.expect("accepted with an aud array");
    // So is an expiry just past, within the leeway (30 s).
    let token = issuer.mint(&claims_with("officer-17", json!({ "exp": now_secs() - 5 })));
    v.verify(&token).await.expect("accepted within the leeway");
}

#[tokio::test]
async fn unsigned_tokens_are_refused() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    let claims = TestIssuer::claims("officer-17");
    let e = refused(&v, &issuer.unsigned(&claims)).await;
    assert_eq!(e.reason, OfficerReason::AlgorithmNotAllowed, "{e}");
    assert_eq!(e.code(), "ALGORITHM_NOT_ALLOWED");
    assert!(e.message.contains("none"), "{e}");
    // Other spellings, and a "none" header over a real signature.
    for alg in ["None", "NONE"] {
        let token = issuer.mint_with_header(&json!({ "alg": alg, "kid": "k1" }), &claims);
        let e = refused(&v, &token).await;
        assert_eq!(e.reason, OfficerReason::AlgorithmNotAllowed, "{alg}: {e}");
    }
}

#[tokio::test]
async fn hmac_tokens_are_refused_even_keyed_with_the_public_key() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    let claims = TestIssuer::claims("officer-17");
    let jwks_text = std::fs::read(env.jwks_path()).expect("JWKS");
    for secret in [jwks_text.as_slice(), b"secret".as_slice()] {
        let e = refused(&v, &issuer.hs256(&claims, secret)).await;
        assert_eq!(e.reason, OfficerReason::AlgorithmNotAllowed, "{e}");
        assert!(e.message.contains("HS256"), "{e}");
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    let claims = TestIssuer::claims("officer-17");
    // Another key claiming the trusted kid.
    let impostor = TestIssuer::new("k1");
    let e = refused(&v, &impostor.mint(&claims)).await;
    assert_eq!(e.reason, OfficerReason::BadSignature, "{e}");
    // A genuine token whose payload was swapped.
    let genuine = issuer.mint(&claims);
    let forged_payload = impostor.mint(&claims_with("officer-1", json!({})));
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged: Vec<&str> = forged_payload.split('.').collect();
    let token = format!("{}.{}.{}", parts[0], forged[1], parts[2]);
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::BadSignature, "{e}");
    // An RS256 header pointing at the EC key: the key cannot verify that algorithm.
    let token = issuer.mint_with_header(&json!({ "alg": "RS256", "kid": "k1" }), &claims);
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::AlgorithmNotAllowed, "{e}");
    // An algorithm outside the allow-list.
    let token = issuer.mint_with_header(&json!({ "alg": "ES384", "kid": "k1" }), &claims);
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::AlgorithmNotAllowed, "{e}");
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    for aud in [json!("another-gateway"), json!(["a", "b"])] {
        let token = issuer.mint(&claims_with("officer-17", json!({ "aud": aud })));
        let e = refused(&v, &token).await;
        assert_eq!(e.reason, OfficerReason::WrongAudience, "{e}");
        assert!(e.message.contains(TEST_AUDIENCE), "{e}");
    }
    let token = issuer.mint(&claims_with(
        "officer-17",
        json!({ "iss": "https://evil.example" }),
    ));
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::WrongIssuer, "{e}");
    assert!(e.message.contains("https://evil.example"), "{e}");
    assert_eq!(e.code(), "WRONG_ISSUER");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    let now = now_secs();
    let token = issuer.mint(&claims_with(
        "officer-17",
        json!({ "iat": now - 900, "nbf": now - 900, "exp": now - 120 }),
    ));
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::TokenExpired, "{e}");
    assert!(e.message.contains("sign in again"), "{e}");
    let token = issuer.mint(&claims_with("officer-17", json!({ "nbf": now + 600 })));
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::TokenNotYetValid, "{e}");
}

#[tokio::test]
async fn required_claims_must_be_present_and_well_typed() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    for claim in ["exp", "iss", "aud", "sub"] {
        let token = issuer.mint(&claims_with("officer-17", json!({ claim: null })));
        let e = refused(&v, &token).await;
        assert_eq!(e.reason, OfficerReason::MissingClaim, "{claim}: {e}");
        assert!(e.message.contains(&format!("`{claim}`")), "{e}");
    }
    // exp as a string, even one far in the future.
    let far = (now_secs() + 3600).to_string();
    let token = issuer.mint(&claims_with("officer-17", json!({ "exp": far })));
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::InvalidClaim, "{e}");
    assert!(e.message.contains("`exp`"), "{e}");
    // nbf as a string would be skipped by a lenient reader: it is refused.
    let token = issuer.mint(&claims_with(
        "officer-17",
        json!({ "nbf": (now_secs() + 3600).to_string() }),
    ));
    let e = refused(&v, &token).await;
    assert_eq!(e.reason, OfficerReason::InvalidClaim, "{e}");
    // iss must be one string, sub a string.
    let token = issuer.mint(&claims_with(
        "officer-17",
        json!({ "iss": [TEST_ISSUER, "https://other"] }),
    ));
    assert_eq!(
        refused(&v, &token).await.reason,
        OfficerReason::InvalidClaim
    );
    let token = issuer.mint(&claims_with("officer-17", json!({ "sub": 17 })));
    assert_eq!(
        refused(&v, &token).await.reason,
        OfficerReason::InvalidClaim
    );
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let env = Env::new();
    let issuer = TestIssuer::new("k1");
    let v = env.file_verifier(&issuer);
    let cases = [
        "".to_string(),
        "has spaces in it".to_string(),
        "line\nbreak".to_string(),
        // Not a JWT, and this gateway does no introspection.
        "opaque-token-abcdefghijklmnop".to_string(),
        // A JWT header over a payload that is not JSON.
        issuer.mint_raw(issuer.header().to_string().as_bytes(), b"not json at all"),
        // A critical extension.
        issuer.mint_with_header(
            &json!({ "alg": "ES256", "kid": "k1", "crit": ["exp"] }),
            &TestIssuer::claims("o"),
        ),
        "a".repeat(MAX_TOKEN_BYTES + 1),
    ];
    for token in cases {
        let e = refused(&v, &token).await;
        assert_eq!(e.reason, OfficerReason::TokenMalformed, "{e}");
    }
}

#[tokio::test]
async fn no_verifier_configured_refuses_every_token() {
    let env = Env::new();
    let v = env.verifier(OfficerConfig::default());
    assert!(!v.is_enabled());
    let issuer = TestIssuer::new("k1");
    for token in [
        issuer.mint(&TestIssuer::claims("officer-17")),
        "opaque-token-abcdefghijklmnop".to_string(),
    ] {
        let e = refused(&v, &token).await;
        assert_eq!(e.reason, OfficerReason::NotConfigured, "{e}");
        assert!(e.message.contains("not accepted by this gateway"), "{e}");
    }
}

// ---- Key rotation -------------------------------------------------------------------------

#[tokio::test]
async fn a_changed_jwks_file_is_picked_up() {
    let env = Env::new();
    let old = TestIssuer::new("k-old");
    let v = env.file_verifier(&old);
    let claims = TestIssuer::claims("officer-17");
    v.verify(&old.mint(&claims))
        .await
        .expect("old key accepted");
    let new = TestIssuer::new("k-new-key");
    new.write_jwks(&env.jwks_path()).expect("JWKS rewritten");
    let officer = v
        .verify(&new.mint(&claims))
        .await
        .expect("new key accepted");
    assert_eq!(officer.subject, "officer-17");
    let e = refused(&v, &old.mint(&claims)).await;
    assert_eq!(e.reason, OfficerReason::UnknownKey, "{e}");
    // A half-written file leaves the keys as they were.
    std::fs::write(env.jwks_path(), "{\"keys\": [").expect("written");
    v.verify(&new.mint(&claims))
        .await
        .expect("keys kept after a bad write");
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_url_once_per_window() {
    let env = Env::new();
    let idp = env.idp().await;
    let issuer = TestIssuer::new("k1");
    idp.set_jwks(issuer.jwks());
    let v = env.url_verifier(&idp);
    let claims = TestIssuer::claims("officer-17");
    v.verify(&issuer.mint(&claims)).await.expect("accepted");
    v.verify(&issuer.mint(&claims)).await.expect("accepted");
    assert_eq!(idp.jwks_fetches(), 1, "fetched once, then cached");

    let stranger = TestIssuer::new("k-unknown");
    let e = refused(&v, &stranger.mint(&claims)).await;
    assert_eq!(e.reason, OfficerReason::UnknownKey, "{e}");
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "an unknown kid fetches the JWKS again"
    );

    let another = TestIssuer::new("k-unknown-2");
    let e = refused(&v, &another.mint(&claims)).await;
    assert_eq!(e.reason, OfficerReason::UnknownKey, "{e}");
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "no second fetch within jwks_min_refetch_secs"
    );
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_from_the_jwks_url() {
    let env = Env::new();
    let idp = env.idp().await;
    let old = TestIssuer::new("k1");
    idp.set_jwks(old.jwks());
    let v = env.url_verifier(&idp);
    v.prefetch().await.expect("prefetched");
    assert_eq!(idp.jwks_fetches(), 1);
    let claims = TestIssuer::claims("officer-17");
    v.verify(&old.mint(&claims)).await.expect("accepted");

    let new = TestIssuer::new("k2");
    idp.set_jwks(TestIssuer::jwks_of(&[&old, &new]));
    let officer = v
        .verify(&new.mint(&claims))
        .await
        .expect("rotated key accepted");
    assert_eq!(officer.subject, "officer-17");
    assert_eq!(idp.jwks_fetches(), 2);
    v.verify(&old.mint(&claims))
        .await
        .expect("old key still published");
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn cached_jwks_expire_and_an_unreachable_url_is_keys_unavailable() {
    let env = Env::new();
    let idp = env.idp().await;
    let issuer = TestIssuer::new("k1");
    idp.set_jwks(issuer.jwks());
    let v = env.verifier(OfficerConfig {
        introspection: None,
        jwks_cache_secs: 1,
        ..idp.officer_config(&env.ca_path, SECRET_ENV)
    });
    let token = issuer.mint(&TestIssuer::claims("officer-17"));
    v.verify(&token).await.expect("accepted");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&token).await.expect("accepted");
    assert_eq!(idp.jwks_fetches(), 2, "fetched again after jwks_cache_secs");
    // Down: the keys fetched before stay in use.
    idp.set_down(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&token)
        .await
        .expect("stale keys used while the IdP is down");

    // A verifier that never got keys says the keys are unavailable.
    let fresh = env.url_verifier(&idp);
    let e = refused(&fresh, &token).await;
    assert_eq!(e.reason, OfficerReason::KeysUnavailable, "{e}");
    assert!(e.reason.is_unavailable());
    assert!(e.message.contains("503"), "{e}");
}

// ---- Introspection ------------------------------------------------------------------------

#[tokio::test]
async fn an_active_opaque_token_names_the_officer_and_is_cached() {
    let env = Env::new();
    let idp = env.idp().await;
    let token = "uaepass-opaque-Qm9yZWFzLXRva2VuLTEyMzQ1Njc4";
    idp.set_introspection(token, active_answer("784199012345676"));
    let v = env.introspection_verifier(&idp, TEST_CLIENT_SECRET);
    let officer = v.verify(token).await.expect("active");
    assert_eq!(officer.subject, "784199012345676");
    assert_eq!(officer.issuer, TEST_ISSUER);
    assert_eq!(officer.via, VIA_INTROSPECTION);
    assert!(officer.expires_at.is_some());
    assert_eq!(
        idp.last_form(),
        [("token_type_hint".to_string(), "access_token".to_string())]
    );
    let again = v.verify(token).await.expect("active");
    assert_eq!(again, officer);
    assert_eq!(
        idp.introspection_calls(),
        1,
        "the second answer came from the cache"
    );
    assert_no_token_material(token, &format!("{v:?} {officer:?}"));
}

#[tokio::test]
async fn an_inactive_token_is_refused_and_not_cached() {
    let env = Env::new();
    let idp = env.idp().await;
    let v = env.introspection_verifier(&idp, TEST_CLIENT_SECRET);
    let token = "revoked-opaque-token-000000000000";
    for _ in 0..2 {
        let e = refused(&v, token).await;
        assert_eq!(e.reason, OfficerReason::Inactive, "{e}");
    }
    assert_eq!(idp.introspection_calls(), 2);
    // Active, but for someone else or expired by its own exp.
    let other = "opaque-for-another-audience-0000";
    let mut answer = active_answer("officer-3");
    answer["aud"] = json!("someone-else");
    idp.set_introspection(other, answer);
    assert_eq!(
        refused(&v, other).await.reason,
        OfficerReason::WrongAudience
    );
    let expired = "opaque-expired-by-exp-00000000000";
    let mut answer = active_answer("officer-3");
    answer["exp"] = json!(now_secs() - 600);
    idp.set_introspection(expired, answer);
    assert_eq!(
        refused(&v, expired).await.reason,
        OfficerReason::TokenExpired
    );
}

#[tokio::test]
async fn the_cache_never_outlives_the_tokens_exp() {
    let env = Env::new();
    let idp = env.idp().await;
    let v = env.introspection_verifier(&idp, TEST_CLIENT_SECRET);
    let token = "opaque-short-lived-token-00000000";
    let mut answer = active_answer("officer-3");
    answer["exp"] = json!(now_secs() + 1);
    idp.set_introspection(token, answer);
    v.verify(token).await.expect("active");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Within the leeway the answer is still good, but it is asked for again.
    v.verify(token).await.expect("active");
    assert_eq!(idp.introspection_calls(), 2);
}

#[tokio::test]
async fn wrong_client_credentials_or_a_down_endpoint_are_unavailable() {
    let env = Env::new();
    let idp = env.idp().await;
    let token = "opaque-valid-token-1111111111111";
    idp.set_introspection(token, active_answer("officer-3"));
    let v = env.introspection_verifier(&idp, "not-the-secret");
    let e = refused(&v, token).await;
    assert_eq!(e.reason, OfficerReason::IntrospectionUnavailable, "{e}");
    assert!(e.message.contains("client credentials"), "{e}");
    assert!(e.message.contains(SECRET_ENV), "{e}");
    assert!(!e.message.contains("not-the-secret"), "{e}");
    assert!(!format!("{v:?}").contains("not-the-secret"));

    let v = env.introspection_verifier(&idp, TEST_CLIENT_SECRET);
    idp.set_down(true);
    let e = refused(&v, token).await;
    assert_eq!(e.reason, OfficerReason::IntrospectionUnavailable, "{e}");
    assert!(e.reason.is_unavailable());
    idp.set_down(false);
    v.verify(token).await.expect("back up");
}

#[tokio::test]
async fn a_missing_client_secret_fails_the_start() {
    let env = Env::new();
    let idp = env.idp().await;
    let officers = idp.officer_config(&env.ca_path, SECRET_ENV);
    let e = OfficerVerifier::with_secrets(&officers, &env.ca_path, |_| None)
        .expect_err("no secret")
        .to_string();
    assert!(e.contains(SECRET_ENV), "{e}");
}

// ---- Configuration ------------------------------------------------------------------------

/// The `[officers]` section of a config file, loaded and checked as the gateway does.
#[derive(Debug, serde::Deserialize)]
struct Sections {
    #[serde(default)]
    officers: OfficerConfig,
}

fn parse_officers(section: &str, vars: &[(&str, &str)]) -> Result<Sections, ConfigError> {
    let text = format!(
        "{}{section}",
        minimal_config_text(Path::new("certs/ca.pem"))
    );
    crate::config::parse(
        Path::new("x"),
        &text,
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        |s: &Sections| validate(&s.officers),
    )
}

#[test]
fn officers_are_disabled_by_default_with_documented_defaults() {
    let config = parse_officers("", &[]).expect("parses");
    let o = &config.officers;
    assert!(!o.enabled());
    assert_eq!(o.algorithms, ["ES256", "RS256", "EdDSA"]);
    assert_eq!(
        (o.leeway_secs, o.jwks_cache_secs, o.jwks_min_refetch_secs),
        (30, 3600, 60)
    );
}

#[test]
fn an_officers_section_parses_and_env_overrides_it() {
    let section = r#"
[officers]
jwks_url = "https://idp.example.ae/.well-known/jwks.json"
issuers = ["https://idp.example.ae"]
audiences = ["jisr"]
[officers.introspection]
url = "https://idp.example.ae/oauth2/introspect"
client_id = "jisr-gateway"
client_secret_env = "IDP_CLIENT_SECRET"
"#;
    let config = parse_officers(section, &[("JISR_OFFICERS__LEEWAY_SECS", "10")]).expect("parses");
    let o = &config.officers;
    assert!(o.jwt_enabled() && o.enabled());
    assert_eq!(o.leeway_secs, 10);
    let intro = o.introspection.as_ref().expect("introspection");
    assert_eq!((intro.cache_secs, intro.timeout_ms), (30, 5000));
}

#[test]
fn bad_officer_settings_are_refused_naming_the_key() {
    let base = "[officers]\njwks_file = \"jwks.json\"\nissuers = [\"i\"]\naudiences = [\"a\"]\n";
    let err = |extra: &str| {
        parse_officers(&format!("{base}{extra}"), &[])
            .expect_err("refused")
            .to_string()
    };
    let e = err("algorithms = [\"ES256\", \"HS256\"]\n");
    assert!(
        e.contains("officers.algorithms[1]") && e.contains("HS256"),
        "{e}"
    );
    let e = err("algorithms = [\"none\"]\n");
    assert!(
        e.contains("officers.algorithms[0]") && e.contains("never"),
        "{e}"
    );
    let e = err("algorithms = []\n");
    assert!(e.contains("officers.algorithms"), "{e}");
    let e = err("jwks_url = \"http://idp.example.ae/jwks\"\n");
    assert!(e.contains("officers.jwks_url"), "{e}");
    let e = err("leeway_secs = 3600\n");
    assert!(e.contains("officers.leeway_secs"), "{e}");
    let e = err("jwks_min_refetch_secs = 0\n");
    assert!(e.contains("officers.jwks_min_refetch_secs"), "{e}");
    let e = err("secret = \"x\"\n");
    assert!(e.contains("secret"), "unknown key: {e}");
    let e = err("[officers.introspection]\nurl = \"https://i.example\"\nclient_id = \"c\"\nclient_secret = \"inline\"\n");
    assert!(
        e.contains("client_secret"),
        "an inline secret is refused: {e}"
    );
    let e = err("[officers.introspection]\nurl = \"https://i.example\"\nclient_id = \"c\"\nclient_secret_env = \"NOT-A-VAR\"\n");
    assert!(
        e.contains("officers.introspection.client_secret_env"),
        "{e}"
    );
    let e = err("[officers.introspection]\nurl = \"https://i.example\"\nclient_id = \"c\"\nclient_secret_env = \"JISR_SECRET\"\n");
    assert!(
        e.contains("JISR_"),
        "a JISR_ variable would be read as a config key: {e}"
    );
    let e = parse_officers(
        "[officers]\njwks_file = \"jwks.json\"\naudiences = [\"a\"]\n",
        &[],
    )
    .expect_err("no issuers")
    .to_string();
    assert!(e.contains("officers.issuers"), "{e}");
    let e = parse_officers(
        "[officers]\njwks_file = \"jwks.json\"\nissuers = [\"i\"]\n",
        &[],
    )
    .expect_err("no audiences")
    .to_string();
    assert!(e.contains("officers.audiences"), "{e}");
}

#[test]
fn jwks_documents_keep_only_usable_signature_keys() {
    let ec = TestIssuer::new("ec");
    let doc = json!({ "keys": [
        { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
        { "kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
          "x": ec.jwk()["x"], "y": ec.jwk()["y"] },
        { "kty": "weird", "kid": "unknown" },
        ec.jwk(),
    ]});
    let keys = jwks::parse_jwks(doc.to_string().as_bytes()).expect("one usable key");
    assert_eq!(keys.len(), 1);
    assert!(jwks::parse_jwks(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}").is_err());
    assert!(jwks::parse_jwks(b"[]").is_err());
}

#[test]
fn the_documented_example_in_the_sample_config_parses() {
    let sample = include_str!("../../../config/jisr.toml");
    let start = sample.find("#   [officers]\n").expect("the example");
    let end = sample[start..]
        .find("#   timeout_ms = 5000\n")
        .map(|i| start + i + "#   timeout_ms = 5000\n".len())
        .expect("its end");
    let section: String = sample[start..end]
        .lines()
        .map(|l| l.strip_prefix("#").unwrap_or(l).trim_start())
        .map(|l| format!("{l}\n"))
        .collect();
    let config = parse_officers(&section, &[]).expect("the documented example parses");
    let o = &config.officers;
    assert!(o.jwks_file.is_some() && o.jwks_url.is_some() && o.introspection.is_some());
    assert_eq!(o, &OfficerConfig { ..o.clone() });
}
