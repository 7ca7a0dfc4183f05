//! Receiving: invoices our node issues, their settlement receipts (gapless, once each, across a
//! restart) and the settlement stream.

use std::time::Duration;

use oa_money::Msat;
use oa_proto::wallet::{self, InvoiceStatus};
use wallet_executor::{node::sim::OUR_NODE, receipt::INVOICE_SETTLEMENT_SCHEMA};

use crate::harness::{Client, Harness, error_code};

/// Bound on any single wait in these tests: far above what the follower needs.
const WAIT: Duration = Duration::from_secs(10);

pub fn invoice_req(key: &str, amount_msat: u64) -> wallet::CreateInvoiceRequest {
    wallet::CreateInvoiceRequest {
        idempotency_key: key.into(),
        amount_msat,
        description: "coffee".into(),
        expiry_secs: 0,
    }
}

/// Waits until the invoice's settlement is recorded with its receipt.
pub async fn settled(c: &Client, payment_hash: &str) -> wallet::InvoiceResponse {
    oa_testkit::wait_until(WAIT, Duration::from_millis(10), || {
        let mut c = c.clone();
        let payment_hash = payment_hash.to_owned();
        async move {
            let r = c
                .lookup_invoice(wallet::LookupInvoiceRequest { payment_hash })
                .await
                .ok()?
                .into_inner();
            r.receipt.is_some().then_some(r)
        }
    })
    .await
    .expect("the settlement is recorded")
}

async fn next(
    stream: &mut tonic::Streaming<wallet::InvoiceSettlement>,
) -> wallet::InvoiceSettlement {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a settlement within the bound")
        .unwrap()
        .expect("the stream is open")
}

