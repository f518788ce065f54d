//! The dangerous windows, on purpose: `kill -9` (or a Postgres crash) exactly where a CDC
//! tool loses or corrupts data when its acknowledgement contract is wrong — after a sink
//! acknowledged and before the slot was confirmed, inside a split transaction, during a
//! reconnect backoff.
//!
//! No sleeps decide where the fault lands. The host reaches Postgres through a proxy
//! (`harness::proxy`) that can *hold* its client→server bytes: once held, the host's standby
//! status updates — its confirmations — are read and kept by the proxy (the test sees the
//! flush position the host tried to confirm) but never reach Postgres. So a test lets the
//! sink acknowledge, waits until the host has tried to confirm, kills it, and knows the slot
//! was not moved. The HTTP receiver takes the hold itself, right before it answers 2xx.
//!
//! Each test then asserts: nothing is lost, a replay actually happened, replayed changes carry
//! the same ids and the same content, and HTTP replays carry the same `Idempotency-Key` for
//! the same changes.
//!
//! "Not past a commit" means `≤` its commit LSN: Postgres sends a transaction again when its
//! commit record starts at or after the slot's confirmed position, and an idle keepalive may
//! legally carry exactly that position (the walsender has read the transaction's rows and
//! waits for its commit record) — the replays asserted afterwards are what proves it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::http_receiver::{after, status, Receiver, Recorded};
use cdc_test_harness::nats_server::{self, stream_len, NatsServer};
use cdc_test_harness::proxy::Proxy;
use cdc_test_harness::{confirmed_flush_lsn, HostProcess, PgServer, TestDb};

/// What the host logs on every reconnection attempt (`pipeline::run`).
const RECONNECT_LOG: &str = "replication interrupted; reconnecting";

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {s}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn lsn_text(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

fn pg_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `t (id int PRIMARY KEY, v text)` published as `p`.
async fn table_db(server: &PgServer, hint: &str) -> TestDb {
    let db = server.fresh_db(hint).await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t")
        .await;
    db
}

fn proxied_dsn(db: &TestDb, proxy: &Proxy) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        proxy.port(),
        db.name
    )
}

/// `dir/<name>.toml`: source (status every second, no initial snapshot: the tests see only
/// the changes they make), `pipeline` keys, sinks.
fn write_cfg(
    dir: &tempfile::TempDir,
    name: &str,
    dsn: &str,
    slot: &str,
    pipeline: &str,
    sinks: &str,
) -> std::path::PathBuf {
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"{slot}\"\npublication = \"p\"\nstatus_interval_secs = 1\n\n[source.snapshot]\nmode = \"never\"\n\n[pipeline]\n{pipeline}\n\n{sinks}"
        ),
    )
    .unwrap();
    path
}

fn http_sink(hook: &Receiver) -> String {
    format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"json\"\nbatch = \"ndjson\"\n",
        hook.url("/cdc")
    )
}

const STDOUT_SINK: &str = "[[sinks]]\nname = \"out\"\ntype = \"stdout\"\nformat = \"json\"\n";

