use std::time::Duration;

use oa_proto::wallet::{self, PaymentStatus};
use oa_receipts::Receipt;

use crate::harness::{Harness, error_code, pay_req};

fn receipt(resp: &wallet::PaymentResponse) -> Receipt {
    oa_service::receipts::from_proto(
        resp.receipt
            .as_ref()
            .expect("terminal payments carry a receipt"),
    )
    .unwrap()
}

#[tokio::test]
async fn pays_an_invoice_once_and_signs_a_receipt() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("merchant", 50_000);
    let resp = c
        .pay_invoice(pay_req("k1", &inv, 5_000))
        .await
        .unwrap()
        .into_inner();
    let p = resp.payment.clone().unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!(p.amount_msat, 50_000);
    // merchant is behind `router`: 1 sat base + 100 ppm of 50_000 msat (rounded up) = 1_005 msat.
    assert_eq!(p.fee_msat, 1_005);
    let preimage: oa_invoice::Preimage = p.preimage.parse().unwrap();
    assert_eq!(preimage.payment_hash().to_string(), p.payment_hash);

    let r = receipt(&resp);
    r.verify().unwrap();
    assert_eq!(r.schema, "oa.wallet_executor.payment_receipt.v1");
    assert_eq!(r.body["payment_hash"], p.payment_hash.as_str());
    assert_eq!(r.body["amount_msat"], "50000");
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.log_index, 0);

    // The same request replays the stored response, byte for byte, and sends nothing.
    let again = c
        .pay_invoice(pay_req("k1", &inv, 5_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, resp);
    let hash = p.payment_hash.parse().unwrap();
    assert_eq!(h.sim.send_count(&hash), 1);
    h.stop().await;
}

#[tokio::test]
async fn refuses_key_reuse_and_a_second_payment_of_a_hash() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("carol", 10_000);
    c.pay_invoice(pay_req("k1", &inv, 0)).await.unwrap();

    let other = h.invoice("carol", 20_000);
    let err = c.pay_invoice(pay_req("k1", &other, 0)).await.unwrap_err();
    assert_eq!(error_code(&err), "IDEMPOTENCY_CONFLICT");

    let err = c.pay_invoice(pay_req("k2", &inv, 0)).await.unwrap_err();
    assert_eq!(error_code(&err), "PAYMENT_ALREADY_SUCCEEDED");
    assert_eq!(
        h.sim
            .send_count(&oa_invoice::decode(&inv).unwrap().payment_hash),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn a_failed_payment_has_a_receipt_and_its_hash_is_never_retried() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    // The merchant route costs 1_005 msat; a 10 msat fee limit leaves no route.
    let inv = h.invoice("merchant", 50_000);
    let resp = c
        .pay_invoice(pay_req("k1", &inv, 10))
        .await
        .unwrap()
        .into_inner();
    let p = resp.payment.clone().unwrap();
    assert_eq!(p.status(), PaymentStatus::Failed);
    assert_eq!(p.failure_code, "NO_ROUTE");
    let r = receipt(&resp);
    r.verify().unwrap();
    assert_eq!(r.body["status"], "failed");
    assert!(r.body.get("preimage").is_none());
    assert_eq!(r.body["failure_code"], "NO_ROUTE");

    let err = c.pay_invoice(pay_req("k2", &inv, 5_000)).await.unwrap_err();
    assert_eq!(error_code(&err), "PAYMENT_ALREADY_FAILED");
    h.stop().await;
}

