//! DocumentService over the wire: content-addressed uploads, de-duplication, the configured
//! size limits, who may read a document (its uploaders and the parties to the exchanges that
//! reference it), and the hash check on every read; on SQLite and PostgreSQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jisr::audit::entry::{AuditEntry, Decision};
use jisr::pb::v1::document_service_client::DocumentServiceClient;
use jisr::pb::v1::*;
use jisr::server::Gateway;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::audit::entries;
use crate::common::*;

type Documents = DocumentServiceClient<Channel>;

const UPLOAD: &str = "/jisr.v1.DocumentService/UploadDocument";
const DOWNLOAD: &str = "/jisr.v1.DocumentService/DownloadDocument";

// ---- Content and where it is stored ----------------------------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The Document.id of `bytes`.
fn id_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// `len` bytes of content of its own: `seed`, then every byte value over and over.
fn content(seed: &str, len: usize) -> Vec<u8> {
    seed.bytes()
        .chain((0u32..).map(|i| (i % 251) as u8))
        .take(len)
        .collect()
}

/// Where the gateway stores the content with this SHA-256 (docs: store/blobs.rs).
fn blob_path(env: &TestEnv, sha256: &str) -> PathBuf {
    env.config
        .documents
        .dir
        .join("sha256")
        .join(&sha256[..2])
        .join(sha256)
}

/// Every file under `dir`, recursively, sorted (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn stored_files(env: &TestEnv) -> Vec<PathBuf> {
    files_under(&env.config.documents.dir.join("sha256"))
}

fn assert_staging_empty(env: &TestEnv, what: &str) {
    let staged = files_under(&env.config.documents.dir.join("staging"));
    assert!(staged.is_empty(), "{what}: staged files left: {staged:?}");
}

fn assert_nothing_stored(env: &TestEnv, what: &str) {
    let stored = stored_files(env);
    assert!(stored.is_empty(), "{what}: files stored: {stored:?}");
    assert_staging_empty(env, what);
}

// ---- Uploads -----------------------------------------------------------------------------

fn pdf(title: &str) -> DocumentMetadata {
    DocumentMetadata {
        media_type: "application/pdf".into(),
        title: title.into(),
        ..DocumentMetadata::default()
    }
}

fn meta(m: DocumentMetadata) -> UploadDocumentRequest {
    UploadDocumentRequest {
        content: Some(upload_document_request::Content::Metadata(m)),
    }
}

fn chunk(bytes: &[u8]) -> UploadDocumentRequest {
    UploadDocumentRequest {
        content: Some(upload_document_request::Content::Chunk(bytes.to_vec())),
    }
}

/// `m`, then `bytes` in chunks of `chunk_len`.
fn messages(m: DocumentMetadata, bytes: &[u8], chunk_len: usize) -> Vec<UploadDocumentRequest> {
    std::iter::once(meta(m))
        .chain(bytes.chunks(chunk_len).map(chunk))
        .collect()
}