/// The changes of an NDJSON request body.
fn changes(r: &Recorded) -> Vec<Json> {
    String::from_utf8(r.body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn commit_of(c: &Json) -> u64 {
    lsn(c["commit_lsn"].as_str().unwrap())
}

fn id_of(c: &Json) -> &str {
    c["id"].as_str().unwrap()
}

/// Polls `cond` every 20 ms until it holds; fails after `WAIT` (or when the host exits).
async fn until(what: &str, host: &mut HostProcess, mut cond: impl FnMut(&HostProcess) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if cond(host) {
            return;
        }
        if let Some(st) = host.try_exit() {
            panic!(
                "host exited ({st}) waiting for {what}:\n{}",
                host.stderr_tail(30)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {WAIT:?}: {what}\n{}",
            host.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the host, behind the held proxy, has tried to confirm `at` or beyond: it
/// took every acknowledgement up to there.
async fn wait_held_confirm(proxy: &Proxy, host: &mut HostProcess, at: u64) {
    until(
        &format!("a held status update confirming {}", lsn_text(at)),
        host,
        |_| proxy.held_status_flushes().iter().any(|f| *f >= at),
    )
    .await;
}

async fn kill9(host: &mut HostProcess) {
    host.kill9().unwrap();
    host.wait_exit(WAIT).await.unwrap();
}

async fn confirmed(db: &TestDb, slot: &str) -> u64 {
    let client = db.client().await;
    lsn(&confirmed_flush_lsn(&client, slot).await.unwrap())
}

/// Stdout changes of several runs: every id seen more than once carries the same change;
/// returns the union by id and how many deliveries were replays.
fn union_of(runs: &[Vec<Json>]) -> (BTreeMap<String, Json>, usize) {
    let mut union: BTreeMap<String, Json> = BTreeMap::new();
    let mut replays = 0;
    for c in runs.iter().flatten() {
        let id = id_of(c).to_owned();
        if let Some(prev) = union.get(&id) {
            assert_eq!(prev, c, "change {id} replayed with other content");
            replays += 1;
        }
        union.insert(id, c.clone());
    }
    (union, replays)
}

/// Row ids (`after.id`) in the order given.
fn rows(changes: &[Json]) -> Vec<i64> {
    changes
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------

/// The HTTP endpoint answers 2xx; the host takes it and tries to confirm — held by the proxy
/// — and is killed. The restarted host sends the same request again: same body, same
/// `Idempotency-Key`; the slot was never confirmed past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_the_http_2xx_before_the_confirm_resends_the_same_request() {
    let slot = "s_win_http";
    let proxy = Arc::new(Proxy::start(pg_addr(harness::server().port())).await);
    let mut hook = Receiver::start().await;
    let db = table_db(harness::server(), "win_http").await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = http_sink(&hook);
    let cfg = write_cfg(&dir, "a", &proxied_dsn(&db, &proxy), slot, "", &sink);
    let mut host = start_host(&db, &cfg, slot).await;

    // A: delivered and confirmed as usual.
    db.exec("INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 50) g")
        .await;
    let a = hook.next().await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();
    let a_commit = commit_of(&changes(&a)[0]);

    // B: the receiver holds the proxy, then answers 2xx.
    let p = proxy.clone();
    hook.script([after(move || p.hold_upstream(), status(200))]);
    db.exec("INSERT INTO t SELECT g, 'b' || g FROM generate_series(51, 100) g")
        .await;
    let b = hook.next().await;
    let b_changes = changes(&b);
    assert_eq!(rows(&b_changes), (51..=100).collect::<Vec<_>>());
    let b_commit = commit_of(&b_changes[0]);
    wait_held_confirm(&proxy, &mut host, b_commit).await;
    kill9(&mut host).await;
    proxy.cut();
    let at_kill = confirmed(&db, slot).await;
    assert!(
        at_kill > a_commit && at_kill <= b_commit,
        "slot at {} at the kill: want past A ({}) and not past B's commit ({})",
        lsn_text(at_kill),
        lsn_text(a_commit),
        lsn_text(b_commit)
    );

    // Restarted straight against Postgres: B again, byte for byte, with the same key.
    let cfg = write_cfg(&dir, "b", &db.dsn(), slot, "", &sink);
    let mut again = HostProcess::spawn(BIN, &cfg).unwrap();
    let replay = hook.next().await;
    assert_eq!(
        replay.key(),
        b.key(),
        "the replay of B carries B's Idempotency-Key"
    );
    assert_eq!(replay.body, b.body, "the replay of B is B, byte for byte");
    assert_eq!(replay.header("cdc-change-ids"), b.header("cdc-change-ids"));
    db.exec("INSERT INTO t VALUES (101, 'c')").await;
    let c = hook.next().await;
    assert_eq!(rows(&changes(&c)), [101]);
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();
    stop_clean(&mut again).await;
    assert!(hook.drain().is_empty(), "nothing but B is sent twice");
    eprintln!(
        "http 2xx window: B ({} changes, key {}) answered 2xx, confirm held at the proxy, slot {} at the kill; replayed with the same key",
        b_changes.len(),
        b.key(),
        lsn_text(at_kill)
    );
}

/// JetStream acknowledged (PubAck) every change of five transactions; the host tried to
/// confirm them — held — and is killed. The restarted host publishes them again (its stdout
/// sink shows the replay, identical), JetStream drops the replays by `Nats-Msg-Id`: the
/// stream holds every change once, in order, with the content of the first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_jetstream_pubacks_before_the_confirm_stores_each_change_once() {
    const STREAM: &str = "WINDOW";
    let slot = "s_win_js";
    let nats = NatsServer::start(&[]);
    let proxy = Proxy::start(pg_addr(harness::server().port())).await;
    let db = table_db(harness::server(), "win_js").await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"cdc.{{table}}\"\nformat = \"json\"\n[sinks.jetstream]\nstream = \"{STREAM}\"\ncreate_stream = true\n\n{STDOUT_SINK}",
        nats.url()
    );
    let cfg = write_cfg(&dir, "a", &proxied_dsn(&db, &proxy), slot, "", &sinks);
    let mut host = start_host(&db, &cfg, slot).await;

    db.exec("INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 100) g")
        .await;
    wait_json(&mut host, 100).await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();

    proxy.hold_upstream();
    for tx in 1..=5 {
        db.exec(&format!(
            "INSERT INTO t SELECT g, 'b' || g FROM generate_series({}, {}) g",
            tx * 100 + 1,
            tx * 100 + 100
        ))
        .await;
    }
    let first_run = wait_json(&mut host, 600).await;
    let b_last = commit_of(&first_run[599]);
    let b_first = commit_of(&first_run[100]);
    // Every PubAck arrived (JetStream stored all 600) and the host tried to confirm them all.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stream_len(&nats.url(), STREAM).await < 600 {
        assert!(tokio::time::Instant::now() < deadline, "JetStream short");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_held_confirm(&proxy, &mut host, b_last).await;
    kill9(&mut host).await;
    let first_run = parse_lines(&host.stdout_lines());
    proxy.cut();
    let at_kill = confirmed(&db, slot).await;
    assert!(
        at_kill <= b_first,
        "slot at {} at the kill, past B's first commit {}",
        lsn_text(at_kill),
        lsn_text(b_first)
    );

    let cfg = write_cfg(&dir, "b", &db.dsn(), slot, "", &sinks);
    let mut again = HostProcess::spawn(BIN, &cfg).unwrap();
    harness::wait_for_confirmed_flush(&client, slot, &lsn_text(b_last), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", again.stderr_tail(20)));
    stop_clean(&mut again).await;
    let second_run = parse_lines(&again.stdout_lines());
    let b_ids: BTreeSet<&str> = first_run[100..].iter().map(id_of).collect();
    let replayed: BTreeSet<&str> = second_run.iter().map(id_of).collect();
    assert!(
        b_ids.is_subset(&replayed),
        "the 500 changes JetStream acknowledged but the slot never confirmed are published again"
    );
    let (union, replays) = union_of(&[first_run.clone(), second_run.clone()]);
    assert_eq!(union.len(), 600);
    assert!(replays >= 500, "{replays} replays");

    let (info, stored) = nats_server::read_stream(&nats.url(), STREAM).await;
    assert_eq!(info.state.messages, 600, "each change stored once");
    let ids: Vec<String> = stored.iter().map(|m| nats_server::msg_id(m)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in commit order, once");
    for (m, id) in stored.iter().zip(&ids) {
        let payload: Json = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(&payload, &union[id], "JetStream message {id}");
    }
    eprintln!(
        "jetstream window: 600 PubAcks, confirm of {} held, slot {} at the kill; {replays} changes replayed, stream holds 600",
        lsn_text(b_last),
        lsn_text(at_kill)
    );
}

/// A 10,000-change transaction is split into pieces of `max_changes` (1,000): the endpoint
/// acknowledges 3 pieces and fails the 4th. Status updates keep flowing but none confirms
/// into the transaction; the host is killed. The restarted host sends the transaction again
/// from its first piece — the same pieces, bodies and keys — and the slot is confirmed past
/// it only once the whole transaction was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_k_of_m_pieces_of_a_split_transaction_replays_it_whole() {
    const K: usize = 3;
    const ROWS: i64 = 10_000;
    let slot = "s_win_split";
    let proxy = Proxy::start(pg_addr(harness::server().port())).await;
    let mut hook = Receiver::start().await;
    let db = table_db(harness::server(), "win_split").await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = http_sink(&hook);
    let pipeline = "max_changes = 1000\n";
    let cfg = write_cfg(&dir, "a", &proxied_dsn(&db, &proxy), slot, pipeline, &sink);
    let mut host = start_host(&db, &cfg, slot).await;
    db.exec("INSERT INTO t VALUES (0, 'before')").await;
    hook.next().await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();
    let before = confirmed(&db, slot).await;

    hook.script(std::iter::repeat_n(status(200), K));
    hook.set_default(Some(status(503)));
    db.exec(&format!(
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let end = lsn(&harness::current_wal_lsn(&client).await);
    let mut pieces = Vec::new();
    for _ in 0..K {
        pieces.push(hook.next().await);
    }
    let failing = hook.next().await; // piece K + 1, answered 503 (and retried)
    let commit = commit_of(&changes(&pieces[0])[0]);
    let mut next_row = 1;
    for p in pieces.iter().chain([&failing]) {
        let cs = changes(p);
        assert_eq!(cs.len(), 1000, "a piece holds max_changes changes");
        assert!(cs.iter().all(|c| commit_of(c) == commit), "one transaction");
        assert_eq!(rows(&cs), (next_row..next_row + 1000).collect::<Vec<_>>());
        next_row += 1000;
    }
    // Two more status updates after the K pieces were acknowledged: none confirms into the
    // transaction, and neither does the slot.
    let seen = proxy.status_flushes().len();
    until("two more status updates", &mut host, |_| {
        proxy.status_flushes().len() >= seen + 2
    })
    .await;
    let flushes = proxy.status_flushes();
    assert!(
        flushes.iter().all(|f| f.0 <= commit),
        "a status update confirmed into the unfinished transaction (commit {}): {:?}",
        lsn_text(commit),
        flushes.iter().map(|f| lsn_text(f.0)).collect::<Vec<_>>()
    );
    let at_kill = confirmed(&db, slot).await;
    assert!(
        at_kill >= before && at_kill <= commit,
        "{}",
        lsn_text(at_kill)
    );
    kill9(&mut host).await;
    drop(proxy);

    // Restarted: the transaction again from its first piece, then every piece acknowledged.
    hook.set_default(None);
    let _ = hook.drain(); // retries of the failing piece
    let cfg = write_cfg(&dir, "b", &db.dsn(), slot, pipeline, &sink);
    let mut again = HostProcess::spawn(BIN, &cfg).unwrap();
    let mut replay = Vec::new();
    for _ in 0..ROWS / 1000 {
        replay.push(hook.next().await);
    }
    harness::wait_for_confirmed_flush(&client, slot, &lsn_text(end), WAIT)
        .await
        .unwrap();
    stop_clean(&mut again).await;
    for (i, p) in pieces.iter().chain([&failing]).enumerate() {
        assert_eq!(replay[i].key(), p.key(), "piece {i}: same Idempotency-Key");
        assert_eq!(replay[i].body, p.body, "piece {i}: same body");
    }
    let all: Vec<Json> = replay.iter().flat_map(changes).collect();
    assert_eq!(rows(&all), (1..=ROWS).collect::<Vec<_>>(), "nothing lost");
    assert!(all.iter().all(|c| commit_of(c) == commit));
    assert!(confirmed(&db, slot).await > commit);
    eprintln!(
        "split window: {ROWS} changes in {} pieces, killed after {K} acknowledged (slot {} < commit {}); replayed whole with the same keys",
        replay.len(),
        lsn_text(at_kill),
        lsn_text(commit)
    );
}

/// The connection cut (confirmation of the last changes held, so it never reached Postgres)
/// and new connections refused: the host is in its reconnect backoff when it is killed. The
/// restarted host delivers the unconfirmed changes again, identical, and everything after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_reconnect_backoff_loses_nothing() {
    let slot = "s_win_backoff";
    let proxy = Proxy::start(pg_addr(harness::server().port())).await;
    let db = table_db(harness::server(), "win_backoff").await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(&dir, "a", &proxied_dsn(&db, &proxy), slot, "", STDOUT_SINK);
    let mut host = start_host(&db, &cfg, slot).await;
    db.exec("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        .await;
    wait_json(&mut host, 100).await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();

    proxy.hold_upstream();
    db.exec("INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g")
        .await;
    let first = wait_json(&mut host, 200).await;
    wait_held_confirm(&proxy, &mut host, commit_of(&first[199])).await;
    proxy.set_refusing(true);
    proxy.cut();
    let refused = proxy.refused();
    until("a reconnection attempt refused", &mut host, |h| {
        proxy.refused() > refused && h.stderr().contains(RECONNECT_LOG)
    })
    .await;
    kill9(&mut host).await;
    let first = parse_lines(&host.stdout_lines());
    let at_kill = confirmed(&db, slot).await;
    assert!(at_kill <= commit_of(&first[100]), "{}", lsn_text(at_kill));

    db.exec("INSERT INTO t SELECT g, 'c' FROM generate_series(201, 300) g")
        .await;
    let cfg = write_cfg(&dir, "b", &db.dsn(), slot, "", STDOUT_SINK);
    let mut again = HostProcess::spawn(BIN, &cfg).unwrap();
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();
    stop_clean(&mut again).await;
    let second = parse_lines(&again.stdout_lines());
    assert_eq!(
        rows(&second),
        (101..=300).collect::<Vec<_>>(),
        "the unconfirmed changes, then the new ones, in order"
    );
    let (union, replays) = union_of(&[first, second]);
    assert_eq!(replays, 100, "B delivered twice");
    assert_eq!(union.len(), 300);
}

/// Postgres crashes (immediate shutdown: no checkpoint, the slot's position is whatever was
/// last written to disk) while the confirmation of the last transaction is held. Once it is
/// back the host reconnects on its own, delivers the unconfirmed transaction again,
/// identical, and everything written after; the union rebuilds the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_immediate_crash_replays_the_unconfirmed_and_loses_nothing() {
    let slot = "s_win_crash";
    let server = PgServer::start().unwrap();
    let proxy = Proxy::start(pg_addr(server.port())).await;
    let db = table_db(&server, "win_crash").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(&dir, "a", &proxied_dsn(&db, &proxy), slot, "", STDOUT_SINK);
    let mut host = start_host(&db, &cfg, slot).await;
    db.exec("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        .await;
    wait_json(&mut host, 100).await;
    {
        let client = db.client().await;
        harness::wait_confirmed_to_now(&client, slot, WAIT)
            .await
            .unwrap();
    }

    proxy.hold_upstream();
    db.exec("INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g")
        .await;
    let first = wait_json(&mut host, 200).await;
    let b_commit = commit_of(&first[100]);
    wait_held_confirm(&proxy, &mut host, commit_of(&first[199])).await;
    server.stop_postgres(true).unwrap();
    proxy.cut();
    proxy.release_upstream();
    host.wait_for_stderr(RECONNECT_LOG, WAIT).await.unwrap();
    server.start_postgres().unwrap();
    wait_slot_active(&db, slot, &mut host).await;
    // A fresh connection: the test's cached one died with the server.
    let client = harness::try_connect(&db.dsn()).await.unwrap();
    client
        .batch_execute("INSERT INTO t SELECT g, 'c' FROM generate_series(201, 300) g")
        .await
        .unwrap();
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(20)));
    stop_clean(&mut host).await;

    let out = parse_lines(&host.stdout_lines());
    let b_ids: BTreeSet<&str> = first[100..200].iter().map(id_of).collect();
    let seen: BTreeMap<&str, usize> = out.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(id_of(c)).or_default() += 1;
        m
    });
    assert!(
        b_ids.iter().all(|id| seen[id] >= 2),
        "B (commit {}) was never confirmed: it must be delivered again after the crash",
        lsn_text(b_commit)
    );
    let (union, replays) = union_of(&[out]);
    let mut table: BTreeMap<i64, Json> = BTreeMap::new();
    for c in union.values() {
        table.insert(c["after"]["id"].as_i64().unwrap(), c["after"].clone());
    }
    let want = to_jsonb_rows(&db, "t").await;
    assert_eq!(table.len(), 300);
    assert_eq!(table.into_values().collect::<Vec<_>>(), want);
    eprintln!("postgres crash: {replays} changes replayed after the immediate shutdown");
}
