//! `jisr audit verify`: recompute everything and name the first thing that does not match.
//!
//! For each log: every entry is decoded, its position and leaf hash recomputed and its
//! query columns compared with the signed bytes; the Merkle root at every checkpoint's
//! size is recomputed in one pass over the leaves and compared with the checkpoint's
//! signed note, whose Ed25519 signature is checked; consecutive checkpoints must grow,
//! and a consistency proof between the first and the latest checkpoint is checked.
//! Entries no checkpoint covers after a grace period, and a log smaller than (or
//! different from) a checkpoint the security team kept earlier, are reported too.

use std::io::{IsTerminal, Write};

use super::checkpoint::NoteVerifier;
use super::entry::AuditEntry;
use super::log::{AuditFilter, AuditRow, LogReader};
use super::merkle::{self, CompactTree, Hash};

const CHUNK: i64 = 20_000;

pub struct VerifyOptions {
    /// Only this log (default: every log in the database).
    pub log_id: Option<String>,
    /// The published verifier keys of the checkpoint signers, one a line: each log is
    /// checked with the key named for it (`<trust domain>/jisr/<log id>`), or with the only
    /// key given.
    pub verifier_key: String,
    /// A signed checkpoint kept from an earlier verification (rollback detection).
    pub trusted_note: Option<String>,
    /// Entries newer than this (ms) may still be waiting for their checkpoint.
    pub grace_ms: i64,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
}

#[derive(Debug)]
pub struct LogReport {
    pub log_id: String,
    pub entries: u64,
    pub checkpoints: usize,
    pub latest_checkpoint: u64,
    pub root: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("log {log_id}: entry {index} {problem}")]
    Entry {
        log_id: String,
        index: u64,
        problem: String,
    },
    #[error("log {log_id}: the checkpoint of {size} entries {problem}")]
    Checkpoint {
        log_id: String,
        size: u64,
        problem: String,
    },
    #[error("log {log_id}: {problem}")]
    Index { log_id: String, problem: String },
    #[error("the verifier key is not usable: {0}")]
    Key(String),
    #[error("the trusted checkpoint does not verify with the verifier key: {0}")]
    Trusted(String),
    #[error("reading the log: {0}")]
    Read(String),
}

pub async fn verify(
    pool: &dyn LogReader,
    opts: &VerifyOptions,
) -> Result<Vec<LogReport>, VerifyError> {
    let verifiers = parse_verifiers(&opts.verifier_key)?;
    let logs = match &opts.log_id {
        Some(id) => vec![id.clone()],
        None => pool.log_ids().await.map_err(VerifyError::Read)?,
    };
    let mut reports = Vec::new();
    for log_id in logs {
        let verifier = verifier_for(&verifiers, &log_id)?;
        reports.push(verify_log(pool, &log_id, verifier, opts).await?);
    }
    Ok(reports)
}

/// Verifier keys, one a line (a published key file lists one per node).
pub fn parse_verifiers(keys: &str) -> Result<Vec<NoteVerifier>, VerifyError> {
    keys.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(NoteVerifier::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Key(e.to_string()))
}

/// The key a log's checkpoints are checked with: the one whose name ends in `/<log id>`
/// (each node signs as `<trust domain>/jisr/<node id>`), or the only one given.
pub fn verifier_for<'v>(
    verifiers: &'v [NoteVerifier],
    log_id: &str,
) -> Result<&'v NoteVerifier, VerifyError> {
    let named = verifiers
        .iter()
        .find(|v| v.name().rsplit('/').next() == Some(log_id));
    match (named, verifiers) {
        (Some(v), _) => Ok(v),
        (None, [only]) => Ok(only),
        (None, []) => Err(VerifyError::Key("no verifier key was given".into())),
        (None, _) => Err(VerifyError::Key(format!(
            "none of the {} verifier keys given is named for log {log_id} (…/jisr/{log_id}); \
             add that node's line from its published key file (`jisr audit key` on it)",
            verifiers.len()
        ))),
    }
}

