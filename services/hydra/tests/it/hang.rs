//! An executor that hangs: Hydra's gRPC client gives up after its call timeout with an error
//! that is not a refusal (a 5xx, retryable or not), so a pay in flight is tracked and asked
//! again, never recorded as failed while the executor may still send it.

use std::time::{Duration, Instant};

use hydra::executor::{Executor, GrpcExecutor};
use oa_proto::wallet;
use oa_testkit::DevKeyring;

#[tokio::test]
async fn a_hanging_executor_costs_a_call_timeout_and_is_never_a_refusal() {
    // Accepts connections and never answers (not even the HTTP/2 handshake).
    let addr = oa_testkit::silent_peer().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let exec = GrpcExecutor::with_timeout(
        &format!("http://{addr}"),
        ring.identity("hydra").unwrap(),
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let paid = tokio::time::timeout(
        Duration::from_secs(10),
        exec.pay(wallet::PayInvoiceRequest {
            idempotency_key: "hydra:q_1".into(),
            invoice: "lnbcrt1".into(),
            amount_msat: 1_000,
            fee_limit_msat: 10,
            timeout_ms: 100,
        }),
    )
    .await
    .expect("bounded by the call timeout");
    let e = paid.expect_err("nothing answered");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(e.status.is_server_error(), "{e:?}");
    let info = tokio::time::timeout(Duration::from_secs(10), exec.info())
        .await
        .expect("bounded by the call timeout");
    assert!(info.is_err());
}
