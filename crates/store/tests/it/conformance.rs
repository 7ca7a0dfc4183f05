use std::{collections::BTreeSet, sync::Arc};

use oa_receipts::{ReceiptDraft, ReceiptKey};
use oa_store::{
    Db, MigrationSet,
    idempotency::{self, Claim},
    journal,
    receipt_log::{self, ReceiptLog},
    testing::all_backends,
};

static NONE: [&MigrationSet; 0] = [];

async fn each_backend<F, Fut>(f: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for t in all_backends(&NONE).await.expect("test database") {
        f(t.db.clone()).await;
        t.cleanup().await.expect("cleanup");
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    each_backend(|db| async move {
        oa_store::migrate::run(&db, &[])
            .await
            .expect("second run is a no-op");
    })
    .await;
}

#[tokio::test]
async fn idempotency_claim_replays_and_detects_conflicts() {
    each_backend(|db| async move {
        let claimed = |scope: &'static str| {
            let db = db.clone();
            async move {
                let mut conn = db.reader().await.unwrap();
                idempotency::is_claimed(&mut conn, scope, "k1")
                    .await
                    .unwrap()
            }
        };
        assert!(!claimed("s").await);
        let mut tx = db.begin().await.unwrap();
        assert_eq!(
            idempotency::claim(&mut tx, "s", "k1", "fp1", 1)
                .await
                .unwrap(),
            Claim::New
        );
        tx.commit().await.unwrap();
        assert!(claimed("s").await);
        assert!(!claimed("other").await);

        let mut tx = db.begin().await.unwrap();
        assert_eq!(
            idempotency::claim(&mut tx, "s", "k1", "fp1", 2)
                .await
                .unwrap(),
            Claim::InProgress { resource_id: None }
        );
        idempotency::set_resource(&mut tx, "s", "k1", "pay_1")
            .await
            .unwrap();
        assert_eq!(
            idempotency::claim(&mut tx, "s", "k1", "fp2", 2)
                .await
                .unwrap(),
            Claim::Conflict
        );
        idempotency::complete(&mut tx, "s", "k1", 201, "{\"ok\":true}", 3)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(claimed("s").await, "a completed key stays claimed");

        let mut tx = db.begin().await.unwrap();
        assert_eq!(
            idempotency::claim(&mut tx, "s", "k1", "fp1", 4)
                .await
                .unwrap(),
            Claim::Replay {
                status_code: 201,
                response: "{\"ok\":true}".into()
            }
        );
        // The same key in another scope is independent.
        assert_eq!(
            idempotency::claim(&mut tx, "other", "k1", "fp9", 4)
                .await
                .unwrap(),
            Claim::New
        );
        // A claim that names its resource up front answers with it while in progress.
        assert_eq!(
            idempotency::claim_for(&mut tx, "s", "k2", "fp1", Some("pay_2"), 4)
                .await
                .unwrap(),
            Claim::New
        );
        assert_eq!(
            idempotency::claim(&mut tx, "s", "k2", "fp1", 5)
                .await
                .unwrap(),
            Claim::InProgress {
                resource_id: Some("pay_2".into())
            }
        );
        tx.rollback().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn many_claims_at_once_answer_as_one_at_a_time() {
    each_backend(|db| async move {
        let mut tx = db.begin().await.unwrap();
        assert_eq!(
            idempotency::claim(&mut tx, "s", "done", "fp", 1)
                .await
                .unwrap(),
            Claim::New
        );
        idempotency::complete(&mut tx, "s", "done", 201, "{}", 1)
            .await
            .unwrap();
        let claims = idempotency::claim_many(
            &mut tx,
            &[
                ("s", "a", "fp", Some("pay_a")),
                ("s", "done", "fp", None),
                ("s", "done", "other", None),
                ("s", "b", "fp", None),
                // The same key again in the same call: the first request holds it.
                ("s", "a", "fp", None),
                ("s", "a", "other", None),
            ],
            2,
        )
        .await
        .unwrap();
        let replay = Claim::Replay {
            status_code: 201,
            response: "{}".into(),
        };
        let a = Claim::InProgress {
            resource_id: Some("pay_a".into()),
        };
        assert_eq!(
            claims,
            [
                Claim::New,
                replay,
                Claim::Conflict,
                Claim::New,
                a,
                Claim::Conflict
            ]
        );
        assert!(
            idempotency::claim_many(&mut tx, &[], 2)
                .await
                .unwrap()
                .is_empty()
        );
        tx.commit().await.unwrap();
        // One claim alone takes the plain statement, with the same answers.
        let mut tx = db.begin().await.unwrap();
        let one = |key, fingerprint| [("s", key, fingerprint, None)];
        let again = idempotency::claim_many(&mut tx, &one("b", "fp"), 3).await;
        assert_eq!(again.unwrap(), [Claim::InProgress { resource_id: None }]);
        let other = idempotency::claim_many(&mut tx, &one("b", "other"), 3).await;
        assert_eq!(other.unwrap(), [Claim::Conflict]);
        let new = idempotency::claim_many(&mut tx, &one("c", "fp"), 3).await;
        assert_eq!(new.unwrap(), [Claim::New]);
        tx.rollback().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn many_keys_complete_in_one_statement_and_a_missing_one_is_an_error() {
    each_backend(|db| async move {
        let mut tx = db.begin().await.unwrap();
        for key in ["a", "b", "c"] {
            let claim = idempotency::claim(&mut tx, "s", key, "fp", 1).await;
            assert_eq!(claim.unwrap(), Claim::New);
        }
        idempotency::complete_many(
            &mut tx,
            &[("s", "a", 201, "{\"a\":1}"), ("s", "c", 403, "{\"c\":3}")],
            2,
        )
        .await
        .unwrap();
        idempotency::complete_many(&mut tx, &[], 2).await.unwrap();
        let replay = |status_code, response: &str| Claim::Replay {
            status_code,
            response: response.into(),
        };
        let claim = idempotency::claim(&mut tx, "s", "a", "fp", 3).await;
        assert_eq!(claim.unwrap(), replay(201, "{\"a\":1}"));
        let claim = idempotency::claim(&mut tx, "s", "c", "fp", 3).await;
        assert_eq!(claim.unwrap(), replay(403, "{\"c\":3}"));
        let claim = idempotency::claim(&mut tx, "s", "b", "fp", 3).await;
        assert_eq!(claim.unwrap(), Claim::InProgress { resource_id: None });
        // A key that was never claimed fails the whole call.
        let err = idempotency::complete_many(
            &mut tx,
            &[("s", "b", 201, "{}"), ("s", "nope", 201, "{}")],
            4,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("1 of 2"), "{err}");
        tx.rollback().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn concurrent_claims_of_one_key_have_one_winner() {
    each_backend(|db| async move {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                let claim = idempotency::claim(&mut tx, "s", "hot", "fp", i)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                claim
            }));
        }
        let mut new = 0;
        for t in tasks {
            match t.await.unwrap() {
                Claim::New => new += 1,
                Claim::InProgress { .. } => {}
                other => panic!("unexpected claim {other:?}"),
            }
        }
        assert_eq!(new, 1);
    })
    .await;
}

/// `append_many` continues a topic's sequence without gaps, in order, mixed with single appends,
/// under concurrency; nothing for an empty list.
#[tokio::test]
async fn journal_appends_many_in_order_without_gaps() {
    each_backend(|db| async move {
        let mut tasks = Vec::new();
        for i in 0..10u64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                if i % 3 == 0 {
                    journal::append(&mut tx, "t", "one", &serde_json::json!({"i": i, "j": 0}), i)
                        .await
                        .unwrap();
                } else {
                    let events: Vec<(&str, serde_json::Value)> = (0..i)
                        .map(|j| ("many", serde_json::json!({"i": i, "j": j})))
                        .collect();
                    journal::append_many(&mut tx, "t", &events, i)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        assert_eq!(journal::append_many(&mut tx, "t", &[], 0).await.unwrap(), 0);
        tx.commit().await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        let all = journal::read(&mut conn, "t", 0, 1_000).await.unwrap();
        // 4 single appends (i = 0, 3, 6, 9) and 1+2+4+5+7+8 events from the others.
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=31).collect::<Vec<_>>()
        );
        // Each transaction's events are contiguous and in the order given.
        for w in all.windows(2) {
            if w[0].payload["i"] == w[1].payload["i"] {
                assert_eq!(
                    w[0].payload["j"].as_u64().unwrap() + 1,
                    w[1].payload["j"].as_u64().unwrap()
                );
            }
        }
        assert_eq!(journal::head(&mut conn, "t").await.unwrap(), 31);
    })
    .await;
}

#[tokio::test]
async fn journal_sequences_are_gapless_per_topic() {
    each_backend(|db| async move {
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let topic = if i % 2 == 0 { "even" } else { "odd" };
                let mut tx = db.begin().await.unwrap();
                let seq = journal::append(&mut tx, topic, "tick", &serde_json::json!({"i": i}), i)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                (i, seq)
            }));
        }
        let mut appended = std::collections::BTreeMap::new();
        for t in tasks {
            let (i, seq) = t.await.unwrap();
            appended.insert(i, seq);
        }
        let mut conn = db.pool().acquire().await.unwrap();
        let even = journal::read(&mut conn, "even", 0, 100).await.unwrap();
        assert_eq!(
            even.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        // Each append answered the seq its event was stored under, with what it was given.
        let odd = journal::read(&mut conn, "odd", 0, 100).await.unwrap();
        for e in even.iter().chain(&odd) {
            let i = e.payload["i"].as_u64().unwrap();
            assert_eq!(appended[&i], e.seq, "event {i}");
            assert_eq!((e.kind.as_str(), e.created_at_ms), ("tick", i));
            assert_eq!(e.topic, if i % 2 == 0 { "even" } else { "odd" });
        }
        let after = journal::read(&mut conn, "odd", 7, 100).await.unwrap();
        assert_eq!(
            after.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        let page = journal::read(&mut conn, "odd", 0, 3).await.unwrap();
        assert_eq!(page.len(), 3);
        assert!(
            journal::read(&mut conn, "none", 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

fn draft(i: usize) -> ReceiptDraft {
    let mut body = serde_json::Map::new();
    body.insert("n".into(), serde_json::Value::String(i.to_string()));
    ReceiptDraft {
        schema: "oa.test.thing_receipt.v1".into(),
        receipt_id: format!("rcpt_{i}"),
        idempotency_key: format!("k{i}"),
        links: vec![],
        body,
    }
}

#[tokio::test]
async fn receipt_log_chains_under_concurrency() {
    each_backend(|db| async move {
        let log = ReceiptLog::new("test", Arc::new(ReceiptKey::generate()));
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (db, log) = (db.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                let r = log
                    .append(&mut tx, draft(i), 1_700_000_000_000)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                r
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut conn = db.pool().acquire().await.unwrap();
        let all = receipt_log::list(&mut conn, "test", 0, 100).await.unwrap();
        assert_eq!(all.len(), 12);
        assert!(
            oa_receipts::verify_chain(&all).is_empty(),
            "chain must verify"
        );
        for r in &all {
            r.verify().expect("receipt verifies");
        }
        let ids: BTreeSet<_> = all.iter().map(|r| r.receipt_id.clone()).collect();
        assert_eq!(ids.len(), 12);
        assert_eq!(receipt_log::size(&mut conn, "test").await.unwrap(), 12);
        let page = receipt_log::list(&mut conn, "test", 10, 100).await.unwrap();
        assert_eq!(
            page.iter().map(|r| r.log_index).collect::<Vec<_>>(),
            vec![10, 11]
        );
        let found = receipt_log::get_by_hash(&mut conn, &all[3].hash)
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(&all[3]));
        let stored = receipt_log::get_stored(&mut conn, Some(&all[3].hash.to_string()))
            .await
            .unwrap();
        assert_eq!(stored.as_ref(), Some(&all[3]));
        assert_eq!(
            receipt_log::get_stored(&mut conn, None).await.unwrap(),
            None
        );
        assert!(
            receipt_log::get_stored(&mut conn, Some("not-a-hash"))
                .await
                .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn a_rolled_back_receipt_leaves_no_trace() {
    each_backend(|db| async move {
        let log = ReceiptLog::new("test", Arc::new(ReceiptKey::generate()));
        let mut tx = db.begin().await.unwrap();
        log.append(&mut tx, draft(0), 1).await.unwrap();
        tx.rollback().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let r = log.append(&mut tx, draft(1), 2).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(r.log_index, 0);
        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(receipt_log::size(&mut conn, "test").await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_batch_appends_a_chain_and_unsealed_or_unstored_receipts_leave_no_trace() {
    each_backend(|db| async move {
        let log = ReceiptLog::new("test", Arc::new(ReceiptKey::generate()));
        let mut tx = db.begin().await.unwrap();
        log.append(&mut tx, draft(0), 1).await.unwrap();
        tx.commit().await.unwrap();

        // Sealed but never stored: the log is unchanged.
        let mut tx = db.begin().await.unwrap();
        let mut batch = log.batch(&mut tx).await.unwrap();
        batch.seal(draft(9_000), 2).unwrap();
        drop(batch);
        tx.commit().await.unwrap();

        // 300 receipts (more than one multi-row statement), one taken back in the middle.
        let mut tx = db.begin().await.unwrap();
        let mut batch = log.batch(&mut tx).await.unwrap();
        for i in 1..=300 {
            batch.seal(draft(i), 3).unwrap();
            if i == 150 {
                assert_eq!(batch.unseal_last().unwrap().receipt_id, "rcpt_150");
            }
        }
        assert_eq!(batch.len(), 299);
        let stored = batch.store(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(stored.len(), 299);
        assert_eq!((stored[0].log_index, stored[298].log_index), (1, 299));

        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(receipt_log::size(&mut conn, "test").await.unwrap(), 300);
        let all = receipt_log::list(&mut conn, "test", 0, 1_000)
            .await
            .unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(&all[1..], &stored[..]);
        assert!(
            oa_receipts::verify_chain(&all).is_empty(),
            "chain must verify"
        );
        assert!(
            all.iter()
                .all(|r| r.receipt_id != "rcpt_150" && r.receipt_id != "rcpt_9000")
        );
        drop(conn);

        // An empty batch stores nothing and the next append continues the chain.
        let mut tx = db.begin().await.unwrap();
        let batch = log.batch(&mut tx).await.unwrap();
        assert!(batch.is_empty());
        assert!(batch.store(&mut tx).await.unwrap().is_empty());
        let next = log.append(&mut tx, draft(301), 4).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!((next.log_index, next.prev_hash), (300, stored[298].hash));
    })
    .await;
}

#[tokio::test]
async fn checkpoints_sign_the_merkle_root_of_the_log_once_per_size() {
    each_backend(|db| async move {
        let key = Arc::new(ReceiptKey::generate());
        let log = ReceiptLog::new("test", key.clone());
        let mut conn = db.writer().await.unwrap();
        assert!(log.checkpoint(&mut conn, 1).await.unwrap().is_none());
        drop(conn);
        for i in 0..5 {
            let mut tx = db.begin().await.unwrap();
            log.append(&mut tx, draft(i), 10).await.unwrap();
            tx.commit().await.unwrap();
        }
        let mut conn = db.writer().await.unwrap();
        let cp = log.checkpoint(&mut conn, 20).await.unwrap().unwrap();
        assert!(log.checkpoint(&mut conn, 21).await.unwrap().is_none());
        let all = receipt_log::list(&mut conn, "test", 0, 100).await.unwrap();
        let leaves: Vec<_> = all
            .iter()
            .map(|r| oa_receipts::merkle::leaf_hash(r.hash.as_bytes()))
            .collect();
        assert_eq!(
            receipt_log::leaf_hashes(&mut conn, "test", 5)
                .await
                .unwrap(),
            leaves
        );
        let checked = oa_receipts::Checkpoint::verify(&cp.note, "test", key.key_id()).unwrap();
        assert_eq!(
            (checked.tree_size, checked.root),
            (5, oa_receipts::merkle::root(&leaves))
        );
        let listed = receipt_log::list_checkpoints(&mut conn, "test", 0, 10)
            .await
            .unwrap();
        assert_eq!(listed, vec![cp.clone()]);
        assert_eq!(
            receipt_log::latest_checkpoint(&mut conn, "test")
                .await
                .unwrap(),
            Some(cp)
        );
        drop(conn);
        // The next checkpoints resume from the stored frontier; their roots must still be the
        // roots of the whole log.
        for round in 0..3 {
            for i in 0..(3 + round) {
                let mut tx = db.begin().await.unwrap();
                log.append(&mut tx, draft(100 * (round + 1) + i), 30)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            let mut conn = db.writer().await.unwrap();
            let cp = log.checkpoint(&mut conn, 40).await.unwrap().unwrap();
            let size = receipt_log::size(&mut conn, "test").await.unwrap();
            let leaves = receipt_log::leaf_hashes(&mut conn, "test", size)
                .await
                .unwrap();
            assert_eq!(cp.tree_size, size);
            assert_eq!(*cp.root_hash.as_bytes(), oa_receipts::merkle::root(&leaves));
        }
    })
    .await;
}

#[tokio::test]
async fn pruning_raises_the_journal_floor_and_never_lowers_it() {
    each_backend(|db| async move {
        let mut tx = db.begin().await.unwrap();
        for _ in 0..5 {
            journal::append(&mut tx, "t", "k", &serde_json::json!({}), 1)
                .await
                .unwrap();
        }
        journal::prune(&mut tx, "t", 3).await.unwrap();
        journal::prune(&mut tx, "t", 2).await.unwrap();
        tx.commit().await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(journal::floor(&mut conn, "t").await.unwrap(), 3);
        assert_eq!(journal::head(&mut conn, "t").await.unwrap(), 5);
        let left = journal::read(&mut conn, "t", 0, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    })
    .await;
}

#[tokio::test]
async fn pruning_by_age_keeps_recent_events_of_every_topic() {
    each_backend(|db| async move {
        let mut tx = db.begin().await.unwrap();
        for (topic, at) in [("a", 10), ("a", 20), ("a", 30), ("b", 5), ("b", 40)] {
            journal::append(&mut tx, topic, "k", &serde_json::json!({}), at)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert_eq!(journal::prune_older_than(&mut tx, 25).await.unwrap(), 2);
        tx.commit().await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(journal::floor(&mut conn, "a").await.unwrap(), 2);
        assert_eq!(journal::floor(&mut conn, "b").await.unwrap(), 1);
        let a = journal::read(&mut conn, "a", 2, 10).await.unwrap();
        assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    })
    .await;
}

/// The writer is lent to one transaction at a time; a transaction dropped without commit rolls
/// back and frees it; reads go on beside an open transaction; on SQLite the pool cannot write.
#[tokio::test]
async fn transactions_share_the_writer_and_reads_run_beside_them() {
    each_backend(|db| async move {
        sqlx::query("CREATE TABLE t_writer (k TEXT PRIMARY KEY)")
            .execute(&mut *db.writer().await.unwrap())
            .await
            .unwrap();
        let count = |db: Db| async move {
            sqlx::query_scalar::<sqlx::Any, i64>("SELECT COUNT(*) FROM t_writer")
                .fetch_one(db.pool())
                .await
                .unwrap()
        };
        // Dropped without commit: rolled back, and the next transaction gets the writer.
        {
            let mut tx = db.begin().await.unwrap();
            sqlx::query("INSERT INTO t_writer (k) VALUES ('dropped')")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let mut tx = tokio::time::timeout(std::time::Duration::from_secs(5), db.begin())
            .await
            .expect("the writer is free again")
            .unwrap();
        sqlx::query("INSERT INTO t_writer (k) VALUES ('kept')")
            .execute(&mut *tx)
            .await
            .unwrap();
        // A read while the transaction is open neither waits for it nor sees its row.
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(5), count(db.clone()))
                .await
                .expect("reads do not wait for the writer"),
            0
        );
        tx.commit().await.unwrap();
        assert_eq!(count(db.clone()).await, 1);
        if db.backend() == oa_store::Backend::Sqlite {
            let refused = sqlx::query("INSERT INTO t_writer (k) VALUES ('stray')")
                .execute(db.pool())
                .await
                .expect_err("the pool only reads");
            assert!(refused.to_string().contains("readonly"), "{refused}");
            db.close().await;
            assert!(db.begin().await.is_err(), "closed");
        }
    })
    .await;
}

/// Every loan of the writing connection is counted with how long it was held; on SQLite, with
/// one writer, how long a second transaction waited behind the first.
#[tokio::test]
async fn the_writers_loans_waits_and_holds_are_counted() {
    use std::time::Duration;
    each_backend(|db| async move {
        let before = db.writer_use();
        let hold = Duration::from_millis(30);
        let first = db.begin().await.unwrap();
        let mut second = Box::pin(db.begin());
        if db.backend() == oa_store::Backend::Sqlite {
            // Polled for `hold`: queued behind `first` all that time.
            assert!(
                tokio::time::timeout(hold, &mut second).await.is_err(),
                "one writer"
            );
        } else {
            tokio::time::sleep(hold).await;
        }
        first.commit().await.unwrap();
        let second = second.await.unwrap();
        second.rollback().await.unwrap();
        let after = db.writer_use();
        assert_eq!(after.loans - before.loans, 2);
        assert!(after.held - before.held >= hold, "{before:?} {after:?}");
        if db.backend() == oa_store::Backend::Sqlite {
            assert!(after.waited - before.waited >= hold, "{before:?} {after:?}");
        }
        // Clones share the counts.
        assert_eq!(db.clone().writer_use(), after);
    })
    .await;
}

/// A wait for SQLite's writer that times out is refused, typed, and still counted as waiting
/// (it is the worst wait there is), but not as a loan.
#[tokio::test]
async fn a_wait_for_the_writer_that_times_out_is_counted() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    let timeout = Duration::from_millis(50);
    let db = Db::connect(
        &url,
        &oa_store::DbOptions {
            max_connections: 1,
            acquire_timeout: timeout,
        },
    )
    .await
    .unwrap();
    let held = db.begin().await.unwrap();
    let before = db.writer_use();
    let refused = db.begin().await.err().expect("the writer is held");
    assert!(
        matches!(
            refused,
            oa_store::StoreError::Database(sqlx::Error::PoolTimedOut)
        ),
        "{refused:?}"
    );
    let after = db.writer_use();
    assert_eq!(after.loans, before.loans);
    assert!(
        after.waited - before.waited >= timeout,
        "{before:?} {after:?}"
    );
    held.rollback().await.unwrap();
    db.close().await;
}

/// SQLite's write-ahead log is checkpointed beside the writer: committed pages reach the
/// database file without the writer's commit doing it, and nothing is left to copy. An idle
/// database is not checkpointed again.
#[tokio::test]
async fn sqlite_checkpoints_its_log_beside_the_writer() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let db = Db::connect(&url, &oa_store::DbOptions::default())
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    sqlx::query("CREATE TABLE filler (n INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Well under the writer's own threshold: only the background checkpoints copy these.
    for n in 0..50i64 {
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO filler (n, text) VALUES ($1, $2)")
            .bind(n)
            .bind("x".repeat(2_000))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    // Checkpointed into the database file itself, with nothing left to copy.
    let file = dir.path().join("c.db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = db.checkpoints();
        let size = std::fs::metadata(&file).unwrap().len();
        if c.runs > 0 && c.wal_pages_copied == c.wal_pages && size >= 100_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{c:?}, {size} bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A few ticks for a run begun before the last commit to be followed by one after it; from
    // then on, with nothing written, nothing to do.
    tokio::time::sleep(oa_store::CHECKPOINT_EVERY * 4).await;
    let settled = db.checkpoints();
    assert_eq!(settled.wal_pages_copied, settled.wal_pages, "{settled:?}");
    tokio::time::sleep(oa_store::CHECKPOINT_EVERY * 4).await;
    assert_eq!(db.checkpoints().runs, settled.runs);
    db.close().await;
}
