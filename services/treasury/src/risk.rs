//! Risk as Aegis sees it: the risk-budget state of an agent and of its org.
//!
//! [`RiskSource`] is the trait (tests use a fake); [`HttpRisk`] reads
//! `GET /v1/aegis/risk_budget/status?subject_type=agent|org&subject_id=...` (scope `aegis:read`,
//! contract `RiskBudgetResponse` in `proto/openagents/aegis/v1/aegis.proto`), and
//! [`NotConfigured`] stands in when treasury runs without `--aegis-url`: every read then fails
//! with [`RiskError::NotConfigured`], which the policy treats as "unavailable".
//!
//! [`Assessor`] turns the two readings into the [`RiskView`] a decision uses: degraded when Aegis
//! says `elevated` or `exhausted` for the agent or its org; the effective cap is the smaller of
//! theirs. Readings are cached for the policy's `risk.cache_ms` on the service clock, so a burst
//! of payments asks Aegis once.

use oa_service::peer::PeerClient;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use oa_auth::TokenSource;
use oa_money::Msat;
use oa_proto::aegis;
use oa_service::Clock;

use crate::policy::{Assume, Policy, RiskLevel, RiskSourceKind, RiskView};

/// Bound on one read from Aegis: payments wait for it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from Aegis (one status message).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most cached readings; the cache is cleared when it would grow past this.
const MAX_CACHED: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Agent,
    Org,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Agent => "agent",
            Subject::Org => "org",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskState {
    Unbudgeted,
    Normal,
    Elevated,
    Exhausted,
}

/// One subject's reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiskStatus {
    pub state: RiskState,
    /// Aegis's effective autonomy cap; `None` for an unbudgeted subject.
    pub effective_cap: Option<Msat>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RiskError {
    #[error("treasury has no --aegis-url: risk cannot be read")]
    NotConfigured,
    #[error("aegis is unavailable: {0}")]
    Unavailable(String),
}

/// Aegis's risk budgets as treasury reads them. Implementors answer a subject Aegis has no
/// budget for as `Unbudgeted` (not an error), and fail only when Aegis could not be asked or
/// answered outside its contract.
#[async_trait]
pub trait RiskSource: Send + Sync + 'static {
    async fn status(&self, subject: Subject, id: &str) -> Result<RiskStatus, RiskError>;
}

/// The source when no Aegis is configured.
pub struct NotConfigured;

#[async_trait]
impl RiskSource for NotConfigured {
    async fn status(&self, _: Subject, _: &str) -> Result<RiskStatus, RiskError> {
        Err(RiskError::NotConfigured)
    }
}

/// Aegis over HTTP, with treasury's identity (scope `aegis:read`).
pub struct HttpRisk {
    peer: PeerClient,
}

impl HttpRisk {
    pub fn new(base: &str, tokens: TokenSource) -> anyhow::Result<Self> {
        Ok(Self {
            peer: PeerClient::new(base, tokens, CALL_TIMEOUT, MAX_RESPONSE_BYTES)?,
        })
    }
}

/// Maps Aegis's message to a reading.
pub fn from_proto(s: &aegis::RiskBudgetStatus) -> Result<RiskStatus, RiskError> {
    let state = match s.state() {
        aegis::RiskState::Unbudgeted => RiskState::Unbudgeted,
        aegis::RiskState::Normal => RiskState::Normal,
        aegis::RiskState::Elevated => RiskState::Elevated,
        aegis::RiskState::Exhausted => RiskState::Exhausted,
        aegis::RiskState::Unspecified => {
            return Err(RiskError::Unavailable("aegis gave no risk state".into()));
        }
    };
    let effective_cap = match state {
        RiskState::Unbudgeted => None,
        _ => Some(
            Msat::new(s.effective_cap_msat)
                .map_err(|_| RiskError::Unavailable("aegis's cap is out of range".into()))?,
        ),
    };
    Ok(RiskStatus {
        state,
        effective_cap,
    })
}

