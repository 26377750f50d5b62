//! `jisr audit verify|export|proof|key`: the audit trail, for security teams.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::entry::{AuditEntry, Decision};
use crate::audit::merkle;
use crate::audit::verify::{parse_verifiers, verifier_for, verify, VerifyOptions};
use crate::server::config::Config;
use crate::store::audit::{self as log, AuditFilter};
use crate::store::Store;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute every entry, the Merkle tree and every checkpoint signature; exit 0 with
    /// a summary, or non-zero naming the first entry or checkpoint that does not match.
    Verify {
        /// Only this log (default: all).
        #[arg(long)]
        log: Option<String>,
        /// Verifier key, or a file holding it (default: audit.signing_key + ".pub").
        #[arg(long)]
        key: Option<String>,
        /// A signed checkpoint kept from an earlier run: the log must still contain it.
        #[arg(long)]
        trusted: Option<PathBuf>,
        /// Entries younger than this may still be waiting for their checkpoint.
        #[arg(long, default_value_t = 10_000)]
        grace_ms: i64,
    },
    /// Write entries as JSON Lines or OCSF API Activity (class 6003) for a SIEM.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// From this time (RFC 3339, e.g. 2026-11-23T00:00:00Z), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Until this time (RFC 3339), exclusive.
        #[arg(long)]
        until: Option<String>,
        /// File to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long)]
        log: Option<String>,
    },
    /// Print an inclusion proof for one entry and check it against the latest checkpoint.
    Proof {
        #[arg(long)]
        leaf: u64,
        #[arg(long)]
        log: Option<String>,
        #[arg(long)]
        key: Option<String>,
    },
    /// Print the published verifier keys, one a line: this node's (added to the file if
    /// missing) and those of the other nodes that sign with the same key file.
    Key,
    /// Benchmark: append N synthetic entries through the group-commit writer with C
    /// concurrent appenders into a separate benchmark database (never the gateway's),
    /// then print one JSON line. The log is kept, with its verifier key beside it, so
    /// `jisr audit verify` can be timed on it.
    Bench {
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
        /// Benchmark database, replaced if it is an SQLite file.
        #[arg(long, default_value = "sqlite://data/audit-bench.db")]
        database: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

pub async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        // The benchmark writes its own log into its own database.
        AuditCommand::Bench {
            entries,
            concurrency,
            database,
        } => bench(config, entries, concurrency, database).await,
        AuditCommand::Key => {
            // This node's key is published (added if missing) before the file is printed.
            let signer = crate::audit::load_signer(&config.audit, &config.audit_origin())?;
            print!(
                "{}",
                crate::audit::publish_verifier_key(&signer, &config.audit.signing_key)?
            );
            Ok(())
        }
        AuditCommand::Verify { .. } | AuditCommand::Export { .. } | AuditCommand::Proof { .. } => {
            on_log(config, command).await
        }
    }
}

