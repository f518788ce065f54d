//! `two_phase = true` (protocol 3, Postgres ≥ 15): a prepared transaction arrives from the
//! server at PREPARE, but cdc-host delivers it at COMMIT PREPARED — in commit order, with
//! the ids protocol 1 gives it — and a ROLLBACK PREPARED delivers nothing. The slot is
//! never confirmed past an unresolved PREPARE, so a `kill -9` between PREPARE and COMMIT
//! PREPARED loses nothing.

use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;
use cdc_test_harness::{self as harness, HostProcess, TestDb};

const TWO_PHASE: &str = "proto_version = 3\ntwo_phase = true\n";

async fn two_phase_db(hint: &str) -> Option<TestDb> {
    let major = harness::server().major();
    if major < 15 {
        eprintln!("two_phase needs Postgres 15 (the server is {major})");
        return None;
    }
    Some(
        db_with(
            hint,
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "CREATE PUBLICATION p FOR TABLE t",
        )
        .await,
    )
}

/// Rolls back what a test left prepared (a failed assertion): a prepared transaction would
/// make every later slot creation on the server wait for it.
pub(crate) struct RollbackLeftovers(pub(crate) String);

impl Drop for RollbackLeftovers {
    fn drop(&mut self) {
        let dsn = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(c) = harness::try_connect(&dsn).await else {
                    return;
                };
                let Ok(rows) = c
                    .query(
                        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                        &[],
                    )
                    .await
                else {
                    return;
                };
                for r in rows {
                    let gid: String = r.get(0);
                    let _ = c
                        .batch_execute(&format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''")))
                        .await;
                }
            });
        })
        .join();
    }
}

fn rows(out: &[Json]) -> Vec<i64> {
    out.iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect()
}

