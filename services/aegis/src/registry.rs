//! The verifier registry: who may give signed verdicts on heterogeneous verifications, under which
//! key, in which independence family, and how each behaves in the simulation. Operators register
//! and disable verifiers (scope `aegis:admin`); a disabled verifier's verdicts are refused from
//! then on (runbook: a verifier compromised).

use oa_proto::aegis;
use oa_store::journal;

use crate::{
    error::{AegisError, invalid},
    quorum,
    service::{Aegis, claim, complete},
    sim::{Behaviour, Profile, Score},
    store::{self, VerifierRow},
    validate,
};

/// The journal topic of registry changes.
pub const TOPIC: &str = "aegis.verifiers";
/// Most verifiers listed (the registry is operator-curated and small).
pub const MAX_VERIFIERS: u32 = 1_000;

pub fn to_verifier(v: &VerifierRow, score: &Score) -> aegis::Verifier {
    aegis::Verifier {
        verifier_id: v.verifier_id.clone(),
        public_key: v.public_key.clone(),
        family: v.family.clone(),
        active: v.active,
        sim: v.sim.map(|p| aegis::SimProfile {
            behaviour: p.behaviour.to_proto().into(),
            seed: p.seed,
            noise_ppm: p.noise_ppm,
        }),
        weight_ppm: quorum::weight_ppm(score),
        disabled_reason: v.disabled_reason.clone().unwrap_or_default(),
        registered_at_ms: v.registered_at_ms,
        updated_at_ms: v.updated_at_ms,
    }
}

fn profile(p: Option<&aegis::SimProfile>) -> Result<Option<Profile>, AegisError> {
    let Some(p) = p else { return Ok(None) };
    let b: aegis::SimBehaviour =
        validate::enum_value("INVALID_SIM_PROFILE", "sim.behaviour", p.behaviour)?;
    let Some(behaviour) = Behaviour::from_proto(b) else {
        if p.seed != 0 || p.noise_ppm != 0 {
            return Err(invalid(
                "INVALID_SIM_PROFILE",
                "sim.seed and sim.noise_ppm need a sim.behaviour",
            ));
        }
        return Ok(None);
    };
    if p.noise_ppm > 1_000_000 {
        return Err(invalid(
            "INVALID_SIM_PROFILE",
            "sim.noise_ppm is at most 1000000",
        ));
    }
    if behaviour != Behaviour::Noisy && p.noise_ppm != 0 {
        return Err(invalid(
            "INVALID_SIM_PROFILE",
            "sim.noise_ppm applies to the noisy behaviour only",
        ));
    }
    Ok(Some(Profile {
        behaviour,
        seed: p.seed,
        noise_ppm: p.noise_ppm,
    }))
}

impl Aegis {
    /// `POST /v1/aegis/verifiers`.
    pub async fn register_verifier(
        &self,
        caller: &str,
        req: aegis::RegisterVerifierRequest,
    ) -> Result<aegis::VerifierResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate::id(
            "INVALID_VERIFIER_ID",
            "verifier_id",
            &req.verifier_id,
            validate::MAX_ID_LEN,
        )?;
        if !quorum::valid_public_key(&req.public_key) {
            return Err(invalid(
                "INVALID_PUBLIC_KEY",
                "public_key must be a BIP340 x-only secp256k1 key: 64 lowercase hex digits",
            ));
        }
        validate::name("INVALID_FAMILY", "family", &req.family)?;
        let sim = profile(req.sim.as_ref())?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.verifiers/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let row = VerifierRow {
            verifier_id: req.verifier_id.clone(),
            public_key: req.public_key.clone(),
            family: req.family.clone(),
            active: true,
            sim,
            disabled_reason: None,
            registered_by: caller.to_owned(),
            registered_at_ms: now,
            updated_at_ms: now,
        };
        if !store::insert_verifier(&mut tx, &row).await? {
            return Err(AegisError::VerifierExists);
        }
        let score = store::scores(&mut tx, Some(&row.verifier_id))
            .await?
            .remove(&row.verifier_id)
            .unwrap_or_default();
        journal::append(
            &mut tx,
            TOPIC,
            "verifier_registered",
            &serde_json::json!({"verifier_id": row.verifier_id, "family": row.family,
                "public_key": row.public_key, "registered_by": caller}),
            now,
        )
        .await?;
        let response = aegis::VerifierResponse {
            verifier: Some(to_verifier(&row, &score)),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/aegis/verifiers/{id}/disable`.
    pub async fn disable_verifier(
        &self,
        caller: &str,
        id: &str,
        req: aegis::DisableVerifierRequest,
    ) -> Result<aegis::VerifierResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate::id(
            "INVALID_VERIFIER_ID",
            "verifier id",
            id,
            validate::MAX_ID_LEN,
        )?;
        validate::text(
            "INVALID_REASON",
            "reason",
            &req.reason,
            1,
            validate::MAX_REASON_LEN,
        )?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.verifiers.disable/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&(id, &req))?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        if !store::disable_verifier(&mut tx, id, &req.reason, now).await? {
            return Err(match store::get_verifier(&mut tx, id).await? {
                None => AegisError::VerifierNotFound,
                Some(_) => AegisError::VerifierDisabled,
            });
        }
        let row = store::get_verifier(&mut tx, id)
            .await?
            .ok_or(AegisError::VerifierNotFound)?;
        let score = store::scores(&mut tx, Some(id))
            .await?
            .remove(id)
            .unwrap_or_default();
        journal::append(
            &mut tx,
            TOPIC,
            "verifier_disabled",
            &serde_json::json!({"verifier_id": id, "reason": req.reason, "disabled_by": caller}),
            now,
        )
        .await?;
        let response = aegis::VerifierResponse {
            verifier: Some(to_verifier(&row, &score)),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `GET /v1/aegis/verifiers`.
    pub async fn list_verifiers(&self) -> Result<aegis::ListVerifiersResponse, AegisError> {
        let mut conn = self.conn().await?;
        let rows = store::list_verifiers(&mut conn, MAX_VERIFIERS).await?;
        let scores = store::scores(&mut conn, None).await?;
        Ok(aegis::ListVerifiersResponse {
            verifiers: rows
                .iter()
                .map(|v| to_verifier(v, &scores.get(&v.verifier_id).copied().unwrap_or_default()))
                .collect(),
        })
    }
}