async fn verify_log(
    pool: &dyn LogReader,
    log_id: &str,
    verifier: &NoteVerifier,
    opts: &VerifyOptions,
) -> Result<LogReport, VerifyError> {
    let entry_err = |index, problem| entry_error(log_id, index, problem);
    let cp_err = |size: u64, problem: String| VerifyError::Checkpoint {
        log_id: log_id.to_string(),
        size,
        problem,
    };
    let total = pool.entry_count(log_id).await.map_err(VerifyError::Read)?;
    let mut bar = Progress::new(opts.progress, log_id, total);

    // Entries, in order; the next chunk is read while this one is checked.
    let mut leaves: Vec<Hash> = Vec::with_capacity(total as usize);
    let mut times: Vec<i64> = Vec::with_capacity(total as usize);
    let chunk = |after: Option<u64>| {
        let filter = AuditFilter {
            log_id: log_id.to_string(),
            after_index: after,
            limit: CHUNK,
            ..AuditFilter::default()
        };
        async move { pool.query_entries(&filter).await.map_err(VerifyError::Read) }
    };
    let mut targets = TargetDigest::default();
    let mut rows = chunk(None).await?;
    while let Some(last) = rows.last() {
        let (next, checked) = tokio::join!(chunk(Some(last.leaf_index)), async {
            check_entries(log_id, &rows, &mut leaves, &mut times, &mut targets)
        });
        checked?;
        rows = next?;
        bar.set(leaves.len() as u64);
    }
    bar.finish();
    let n = leaves.len() as u64;

    // Checkpoints: signatures, rows, and roots recomputed in one pass.
    let checkpoints = pool.checkpoints(log_id).await.map_err(VerifyError::Read)?;
    let mut tree = CompactTree::new();
    let mut previous: Option<(u64, Hash)> = None;
    let mut first: Option<(u64, Hash)> = None;
    for c in &checkpoints {
        let signed = verifier.verify(&c.note).map_err(|e| {
            cp_err(
                c.tree_size,
                format!("has a signature that does not verify: {e}"),
            )
        })?;
        if signed.tree_size != c.tree_size || signed.root_hash.as_slice() != c.root_hash.as_slice()
        {
            return Err(cp_err(
                c.tree_size,
                format!(
                    "has a row that does not match its signed note (which is for {} entries)",
                    signed.tree_size
                ),
            ));
        }
        if signed.tree_size > n {
            return Err(cp_err(
                c.tree_size,
                format!("covers more entries than the log holds ({n}): entries were removed"),
            ));
        }
        while tree.size() < signed.tree_size {
            tree.append(leaves[tree.size() as usize]);
        }
        if tree.root() != signed.root_hash {
            return Err(cp_err(
                c.tree_size,
                "does not match the entries it covers: they no longer hash to its signed root (an entry was changed, removed or inserted)".into(),
            ));
        }
        if let Some((size, _)) = previous {
            if signed.tree_size <= size {
                return Err(cp_err(
                    c.tree_size,
                    format!("does not grow the log past the previous checkpoint ({size})"),
                ));
            }
        }
        first.get_or_insert((signed.tree_size, signed.root_hash));
        previous = Some((signed.tree_size, signed.root_hash));
    }
    let latest = previous.map_or(0, |(size, _)| size);
    if let (Some((first_size, first_root)), Some((last_size, last_root))) = (first, previous) {
        let proof =
            merkle::consistency_proof(&leaves[..last_size as usize], first_size).map_err(|e| {
                cp_err(
                    last_size,
                    format!("has no consistency proof from the first checkpoint: {e}"),
                )
            })?;
        merkle::verify_consistency(first_size, last_size, &first_root, &last_root, &proof)
            .map_err(|e| {
                cp_err(
                    last_size,
                    format!("is not consistent with the first checkpoint: {e}"),
                )
            })?;
    }

    // Entries no checkpoint covers, past the grace period.
    let cutoff = crate::common::time::now_ms() - opts.grace_ms;
    if let Some(i) = (latest..n).find(|i| times[*i as usize] < cutoff) {
        return Err(entry_err(
            i,
            format!(
                "is not covered by any signed checkpoint (the latest covers {latest}): it was appended out of band, \
                 or the gateway stopped before signing"
            ),
        ));
    }

    // A checkpoint kept from earlier: the log must still contain exactly what it signed.
    if let Some(note) = &opts.trusted_note {
        let trusted = verifier
            .verify(note)
            .map_err(|e| VerifyError::Trusted(e.to_string()))?;
        if trusted.tree_size > n {
            return Err(cp_err(
                trusted.tree_size,
                format!("that you trusted is longer than the log, which holds only {n}: the log was rolled back"),
            ));
        }
        if trusted.tree_size > 0
            && merkle::root(&leaves[..trusted.tree_size as usize]) != trusted.root_hash
        {
            return Err(cp_err(
                trusted.tree_size,
                "that you trusted no longer matches the log: it was rewritten".into(),
            ));
        }
    }
    // The target index QueryAuditEvents uses must name exactly the entries' targets.
    let mut indexed = TargetDigest::default();
    let mut after = None;
    loop {
        let page = pool
            .target_rows(log_id, after, CHUNK)
            .await
            .map_err(VerifyError::Read)?;
        for (target, leaf) in &page {
            indexed.add(target, *leaf);
        }
        match page.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
    }
    if indexed != targets {
        return Err(VerifyError::Index {
            log_id: log_id.to_string(),
            problem: format!(
                "audit_targets holds {} rows where the entries name {} (target, entry) pairs, \
                 or other ones: rows there were added, removed or changed, so a query by target would mislead",
                indexed.count, targets.count
            ),
        });
    }

    Ok(LogReport {
        log_id: log_id.to_string(),
        entries: n,
        checkpoints: checkpoints.len(),
        latest_checkpoint: latest,
        root: merkle::root(&leaves),
    })
}