async fn upload(
    client: &mut Documents,
    messages: Vec<UploadDocumentRequest>,
) -> Result<UploadDocumentResponse, Status> {
    client
        .upload_document(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

// ---- Downloads and errors ------------------------------------------------------------------

/// Everything a download delivers until it ends: the metadata, the bytes of the chunks and
/// how it ended (an error at the call or in the stream).
async fn download_all(
    client: &mut Documents,
    document_id: &str,
) -> (Option<Document>, Vec<u8>, Result<(), Status>) {
    use download_document_response::Content;
    let (mut document, mut bytes) = (None, Vec::new());
    let mut stream = match client
        .download_document(DownloadDocumentRequest {
            document_id: document_id.to_string(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return (document, bytes, Err(e)),
    };
    loop {
        match stream.message().await {
            Ok(Some(DownloadDocumentResponse {
                content: Some(Content::Document(d)),
            })) => document = Some(d),
            Ok(Some(DownloadDocumentResponse {
                content: Some(Content::Chunk(c)),
            })) => bytes.extend(c),
            Ok(Some(other)) => panic!("unexpected download message {other:?}"),
            Ok(None) => return (document, bytes, Ok(())),
            Err(e) => return (document, bytes, Err(e)),
        }
    }
}

/// Asserts `agency`'s client is told NOT_FOUND for the document; returns the status.
async fn assert_hidden(client: &mut Documents, document_id: &str, what: &str) -> Status {
    match downloaded(client, document_id).await {
        Ok((d, _)) => panic!("{what}: downloaded {d:?}, expected NOT_FOUND"),
        Err(e) => {
            assert_eq!(e.code(), Code::NotFound, "{what}: {e:?}");
            e
        }
    }
}

/// Downloads a document that must be readable and checks its bytes.
async fn assert_readable(client: &mut Documents, document_id: &str, bytes: &[u8]) -> Document {
    let (document, got) = downloaded(client, document_id)
        .await
        .unwrap_or_else(|e| panic!("download of {document_id}: {e:?}"));
    assert!(
        got == bytes,
        "downloaded bytes differ: {} bytes back, {} uploaded",
        got.len(),
        bytes.len()
    );
    document
}

fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn error_info(status: &Status) -> (String, HashMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

/// Asserts INVALID_ARGUMENT naming exactly `field`.
fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    assert_eq!(violated_fields(&err), vec![field], "{what}: {err:?}");
}

/// The latest audit entry of a call to `method` by `caller` about `target` (waited for:
/// a streamed call's entry is written when its stream ends).
async fn audit_entry(gw: &Gateway, method: &str, caller: &str, target: &str) -> AuditEntry {
    for _ in 0..100 {
        let found = entries(gw.store.pool()).await.into_iter().rev().find(|e| {
            e.method == method
                && e.caller_agency == caller
                && e.target_ids.iter().any(|t| t == target)
        });
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit entry of {method} by {caller} about {target}");
}

fn reference(document_id: &str, title: &str) -> DocumentReference {
    DocumentReference {
        document_id: document_id.to_string(),
        title: title.to_string(),
    }
}

// ---- Upload, download, de-duplication (both databases) ------------------------------------

/// A declared, chunked upload and its download: the bytes round-trip and the document is
/// named by its SHA-256.
async fn round_trip(env: &TestEnv, gw: &Gateway) {
    let mut social = document_client(env, gw, "social-services").await;
    // Over the download chunk size (64 KiB), so both directions take several chunks.
    let bytes = content("round-trip", 200_000);
    let sha256 = sha256_hex(&bytes);
    let mut m = pdf("Salary certificate, March 2025");
    m.size_bytes = bytes.len() as u64;
    m.sha256 = sha256.clone();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let response = upload(&mut social, messages(m, &bytes, 30_000))
        .await
        .expect("upload");
    let doc = response.document.clone().expect("document in the answer");
    assert_eq!(doc.id, format!("sha256:{sha256}"));
    assert_eq!(doc.sha256, sha256);
    assert_eq!(doc.size_bytes, bytes.len() as u64);
    assert_eq!(doc.media_type, "application/pdf");
    assert_eq!(doc.title, "Salary certificate, March 2025");
    assert_eq!(doc.uploaded_by, "social-services");
    let created = doc.created_at.expect("created_at").seconds;
    assert!(
        (started - 5..=started + 60).contains(&created),
        "created_at {created} is not now ({started})"
    );
    assert!(!response.deduplicated, "a first upload is not deduplicated");

    // The receipt names this upload's audit entry.
    let receipt = response.audit_receipt.expect("audit receipt");
    assert_eq!(receipt.leaf_hash.len(), 32);
    let entry = audit_entry(gw, UPLOAD, "social-services", &doc.id).await;
    assert_eq!(entry.leaf_index, receipt.leaf_index);
    assert_eq!(entry.log_id, receipt.log_id);
    assert_eq!((entry.grpc_code, entry.decision), (0, Decision::Allow));

    assert!(
        std::fs::read(blob_path(env, &sha256)).expect("stored under its SHA-256") == bytes,
        "the stored file holds exactly the uploaded bytes"
    );
    let back = assert_readable(&mut social, &doc.id, &bytes).await;
    assert_eq!(back, doc, "the download describes the upload");
}

/// The same content uploaded again, by the same and by another agency: one id, one file.
async fn deduplication(env: &TestEnv, gw: &Gateway) {
    let before = stored_files(env);
    let mut social = document_client(env, gw, "social-services").await;
    let mut housing = document_client(env, gw, "housing").await;
    let bytes = content("dedup", 5000);

    let first = upload(&mut social, messages(pdf("Tenancy contract"), &bytes, 1000))
        .await
        .expect("first upload");
    let again = upload(
        &mut social,
        messages(pdf("Tenancy contract (again)"), &bytes, 700),
    )
    .await
    .expect("second upload");
    assert!(!first.deduplicated, "the first upload is new");
    assert!(
        again.deduplicated,
        "the same agency's second upload is deduplicated"
    );
    assert_eq!(
        again.document, first.document,
        "the answer describes the earlier upload"
    );
    let doc = first.document.expect("document");
    assert_eq!(doc.id, id_of(&bytes));

    let mut m = pdf("Housing's copy");
    m.media_type = "application/octet-stream".into();
    let other = upload(&mut housing, messages(m, &bytes, 5000))
        .await
        .expect("another agency's upload");
    assert!(
        !other.deduplicated,
        "another agency holding the same content is not disclosed"
    );
    let theirs = other.document.expect("document");
    assert_eq!(theirs.id, doc.id, "same content, same id");
    assert_eq!(theirs.uploaded_by, "housing");
    assert_eq!(theirs.title, "Housing's copy");
    assert_eq!(theirs.media_type, "application/octet-stream");

    // Each agency reads its own upload's metadata; the bytes are the same.
    assert_eq!(assert_readable(&mut social, &doc.id, &bytes).await, doc);
    assert_eq!(assert_readable(&mut housing, &doc.id, &bytes).await, theirs);

    let mut expected = before;
    expected.push(blob_path(env, &doc.sha256));
    expected.sort();
    assert_eq!(stored_files(env), expected, "the content is stored once");
    assert_staging_empty(env, "after three uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_round_trips_bytes_and_names_the_document_by_its_sha256() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    round_trip(&env, &gw).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_content_is_stored_once_and_deduplicated_only_for_the_same_agency() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    deduplication(&env, &gw).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upload_download_and_deduplication() {
    let Some(pg) = postgres_database().await else {
        return;
    };
    let env = TestEnv::with_database(Some(pg.url.clone()));
    let gw = env.start().await;
    round_trip(&env, &gw).await;
    deduplication(&env, &gw).await;
    gw.shutdown().await.unwrap();
    pg.drop_database().await;
}

// ---- Refused uploads --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_configured_chunk_or_document_size_are_refused_and_store_nothing() {
    let mut env = TestEnv::sqlite();
    env.config.documents.max_chunk_bytes = 1024;
    env.config.documents.max_document_bytes = 4096;
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;

    let big_chunk = content("one chunk too large", 1025);
    let big_doc = content("one document too large", 4097);
    let mut declared = pdf("Declared too large");
    declared.size_bytes = 4097;
    let cases = [
        (
            "a chunk one byte over the chunk limit",
            messages(pdf("Chunk"), &big_chunk, 1025),
            &big_chunk,
            "CHUNK_TOO_LARGE",
            "1024",
            "chunk",
        ),
        (
            "a document one byte over the document limit, in allowed chunks",
            messages(pdf("Document"), &big_doc, 1024),
            &big_doc,
            "DOCUMENT_TOO_LARGE",
            "4096",
            "chunk",
        ),
        (
            "a declared size over the document limit",
            messages(declared, &big_doc, 1024),
            &big_doc,
            "DOCUMENT_TOO_LARGE",
            "4096",
            "metadata.size_bytes",
        ),
    ];
    for (what, msgs, bytes, reason, max_bytes, field) in cases {
        let err = upload(&mut social, msgs).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        let (got_reason, metadata) = error_info(&err);
        assert_eq!(got_reason, reason, "{what}");
        assert_eq!(
            metadata.get("max_bytes").map(String::as_str),
            Some(max_bytes),
            "{what}: {metadata:?}"
        );
        assert_eq!(violated_fields(&err), vec![field], "{what}");
        assert_nothing_stored(&env, what);
        assert_hidden(&mut social, &id_of(bytes), what).await;
    }

    // Exactly at both limits is allowed.
    let at_limit = content("exactly at the limits", 4096);
    let doc = upload(&mut social, messages(pdf("At the limit"), &at_limit, 1024))
        .await
        .expect("a document at the limit, in chunks at the limit")
        .document
        .expect("document");
    assert_eq!(doc.size_bytes, 4096);
    assert_eq!(stored_files(&env), vec![blob_path(&env, &doc.sha256)]);
    assert_readable(&mut social, &doc.id, &at_limit).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_uploads_are_invalid_argument_naming_the_field_and_store_nothing() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let bytes = content("malformed", 3000);
    let with = |edit: fn(&mut DocumentMetadata, &[u8])| {
        let mut m = pdf("Malformed");
        edit(&mut m, &bytes);
        messages(m, &bytes, 1000)
    };
    let cases: Vec<(&str, Vec<UploadDocumentRequest>, &str)> = vec![
        ("no message at all", vec![], "metadata"),
        (
            "a chunk first",
            [chunk(&bytes)].into_iter().chain(with(|_, _| {})).collect(),
            "metadata",
        ),
        (
            "metadata twice",
            [meta(pdf("Twice"))]
                .into_iter()
                .chain(with(|_, _| {}))
                .collect(),
            "chunk",
        ),
        ("metadata and no chunk", vec![meta(pdf("Empty"))], "chunk"),
        (
            "only an empty chunk",
            vec![meta(pdf("Empty")), chunk(&[])],
            "chunk",
        ),
        (
            "no media type",
            with(|m, _| m.media_type.clear()),
            "metadata.media_type",
        ),
        (
            "a media type that is not type/subtype",
            with(|m, _| m.media_type = "pdf".into()),
            "metadata.media_type",
        ),
        (
            "a declared size larger than the content",
            with(|m, b| m.size_bytes = b.len() as u64 + 1),
            "metadata.size_bytes",
        ),
        (
            "a declared size smaller than the content",
            with(|m, b| m.size_bytes = b.len() as u64 - 1),
            "metadata.size_bytes",
        ),
        (
            "the SHA-256 of other content",
            with(|m, _| m.sha256 = sha256_hex(b"other content")),
            "metadata.sha256",
        ),
        (
            "the right SHA-256 in uppercase",
            with(|m, b| m.sha256 = sha256_hex(b).to_uppercase()),
            "metadata.sha256",
        ),
    ];
    for (what, msgs, field) in cases {
        assert_invalid(upload(&mut social, msgs).await, field, what);
        assert_nothing_stored(&env, what);
    }
    assert_hidden(&mut social, &id_of(&bytes), "the refused content").await;

    // The same content, well formed, is accepted.
    let mut m = pdf("Well formed");
    m.size_bytes = bytes.len() as u64;
    m.sha256 = sha256_hex(&bytes);
    upload(&mut social, messages(m, &bytes, 1000))
        .await
        .expect("well-formed upload");
    assert_eq!(stored_files(&env).len(), 1);
    gw.shutdown().await.unwrap();
}

// ---- Who may read ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agencys_document_is_not_found_as_if_absent_and_audited_as_a_denial() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let mut police = document_client(&env, &gw, "police").await;
    let bytes = content("private", 2000);
    let doc = uploaded(&mut social, &bytes).await;
    assert_readable(&mut social, &doc.id, &bytes).await;

    let hidden = assert_hidden(&mut police, &doc.id, "police reads social's document").await;
    let unknown = id_of(b"never uploaded");
    let absent = assert_hidden(&mut police, &unknown, "police reads an unknown id").await;
    // Nothing tells the two apart.
    assert_eq!(error_info(&hidden).0, error_info(&absent).0);
    assert_eq!(
        hidden.message().replace(&doc.id, "<id>"),
        absent.message().replace(&unknown, "<id>")
    );

    let denied = audit_entry(&gw, DOWNLOAD, "police", &doc.id).await;
    assert_eq!(
        (denied.decision, denied.rule.as_str(), denied.grpc_code),
        (Decision::Deny, "document.reader", Code::NotFound as i32)
    );
    let missed = audit_entry(&gw, DOWNLOAD, "police", &unknown).await;
    assert_eq!(
        (missed.decision, missed.grpc_code),
        (Decision::Allow, Code::NotFound as i32),
        "a plain miss is not a denial: {missed:?}"
    );
    let read = audit_entry(&gw, DOWNLOAD, "social-services", &doc.id).await;
    assert_eq!((read.decision, read.grpc_code), (Decision::Allow, 0));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_attachment_lets_the_recipient_download_it() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let mut housing = document_client(&env, &gw, "housing").await;
    let mut police = document_client(&env, &gw, "police").await;
    let bytes = content("eviction notice", 3000);
    let doc = uploaded(&mut social, &bytes).await;
    assert_hidden(&mut housing, &doc.id, "housing before the referral").await;

    let mut referral = referral_to("housing");
    referral.attachments = vec![reference(&doc.id, "Eviction notice")];
    submitted_id(
        &mut env.client(&gw, "social-services").await,
        "r1",
        referral,
    )
    .await;

    let seen = assert_readable(&mut housing, &doc.id, &bytes).await;
    assert_eq!(seen.uploaded_by, "social-services");
    assert_eq!(
        seen.title, doc.title,
        "the title social services uploaded it with"
    );
    assert_eq!(seen.media_type, doc.media_type);
    assert_hidden(&mut police, &doc.id, "police, no party to the referral").await;

    // Content it was given counts as its own: uploading it is deduplicated to that view.
    let again = upload(&mut housing, messages(pdf("Housing's copy"), &bytes, 1000))
        .await
        .expect("housing uploads the content it was given");
    assert!(again.deduplicated);
    assert_eq!(again.document, Some(seen));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_attaching_a_document_the_sender_may_not_read_is_refused_and_shares_nothing() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let mut housing = document_client(&env, &gw, "housing").await;
    let mut charity = document_client(&env, &gw, "charity").await;
    let mut referrals = env.client(&gw, "social-services").await;
    let own_bytes = content("social's own", 1500);
    let own = uploaded(&mut social, &own_bytes).await;
    let housings = uploaded(&mut housing, &content("housing's", 1500)).await;
    let unknown = id_of(b"never uploaded");

    let cases = [
        ("another agency's document", vec![&housings.id], 0),
        ("an unknown document", vec![&unknown], 0),
        (
            "a readable one, then another agency's",
            vec![&own.id, &housings.id],
            1,
        ),
    ];
    for (i, (what, ids, bad)) in cases.into_iter().enumerate() {
        let mut referral = referral_to("charity");
        referral.attachments = ids.iter().map(|id| reference(id, "Attached")).collect();
        assert_invalid(
            referrals
                .submit_referral(submit(&format!("bad-{i}"), referral))
                .await,
            &format!("referral.attachments[{bad}].document_id"),
            what,
        );
        for id in ids {
            assert_hidden(&mut charity, id, what).await;
        }
    }
    let sent = referrals
        .list_referrals(ListReferralsRequest {
            direction: ReferralDirection::Sent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        sent.referrals.is_empty(),
        "no referral was created: {sent:?}"
    );
    assert_readable(&mut social, &own.id, &own_bytes).await;
    gw.shutdown().await.unwrap();
}

/// An information request from social services to housing; returns its id.
async fn information_request_to_housing(env: &TestEnv, gw: &Gateway) -> String {
    information_client(env, gw, "social-services")
        .await
        .request_information(RequestInformationRequest {
            request_id: "ir-1".into(),
            information_request: Some(information_request_to("housing")),
        })
        .await
        .expect("request information")
        .into_inner()
        .information_request
        .expect("information request")
        .id
}

/// Housing's answer to the salary-certificate question, carried by `document_id`.
fn answer_with(
    information_request_id: &str,
    document_id: &str,
) -> RespondToInformationRequestRequest {
    RespondToInformationRequestRequest {
        information_request_id: information_request_id.to_string(),
        request_id: "answer-1".into(),
        response: Some(respond_to_information_request_request::Response::Answers(
            InformationRequestAnswers {
                answers: vec![Answer {
                    question_code: "salary-certificate".into(),
                    value: String::new(),
                    documents: vec![reference(document_id, "Salary certificate")],
                }],
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_in_an_answer_becomes_readable_by_the_requester_only() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let mut housing = document_client(&env, &gw, "housing").await;
    let mut police = document_client(&env, &gw, "police").await;
    let ir = information_request_to_housing(&env, &gw).await;
    let bytes = content("salary certificate", 2500);
    let doc = uploaded(&mut housing, &bytes).await;
    assert_hidden(&mut social, &doc.id, "the requester before the answer").await;

    information_client(&env, &gw, "housing")
        .await
        .respond_to_information_request(answer_with(&ir, &doc.id))
        .await
        .expect("answer");

    let seen = assert_readable(&mut social, &doc.id, &bytes).await;
    assert_eq!(seen.uploaded_by, "housing");
    assert_eq!(seen.title, doc.title);
    assert_hidden(&mut police, &doc.id, "police, no party to the request").await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_document_the_asked_agency_may_not_read_is_refused_and_the_request_stays_open(
) {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let mut police = document_client(&env, &gw, "police").await;
    let ir = information_request_to_housing(&env, &gw).await;
    let polices = uploaded(&mut police, &content("police report", 1200)).await;

    let mut housing = information_client(&env, &gw, "housing").await;
    assert_invalid(
        housing
            .respond_to_information_request(answer_with(&ir, &polices.id))
            .await,
        "answers.answers[0].documents[0].document_id",
        "an answer with police's document",
    );
    let request = information_client(&env, &gw, "social-services")
        .await
        .get_information_request(GetInformationRequestRequest {
            information_request_id: ir.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .information_request
        .expect("information request");
    assert_eq!(request.status(), InformationRequestStatus::Open);
    assert!(request.answers.is_empty(), "{request:?}");
    assert_hidden(&mut social, &polices.id, "the requester").await;
    gw.shutdown().await.unwrap();
}

// ---- Integrity ----------------------------------------------------------------------------

/// Asserts the download fails with DATA_LOSS before any byte is sent.
async fn assert_data_loss(client: &mut Documents, document_id: &str, what: &str) {
    let (_, bytes, end) = download_all(client, document_id).await;
    let err = end.expect_err(what);
    assert_eq!(err.code(), Code::DataLoss, "{what}: {err:?}");
    assert!(bytes.is_empty(), "{what}: {} bytes were sent", bytes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_that_no_longer_match_their_sha256_are_data_loss_and_never_sent() {
    let env = TestEnv::sqlite();
    let gw = env.start().await;
    let mut social = document_client(&env, &gw, "social-services").await;
    let bytes = content("integrity", 150_000);
    let doc = uploaded(&mut social, &bytes).await;
    let path = blob_path(&env, &doc.sha256);
    assert_readable(&mut social, &doc.id, &bytes).await;

    let mut flipped = bytes.clone();
    flipped[100_000] ^= 0xff;
    for (what, stored) in [
        ("one byte changed, same length", Some(&flipped[..])),
        ("truncated", Some(&bytes[..bytes.len() - 1])),
        ("deleted", None),
    ] {
        match stored {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        assert_data_loss(&mut social, &doc.id, what).await;
        // Checked on every read: restored, it reads again.
        std::fs::write(&path, &bytes).unwrap();
        assert_readable(&mut social, &doc.id, &bytes).await;
    }
    gw.shutdown().await.unwrap();
}
