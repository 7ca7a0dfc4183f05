//! `POST /v1/routing/score`: ranks candidate routes and the credit-envelope rail for a payment
//! under a named policy (the rule is `scoring`), records the decision with its inputs and issues a
//! `routing_decision` receipt.
//!
//! **What it learns from.** The executor's custody contract reports a payment's outcome but not
//! the route it took, so Hydra learns from decisions that name the payment: when a payment whose
//! hash a decision named reaches a terminal state (a liquidity pay or an envelope settlement), the
//! decision's top-ranked route is taken as the route used, and the outcome is observed on it
//! (`scoring::Knowledge::observe`), in the same transaction as the payment's terminal state. A
//! success proves each hop carried the amount. A failure is attributed only on a single-hop route;
//! on a longer route Hydra cannot know which hop failed, so it learns nothing rather than blame
//! the wrong channel. Each decision teaches once.
//!
//! **Envelope rail.** Its success estimate is `(settled + 1) / (settled + lost + 2)` in ppm over
//! ended envelopes (lost = defaulted or expired), of the named agent or of all agents (Laplace
//! smoothing: no history is an even chance, and each outcome moves it).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use oa_money::Msat;
use oa_proto::hydra;
use oa_receipts::ReceiptDraft;
use oa_service::Clock;
use oa_store::{
    Db,
    idempotency::{self, Claim},
    receipt_log::ReceiptLog,
};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::error::corrupt;
use crate::{
    error::HydraError,
    scoring::{self, Basis, Candidate, Hop, Knowledge, Policy, Scored},
    store::{credit as credit_store, routing as store},
    validate::{self, invalid},
};

pub const RECEIPT_SCHEMA: &str = "oa.hydra.routing_decision_receipt.v1";
/// Longest candidate id.
pub const MAX_CANDIDATE_ID_LEN: usize = 64;
const PPM: u64 = scoring::PPM;

pub struct Routing {
    pub db: Db,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    /// How fast learned bounds fade back to the channel's capacity.
    pub half_life_ms: u64,
}

#[derive(Serialize)]
struct InputHop {
    chan_id: String,
    capacity_msat: Msat,
}

#[derive(Serialize)]
struct InputCandidate<'a> {
    candidate_id: &'a str,
    rail: &'static str,
    fee_msat: Msat,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hops: Vec<InputHop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate_ppm: Option<String>,
}

#[derive(Serialize)]
struct InputBounds {
    min_msat: Msat,
    max_msat: Msat,
    observed_at_ms: String,
}

/// Everything the ranking depended on. Integers are strings (as in receipts), so the SHA-256 of
/// its RFC 8785 form is reproducible in any language.
#[derive(Serialize)]
struct Inputs<'a> {
    now_ms: String,
    amount_msat: Msat,
    policy: &'static str,
    half_life_ms: String,
    candidates: Vec<InputCandidate<'a>>,
    bounds: BTreeMap<String, InputBounds>,
}

#[derive(Serialize)]
struct RankedEntry<'a> {
    rank: String,
    candidate_id: &'a str,
    rail: &'static str,
    fee_msat: Msat,
    success_ppm: String,
    cost_msat: Msat,
    reachable: bool,
}

#[derive(Serialize)]
struct EstimateBody {
    settled: String,
    defaulted: String,
    success_ppm: String,
}

#[derive(Serialize)]
struct DecisionBody<'a> {
    decision_id: &'a str,
    policy: &'static str,
    amount_msat: Msat,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_hash: Option<&'a str>,
    /// The top-ranked reachable candidate, or "" when none is reachable.
    chosen: &'a str,
    ranking: Vec<RankedEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope_estimate: Option<EstimateBody>,
    inputs_sha256: String,
}