#[tokio::test]
async fn bad_requests_are_typed_and_record_nothing() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("carol", 1_000);
    let cases: Vec<(wallet::PayInvoiceRequest, &str)> = vec![
        (pay_req("", &inv, 0), "INVALID_IDEMPOTENCY_KEY"),
        (pay_req("k", "lnbcrt1garbage", 0), "INVALID_INVOICE"),
        (
            pay_req("k", &inv.to_uppercase()[..20], 0),
            "INVALID_INVOICE",
        ),
        (
            wallet::PayInvoiceRequest {
                amount_msat: 5,
                ..pay_req("k", &inv, 0)
            },
            "AMOUNT_MISMATCH",
        ),
        (pay_req("k", &h.invoice("carol", 0), 0), "AMOUNT_REQUIRED"),
        (
            wallet::PayInvoiceRequest {
                fee_limit_msat: u64::MAX,
                ..pay_req("k", &inv, 0)
            },
            "INVALID_REQUEST",
        ),
    ];
    for (req, code) in cases {
        let err = c.pay_invoice(req).await.unwrap_err();
        assert_eq!(error_code(&err), code, "{err:?}");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    // A mainnet invoice on a regtest executor.
    let vectors = oa_testkit_vectors();
    let err = c.pay_invoice(pay_req("k", &vectors, 0)).await.unwrap_err();
    assert!(["WRONG_NETWORK", "INVOICE_EXPIRED"].contains(&error_code(&err).as_str()));
    // Nothing was recorded: the first valid request with key "k" is new.
    let ok = c
        .pay_invoice(pay_req("k", &inv, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.payment.unwrap().status(), PaymentStatus::Succeeded);
    h.stop().await;
}

fn oa_testkit_vectors() -> String {
    // The BOLT #11 spec's first example (mainnet, long expired).
    "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql".into()
}

#[tokio::test]
async fn hard_caps_hold_whatever_the_caller_asks() {
    let h = Harness::start(&["--max-payment-msat=100000", "--window-max-msat=150000"]).await;
    let mut c = h.hydra().await;
    let err = c
        .pay_invoice(pay_req("k1", &h.invoice("carol", 100_001), 0))
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "CAP_EXCEEDED");
    assert_eq!(
        err.metadata().get("oa-reason-code").unwrap(),
        "per_payment_max"
    );
    c.pay_invoice(pay_req("k2", &h.invoice("carol", 90_000), 0))
        .await
        .unwrap();
    let err = c
        .pay_invoice(pay_req("k3", &h.invoice("carol", 90_000), 0))
        .await
        .unwrap_err();
    assert_eq!(
        err.metadata().get("oa-reason-code").unwrap(),
        "rolling_window_max"
    );
    // The refused intent left nothing: no payment, and its key is free for another request.
    let refused = h.invoice("carol", 90_000);
    c.pay_invoice(pay_req("k4", &refused, 0)).await.unwrap_err();
    let hash = oa_invoice::decode(&refused)
        .unwrap()
        .payment_hash
        .to_string();
    let err = c
        .get_payment(wallet::GetPaymentRequest {
            payment_hash: hash.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "PAYMENT_NOT_FOUND");
    let paid = c
        .pay_invoice(pay_req("k4", &h.invoice("carol", 60_000), 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.payment.unwrap().status(), PaymentStatus::Succeeded);
    h.stop().await;

    let carol = {
        let h = Harness::start(&[]).await;
        let inv = h.invoice("carol", 1);
        let pk = oa_invoice::decode(&inv).unwrap().payee_pubkey;
        h.stop().await;
        pk
    };
    let h = Harness::start(&[&format!("--payee-allowlist={carol}")]).await;
    let mut c = h.hydra().await;
    c.pay_invoice(pay_req("k1", &h.invoice("carol", 1_000), 0))
        .await
        .unwrap();
    let err = c
        .pay_invoice(pay_req("k2", &h.invoice("merchant", 1_000), 5_000))
        .await
        .unwrap_err();
    assert_eq!(
        err.metadata().get("oa-reason-code").unwrap(),
        "payee_not_allowed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_hung_payment_is_tracked_to_its_end_in_order() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("carol", 7_000);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
    h.sim.hang(hash);
    let mut req = pay_req("k1", &inv, 0);
    req.timeout_ms = 50;
    let first = c.pay_invoice(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        first.payment.as_ref().unwrap().status(),
        PaymentStatus::InFlight
    );
    assert!(first.receipt.is_none());
    // A retry while in flight reports in flight and sends nothing.
    let retry = c.pay_invoice(req.clone()).await.unwrap().into_inner();
    assert_eq!(retry.payment.unwrap().status(), PaymentStatus::InFlight);
    h.sim.release(&hash);
    let done = oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut c = c.clone();
        let hash = hash.to_string();
        async move {
            let r = c
                .get_payment(wallet::GetPaymentRequest { payment_hash: hash })
                .await
                .ok()?
                .into_inner();
            (r.payment.as_ref()?.status() == PaymentStatus::Succeeded).then_some(r)
        }
    })
    .await
    .expect("tracked to success");
    receipt(&done).verify().unwrap();
    // Now the idempotent retry replays the terminal response.
    let replay = c.pay_invoice(req).await.unwrap().into_inner();
    assert_eq!(replay, done);
    assert_eq!(h.sim.send_count(&hash), 1);
    h.stop().await;
}

#[tokio::test]
async fn after_a_restart_in_flight_payments_are_tracked_never_resent() {
    let h = Harness::start(&[]).await;
    let mut c = h.hydra().await;
    let inv = h.invoice("carol", 3_000);
    let hash = oa_invoice::decode(&inv).unwrap().payment_hash;
    h.sim.hang(hash);
    let mut req = pay_req("k1", &inv, 0);
    req.timeout_ms = 20;
    let first = c.pay_invoice(req).await.unwrap().into_inner();
    assert_eq!(first.payment.unwrap().status(), PaymentStatus::InFlight);
    let (dir, ring, config, sim) = h.stop().await;

    sim.release(&hash);
    let h = Harness::start_with(dir, ring, config, Some(sim)).await;
    let mut c = h.hydra().await;
    let done = oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut c = c.clone();
        let hash = hash.to_string();
        async move {
            let r = c
                .get_payment(wallet::GetPaymentRequest { payment_hash: hash })
                .await
                .ok()?
                .into_inner();
            (r.payment.as_ref()?.status() == PaymentStatus::Succeeded).then_some(r)
        }
    })
    .await
    .expect("recovered payment is tracked to success");
    receipt(&done).verify().unwrap();
    assert_eq!(h.sim.send_count(&hash), 1);
    let _ = c.get_info(wallet::GetInfoRequest {}).await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn the_lnd_backend_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let config = crate::harness::config_on(dir.path(), &ring, None, &["--backend=lnd"]);
    let err = wallet_executor::build(&config, std::sync::Arc::new(oa_service::SystemClock))
        .await
        .err()
        .expect("the lnd backend without its url is refused");
    assert!(
        err.to_string().contains("--backend lnd needs --lnd-url"),
        "{err}"
    );
}

