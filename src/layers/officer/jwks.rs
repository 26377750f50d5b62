//! The identity provider's public keys (JWKS), from a file and/or an https URL.
//!
//! - The file is read at start (a missing or unusable file fails the start) and again when
//!   its modification time or length changes: looked at no more than once a second, and at
//!   once when a token names an unknown `kid`. A file that does not parse (say, half
//!   written) leaves the keys as they were.
//! - The URL is fetched when first needed (or by `prefetch`), used for `jwks_cache_secs`,
//!   then fetched again. A token naming an unknown `kid` fetches it again, at most once per
//!   `jwks_min_refetch_secs`. A fetch that fails leaves the keys as they were, and is tried
//!   again no sooner than `min(jwks_min_refetch_secs, 10)` seconds later.
//!
//! Only signature keys are kept: EC P-256/P-384, RSA and Ed25519 keys whose `use` (if any)
//! is "sig". Symmetric (`oct`) keys are never loaded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::http::HttpsClient;
use super::{shown, OfficerConfig, OfficerError, OfficerReason};

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// The file's modification time is looked at no more often than this (unless a `kid` is
/// unknown).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait before a failed JWKS fetch is tried again.
const MAX_FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(10);

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    EcP256,
    EcP384,
    Rsa,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "an EC P-256 key (ES256)",
            KeyKind::EcP384 => "an EC P-384 key (ES384)",
            KeyKind::Rsa => "an RSA key (RS*/PS*)",
            KeyKind::Ed25519 => "an Ed25519 key (EdDSA)",
        }
    }
}

/// One usable verification key.
#[derive(Clone)]
pub(super) struct Key {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one: the key is used for no other.
    alg: Option<KeyAlgorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a.to_string() == format!("{alg:?}"))
    }
}

/// The usable keys of a JWKS document; an error if it is not a JWKS or holds none.
pub(super) fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS: no \"keys\" array".into());
    };
    let mut keys = Vec::new();
    let mut skipped = 0usize;
    for entry in entries {
        match usable_key(entry) {
            Some(key) => keys.push(key),
            None => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable signature key among its {} key(s) (EC P-256/P-384, RSA or Ed25519, use \"sig\")",
            entries.len()
        ));
    }
    if skipped > 0 {
        tracing::debug!(
            skipped,
            "JWKS keys skipped (not signature keys this gateway can use)"
        );
    }
    Ok(keys)
}

fn usable_key(entry: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        _ => return None,
    };
    let alg = jwk.common.key_algorithm;
    if let Some(a) = alg {
        // A key declared for another use (encryption, HMAC) or another family.
        let declared = a.to_string().parse::<Algorithm>().ok()?;
        if !kind.fits(declared) {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        kind,
        alg,
        key,
    })
}

/// What a key set says about (kid, alg).
enum Lookup {
    Found(DecodingKey),
    /// Keys with that kid exist, none of a kind that can verify the algorithm.
    Mismatch(KeyKind),
    /// Several keys could verify a token without kid.
    Ambiguous(usize),
    NotFound,
}

fn lookup<'a>(keys: impl Iterator<Item = &'a Key>, kid: Option<&str>, alg: Algorithm) -> Lookup {
    let mut mismatch = None;
    let mut fitting = Vec::new();
    for key in keys {
        if kid.is_some() && key.kid.as_deref() != kid {
            continue;
        }
        if key.fits(alg) {
            fitting.push(key);
        } else {
            mismatch.get_or_insert(key.kind);
        }
    }
    match (fitting.as_slice(), kid, mismatch) {
        ([key], _, _) => Lookup::Found(key.key.clone()),
        ([first, ..], Some(_), _) => Lookup::Found(first.key.clone()),
        ([_, _, ..], None, _) => Lookup::Ambiguous(fitting.len()),
        ([], Some(_), Some(kind)) => Lookup::Mismatch(kind),
        ([], _, _) => Lookup::NotFound,
    }
}

/// The key sources of `[officers]`.
pub(super) struct Jwks {
    file: Option<FileSource>,
    url: Option<UrlSource>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("file", &self.file.as_ref().map(|s| &s.path))
            .field("url", &self.url.as_ref().map(|s| &s.url))
            .finish()
    }
}

