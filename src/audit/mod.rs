//! The tamper-evident audit trail: one entry per RPC, an RFC 6962 Merkle log per gateway
//! node, signed checkpoints, receipts and proofs. docs/audit.md documents the format.

pub mod checkpoint;
pub mod context;
pub mod entry;
pub mod log;
pub mod merkle;
pub mod verify;

use std::path::{Path, PathBuf};

use checkpoint::NoteSigner;
use entry::AuditEntry;
use merkle::Hash;

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 private key (PKCS#8 PEM) that signs this node's checkpoints; the
    /// development PKI creates it, with its published verifier key beside it (.pub).
    #[serde(default = "default_signing_key")]
    pub signing_key: PathBuf,
    /// Sign a checkpoint after this many entries...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or this many milliseconds after the first entry it does not cover.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key: default_signing_key(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
        }
    }
}

impl AuditConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::config::at_least_one(&[
            ("audit.checkpoint_every", self.checkpoint_every),
            ("audit.checkpoint_interval_ms", self.checkpoint_interval_ms),
        ])
    }
}

fn default_signing_key() -> PathBuf {
    PathBuf::from("certs/dev/audit-signing.key")
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}

/// Where an audit entry landed: what an agency keeps to have it proven later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub log_id: String,
    pub leaf_index: u64,
    pub leaf_hash: Hash,
}

impl Receipt {
    /// The receipt as write RPCs answer it.
    pub fn to_proto(&self) -> crate::pb::v1::AuditReceipt {
        crate::pb::v1::AuditReceipt {
            log_id: self.log_id.clone(),
            leaf_index: self.leaf_index,
            leaf_hash: self.leaf_hash.to_vec(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("audit signing key: {0}")]
    Note(#[from] checkpoint::NoteError),
}

/// The node's checkpoint signer, from `audit.signing_key` (PKCS#8 PEM); `origin` names
/// the log in its checkpoints (`<trust domain>/jisr/<node id>`).
pub fn load_signer(config: &AuditConfig, origin: &str) -> Result<NoteSigner, KeyError> {
    let path = &config.signing_key;
    let err = |message: String| KeyError::File {
        path: path.display().to_string(),
        message,
    };
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
        .map_err(|e| err(format!("no PKCS#8 private key: {e}")))?;
    Ok(NoteSigner::from_pkcs8(origin, key.secret_pkcs8_der())?)
}

/// Creates a new signing key at `path` and its verifier key at `path` + ".pub".
pub fn create_signing_key(origin: &str, path: &Path) -> Result<String, KeyError> {
    let pkcs8 = NoteSigner::generate_pkcs8()?;
    let signer = NoteSigner::from_pkcs8(origin, &pkcs8)?;
    let err = |e: std::io::Error| KeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, pem).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    let verifier = signer.verifier_key();
    std::fs::write(verifier_key_path(path), format!("{verifier}\n")).map_err(err)?;
    Ok(verifier)
}

/// The entry of an operator's action (a CLI command, or the gateway acting on the
/// operator's files): `method` names the action (`jisr.operator/...`), `who` ran it as far
/// as the machine knows (in `officer_subject`), `targets` are the ids it touched, `reason`
/// the operator's own words.
pub fn operator_entry(method: &str, who: &str, targets: &[String], reason: &str) -> AuditEntry {
    let ctx = operator_context(method, who, reason);
    for id in targets {
        ctx.set_target(id, "");
    }
    ctx.entry(0)
}

/// The audit context of an operator's action (see [`operator_entry`]), for a write that
/// records the action with its change; the write adds the ids it touched.
pub fn operator_context(method: &str, who: &str, reason: &str) -> context::AuditContext {
    let ctx = context::AuditContext::new(method, None, crate::common::trace::new_trace_id());
    ctx.set_officer(who);
    ctx.set_reason(reason);
    ctx.allow("operator");
    ctx
}

/// Makes sure the published verifier key file beside the signing key lists this node's
/// verifier key (its name is the node's origin, so nodes sharing one signing key each need
/// their own line): appends it when missing, holding a lock on the file so replicas
/// starting together do not lose each other's lines. Returns the file's keys, one a line.
pub fn publish_verifier_key(signer: &NoteSigner, signing_key: &Path) -> Result<String, KeyError> {
    use std::io::{Read, Seek, Write};
    let path = verifier_key_path(signing_key);
    let err = |e: std::io::Error| KeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(err)?;
    file.lock().map_err(err)?;
    let mut keys = String::new();
    file.read_to_string(&mut keys).map_err(err)?;
    let mine = signer.verifier_key();
    if !keys.lines().any(|l| l.trim() == mine) {
        if !keys.is_empty() && !keys.ends_with('\n') {
            keys.push('\n');
        }
        keys.push_str(&mine);
        keys.push('\n');
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        file.write_all(keys.as_bytes()).map_err(err)?;
    }
    Ok(keys)
}

/// Where the published verifier key of a signing key lives.
pub fn verifier_key_path(signing_key: &Path) -> std::path::PathBuf {
    let mut p = signing_key.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}
