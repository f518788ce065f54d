//! `[sinks.jetstream] atomic = "transaction"` end to end: Postgres transactions arrive in
//! JetStream as atomic batches (ADR-50), also across `kill -9`s of the host.

use std::collections::HashSet;
use std::time::Duration;

use cdc_test_harness as harness;
use cdc_test_harness::nats_server::{self, stream_len, NatsCluster, NatsServer};
use cdc_test_harness::HostProcess;

use super::{nats_sink, wait_stream_len, write};
use crate::common::*;

/// A stored message as a consumer sees it.
#[derive(Debug)]
struct Seen {
    id: String,
    commit_lsn: String,
    batch_id: String,
    batch_seq: u64,
    commit: bool,
    chunk: u32,
    last: bool,
    row: i64,
}

/// Every message of `stream`, in order, with its batch headers (all must have them).
async fn read_atomic(url: &str, stream: &str) -> Vec<Seen> {
    let (_, messages) = nats_server::read_stream(url, stream).await;
    messages
        .iter()
        .map(|m| {
            let h = m.headers.as_ref().expect("headers");
            let get = |k: &str| {
                h.get(k)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| panic!("no {k} on {:?}", nats_server::msg_id(m)))
            };
            let payload: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            Seen {
                id: get("Nats-Msg-Id"),
                commit_lsn: get("Cdc-Commit-Lsn"),
                batch_id: get("Nats-Batch-Id"),
                batch_seq: get("Nats-Batch-Sequence").parse().unwrap(),
                commit: h.get("Nats-Batch-Commit").map(|v| v.to_string()).as_deref() == Some("1"),
                chunk: get("Cdc-Txn-Chunk").parse().unwrap(),
                last: get("Cdc-Txn-Last") == "true",
                row: payload["after"]["id"].as_i64().unwrap_or(-1),
            }
        })
        .collect()
}

/// Groups the stream by batch id; each group must be a whole atomic batch (sequence 1..n,
/// the commit on the last, one transaction, one chunk index), and the chunks of a
/// transaction must follow each other, numbered from 0, the last one marked.
/// Returns, per transaction (commit LSN, in stream order), its chunk sizes.
fn transactions(seen: &[Seen]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<&[Seen]> = Vec::new();
    let mut start = 0;
    for i in 1..=seen.len() {
        if i == seen.len() || seen[i].batch_id != seen[start].batch_id {
            groups.push(&seen[start..i]);
            start = i;
        }
    }
    let mut ids = HashSet::new();
    let mut txns: Vec<(String, Vec<usize>)> = Vec::new();
    let mut open = false;
    for g in groups {
        let first = &g[0];
        assert!(
            ids.insert(&first.batch_id),
            "batch {} split",
            first.batch_id
        );
        for (k, s) in g.iter().enumerate() {
            assert_eq!(s.batch_seq, k as u64 + 1, "{s:?}");
            assert_eq!(s.commit, k + 1 == g.len(), "{s:?}");
            assert_eq!(
                (s.commit_lsn.as_str(), s.chunk, s.last),
                (first.commit_lsn.as_str(), first.chunk, first.last),
                "one transaction and chunk per batch: {s:?}"
            );
        }
        if open {
            let (lsn, chunks) = txns.last_mut().unwrap();
            assert_eq!(
                *lsn, first.commit_lsn,
                "a chunk of another transaction came between"
            );
            assert_eq!(first.chunk as usize, chunks.len(), "chunks in order");
            chunks.push(g.len());
        } else {
            assert_eq!(
                first.chunk, 0,
                "a transaction starts with chunk 0: {first:?}"
            );
            txns.push((first.commit_lsn.clone(), vec![g.len()]));
        }
        open = !first.last;
    }
    assert!(!open, "the last transaction is complete");
    txns
}