#[async_trait]
impl RiskSource for HttpRisk {
    async fn status(&self, subject: Subject, id: &str) -> Result<RiskStatus, RiskError> {
        // Ids are validated to [A-Za-z0-9._:-], which needs no escaping in a query.
        let (status, bytes) = self
            .peer
            .get(&format!(
                "/v1/aegis/risk_budget/status?subject_type={}&subject_id={id}",
                subject.as_str()
            ))
            .await
            .map_err(|e| RiskError::Unavailable(e.to_string()))?;
        if status.as_u16() == 404 {
            // No budget for the subject (or an Aegis that predates the route): nothing to cap.
            return Ok(RiskStatus {
                state: RiskState::Unbudgeted,
                effective_cap: None,
            });
        }
        if !status.is_success() {
            return Err(RiskError::Unavailable(format!("status {status}")));
        }
        let r: aegis::RiskBudgetResponse = oa_service::parse_json(&bytes)
            .map_err(|_| RiskError::Unavailable("an answer outside the contract".into()))?;
        let s = r
            .status
            .ok_or_else(|| RiskError::Unavailable("an answer without a status".into()))?;
        from_proto(&s)
    }
}

/// A reading and when it was taken (service clock, ms).
type Cached = (u64, Result<RiskStatus, RiskError>);

/// Reads and caches risk for decisions.
pub struct Assessor {
    source: Arc<dyn RiskSource>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<(Subject, String), Cached>>,
}

impl Assessor {
    pub fn new(source: Arc<dyn RiskSource>, clock: Arc<dyn Clock>) -> Self {
        Self {
            source,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn read(
        &self,
        subject: Subject,
        id: &str,
        cache_ms: u64,
    ) -> Result<RiskStatus, RiskError> {
        let now = self.clock.now_ms();
        let key = (subject, id.to_owned());
        if cache_ms > 0
            && let Some((at, r)) = self
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
            && now.saturating_sub(*at) < cache_ms
        {
            return r.clone();
        }
        let r = self.source.status(subject, id).await;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (now, r.clone()));
        r
    }

    /// The risk view of a payment by `agent` (of `org`) under `policy`.
    pub async fn view(&self, policy: &Policy, agent: &str, org: Option<&str>) -> RiskView {
        if policy.risk.source == RiskSourceKind::None {
            return RiskView::not_consulted();
        }
        let cache_ms = policy.risk.cache_ms;
        let mut readings = vec![(
            Subject::Agent,
            agent,
            self.read(Subject::Agent, agent, cache_ms).await,
        )];
        if let Some(org) = org {
            readings.push((
                Subject::Org,
                org,
                self.read(Subject::Org, org, cache_ms).await,
            ));
        }
        let mut degraded = Vec::new();
        let mut cap: Option<Msat> = None;
        let mut failure = None;
        for (subject, id, r) in &readings {
            match r {
                Ok(s) => {
                    if matches!(s.state, RiskState::Elevated | RiskState::Exhausted) {
                        degraded.push(format!(
                            "{} {id} is {}",
                            subject.as_str(),
                            if s.state == RiskState::Elevated {
                                "elevated"
                            } else {
                                "exhausted"
                            }
                        ));
                    }
                    if let Some(c) = s.effective_cap {
                        cap = Some(cap.map_or(c, |x| x.min(c)));
                    }
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if let Some(e) = failure {
            let level = match policy.risk.on_unavailable {
                Assume::Normal => RiskLevel::Normal,
                Assume::Degraded | Assume::Deny => RiskLevel::Degraded,
            };
            return RiskView {
                level,
                label: "unavailable",
                aegis_cap: cap,
                unavailable: true,
                detail: format!(
                    "risk unavailable ({e}); assumed {:?}",
                    policy.risk.on_unavailable
                )
                .to_lowercase(),
            };
        }
        if degraded.is_empty() {
            RiskView {
                level: RiskLevel::Normal,
                label: "normal",
                aegis_cap: cap,
                unavailable: false,
                detail: String::new(),
            }
        } else {
            RiskView {
                level: RiskLevel::Degraded,
                label: "degraded",
                aegis_cap: cap,
                unavailable: false,
                detail: format!("risk degraded: {}", degraded.join(", ")),
            }
        }
    }
}
