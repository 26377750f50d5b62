//! The bytes of documents, content-addressed: one file per SHA-256 under the configured
//! directory (`<dir>/sha256/<first two hex digits>/<64 hex digits>`).
//!
//! An upload is written to a staging file while it is hashed, made durable (fsync), then
//! renamed into place; the same content uploaded twice ends in one file. Nothing is
//! visible under its hash until it is complete, and a refused upload leaves nothing
//! behind. This type is the only code that touches document bytes: an S3-compatible
//! object store plugs in here (docs/documents.md says how).

use serde::Deserialize;

use crate::config::{at_least_one, ConfigError};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::fs::{self, File};
use tokio::io::AsyncWriteExt;

/// The largest `documents.max_chunk_bytes` (a gRPC message must hold one chunk).
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// DocumentService: content-addressed storage of documents on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Directory the bytes are stored in, one file per SHA-256 (created when missing).
    pub dir: PathBuf,
    /// Largest chunk one UploadDocument message may carry.
    pub max_chunk_bytes: u64,
    /// Largest document.
    pub max_document_bytes: u64,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            dir: PathBuf::from("data/documents"),
            max_chunk_bytes: 1024 * 1024,
            max_document_bytes: 25 * 1024 * 1024,
        }
    }
}

impl DocumentsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("documents.max_chunk_bytes", self.max_chunk_bytes),
            ("documents.max_document_bytes", self.max_document_bytes),
        ])?;
        if self.max_chunk_bytes > MAX_CHUNK_BYTES {
            return Err(ConfigError::invalid(
                "documents.max_chunk_bytes",
                &self.max_chunk_bytes.to_string(),
                &format!("at most {MAX_CHUNK_BYTES} (16 MiB)"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// Opens (creating when missing) the blob directory.
    pub fn open(dir: &Path) -> io::Result<Blobs> {
        std::fs::create_dir_all(dir.join("sha256"))?;
        std::fs::create_dir_all(dir.join("staging"))?;
        Ok(Blobs {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the content with this SHA-256 (64 lowercase hex digits) is stored.
    pub fn path_of(&self, sha256_hex: &str) -> PathBuf {
        let fan = sha256_hex.get(..2).unwrap_or("00");
        self.dir.join("sha256").join(fan).join(sha256_hex)
    }

    /// Starts staging a new upload.
    pub async fn stage(&self) -> io::Result<Staged> {
        let path = self.dir.join("staging").join(ulid::Ulid::new().to_string());
        let file = File::create(&path).await?;
        Ok(Staged {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            kept: false,
        })
    }

    /// The stored content with this SHA-256, if any.
    pub async fn read(&self, sha256_hex: &str) -> io::Result<Option<File>> {
        match File::open(self.path_of(sha256_hex)).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An upload being written; removed on drop unless it was committed.
pub struct Staged {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    kept: bool,
}

impl Staged {
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("staged upload already closed"))?;
        file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The SHA-256 of what was written, as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Makes the content durable under its hash. When the same content is already
    /// stored, the staged copy is dropped and the stored one kept.
    pub async fn commit(mut self, blobs: &Blobs) -> io::Result<String> {
        let hash = self.sha256_hex();
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("staged upload already closed"))?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let target = blobs.path_of(&hash);
        if fs::try_exists(&target).await? {
            if sha256_of_file(&target).await? == hash {
                return Ok(hash); // Drop removes the staged copy.
            }
            // The stored copy was damaged; this upload repairs it.
            tracing::warn!(sha256 = %hash, "a stored document did not match its hash; replaced by a new upload");
        }
        let parent = target
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        fs::create_dir_all(parent).await?;
        fs::rename(&self.path, &target).await?;
        self.kept = true;
        // The rename is durable once its directory is.
        File::open(parent).await?.sync_all().await?;
        Ok(hash)
    }
}

async fn sha256_of_file(path: &Path) -> io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut file = File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_content_is_stored_once_and_refused_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut a = blobs.stage().await.unwrap();
        a.write(b"hello ").await.unwrap();
        a.write(b"world").await.unwrap();
        let want = hex::encode(Sha256::digest(b"hello world"));
        assert_eq!(a.commit(&blobs).await.unwrap(), want);
        let mut b = blobs.stage().await.unwrap();
        b.write(b"hello world").await.unwrap();
        assert_eq!(b.commit(&blobs).await.unwrap(), want);
        let mut dropped = blobs.stage().await.unwrap();
        dropped.write(b"refused").await.unwrap();
        drop(dropped);
        assert_eq!(
            std::fs::read_dir(dir.path().join("staging"))
                .unwrap()
                .count(),
            0,
            "no staged file is left"
        );
        let stored: Vec<_> = walk(&dir.path().join("sha256"));
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(std::fs::read(&stored[0]).unwrap(), b"hello world");
        // A damaged stored copy is repaired by the next upload of the same content.
        std::fs::write(&stored[0], b"hello w0rld").unwrap();
        let mut c = blobs.stage().await.unwrap();
        c.write(b"hello world").await.unwrap();
        assert_eq!(c.commit(&blobs).await.unwrap(), want);
        assert_eq!(std::fs::read(&stored[0]).unwrap(), b"hello world");
        assert!(blobs.read(&want).await.unwrap().is_some());
        assert!(blobs.read(&"0".repeat(64)).await.unwrap().is_none());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
