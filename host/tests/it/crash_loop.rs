//! The randomized crash loop: a mixed workload runs while the host is `kill -9`ed at random
//! moments and restarted, 20 times. Replaying the union of everything delivered on stdout,
//! in id (= commit) order, must rebuild every table exactly as `SELECT to_jsonb(t)` shows it.
//! A NATS JetStream sink runs next to stdout: in the end the stream must hold each change
//! once (replays dropped by `Nats-Msg-Id`), exactly the changes of the stdout union.
//! Seeded: set CDC_CRASH_SEED to replay a run; the seed is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::nats_server::{self, NatsServer};
use cdc_test_harness::HostProcess;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KILLS: usize = 20;
const STREAM: &str = "CRASHLOOP";
/// JetStream drops a replayed `Nats-Msg-Id` only within the stream's duplicate window (the
/// sink's default is 2 min): an hour is far longer than the test, checked at the end.
const DUPLICATE_WINDOW_SECS: u64 = 3600;

/// Everything in the stream: its message count and duplicate window (from the stream info)
/// and each message's `Nats-Msg-Id` and payload, in stream order.
async fn read_stream(url: &str) -> (u64, Duration, Vec<(String, Json)>) {
    let (info, messages) = nats_server::read_stream(url, STREAM).await;
    let out = messages
        .iter()
        .map(|m| {
            (
                nats_server::msg_id(m),
                serde_json::from_slice(&m.payload).unwrap(),
            )
        })
        .collect();
    (info.state.messages, info.config.duplicate_window, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kill9_loop_loses_nothing() {
    crash_loop(Mode::Plain).await;
}

/// The same loop with protocol 2 streaming at `logical_decoding_work_mem = 64kB`: the
/// kills land while transactions are streamed (and spilled: 4 MiB of memory for them), and
/// the savepoint rollbacks of the workload are subtransaction aborts inside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kill9_loop_loses_nothing_while_streaming() {
    crash_loop(Mode::Streaming).await;
}

/// The same loop with `two_phase = true` (protocol 3, Postgres ≥ 15): half of the workload's
/// transactions are prepared, then committed (or, one in eight, rolled back) a random
/// 0–60 ms later, so kills land between PREPARE and COMMIT PREPARED. Nothing prepared is
/// lost or delivered early (the replay equals the tables), nothing rolled back appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kill9_loop_loses_nothing_with_two_phase() {
    if harness::server().major() < 15 {
        eprintln!("two_phase needs Postgres 15");
        return;
    }
    crash_loop(Mode::TwoPhase).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Streaming,
    TwoPhase,
}

