//! Behaviour of token minting and verification, the axum extractor and the tonic interceptors.

// Helpers outside #[test] functions unwrap too; clippy.toml covers only the tests themselves.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use http::{Request, StatusCode};
use oa_auth::grpc::{BearerInterceptor, interceptor, require_scope};
use oa_auth::{
    AuthError, Authenticated, Claims, MAX_LEEWAY, SigningIdentity, TokenSource, TrustStore,
    Verifier, unix_now_secs,
};
use serde_json::{Value, json};
use tonic::service::Interceptor;
use tower::ServiceExt;

const AUD: &str = "hydra";
const NOW: u64 = 1_780_000_000;

fn treasury() -> SigningIdentity {
    SigningIdentity::generate("treasury-1", "treasury", "svc:treasury").unwrap()
}

fn verifier_for(id: &SigningIdentity, allowed: &[&str], leeway: Duration) -> Verifier {
    let trust = TrustStore::new()
        .with(id.trust_entry(allowed.iter().copied()))
        .unwrap();
    Verifier::new(trust, AUD, leeway)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A compact JWS with arbitrary header and claims, signed with `key` (so tests can make tokens
/// that `mint` refuses to make).
fn sign_raw(key: &SigningKey, header: Value, claims: Value) -> String {
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn standard_claims(now: u64) -> Value {
    json!({"iss":"treasury","sub":"svc:treasury","aud":AUD,"scope":"hydra:liquidity",
           "iat":now,"nbf":now,"exp":now + 300,"jti":"j1"})
}

#[test]
fn valid_token_verifies_with_all_claims() {
    let id = treasury();
    let v = verifier_for(&id, &["hydra:*"], Duration::from_secs(5));
    let token = id
        .mint_at(
            AUD,
            &["hydra:liquidity", "hydra:pay"],
            Duration::from_secs(300),
            NOW,
        )
        .unwrap();
    let c = v.verify_at(&token, NOW + 10).unwrap();
    assert_eq!(c.kid, "treasury-1");
    assert_eq!(c.iss, "treasury");
    assert_eq!(c.sub, "svc:treasury");
    assert_eq!(c.aud, AUD);
    assert_eq!(c.scopes, vec!["hydra:liquidity", "hydra:pay"]);
    assert_eq!(c.iat, NOW);
    assert_eq!(c.exp, NOW + 300);
    assert!(!c.jti.is_empty());
    assert!(c.has_scope("hydra:pay"));
    assert!(!c.has_scope("hydra:*"));
    assert!(c.require_scope("hydra:liquidity").is_ok());
    assert!(matches!(
        c.require_scope("wallet:pay"),
        Err(AuthError::MissingScope(s)) if s == "wallet:pay"
    ));
    // Alternatives: any one is enough; a refusal names the route's own scope.
    assert!(c.require_any("hydra:read", &["hydra:pay"]).is_ok());
    assert!(c.require_any("hydra:liquidity", &[]).is_ok());
    assert!(matches!(
        c.require_any("wallet:pay", &["wallet:read", "hydra:*"]),
        Err(AuthError::MissingScope(s)) if s == "wallet:pay"
    ));
}

#[test]
fn header_is_eddsa_with_kid_and_scope_is_space_separated() {
    let id = treasury();
    let token = id
        .mint(AUD, &["hydra:a", "hydra:b"], Duration::from_secs(60))
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], "treasury-1");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["scope"], "hydra:a hydra:b");
    for k in ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"] {
        assert!(claims.get(k).is_some(), "missing {k}");
    }
    // Two tokens minted in the same second still differ by jti.
    let again = id
        .mint(AUD, &["hydra:a", "hydra:b"], Duration::from_secs(60))
        .unwrap();
    assert_ne!(token, again);
}

#[test]
fn token_expired_beyond_leeway_is_refused() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::from_secs(30));
    let token = id
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    let err = v.verify_at(&token, NOW + 60 + 30).unwrap_err();
    assert!(matches!(err, AuthError::Expired));
    assert_eq!(err.code(), "TOKEN_EXPIRED");
    assert_eq!(err.http_status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn token_expired_within_leeway_is_accepted() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::from_secs(30));
    let token = id
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    assert!(v.verify_at(&token, NOW + 60 + 29).is_ok());
}

