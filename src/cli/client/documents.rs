//! `jisr client upload | download`: once-only documents.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::{describe_status, when};
use crate::pb::v1::document_service_client::DocumentServiceClient;
use crate::pb::v1::*;

/// Chunk size of uploads.
const CHUNK: usize = 256 * 1024;

#[derive(Subcommand)]
pub enum Command {
    /// Upload a document; prints its id, to attach to referrals and answers.
    Upload {
        file: PathBuf,
        /// IANA media type, e.g. application/pdf.
        #[arg(long)]
        media_type: String,
        #[arg(long, default_value = "")]
        title: String,
    },
    /// Download a document you may read.
    Download {
        document_id: String,
        /// Where to write it (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub async fn run(channel: Channel, command: Command) -> anyhow::Result<()> {
    let mut client = DocumentServiceClient::new(channel);
    match command {
        Command::Upload {
            file,
            media_type,
            title,
        } => {
            let mut f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("opening {}", file.display()))?;
            let size = f.metadata().await?.len();
            use upload_document_request::Content;
            let mut messages = vec![UploadDocumentRequest {
                content: Some(Content::Metadata(DocumentMetadata {
                    media_type,
                    title,
                    size_bytes: size,
                    sha256: String::new(),
                })),
            }];
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                messages.push(UploadDocumentRequest {
                    content: Some(Content::Chunk(buf)),
                });
            }
            let r = client
                .upload_document(tokio_stream::iter(messages))
                .await
                .map_err(describe_status)?
                .into_inner();
            if let Some(d) = r.document {
                println!(
                    "document {}  {} bytes  {}{}",
                    d.id,
                    d.size_bytes,
                    d.media_type,
                    if r.deduplicated {
                        "  (already uploaded)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Command::Download {
            document_id,
            output,
        } => {
            use download_document_response::Content;
            let mut stream = client
                .download_document(DownloadDocumentRequest { document_id })
                .await
                .map_err(describe_status)?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(message) = stream.message().await.map_err(describe_status)? {
                match message.content {
                    Some(Content::Document(d)) => eprintln!(
                        "document {}  {} bytes  {}  {:?} uploaded by {} at {}",
                        d.id,
                        d.size_bytes,
                        d.media_type,
                        d.title,
                        d.uploaded_by,
                        when(d.created_at.as_ref())
                    ),
                    Some(Content::Chunk(c)) => bytes.extend(c),
                    None => {}
                }
            }
            match output {
                Some(path) => tokio::fs::write(&path, &bytes)
                    .await
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(())
        }
    }
}
