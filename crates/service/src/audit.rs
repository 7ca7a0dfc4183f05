//! The transparency side of every service's receipt log: signed checkpoints made in the
//! background, their public history, and Merkle inclusion and consistency proofs.
//!
//! - `GET /v1/receipts/checkpoints` (public): the checkpoint history, oldest first.
//! - `GET /v1/receipts/proofs/inclusion?hash=&tree_size=` (`receipts:read`): the proof that the
//!   receipt with `hash` is leaf `log_index` of the tree of `tree_size` receipts.
//! - `GET /v1/receipts/proofs/consistency?first=&second=` (`receipts:read`): the proof that the
//!   tree of `second` receipts extends the tree of `first`.
//!
//! Proofs are answered in the field layout of the transparency-dev vectors
//! (`shared/vectors/merkle/`: `leafIdx`, `treeSize`, `root`, `leafHash`, `proof` in base64), so
//! anyone's verifier for those vectors checks ours unchanged (`oa proof verify FILE`).

use std::time::{Duration, Instant};

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::StatusCode;
use oa_auth::Authenticated;
use oa_receipts::{Hash, merkle};
use oa_store::{
    Db,
    receipt_log::{self, ReceiptLog, StoredCheckpoint},
};
use serde::{Deserialize, Serialize};

use crate::{ApiError, Route, receipts::READ_SCOPE};

/// Largest tree a proof is computed over. Proofs are computed from all leaf hashes of the tree
/// (32 bytes each), so this bounds one request's memory at 64 MiB; a log beyond it needs stored
/// subtree hashes, which this version does not keep.
pub const MAX_PROOF_TREE_SIZE: u64 = 2_000_000;

/// Default page of `GET /v1/receipts/checkpoints`.
const DEFAULT_CHECKPOINT_PAGE: u32 = 100;

/// When to sign a checkpoint: after `every` new receipts, or when `interval` has passed since
/// the last one and at least one receipt is new.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every: u64,
    pub interval: Duration,
}

impl CheckpointPolicy {
    /// How often the background task looks at the log: often enough that `every` triggers
    /// promptly, rarely enough that an idle service costs one cheap query a second.
    fn poll(&self) -> Duration {
        self.interval.min(Duration::from_secs(1))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One pass of the checkpointer: signs a checkpoint if `policy` says one is due. Returns the
/// new checkpoint, if any.
pub async fn checkpoint_if_due(
    db: &Db,
    log: &ReceiptLog,
    policy: &CheckpointPolicy,
    since_last: Duration,
) -> Result<Option<StoredCheckpoint>, oa_store::StoreError> {
    let mut conn = db.reader().await?;
    let size = receipt_log::size(&mut conn, log.service()).await?;
    let covered = receipt_log::latest_checkpoint(&mut conn, log.service())
        .await?
        .map_or(0, |c| c.tree_size);
    drop(conn);
    let new = size.saturating_sub(covered);
    if new == 0 || (new < policy.every && since_last < policy.interval) {
        return Ok(None);
    }
    log.checkpoint(&mut *db.writer().await?, now_ms()).await
}

/// Starts the background checkpointer of a service; it ends when the database pool is closed
/// (at shutdown). Without a Tokio runtime (a router built outside one) nothing is started.
pub fn spawn_checkpointer(
    db: Db,
    log: ReceiptLog,
    policy: CheckpointPolicy,
) -> Option<tokio::task::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(handle.spawn(async move {
        let mut last = Instant::now();
        let mut tick = tokio::time::interval(policy.poll());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if db.pool().is_closed() {
                break;
            }
            match checkpoint_if_due(&db, &log, &policy, last.elapsed()).await {
                Ok(Some(cp)) => {
                    tracing::info!(tree_size = cp.tree_size, root = %cp.root_hash, "signed a receipt checkpoint");
                    last = Instant::now();
                }
                Ok(None) => {}
                Err(e) if db.pool().is_closed() => {
                    tracing::debug!("checkpointer stopping: {e}");
                    break;
                }
                Err(e) => tracing::warn!("checkpoint failed: {e}"),
            }
        }
    }))
}

/// What the audit routes need.
#[derive(Clone)]
pub struct AuditState {
    pub db: Db,
    pub service: String,
    /// The service's receipt key id, for the key record of exports.
    pub key_id: String,
    pub verifier: std::sync::Arc<oa_auth::Verifier>,
}

impl axum::extract::FromRef<AuditState> for std::sync::Arc<oa_auth::Verifier> {
    fn from_ref(s: &AuditState) -> Self {
        s.verifier.clone()
    }
}