/// Laplace-smoothed success estimate of the envelope rail, in ppm.
pub fn envelope_estimate_ppm(settled: u64, lost: u64) -> u32 {
    let num = u128::from(settled) + 1;
    let den = u128::from(settled) + u128::from(lost) + 2;
    u32::try_from(num * u128::from(PPM) / den).unwrap_or(u32::MAX)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A validated request.
struct Request {
    amount: Msat,
    policy: Policy,
    candidates: Vec<Candidate>,
    envelope_agent: Option<String>,
    payment_hash: Option<String>,
}

fn check(req: &hydra::RoutingScoreRequest) -> Result<Request, HydraError> {
    idempotency::validate_key(&req.idempotency_key)?;
    let amount = validate::positive_msat("INVALID_AMOUNT", "amount_msat", req.amount_msat)?;
    let policy = Policy::parse(&req.policy).ok_or_else(|| {
        invalid(
            "INVALID_POLICY",
            "policy must be lowest_cost, balanced or reliability_first",
        )
    })?;
    let total = req.routes.len() + usize::from(req.envelope_rail.is_some());
    if total == 0 || total > scoring::MAX_CANDIDATES {
        return Err(invalid(
            "INVALID_CANDIDATES",
            format!(
                "give 1 to {} candidates (routes plus the envelope rail)",
                scoring::MAX_CANDIDATES
            ),
        ));
    }
    let mut ids = BTreeSet::new();
    let mut candidates = Vec::with_capacity(total);
    for r in &req.routes {
        validate::id(
            "INVALID_CANDIDATES",
            "candidate_id",
            &r.candidate_id,
            MAX_CANDIDATE_ID_LEN,
        )?;
        if r.hops.is_empty() || r.hops.len() > scoring::MAX_HOPS {
            return Err(invalid(
                "INVALID_ROUTE",
                format!(
                    "route {} must have 1 to {} hops",
                    r.candidate_id,
                    scoring::MAX_HOPS
                ),
            ));
        }
        let hops = r
            .hops
            .iter()
            .map(|h| {
                Ok(Hop {
                    chan_id: h.chan_id,
                    capacity: validate::positive_msat(
                        "INVALID_ROUTE",
                        "capacity_msat",
                        h.capacity_msat,
                    )?,
                })
            })
            .collect::<Result<Vec<_>, HydraError>>()?;
        candidates.push(Candidate {
            id: r.candidate_id.clone(),
            fee: validate::msat("INVALID_ROUTE", "fee_msat", r.fee_msat)?,
            basis: Basis::Route(hops),
        });
    }
    let mut envelope_agent = None;
    if let Some(e) = &req.envelope_rail {
        validate::id(
            "INVALID_CANDIDATES",
            "envelope_rail.candidate_id",
            &e.candidate_id,
            MAX_CANDIDATE_ID_LEN,
        )?;
        if !e.agent_id.is_empty() {
            validate::agent_id(&e.agent_id)?;
            envelope_agent = Some(e.agent_id.clone());
        }
        candidates.push(Candidate {
            id: e.candidate_id.clone(),
            fee: validate::msat("INVALID_CANDIDATES", "envelope_rail.fee_msat", e.fee_msat)?,
            // Filled in from the history once the transaction is open.
            basis: Basis::Estimate(0),
        });
    }
    for c in &candidates {
        if !ids.insert(c.id.as_str()) {
            return Err(invalid(
                "INVALID_CANDIDATES",
                format!("candidate_id {} appears twice", c.id),
            ));
        }
    }
    let payment_hash = match req.payment_hash.as_str() {
        "" => None,
        h if is_hex32(h) => Some(h.to_owned()),
        _ => {
            return Err(invalid(
                "INVALID_PAYMENT_HASH",
                "payment_hash must be 64 lowercase hex digits",
            ));
        }
    };
    Ok(Request {
        amount,
        policy,
        candidates,
        envelope_agent,
        payment_hash,
    })
}

fn rail(c: &Candidate) -> &'static str {
    match c.basis {
        Basis::Route(_) => "route",
        Basis::Estimate(_) => "envelope",
    }
}

impl Routing {
    /// Learned bounds of `chan_ids` (sorted, distinct), as a [`Knowledge`].
    async fn knowledge(
        &self,
        conn: &mut AnyConnection,
        chan_ids: &[u64],
        lock: bool,
    ) -> Result<Knowledge, HydraError> {
        let mut k = Knowledge::new(self.half_life_ms);
        for (chan, b) in store::bounds(conn, chan_ids, lock).await? {
            k.bounds.insert(chan, b);
        }
        Ok(k)
    }