/// A token verified once is remembered, but every later use still checks its times.
#[test]
fn a_remembered_token_still_expires_and_is_not_valid_before_its_time() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::from_secs(5));
    let token = id
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    let first = v.verify_at(&token, NOW + 1).unwrap();
    assert_eq!(v.remembered(), 1);
    assert_eq!(v.verify_at(&token, NOW + 2).unwrap(), first);
    assert!(matches!(
        v.verify_at(&token, NOW + 60 + 5),
        Err(AuthError::Expired)
    ));
    // A clock that moved back before the token's issue time (beyond the leeway).
    assert!(matches!(
        v.verify_at(&token, NOW - 10),
        Err(AuthError::NotYetValid)
    ));
    assert_eq!(v.verify_at(&token, NOW + 3).unwrap(), first);
}

/// Refused tokens are never remembered, and the memory of verified ones stays bounded.
#[test]
fn only_verified_tokens_are_remembered_and_the_memory_is_bounded() {
    let id = treasury();
    let v = verifier_for(&id, &["hydra:*"], Duration::from_secs(5));
    let other = verifier_for(&treasury(), &["hydra:*"], Duration::from_secs(5));
    let foreign = treasury()
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    assert!(v.verify_at(&foreign, NOW).is_err());
    assert_eq!(v.remembered(), 0);
    let wrong_scope = id
        .mint_at(AUD, &["treasury:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    assert!(v.verify_at(&wrong_scope, NOW).is_err());
    assert_eq!(v.remembered(), 0);
    // A token remembered by one verifier means nothing to another with other keys.
    let token = id
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    v.verify_at(&token, NOW).unwrap();
    assert!(other.verify_at(&token, NOW).is_err());
    for i in 0..(oa_auth::VERIFIED_CACHE_SIZE as u64 + 10) {
        let t = id
            .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW + i % 3)
            .unwrap();
        v.verify_at(&t, NOW + 3).unwrap();
        assert!(v.remembered() <= oa_auth::VERIFIED_CACHE_SIZE);
    }
}

#[test]
fn token_not_yet_valid_is_refused() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::from_secs(10));
    let token = id
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW + 600)
        .unwrap();
    let err = v.verify_at(&token, NOW).unwrap_err();
    assert!(matches!(err, AuthError::NotYetValid));
    assert_eq!(err.code(), "TOKEN_NOT_YET_VALID");
    // Within the leeway it is accepted (clock skew between hosts).
    assert!(v.verify_at(&token, NOW + 595).is_ok());
}

#[test]
fn nbf_in_the_future_is_refused_even_with_past_iat() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let id = SigningIdentity::from_signing_key("k", "treasury", "svc", key.clone()).unwrap();
    let v = verifier_for(&id, &["*"], Duration::from_secs(0));
    let mut claims = standard_claims(NOW);
    claims["nbf"] = json!(NOW + 100);
    let token = sign_raw(&key, json!({"alg":"EdDSA","kid":"k"}), claims);
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::NotYetValid)
    ));
}

#[test]
fn wrong_audience_is_refused() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = id
        .mint_at("aegis", &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    let err = v.verify_at(&token, NOW).unwrap_err();
    assert!(matches!(err, AuthError::WrongAudience));
    assert_eq!(err.code(), "WRONG_AUDIENCE");
}

#[test]
fn multi_audience_token_is_refused_but_single_element_array_is_accepted() {
    let key = SigningKey::from_bytes(&[8u8; 32]);
    let id = SigningIdentity::from_signing_key("k", "treasury", "svc", key.clone()).unwrap();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let mut claims = standard_claims(NOW);
    claims["aud"] = json!([AUD, "aegis"]);
    let token = sign_raw(&key, json!({"alg":"EdDSA","kid":"k"}), claims.clone());
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::WrongAudience)
    ));
    claims["aud"] = json!([AUD]);
    let token = sign_raw(&key, json!({"alg":"EdDSA","kid":"k"}), claims);
    assert!(v.verify_at(&token, NOW).is_ok());
}

