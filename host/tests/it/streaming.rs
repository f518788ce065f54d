//! Protocol 2+ streaming of in-progress transactions (`streaming = "on"`): the database is
//! set to `logical_decoding_work_mem = 64kB`, so a few hundred rows are enough for the
//! walsender to stream a transaction while it runs. Each test runs a protocol 1 host and a
//! streaming host side by side on their own slots and asserts that they print the same
//! lines — ids, order and values — and that the server really streamed
//! (`pg_stat_replication_slots.stream_txns`).

use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;
use cdc_test_harness::{self as harness, HostProcess, TestDb};

/// Makes every walsender of this database stream transactions past 64 kB.
pub const SMALL_WORK_MEM: &str = "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = %L', current_database(), '64kB'); END $$";

/// `[source]` keys and `[pipeline]` for a streaming host spilling under `spool`. A 64 MiB
/// budget leaves streamed transactions 4 MiB of memory.
pub fn streaming_extra(spool: &std::path::Path, pipeline: &str) -> String {
    format!(
        "proto_version = 2\nstreaming = \"on\"\n\n[pipeline]\nmemory_budget_mb = 64\nspool_dir = {:?}\n{pipeline}\n",
        spool.display().to_string()
    )
}

async fn streaming_db(hint: &str) -> TestDb {
    let db = db_with(
        hint,
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    db.exec(SMALL_WORK_MEM).await;
    db
}

/// A protocol 1 host and a streaming one, each on its own slot.
struct Pair {
    _dirs: Vec<tempfile::TempDir>,
    spool: tempfile::TempDir,
    plain: HostProcess,
    streamed: HostProcess,
    plain_slot: String,
    streamed_slot: String,
}

async fn pair(db: &TestDb, name: &str) -> Pair {
    let spool = tempfile::tempdir().unwrap();
    let plain_slot = format!("s_{name}_p1");
    let streamed_slot = format!("s_{name}_st");
    let (d1, c1) = config(&db.dsn(), &plain_slot, "p", "");
    let (d2, c2) = config(
        &db.dsn(),
        &streamed_slot,
        "p",
        &streaming_extra(&spool.path().join("spool"), ""),
    );
    let plain = start_host(db, &c1, &plain_slot).await;
    let streamed = start_host_env(db, &c2, &streamed_slot, &[("RUST_LOG", "cdc_host=info")]).await;
    Pair {
        _dirs: vec![d1, d2],
        spool,
        plain,
        streamed,
        plain_slot,
        streamed_slot,
    }
}

impl Pair {
    /// Waits until both slots are confirmed past every commit so far, stops both hosts and
    /// returns their lines (protocol 1, streamed).
    async fn finish(&mut self, db: &TestDb) -> (Vec<String>, Vec<String>) {
        let client = db.client().await;
        let end = harness::current_wal_lsn(&client).await;
        for (slot, host) in [
            (&self.plain_slot, &mut self.plain),
            (&self.streamed_slot, &mut self.streamed),
        ] {
            if let Err(e) =
                harness::wait_for_confirmed_flush(&client, slot, &end, Duration::from_secs(120))
                    .await
            {
                panic!("{e:#}\n{}", host.stderr_tail(40));
            }
        }
        stop_clean(&mut self.plain).await;
        stop_clean(&mut self.streamed).await;
        let spool_files =
            std::fs::read_dir(self.spool.path().join("spool").join(&self.streamed_slot))
                .map(|d| d.count())
                .unwrap_or(0);
        assert_eq!(spool_files, 0, "spill files left behind");
        (self.plain.stdout_lines(), self.streamed.stdout_lines())
    }
}

/// Transactions the server streamed through `slot` (PG 14+).
async fn streamed_txns(db: &TestDb, slot: &str) -> i64 {
    let client = db.client().await;
    client
        .query_one(
            "SELECT coalesce((SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = $1), 0)",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

fn assert_same(plain: &[String], streamed: &[String]) {
    assert_eq!(
        plain.len(),
        streamed.len(),
        "protocol 1 printed {} lines, streaming {}",
        plain.len(),
        streamed.len()
    );
    for (i, (a, b)) in plain.iter().zip(streamed).enumerate() {
        assert_eq!(a, b, "line {i} differs between protocol 1 and streaming");
    }
}

fn ids(lines: &[String]) -> Vec<String> {
    parse_lines(lines)
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_commit_matches_protocol_1_and_spills_past_the_budget() {
    let db = streaming_db("stream_commit").await;
    let mut p = pair(&db, "stcommit").await;
    // ~12 MB: streamed in many blocks, and well past the 4 MiB kept in memory.
    db.exec("INSERT INTO t VALUES (0, 'before', 0)").await;
    db.exec("INSERT INTO t SELECT g, repeat(md5(g::text), 6), g FROM generate_series(1, 40000) g")
        .await;
    db.exec("UPDATE t SET n = -1 WHERE id = 0").await;
    let (plain, streamed) = p.finish(&db).await;
    assert!(
        streamed_txns(&db, &p.streamed_slot).await > 0,
        "the server streamed nothing: the test does not test streaming"
    );
    assert_eq!(streamed_txns(&db, &p.plain_slot).await, 0);
    assert_eq!(plain.len(), 40002);
    assert_same(&plain, &streamed);
    let stderr = p.streamed.stderr();
    assert!(
        stderr.contains("spilling to disk"),
        "the 12 MB transaction never spilled:\n{}",
        p.streamed.stderr_tail(20)
    );
    // Commit order: the big transaction between the two small ones.
    let changes = parse_lines(&streamed);
    assert_eq!(changes[0]["after"]["v"], "before");
    assert_eq!(changes[40001]["op"], "update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_abort_delivers_nothing() {
    let db = streaming_db("stream_abort").await;
    let mut p = pair(&db, "stabort").await;
    let c = db.client().await;
    c.batch_execute(
        "BEGIN; INSERT INTO t SELECT g, repeat('x', 100), g FROM generate_series(1, 5000) g;",
    )
    .await
    .unwrap();
    // Streamed while still open: the server sends it before it ends.
    let slot = p.streamed_slot.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while streamed_txns(&db, &slot).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never streamed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.batch_execute("ROLLBACK").await.unwrap();
    db.exec("INSERT INTO t VALUES (-1, 'after', 0)").await;
    let (plain, streamed) = p.finish(&db).await;
    assert_same(&plain, &streamed);
    let changes = parse_lines(&streamed);
    assert_eq!(changes.len(), 1, "{streamed:?}");
    assert_eq!(changes[0]["after"]["id"], -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtransaction_abort_inside_a_streamed_transaction() {
    let db = streaming_db("stream_subxact").await;
    let mut p = pair(&db, "stsub").await;
    db.exec(
        "BEGIN;
         INSERT INTO t SELECT g, repeat('a', 100), g FROM generate_series(1, 2000) g;
         SAVEPOINT s1;
         INSERT INTO t SELECT g, repeat('b', 100), g FROM generate_series(2001, 4000) g;
         SAVEPOINT s2;
         UPDATE t SET n = -n WHERE id <= 1000;
         RELEASE SAVEPOINT s2;
         ROLLBACK TO SAVEPOINT s1;
         SAVEPOINT s3;
         INSERT INTO t SELECT g, repeat('c', 100), g FROM generate_series(5001, 7000) g;
         RELEASE SAVEPOINT s3;
         SAVEPOINT s4;
         DELETE FROM t WHERE id > 6000;
         ROLLBACK TO SAVEPOINT s4;
         UPDATE t SET v = 'top' WHERE id % 100 = 0;
         COMMIT;",
    )
    .await;
    let (plain, streamed) = p.finish(&db).await;
    assert!(
        streamed_txns(&db, &p.streamed_slot).await > 0,
        "nothing streamed"
    );
    assert_same(&plain, &streamed);
    let changes = parse_lines(&streamed);
    // 2000 + 2000 inserts and 40 updates (ids 1..2000 and 5001..7000 divisible by 100)
    // survive; ordinals run 0.. without gaps.
    assert_eq!(changes.len(), 4040);
    for (i, c) in changes.iter().enumerate() {
        let id = c["id"].as_str().unwrap();
        assert!(id.ends_with(&format!("-{i:08X}")), "change {i} has id {id}");
    }
    assert!(changes
        .iter()
        .all(|c| c["after"]["v"] != Json::String("b".repeat(100))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_streamed_transactions_come_in_commit_order() {
    let db = streaming_db("stream_interleave").await;
    let mut p = pair(&db, "stinter").await;
    let a = db.client().await;
    let b = db.client().await;
    a.batch_execute("BEGIN").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    for round in 0..6 {
        let lo = round * 1000;
        a.batch_execute(&format!(
            "INSERT INTO t SELECT g, repeat('a', 80), g FROM generate_series({}, {}) g",
            lo + 1,
            lo + 500
        ))
        .await
        .unwrap();
        b.batch_execute(&format!(
            "INSERT INTO t SELECT g, repeat('b', 80), g FROM generate_series({}, {}) g",
            lo + 501,
            lo + 1000
        ))
        .await
        .unwrap();
        db.exec(&format!(
            "INSERT INTO t VALUES ({}, 'small', 0)",
            -round - 1
        ))
        .await;
    }
    b.batch_execute("COMMIT").await.unwrap();
    db.exec("INSERT INTO t VALUES (-100, 'between', 0)").await;
    a.batch_execute("COMMIT").await.unwrap();
    let (plain, streamed) = p.finish(&db).await;
    assert!(
        streamed_txns(&db, &p.streamed_slot).await >= 2,
        "not both streamed"
    );
    assert_same(&plain, &streamed);
    let all = ids(&streamed);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ids out of commit order");
    let changes = parse_lines(&streamed);
    let vs: Vec<&str> = changes
        .iter()
        .map(|c| c["after"]["v"].as_str().unwrap())
        .collect();
    // Six small ones, b's 3000, the one between, a's 3000.
    assert!(vs[..6].iter().all(|v| *v == "small"));
    assert!(vs[6..3006].iter().all(|v| v.starts_with('b')));
    assert_eq!(vs[3006], "between");
    assert!(vs[3007..].iter().all(|v| v.starts_with('a')));
    assert_eq!(vs.len(), 6007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_needs_protocol_2() {
    let db = streaming_db("stream_proto").await;
    let (_d, cfg) = config(&db.dsn(), "s_stproto", "p", "streaming = \"on\"\n");
    let out = std::process::Command::new(BIN)
        .args(["check".as_ref(), cfg.as_os_str()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("source.streaming") && err.contains("proto_version = 2"),
        "{err}"
    );
}

/// A mode the server is too old for stops the start with one line naming the setting and
/// the version it needs (origin filtering needs 16; on 16 and newer there is nothing to
/// refuse here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_the_server_is_too_old_for_is_named_at_start() {
    let major = harness::server().major();
    if major >= 16 {
        eprintln!("Postgres {major} has every mode: nothing to refuse");
        return;
    }
    let db = streaming_db("stream_too_old").await;
    let (_d, cfg) = config(&db.dsn(), "s_sttooold", "p", "origin = \"none\"\n");
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success());
    let want = format!(
        "source.origin = \"none\" needs Postgres 16 or newer; the server is Postgres {major}"
    );
    assert!(host.stderr().contains(&want), "{}", host.stderr_tail(10));
    // `check` says the same without connecting.
    let out = std::process::Command::new(BIN)
        .args(["check".as_ref(), cfg.as_os_str()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && said.contains("needs Postgres 16 or newer (source.origin = \"none\")"),
        "{said}"
    );
}