/// The slot's confirmed position.
async fn confirmed(db: &TestDb, slot: &str) -> String {
    db.client()
        .await
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

/// Whether `a` < `b` as LSNs.
async fn lsn_lt(db: &TestDb, a: &str, b: &str) -> bool {
    db.client()
        .await
        .query_one("SELECT $1::text::pg_lsn < $2::text::pg_lsn", &[&a, &b])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_arrive_at_commit_prepared_as_protocol_1_sends_them() {
    let Some(db) = two_phase_db("twophase").await else {
        return;
    };
    let _cleanup = RollbackLeftovers(db.dsn());
    let (_d1, plain_cfg) = config(&db.dsn(), "s_2pc_p1", "p", "");
    let spool = tempfile::tempdir().unwrap();
    let (_d2, tp_cfg) = config(
        &db.dsn(),
        "s_2pc_tp",
        "p",
        &format!(
            "{TWO_PHASE}\n[pipeline]\nmax_changes = 100\nspool_dir = {:?}\n",
            spool.path().display().to_string()
        ),
    );
    let mut plain = start_host(&db, &plain_cfg, "s_2pc_p1").await;
    let mut tp = start_host(&db, &tp_cfg, "s_2pc_tp").await;
    let c = db.client().await;
    c.batch_execute("INSERT INTO t VALUES (1, 'before')")
        .await
        .unwrap();
    // Prepared, with more rows than a batch holds.
    c.batch_execute(
        "BEGIN; INSERT INTO t SELECT g, 'prepared' FROM generate_series(100, 349) g; PREPARE TRANSACTION 'g1'",
    )
    .await
    .unwrap();
    let prepare_lsn = harness::current_wal_lsn(&c).await;
    c.batch_execute("INSERT INTO t VALUES (2, 'after the prepare')")
        .await
        .unwrap();
    // Rolled back: never delivered.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (500, 'rolled back'); PREPARE TRANSACTION 'g2'")
        .await
        .unwrap();
    c.batch_execute("ROLLBACK PREPARED 'g2'").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (3, 'before the commit')")
        .await
        .unwrap();
    let seen = wait_json(&mut tp, 3).await;
    assert_eq!(
        rows(&seen),
        vec![1, 2, 3],
        "nothing of g1 before its COMMIT PREPARED"
    );
    // The slot waits before g1's PREPARE, although later transactions are delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = confirmed(&db, "s_2pc_tp").await;
    assert!(
        lsn_lt(&db, &held, &prepare_lsn).await,
        "confirmed {held}, PREPARE at {prepare_lsn}"
    );
    c.batch_execute("COMMIT PREPARED 'g1'").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (4, 'last')")
        .await
        .unwrap();
    let all = wait_json(&mut tp, 254).await;
    let mut want = vec![1, 2, 3];
    want.extend(100..350);
    want.push(4);
    assert_eq!(rows(&all), want);
    let ref_out = wait_json(&mut plain, 254).await;
    let end = harness::current_wal_lsn(&c).await;
    for slot in ["s_2pc_p1", "s_2pc_tp"] {
        harness::wait_for_confirmed_flush(&c, slot, &end, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", tp.stderr_tail(20)));
    }
    stop_clean(&mut plain).await;
    stop_clean(&mut tp).await;
    // Byte for byte what protocol 1 prints: same ids, same commit positions and times.
    assert_eq!(ref_out.len(), all.len());
    for (i, (a, b)) in plain
        .stdout_lines()
        .iter()
        .zip(&tp.stdout_lines())
        .enumerate()
    {
        assert_eq!(a, b, "line {i} differs between protocol 1 and two-phase");
    }
    let spooled = std::fs::read_dir(spool.path().join("s_2pc_tp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(spooled, 0, "spool files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_prepare_and_commit_prepared_loses_nothing() {
    let Some(db) = two_phase_db("twophase_kill").await else {
        return;
    };
    let _cleanup = RollbackLeftovers(db.dsn());
    let (_d, cfg) = config(&db.dsn(), "s_2pc_kill", "p", TWO_PHASE);
    let mut host = start_host(&db, &cfg, "s_2pc_kill").await;
    let c = db.client().await;
    c.batch_execute(
        "BEGIN; INSERT INTO t SELECT g, 'prepared' FROM generate_series(100, 199) g; PREPARE TRANSACTION 'k1'",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, 'after the prepare')")
        .await
        .unwrap();
    let seen = wait_json(&mut host, 1).await;
    assert_eq!(rows(&seen), vec![1]);
    host.kill9().unwrap();
    host.wait_exit(WAIT).await.unwrap();
    c.batch_execute("COMMIT PREPARED 'k1'").await.unwrap();
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    // Row 1 comes again (its confirmation was held behind the PREPARE), then all of k1.
    let out = wait_json(&mut host, 101).await;
    let end = harness::current_wal_lsn(&c).await;
    harness::wait_for_confirmed_flush(&c, "s_2pc_kill", &end, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(20)));
    stop_clean(&mut host).await;
    let mut want = vec![1];
    want.extend(100..200);
    assert_eq!(rows(&out), want);
    assert_eq!(out[0]["id"], seen[0]["id"], "a replay keeps its id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_needs_protocol_3_and_a_two_phase_slot_needs_two_phase() {
    let Some(db) = two_phase_db("twophase_cfg").await else {
        return;
    };
    let (_d, cfg) = config(
        &db.dsn(),
        "s_2pc_cfg",
        "p",
        "proto_version = 2\ntwo_phase = true\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["check".as_ref(), cfg.as_os_str()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("source.two_phase") && err.contains("proto_version = 3"),
        "{err}"
    );
    // A slot once started with two_phase stays two-phase: turning it off is refused.
    let (_d1, on) = config(&db.dsn(), "s_2pc_cfg", "p", TWO_PHASE);
    let mut host = start_host(&db, &on, "s_2pc_cfg").await;
    stop_clean(&mut host).await;
    let (_d2, off) = config(&db.dsn(), "s_2pc_cfg", "p", "");
    let mut host = HostProcess::spawn(BIN, &off).unwrap();
    assert!(!host.wait_exit(WAIT).await.unwrap().success());
    assert!(
        host.stderr()
            .contains("source.two_phase = false: set two_phase = true"),
        "{}",
        host.stderr_tail(10)
    );
}

/// Streaming and two-phase together: a prepared transaction larger than
/// `logical_decoding_work_mem` arrives in stream blocks and a Stream Prepare; it is still
/// delivered at COMMIT PREPARED, as protocol 1 delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_prepared_transaction_is_delivered_at_commit_prepared() {
    let Some(db) = two_phase_db("twophase_stream").await else {
        return;
    };
    let _cleanup = RollbackLeftovers(db.dsn());
    db.exec(crate::streaming::SMALL_WORK_MEM).await;
    let (_d1, plain_cfg) = config(&db.dsn(), "s_2pcs_p1", "p", "");
    let spool = tempfile::tempdir().unwrap();
    let (_d2, tp_cfg) = config(
        &db.dsn(),
        "s_2pcs_tp",
        "p",
        &format!(
            "proto_version = 3\ntwo_phase = true\nstreaming = \"on\"\n\n[pipeline]\nmemory_budget_mb = 64\nspool_dir = {:?}\n",
            spool.path().display().to_string()
        ),
    );
    let mut plain = start_host(&db, &plain_cfg, "s_2pcs_p1").await;
    let mut tp = start_host(&db, &tp_cfg, "s_2pcs_tp").await;
    let c = db.client().await;
    c.batch_execute("INSERT INTO t VALUES (1, 'before')")
        .await
        .unwrap();
    c.batch_execute(
        "BEGIN; INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1000, 2999) g; PREPARE TRANSACTION 's1'",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO t VALUES (2, 'after the prepare')")
        .await
        .unwrap();
    let seen = wait_json(&mut tp, 2).await;
    assert_eq!(rows(&seen), vec![1, 2]);
    c.batch_execute("COMMIT PREPARED 's1'").await.unwrap();
    let all = wait_json(&mut tp, 2002).await;
    let mut want = vec![1, 2];
    want.extend(1000..3000);
    assert_eq!(rows(&all), want);
    wait_json(&mut plain, 2002).await;
    let end = harness::current_wal_lsn(&c).await;
    for slot in ["s_2pcs_p1", "s_2pcs_tp"] {
        harness::wait_for_confirmed_flush(&c, slot, &end, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", tp.stderr_tail(20)));
    }
    let streamed: i64 = c
        .query_one(
            "SELECT coalesce((SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 's_2pcs_tp'), 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        streamed >= 1,
        "the server did not stream the prepared transaction"
    );
    stop_clean(&mut plain).await;
    stop_clean(&mut tp).await;
    for (i, (a, b)) in plain
        .stdout_lines()
        .iter()
        .zip(&tp.stdout_lines())
        .enumerate()
    {
        assert_eq!(
            a, b,
            "line {i} differs between protocol 1 and streamed two-phase"
        );
    }
}