fn entry_error(log_id: &str, index: u64, problem: String) -> VerifyError {
    VerifyError::Entry {
        log_id: log_id.to_string(),
        index,
        problem,
    }
}

/// Checks stored entries that follow `leaves`: position, content, leaf hash and query
/// columns; appends their leaf hashes and times.
fn check_entries(
    log_id: &str,
    rows: &[AuditRow],
    leaves: &mut Vec<Hash>,
    times: &mut Vec<i64>,
    targets: &mut TargetDigest,
) -> Result<(), VerifyError> {
    let entry_err = |index, problem| entry_error(log_id, index, problem);
    for row in rows {
        let expected = leaves.len() as u64;
        if row.leaf_index != expected {
            return Err(entry_err(
                expected,
                format!("is missing (the next stored entry is {})", row.leaf_index),
            ));
        }
        let entry = AuditEntry::decode(&row.entry)
            .map_err(|e| entry_err(expected, format!("cannot be decoded: {e}")))?;
        if entry.leaf_index != expected || entry.log_id != log_id {
            return Err(entry_err(
                expected,
                format!(
                    "holds the signed content of entry {} of log {} (entries were swapped or moved)",
                    entry.leaf_index, entry.log_id
                ),
            ));
        }
        let hash = merkle::leaf_hash(&row.entry);
        if row.leaf_hash.as_slice() != hash.as_slice() {
            return Err(entry_err(
                expected,
                "has a stored leaf hash that does not match its content (the entry was changed)"
                    .into(),
            ));
        }
        let column_err = |column: &str, stored: String, signed: String| {
            entry_err(
                expected,
                format!("has column {column} = {stored:?} but its logged content says {signed:?} (the row was changed)"),
            )
        };
        if row.time_ms != entry.time_ms {
            return Err(column_err(
                "time_ms",
                row.time_ms.to_string(),
                entry.time_ms.to_string(),
            ));
        }
        for (column, stored, signed) in [
            ("caller_agency", &row.caller_agency, &entry.caller_agency),
            ("method", &row.method, &entry.method),
        ] {
            if stored != signed {
                return Err(column_err(column, stored.clone(), signed.clone()));
            }
        }
        if row.decision != entry.decision.as_str() {
            return Err(column_err(
                "decision",
                row.decision.clone(),
                entry.decision.as_str().to_string(),
            ));
        }
        if !targets_match(&row.targets, &entry.target_ids) {
            return Err(column_err(
                "targets",
                row.targets.clone(),
                crate::audit::entry::targets_column(&entry.target_ids),
            ));
        }
        for id in entry.distinct_targets() {
            targets.add(id, expected);
        }
        leaves.push(hash);
        times.push(entry.time_ms);
    }
    Ok(())
}

/// A digest of a set of (target id, leaf index) pairs that does not depend on their
/// order: their count and the wrapping sum of a hash of each.
#[derive(Default, PartialEq, Eq)]
struct TargetDigest {
    count: u64,
    sum: u64,
}

impl TargetDigest {
    fn add(&mut self, target: &str, leaf: u64) {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(leaf.to_be_bytes());
        h.update(target.as_bytes());
        let d = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        self.count += 1;
        self.sum = self.sum.wrapping_add(u64::from_be_bytes(first));
    }
}

/// Whether the stored `targets` column is the one `ids` make (see `targets_column`),
/// compared without building it.
fn targets_match(stored: &str, ids: &[String]) -> bool {
    if ids.is_empty() {
        return stored.is_empty();
    }
    let mut rest = stored;
    for id in ids {
        match rest
            .strip_prefix(' ')
            .and_then(|r| r.strip_prefix(id.as_str()))
        {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest == " "
}

/// A progress bar on stderr, drawn only on a terminal.
struct Progress {
    on: bool,
    label: String,
    total: u64,
}

impl Progress {
    fn new(wanted: bool, label: &str, total: u64) -> Progress {
        Progress {
            on: wanted && std::io::stderr().is_terminal() && total > 0,
            label: label.to_string(),
            total,
        }
    }
    fn set(&mut self, done: u64) {
        if self.on {
            let width = 40;
            let filled = (done * width / self.total.max(1)) as usize;
            eprint!(
                "\r{} [{}{}] {done}/{} ({}%)",
                self.label,
                "#".repeat(filled),
                " ".repeat(width as usize - filled.min(width as usize)),
                self.total,
                done * 100 / self.total.max(1)
            );
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(&mut self) {
        if self.on {
            eprintln!();
        }
    }
}
