//! The test bench: a development PKI in a temp dir, the sample config pointed at it, a
//! gateway started in-process, and agency clients.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jisr::pb::v1::application_service_client::ApplicationServiceClient;
use jisr::pb::v1::document_service_client::DocumentServiceClient;
use jisr::pb::v1::information_request_service_client::InformationRequestServiceClient;
use jisr::pb::v1::referral_service_client::ReferralServiceClient;
use jisr::pb::v1::*;
use jisr::server::config::Config;
use jisr::server::Gateway;
use jisr::tls::client::AgencyCredentials;
use jisr::tls::pki::{CertAuthority, Issued, LeafSpec};
use tempfile::TempDir;
use tonic::transport::Channel;

pub const TRUST_DOMAIN: &str = "jisr.gov.ae";
const SAMPLE_CONFIG: &str = include_str!("../../config/jisr.toml");

pub struct TestEnv {
    /// Holds the certificates and the SQLite file; removed on drop.
    pub _dir: TempDir,
    pub ca: CertAuthority,
    pub config: Config,
}

impl TestEnv {
    /// SQLite in a temp dir.
    pub fn sqlite() -> TestEnv {
        TestEnv::with_database(None)
    }

    /// `database_url`: None for a fresh SQLite file.
    pub fn with_database(database_url: Option<String>) -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = CertAuthority::generate("test CA").expect("CA");
        let server = ca
            .issue(&LeafSpec::server(&["localhost".to_string()]))
            .expect("server cert");
        write(&dir.path().join("ca.pem"), ca.cert_pem());
        write(&dir.path().join("server.pem"), &server.cert_pem);
        write(&dir.path().join("server.key"), &server.key_pem);
        let p = |f: &str| dir.path().join(f).display().to_string();
        let url = database_url.unwrap_or_else(|| format!("sqlite://{}", p("jisr.db")));
        // The sample config, overridden the way an operator would: JISR_ variables.
        let vars = [
            ("JISR_LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("JISR_ADMIN__LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("JISR_TLS__CA_CERT", p("ca.pem")),
            ("JISR_TLS__SERVER_CERT", p("server.pem")),
            ("JISR_TLS__SERVER_KEY", p("server.key")),
            ("JISR_TLS__DEV_PKI", "false".to_string()),
            ("JISR_DATABASE__URL", url),
            ("JISR_AUDIT__SIGNING_KEY", p("audit-signing.key")),
            ("JISR_DOCUMENTS__DIR", p("documents")),
            // Small, so tests see checkpoints without writing thousands of entries.
            ("JISR_AUDIT__CHECKPOINT_EVERY", "5".to_string()),
            ("JISR_AUDIT__CHECKPOINT_INTERVAL_MS", "200".to_string()),
        ];
        let config = Config::parse(
            Path::new("config/jisr.toml"),
            SAMPLE_CONFIG,
            vars.iter().map(|(k, v)| (k.to_string(), v.clone())),
        )
        .expect("test config");
        jisr::audit::create_signing_key(&config.audit_origin(), &config.audit.signing_key)
            .expect("audit signing key");
        // The gateway's own client certificate, for adapters that call agencies.
        let mut gateway = LeafSpec::agency(TRUST_DOMAIN, "unused");
        gateway.uris = vec![format!("spiffe://{TRUST_DOMAIN}/gateway/test")];
        let issued = ca.issue(&gateway).expect("gateway client cert");
        let mut config = config;
        // An empty CRL of the test CA, so every test runs with revocation checked.
        let now = time::OffsetDateTime::now_utc();
        let crl = ca
            .crl(
                &[],
                now - time::Duration::hours(1),
                now + time::Duration::days(1),
            )
            .expect("CRL");
        config.tls.crls = vec![dir.path().join("crl.pem")];
        write(&config.tls.crls[0], &crl);
        config.delivery.client_cert = dir.path().join("gateway-client.pem");
        config.delivery.client_key = dir.path().join("gateway-client.key");
        write(&config.delivery.client_cert, &issued.cert_pem);
        write(&config.delivery.client_key, &issued.key_pem);
        // Quick retries, so tests see them.
        config.delivery.initial_backoff_ms = 20;
        config.delivery.max_backoff_ms = 200;
        config.delivery.poll_interval_ms = 50;
        config.delivery.timeout_ms = 2000;
        TestEnv {
            _dir: dir,
            ca,
            config,
        }
    }

    pub async fn start(&self) -> Gateway {
        // Gateway logs, shown by the test harness when a test fails (JISR_LOG to filter).
        jisr::telemetry::init_for_tests();
        Gateway::start(&self.config).await.expect("gateway starts")
    }