#[tokio::test]
async fn issues_an_invoice_once_per_key_and_records_its_settlement_with_a_receipt() {
    let h = Harness::start(&[]).await;
    let mut c = h.receiver().await;
    let ours = c
        .get_info(wallet::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_pubkey;
    let created = c
        .create_invoice(invoice_req("inv-1", 25_000))
        .await
        .unwrap()
        .into_inner();
    let inv = created.invoice.clone().unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Open);
    assert_eq!(
        (inv.amount_msat, inv.add_index, inv.settle_index),
        (25_000, 1, 0)
    );
    assert!(created.receipt.is_none());
    // A real BOLT11 invoice of our node, on regtest.
    let decoded = oa_invoice::decode(&inv.bolt11).unwrap();
    assert_eq!(decoded.payee_pubkey, ours);
    assert_eq!(decoded.amount, Some(Msat::new(25_000).unwrap()));
    assert_eq!(decoded.payment_hash.to_string(), inv.payment_hash);
    assert!(inv.bolt11.starts_with("lnbcrt"));

    // Same key, same request: the same invoice. Same key, another request: a conflict.
    let again = c
        .create_invoice(invoice_req("inv-1", 25_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, created);
    let e = c
        .create_invoice(invoice_req("inv-1", 26_000))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "IDEMPOTENCY_CONFLICT");
    let amountless = c
        .create_invoice(invoice_req("inv-2", 0))
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!((amountless.amount_msat, amountless.add_index), (0, 2));

    // hub pays it: the settlement is recorded with a signed receipt.
    let st = h
        .sim
        .pay_from("hub", &inv.bolt11, Msat::new(10_000).unwrap())
        .unwrap();
    assert!(matches!(
        st,
        wallet_executor::node::PayState::Succeeded { .. }
    ));
    let done = settled(&c, &inv.payment_hash).await;
    let got = done.invoice.unwrap();
    assert_eq!(got.status(), InvoiceStatus::Settled);
    assert_eq!((got.settle_index, got.amount_paid_msat), (1, 25_000));
    let r = oa_service::receipts::from_proto(done.receipt.as_ref().unwrap()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.schema, INVOICE_SETTLEMENT_SCHEMA);
    assert_eq!(r.idempotency_key, "inv-1");
    assert_eq!(r.body["payment_hash"], inv.payment_hash);
    assert_eq!(r.body["amount_msat"], "25000");
    assert_eq!(r.body["amount_paid_msat"], "25000");
    assert_eq!(r.body["settle_index"], "1");
    assert_eq!(r.body["add_index"], "1");
    assert_eq!(r.body["backend"], "sim");

    // Unknown and malformed hashes.
    let e = c
        .lookup_invoice(wallet::LookupInvoiceRequest {
            payment_hash: "ab".repeat(32),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (error_code(&e).as_str(), e.code()),
        ("INVOICE_NOT_FOUND", tonic::Code::NotFound)
    );
    let e = c
        .lookup_invoice(wallet::LookupInvoiceRequest {
            payment_hash: "xyz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (error_code(&e).as_str(), e.code()),
        ("INVALID_PAYMENT_HASH", tonic::Code::InvalidArgument)
    );
    assert_eq!(h.receipts_of(INVOICE_SETTLEMENT_SCHEMA).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn bad_invoice_requests_are_typed_and_issue_nothing() {
    let h = Harness::start(&[]).await;
    let mut c = h.receiver().await;
    let cases = [
        (invoice_req("", 1_000), "INVALID_IDEMPOTENCY_KEY"),
        (invoice_req("k", u64::MAX), "INVALID_AMOUNT"),
        (
            wallet::CreateInvoiceRequest {
                description: "x".repeat(640),
                ..invoice_req("k", 1_000)
            },
            "INVALID_DESCRIPTION",
        ),
        (
            wallet::CreateInvoiceRequest {
                expiry_secs: 8 * 24 * 3600,
                ..invoice_req("k", 1_000)
            },
            "INVALID_EXPIRY",
        ),
    ];
    for (req, code) in cases {
        let e = c.create_invoice(req).await.unwrap_err();
        assert_eq!(
            (error_code(&e).as_str(), e.code()),
            (code, tonic::Code::InvalidArgument)
        );
    }
    // Nothing was issued at the node and the key is still free: the first invoice is number 1.
    let ok = c
        .create_invoice(invoice_req("k", 1_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.invoice.unwrap().add_index, 1);
    h.stop().await;
}

#[tokio::test]
async fn settlement_receipts_are_gapless_once_each_and_resume_after_a_restart() {
    let h = Harness::start(&[]).await;
    let mut c = h.receiver().await;
    let mut issued = Vec::new();
    for n in 0..4u64 {
        let inv = c
            .create_invoice(invoice_req(&format!("inv-{n}"), 10_000 + n))
            .await
            .unwrap()
            .into_inner()
            .invoice
            .unwrap();
        issued.push(inv);
    }
    // A subscriber from the start sees each settlement as it is recorded.
    let mut live = c
        .subscribe_invoice_settlements(wallet::SubscribeInvoiceSettlementsRequest {
            after_settle_index: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let fee = Msat::new(10_000).unwrap();
    for inv in &issued[..2] {
        h.sim.pay_from("hub", &inv.bolt11, fee).unwrap();
    }
    for (n, inv) in issued[..2].iter().enumerate() {
        let s = next(&mut live).await;
        let got = s.invoice.unwrap();
        assert_eq!(got.payment_hash, inv.payment_hash);
        assert_eq!(got.settle_index, n as u64 + 1);
        assert!(s.receipt.is_some());
    }
    drop(live);

    // The executor stops; our node keeps settling: the two remaining invoices, and one issued at
    // the node without the executor (it is recorded too, under a key derived from its hash).
    let (dir, ring, config, sim) = h.stop().await;
    let outside = sim
        .create_invoice(
            OUR_NODE,
            Some(Msat::new(7_000).unwrap()),
            "outside",
            Duration::from_secs(600),
        )
        .unwrap();
    sim.pay_from("hub", &issued[3].bolt11, fee).unwrap();
    sim.pay_from("hub", &outside.bolt11, fee).unwrap();
    sim.pay_from("hub", &issued[2].bolt11, fee).unwrap();

    let h = Harness::start_with(dir, ring, config, Some(sim)).await;
    let mut c = h.receiver().await;
    let last = settled(&c, &issued[2].payment_hash).await;
    assert_eq!(last.invoice.unwrap().settle_index, 5);
    // From 0: every settlement, in order, each with its receipt; from 3: the rest.
    let mut all = c
        .subscribe_invoice_settlements(wallet::SubscribeInvoiceSettlementsRequest {
            after_settle_index: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let want = [
        issued[0].payment_hash.clone(),
        issued[1].payment_hash.clone(),
        issued[3].payment_hash.clone(),
        outside.payment_hash.to_string(),
        issued[2].payment_hash.clone(),
    ];
    for (n, hash) in want.iter().enumerate() {
        let s = next(&mut all).await;
        let got = s.invoice.unwrap();
        assert_eq!((got.settle_index, &got.payment_hash), (n as u64 + 1, hash));
        let r = oa_service::receipts::from_proto(s.receipt.as_ref().unwrap()).unwrap();
        r.verify().unwrap();
        assert_eq!(r.body["settle_index"], (n + 1).to_string());
        assert_eq!(&r.body["payment_hash"], hash.as_str());
    }
    let mut rest = c
        .subscribe_invoice_settlements(wallet::SubscribeInvoiceSettlementsRequest {
            after_settle_index: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut rest).await.invoice.unwrap().settle_index, 4);
    assert_eq!(next(&mut rest).await.invoice.unwrap().settle_index, 5);

    // Exactly one receipt per settlement, in one verifying chain.
    let receipts = h.receipts().await;
    assert!(oa_receipts::verify_chain(&receipts).is_empty());
    let settlements: Vec<_> = receipts
        .iter()
        .filter(|r| r.schema == INVOICE_SETTLEMENT_SCHEMA)
        .collect();
    assert_eq!(settlements.len(), 5);
    let outside_receipt = settlements
        .iter()
        .find(|r| r.body["payment_hash"] == outside.payment_hash.to_string())
        .unwrap();
    assert_eq!(
        outside_receipt.idempotency_key,
        format!("invoice:{}", outside.payment_hash)
    );

    // A dropped node subscription is resumed from the last recorded index: nothing is missed.
    h.sim.drop_invoice_subscriptions();
    let more = c
        .create_invoice(invoice_req("inv-after-drop", 3_000))
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    h.sim.pay_from("hub", &more.bolt11, fee).unwrap();
    let s = next(&mut all).await;
    assert_eq!(s.invoice.unwrap().settle_index, 6);
    assert_eq!(h.receipts_of(INVOICE_SETTLEMENT_SCHEMA).await.len(), 6);
    drop((all, rest));
    h.stop().await;
}
