//! jisr.v1.AuditService: the audit trail, for agencies holding the auditor role.

use std::collections::HashSet;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::paging;
use super::validate::{timestamp_ms, Violations};
use crate::audit::entry::{AuditEntry, Decision};
use crate::audit::merkle::Hash;
use crate::common::error::{ApiError, Reason};
use crate::layers::{self as auth, Caller};
use crate::pb::v1::audit_service_server::AuditService;
use crate::pb::v1::*;
use crate::store::audit::{self as log, AuditFilter, AuditRow, CheckpointRow};
use crate::store::Reads;

/// The rule that decides who may read the audit trail.
pub const RULE_AUDITOR: &str = "audit.auditor-role";
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_PAGE_SIZE: i32 = 1000;

#[derive(Clone)]
pub struct AuditApi {
    db: Reads,
    log_id: String,
    auditors: Arc<HashSet<String>>,
}

impl AuditApi {
    /// The audit service of the log `log_id` (this node's), for the agencies `auditors`.
    pub fn new(db: Reads, log_id: &str, auditors: impl IntoIterator<Item = String>) -> AuditApi {
        AuditApi {
            db,
            log_id: log_id.to_string(),
            auditors: Arc::new(auditors.into_iter().collect()),
        }
    }

    /// Only auditors; the decision and its rule go into the call's audit entry. (The
    /// authorize gate refuses others first; this holds the handler to the same rule.)
    fn authorize(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.auditors.contains(caller.agency()) {
            caller.audit.allow(RULE_AUDITOR);
            return Ok(());
        }
        caller.audit.deny(RULE_AUDITOR);
        Err(ApiError::refused(
            Reason::AuditorRoleRequired,
            format!(
                "agency {} does not hold the auditor role; only auditors may read the audit trail",
                caller.agency()
            ),
        )
        .with("agency", caller.agency())
        .with("rule", RULE_AUDITOR))
    }

    fn log_id<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() {
            &self.log_id
        } else {
            requested
        }
    }

    async fn latest_checkpoint(&self, log_id: &str) -> Result<CheckpointRow, ApiError> {
        log::checkpoint(&self.db, log_id, None)
            .await?
            .ok_or_else(|| {
                ApiError::refused(
                    Reason::NoCheckpointYet,
                    format!(
                        "log {log_id:?} has no signed checkpoint yet; one is written shortly after the first entry"
                    ),
                )
                .with("log_id", log_id)
            })
    }

    /// The requested size, or the latest checkpoint's; never beyond it.
    async fn proof_size(
        &self,
        log_id: &str,
        requested: u64,
    ) -> Result<(u64, Option<CheckpointRow>), ApiError> {
        let latest = self.latest_checkpoint(log_id).await?;
        if requested == 0 || requested == latest.tree_size {
            return Ok((latest.tree_size, Some(latest)));
        }
        if requested > latest.tree_size {
            return Err(beyond_checkpoint(
                format!(
                    "a tree of {requested} entries is beyond the latest signed checkpoint ({} entries); ask again shortly",
                    latest.tree_size
                ),
                latest.tree_size,
            ));
        }
        let at = log::checkpoint(&self.db, log_id, Some(requested)).await?;
        Ok((requested, at))
    }

    async fn query(
        &self,
        caller: &Caller,
        req: QueryAuditEventsRequest,
    ) -> Result<QueryAuditEventsResponse, ApiError> {
        self.authorize(caller)?;
        let mut v = Violations::default();
        let decision =
            v.enum_value::<AuditDecision>("decision", req.decision, false, "an AuditDecision");
        v.check(
            (0..=MAX_PAGE_SIZE).contains(&req.page_size),
            "page_size",
            format!("must be between 0 and {MAX_PAGE_SIZE}"),
        );
        let since = req.start_time.as_ref().map(timestamp_ms);
        let until = req.end_time.as_ref().map(timestamp_ms);
        v.check(
            since != Some(None),
            "start_time",
            "is not a valid timestamp",
        );
        v.check(until != Some(None), "end_time", "is not a valid timestamp");
        let fingerprint = format!(
            "{:?}|{:?}|{}|{}|{}|{}",
            since, until, req.agency, req.method, req.decision, req.target_id
        );
        let after = if req.page_token.is_empty() {
            None
        } else {
            let after =
                paging::decode(&req.page_token, &fingerprint).and_then(|k| k.parse::<u64>().ok());
            v.check(
                after.is_some(),
                "page_token",
                "is not a token this query returned for these filters",
            );
            after
        };
        v.finish()?;
        let limit = if req.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            req.page_size
        };
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let filter = AuditFilter {
            log_id: self.log_id.clone(),
            since_ms: since.flatten(),
            until_ms: until.flatten(),
            agency: non_empty(req.agency),
            method: non_empty(req.method),
            decision: decision.and_then(|d| match d {
                AuditDecision::Allow => Some(Decision::Allow.as_str().to_string()),
                AuditDecision::Deny => Some(Decision::Deny.as_str().to_string()),
                AuditDecision::Unspecified => None,
            }),
            target_id: non_empty(req.target_id),
            after_index: after,
            limit: i64::from(limit) + 1,
        };
        let mut rows = log::query_entries(&self.db, &filter).await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|r| paging::encode(&r.leaf_index.to_string(), &fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let events = rows.iter().map(event_proto).collect::<Result<_, _>>()?;
        Ok(QueryAuditEventsResponse {
            events,
            next_page_token,
        })
    }

    async fn checkpoint(
        &self,
        caller: &Caller,
        req: GetCheckpointRequest,
    ) -> Result<GetCheckpointResponse, ApiError> {
        self.authorize(caller)?;
        let log_id = self.log_id(&req.log_id).to_string();
        let latest = self.latest_checkpoint(&log_id).await?;
        Ok(GetCheckpointResponse {
            checkpoint: Some(checkpoint_proto(&log_id, &latest)),
        })
    }

    async fn inclusion_proof(
        &self,
        caller: &Caller,
        req: GetInclusionProofRequest,
    ) -> Result<GetInclusionProofResponse, ApiError> {
        self.authorize(caller)?;
        let log_id = self.log_id(&req.log_id).to_string();
        caller
            .audit
            .set_target(&format!("{log_id}#{}", req.leaf_index), "");
        let (size, checkpoint) = self.proof_size(&log_id, req.tree_size).await?;
        if req.leaf_index >= size {
            return Err(beyond_checkpoint(
                format!(
                    "entry {} is not covered by a signed checkpoint of {size} entries yet; ask again shortly",
                    req.leaf_index
                ),
                size,
            ));
        }
        let (leaf, proof) = log::inclusion_proof(&self.db, &log_id, req.leaf_index, size).await?;
        Ok(GetInclusionProofResponse {
            leaf_index: req.leaf_index,
            tree_size: size,
            leaf_hash: leaf.to_vec(),
            hashes: hashes(proof),
            checkpoint: checkpoint.map(|c| checkpoint_proto(&log_id, &c)),
        })
    }

    async fn consistency_proof(
        &self,
        caller: &Caller,
        req: GetConsistencyProofRequest,
    ) -> Result<GetConsistencyProofResponse, ApiError> {
        self.authorize(caller)?;
        let log_id = self.log_id(&req.log_id).to_string();
        let (second, checkpoint) = self.proof_size(&log_id, req.second_tree_size).await?;
        let mut v = Violations::default();
        v.check(
            (1..=second).contains(&req.first_tree_size),
            "first_tree_size",
            format!("must be between 1 and the second tree size ({second})"),
        );
        v.finish()?;
        let proof = log::consistency_proof(&self.db, &log_id, req.first_tree_size, second).await?;
        Ok(GetConsistencyProofResponse {
            first_tree_size: req.first_tree_size,
            second_tree_size: second,
            hashes: hashes(proof),
            checkpoint: checkpoint.map(|c| checkpoint_proto(&log_id, &c)),
        })
    }
}