    /// A certificate of the test CA for a registered agency.
    pub fn agency_cert(&self, agency: &str) -> Issued {
        self.ca
            .issue(&LeafSpec::agency(TRUST_DOMAIN, agency))
            .expect("agency cert")
    }

    pub fn credentials(&self, issued: &Issued) -> AgencyCredentials {
        AgencyCredentials {
            ca_pem: self.ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem.clone(),
            key_pem: issued.key_pem.clone(),
        }
    }

    /// A ReferralService client connected as `agency`.
    pub async fn client(&self, gateway: &Gateway, agency: &str) -> ReferralServiceClient<Channel> {
        let channel = self
            .channel(gateway, &self.agency_cert(agency))
            .await
            .expect("agency connects");
        ReferralServiceClient::new(channel)
    }

    pub async fn channel(&self, gateway: &Gateway, issued: &Issued) -> anyhow::Result<Channel> {
        self.channel_at(&gateway.addr.to_string(), issued).await
    }

    /// A channel to a gateway at `addr` (one running in another process, say).
    pub async fn channel_at(&self, addr: &str, issued: &Issued) -> anyhow::Result<Channel> {
        jisr::tls::client::connect(addr, "localhost", &self.credentials(issued)).await
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

/// `paths` as a TOML array, for a `JISR_...` variable such as JISR_TLS__CRLS.
pub fn toml_paths(paths: &[std::path::PathBuf]) -> String {
    let quoted: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// A valid Emirates ID number (the check digit is right).
pub const EMIRATES_ID: &str = "784-1990-1234567-6";

/// The sample configuration, as the gateway under test reads it.
pub fn sample_config() -> &'static Config {
    static SAMPLE: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        Config::parse(Path::new("config/jisr.toml"), SAMPLE_CONFIG, Vec::new())
            .expect("sample config")
    })
}

/// A service `agency` offers in the sample directory (its first one).
pub fn service_of(agency: &str) -> String {
    sample_config()
        .agency(agency)
        .and_then(|a| a.services.first())
        .map(|s| s.code.clone())
        .unwrap_or_else(|| "general-service".into())
}

/// A complete, valid referral to `to`.
pub fn referral_to(to: &str) -> Referral {
    Referral {
        to_agency: to.to_string(),
        service_code: service_of(to),
        category: ReferralCategory::Housing as i32,
        priority: ReferralPriority::Urgent as i32,
        subject: Some(Subject {
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
        }),
        summary: "Family of five facing eviction.".into(),
        reason: "Housing support is in the recipient's mandate.".into(),
        // Attachments must be documents the sender may read: see `uploaded`.
        attachments: Vec::new(),
        consent: Some(Consent {
            reference: "CONSENT-42".into(),
            scope: "social-case-referral".into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: 4_102_444_800, // 2100-01-01
                nanos: 0,
            }),
        }),
        ..Referral::default()
    }
}

/// An InformationRequestService client connected as `agency`.
pub async fn information_client(
    env: &TestEnv,
    gateway: &Gateway,
    agency: &str,
) -> InformationRequestServiceClient<Channel> {
    let channel = env
        .channel(gateway, &env.agency_cert(agency))
        .await
        .expect("agency connects");
    InformationRequestServiceClient::new(channel)
}

/// A DocumentService client connected as `agency`.
pub async fn document_client(
    env: &TestEnv,
    gateway: &Gateway,
    agency: &str,
) -> DocumentServiceClient<Channel> {
    let channel = env
        .channel(gateway, &env.agency_cert(agency))
        .await
        .expect("agency connects");
    DocumentServiceClient::new(channel)
}

/// The UploadDocument stream for `bytes`: metadata, then chunks of `chunk` bytes.
pub fn upload_messages(
    media_type: &str,
    title: &str,
    bytes: &[u8],
    chunk: usize,
) -> Vec<UploadDocumentRequest> {
    use upload_document_request::Content;
    let mut messages = vec![UploadDocumentRequest {
        content: Some(Content::Metadata(DocumentMetadata {
            media_type: media_type.into(),
            title: title.into(),
            ..DocumentMetadata::default()
        })),
    }];
    messages.extend(bytes.chunks(chunk).map(|c| UploadDocumentRequest {
        content: Some(Content::Chunk(c.to_vec())),
    }));
    messages
}

