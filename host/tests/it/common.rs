//! Helpers shared by the integration test modules.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use cdc_test_harness::{self as harness, HostProcess, TestDb};

pub const BIN: &str = env!("CARGO_BIN_EXE_cdc-host");
pub const WAIT: Duration = Duration::from_secs(60);
/// How long a host may take to start streaming while it is still compiling its transform
/// modules (it logs "replication started" once it has): a cold Cranelift compile of the
/// JavaScript and Python components (SpiderMonkey, CPython inside) takes minutes on two
/// busy cores, and every test starts with an empty module cache.
pub const STARTUP_WAIT: Duration = Duration::from_secs(600);

/// A database with a publication over `tables` (already created by `setup_sql`).
pub async fn db_with(hint: &str, setup_sql: &str, publication_sql: &str) -> TestDb {
    let db = harness::server().fresh_db(hint).await;
    db.exec(setup_sql).await;
    db.exec(publication_sql).await;
    db
}

/// Writes a config in a temp dir that lives as long as the returned guard.
pub fn config(
    db_dsn: &str,
    slot: &str,
    publication: &str,
    extra: &str,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = harness::write_config(dir.path(), db_dsn, slot, publication, extra);
    (dir, path)
}

/// Starts the host and waits until its slot is streaming.
pub async fn start_host(db: &TestDb, config: &std::path::Path, slot: &str) -> HostProcess {
    let mut host = HostProcess::spawn(BIN, config).unwrap();
    wait_slot_active(db, slot, &mut host).await;
    host
}

/// Inserts ids `1..=txns*rows` into `t(id)`, `rows` per transaction, from a task of its own
/// (so the host runs while it writes), pausing `pause` between transactions.
pub fn spawn_id_writer(
    dsn: String,
    txns: i64,
    rows: i64,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = harness::try_connect(&dsn).await.unwrap();
        for t in 0..txns {
            let lo = t * rows + 1;
            let sql = format!(
                "INSERT INTO t SELECT g FROM generate_series({lo}, {}) g",
                lo + rows - 1
            );
            c.batch_execute(&sql).await.unwrap();
            tokio::time::sleep(pause).await;
        }
    })
}

/// Like [`start_host`], with extra environment variables (secrets, RUST_LOG).
pub async fn start_host_env(
    db: &TestDb,
    config: &std::path::Path,
    slot: &str,
    env: &[(&str, &str)],
) -> HostProcess {
    let mut host =
        HostProcess::spawn_with(BIN, &["run".as_ref(), config.as_os_str()], env).unwrap();
    wait_slot_active(db, slot, &mut host).await;
    host
}

pub async fn wait_slot_active(db: &TestDb, slot: &str, host: &mut HostProcess) {
    let client = db.client().await;
    let started = tokio::time::Instant::now();
    let mut deadline = started + WAIT;
    loop {
        let row = client
            // `active` is true as soon as CREATE_REPLICATION_SLOT starts, while the walsender
            // may still wait for a consistent point; commits before that point are never
            // streamed (by any logical decoding client). confirmed_flush_lsn is set once the
            // point is found: only then is the host really streaming.
            .query_opt(
                "SELECT active AND confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if row.is_some_and(|r| r.get::<_, bool>(0)) {
            return;
        }
        if let Some(st) = host.try_exit() {
            panic!(
                "host exited ({st}) before streaming:\n{}",
                host.stderr_tail(30)
            );
        }
        // Still loading modules: the wait for the slot starts once the host connects.
        let now = tokio::time::Instant::now();
        if now >= deadline
            && now < started + STARTUP_WAIT
            && !host.stderr().contains("replication started")
        {
            deadline = now + WAIT;
        }
        assert!(
            now < deadline,
            "slot {slot} never became active:\n{}",
            host.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses stdout lines, ignoring a torn last line (a kill -9 can cut a write short).
pub fn parse_lines(lines: &[String]) -> Vec<Json> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(v) => out.push(v),
            Err(e) if i + 1 == lines.len() => eprintln!("ignoring torn last line ({e}): {l}"),
            Err(e) => panic!("line {i} is not JSON ({e}): {l}"),
        }
    }
    out
}

pub async fn wait_json(host: &mut HostProcess, n: usize) -> Vec<Json> {
    let lines = host.wait_for_lines(n, WAIT).await.unwrap_or_else(|e| {
        let _ = std::fs::copy(
            harness::server().log_path(),
            format!("/tmp/pglog-{}.txt", host.pid()),
        );
        let _ = std::fs::copy(
            host.stderr_path(),
            format!("/tmp/hostlog-{}.txt", host.pid()),
        );
        panic!(
            "{e:#}\n--- postgres log tail ---\n{}",
            harness::server().log_tail(40)
        )
    });
    parse_lines(&lines)
}

/// Runs the host to completion (SIGTERM) and asserts a clean exit.
pub async fn stop_clean(host: &mut HostProcess) {
    host.sigterm().unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(st.success(), "host exit {st}:\n{}", host.stderr_tail(40));
}

/// `to_jsonb(t)` of every row of `table`, keyed by `id`, parsed with exact numbers.
pub async fn to_jsonb_rows(db: &TestDb, table: &str) -> Vec<Json> {
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let rows = client
        .query(
            &format!("SELECT to_jsonb(tbl_row)::text FROM {table} tbl_row ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let text: &str = r.try_get(0).unwrap_or_else(|e| panic!("{e:?}"));
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
        })
        .collect()
}
