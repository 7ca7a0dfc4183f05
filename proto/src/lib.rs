//! The suite's wire contracts, generated from `proto/openagents/**`.
//!
//! `proto/` is the source of truth for every cross-process message. HTTP bodies are the proto3
//! JSON mapping of these messages (pbjson: original field names, 64-bit integers as strings,
//! unknown fields refused); gRPC uses the binary encoding.

#![allow(clippy::all, missing_docs)]

pub mod openagents {
    pub mod common {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openagents.common.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/openagents.common.v1.serde.rs"));
        }
    }
    pub mod wallet {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openagents.wallet.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/openagents.wallet.v1.serde.rs"));
        }
    }
    pub mod hydra {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openagents.hydra.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/openagents.hydra.v1.serde.rs"));
        }
    }
    pub mod aegis {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openagents.aegis.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/openagents.aegis.v1.serde.rs"));
        }
    }
    pub mod treasury {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openagents.treasury.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/openagents.treasury.v1.serde.rs"));
        }
    }
    pub mod ops {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/openagents.ops.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/openagents.ops.v1.serde.rs"));
        }
    }
}

/// A wire-compatible subset of LND's `lnrpc` package (the `lnd` backend's client, and the test
/// kit's fake LND server).
pub mod lnrpc {
    include!(concat!(env!("OUT_DIR"), "/lnrpc.rs"));
}

/// A wire-compatible subset of LND's `routerrpc` package.
pub mod routerrpc {
    include!(concat!(env!("OUT_DIR"), "/routerrpc.rs"));
}

pub use openagents::aegis::v1 as aegis;
pub use openagents::common::v1 as common;
pub use openagents::hydra::v1 as hydra;
pub use openagents::ops::v1 as ops;
pub use openagents::treasury::v1 as treasury;
pub use openagents::wallet::v1 as wallet;

pub use pbjson_types;

/// The compiled descriptor set of every contract, for reflection (`/openapi.json`).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_original_names_and_64_bit_strings() {
        let q = hydra::Quote {
            quote_id: "q1".into(),
            amount_msat: 1_000,
            state: hydra::QuoteState::Open as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(&q).expect("serialize");
        assert_eq!(v["quote_id"], "q1");
        assert_eq!(v["amount_msat"], "1000");
        assert_eq!(v["state"], "QUOTE_STATE_OPEN");
        // emit_fields: defaults are present, so clients see every field.
        assert_eq!(v["fee_limit_msat"], "0");
    }

    #[test]
    fn json_refuses_unknown_fields() {
        let err = serde_json::from_str::<treasury::CreatePaymentRequest>(
            r#"{"agent_id":"a","surprise":1}"#,
        )
        .expect_err("unknown field must be refused");
        assert!(err.is_data());
    }

    #[test]
    fn json_refuses_negative_and_overflowing_integers() {
        for body in [
            r#"{"amount_msat":"-1"}"#,
            r#"{"amount_msat":-1}"#,
            r#"{"amount_msat":"18446744073709551616"}"#,
            r#"{"amount_msat":1.5}"#,
        ] {
            assert!(
                serde_json::from_str::<treasury::CreatePaymentRequest>(body).is_err(),
                "{body} must be refused"
            );
        }
        let ok: treasury::CreatePaymentRequest =
            serde_json::from_str(r#"{"amount_msat":"42","maxFeeMsat":"7"}"#).expect("parse");
        assert_eq!((ok.amount_msat, ok.max_fee_msat), (42, 7));
    }

    #[test]
    fn descriptor_set_is_embedded() {
        let pool = prost_reflect::DescriptorPool::decode(DESCRIPTOR_SET).expect("decode");
        assert!(
            pool.get_message_by_name("openagents.treasury.v1.CreatePaymentRequest")
                .is_some()
        );
    }
}