impl Jwks {
    /// Reads the file now; the URL is fetched when first needed.
    pub(super) fn new(config: &OfficerConfig, default_ca: &Path) -> anyhow::Result<Jwks> {
        let file = match &config.jwks_file {
            Some(path) => Some(FileSource::open(path)?),
            None => None,
        };
        let url = match &config.jwks_url {
            Some(url) => {
                let uri: Uri = url
                    .parse()
                    .map_err(|e| anyhow::anyhow!("officers.jwks_url {url:?}: {e}"))?;
                let ca = config.jwks_ca_cert.as_deref().unwrap_or(default_ca);
                let client = HttpsClient::new(ca, Duration::from_millis(config.jwks_timeout_ms))
                    .map_err(|e| anyhow::anyhow!("officers.jwks_url: {e:#}"))?;
                let min_refetch = Duration::from_secs(config.jwks_min_refetch_secs);
                Some(UrlSource {
                    url: url.clone(),
                    uri,
                    client,
                    cache_for: Duration::from_secs(config.jwks_cache_secs),
                    min_refetch,
                    failure_backoff: min_refetch.min(MAX_FAILED_FETCH_BACKOFF),
                    fetch_lock: tokio::sync::Mutex::new(()),
                    state: Mutex::new(UrlState::default()),
                })
            }
            None => None,
        };
        Ok(Jwks { file, url })
    }

    pub(super) async fn prefetch(&self) -> Result<(), OfficerError> {
        if let Some(url) = &self.url {
            url.fetch(Instant::now()).await?;
        }
        Ok(())
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let file = self.file.as_ref().map(FileSource::keys).unwrap_or_default();
        let url = self.url.as_ref().map(UrlSource::keys).unwrap_or_default();
        lookup(file.iter().chain(url.iter()), kid, alg)
    }

    /// The key that verifies a token signed with `alg` by key `kid`.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, OfficerError> {
        if let Some(file) = &self.file {
            file.refresh(false).await;
        }
        if let Some(url) = &self.url {
            url.refresh_if_due().await;
        }
        let mut found = self.find(kid, alg);
        if matches!(found, Lookup::NotFound) {
            // Perhaps the identity provider rotated its keys.
            if let Some(file) = &self.file {
                file.refresh(true).await;
            }
            if let Some(url) = &self.url {
                url.refetch_for_unknown_kid().await;
            }
            found = self.find(kid, alg);
        }
        let which = || match kid {
            Some(k) => format!("signing key {}", shown(k)),
            None => "no signing key (no `kid`)".to_string(),
        };
        match found {
            Lookup::Found(key) => Ok(key),
            Lookup::Mismatch(kind) => Err(OfficerError::new(
                OfficerReason::AlgorithmNotAllowed,
                format!(
                    "the officer token says {alg:?}, but its {} is {}, which cannot verify {alg:?}; \
                     the token was not issued by the identity provider as it is",
                    which(),
                    kind.describe()
                ),
            )),
            Lookup::Ambiguous(n) => Err(OfficerError::new(
                OfficerReason::UnknownKey,
                format!(
                    "the officer token names no signing key (`kid`) and the identity provider has {n} \
                     {alg:?} keys; its tokens must carry a `kid`"
                ),
            )),
            Lookup::NotFound => {
                if let Some(e) = self.url.as_ref().and_then(UrlSource::unavailable) {
                    if self.file.as_ref().is_none_or(|f| f.keys().is_empty()) {
                        return Err(e);
                    }
                }
                Err(OfficerError::new(
                    OfficerReason::UnknownKey,
                    format!(
                        "the officer token names {}, which is not among the identity provider's {alg:?} \
                         keys known to this gateway; if the provider has just rotated its keys, retry \
                         in a minute, otherwise sign in again",
                        which()
                    ),
                ))
            }
        }
    }
}

/// `jwks_file`.
struct FileSource {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    keys: Arc<Vec<Key>>,
    stamp: Stamp,
    checked: Instant,
    /// A version found unusable (warned about once).
    bad: Option<Stamp>,
}

/// What tells a changed file: modification time and length.
type Stamp = (Option<SystemTime>, u64);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (meta.modified().ok(), meta.len())
}

impl FileSource {
    fn open(path: &Path) -> anyhow::Result<FileSource> {
        let what = || format!("officers.jwks_file {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
        let keys = parse_jwks(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
        tracing::info!(file = %path.display(), keys = keys.len(), "officer JWKS loaded");
        Ok(FileSource {
            path: path.to_owned(),
            state: Mutex::new(FileState {
                keys: Arc::new(keys),
                stamp: stamp(&meta),
                checked: Instant::now(),
                bad: None,
            }),
        })
    }

    fn keys(&self) -> Arc<Vec<Key>> {
        self.state
            .lock()
            .map(|s| s.keys.clone())
            .unwrap_or_default()
    }

    /// Reads the file again if it changed; `force` skips the once-a-second limit.
    async fn refresh(&self, force: bool) {
        {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            if !force && state.checked.elapsed() < FILE_CHECK_INTERVAL {
                return;
            }
            state.checked = Instant::now();
        }
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "officer JWKS file unreadable; keeping the keys loaded before");
                return;
            }
        };
        let now = stamp(&meta);
        {
            let Ok(state) = self.state.lock() else {
                return;
            };
            if state.stamp == now || state.bad == Some(now) {
                return;
            }
        }
        let parsed = match tokio::fs::read(&self.path).await {
            Ok(bytes) if bytes.len() <= MAX_JWKS_BYTES => parse_jwks(&bytes),
            Ok(_) => Err(format!("larger than {MAX_JWKS_BYTES} bytes")),
            Err(e) => Err(e.to_string()),
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match parsed {
            Ok(keys) => {
                tracing::info!(file = %self.path.display(), keys = keys.len(), "officer JWKS file changed; keys reloaded");
                state.keys = Arc::new(keys);
                state.stamp = now;
                state.bad = None;
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "officer JWKS file changed but is unusable; keeping the keys loaded before");
                state.bad = Some(now);
            }
        }
    }
}

