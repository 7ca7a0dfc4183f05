//! The receipt object, drafting and sealing, and single-receipt verification.
//!
//! A service fills in a [`ReceiptDraft`] (what happened) and [`ReceiptDraft::seal`]s it with its
//! key at a position of its log (who says so and where). Sealing validates the draft, hashes the
//! RFC 8785 canonical JSON of everything except `hash` and `signature`, and signs the hash.
//! [`Receipt::verify`] redoes all of it from the receipt alone.
//!
//! Validation is the same on both sides, so a receipt that seals also verifies, and a verifier
//! refuses exactly what an honest issuer would have refused to sign.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ReceiptError;
use crate::hash::{Hash, decode_lower_hex};
use crate::key::{ReceiptKey, verify_signature};

/// Longest accepted `schema`. Real schemas are about 40 bytes; this leaves room while keeping
/// them displayable on one line.
pub const MAX_SCHEMA_LEN: usize = 128;

/// Longest accepted `issuer.service` name, and of each schema segment. Service names are short
/// identifiers like `wallet-executor`.
pub const MAX_SERVICE_LEN: usize = 64;

/// Longest accepted `receipt_id`. Enough for a UUID or a prefixed ULID with room to spare.
pub const MAX_RECEIPT_ID_LEN: usize = 128;

/// Longest accepted `idempotency_key`. Keys often come from clients (HTTP `Idempotency-Key`), so
/// this matches the limit a service would put on that header.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Most links one receipt may carry. Real receipts link one to three others; a bound keeps the
/// export verifier's pending-link set proportional to the receipt count.
pub const MAX_LINKS: usize = 64;

/// Deepest nesting of arrays and objects in a body, counting the body object itself as 1.
/// Bodies are flat records in practice; the bound protects verifiers in other languages whose
/// JSON parsers recurse (and stays far below serde_json's own limit of 128).
pub const MAX_BODY_DEPTH: usize = 32;

/// Largest canonical receipt (without `hash` and `signature`) that may be sealed or verified.
/// A receipt is a record, not a document: 64 KiB is ~100 times a typical one, and it bounds
/// the memory and time a verifier spends on one export line.
pub const MAX_CANONICAL_RECEIPT_BYTES: usize = 64 * 1024;

/// Who issued a receipt: the service name and the x-only public key (hex) it signed with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// Service name, e.g. `hydra`.
    pub service: String,
    /// Lowercase hex of the issuer's 32-byte x-only public key.
    pub key_id: String,
}

/// A sealed receipt. Field order is the serialization order; the hash does not depend on it
/// (JCS sorts keys) but exports stay readable.
///
/// Unknown fields are refused when deserializing: the hash covers every field except `hash` and
/// `signature`, so a verifier that silently dropped an extra field would accept a receipt whose
/// hash other verifiers (which hash the object as they see it) reject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// `oa.<service>.<name>.v<N>`, e.g. `oa.hydra.invoice_pay_receipt.v1`.
    pub schema: String,
    /// Issuer-chosen unique id of this receipt.
    pub receipt_id: String,
    /// Who signed it.
    pub issuer: Issuer,
    /// Position in the issuer's log, starting at 0. A JSON decimal string.
    #[serde(with = "crate::u64_string")]
    pub log_index: u64,
    /// Hash of the issuer's previous receipt; [`Hash::ZERO`] for log_index 0.
    pub prev_hash: Hash,
    /// Issue time in Unix milliseconds. A JSON decimal string.
    #[serde(with = "crate::u64_string")]
    pub issued_at_ms: u64,
    /// The idempotency key of the operation this receipt attests.
    pub idempotency_key: String,
    /// Hashes of the receipts this one depends on (possibly of other issuers).
    pub links: Vec<Hash>,
    /// Class-specific content; no JSON numbers anywhere.
    pub body: Map<String, Value>,
    /// SHA-256 of the canonical JSON of all fields above.
    pub hash: Hash,
    /// BIP340 signature over `hash` by `issuer.key_id`, 128 lowercase hex digits.
    pub signature: String,
}

