//! The active policy: stored in the database (so every treasury process sharing it decides with
//! the same one), cached in memory by bundle id.
//!
//! At start the `--policy-file` (if given) becomes the active policy, unless it already is; with
//! no file and no policy ever activated, the built-in default (pay directly, no approvals) is.
//! `PUT /v1/treasury/policy` replaces it. Each decision reads the active bundle id (one indexed
//! row) and parses the policy only when it changed, so a replacement applies to the next payment
//! in every process.

use std::sync::{Arc, PoisonError, RwLock};

use oa_store::Db;
use sqlx::AnyConnection;

use crate::{
    error::{TreasuryError, corrupt},
    policy::{DEFAULT_POLICY_TOML, Policy},
    store::{self, ActivePolicy},
};

pub struct Policies {
    db: Db,
    cache: RwLock<Option<(String, Arc<Policy>)>>,
}

impl Policies {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: RwLock::new(None),
        }
    }

    /// Makes `toml` (or, if `None` and nothing is active, the default) the active policy.
    pub async fn at_start(&self, toml: Option<&str>, now_ms: u64) -> Result<String, TreasuryError> {
        let mut tx = self.db.begin().await?;
        let active = store::active_bundle_id(&mut tx).await?;
        let (text, by) = match (toml, &active) {
            (Some(t), _) => (t, "policy-file"),
            (None, None) => (DEFAULT_POLICY_TOML, "default"),
            (None, Some(id)) => {
                tx.rollback().await?;
                return Ok(id.clone());
            }
        };
        let policy = Policy::from_toml(text)?;
        let id = policy.bundle_id()?;
        if active.as_deref() != Some(id.as_str()) {
            store::activate_policy(&mut tx, &id, &policy.canonical_json()?, text, by, now_ms)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Validates and activates `toml` inside the caller's transaction.
    pub async fn activate(
        &self,
        conn: &mut AnyConnection,
        toml: &str,
        by: &str,
        now_ms: u64,
    ) -> Result<ActivePolicy, TreasuryError> {
        let policy = Policy::from_toml(toml)?;
        let id = policy.bundle_id()?;
        let canonical = policy.canonical_json()?;
        let version = store::activate_policy(conn, &id, &canonical, toml, by, now_ms).await?;
        Ok(ActivePolicy {
            bundle_id: id,
            version,
            canonical_json: canonical,
            source_toml: toml.to_owned(),
            activated_by: by.to_owned(),
            activated_at_ms: now_ms,
        })
    }

    /// The active policy and its bundle id.
    pub async fn current(&self) -> Result<(String, Arc<Policy>), TreasuryError> {
        let mut conn = self.db.reader().await?;
        let id = store::active_bundle_id(&mut conn)
            .await?
            .ok_or_else(|| corrupt("no active policy"))?;
        if let Some((cached, p)) = &*self.cache.read().unwrap_or_else(PoisonError::into_inner)
            && *cached == id
        {
            return Ok((id, p.clone()));
        }
        let active = store::active_policy(&mut conn)
            .await?
            .ok_or_else(|| corrupt("no active policy"))?;
        let policy: Policy = serde_json::from_str(&active.canonical_json)
            .map_err(|e| corrupt(&format!("stored policy {}: {e}", active.bundle_id)))?;
        let policy = Arc::new(policy);
        *self.cache.write().unwrap_or_else(PoisonError::into_inner) =
            Some((active.bundle_id.clone(), policy.clone()));
        Ok((active.bundle_id, policy))
    }

    pub async fn active(&self) -> Result<ActivePolicy, TreasuryError> {
        let mut conn = self.db.reader().await?;
        store::active_policy(&mut conn)
            .await?
            .ok_or_else(|| corrupt("no active policy"))
    }
}