/// The route table entries, for `/openapi.json`.
pub const ROUTES: [Route; 4] = [
    Route::built(
        "GET",
        "/v1/receipts/export",
        "JSON Lines export page (key, checkpoints, receipts) from from_log_index; concatenated pages form a verifiable export",
        None,
        None,
        Some(READ_SCOPE),
    ),
    Route::built(
        "GET",
        "/v1/receipts/checkpoints",
        "Signed checkpoints of this service's receipt log, oldest first (public); page with after_size",
        None,
        None,
        None,
    ),
    Route::built(
        "GET",
        "/v1/receipts/proofs/inclusion",
        "Merkle inclusion proof of the receipt `hash` in the tree of `tree_size` receipts",
        None,
        None,
        Some(READ_SCOPE),
    ),
    Route::built(
        "GET",
        "/v1/receipts/proofs/consistency",
        "Merkle consistency proof between the trees of `first` and `second` receipts",
        None,
        None,
        Some(READ_SCOPE),
    ),
];

pub fn router(state: AuditState) -> Router {
    Router::new()
        .route("/v1/receipts/checkpoints", get(checkpoints))
        .route("/v1/receipts/proofs/inclusion", get(inclusion))
        .route("/v1/receipts/proofs/consistency", get(consistency))
        .route("/v1/receipts/export", get(export))
        .with_state(state)
}

/// A checkpoint on the wire. 64-bit integers are decimal strings, as everywhere in the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointView {
    pub service: String,
    pub key_id: String,
    #[serde(with = "oa_receipts::u64_string")]
    pub tree_size: u64,
    pub root_hash: Hash,
    #[serde(with = "oa_receipts::u64_string")]
    pub created_at_ms: u64,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsResponse {
    pub checkpoints: Vec<CheckpointView>,
    #[serde(with = "oa_receipts::u64_string")]
    pub next_after_size: u64,
}

/// An inclusion proof in the vectors' layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProof {
    pub leaf_idx: u64,
    pub tree_size: u64,
    pub root: String,
    pub leaf_hash: String,
    pub proof: Vec<String>,
}

/// A consistency proof in the vectors' layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub size1: u64,
    pub size2: u64,
    pub root1: String,
    pub root2: String,
    pub proof: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointPage {
    after_size: Option<u64>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    from_log_index: Option<u64>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    hash: String,
    tree_size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    first: u64,
    second: u64,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))
}

pub fn view(c: &StoredCheckpoint) -> CheckpointView {
    CheckpointView {
        service: c.service.clone(),
        key_id: c.key_id.clone(),
        tree_size: c.tree_size,
        root_hash: c.root_hash,
        created_at_ms: c.created_at_ms,
        note: c.note.clone(),
    }
}