/// Uploads `bytes` as a PDF and returns the stored document.
pub async fn uploaded(client: &mut DocumentServiceClient<Channel>, bytes: &[u8]) -> Document {
    client
        .upload_document(tokio_stream::iter(upload_messages(
            "application/pdf",
            "Tenancy notice",
            bytes,
            64 * 1024,
        )))
        .await
        .expect("upload")
        .into_inner()
        .document
        .expect("document in the answer")
}

/// The bytes of a document the client may read (metadata first, then chunks).
pub async fn downloaded(
    client: &mut DocumentServiceClient<Channel>,
    document_id: &str,
) -> Result<(Document, Vec<u8>), tonic::Status> {
    use download_document_response::Content;
    let mut stream = client
        .download_document(DownloadDocumentRequest {
            document_id: document_id.to_string(),
        })
        .await?
        .into_inner();
    let mut document = None;
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.content {
            Some(Content::Document(d)) if document.is_none() => document = Some(d),
            Some(Content::Chunk(c)) if document.is_some() => bytes.extend(c),
            other => panic!("unexpected download message {other:?}"),
        }
    }
    Ok((document.expect("metadata first"), bytes))
}

/// A complete, valid information request to `to`, with two questions.
/// An ApplicationService client connected as `agency`.
pub async fn application_client(
    env: &TestEnv,
    gw: &Gateway,
    agency: &str,
) -> ApplicationServiceClient<Channel> {
    ApplicationServiceClient::new(
        env.channel(gw, &env.agency_cert(agency))
            .await
            .expect("agency connects"),
    )
}

/// An application for the sample's building completion certificate (no attachments).
pub fn building_certificate() -> Application {
    Application {
        service_code: "building-completion-certificate".into(),
        subject: referral_to("housing").subject,
        summary: "Villa on plot 118-204, construction finished".into(),
        references: vec![ReferenceField {
            name: "plot-number".into(),
            value: "118-204".into(),
        }],
        ..Application::default()
    }
}

pub fn information_request_to(to: &str) -> InformationRequest {
    let referral = referral_to(to);
    InformationRequest {
        to_agency: to.to_string(),
        subject: referral.subject,
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
        ..InformationRequest::default()
    }
}

pub fn submit(request_id: &str, referral: Referral) -> SubmitReferralRequest {
    SubmitReferralRequest {
        request_id: request_id.to_string(),
        referral: Some(referral),
    }
}

/// Submits a referral that must be accepted and returns its id.
pub async fn submitted_id(
    client: &mut ReferralServiceClient<Channel>,
    request_id: &str,
    referral: Referral,
) -> String {
    client
        .submit_referral(submit(request_id, referral))
        .await
        .expect("submit")
        .into_inner()
        .referral
        .expect("referral in the answer")
        .id
}

/// A referral the client may read.
pub async fn fetched(client: &mut ReferralServiceClient<Channel>, referral_id: &str) -> Referral {
    client
        .get_referral(GetReferralRequest {
            referral_id: referral_id.to_string(),
        })
        .await
        .expect("get")
        .into_inner()
        .referral
        .expect("referral in the answer")
}

pub fn update(
    referral_id: &str,
    request_id: &str,
    status: ReferralStatus,
) -> UpdateReferralStatusRequest {
    UpdateReferralStatusRequest {
        referral_id: referral_id.to_string(),
        request_id: request_id.to_string(),
        status: status as i32,
        ..UpdateReferralStatusRequest::default()
    }
}

/// Polls `check` until it holds or five seconds pass.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Like [`eventually`], for a check that must await (over the wire); 10 s at most.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// `GET path` on the admin listener (plain HTTP/1.0): the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the admin listener accepts");
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

/// A fresh PostgreSQL database for one test, or None (with the reason printed) when
/// PostgreSQL is unreachable outside CI. Under CI=true an unreachable server fails.
pub async fn postgres_database() -> Option<PgDatabase> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let base = std::env::var("JISR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let mut admin = match sqlx::AnyConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL at {base} is unreachable and CI=true, so this is a failure: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping PostgreSQL part: {base} unreachable ({e}); set JISR_TEST_POSTGRES_URL"
            );
            return None;
        }
    };
    let name = format!("jisr_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    Some(PgDatabase {
        url: format!("{prefix}/{name}"),
        name,
        base,
    })
}

pub struct PgDatabase {
    pub url: String,
    name: String,
    base: String,
}