#[test]
fn unknown_kid_is_refused() {
    let id = treasury();
    let stranger = SigningIdentity::generate("stranger-1", "x", "y").unwrap();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = stranger
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    let err = v.verify_at(&token, NOW).unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey));
    assert_eq!(err.http_status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn missing_kid_is_refused() {
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let id = SigningIdentity::from_signing_key("k", "treasury", "svc", key.clone()).unwrap();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = sign_raw(&key, json!({"alg":"EdDSA"}), standard_claims(NOW));
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn signature_by_another_key_under_a_known_kid_is_refused() {
    let id = treasury();
    let impostor = SigningIdentity::generate("treasury-1", "treasury", "svc:treasury").unwrap();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = impostor
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    let err = v.verify_at(&token, NOW).unwrap_err();
    assert!(matches!(err, AuthError::BadSignature));
    assert_eq!(err.code(), "BAD_SIGNATURE");
}

#[test]
fn tampered_payload_is_refused() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = id
        .mint_at(AUD, &["hydra:read"], Duration::from_secs(60), NOW)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("hydra:read hydra:pay");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert!(matches!(
        v.verify_at(&forged, NOW),
        Err(AuthError::BadSignature)
    ));

    // A flipped signature byte is refused too.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert!(matches!(
        v.verify_at(&forged, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn alg_none_token_is_refused() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "kid": "treasury-1", "typ": "JWT"});
        let token = format!("{}.{}.", b64(&header), b64(&standard_claims(NOW)));
        let err = v.verify_at(&token, NOW).unwrap_err();
        assert!(
            matches!(err, AuthError::UnsupportedAlgorithm),
            "{alg}: {err:?}"
        );
    }
    let token = format!(
        "{}.{}",
        b64(&json!({"alg":"none"})),
        b64(&standard_claims(NOW))
    );
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn hs256_token_keyed_with_the_public_key_is_refused() {
    // The classic algorithm-confusion attack: HMAC keyed with the (public) verification key.
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("treasury-1".to_owned());
    let secret = id.verifying_key().to_bytes();
    let token = jsonwebtoken::encode(
        &header,
        &standard_claims(NOW),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    let err = v.verify_at(&token, NOW).unwrap_err();
    assert!(matches!(err, AuthError::UnsupportedAlgorithm));
    assert_eq!(err.http_status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn embedded_jwk_is_ignored_and_crit_is_refused() {
    let trusted = treasury();
    let v = verifier_for(&trusted, &["*"], Duration::ZERO);
    let attacker = SigningKey::from_bytes(&[3u8; 32]);
    let jwk = json!({"kty":"OKP","crv":"Ed25519",
        "x": URL_SAFE_NO_PAD.encode(attacker.verifying_key().as_bytes())});
    let token = sign_raw(
        &attacker,
        json!({"alg":"EdDSA","kid":"treasury-1","jwk":jwk}),
        standard_claims(NOW),
    );
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::BadSignature | AuthError::Malformed(_))
    ));

    let key = SigningKey::from_bytes(&[4u8; 32]);
    let id = SigningIdentity::from_signing_key("k", "treasury", "svc", key.clone()).unwrap();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = sign_raw(
        &key,
        json!({"alg":"EdDSA","kid":"k","crit":["exp"]}),
        standard_claims(NOW),
    );
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn required_claims_and_lifetime_are_enforced() {
    let key = SigningKey::from_bytes(&[5u8; 32]);
    let id = SigningIdentity::from_signing_key("k", "treasury", "svc", key.clone()).unwrap();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    for missing in ["exp", "iat", "iss", "sub", "jti"] {
        let mut claims = standard_claims(NOW);
        claims.as_object_mut().unwrap().remove(missing);
        let token = sign_raw(&key, json!({"alg":"EdDSA","kid":"k"}), claims);
        assert!(
            matches!(v.verify_at(&token, NOW), Err(AuthError::Malformed(_))),
            "{missing}"
        );
    }
    let mut claims = standard_claims(NOW);
    claims["exp"] = json!(NOW + 30 * 24 * 3600);
    let token = sign_raw(&key, json!({"alg":"EdDSA","kid":"k"}), claims);
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn scope_not_allowed_for_key_is_forbidden() {
    let id = treasury();
    let v = verifier_for(&id, &["hydra:*"], Duration::ZERO);
    let token = id
        .mint_at(
            AUD,
            &["hydra:liquidity", "wallet:pay"],
            Duration::from_secs(60),
            NOW,
        )
        .unwrap();
    let err = v.verify_at(&token, NOW).unwrap_err();
    assert!(matches!(&err, AuthError::ScopeNotAllowedForKey(s) if s == "wallet:pay"));
    assert_eq!(err.http_status(), StatusCode::FORBIDDEN);
    assert_eq!(err.code(), "SCOPE_NOT_ALLOWED_FOR_KEY");
}

#[test]
fn leeway_above_the_maximum_is_clamped() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::from_secs(3600));
    assert_eq!(v.leeway(), MAX_LEEWAY);
    let token = id
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    assert!(matches!(
        v.verify_at(&token, NOW + 60 + 120),
        Err(AuthError::Expired)
    ));
}