/// A proof asked of entries no signed checkpoint covers yet (a leaf or a tree size alike).
fn beyond_checkpoint(message: String, tree_size: u64) -> ApiError {
    ApiError::refused(Reason::BeyondCheckpoint, message).with("tree_size", tree_size.to_string())
}

fn checkpoint_proto(log_id: &str, c: &CheckpointRow) -> Checkpoint {
    Checkpoint {
        log_id: log_id.to_string(),
        tree_size: c.tree_size,
        root_hash: c.root_hash.clone(),
        timestamp: Some(timestamp(c.time_ms)),
        signed_note: c.note.clone(),
    }
}

/// An audit row as the API shows it.
pub fn event_proto(row: &AuditRow) -> Result<AuditEvent, ApiError> {
    let e = AuditEntry::decode(&row.entry)
        .map_err(|err| ApiError::corrupt(format!("audit entry {}: {err}", row.leaf_index)))?;
    Ok(AuditEvent {
        log_id: e.log_id.clone(),
        leaf_index: e.leaf_index,
        time: Some(timestamp(e.time_ms)),
        gateway_node: e.log_id,
        trace_id: e.trace_id,
        caller_agency: e.caller_agency,
        cert_fingerprint_sha256: hex::decode(&e.cert_fingerprint).unwrap_or_default(),
        cert_serial: e.cert_serial,
        officer_subject: e.officer_subject,
        method: e.method,
        target_ids: e.target_ids,
        recipient_agency: e.recipient_agency,
        decision: match e.decision {
            Decision::Allow => AuditDecision::Allow,
            Decision::Deny => AuditDecision::Deny,
        } as i32,
        rule: e.rule,
        grpc_status_code: e.grpc_code,
        duration_micros: e.duration_us,
        request_sha256: e.request_sha256,
        leaf_hash: row.leaf_hash.clone(),
        reason: e.reason,
    })
}

fn hashes(proof: Vec<Hash>) -> Vec<Vec<u8>> {
    proof.into_iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit_events(
        &self,
        request: Request<QueryAuditEventsRequest>,
    ) -> Result<Response<QueryAuditEventsResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.query(&caller, request.into_inner()).await)
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(
            &caller,
            self.checkpoint(&caller, request.into_inner()).await,
        )
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(
            &caller,
            self.inclusion_proof(&caller, request.into_inner()).await,
        )
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(
            &caller,
            self.consistency_proof(&caller, request.into_inner()).await,
        )
    }
}
