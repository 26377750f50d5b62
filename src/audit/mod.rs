//! The tamper-evident audit trail: one entry per RPC, an RFC 6962 Merkle log per gateway
//! node, signed checkpoints, receipts and proofs. docs/audit.md documents the format.

pub mod checkpoint;
pub mod context;
pub mod entry;
pub mod layer;
pub mod merkle;
pub mod verify;

use std::path::Path;

use checkpoint::NoteSigner;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("audit signing key: {0}")]
    Note(#[from] checkpoint::NoteError),
}

/// The node's checkpoint signer, from `audit.signing_key` (PKCS#8 PEM).
pub fn load_signer(config: &Config) -> Result<NoteSigner, KeyError> {
    let path = &config.audit.signing_key;
    let err = |message: String| KeyError::File {
        path: path.display().to_string(),
        message,
    };
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
        .map_err(|e| err(format!("no PKCS#8 private key: {e}")))?;
    Ok(NoteSigner::from_pkcs8(
        &config.audit_origin(),
        key.secret_pkcs8_der(),
    )?)
}

/// Creates a new signing key at `path` and its verifier key at `path` + ".pub".
pub fn create_signing_key(config: &Config, path: &Path) -> Result<String, KeyError> {
    let pkcs8 = NoteSigner::generate_pkcs8()?;
    let signer = NoteSigner::from_pkcs8(&config.audit_origin(), &pkcs8)?;
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

/// Where the published verifier key of a signing key lives.
pub fn verifier_key_path(signing_key: &Path) -> std::path::PathBuf {
    let mut p = signing_key.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}