impl PgDatabase {
    /// Ends every connection to this database (as a PostgreSQL restart does to its
    /// clients); returns how many there were.
    pub async fn drop_connections(&self) -> i64 {
        use sqlx::Connection;
        let mut admin = sqlx::AnyConnection::connect(&self.base).await.unwrap();
        let ended: Vec<(bool,)> = sqlx::query_as(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        ))
        .fetch_all(&mut admin)
        .await
        .unwrap();
        ended.iter().filter(|(ok,)| *ok).count() as i64
    }

    /// Takes the database away: new connections are refused and every open one is ended
    /// (a database server down, as far as the gateway can tell).
    pub async fn refuse_connections(&self) {
        self.alter_connections(false).await;
        self.drop_connections().await;
    }

    /// Brings it back after [`PgDatabase::refuse_connections`].
    pub async fn allow_connections(&self) {
        self.alter_connections(true).await;
    }

    async fn alter_connections(&self, allow: bool) {
        use sqlx::Connection;
        let mut admin = sqlx::AnyConnection::connect(&self.base).await.unwrap();
        sqlx::query(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }

    pub async fn drop_database(self) {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::AnyConnection::connect(&self.base).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `jisr serve` as its own process, configured like `env` through JISR_ variables, with
/// housing behind the grpc adapter at `agency_addr`.
pub fn spawn_gateway(env: &TestEnv, port: u16, agency_addr: SocketAddr) -> std::process::Child {
    spawn_gateway_with(env, port, agency_addr, &[])
}

/// Like [`spawn_gateway`], with more variables (they win over the ones set here).
pub fn spawn_gateway_with(
    env: &TestEnv,
    port: u16,
    agency_addr: SocketAddr,
    extra: &[(&str, String)],
) -> std::process::Child {
    let agencies = format!(
        "[{{id=\"social-services\",name_en=\"Social Services\",name_ar=\"الخدمات\",\
         policy={{allow=[\"*\"],refer_to=[\"housing\"]}}}},\
         {{id=\"housing\",name_en=\"Housing\",name_ar=\"الإسكان\",policy={{allow=[\"*\"]}},\
         adapter={{kind=\"grpc\",endpoint=\"https://{agency_addr}\",server_name=\"localhost\"}}}}]"
    );
    serve_command(env, &format!("127.0.0.1:{port}"))
        .env("JISR_DELIVERY__TIMEOUT_MS", "1000")
        .env("JISR_DELIVERY__INITIAL_BACKOFF_MS", "20")
        .env("JISR_DELIVERY__POLL_INTERVAL_MS", "50")
        .env("JISR_AGENCIES", agencies)
        // The sample's joint services name agencies this registry may not have.
        .env("JISR_JOINT_SERVICES", "[]")
        // One agency's load in the crash tests: its limits raised (docs/benchmarks.md).
        .env("JISR_LIMITS__REQUESTS_PER_SECOND", "100000")
        .env("JISR_LIMITS__BURST", "100000")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .spawn()
        .unwrap()
}

/// `jisr serve` as a process, on `listen_addr`, with the test bench's certificates,
/// database, signing key and documents, logging warnings to nowhere.
pub fn serve_command(env: &TestEnv, listen_addr: &str) -> std::process::Command {
    let c = &env.config;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jisr"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("serve")
        .env("JISR_LISTEN_ADDR", listen_addr)
        .env("JISR_ADMIN__LISTEN_ADDR", "127.0.0.1:0")
        .env("JISR_TLS__CA_CERT", &c.tls.ca_cert)
        .env("JISR_TLS__SERVER_CERT", &c.tls.server_cert)
        .env("JISR_TLS__SERVER_KEY", &c.tls.server_key)
        .env("JISR_TLS__DEV_PKI", "false")
        .env("JISR_TLS__CRLS", toml_paths(&c.tls.crls))
        .env("JISR_DATABASE__URL", &c.database.url)
        .env("JISR_AUDIT__SIGNING_KEY", &c.audit.signing_key)
        .env("JISR_DOCUMENTS__DIR", &c.documents.dir)
        .env("JISR_DELIVERY__CLIENT_CERT", &c.delivery.client_cert)
        .env("JISR_DELIVERY__CLIENT_KEY", &c.delivery.client_key)
        .env("JISR_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

pub async fn connect_when_up(
    env: &TestEnv,
    port: u16,
    agency: &str,
) -> jisr::pb::v1::referral_service_client::ReferralServiceClient<tonic::transport::Channel> {
    for _ in 0..200 {
        if let Ok(ch) = env
            .channel_at(&format!("127.0.0.1:{port}"), &env.agency_cert(agency))
            .await
        {
            return jisr::pb::v1::referral_service_client::ReferralServiceClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway process never came up on port {port}");
}