/// `jwks_url`.
struct UrlSource {
    url: String,
    uri: Uri,
    client: HttpsClient,
    cache_for: Duration,
    min_refetch: Duration,
    failure_backoff: Duration,
    /// One fetch at a time; callers that waited for another's fetch use its result.
    fetch_lock: tokio::sync::Mutex<()>,
    state: Mutex<UrlState>,
}

#[derive(Default)]
struct UrlState {
    keys: Arc<Vec<Key>>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last attempt, and its error if it failed.
    attempted_at: Option<Instant>,
    last_error: Option<String>,
    /// The last fetch made because of an unknown kid (the rate-limited kind).
    unknown_kid_fetch_at: Option<Instant>,
}

impl UrlSource {
    fn keys(&self) -> Arc<Vec<Key>> {
        self.state
            .lock()
            .map(|s| s.keys.clone())
            .unwrap_or_default()
    }

    /// KEYS_UNAVAILABLE when no key was ever fetched and the last attempt failed.
    fn unavailable(&self) -> Option<OfficerError> {
        let state = self.state.lock().ok()?;
        if !state.keys.is_empty() {
            return None;
        }
        let error = state.last_error.as_deref()?;
        Some(OfficerError::new(
            OfficerReason::KeysUnavailable,
            format!(
                "the identity provider's keys (JWKS at {}) could not be fetched: {error}; officer tokens \
                 cannot be checked until they can, retry later",
                self.url
            ),
        ))
    }

    /// Fetches when the keys are older than `jwks_cache_secs` (or there are none), unless a
    /// failed attempt was made within the backoff.
    async fn refresh_if_due(&self) {
        let due = {
            let Ok(state) = self.state.lock() else {
                return;
            };
            let stale = state
                .fetched_at
                .is_none_or(|t| t.elapsed() >= self.cache_for);
            let backing_off = state.last_error.is_some()
                && state
                    .attempted_at
                    .is_some_and(|t| t.elapsed() < self.failure_backoff);
            stale && !backing_off
        };
        if due {
            let _ = self.fetch(Instant::now()).await;
        }
    }

    /// Fetches again for an unknown kid, at most once per `jwks_min_refetch_secs`.
    async fn refetch_for_unknown_kid(&self) {
        let allowed = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let backing_off = state.last_error.is_some()
                && state
                    .attempted_at
                    .is_some_and(|t| t.elapsed() < self.failure_backoff);
            let recent = state
                .unknown_kid_fetch_at
                .is_some_and(|t| t.elapsed() < self.min_refetch);
            if recent || backing_off {
                false
            } else {
                state.unknown_kid_fetch_at = Some(Instant::now());
                true
            }
        };
        if allowed {
            let _ = self.fetch(Instant::now()).await;
        }
    }

    /// One fetch; skipped if another finished after `asked` (its keys are as fresh).
    async fn fetch(&self, asked: Instant) -> Result<(), OfficerError> {
        let _one_at_a_time = self.fetch_lock.lock().await;
        if let Ok(state) = self.state.lock() {
            if state.fetched_at.is_some_and(|t| t >= asked) {
                return Ok(());
            }
        }
        if let Ok(mut state) = self.state.lock() {
            state.attempted_at = Some(Instant::now());
        }
        let result = self.get().await;
        let Ok(mut state) = self.state.lock() else {
            return Ok(());
        };
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "officer JWKS fetched");
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.last_error = None;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "officer JWKS fetch failed; keeping the keys fetched before");
                state.last_error = Some(e.clone());
                Err(OfficerError::new(
                    OfficerReason::KeysUnavailable,
                    format!(
                        "the identity provider's keys (JWKS at {}) could not be fetched: {e}",
                        self.url
                    ),
                ))
            }
        }
    }

    async fn get(&self) -> Result<Vec<Key>, String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(ACCEPT, "application/json, application/jwk-set+json")
            .header(USER_AGENT, concat!("jisr/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let (status, body) = self.client.send(request, MAX_JWKS_BYTES).await?;
        if status != StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        parse_jwks(&body)
    }
}