#[test]
fn mint_refuses_bad_ttl_and_scopes() {
    let id = treasury();
    assert!(matches!(
        id.mint(AUD, &["a:b"], Duration::ZERO),
        Err(AuthError::InvalidTtl { .. })
    ));
    assert!(matches!(
        id.mint(AUD, &["a:b"], Duration::from_secs(24 * 3600 + 1)),
        Err(AuthError::InvalidTtl { .. })
    ));
    for bad in ["", "a b", "hydra:*", "*"] {
        assert!(
            matches!(
                id.mint(AUD, &[bad], Duration::from_secs(60)),
                Err(AuthError::InvalidScope(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        id.mint(AUD, &["a:b", "a:b"], Duration::from_secs(60)),
        Err(AuthError::InvalidScope(_))
    ));
    let none: [&str; 0] = [];
    assert!(id.mint(AUD, &none, Duration::from_secs(60)).is_ok());
}

#[test]
fn garbage_tokens_are_malformed_not_panics() {
    let id = treasury();
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let long = "a".repeat(oa_auth::MAX_TOKEN_LEN + 1);
    for t in ["x", "a.b.c", "..", "a.b.c.d", "!!!.###.$$$", long.as_str()] {
        assert!(
            matches!(v.verify_at(t, NOW), Err(AuthError::Malformed(_))),
            "{t}"
        );
    }
    assert!(matches!(v.verify_at("", NOW), Err(AuthError::MissingToken)));
}

#[test]
fn signing_key_round_trips_through_a_private_pem_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("treasury.pem");
    let id = treasury();
    id.save_pem(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded =
        SigningIdentity::load_pem("treasury-1", "treasury", "svc:treasury", &path).unwrap();
    assert_eq!(loaded.public_key_b64(), id.public_key_b64());
    // A token from the reloaded key verifies under the original's trust entry.
    let v = verifier_for(&id, &["*"], Duration::ZERO);
    let token = loaded
        .mint_at(AUD, &["hydra:pay"], Duration::from_secs(60), NOW)
        .unwrap();
    assert!(v.verify_at(&token, NOW).is_ok());

    assert!(matches!(
        SigningIdentity::from_pkcs8_pem("k", "i", "s", "not a pem"),
        Err(AuthError::Key(_))
    ));
    assert!(matches!(
        SigningIdentity::load_pem("k", "i", "s", dir.path().join("absent.pem")),
        Err(AuthError::Io { .. })
    ));
}

#[test]
fn trust_store_round_trips_through_json_file() {
    let a = treasury();
    let b = SigningIdentity::generate("ops-1", "ops", "svc:ops").unwrap();
    let store = TrustStore::new()
        .with(a.trust_entry(["hydra:*"]))
        .unwrap()
        .with(b.trust_entry(["*"]))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.json");
    store.save(&path).unwrap();
    let loaded = TrustStore::load(&path).unwrap();
    assert_eq!(loaded.len(), 2);
    let entry = loaded.get("treasury-1").unwrap();
    assert_eq!(entry.public_key_b64(), a.public_key_b64());
    assert_eq!(entry.allowed_scopes, vec!["hydra:*"]);
    assert!(entry.allows("hydra:pay"));
    assert!(!entry.allows("wallet:pay"));

    let doc: Value = serde_json::from_str(&store.to_json()).unwrap();
    assert_eq!(doc["keys"][0]["kid"], "ops-1");
    assert_eq!(doc["keys"][1]["public_key"], a.public_key_b64());
}

#[test]
fn trust_store_refuses_invalid_documents() {
    let pk = treasury().public_key_b64();
    let cases = [
        format!(
            r#"{{"keys":[{{"kid":"a","public_key":"{pk}","allowed_scopes":["*"],"extra":1}}]}}"#
        ),
        r#"{"keys":[{"kid":"a","public_key":"AAAA","allowed_scopes":["*"]}]}"#.to_owned(),
        format!(r#"{{"keys":[{{"kid":"a","public_key":"{pk}=","allowed_scopes":["*"]}}]}}"#),
        format!(r#"{{"keys":[{{"kid":"a","public_key":"{pk}","allowed_scopes":["hydra*"]}}]}}"#),
        format!(r#"{{"keys":[{{"kid":"","public_key":"{pk}","allowed_scopes":[]}}]}}"#),
        format!(
            r#"{{"keys":[{{"kid":"a","public_key":"{pk}","allowed_scopes":[]}},{{"kid":"a","public_key":"{pk}","allowed_scopes":[]}}]}}"#
        ),
        // The identity point is a small-order (weak) key.
        format!(
            r#"{{"keys":[{{"kid":"a","public_key":"{}","allowed_scopes":["*"]}}]}}"#,
            URL_SAFE_NO_PAD.encode({
                let mut p = [0u8; 32];
                p[0] = 1;
                p
            })
        ),
        "[]".to_owned(),
    ];
    for doc in cases {
        assert!(
            matches!(TrustStore::from_json(&doc), Err(AuthError::TrustStore(_))),
            "{doc}"
        );
    }
    let ok = format!(
        r#"{{"keys":[{{"kid":"a","name":"treasury","public_key":"{pk}","allowed_scopes":["hydra:*","wallet:read"]}}]}}"#
    );
    assert!(TrustStore::from_json(&ok).is_ok());
}

#[test]
fn secrets_are_absent_from_debug_and_errors() {
    let key = SigningKey::from_bytes(&[0xAB; 32]);
    let id =
        Arc::new(SigningIdentity::from_signing_key("k", "treasury", "svc", key.clone()).unwrap());
    let dbg = format!("{id:?}");
    assert!(dbg.contains("[redacted]"));
    assert!(!dbg.to_lowercase().contains(&"ab".repeat(32)));
    assert!(!dbg.contains(&URL_SAFE_NO_PAD.encode([0xAB; 32])));
    assert!(!dbg.contains("PRIVATE KEY"));

    let source = TokenSource::new(id.clone(), AUD, ["hydra:pay"], Duration::from_secs(60)).unwrap();
    let token = source.token().unwrap();
    assert!(!format!("{source:?}").contains(&token));
    let bearer = BearerInterceptor::from_source(source);
    assert!(!format!("{bearer:?}").contains(&token));

    // No error produced from a token quotes it.
    let other = treasury();
    let v = verifier_for(&other, &["*"], Duration::ZERO);
    let err = v.verify(&token).unwrap_err();
    let sig = token.rsplit('.').next().unwrap();
    assert!(!err.to_string().contains(sig));
    assert!(!format!("{err:?}").contains(sig));
}

// ---- axum ----

#[derive(Clone, FromRef)]
struct AppState {
    verifier: Arc<Verifier>,
}

async fn pay(auth: Authenticated) -> Result<String, AuthError> {
    auth.require_scope("treasury:pay")?;
    Ok(format!("paid for {}", auth.sub))
}

fn app(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/v1/treasury/pay", get(pay))
        .with_state(AppState { verifier })
}

async fn call(app: Router, authorization: Option<String>) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder().uri("/v1/treasury/pay");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, challenge, body)
}

fn caller() -> (SigningIdentity, Arc<Verifier>) {
    let id = SigningIdentity::generate("agent-1", "runtime", "agent:42").unwrap();
    let trust = TrustStore::new()
        .with(id.trust_entry(["treasury:*"]))
        .unwrap();
    (
        id,
        Arc::new(Verifier::new(trust, "treasury", Duration::from_secs(5))),
    )
}

#[tokio::test]
async fn axum_extractor_accepts_a_token_with_the_scope() {
    let (id, v) = caller();
    let token = id
        .mint("treasury", &["treasury:pay"], Duration::from_secs(60))
        .unwrap();
    let (status, _, body) = call(app(v), Some(format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::String("paid for agent:42".into()));
}

#[tokio::test]
async fn axum_extractor_refuses_missing_scope_with_403_json() {
    let (id, v) = caller();
    let token = id
        .mint("treasury", &["treasury:read"], Duration::from_secs(60))
        .unwrap();
    let (status, challenge, body) = call(app(v), Some(format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("treasury:pay")
    );
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer error=\"insufficient_scope\"")
    );
}

#[tokio::test]
async fn axum_extractor_refuses_no_header_with_401_json() {
    let (_, v) = caller();
    let (status, challenge, body) = call(app(v), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    assert!(body["error"]["message"].is_string());
    assert_eq!(challenge.as_deref(), Some("Bearer"));
}

#[tokio::test]
async fn axum_extractor_refuses_expired_and_foreign_tokens_with_401() {
    let (id, v) = caller();
    let old = id
        .mint_at(
            "treasury",
            &["treasury:pay"],
            Duration::from_secs(60),
            unix_now_secs() - 3600,
        )
        .unwrap();
    let (status, _, body) = call(app(v.clone()), Some(format!("Bearer {old}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "TOKEN_EXPIRED");
    assert!(!body.to_string().contains(&old));

    let (status, _, body) = call(app(v.clone()), Some("Basic dXNlcjpwYXNz".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "MALFORMED_TOKEN");

    let other_aud = id
        .mint("hydra", &["treasury:pay"], Duration::from_secs(60))
        .unwrap();
    let (status, _, body) = call(app(v), Some(format!("Bearer {other_aud}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "WRONG_AUDIENCE");
}

// ---- tonic ----

fn grpc_request(authorization: Option<&str>) -> tonic::Request<()> {
    let mut req = tonic::Request::new(());
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().unwrap());
    }
    req
}

fn wallet_side() -> (Arc<SigningIdentity>, Arc<Verifier>) {
    let hydra = Arc::new(SigningIdentity::generate("hydra-1", "hydra", "svc:hydra").unwrap());
    let trust = TrustStore::new()
        .with(hydra.trust_entry(["wallet:*"]))
        .unwrap();
    (
        hydra,
        Arc::new(Verifier::new(
            trust,
            "wallet-executor",
            Duration::from_secs(5),
        )),
    )
}

#[test]
fn tonic_interceptor_accepts_a_valid_token_and_stores_claims() {
    let (hydra, v) = wallet_side();
    let token = hydra
        .mint("wallet-executor", &["wallet:pay"], Duration::from_secs(60))
        .unwrap();
    let mut server = interceptor(v);
    let req = server
        .call(grpc_request(Some(&format!("Bearer {token}"))))
        .unwrap();
    let claims: &Claims = req.extensions().get().unwrap();
    assert_eq!(claims.sub, "svc:hydra");
    assert_eq!(require_scope(&req, "wallet:pay").unwrap().kid, "hydra-1");
    let denied = require_scope(&req, "wallet:read").unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.metadata().get("oa-error-code").unwrap(), "FORBIDDEN");
}

#[test]
fn tonic_interceptor_refuses_missing_and_bad_tokens() {
    let (hydra, v) = wallet_side();
    let mut server = interceptor(v);
    let status = server.call(grpc_request(None)).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let token = hydra
        .mint("treasury", &["wallet:pay"], Duration::from_secs(60))
        .unwrap();
    let status = server
        .call(grpc_request(Some(&format!("Bearer {token}"))))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        status.metadata().get("oa-error-code").unwrap(),
        "WRONG_AUDIENCE"
    );
    assert!(!status.message().contains(&token));

    let token = hydra
        .mint("wallet-executor", &["ops:apply"], Duration::from_secs(60))
        .unwrap();
    let status = server
        .call(grpc_request(Some(&format!("Bearer {token}"))))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // A handler on a service that was not wrapped with the interceptor must not allow.
    let status = require_scope(&grpc_request(None), "wallet:pay").unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[test]
fn bearer_interceptor_attaches_tokens_the_server_accepts() {
    let (hydra, v) = wallet_side();
    let mut client = BearerInterceptor::new(
        hydra,
        "wallet-executor",
        ["wallet:pay"],
        Duration::from_secs(300),
    )
    .unwrap();
    let mut server = interceptor(v);
    let outgoing = client.call(tonic::Request::new(())).unwrap();
    let first = outgoing
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(first.starts_with("Bearer "));
    let accepted = server.call(outgoing).unwrap();
    assert!(require_scope(&accepted, "wallet:pay").is_ok());

    // Cached: the next call reuses the same token.
    let second = client.call(tonic::Request::new(())).unwrap();
    assert_eq!(
        second.metadata().get("authorization").unwrap(),
        first.as_str()
    );
}

#[test]
fn token_source_refreshes_shortly_before_expiry() {
    let (hydra, v) = wallet_side();
    let ttl = Duration::from_secs(300);
    let source = TokenSource::new(hydra, "wallet-executor", ["wallet:read"], ttl).unwrap();
    let t0 = source.token_at(NOW).unwrap();
    assert_eq!(source.token_at(NOW + 200).unwrap(), t0);
    let margin = oa_auth::TOKEN_REFRESH_MARGIN.as_secs();
    let t1 = source.token_at(NOW + 300 - margin).unwrap();
    assert_ne!(t1, t0);
    let c = v.verify_at(&t1, NOW + 300 - margin).unwrap();
    assert_eq!(c.exp, NOW + 600 - margin);
    // Clones share the cache.
    assert_eq!(source.clone().token_at(NOW + 300 - margin + 1).unwrap(), t1);
}

#[test]
fn token_source_refuses_bad_configuration_up_front() {
    let (hydra, _) = wallet_side();
    assert!(matches!(
        TokenSource::new(hydra.clone(), "w", ["bad scope"], Duration::from_secs(60)),
        Err(AuthError::InvalidScope(_))
    ));
    assert!(matches!(
        TokenSource::new(hydra, "w", ["wallet:pay"], Duration::from_secs(48 * 3600)),
        Err(AuthError::InvalidTtl { .. })
    ));
}

#[test]
fn error_statuses_and_codes_are_stable() {
    let cases: Vec<(AuthError, u16, &str)> = vec![
        (AuthError::MissingToken, 401, "UNAUTHENTICATED"),
        (AuthError::Malformed("x"), 401, "MALFORMED_TOKEN"),
        (
            AuthError::UnsupportedAlgorithm,
            401,
            "UNSUPPORTED_ALGORITHM",
        ),
        (AuthError::UnknownKey, 401, "UNKNOWN_KEY"),
        (AuthError::BadSignature, 401, "BAD_SIGNATURE"),
        (AuthError::Expired, 401, "TOKEN_EXPIRED"),
        (AuthError::NotYetValid, 401, "TOKEN_NOT_YET_VALID"),
        (AuthError::WrongAudience, 401, "WRONG_AUDIENCE"),
        (
            AuthError::ScopeNotAllowedForKey("a:b".into()),
            403,
            "SCOPE_NOT_ALLOWED_FOR_KEY",
        ),
        (AuthError::MissingScope("a:b".into()), 403, "FORBIDDEN"),
        (AuthError::Key("x".into()), 500, "INTERNAL"),
    ];
    for (err, status, code) in cases {
        assert_eq!(err.http_status().as_u16(), status, "{err}");
        assert_eq!(err.code(), code);
    }
    assert_eq!(
        AuthError::Key("secret detail".into()).public_message(),
        "internal error"
    );
}