/// Borrowed view of the hashed part of a receipt: every field except `hash` and `signature`,
/// with the same names and encodings as [`Receipt`]. Serializing this view straight into the
/// JCS serializer avoids building a `serde_json::Value` copy of every receipt we hash.
#[derive(Serialize)]
struct Unsigned<'a> {
    schema: &'a str,
    receipt_id: &'a str,
    issuer: &'a Issuer,
    #[serde(with = "crate::u64_string")]
    log_index: u64,
    prev_hash: &'a Hash,
    #[serde(with = "crate::u64_string")]
    issued_at_ms: u64,
    idempotency_key: &'a str,
    links: &'a [Hash],
    body: &'a Map<String, Value>,
}

impl Receipt {
    /// The exact bytes that are hashed: RFC 8785 canonical JSON of the receipt without `hash`
    /// and `signature`.
    ///
    /// # Errors
    ///
    /// [`ReceiptError::Json`] if the body cannot be canonicalized.
    pub fn canonical_unsigned(&self) -> Result<Vec<u8>, ReceiptError> {
        // Fast path: members in their RFC 8785 order (by UTF-16 code units: body,
        // idempotency_key, issued_at_ms, issuer, links, log_index, prev_hash, receipt_id,
        // schema), each value canonical. Only a body holding a number (which sealing refuses,
        // but a verifier may be handed) takes the general serializer.
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"body\":");
        if crate::jcs::write_object(&mut out, &self.body) {
            out.extend_from_slice(b",\"idempotency_key\":");
            crate::jcs::write_str(&mut out, &self.idempotency_key);
            out.extend_from_slice(b",\"issued_at_ms\":\"");
            out.extend_from_slice(self.issued_at_ms.to_string().as_bytes());
            out.extend_from_slice(b"\",\"issuer\":{\"key_id\":");
            crate::jcs::write_str(&mut out, &self.issuer.key_id);
            out.extend_from_slice(b",\"service\":");
            crate::jcs::write_str(&mut out, &self.issuer.service);
            out.extend_from_slice(b"},\"links\":[");
            for (i, link) in self.links.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                crate::jcs::write_str(&mut out, &link.to_string());
            }
            out.extend_from_slice(b"],\"log_index\":\"");
            out.extend_from_slice(self.log_index.to_string().as_bytes());
            out.extend_from_slice(b"\",\"prev_hash\":");
            crate::jcs::write_str(&mut out, &self.prev_hash.to_string());
            out.extend_from_slice(b",\"receipt_id\":");
            crate::jcs::write_str(&mut out, &self.receipt_id);
            out.extend_from_slice(b",\"schema\":");
            crate::jcs::write_str(&mut out, &self.schema);
            out.push(b'}');
            return Ok(out);
        }
        self.canonical_unsigned_general()
    }

    /// The same bytes through the general RFC 8785 serializer.
    fn canonical_unsigned_general(&self) -> Result<Vec<u8>, ReceiptError> {
        let unsigned = Unsigned {
            schema: &self.schema,
            receipt_id: &self.receipt_id,
            issuer: &self.issuer,
            log_index: self.log_index,
            prev_hash: &self.prev_hash,
            issued_at_ms: self.issued_at_ms,
            idempotency_key: &self.idempotency_key,
            links: &self.links,
            body: &self.body,
        };
        Ok(serde_json_canonicalizer::to_vec(&unsigned)?)
    }

    /// What `hash` should be: SHA-256 of [`Receipt::canonical_unsigned`].
    ///
    /// # Errors
    ///
    /// As [`Receipt::canonical_unsigned`].
    pub fn compute_hash(&self) -> Result<Hash, ReceiptError> {
        Ok(Hash::of(&self.canonical_unsigned()?))
    }

    /// Checks everything that can be checked from the receipt alone: the format rules sealing
    /// enforces, that `hash` matches the content, and that `signature` verifies under
    /// `issuer.key_id`. It does not check the chain or links (see [`crate::verify_chain`],
    /// [`crate::verify_export`]) nor that the key belongs to the service.
    ///
    /// # Errors
    ///
    /// The first problem found.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        self.validate_fields()?;
        let computed = self.checked_hash()?;
        if computed != self.hash {
            return Err(ReceiptError::HashMismatch {
                claimed: self.hash,
                computed,
            });
        }
        verify_signature(&self.issuer.key_id, &self.hash, &self.signature)
    }

    /// Canonicalizes, enforces the size limit and hashes.
    pub(crate) fn checked_hash(&self) -> Result<Hash, ReceiptError> {
        let bytes = self.canonical_unsigned()?;
        if bytes.len() > MAX_CANONICAL_RECEIPT_BYTES {
            return Err(ReceiptError::ReceiptTooLarge {
                len: bytes.len(),
                max: MAX_CANONICAL_RECEIPT_BYTES,
            });
        }
        Ok(Hash::of(&bytes))
    }

    /// The format rules, shared by sealing and verification (everything but size, hash and
    /// signature).
    pub(crate) fn validate_fields(&self) -> Result<(), ReceiptError> {
        validate_schema(&self.schema)?;
        validate_text("receipt_id", &self.receipt_id, MAX_RECEIPT_ID_LEN)?;
        validate_name("issuer.service", &self.issuer.service)?;
        if decode_lower_hex::<32>(&self.issuer.key_id).is_none() {
            return Err(ReceiptError::InvalidKeyId(crate::hash::truncate_for_error(
                &self.issuer.key_id,
            )));
        }
        validate_text(
            "idempotency_key",
            &self.idempotency_key,
            MAX_IDEMPOTENCY_KEY_LEN,
        )?;
        if self.links.len() > MAX_LINKS {
            return Err(ReceiptError::TooManyLinks {
                count: self.links.len(),
                max: MAX_LINKS,
            });
        }
        validate_body(&self.body)?;
        check_preimage(&self.body)
    }
}