    pub async fn score(
        &self,
        caller: &str,
        req: hydra::RoutingScoreRequest,
    ) -> Result<hydra::RoutingScoreResponse, HydraError> {
        let Request {
            amount,
            policy,
            mut candidates,
            envelope_agent,
            payment_hash,
        } = check(&req)?;
        let now = self.clock.now_ms();
        let scope = format!("hydra.routing.score/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(HydraError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                return oa_service::parse_json(response.as_bytes())
                    .map_err(|_| corrupt("stored routing response"));
            }
            Claim::InProgress { .. } => return Err(HydraError::RequestInProgress),
            Claim::New => {}
        }
        let chan_ids: Vec<u64> = candidates
            .iter()
            .filter_map(|c| match &c.basis {
                Basis::Route(hops) => Some(hops.iter().map(|h| h.chan_id)),
                Basis::Estimate(_) => None,
            })
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let knowledge = self.knowledge(&mut tx, &chan_ids, false).await?;
        let mut estimate = None;
        if req.envelope_rail.is_some() {
            let (settled, lost) =
                credit_store::outcome_counts(&mut tx, envelope_agent.as_deref()).await?;
            let ppm = envelope_estimate_ppm(settled, lost);
            for c in &mut candidates {
                if let Basis::Estimate(p) = &mut c.basis {
                    *p = ppm;
                }
            }
            estimate = Some((settled, lost, ppm));
        }
        let ranked: Vec<Scored> = scoring::rank(policy, amount, &candidates, &knowledge, now);
        let by_id: BTreeMap<&str, &Candidate> =
            candidates.iter().map(|c| (c.id.as_str(), c)).collect();
        let chosen = ranked.first().filter(|s| s.reachable);
        let chosen_route = match chosen.and_then(|s| by_id.get(s.id.as_str())) {
            Some(Candidate {
                basis: Basis::Route(hops),
                ..
            }) => Some(serde_json::to_string(hops).map_err(|e| corrupt(&e.to_string()))?),
            _ => None,
        };
        let inputs = Inputs {
            now_ms: now.to_string(),
            amount_msat: amount,
            policy: policy.as_str(),
            half_life_ms: self.half_life_ms.to_string(),
            candidates: candidates
                .iter()
                .map(|c| InputCandidate {
                    candidate_id: &c.id,
                    rail: rail(c),
                    fee_msat: c.fee,
                    hops: match &c.basis {
                        Basis::Route(hops) => hops
                            .iter()
                            .map(|h| InputHop {
                                chan_id: h.chan_id.to_string(),
                                capacity_msat: h.capacity,
                            })
                            .collect(),
                        Basis::Estimate(_) => Vec::new(),
                    },
                    estimate_ppm: match c.basis {
                        Basis::Estimate(p) => Some(p.to_string()),
                        Basis::Route(_) => None,
                    },
                })
                .collect(),
            bounds: knowledge
                .bounds
                .iter()
                .map(|(chan, b)| {
                    (
                        chan.to_string(),
                        InputBounds {
                            min_msat: b.min,
                            max_msat: b.max,
                            observed_at_ms: b.observed_at_ms.to_string(),
                        },
                    )
                })
                .collect(),
        };
        let inputs_sha256 = idempotency::fingerprint(&inputs)?;
        let decision_id = format!("rd_{}", uuid::Uuid::now_v7().simple());
        let ranking: Vec<hydra::ScoredCandidate> = ranked
            .iter()
            .enumerate()
            .map(|(i, s)| hydra::ScoredCandidate {
                rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                candidate_id: s.id.clone(),
                rail: by_id.get(s.id.as_str()).map_or("route", |c| rail(c)).into(),
                fee_msat: s.fee.as_u64(),
                success_ppm: u32::try_from(s.success_ppm).unwrap_or(u32::MAX),
                cost_msat: s.cost.as_u64(),
                reachable: s.reachable,
            })
            .collect();
        let body = DecisionBody {
            decision_id: &decision_id,
            policy: policy.as_str(),
            amount_msat: amount,
            payment_hash: payment_hash.as_deref(),
            chosen: chosen.map_or("", |s| s.id.as_str()),
            ranking: ranked
                .iter()
                .enumerate()
                .map(|(i, s)| RankedEntry {
                    rank: (i + 1).to_string(),
                    candidate_id: &s.id,
                    rail: by_id.get(s.id.as_str()).map_or("route", |c| rail(c)),
                    fee_msat: s.fee,
                    success_ppm: s.success_ppm.to_string(),
                    cost_msat: s.cost,
                    reachable: s.reachable,
                })
                .collect(),
            envelope_estimate: estimate.map(|(s, l, p)| EstimateBody {
                settled: s.to_string(),
                defaulted: l.to_string(),
                success_ppm: p.to_string(),
            }),
            inputs_sha256,
        };
        store::insert_decision(
            &mut tx,
            &store::DecisionRow {
                decision_id: decision_id.clone(),
                caller: caller.to_owned(),
                policy: policy.as_str().to_owned(),
                amount_msat: amount.as_u64(),
                payment_hash: payment_hash.clone(),
                inputs: serde_json::to_string(&inputs).map_err(|e| corrupt(&e.to_string()))?,
                ranking: serde_json::to_string(&body.ranking)
                    .map_err(|e| corrupt(&e.to_string()))?,
                chosen_candidate_id: chosen.map(|s| s.id.clone()),
                chosen_route,
                created_at_ms: now,
            },
        )
        .await?;
        let receipt = self
            .log
            .append(
                &mut tx,
                ReceiptDraft {
                    schema: RECEIPT_SCHEMA.into(),
                    receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
                    idempotency_key: req.idempotency_key.clone(),
                    links: vec![],
                    body: oa_receipts::body_from(&body)?,
                },
                now,
            )
            .await?;
        store::set_receipt(&mut tx, &decision_id, &receipt.hash.to_string()).await?;
        let response = hydra::RoutingScoreResponse {
            decision_id,
            policy: policy.as_str().into(),
            amount_msat: amount.as_u64(),
            ranking,
            envelope_estimate: estimate.map(|(settled, defaulted, success_ppm)| {
                hydra::EnvelopeEstimate {
                    settled,
                    defaulted,
                    success_ppm,
                }
            }),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        let json = serde_json::to_string(&response).map_err(|e| corrupt(&e.to_string()))?;
        idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Learns from the terminal outcome of a payment of `amount` with `payment_hash`, over the
    /// route the latest decision naming it chose (module docs). Runs in the caller's transaction,
    /// the one that records the payment's terminal state.
    pub async fn learn(
        &self,
        conn: &mut AnyConnection,
        payment_hash: &str,
        amount: Msat,
        succeeded: bool,
        now_ms: u64,
    ) -> Result<(), HydraError> {
        let Some(route) = store::claim_lesson(conn, payment_hash, now_ms).await? else {
            return Ok(());
        };
        let hops: Vec<Hop> =
            serde_json::from_str(&route).map_err(|e| corrupt(&format!("chosen route: {e}")))?;
        let failed_at = match (succeeded, hops.len()) {
            (true, _) => None,
            (false, 1) => Some(0),
            // The failing hop of a longer route is unknown: nothing to learn.
            (false, _) => return Ok(()),
        };
        let mut chan_ids: Vec<u64> = hops.iter().map(|h| h.chan_id).collect();
        chan_ids.sort_unstable();
        chan_ids.dedup();
        let mut k = self.knowledge(conn, &chan_ids, true).await?;
        k.observe(&hops, amount, failed_at, now_ms);
        for chan in &chan_ids {
            if let Some(b) = k.bounds.get(chan) {
                store::put_bounds(conn, *chan, b).await?;
            }
        }
        Ok(())
    }

    /// The learned bounds of one channel, after decay, for a hop of `capacity`.
    pub async fn bounds_of(
        &self,
        chan_id: u64,
        capacity: Msat,
    ) -> Result<(Msat, Msat), HydraError> {
        let mut conn = self.db.reader().await?;
        let k = self.knowledge(&mut conn, &[chan_id], false).await?;
        Ok(k.bounds(&Hop { chan_id, capacity }, self.clock.now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_estimate_is_laplace_smoothed() {
        assert_eq!(envelope_estimate_ppm(0, 0), 500_000);
        assert_eq!(envelope_estimate_ppm(2, 0), 750_000);
        assert_eq!(envelope_estimate_ppm(1, 1), 500_000);
        // 98 settled, 0 lost: 99 / 100.
        assert_eq!(envelope_estimate_ppm(98, 0), 990_000);
        // 0 settled, 1 lost: 1 / 3 = 333 333.3 -> 333 333.
        assert_eq!(envelope_estimate_ppm(0, 1), 333_333);
    }
}