/// The commands that read this gateway's audit log.
async fn on_log(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let db = Store::open_reads(&config.database).await?;
    match command {
        AuditCommand::Verify {
            log,
            key,
            trusted,
            grace_ms,
        } => {
            let trusted_note = match trusted {
                Some(path) => Some(
                    std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
                ),
                None => None,
            };
            let started = std::time::Instant::now();
            let reports = verify(
                &db,
                &VerifyOptions {
                    log_id: log,
                    verifier_key: verifier_key(config, key)?,
                    trusted_note,
                    grace_ms,
                    progress: true,
                },
            )
            .await?;
            if reports.is_empty() {
                println!(
                    "no audit log in {}",
                    crate::store::redact(&config.database.url)
                );
            }
            for r in &reports {
                println!(
                    "log {}: OK — {} entries, {} signed checkpoints (latest covers {}), root {} ({:.2} s)",
                    r.log_id,
                    r.entries,
                    r.checkpoints,
                    r.latest_checkpoint,
                    hex::encode(r.root),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        AuditCommand::Export {
            format,
            since,
            until,
            output,
            log,
        } => {
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| path.display().to_string())?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut filter = AuditFilter {
                log_id: log.unwrap_or_else(|| config.node_id.clone()),
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                limit: 10_000,
                ..AuditFilter::default()
            };
            let mut count = 0u64;
            loop {
                let rows = log::query_entries(&db, &filter).await?;
                let Some(last) = rows.last() else { break };
                filter.after_index = Some(last.leaf_index);
                for row in &rows {
                    let entry = AuditEntry::decode(&row.entry).map_err(|e| {
                        anyhow::anyhow!("entry {} cannot be decoded: {e}", row.leaf_index)
                    })?;
                    let line = match format {
                        ExportFormat::Jsonl => jsonl(&entry, &row.leaf_hash),
                        ExportFormat::Ocsf => ocsf(&entry, &row.leaf_hash),
                    };
                    writeln!(out, "{line}")?;
                    count += 1;
                }
            }
            out.flush()?;
            eprintln!("exported {count} entries");
            Ok(())
        }
        AuditCommand::Proof { leaf, log, key } => {
            let log_id = log.unwrap_or_else(|| config.node_id.clone());
            let verifiers = parse_verifiers(&verifier_key(config, key)?)?;
            let verifier = verifier_for(&verifiers, &log_id)?;
            let Some(cp) = log::checkpoint(&db, &log_id, None).await? else {
                bail!("log {log_id} has no signed checkpoint yet");
            };
            let signed = verifier
                .verify(&cp.note)
                .context("the latest checkpoint's signature")?;
            if leaf >= signed.tree_size {
                bail!(
                    "entry {leaf} is not covered by the latest checkpoint ({} entries) yet",
                    signed.tree_size
                );
            }
            let (leaf_hash, proof) =
                log::inclusion_proof(&db, &log_id, leaf, signed.tree_size).await?;
            merkle::verify_inclusion(
                &leaf_hash,
                leaf,
                signed.tree_size,
                &proof,
                &signed.root_hash,
            )
            .context("the inclusion proof does not verify against the signed checkpoint")?;
            let row = log::query_entries(
                &db,
                &AuditFilter {
                    log_id: log_id.clone(),
                    after_index: leaf.checked_sub(1),
                    limit: 1,
                    ..AuditFilter::default()
                },
            )
            .await?;
            if row.first().map(|r| merkle::leaf_hash(&r.entry)) != Some(leaf_hash) {
                bail!(
                    "entry {leaf}'s content does not match its leaf hash; run `jisr audit verify`"
                );
            }
            let out = json!({
                "log_id": log_id,
                "leaf_index": leaf,
                "leaf_hash": hex::encode(leaf_hash),
                "tree_size": signed.tree_size,
                "root_hash": hex::encode(signed.root_hash),
                "inclusion_proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
                "checkpoint": cp.note,
                "verified": true,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        AuditCommand::Key | AuditCommand::Bench { .. } => Ok(()), // handled by `run`
    }
}

async fn bench(config: &Config, entries: u64, concurrency: u64, url: String) -> anyhow::Result<()> {
    use crate::audit::checkpoint::NoteSigner;
    use crate::store::DatabaseConfig;
    use crate::store::LogSettings;
    anyhow::ensure!(
        entries > 0 && concurrency > 0,
        "entries and concurrency must be positive"
    );
    let file = url
        .strip_prefix("sqlite://")
        .map(|f| f.split('?').next().unwrap_or(f).to_string());
    if let Some(file) = &file {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{file}{suffix}"));
        }
    }
    let pkcs8 = NoteSigner::generate_pkcs8()?;
    let signer = NoteSigner::from_pkcs8("bench.jisr/audit", &pkcs8)?;
    let key_file = format!("{}.pub", file.as_deref().unwrap_or("data/audit-bench"));
    if let Some(dir) = std::path::Path::new(&key_file).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&key_file, format!("{}\n", signer.verifier_key()))?;
    let store = Store::connect(
        &DatabaseConfig {
            url: url.clone(),
            max_connections: 4,
        },
        LogSettings {
            log_id: "bench".into(),
            signer: std::sync::Arc::new(signer),
            checkpoint_every: config.audit.checkpoint_every,
            checkpoint_interval: std::time::Duration::from_millis(
                config.audit.checkpoint_interval_ms,
            ),
        },
    )
    .await?;
    let started = std::time::Instant::now();
    append_synthetic(&store, entries, concurrency).await?;
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    println!(
        "{}",
        json!({
            "bench": "audit-append",
            "database": crate::store::redact(&url),
            "entries": entries,
            "concurrency": concurrency,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "entries_per_s": (entries as f64 / seconds).round(),
            "verifier_key_file": key_file,
        })
    );
    Ok(())
}

/// The verifier key: given, read from a file, or the published one beside the signing key.
fn verifier_key(config: &Config, key: Option<String>) -> anyhow::Result<String> {
    let raw = match key {
        Some(k) if std::path::Path::new(&k).is_file() => std::fs::read_to_string(&k)?,
        Some(k) => k,
        None => {
            let path = crate::audit::verifier_key_path(&config.audit.signing_key);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{} (the published verifier key; pass --key)",
                    path.display()
                )
            })?
        }
    };
    Ok(raw.trim().to_string())
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .with_context(|| format!("{s:?} is not an RFC 3339 time"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// One entry as JSON Lines: every field of the entry, plus its leaf hash.
pub fn jsonl(e: &AuditEntry, leaf_hash: &[u8]) -> Value {
    json!({
        "log_id": e.log_id,
        "leaf_index": e.leaf_index,
        "time": rfc3339(e.time_ms),
        "gateway_node": e.log_id,
        "trace_id": e.trace_id,
        "caller_agency": e.caller_agency,
        "cert_fingerprint_sha256": e.cert_fingerprint,
        "cert_serial": e.cert_serial,
        "officer_subject": e.officer_subject,
        "method": e.method,
        "target_ids": e.target_ids,
        "recipient_agency": e.recipient_agency,
        "decision": e.decision.as_str(),
        "rule": e.rule,
        "grpc_status_code": e.grpc_code,
        "duration_us": e.duration_us,
        "request_sha256": hex::encode(&e.request_sha256),
        "leaf_hash": hex::encode(leaf_hash),
        "reason": e.reason,
    })
}

/// One entry as an OCSF API Activity event (class 6003, category 6 Application Activity).
pub fn ocsf(e: &AuditEntry, leaf_hash: &[u8]) -> Value {
    let rpc = e.method.rsplit('/').next().unwrap_or_default();
    let service = e
        .method
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    // OCSF activity_id: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
    let activity_id =
        if rpc.starts_with("Submit") || rpc.starts_with("Request") || rpc.starts_with("Upload") {
            1
        } else if rpc.starts_with("Get")
            || rpc.starts_with("List")
            || rpc.starts_with("Query")
            || rpc.starts_with("Watch")
            || rpc.starts_with("Search")
            || rpc.starts_with("Download")
        {
            2
        } else if rpc.starts_with("Update") || rpc.starts_with("Respond") {
            3
        } else {
            99
        };
    let ok = e.grpc_code == 0;
    json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "type_uid": 600300 + activity_id,
        "time": e.time_ms,
        "duration": e.duration_us / 1000,
        "severity_id": if e.decision == Decision::Deny { 3 } else { 1 },
        "status_id": if ok { 1 } else { 2 },
        "status": if ok { "Success" } else { "Failure" },
        "status_code": e.grpc_code.to_string(),
        "actor": {
            "user": { "uid": e.caller_agency, "type_id": 3, "type": "System" },
            "authorizations": [{ "decision": e.decision.as_str(), "policy": { "name": e.rule } }],
        },
        "api": {
            "operation": rpc,
            "service": { "name": service },
            "request": { "uid": e.trace_id },
        },
        "resources": e.target_ids.iter().map(|id| json!({ "uid": id })).collect::<Vec<_>>(),
        "dst_endpoint": { "svc_name": e.recipient_agency },
        "metadata": {
            "version": "1.3.0",
            "product": { "name": "Jisr", "vendor_name": "Jisr" },
            "uid": format!("{}:{}", e.log_id, e.leaf_index),
            "log_name": e.log_id,
            "correlation_uid": e.trace_id,
        },
        "unmapped": {
            "cert_fingerprint_sha256": e.cert_fingerprint,
            "cert_serial": e.cert_serial,
            "request_sha256": hex::encode(&e.request_sha256),
            "leaf_hash": hex::encode(leaf_hash),
            "reason": e.reason,
        },
    })
}

/// Appends `entries` synthetic entries through the writer, `concurrency` appenders at once.
pub(super) async fn append_synthetic(
    store: &Store,
    entries: u64,
    concurrency: u64,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let store = store.clone();
        let count = entries / concurrency + u64::from(worker < entries % concurrency);
        tasks.push(tokio::spawn(async move {
            for i in 0..count {
                let entry = synthetic_entry((worker << 40) | i);
                store.append_audit(entry, std::time::Instant::now()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// An audit entry like a SubmitReferral's, for benchmarks; `n` makes its trace id.
fn synthetic_entry(n: u64) -> AuditEntry {
    AuditEntry {
        log_id: String::new(),
        leaf_index: 0,
        time_ms: 0,
        trace_id: format!("{n:032x}"),
        caller_agency: "social-services".into(),
        cert_fingerprint: "ab".repeat(32),
        cert_serial: "7c7880da3aa6bc8a2b79439fd3779aefe1cb9c9d".into(),
        officer_subject: String::new(),
        method: "/jisr.v1.ReferralService/SubmitReferral".into(),
        target_ids: vec![ulid::Ulid::new().to_string()],
        recipient_agency: "housing".into(),
        decision: Decision::Allow,
        rule: "mtls.registered-agency".into(),
        grpc_code: 0,
        duration_us: 0,
        request_sha256: vec![0x5a; 32],
        reason: String::new(),
    }
}