async fn checkpoints(
    State(s): State<AuditState>,
    page: QueryResult<CheckpointPage>,
) -> Result<Json<CheckpointsResponse>, ApiError> {
    let page = query(page)?;
    let after = page.after_size.unwrap_or(0);
    let limit = page
        .limit
        .unwrap_or(DEFAULT_CHECKPOINT_PAGE)
        .clamp(1, receipt_log::MAX_PAGE);
    let mut conn = s.db.reader().await.map_err(ApiError::internal)?;
    let list = receipt_log::list_checkpoints(&mut conn, &s.service, after, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = list.last().map_or(after, |c| c.tree_size);
    Ok(Json(CheckpointsResponse {
        checkpoints: list.iter().map(view).collect(),
        next_after_size: next,
    }))
}

/// Header naming the `from_log_index` of the next export page.
pub const NEXT_LOG_INDEX_HEADER: &str = "x-next-log-index";

/// A page of the JSON Lines export: the key record (first page only), the checkpoints with
/// `from_log_index < tree_size <= next`, then receipts `from_log_index..next`. Concatenating the
/// pages from 0 gives an export `oa receipts verify` accepts, and an export can be resumed
/// from any page boundary.
async fn export(
    State(s): State<AuditState>,
    auth: Authenticated,
    q: QueryResult<ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    auth.require_scope(READ_SCOPE)?;
    let q = query(q)?;
    let from = q.from_log_index.unwrap_or(0);
    let limit = q
        .limit
        .unwrap_or(receipt_log::MAX_PAGE)
        .clamp(1, receipt_log::MAX_PAGE);
    let mut conn = s.db.reader().await.map_err(ApiError::internal)?;
    let receipts = receipt_log::list(&mut conn, &s.service, from, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = receipts.last().map_or(from, |r| r.log_index + 1);
    let mut checkpoints = Vec::new();
    let mut after = from;
    // Bounded: at most one checkpoint per receipt of the page.
    while after < next {
        let page =
            receipt_log::list_checkpoints(&mut conn, &s.service, after, receipt_log::MAX_PAGE)
                .await
                .map_err(ApiError::internal)?;
        let Some(last) = page.last().map(|c| c.tree_size) else {
            break;
        };
        checkpoints.extend(page.into_iter().filter(|c| c.tree_size <= next));
        after = last;
    }
    let mut out = Vec::new();
    let written = (|| {
        if from == 0 {
            oa_receipts::write_key_record(
                &mut out,
                &oa_receipts::Issuer {
                    service: s.service.clone(),
                    key_id: s.key_id.clone(),
                },
            )?;
        }
        for c in &checkpoints {
            oa_receipts::write_checkpoint_record(
                &mut out,
                &oa_receipts::CheckpointRecord {
                    service: c.service.clone(),
                    key_id: c.key_id.clone(),
                    note: c.note.clone(),
                },
            )?;
        }
        for r in &receipts {
            oa_receipts::write_receipt_record(&mut out, r)?;
        }
        Ok::<(), oa_receipts::ReceiptError>(())
    })();
    written.map_err(ApiError::internal)?;
    Ok((
        [
            (
                http::header::CONTENT_TYPE,
                "application/x-ndjson".to_owned(),
            ),
            (
                http::HeaderName::from_static(NEXT_LOG_INDEX_HEADER),
                next.to_string(),
            ),
        ],
        out,
    )
        .into_response())
}

fn bad_size(message: String) -> ApiError {
    ApiError::bad_request("INVALID_TREE_SIZE", message)
}

/// Leaves of the first `tree_size` receipts, refusing sizes beyond the log or the bound.
async fn leaves(
    conn: &mut sqlx::AnyConnection,
    service: &str,
    tree_size: u64,
) -> Result<Vec<merkle::Digest>, ApiError> {
    let size = receipt_log::size(&mut *conn, service)
        .await
        .map_err(ApiError::internal)?;
    if tree_size > size {
        return Err(bad_size(format!(
            "tree size {tree_size} is beyond the log's {size} receipts"
        )));
    }
    if tree_size > MAX_PROOF_TREE_SIZE {
        return Err(bad_size(format!(
            "tree size {tree_size} is beyond the proof limit of {MAX_PROOF_TREE_SIZE}"
        )));
    }
    receipt_log::leaf_hashes(&mut *conn, service, tree_size)
        .await
        .map_err(ApiError::internal)
}

fn b64_all(v: &[merkle::Digest]) -> Vec<String> {
    v.iter().map(|d| B64.encode(d)).collect()
}

async fn inclusion(
    State(s): State<AuditState>,
    auth: Authenticated,
    q: QueryResult<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    auth.require_scope(READ_SCOPE)?;
    let q = query(q)?;
    let hash =
        Hash::parse(&q.hash).map_err(|e| ApiError::bad_request("INVALID_HASH", e.to_string()))?;
    let mut conn = s.db.reader().await.map_err(ApiError::internal)?;
    let receipt = receipt_log::get_by_hash(&mut conn, &hash)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| r.issuer.service == s.service)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "RECEIPT_NOT_FOUND",
                "no receipt of this service has that hash",
            )
        })?;
    if q.tree_size <= receipt.log_index {
        return Err(bad_size(format!(
            "tree size {} does not include log index {}",
            q.tree_size, receipt.log_index
        )));
    }
    let all = leaves(&mut conn, &s.service, q.tree_size).await?;
    let proof = merkle::inclusion_proof(&all, receipt.log_index).map_err(ApiError::internal)?;
    Ok(Json(InclusionProof {
        leaf_idx: receipt.log_index,
        tree_size: q.tree_size,
        root: B64.encode(merkle::root(&all)),
        leaf_hash: B64.encode(merkle::leaf_hash(hash.as_bytes())),
        proof: b64_all(&proof),
    }))
}

async fn consistency(
    State(s): State<AuditState>,
    auth: Authenticated,
    q: QueryResult<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    auth.require_scope(READ_SCOPE)?;
    let q = query(q)?;
    if q.first > q.second {
        return Err(bad_size(format!(
            "first ({}) must not exceed second ({})",
            q.first, q.second
        )));
    }
    let mut conn = s.db.reader().await.map_err(ApiError::internal)?;
    let all = leaves(&mut conn, &s.service, q.second).await?;
    let proof = merkle::consistency_proof(&all, q.first, q.second).map_err(ApiError::internal)?;
    let first = usize::try_from(q.first).map_err(ApiError::internal)?;
    Ok(Json(ConsistencyProof {
        size1: q.first,
        size2: q.second,
        root1: B64.encode(merkle::root(&all[..first])),
        root2: B64.encode(merkle::root(&all)),
        proof: b64_all(&proof),
    }))
}