/// What a service wants to attest, before it is placed in its log and signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptDraft {
    /// `oa.<service>.<name>.v<N>`.
    pub schema: String,
    /// Issuer-chosen unique id of the receipt.
    pub receipt_id: String,
    /// The idempotency key of the attested operation.
    pub idempotency_key: String,
    /// Hashes of receipts this one depends on.
    pub links: Vec<Hash>,
    /// Class-specific content without JSON numbers; see [`body_from`].
    pub body: Map<String, Value>,
}

impl ReceiptDraft {
    /// Validates the draft, places it at `log_index` after `prev_hash` in `service`'s log,
    /// hashes and signs it.
    ///
    /// The caller owns the log: it must pass the next index and the hash of the receipt at
    /// `log_index - 1` (or [`Hash::ZERO`] for index 0), and store the result in the same
    /// transaction that advances its log head, so the log stays a chain.
    ///
    /// # Errors
    ///
    /// The first rule the draft breaks: [`ReceiptError::InvalidSchema`],
    /// [`ReceiptError::InvalidField`], [`ReceiptError::NumberInBody`] (naming the JSON pointer),
    /// [`ReceiptError::BodyTooDeep`], [`ReceiptError::TooManyLinks`],
    /// [`ReceiptError::ReceiptTooLarge`], [`ReceiptError::PreimageMismatch`], or
    /// [`ReceiptError::BadGenesis`] if `prev_hash` is zero exactly when `log_index` is not.
    pub fn seal(
        self,
        key: &ReceiptKey,
        service: &str,
        log_index: u64,
        prev_hash: Hash,
        issued_at_ms: u64,
    ) -> Result<Receipt, ReceiptError> {
        // Sealing a broken chain link is always a bug in the caller's log handling; refusing
        // here keeps it from ever being signed.
        if (log_index == 0) != (prev_hash == Hash::ZERO) {
            return Err(ReceiptError::BadGenesis {
                log_index,
                prev_hash,
            });
        }
        let mut receipt = Receipt {
            schema: self.schema,
            receipt_id: self.receipt_id,
            issuer: Issuer {
                service: service.to_owned(),
                key_id: key.key_id().to_owned(),
            },
            log_index,
            prev_hash,
            issued_at_ms,
            idempotency_key: self.idempotency_key,
            links: self.links,
            body: self.body,
            hash: Hash::ZERO,
            signature: String::new(),
        };
        receipt.validate_fields()?;
        receipt.hash = receipt.checked_hash()?;
        receipt.signature = key.sign(&receipt.hash);
        Ok(receipt)
    }
}