async fn crash_loop(mode: Mode) {
    let streaming = mode == Mode::Streaming;
    // Long and machine-loading: never beside another such test (see `heavy`).
    let _heavy = harness::heavy().await;
    let seed = std::env::var("CDC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash loop seed: CDC_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let nats = NatsServer::start(&[]);

    let name = match mode {
        Mode::Plain => "crashloop",
        Mode::Streaming => "crashloop_st",
        Mode::TwoPhase => "crashloop_2pc",
    };
    let slot = format!("s_{name}");
    let slot = slot.as_str();
    let db = db_with(
        name,
        "CREATE TABLE a (id int PRIMARY KEY, n int, note text);
         CREATE TABLE b (id int PRIMARY KEY, big text);
         ALTER TABLE b ALTER COLUMN big SET STORAGE EXTERNAL;",
        "CREATE PUBLICATION p FOR TABLE a, b",
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    let source_extra = match mode {
        Mode::Streaming => {
            db.exec(crate::streaming::SMALL_WORK_MEM).await;
            crate::streaming::streaming_extra(&spool.path().join("spool"), "max_changes = 300")
        }
        Mode::TwoPhase => {
            "proto_version = 3\ntwo_phase = true\n[pipeline]\nmax_changes = 300\n".to_owned()
        }
        Mode::Plain => "[pipeline]\nmax_changes = 300\n".to_owned(),
    };
    // A failed assertion must not leave a prepared transaction behind (it would hold up
    // every later slot creation on the server).
    let _leftovers = crate::two_phase::RollbackLeftovers(db.dsn());
    // JetStream first, then the stdout sink `config` appends.
    let (_d, cfg) = config(
        &db.dsn(),
        slot,
        "p",
        &format!(
            "{source_extra}\n[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"cdc.{{schema}}.{{table}}\"\nformat = \"json\"\n[sinks.jetstream]\nstream = \"{STREAM}\"\ncreate_stream = true\nduplicate_window_secs = {DUPLICATE_WINDOW_SECS}\n",
            nats.url()
        ),
    );

    // The slot must exist before the workload starts: a new slot streams only what commits
    // after its consistent point.
    let mut first = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, slot, &mut first).await;

    // The workload, in its own task, until told to stop.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let dsn = db.dsn();
    let wseed = rng.next();
    let writer = tokio::spawn(async move {
        let c = harness::try_connect(&dsn).await.unwrap();
        let mut rng = Rng(wseed | 1);
        let mut next_id = 1;
        let mut step = 0u64;
        let (mut prepared, mut rolled_back) = (0u64, 0u64);
        while !*stop_rx.borrow_and_update() {
            step += 1;
            let sql = match rng.below(10) {
                0..=3 => {
                    let lo = next_id;
                    next_id += 50;
                    format!("INSERT INTO a SELECT g, g % 7, 'n' || g FROM generate_series({lo}, {}) g", lo + 49)
                }
                4 => format!("UPDATE a SET n = n + 1 WHERE id % 5 = {} AND id > {}", rng.below(5), next_id - 500),
                5 => {
                    let k = rng.below(next_id.max(2) as u64) as i32;
                    format!("UPDATE a SET id = -id WHERE id = {k}") // primary-key change
                }
                6 => format!("DELETE FROM a WHERE id % 11 = {} AND id > {}", rng.below(11), next_id - 500),
                7 => format!(
                    "INSERT INTO b VALUES ({step}, repeat(md5('{step}'), 300)) ON CONFLICT (id) DO UPDATE SET big = EXCLUDED.big;
                     UPDATE b SET id = id WHERE id = {step}"
                ), // the second statement leaves the TOASTed column unchanged
                8 => "BEGIN; INSERT INTO a VALUES (-1000000, 0, 'x'); SAVEPOINT s; DELETE FROM a; ROLLBACK TO SAVEPOINT s; DELETE FROM a WHERE id = -1000000; COMMIT;".to_owned(),
                _ if step.is_multiple_of(40) => "TRUNCATE b".to_owned(),
                _ if step.is_multiple_of(25) => {
                    let lo = next_id;
                    next_id += 5000; // one large transaction now and then
                    format!("INSERT INTO a SELECT g, 0, 'big' FROM generate_series({lo}, {}) g", lo + 4999)
                }
                _ => "SELECT 1".to_owned(),
            };
            let prepare = mode == Mode::TwoPhase && !sql.starts_with("BEGIN") && rng.below(2) == 0;
            let gid = format!("cl{step}");
            let sql = if prepare {
                format!("BEGIN; {sql}; PREPARE TRANSACTION '{gid}'")
            } else {
                sql
            };
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", harness::pg_err(&e)));
            if prepare {
                tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
                let end = if rng.below(8) == 0 {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                prepared += 1;
                rolled_back += u64::from(end == "ROLLBACK");
                c.batch_execute(&format!("{end} PREPARED '{gid}'"))
                    .await
                    .unwrap_or_else(|e| panic!("{end} PREPARED: {}", harness::pg_err(&e)));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (prepared, rolled_back)
    });

    let mut outputs: Vec<Vec<String>> = Vec::new();
    let mut first = Some(first);
    let watcher = db.client().await;
    let mut kills_mid_prepare = 0;
    for kill in 0..KILLS {
        let mut host = match first.take() {
            Some(h) => h,
            None => HostProcess::spawn(BIN, &cfg).unwrap(),
        };
        wait_slot_active(&db, slot, &mut host).await;
        tokio::time::sleep(Duration::from_millis(100 + rng.below(700))).await;
        if let Some(st) = host.try_exit() {
            panic!(
                "host exited ({st}) before kill {kill}:\n{}",
                host.stderr_tail(20)
            );
        }
        if mode == Mode::TwoPhase {
            // Kill while a transaction is prepared and not yet committed or rolled back.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let open: i64 = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if open > 0 {
                    kills_mid_prepare += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        host.kill9().unwrap();
        outputs.push(host.stdout_lines());
    }
    let _ = stop_tx.send(true);
    let (prepared, rolled_back) = writer.await.unwrap();
    if mode == Mode::TwoPhase {
        eprintln!(
            "seed {seed}: {prepared} prepared transactions, {rolled_back} rolled back; {kills_mid_prepare} of {KILLS} kills while one was prepared"
        );
        assert!(
            prepared > 0 && rolled_back > 0,
            "seed {seed}: the workload prepared {prepared}, rolled back {rolled_back}"
        );
        assert!(
            kills_mid_prepare * 2 >= KILLS,
            "seed {seed}: only {kills_mid_prepare} of {KILLS} kills between PREPARE and COMMIT PREPARED"
        );
    }

    // A last, clean run drains the rest.
    let client = db.client().await;
    let end = harness::current_wal_lsn(&client).await;
    let mut last = HostProcess::spawn(BIN, &cfg).unwrap();
    harness::wait_for_confirmed_flush(&client, slot, &end, Duration::from_secs(120))
        .await
        .unwrap();
    stop_clean(&mut last).await;
    outputs.push(last.stdout_lines());
    if streaming {
        let streamed: i64 = client
            .query_one(
                "SELECT coalesce((SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = $1), 0)",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        eprintln!("seed {seed}: the server streamed {streamed} transactions to the last run");
        let left = std::fs::read_dir(spool.path().join("spool").join(slot))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "spill files left after a clean stop");
    }

    // Union by id; a replayed id must carry the same change.
    let mut union: BTreeMap<String, Json> = BTreeMap::new();
    let mut delivered = 0;
    for out in &outputs {
        for c in parse_lines(out) {
            delivered += 1;
            let id = c["id"].as_str().unwrap().to_owned();
            if let Some(prev) = union.get(&id) {
                assert_eq!(
                    prev, &c,
                    "seed {seed}: id {id} replayed with different content"
                );
            }
            union.insert(id, c);
        }
    }
    eprintln!(
        "seed {seed}: {} distinct changes, {} delivered in {} runs",
        union.len(),
        delivered,
        outputs.len()
    );

    assert!(
        delivered > union.len(),
        "seed {seed}: no change was delivered twice, so no replay put deduplication to the test"
    );

    // JetStream holds each change once: the replays after every kill were dropped by
    // Nats-Msg-Id, and it holds exactly the changes stdout delivered, in commit order.
    let (count, window, stored) = read_stream(&nats.url()).await;
    eprintln!(
        "seed {seed}: JetStream stream {STREAM} holds {count} messages (duplicate window {window:?})"
    );
    assert!(
        window >= started.elapsed(),
        "duplicate window {window:?} shorter than the test ({:?}): replays could slip through",
        started.elapsed()
    );
    let ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    let stored_ids: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        stored_ids.len(),
        ids.len(),
        "seed {seed}: some Nats-Msg-Id is stored more than once"
    );
    let union_ids: BTreeSet<&str> = union.keys().map(String::as_str).collect();
    let missing: Vec<&&str> = union_ids.difference(&stored_ids).take(5).collect();
    let extra: Vec<&&str> = stored_ids.difference(&union_ids).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}: JetStream and stdout disagree: {} ids only on stdout (e.g. {missing:?}), {} only in JetStream (e.g. {extra:?})",
        union_ids.difference(&stored_ids).count(),
        stored_ids.difference(&union_ids).count()
    );
    assert_eq!(
        count as usize,
        union.len(),
        "seed {seed}: stream message count vs distinct changes"
    );
    for (id, payload) in &stored {
        assert_eq!(
            payload, &union[id],
            "seed {seed}: JetStream message {id} differs from stdout"
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: JetStream holds the changes out of commit order"
    );

    // Replay in commit order.
    let mut tables: BTreeMap<String, BTreeMap<i64, Map<String, Json>>> = BTreeMap::new();
    for c in union.values() {
        let table = c["table"].as_str().unwrap_or_default().to_owned();
        let rows = tables.entry(table).or_default();
        match c["op"].as_str().unwrap() {
            "insert" => {
                let after = c["after"].as_object().unwrap().clone();
                rows.insert(after["id"].as_i64().unwrap(), after);
            }
            "update" => {
                let after = c["after"].as_object().unwrap();
                let key = after["id"].as_i64().unwrap();
                let old_key = c["before"].get("id").and_then(Json::as_i64).unwrap_or(key);
                let mut row = rows
                    .remove(&old_key)
                    .unwrap_or_else(|| panic!("seed {seed}: update of unknown row {old_key}"));
                // Unchanged TOAST columns are absent from `after`: keep the old value.
                let unchanged: Vec<&str> = c["unchanged_toast"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
                    .unwrap_or_default();
                let mut new = after.clone();
                for col in unchanged {
                    new.insert(col.to_owned(), row.remove(col).unwrap());
                }
                rows.insert(key, new);
            }
            "delete" => {
                let key = c["before"]["id"].as_i64().unwrap();
                rows.remove(&key);
            }
            "truncate" => rows.clear(),
            other => panic!("unexpected op {other}"),
        }
    }
    for table in ["a", "b"] {
        let want = to_jsonb_rows(&db, table).await;
        let got: Vec<Json> = tables
            .get(table)
            .map(|r| r.values().map(|m| Json::Object(m.clone())).collect())
            .unwrap_or_default();
        assert_eq!(
            got.len(),
            want.len(),
            "seed {seed}: table {table} row count"
        );
        assert!(
            got == want,
            "seed {seed}: table {table} differs from to_jsonb"
        );
    }
}
