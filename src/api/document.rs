//! jisr.v1.DocumentService: once-only documents. An upload is streamed to a staging file
//! while it is hashed and measured (limits from the config), made durable under its
//! SHA-256, then recorded with the uploader's grant in one transaction with its audit
//! entry. A download checks the caller's grant, then the stored bytes against their
//! SHA-256, before and while it streams them.

use std::pin::Pin;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{receipt_proto, timestamp};
use super::validate::Violations;
use crate::common::error::{ApiError, Reason};
use crate::common::time::now_ms;
use crate::layers::{self as auth, Caller};
use crate::pb::v1::document_service_server::DocumentService;
use crate::pb::v1::*;
use crate::store::blobs::Blobs;
use crate::store::blobs::DocumentsConfig;
use crate::store::documents::{Grant, VIA_UPLOAD};
use crate::store::Store;

/// Size of the chunks a download is sent in.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct DocumentApi {
    store: Store,
    blobs: Blobs,
    max_chunk: u64,
    max_document: u64,
}

impl DocumentApi {
    pub fn new(store: Store, config: &DocumentsConfig) -> std::io::Result<DocumentApi> {
        Ok(DocumentApi {
            store,
            blobs: Blobs::open(&config.dir)?,
            max_chunk: config.max_chunk_bytes,
            max_document: config.max_document_bytes,
        })
    }

