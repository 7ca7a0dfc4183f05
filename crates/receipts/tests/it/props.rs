//! Property tests: arbitrary number-free bodies seal and verify (also after a JSON round trip),
//! and canonical JSON does not depend on the order keys are serialized in.

use oa_receipts::{Hash, Receipt, ReceiptKey, canonical_json};
use proptest::prelude::*;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

use crate::support::draft;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<String>().prop_map(Value::String),
        // Numbers as the decimal strings receipts use.
        any::<u64>().prop_map(|n| Value::String(n.to_string())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Random receipt bodies: objects of strings, bools, nulls, nested arrays and objects.
pub fn body_strategy() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..8)
        .prop_map(|m| m.into_iter().collect())
}

/// Serializes a value with every object's entries in a seed-dependent permuted order, to feed
/// the canonicalizer keys in an order other than the sorted one `Map` iterates in.
struct Shuffled<'a> {
    value: &'a Value,
    seed: u64,
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Serialize for Shuffled<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                let mut seed = self.seed;
                for i in (1..entries.len()).rev() {
                    seed = splitmix(seed);
                    entries.swap(i, (seed % (i as u64 + 1)) as usize);
                }
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    seed = splitmix(seed);
                    out.serialize_entry(k, &Shuffled { value: v, seed })?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for (i, v) in items.iter().enumerate() {
                    out.serialize_element(&Shuffled {
                        value: v,
                        seed: splitmix(self.seed ^ i as u64),
                    })?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bodies_seal_and_verify(body in body_strategy(), issued_at_ms in any::<u64>()) {
        let key = ReceiptKey::generate();
        let mut d = draft("prop", vec![Hash::of(b"dep")], serde_json::json!({}));
        d.body = body;
        let receipt = d.seal(&key, "hydra", 0, Hash::ZERO, issued_at_ms).unwrap();
        receipt.verify().unwrap();

        let text = serde_json::to_string(&receipt).unwrap();
        let back: Receipt = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &receipt);
        back.verify().unwrap();
    }

    #[test]
    fn canonical_json_is_independent_of_key_order(body in body_strategy(), seed in any::<u64>()) {
        let value = Value::Object(body);
        let canonical = canonical_json(&value).unwrap();
        let shuffled = serde_json_canonicalizer::to_vec(&Shuffled { value: &value, seed }).unwrap();
        prop_assert_eq!(&shuffled, &canonical);

        // Canonical output parses back to the same value and is a fixed point.
        let reparsed: Value = serde_json::from_slice(&canonical).unwrap();
        prop_assert_eq!(&reparsed, &value);
        prop_assert_eq!(canonical_json(&reparsed).unwrap(), canonical);
    }
}