/// Waits until the walsender of a killed host let go of `slot` (so that the next
/// `wait_slot_active` sees the new host, not the old connection).
async fn wait_slot_released(client: &tokio_postgres::Client, slot: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let active: bool = client
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if !active {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot {slot} stays active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn atomic_sink(url: &str, stream: &str) -> String {
    format!(
        "{}atomic = \"transaction\"\nduplicate_window_secs = 3600\n",
        nats_sink(url, stream)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_transactions_arrive_as_atomic_batches() {
    let nats = NatsServer::start(&[]);
    let db = db_with(
        "atomic_txn",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t, u",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    // max_changes = 500: the pipeline splits the 1,200-row transaction across batches
    // (500, 500, 200), which become its ordered chunks.
    let cfg = write(
        &dir,
        &db,
        "s_atomic_txn",
        &atomic_sink(&nats.url(), "ATOMIC"),
        "[pipeline]\nmax_changes = 500\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_atomic_txn", &mut host).await;
    // Two tables in one transaction: two subjects, one batch.
    db.exec("BEGIN; INSERT INTO t VALUES (1), (2), (3); INSERT INTO u VALUES (1), (2); COMMIT")
        .await;
    db.exec("INSERT INTO t SELECT g FROM generate_series(100, 1299) g")
        .await;
    db.exec("UPDATE t SET id = 4 WHERE id = 3").await;
    let end = harness::current_wal_lsn(&client).await;
    wait_stream_len(&nats.url(), "ATOMIC", 5 + 1200 + 1, &mut host).await;
    harness::wait_for_confirmed_flush(&client, "s_atomic_txn", &end, Duration::from_secs(60))
        .await
        .unwrap();
    stop_clean(&mut host).await;

    let seen = read_atomic(&nats.url(), "ATOMIC").await;
    let shape: Vec<Vec<usize>> = transactions(&seen).into_iter().map(|(_, c)| c).collect();
    assert_eq!(shape, [vec![5], vec![500, 500, 200], vec![1]]);
    assert_eq!(seen.len(), 1206);
}

/// `kill -9` of the host, again and again, while it publishes many transactions (some over
/// the 1,000-message batch limit) as atomic batches: in the end the stream holds every
/// change once, in commit order, and every message in a whole atomic batch — no consumer
/// ever saw part of a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loop_in_atomic_mode_keeps_every_change_once_in_whole_batches() {
    const KILLS: usize = 8;
    let _heavy = harness::heavy().await;
    let nats = NatsServer::start(&[]);
    let db = db_with(
        "atomic_kill",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &db,
        "s_atomic_kill",
        &atomic_sink(&nats.url(), "ATOMICKILL"),
        "[pipeline]\nmax_changes = 2000\n",
    );
    // The host creates the slot, then is killed; the workload waits in the WAL.
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_atomic_kill", &mut host).await;
    host.kill9().unwrap();
    wait_slot_released(&client, "s_atomic_kill").await;
    // 1,000 transactions of 1 to 60 rows, and every 50th one of 1,500 (two chunks; the
    // pipeline keeps it whole below max_changes).
    let mut sizes = Vec::new();
    let mut next = 1i64;
    for i in 0..1000i64 {
        let n = if i % 50 == 25 {
            1500
        } else {
            1 + (i * 37) % 60
        };
        db.exec(&format!(
            "INSERT INTO t SELECT g FROM generate_series({next}, {}) g",
            next + n - 1
        ))
        .await;
        sizes.push(n as usize);
        next += n;
    }
    let total = (next - 1) as u64;
    let end = harness::current_wal_lsn(&client).await;
    // Each life: start, stream for 150-650 ms, kill -9.
    let mut mid_stream = 0;
    for k in 0..KILLS as u64 {
        host = HostProcess::spawn(BIN, &cfg).unwrap();
        wait_slot_active(&db, "s_atomic_kill", &mut host).await;
        tokio::time::sleep(Duration::from_millis(150 + (k * 173) % 500)).await;
        if let Some(st) = host.try_exit() {
            panic!("host exited ({st}):\n{}", host.stderr_tail(30));
        }
        host.kill9().unwrap();
        wait_slot_released(&client, "s_atomic_kill").await;
        let have = stream_len(&nats.url(), "ATOMICKILL").await;
        eprintln!("kill {}: {have}/{total} changes in the stream", k + 1);
        if have < total {
            mid_stream += 1;
        }
    }
    host = HostProcess::spawn(BIN, &cfg).unwrap();
    harness::wait_for_confirmed_flush(&client, "s_atomic_kill", &end, Duration::from_secs(180))
        .await
        .unwrap();
    stop_clean(&mut host).await;
    assert!(mid_stream >= 3, "only {mid_stream} kills landed mid-stream");

    let seen = read_atomic(&nats.url(), "ATOMICKILL").await;
    let ids: HashSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "no change stored twice");
    let rows: Vec<i64> = seen.iter().map(|s| s.row).collect();
    assert_eq!(
        rows,
        (1..=total as i64).collect::<Vec<_>>(),
        "every change, in commit order"
    );
    let txns = transactions(&seen);
    let got: Vec<usize> = txns.iter().map(|(_, c)| c.iter().sum()).collect();
    assert_eq!(got, sizes, "one transaction after the other, each whole");
    for (lsn, chunks) in &txns {
        let n: usize = chunks.iter().sum();
        let want = if n == 1500 { vec![1000, 500] } else { vec![n] };
        assert_eq!(*chunks, want, "transaction {lsn}");
    }
}

/// Atomic mode on an R3 stream of a 3-node cluster whose leader is killed mid-stream: a
/// batch in flight at the kill is published again under a new batch id (or, when it was
/// stored and only its PubAck was lost, refused as a duplicate and found stored), the new
/// leader takes the rest. Every change is in the stream once, in commit order, and every
/// transaction is one whole atomic batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_batches_on_an_r3_stream_survive_the_loss_of_its_leader() {
    const TXNS: i64 = 150;
    let mut cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let db = db_with(
        "atomic_r3",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("{}replicas = 3\n", atomic_sink(&cluster.url(), "ATOMICR3"));
    let cfg = write(
        &dir,
        &db,
        "s_atomic_r3",
        &sink,
        "[pipeline]\nmax_changes = 2000\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_atomic_r3", &mut host).await;
    let writer = spawn_id_writer(db.dsn(), TXNS, 100, Duration::from_millis(50));
    wait_stream_len(&cluster.nodes[0].url(), "ATOMICR3", 1000, &mut host).await;
    let leader = cluster
        .stream_leader(0, "ATOMICR3")
        .await
        .expect("the stream has a leader");
    cluster.nodes[leader].kill();
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let before = stream_len(&cluster.nodes[survivor].url(), "ATOMICR3").await;
    wait_stream_len(
        &cluster.nodes[survivor].url(),
        "ATOMICR3",
        before + 1000,
        &mut host,
    )
    .await;
    cluster.nodes[leader].spawn();
    writer.await.unwrap();
    harness::wait_confirmed_to_now(&client, "s_atomic_r3", Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    stop_clean(&mut host).await;

    let seen = read_atomic(&cluster.nodes[survivor].url(), "ATOMICR3").await;
    let ids: HashSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "no change stored twice");
    let rows: Vec<i64> = seen.iter().map(|s| s.row).collect();
    assert_eq!(
        rows,
        (1..=TXNS * 100).collect::<Vec<_>>(),
        "every change, once, in commit order"
    );
    let txns = transactions(&seen);
    assert_eq!(txns.len(), TXNS as usize);
    for (lsn, chunks) in &txns {
        assert_eq!(*chunks, [100], "transaction {lsn}: one whole batch");
    }
}