/// Many concurrent requests land in the same intent batches: every hash is sent once, every
/// key answers for one payment, and refusals inside a batch do not disturb the others.
#[tokio::test]
async fn concurrent_requests_sharing_keys_and_hashes_pay_each_hash_once() {
    let h = Harness::start(&["--window-max-msat=100000000"]).await;
    let c = h.hydra().await;
    let invoices: Vec<String> = (0..8).map(|i| h.invoice("carol", 1_000 + i)).collect();
    let mut tasks = Vec::new();
    for round in 0..6 {
        for (i, inv) in invoices.iter().enumerate() {
            let mut c = c.clone();
            // Rounds 0-2 share one key per invoice; rounds 3-5 use their own keys.
            let key = if round < 3 {
                format!("shared-{i}")
            } else {
                format!("own-{round}-{i}")
            };
            let inv = inv.clone();
            tasks.push(tokio::spawn(async move {
                (i, round, c.pay_invoice(pay_req(&key, &inv, 0)).await)
            }));
        }
    }
    let mut paid_by_shared_key = vec![None; invoices.len()];
    for t in tasks {
        let (i, round, r) = t.await.unwrap();
        match r {
            Ok(resp) => {
                let p = resp.into_inner().payment.unwrap();
                assert!(
                    round < 3,
                    "only the shared keys may own a payment, round {round}"
                );
                assert_eq!(p.idempotency_key, format!("shared-{i}"));
                assert!(matches!(
                    p.status(),
                    PaymentStatus::Succeeded | PaymentStatus::InFlight
                ));
                paid_by_shared_key[i] = Some(p.payment_hash);
            }
            Err(e) => {
                let code = error_code(&e);
                if round < 3 {
                    assert_eq!(code, "IDEMPOTENCY_IN_PROGRESS", "round {round}");
                } else {
                    assert!(
                        code == "PAYMENT_IN_FLIGHT" || code == "PAYMENT_ALREADY_SUCCEEDED",
                        "round {round}: {code}"
                    );
                }
            }
        }
    }
    for (i, inv) in invoices.iter().enumerate() {
        let hash = oa_invoice::decode(inv).unwrap().payment_hash;
        assert_eq!(h.sim.send_count(&hash), 1, "invoice {i}");
        assert_eq!(paid_by_shared_key[i], Some(hash.to_string()));
    }
    h.stop().await;
}