    /// The largest gRPC message the service decodes: a chunk at the limit with room to
    /// spare, so a chunk somewhat over it gets this service's clear refusal rather than
    /// the transport's.
    pub fn max_message_bytes(config: &DocumentsConfig) -> usize {
        (config.max_chunk_bytes.saturating_mul(2) + 64 * 1024) as usize
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadDocumentResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DocumentService for DocumentApi {
    async fn upload_document(
        &self,
        request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<UploadDocumentResponse>, Status> {
        let caller = auth::identify(&request)?;
        super::reply(&caller, self.upload(&caller, request.into_inner()).await)
    }

    type DownloadDocumentStream = DownloadStream;

    async fn download_document(
        &self,
        request: Request<DownloadDocumentRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.download(&caller, request.into_inner()).await)
    }
}

impl DocumentApi {
    async fn upload(
        &self,
        caller: &Caller,
        mut stream: Streaming<UploadDocumentRequest>,
    ) -> Result<UploadDocumentResponse, ApiError> {
        use upload_document_request::Content;
        let metadata = match stream.next().await {
            Some(Ok(UploadDocumentRequest {
                content: Some(Content::Metadata(m)),
            })) => m,
            Some(Err(status)) => return Err(ApiError::Stream(status)),
            _ => {
                return Err(invalid(
                    "metadata",
                    "the first message must carry the document's metadata",
                ))
            }
        };
        self.validate_metadata(&metadata)?;
        let mut staged = self.blobs.stage().await?;
        let mut index = 0usize;
        while let Some(message) = stream.next().await {
            index += 1;
            let chunk = match message.map_err(ApiError::Stream)?.content {
                Some(Content::Chunk(chunk)) => chunk,
                _ => {
                    return Err(invalid(
                        "chunk",
                        format!(
                        "message {index} is not a chunk; only the first message carries metadata"
                    ),
                    ))
                }
            };
            if chunk.len() as u64 > self.max_chunk {
                return Err(ApiError::TooLarge {
                    reason: Reason::ChunkTooLarge,
                    field: "chunk",
                    limit: self.max_chunk,
                    actual: chunk.len() as u64,
                });
            }
            let total = staged.size() + chunk.len() as u64;
            if total > self.max_document {
                return Err(ApiError::TooLarge {
                    reason: Reason::DocumentTooLarge,
                    field: "chunk",
                    limit: self.max_document,
                    actual: total,
                });
            }
            if metadata.size_bytes > 0 && total > metadata.size_bytes {
                return Err(invalid(
                    "metadata.size_bytes",
                    format!("declares {} bytes but more were sent", metadata.size_bytes),
                ));
            }
            staged.write(&chunk).await?;
        }
        let size = staged.size();
        let sha256 = staged.sha256_hex();
        let mut v = Violations::default();
        v.check(
            size > 0,
            "chunk",
            "the document is empty: send its bytes as chunks after the metadata",
        );
        v.check(
            metadata.size_bytes == 0 || metadata.size_bytes == size,
            "metadata.size_bytes",
            format!(
                "declares {} bytes but {size} were sent",
                metadata.size_bytes
            ),
        );
        v.check(
            metadata.sha256.is_empty() || metadata.sha256 == sha256,
            "metadata.sha256",
            format!("does not match the content received, whose SHA-256 is {sha256}; it was changed in transit"),
        );
        v.finish()?;
        staged.commit(&self.blobs).await?;

        let id = format!("sha256:{sha256}");
        caller.audit.set_target(&id, "");
        let now = now_ms();
        let grant = Grant {
            document_id: id,
            agency: caller.agency().to_string(),
            size_bytes: size as i64,
            media_type: metadata.media_type,
            title: metadata.title,
            uploaded_by: caller.agency().to_string(),
            uploaded_at: now,
            via: VIA_UPLOAD.to_string(),
        };
        let (response, receipt) = self
            .store
            .write(Some(&caller.audit), move |tx| {
                Box::pin(async move {
                    let (stored, deduplicated) = tx.record_upload(&grant, now).await?;
                    Ok::<_, ApiError>(UploadDocumentResponse {
                        document: Some(document(&stored, &sha256)),
                        deduplicated,
                        audit_receipt: Some(receipt_proto(&tx.audit_receipt()?)),
                    })
                })
            })
            .await?;
        if receipt.is_some() {
            tracing::info!(by = %caller.agency(), size, deduplicated = response.deduplicated, "document uploaded");
        }
        Ok(response)
    }

    fn validate_metadata(&self, m: &DocumentMetadata) -> Result<(), ApiError> {
        if m.size_bytes > self.max_document {
            return Err(ApiError::TooLarge {
                reason: Reason::DocumentTooLarge,
                field: "metadata.size_bytes",
                limit: self.max_document,
                actual: m.size_bytes,
            });
        }
        let mut v = Violations::default();
        v.check(
            is_media_type(&m.media_type),
            "metadata.media_type",
            "is required: an IANA media type such as application/pdf or image/jpeg",
        );
        v.max_len("metadata.title", &m.title, 200);
        v.check(
            m.sha256.is_empty() || is_sha256_hex(&m.sha256),
            "metadata.sha256",
            "must be 64 lowercase hex digits (or empty)",
        );
        v.finish()
    }

    async fn download(
        &self,
        caller: &Caller,
        req: DownloadDocumentRequest,
    ) -> Result<DownloadStream, ApiError> {
        let mut v = Violations::default();
        let sha256 = req
            .document_id
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))
            .map(str::to_string);
        v.check(
            sha256.is_some(),
            "document_id",
            "must be a document id from UploadDocument: sha256: followed by 64 lowercase hex digits",
        );
        v.finish()?;
        let sha256 = sha256.unwrap_or_default();
        let id = req.document_id;
        caller.audit.set_target(&id, "");
        let Some(grant) = self.store.document_grant(&id, caller.agency()).await? else {
            let exists = self.store.document_exists(&id).await?;
            return Err(ApiError::Hidden {
                kind: "document",
                id,
                refused_by: exists.then_some("document.reader"),
            });
        };
        // Check the stored bytes before sending any of them.
        let verified = self.read_verified(&sha256, &id, |_| async { true }).await?;
        if verified != grant.size_bytes as u64 {
            return Err(ApiError::DataLoss { id });
        }
        let (tx, rx) = mpsc::channel(4);
        let first = DownloadDocumentResponse {
            content: Some(download_document_response::Content::Document(document(
                &grant, &sha256,
            ))),
        };
        let api = self.clone();
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            // Hashed again as it is sent: bytes changed since the check end in DATA_LOSS.
            let sent = api
                .read_verified(&sha256, &id, |chunk| {
                    let tx = tx.clone();
                    async move {
                        tx.send(Ok(DownloadDocumentResponse {
                            content: Some(download_document_response::Content::Chunk(chunk)),
                        }))
                        .await
                        .is_ok()
                    }
                })
                .await;
            if let Err(e) = sent {
                let _ = tx.send(Err(Status::from(e))).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Reads the stored bytes of `sha256` in chunks, handing each to `each` (which returns
    /// false to stop), and checks they hash to `sha256`; returns the size read.
    async fn read_verified<F, Fut>(&self, sha256: &str, id: &str, each: F) -> Result<u64, ApiError>
    where
        F: Fn(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        use sha2::{Digest, Sha256};
        let Some(mut file) = self.blobs.read(sha256).await? else {
            return Err(ApiError::DataLoss { id: id.to_string() });
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let mut buf = vec![0u8; DOWNLOAD_CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            hasher.update(&buf);
            size += n as u64;
            if !each(buf).await {
                return Ok(size); // The client went away.
            }
        }
        if hex::encode(hasher.finalize()) != sha256 {
            return Err(ApiError::DataLoss { id: id.to_string() });
        }
        Ok(size)
    }
}

fn document(g: &Grant, sha256: &str) -> Document {
    Document {
        id: g.document_id.clone(),
        sha256: sha256.to_string(),
        size_bytes: g.size_bytes as u64,
        media_type: g.media_type.clone(),
        title: g.title.clone(),
        uploaded_by: g.uploaded_by.clone(),
        created_at: Some(timestamp(g.uploaded_at)),
    }
}

fn invalid(field: &str, description: impl Into<String>) -> ApiError {
    let mut v = Violations::default();
    v.add(field, description);
    v.into_error()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// `type/subtype` (RFC 6838 restricted names), optionally with parameters.
fn is_media_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or_default().trim();
    let name = |p: &str| {
        (1..=127).contains(&p.len())
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    s.len() <= 255
        && essence
            .split_once('/')
            .is_some_and(|(t, sub)| name(t) && name(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_type_slash_subtype() {
        for ok in [
            "application/pdf",
            "image/jpeg",
            "text/plain; charset=utf-8",
            "application/vnd.ms-excel",
        ] {
            assert!(is_media_type(ok), "{ok}");
        }
        for bad in ["", "pdf", "application/", "/pdf", "a b/c", "text/plain/x"] {
            assert!(!is_media_type(bad), "{bad}");
        }
    }
}