/// Serializes a body struct into a receipt body, refusing JSON numbers early (use
/// [`crate::u64_string`] for integer fields).
///
/// # Errors
///
/// [`ReceiptError::Json`] if serialization fails, [`ReceiptError::BodyNotObject`] if `T` is not
/// a struct or map, [`ReceiptError::NumberInBody`] / [`ReceiptError::BodyTooDeep`] as in
/// [`ReceiptDraft::seal`].
pub fn body_from<T: Serialize>(value: &T) -> Result<Map<String, Value>, ReceiptError> {
    match serde_json::to_value(value)? {
        Value::Object(map) => {
            validate_body(&map)?;
            Ok(map)
        }
        _ => Err(ReceiptError::BodyNotObject),
    }
}

/// `oa.<service>.<name>.v<N>`: four dot-separated parts, lowercase identifier segments, and a
/// version without leading zeros, so every schema has one spelling.
fn validate_schema(schema: &str) -> Result<(), ReceiptError> {
    let invalid = || ReceiptError::InvalidSchema(crate::hash::truncate_for_error(schema));
    if schema.len() > MAX_SCHEMA_LEN {
        return Err(invalid());
    }
    let mut parts = schema.split('.');
    let (Some("oa"), Some(service), Some(name), Some(version), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    let version_ok = version
        .strip_prefix('v')
        .and_then(crate::u64_string::parse)
        .is_some_and(|n| n >= 1);
    if is_name(service) && is_name(name) && version_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// A lowercase identifier: `[a-z][a-z0-9_-]*`, at most [`MAX_SERVICE_LEN`] bytes.
pub(crate) fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() <= MAX_SERVICE_LEN
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

fn validate_name(field: &'static str, s: &str) -> Result<(), ReceiptError> {
    if is_name(s) {
        Ok(())
    } else {
        Err(ReceiptError::InvalidField {
            field,
            reason: format!("expected [a-z][a-z0-9_-]* of at most {MAX_SERVICE_LEN} bytes"),
        })
    }
}

/// Non-empty, bounded, and free of control characters: ids end up in logs and terminal output,
/// where a newline or escape sequence could forge lines.
fn validate_text(field: &'static str, s: &str, max: usize) -> Result<(), ReceiptError> {
    let reason = if s.is_empty() {
        "must not be empty".to_owned()
    } else if s.len() > max {
        format!("{} bytes, more than the limit of {max}", s.len())
    } else if s.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(ReceiptError::InvalidField { field, reason })
}

/// Where in the body a rule was broken, collected while unwinding so the walk allocates nothing
/// on the (normal) success path.
struct BodyIssue {
    too_deep: bool,
    /// Path segments from the offending value up to the body, i.e. reversed.
    path_rev: Vec<String>,
}

impl BodyIssue {
    /// RFC 6901 JSON pointer (relative to the body), `~` and `/` escaped as `~0` and `~1`.
    fn pointer(&self) -> String {
        self.path_rev
            .iter()
            .rev()
            .fold(String::new(), |mut out, seg| {
                out.push('/');
                out.push_str(&seg.replace('~', "~0").replace('/', "~1"));
                out
            })
    }
}

fn validate_body(body: &Map<String, Value>) -> Result<(), ReceiptError> {
    check_object(body, 1).map_err(|issue| {
        let pointer = issue.pointer();
        if issue.too_deep {
            ReceiptError::BodyTooDeep {
                pointer,
                max: MAX_BODY_DEPTH,
            }
        } else {
            ReceiptError::NumberInBody { pointer }
        }
    })
}

fn check_object(map: &Map<String, Value>, depth: usize) -> Result<(), BodyIssue> {
    for (k, v) in map {
        check_value(v, depth).map_err(|mut issue| {
            issue.path_rev.push(k.clone());
            issue
        })?;
    }
    Ok(())
}

/// `depth` is the depth of the container holding `value`.
fn check_value(value: &Value, depth: usize) -> Result<(), BodyIssue> {
    let child_depth = depth + 1;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(_) => Err(BodyIssue {
            too_deep: false,
            path_rev: Vec::new(),
        }),
        Value::Array(_) | Value::Object(_) if child_depth > MAX_BODY_DEPTH => Err(BodyIssue {
            too_deep: true,
            path_rev: Vec::new(),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, child_depth).map_err(|mut issue| {
                    issue.path_rev.push(i.to_string());
                    issue
                })?;
            }
            Ok(())
        }
        Value::Object(map) => check_object(map, child_depth),
    }
}

/// A body that carries both `payment_hash` and `preimage` as strings claims a settled Lightning
/// payment; the claim is checkable by anyone, so we check it: both must be 64 lowercase hex
/// digits and `sha256(preimage) == payment_hash`. A `null` preimage (payment not settled) is
/// not a string and is not checked.
pub(crate) fn check_preimage(body: &Map<String, Value>) -> Result<(), ReceiptError> {
    let (Some(Value::String(payment_hash)), Some(Value::String(preimage))) =
        (body.get("payment_hash"), body.get("preimage"))
    else {
        return Ok(());
    };
    let payment_hash = decode_lower_hex::<32>(payment_hash).ok_or_else(|| {
        ReceiptError::PreimageMismatch("payment_hash is not 64 lowercase hex digits".to_owned())
    })?;
    let preimage = decode_lower_hex::<32>(preimage).ok_or_else(|| {
        ReceiptError::PreimageMismatch("preimage is not 64 lowercase hex digits".to_owned())
    })?;
    if Hash::of(&preimage).as_bytes() == &payment_hash {
        Ok(())
    } else {
        Err(ReceiptError::PreimageMismatch(
            "sha256(preimage) != payment_hash".to_owned(),
        ))
    }
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fast_canonical_form_matches_the_general_serializer() {
        let key = ReceiptKey::generate();
        let body = json!({
            "\u{e000}": "b", "\u{10000}": ["a", {"z": true, "a": null}], "esc": "\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            "uni": "café ☕ 😀 \u{2028}", "": "", "B": "upper first",
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let r = ReceiptDraft {
            schema: "oa.test.thing.v1".into(),
            receipt_id: "r\u{e9}\"1".into(),
            idempotency_key: "k\\1".into(),
            links: vec![Hash::of(b"a"), Hash::of(b"b")],
            body,
        }
        .seal(&key, "test", 7, Hash::of(b"p"), u64::MAX)
        .unwrap();
        assert_eq!(
            r.canonical_unsigned().unwrap(),
            r.canonical_unsigned_general().unwrap()
        );
        let mut with_number = r.clone();
        with_number.body.insert("n".into(), json!(1.5));
        assert_eq!(
            with_number.canonical_unsigned().unwrap(),
            with_number.canonical_unsigned_general().unwrap()
        );
    }

    fn draft(body: Value) -> ReceiptDraft {
        ReceiptDraft {
            schema: "oa.hydra.invoice_pay_receipt.v1".to_owned(),
            receipt_id: "rcpt_1".to_owned(),
            idempotency_key: "idem-1".to_owned(),
            links: vec![],
            body: match body {
                Value::Object(map) => map,
                _ => unreachable!("tests pass objects"),
            },
        }
    }

    #[test]
    fn schema_must_be_oa_service_name_version() {
        for good in [
            "oa.hydra.invoice_pay_receipt.v1",
            "oa.wallet-executor.pay.v12",
        ] {
            validate_schema(good).unwrap();
        }
        for bad in [
            "",
            "oa.hydra.pay",
            "oa.hydra.pay.v0",
            "oa.hydra.pay.v01",
            "oa.hydra.pay.1",
            "xx.hydra.pay.v1",
            "oa.Hydra.pay.v1",
            "oa.hydra.pay.v1.extra",
            "oa..pay.v1",
            "oa.hydra.pay.v+1",
        ] {
            assert!(validate_schema(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn number_in_body_names_the_json_pointer() {
        let key = ReceiptKey::generate();
        let err = draft(json!({"a": {"b/c": [true, {"~d": 5}]}}))
            .seal(&key, "hydra", 0, Hash::ZERO, 1)
            .unwrap_err();
        match err {
            ReceiptError::NumberInBody { pointer } => assert_eq!(pointer, "/a/b~1c/1/~0d"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn too_deep_body_is_refused() {
        let mut v = json!("leaf");
        for _ in 0..MAX_BODY_DEPTH {
            v = json!([v]);
        }
        let key = ReceiptKey::generate();
        let err = draft(json!({ "deep": v }))
            .seal(&key, "hydra", 0, Hash::ZERO, 1)
            .unwrap_err();
        assert!(matches!(err, ReceiptError::BodyTooDeep { .. }), "{err:?}");
    }

    #[test]
    fn genesis_rule_is_enforced_when_sealing() {
        let key = ReceiptKey::generate();
        let err = draft(json!({}))
            .seal(&key, "hydra", 1, Hash::ZERO, 1)
            .unwrap_err();
        assert!(matches!(err, ReceiptError::BadGenesis { .. }));
        let err = draft(json!({}))
            .seal(&key, "hydra", 0, Hash::of(b"x"), 1)
            .unwrap_err();
        assert!(matches!(err, ReceiptError::BadGenesis { .. }));
    }

    #[test]
    fn text_fields_are_bounded_and_printable() {
        let key = ReceiptKey::generate();
        let mut d = draft(json!({}));
        d.receipt_id = "a\nb".to_owned();
        assert!(matches!(
            d.seal(&key, "hydra", 0, Hash::ZERO, 1),
            Err(ReceiptError::InvalidField {
                field: "receipt_id",
                ..
            })
        ));
        let mut d = draft(json!({}));
        d.idempotency_key = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        assert!(matches!(
            d.seal(&key, "hydra", 0, Hash::ZERO, 1),
            Err(ReceiptError::InvalidField {
                field: "idempotency_key",
                ..
            })
        ));
        assert!(matches!(
            draft(json!({})).seal(&key, "Hydra", 0, Hash::ZERO, 1),
            Err(ReceiptError::InvalidField {
                field: "issuer.service",
                ..
            })
        ));
    }

    #[test]
    fn oversized_receipt_is_refused() {
        let key = ReceiptKey::generate();
        let big = "x".repeat(MAX_CANONICAL_RECEIPT_BYTES);
        let err = draft(json!({ "blob": big }))
            .seal(&key, "hydra", 0, Hash::ZERO, 1)
            .unwrap_err();
        assert!(
            matches!(err, ReceiptError::ReceiptTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn body_from_refuses_non_objects_and_numbers() {
        #[derive(Serialize)]
        struct Good {
            #[serde(with = "crate::u64_string")]
            amount_msat: u64,
        }
        #[derive(Serialize)]
        struct Bad {
            amount_msat: u64,
        }
        assert_eq!(
            body_from(&Good { amount_msat: 5 }).unwrap()["amount_msat"],
            json!("5")
        );
        assert!(matches!(
            body_from(&Bad { amount_msat: 5 }),
            Err(ReceiptError::NumberInBody { pointer }) if pointer == "/amount_msat"
        ));
        assert!(matches!(body_from(&"s"), Err(ReceiptError::BodyNotObject)));
    }
}
