//! Initial snapshots and backfills: existing rows delivered as op `read`, consistent with
//! the live stream (DBLog watermarks), resumable after `kill -9`, requested without a port.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::{HostProcess, TestDb};

/// Replays delivered changes in order into `table → key → row`; `key_of` names the key
/// columns of each table. Unchanged TOAST columns keep their previous value.
fn replay(
    lines: &[Json],
    keys: &HashMap<&str, Vec<&str>>,
) -> BTreeMap<String, BTreeMap<String, Json>> {
    let mut out: BTreeMap<String, BTreeMap<String, Json>> = BTreeMap::new();
    for c in lines {
        let Some(table) = c["table"].as_str() else {
            continue;
        };
        let Some(cols) = keys.get(table) else {
            continue;
        };
        let rows = out.entry(table.to_owned()).or_default();
        let key_of = |row: &Json| -> String {
            cols.iter()
                .map(|k| row[*k].to_string())
                .collect::<Vec<_>>()
                .join("|")
        };
        match c["op"].as_str().unwrap() {
            "read" | "insert" | "update" => {
                let after = c["after"].clone();
                let key = key_of(&after);
                let mut prev = None;
                if let Some(before) = c["before"].as_object() {
                    let old = key_of(&Json::Object(before.clone()));
                    if old != key {
                        prev = rows.remove(&old);
                    }
                }
                let prev = prev.or_else(|| rows.get(&key).cloned());
                let mut row = after.as_object().unwrap().clone();
                // A row not read yet may be updated (its TOASTed value unknown here): the
                // read that follows brings the whole row; the final comparison tells.
                if let (Some(toast), Some(prev)) = (c["unchanged_toast"].as_array(), prev) {
                    for col in toast {
                        let col = col.as_str().unwrap();
                        row.insert(col.to_owned(), prev[col].clone());
                    }
                }
                rows.insert(key, Json::Object(row));
            }
            "delete" => {
                rows.remove(&key_of(&c["before"]));
            }
            "truncate" => rows.clear(),
            other => panic!("unexpected op {other}"),
        }
    }
    out
}

async fn table_rows(db: &TestDb, table: &str, key: &[&str]) -> BTreeMap<String, Json> {
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let rows = client
        .query(&format!("SELECT to_jsonb(r)::text FROM {table} r"), &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let v: Json = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
            let k = key
                .iter()
                .map(|c| v[*c].to_string())
                .collect::<Vec<_>>()
                .join("|");
            (k, v)
        })
        .collect()
}

/// Polls `check` every 50 ms until it gives a value; fails when the host exits or after
/// `wait` (saying `what` it waited for).
async fn poll<T, F, Fut>(host: &mut HostProcess, wait: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(state) => state,
        };
        if let Some(st) = host.try_exit() {
            panic!("host exited ({st}):\n{}", host.stderr_tail(40));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {last}\n{}",
            host.stderr_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `sql` (one bigint, maybe NULL) counts some rows done.
async fn wait_rows_done(client: &tokio_postgres::Client, host: &mut HostProcess, sql: &str) {
    poll(host, WAIT, "no rows done", || async {
        let done = client
            .query_one(sql, &[])
            .await
            .map_err(|e| e.to_string())?
            .get::<_, Option<i64>>(0)
            .unwrap_or(0);
        if done > 0 {
            Ok(())
        } else {
            Err(format!("{done} rows done"))
        }
    })
    .await
}

/// Waits until every snapshot row of `slot` is in a final state; returns them.
async fn wait_snapshots_done(
    db: &TestDb,
    slot: &str,
    host: &mut HostProcess,
    wait: Duration,
) -> Vec<(String, String, i64)> {
    let client = db.client().await;
    poll(host, wait, "snapshots not done", || async {
        let rows = client
            .query(
                "SELECT format('%s.%s', schema_name, table_name), state, rows_done FROM cdc_host.snapshots WHERE slot = $1 ORDER BY id",
                &[&slot],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect::<Vec<(String, String, i64)>>())
            .unwrap_or_default();
        if !rows.is_empty() && rows.iter().all(|(_, s, _)| s != "pending" && s != "running") {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await
}

/// Writes a marker row and waits for it on stdout: everything committed before it has
/// been delivered.
async fn wait_marker(db: &TestDb, host: &mut HostProcess, marker: i64) -> Vec<Json> {
    db.exec(&format!("INSERT INTO marker VALUES ({marker})"))
        .await;
    let out = host.stdout_path().to_owned();
    poll(host, WAIT, "marker never arrived", || {
        let out = out.clone();
        async move {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let lines = parse_lines(&lines);
            if lines
                .iter()
                .any(|c| c["table"] == "marker" && c["after"]["id"] == marker)
            {
                Ok(lines)
            } else {
                Err(format!("{} lines so far", lines.len()))
            }
        }
    })
    .await
}

const TABLES: &str = "
CREATE TABLE a (id int PRIMARY KEY, v text, n numeric, f float8);
CREATE TABLE b (k1 int, k2 text, doc jsonb, big text, tags int[], PRIMARY KEY (k1, k2));
ALTER TABLE b ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE marker (id bigint PRIMARY KEY);
INSERT INTO a SELECT g, 'v' || g, g * 1.5, CASE WHEN g % 100 = 0 THEN 'NaN'::float8 ELSE g END FROM generate_series(1, 20000) g;
INSERT INTO b SELECT g % 50, 'k' || g, jsonb_build_object('g', g), CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 200) END, ARRAY[g, g + 1]
  FROM generate_series(1, 4000) g;
";

/// Random updates, deletes and inserts on the rows being copied, until stopped.
fn spawn_writers(
    dsn: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let c = harness::try_connect(&dsn).await.unwrap();
        let mut n: u64 = 0;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while !*stop.borrow() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (x % 20_000) + 1;
            let k = (x % 4000) + 1;
            let sql = match n % 6 {
                0 => format!("UPDATE a SET v = 'u{n}', n = n + 1 WHERE id = {id}"),
                1 => format!("DELETE FROM a WHERE id = {id}"),
                2 => format!("INSERT INTO a VALUES ({}, 'new', 0, 0) ON CONFLICT (id) DO UPDATE SET v = 'upsert'", 20_000 + n),
                3 => format!("UPDATE b SET doc = jsonb_build_object('u', {n}) WHERE k1 = {} AND k2 = 'k{k}'", k % 50),
                4 => format!("DELETE FROM b WHERE k1 = {} AND k2 = 'k{k}'", k % 50),
                _ => format!("BEGIN; UPDATE a SET id = id + 100000 WHERE id = {id}; UPDATE b SET big = repeat('z', 3000) WHERE k1 = {} AND k2 = 'k{k}'; COMMIT", k % 50),
            };
            c.batch_execute(&sql).await.unwrap();
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_with_concurrent_writers_replays_to_the_tables() {
    let _heavy = harness::heavy().await;
    let db = db_with(
        "snap_initial",
        TABLES,
        "CREATE PUBLICATION p FOR ALL TABLES",
    )
    .await;
    let (_dir, cfg) = config(
        &db.dsn(),
        "snap_initial",
        "p",
        "[source.snapshot]\nchunk_rows = 700\nworkers = 2\n",
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writers = spawn_writers(db.dsn(), stop_rx);
    let mut host = start_host(&db, &cfg, "snap_initial").await;
    let states =
        wait_snapshots_done(&db, "snap_initial", &mut host, Duration::from_secs(300)).await;
    stop_tx.send(true).unwrap();
    let writes = writers.await.unwrap();
    assert!(writes > 50, "the writers barely ran ({writes} statements)");
    // Two workers: the large table was cut into key ranges (a job each).
    let tables: std::collections::BTreeSet<&str> =
        states.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        tables,
        ["public.a", "public.b", "public.marker"]
            .into_iter()
            .collect()
    );
    assert!(
        states.len() > 3,
        "public.a was not split into ranges: {states:?}"
    );
    assert!(states.iter().all(|(_, s, _)| s == "done"), "{states:?}");
    let lines = wait_marker(&db, &mut host, 1).await;
    stop_clean(&mut host).await;

    let reads: Vec<&Json> = lines.iter().filter(|c| c["op"] == "read").collect();
    assert!(reads.len() > 10_000, "only {} reads", reads.len());
    // Reads carry read ids and their snapshot; ids are unique.
    let mut ids = std::collections::HashSet::new();
    for r in &reads {
        let id = r["id"].as_str().unwrap();
        assert!(id.starts_with('r') && id.len() == 42, "{id}");
        assert!(r["snapshot"]["id"].as_i64().is_some(), "{r}");
        assert!(ids.insert(id.to_owned()), "read id {id} delivered twice");
    }
    // Concurrent changes really interleaved with the reads.
    let first_read = lines.iter().position(|c| c["op"] == "read").unwrap();
    let last_read = lines.iter().rposition(|c| c["op"] == "read").unwrap();
    let interleaved = lines[first_read..last_read]
        .iter()
        .filter(|c| c["op"] != "read")
        .count();
    assert!(
        interleaved > 0,
        "no live change between the first and the last read"
    );
    // Exactly one `last` per table, on the table's last read delivered (its key ranges ran
    // in parallel).
    for t in ["a", "b"] {
        let of_t: Vec<&&Json> = reads.iter().filter(|r| r["table"] == t).collect();
        let lasts = of_t
            .iter()
            .filter(|r| r["snapshot"]["last"] == true)
            .count();
        assert_eq!(lasts, 1, "table {t}");
        assert_eq!(of_t.last().unwrap()["snapshot"]["last"], true, "table {t}");
    }
    let keys: HashMap<&str, Vec<&str>> = [("a", vec!["id"]), ("b", vec!["k1", "k2"])]
        .into_iter()
        .collect();
    let replayed = replay(&lines, &keys);
    for (t, key) in [("a", vec!["id"]), ("b", vec!["k1", "k2"])] {
        let want = table_rows(&db, t, &key).await;
        let got = replayed.get(t).cloned().unwrap_or_default();
        assert_eq!(got.len(), want.len(), "table {t}: row count");
        for (k, row) in &want {
            assert_eq!(got.get(k), Some(row), "table {t} key {k}");
        }
    }
}

/// Runs `cdc-host backfill <cfg> <args>`; returns (success, stdout, stderr).
fn backfill_cli(cfg: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("backfill")
        .arg(cfg)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_on_demand_while_the_stream_runs() {
    let db = db_with(
        "snap_backfill",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE nokey (x int, y text);
         CREATE TABLE marker (id bigint PRIMARY KEY);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3000) g;
         INSERT INTO nokey VALUES (1, 'a');",
        "CREATE PUBLICATION p FOR TABLE t, marker",
    )
    .await;
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], harness::nats_server::free_port()));
    let (_dir, cfg) = config(
        &db.dsn(),
        "snap_backfill",
        "p",
        &format!("[source.snapshot]\nmode = \"never\"\nchunk_rows = 50\n\n[admin]\nlisten = \"{admin}\"\n"),
    );
    let mut host = start_host(&db, &cfg, "snap_backfill").await;
    // mode = "never": nothing of the 3000 rows, and no state schema was needed.
    db.exec("INSERT INTO t VALUES (100001, 'live')").await;
    let first = wait_json(&mut host, 1).await;
    assert_eq!(first[0]["op"], "insert", "{first:?}");

    // Refused requests say why, and record nothing.
    let (ok, _, err) = backfill_cli(&cfg, &["--table", "public.nokey"]);
    assert!(!ok && err.contains("not in publication"), "{err}");
    db.exec("ALTER PUBLICATION p ADD TABLE nokey").await;
    let (ok, _, err) = backfill_cli(&cfg, &["--table", "public.nokey"]);
    assert!(
        !ok && err.contains("has no primary key") && err.contains("ADD PRIMARY KEY"),
        "{err}"
    );
    let (ok, _, err) = backfill_cli(
        &cfg,
        &["--table", "public.t", "--where", "no_such_column > 1"],
    );
    assert!(
        !ok && err.contains("--where") && err.contains("no_such_column"),
        "{err}"
    );
    let (ok, _, err) = backfill_cli(&cfg, &["--table", "t"]);
    assert!(!ok && err.contains("schema.table"), "{err}");

    // Live writes keep flowing while the backfill runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_live_writer(db.dsn(), 200_002, Arc::clone(&stop));
    let (ok, out, err) = backfill_cli(&cfg, &["--table", "public.t", "--where", "id % 3 = 0"]);
    assert!(ok, "{out}{err}");
    let number: i64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot number in {out:?}"));
    let states =
        wait_snapshots_done(&db, "snap_backfill", &mut host, Duration::from_secs(120)).await;
    assert_eq!(
        states,
        vec![("public.t".to_owned(), "done".to_owned(), 1000)]
    );
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let lines = wait_marker(&db, &mut host, 1).await;

    let reads: Vec<&Json> = lines.iter().filter(|c| c["op"] == "read").collect();
    let mut ids: Vec<i64> = reads
        .iter()
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    let want: Vec<i64> = (1..=3000).filter(|i| i % 3 == 0).collect();
    assert_eq!(
        ids, want,
        "the backfill sends exactly the rows matching --where"
    );
    for r in &reads {
        assert_eq!(r["snapshot"]["id"], number, "{r}");
        assert_eq!(r["after"]["v"], format!("v{}", r["after"]["id"]), "{r}");
    }
    let live = lines
        .iter()
        .filter(|c| c["op"] == "insert" && c["table"] == "t")
        .count();
    assert_eq!(live, 1 + written, "every live insert delivered");
    let first_read = lines.iter().position(|c| c["op"] == "read").unwrap();
    let last_read = lines.iter().rposition(|c| c["op"] == "read").unwrap();
    assert!(
        lines[first_read..last_read]
            .iter()
            .any(|c| c["op"] == "insert"),
        "live inserts flowed between the backfill's chunks"
    );

    let (ok, out, err) = backfill_cli(&cfg, &["--status"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains(" public.t "))
        .unwrap_or_else(|| panic!("{out}"));
    for want in ["backfill", "done", "1000", "100.0"] {
        assert!(
            line.contains(want),
            "{want:?} missing from status line {line:?}\n{out}"
        );
    }
    assert!(out.contains("where id % 3 = 0"), "{out}");
    // The metrics count what every sink acknowledged.
    let (_, metrics) = crate::admin::get(admin, "/metrics")
        .await
        .expect("/metrics answers");
    for want in [
        "cdc_snapshot_rows_total{table=\"public.t\"} 1000",
        "cdc_snapshot_remaining_rows{table=\"public.t\"} 0",
        "cdc_snapshot_running 0",
    ] {
        assert!(metrics.contains(want), "{want:?} missing:\n{metrics}");
    }
    stop_clean(&mut host).await;
}

/// Inserts into `t` ids `first_id`, `first_id + 3`, … (none matches `id % 3 = 0` when
/// `first_id % 3 = 1`), one per transaction, ~2 ms apart, until `stop` is set; returns how
/// many. It runs for the whole backfill, however fast or slow that is, so live changes fall
/// between its chunks.
fn spawn_live_writer(
    dsn: String,
    first_id: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let c = harness::try_connect(&dsn).await.unwrap();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            c.batch_execute(&format!(
                "INSERT INTO t VALUES ({}, 'live')",
                first_id + 3 * n as i64
            ))
            .await
            .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_backfill() {
    let db = db_with(
        "snap_cancel",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200000) g;",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_dir, cfg) = config(
        &db.dsn(),
        "snap_cancel",
        "p",
        "[source.snapshot]\nmode = \"never\"\nchunk_rows = 50\n",
    );
    let mut host = start_host(&db, &cfg, "snap_cancel").await;
    let (ok, out, err) = backfill_cli(&cfg, &["--table", "public.t"]);
    assert!(ok, "{out}{err}");
    // Running, some rows through: cancel it.
    let client = db.client().await;
    wait_rows_done(
        &client,
        &mut host,
        "SELECT sum(rows_done)::bigint FROM cdc_host.snapshots",
    )
    .await;
    let (ok, out, err) = backfill_cli(&cfg, &["--cancel"]);
    assert!(ok && out.contains("cancelled 1 table"), "{out}{err}");
    host.wait_for_stderr("snapshot cancelled", WAIT)
        .await
        .unwrap();
    let (_, status, _) = backfill_cli(&cfg, &["--status"]);
    assert!(status.contains("cancelled"), "{status}");
    // The chunks already copied may still arrive; then nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads_then = host.stdout_lines().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads_later = host.stdout_lines().len();
    assert_eq!(reads_then, reads_later, "reads went on after the cancel");
    assert!(
        reads_later < 200_000,
        "the whole table went out ({reads_later})"
    );
    stop_clean(&mut host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_key_stops_the_initial_snapshot_with_its_name() {
    let db = db_with(
        "snap_nokey",
        "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (x int);
         CREATE TABLE uniq (a int NOT NULL, b text NOT NULL, UNIQUE (a, b));
         INSERT INTO uniq VALUES (1, 'x'), (2, 'y');",
        "CREATE PUBLICATION p FOR ALL TABLES",
    )
    .await;
    // The default mode (spelled out: the harness turns snapshots off unless asked).
    let (_dir, cfg) = config(
        &db.dsn(),
        "snap_nokey",
        "p",
        "[source.snapshot]\nmode = \"initial\"\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success());
    let err = host.stderr();
    assert!(
        err.contains("\"public\".\"loose\" has no primary key")
            && err.contains("[source.snapshot] tables"),
        "{err}"
    );
    // Nothing was created: the slot waits for a start that can snapshot.
    let slots: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'snap_nokey'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
    // Naming the tables to copy works; a unique index on NOT NULL columns is a key too.
    let (_dir2, cfg2) = config(
        &db.dsn(),
        "snap_nokey",
        "p",
        "[source.snapshot]\ntables = [\"public.keyed\", \"public.uniq\"]\n",
    );
    let mut host = start_host(&db, &cfg2, "snap_nokey").await;
    let lines = wait_json(&mut host, 2).await;
    let mut got: Vec<String> = lines
        .iter()
        .map(|c| format!("{} {}", c["op"], c["after"]))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![r#""read" {"a":1,"b":"x"}"#, r#""read" {"a":2,"b":"y"}"#]
    );
    stop_clean(&mut host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_snapshot_resumes_from_the_last_acknowledged_chunk() {
    use cdc_test_harness::nats_server::{self, NatsServer};
    let _heavy = harness::heavy().await;
    const ROWS: i64 = 60_000;
    const CHUNK: i64 = 500;
    const KILLS: usize = 10;
    let nats = NatsServer::start(&[]);
    let db = db_with(
        "snap_kill",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        ),
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_dir, cfg) = config(
        &db.dsn(),
        "snap_kill",
        "p",
        &format!(
            "[source.snapshot]\nchunk_rows = {CHUNK}\nworkers = 1\n\n[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"cdc.{{table}}\"\nformat = \"json\"\n[sinks.jetstream]\nstream = \"SNAPKILL\"\ncreate_stream = true\nduplicate_window_secs = 3600\n",
            nats.url()
        ),
    );
    let client = db.client().await;
    let chunks_done = || async {
        client
            .query_opt("SELECT chunks_done, state FROM cdc_host.snapshots", &[])
            .await
            .ok()
            .flatten()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
            .unwrap_or((0, "pending".into()))
    };
    let mut lines: Vec<Json> = Vec::new();
    let mut kills = 0;
    let mut resumed_at = Vec::new();
    let mut host = start_host(&db, &cfg, "snap_kill").await;
    loop {
        let (before, state) = chunks_done().await;
        if state == "done" || kills == KILLS {
            break;
        }
        // Let a few chunks be acknowledged, then kill in the middle of the next ones.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (now, state) = chunks_done().await;
            if now >= before + 3 || state == "done" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress:\n{}",
                host.stderr_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        host.kill9().unwrap();
        let _ = host.wait_exit(WAIT).await;
        kills += 1;
        lines.extend(parse_lines(&host.stdout_lines()));
        let (recorded, _) = chunks_done().await;
        resumed_at.push(recorded);
        host = start_host(&db, &cfg, "snap_kill").await;
    }
    let states = wait_snapshots_done(&db, "snap_kill", &mut host, Duration::from_secs(300)).await;
    assert_eq!(states[0].1, "done");
    // The stream is idle: wait for JetStream to hold every row.
    let deadline = tokio::time::Instant::now() + WAIT;
    while nats_server::stream_len(&nats.url(), "SNAPKILL").await < ROWS as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "JetStream short:\n{}",
            host.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_clean(&mut host).await;
    lines.extend(parse_lines(&host.stdout_lines()));
    assert!(kills >= 3, "only {kills} kills before the snapshot ended");

    // Nothing lost: every row read, with its value.
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for c in &lines {
        assert_eq!(c["op"], "read", "{c}");
        let id = c["after"]["id"].as_i64().unwrap();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len() as i64, ROWS, "rows missing");
    // Re-read after each kill: at most the chunks in flight (3) and the one being acknowledged,
    // never the chunks recorded before the kill.
    let again: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{kills} kills, {again} rows read again, chunks recorded at each kill: {resumed_at:?}"
    );
    assert!(
        again as i64 <= kills as i64 * 4 * CHUNK,
        "{again} rows read again after {kills} kills: more than the chunks in flight"
    );
    // The first restart resumed after its recorded chunks, not from the start.
    assert!(resumed_at.iter().all(|n| *n > 0), "{resumed_at:?}");
    // JetStream holds each row once: re-sent reads carry the same ids (Nats-Msg-Id).
    assert_eq!(
        nats_server::stream_len(&nats.url(), "SNAPKILL").await,
        ROWS as u64
    );
}

/// Wide rows and a large `chunk_rows`: a chunk ends at its share of the memory budget
/// (the chunks of every worker in flight together stay within it), the next one starts
/// after its last row, and every row arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_end_a_chunk_at_its_share_of_the_budget() {
    const ROWS: usize = 200;
    let db = db_with(
        "snap_wide",
        &format!(
            "CREATE TABLE wide (id int PRIMARY KEY, v text);
             INSERT INTO wide SELECT g, repeat(md5(g::text), 3000) FROM generate_series(1, {ROWS}) g;"
        ),
        "CREATE PUBLICATION p FOR TABLE wide",
    )
    .await;
    // 64 MB: 8 MB for chunks, a third of it decoded, over 1 worker x 3 chunks in flight:
    // about 0.9 MB of COPY data, 9 of these 96 kB rows, per chunk instead of 1000.
    let (_d, cfg) = config(
        &db.dsn(),
        "snap_wide",
        "p",
        "[source.snapshot]\nchunk_rows = 1000\nworkers = 1\n\n[pipeline]\nmemory_budget_mb = 64\n",
    );
    let mut host = start_host_env(
        &db,
        &cfg,
        "snap_wide",
        &[("RUST_LOG", "info,cdc_host::source::snapshot=debug")],
    )
    .await;
    let out = wait_json(&mut host, ROWS).await;
    stop_clean(&mut host).await;
    let mut ids: Vec<i64> = out
        .iter()
        .map(|c| {
            assert_eq!(c["op"], "read");
            assert_eq!(c["after"]["v"].as_str().unwrap().len(), 96_000);
            c["after"]["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=ROWS as i64).collect::<Vec<_>>(), "each row once");
    let err = host.stderr();
    let chunks: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("snapshot chunk copied"))
        .collect();
    let cut = chunks
        .iter()
        .filter(|l| l.contains("cut_at_byte_share=true"))
        .count();
    // Rows per chunk: at most 9 (each row is 96 kB of the 0.9 MB share); the first chunks
    // end at the share, later ones ask for fewer rows (the limit halves after a cut).
    let per_chunk: Vec<usize> = chunks
        .iter()
        .map(|l| {
            let rows = l.split("rows=").nth(1).unwrap();
            rows[..rows.find(' ').unwrap_or(rows.len())]
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        chunks.len() >= 20 && cut >= 1 && per_chunk.iter().all(|n| *n <= 9),
        "{} chunks, {cut} cut at the byte share, rows per chunk {per_chunk:?}",
        chunks.len()
    );
}

/// Every type the stream decodes, copied by a snapshot: each value exactly as `to_jsonb`.
/// `typed_bin` (every column of `typed` but `isb`) is copied in COPY's binary format;
/// `typed` is copied as text (isbn13 has no binary send function at all, so `COPY … (FORMAT
/// binary)` cannot copy it), and so is `typed_text` (money, a range, tsvector: no binary
/// decoder) — and all give the same values with `binary = false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_read_as_to_jsonb_shows_it() {
    use crate::fixtures::{BINARY_DECODED, TYPES_DDL, TYPES_ROWS};
    let db = db_with("snap_types", TYPES_DDL, "SELECT 1").await;
    db.exec(TYPES_ROWS).await;
    db.exec(&format!(
        "CREATE TABLE typed_bin AS SELECT {} FROM typed; ALTER TABLE typed_bin ADD PRIMARY KEY (id);
         CREATE TABLE typed_text (id int PRIMARY KEY, m money, r int4range, tv tsvector);
         INSERT INTO typed_text VALUES (1, 12.5, '[1,5)', 'a fat cat'), (2, NULL, 'empty', '');
         CREATE PUBLICATION p FOR TABLE typed, typed_bin, typed_text",
        BINARY_DECODED.replace(", isb", "")
    ))
    .await;
    let mut afters = Vec::new();
    for binary in [true, false] {
        let slot = format!("snap_types_{binary}");
        let (_dir, cfg) = config(
            &db.dsn(),
            &slot,
            "p",
            &format!("[source.snapshot]\nchunk_rows = 2\nbinary = {binary}\n"),
        );
        let mut host = start_host(&db, &cfg, &slot).await;
        let mut by_table = BTreeMap::new();
        for table in ["typed", "typed_bin", "typed_text"] {
            by_table.insert(table, to_jsonb_rows(&db, table).await);
        }
        let total = by_table.values().map(Vec::len).sum();
        let out = wait_json(&mut host, total).await;
        stop_clean(&mut host).await;
        for line in host
            .stderr()
            .lines()
            .filter(|l| l.contains("snapshot of table started"))
        {
            let want = if binary && line.contains("table=public.typed_bin") {
                "binary"
            } else {
                "text"
            };
            assert!(
                line.contains(&format!("copy_format={want}"))
                    || line.contains(&format!("copy_format=\"{want}\"")),
                "{line}"
            );
        }
        for (table, expected) in &by_table {
            let mut got: Vec<&Json> = out.iter().filter(|c| c["table"] == *table).collect();
            got.sort_by_key(|c| c["after"]["id"].as_i64());
            assert_eq!(got.len(), expected.len(), "{table}");
            for (got, want) in got.iter().zip(expected) {
                assert_eq!(got["op"], "read");
                let (got, want) = (got["after"].as_object().unwrap(), want.as_object().unwrap());
                assert_eq!(got.len(), want.len());
                for (k, w) in want {
                    if k == "js" {
                        continue; // json keeps its text; to_jsonb normalises it (see replication.rs)
                    }
                    assert_eq!(got.get(k), Some(w), "{table} row {} column {k}", want["id"]);
                }
            }
        }
        let mut out: Vec<Json> = out.into_iter().map(|c| c["after"].clone()).collect();
        out.sort_by_key(|a| a.to_string());
        afters.push(out);
    }
    assert_eq!(
        afters[0], afters[1],
        "binary and text copies give the same values"
    );
}

/// Partitioned tables: with publish_via_partition_root the root is copied under its own
/// name; without it each leaf partition under its name — as the stream names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_tables_are_read_as_the_stream_names_them() {
    for via_root in [true, false] {
        let slot = format!("snap_part_{via_root}");
        let db = db_with(
            &slot,
            "CREATE TABLE m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
             CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
             INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 100) g;",
            &format!("CREATE PUBLICATION p FOR TABLE m WITH (publish_via_partition_root = {via_root})"),
        )
        .await;
        let (_dir, cfg) = config(
            &db.dsn(),
            &slot,
            "p",
            "[source.snapshot]\nchunk_rows = 30\n",
        );
        let mut host = start_host(&db, &cfg, &slot).await;
        let out = wait_json(&mut host, 100).await;
        db.exec("INSERT INTO m VALUES (1000, 'eu', 0)").await;
        let out2 = wait_json(&mut host, 101).await;
        stop_clean(&mut host).await;
        assert!(out.iter().all(|c| c["op"] == "read"), "{out:?}");
        let live = &out2[100];
        assert_eq!(live["op"], "insert");
        let mut per_table: BTreeMap<String, usize> = BTreeMap::new();
        for c in &out {
            *per_table
                .entry(c["table"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        if via_root {
            assert_eq!(per_table, BTreeMap::from([("m".to_owned(), 100)]));
            assert_eq!(live["table"], "m");
        } else {
            assert_eq!(
                per_table,
                BTreeMap::from([("m_eu".to_owned(), 50), ("m_us".to_owned(), 50)])
            );
            assert_eq!(live["table"], "m_eu");
        }
    }
}

/// A table truncated while its backfill runs: nothing copied before the truncate survives
/// in the replay, the backfill ends, and rows inserted after it are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_or_drop_during_a_backfill() {
    let db = db_with(
        "snap_trunc",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE gone (id int PRIMARY KEY);
         CREATE TABLE marker (id bigint PRIMARY KEY);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100000) g;
         INSERT INTO gone SELECT g FROM generate_series(1, 100000) g;",
        "CREATE PUBLICATION p FOR TABLE t, gone, marker",
    )
    .await;
    let (_dir, cfg) = config(
        &db.dsn(),
        "snap_trunc",
        "p",
        "[source.snapshot]\nmode = \"never\"\nchunk_rows = 100\nworkers = 2\n",
    );
    let mut host = start_host(&db, &cfg, "snap_trunc").await;
    for t in ["public.t", "public.gone"] {
        let (ok, out, err) = backfill_cli(&cfg, &["--table", t]);
        assert!(ok, "{out}{err}");
    }
    let client = db.client().await;
    wait_rows_done(
        &client,
        &mut host,
        "SELECT min(n)::bigint FROM (SELECT sum(rows_done) n FROM cdc_host.snapshots GROUP BY table_name) x",
    )
    .await;
    db.exec("TRUNCATE t; INSERT INTO t VALUES (7, 'after')")
        .await;
    db.exec("DROP TABLE gone").await;
    let states = wait_snapshots_done(&db, "snap_trunc", &mut host, Duration::from_secs(120)).await;
    let lines = wait_marker(&db, &mut host, 1).await;
    stop_clean(&mut host).await;
    // The dropped table's backfill failed with its reason; the truncated one completed.
    let (_, status, _) = backfill_cli(&cfg, &["--status"]);
    let line = |t: &str| {
        status
            .lines()
            .find(|l| l.contains(t))
            .unwrap_or_else(|| panic!("{t}: {status}"))
            .to_owned()
    };
    assert!(
        line(" public.t ").contains(" done "),
        "{status}\n{states:?}"
    );
    assert!(
        line(" public.gone ").contains(" failed "),
        "{status}\n{states:?}"
    );
    assert!(status.contains("does not exist"), "{status}");
    let keys: HashMap<&str, Vec<&str>> = [("t", vec!["id"])].into_iter().collect();
    let replayed = replay(&lines, &keys);
    let want = table_rows(&db, "t", &["id"]).await;
    assert_eq!(replayed.get("t").cloned().unwrap_or_default(), want);
    assert!(lines.iter().any(|c| c["op"] == "truncate"));
}

/// Transforms and routes see reads like any change: op `read` survives a WIT 0.1 module
/// (which sees an insert with a read id), masked values included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_see_reads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let module = root.join("guests/rust/mask-columns/mask_columns.wasm");
    assert!(
        module.is_file(),
        "{} missing: run ./scripts/build-guests",
        module.display()
    );
    let db = db_with(
        "snap_tx",
        "CREATE TABLE users (id int PRIMARY KEY, email text);
         INSERT INTO users SELECT g, 'u' || g || '@x' FROM generate_series(1, 50) g;",
        "CREATE PUBLICATION p FOR TABLE users",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_d, cfg) = config(
        &db.dsn(),
        "snap_tx",
        "p",
        &format!(
            "[source.snapshot]\nchunk_rows = 20\n\n[pipeline]\nmodule_cache = \"{}\"\n\n[[transforms]]\nname = \"mask\"\nmodule = \"{}\"\n[transforms.config]\ncolumns = \"email\"\n",
            dir.path().display(),
            module.display()
        ),
    );
    let mut host = start_host(&db, &cfg, "snap_tx").await;
    let out = wait_json(&mut host, 50).await;
    stop_clean(&mut host).await;
    let lasts = out.iter().filter(|c| c["snapshot"]["last"] == true).count();
    assert_eq!(lasts, 1, "the last flag survives the module");
    for c in &out {
        assert_eq!(c["op"], "read", "{c}");
        assert!(c["id"].as_str().unwrap().starts_with('r'), "{c}");
        assert_eq!(c["after"]["email"], "***", "{c}");
    }
}

/// Debezium's envelope for reads: op "r", source.snapshot "true", and "last" on the final
/// row; the same ids as the native format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_reads_are_op_r_with_snapshot_true_and_last() {
    let db = db_with(
        "snap_dbz",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT g FROM generate_series(1, 10) g;",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{}\"\nslot = \"snap_dbz\"\npublication = \"p\"\n[source.snapshot]\nchunk_rows = 4\n[[sinks]]\ntype = \"stdout\"\nformat = \"debezium\"\n",
            db.dsn()
        ),
    )
    .unwrap();
    let mut host = start_host(&db, &path, "snap_dbz").await;
    let out = wait_json(&mut host, 10).await;
    stop_clean(&mut host).await;
    let snaps: Vec<&str> = out
        .iter()
        .map(|c| c["source"]["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(
        snaps.iter().filter(|s| **s == "last").count(),
        1,
        "{snaps:?}"
    );
    assert_eq!(snaps.last(), Some(&"last"));
    assert!(snaps[..9].iter().all(|s| *s == "true"), "{snaps:?}");
    assert!(
        out.iter().all(|c| c["op"] == "r" && c["before"].is_null()),
        "{out:?}"
    );
}

/// Without the right to create the state schema, the start stops with the GRANT to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_create_the_state_schema_is_told_what_to_grant() {
    let db = db_with(
        "snap_priv",
        // CREATE on a database is not granted to PUBLIC: the role has only SELECT.
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO {}",
            harness::SCRAM_USER
        ),
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let dsn = db.dsn_for(harness::SCRAM_USER, harness::SCRAM_PASSWORD);
    let (_dir, cfg) = config(
        &dsn,
        "snap_priv",
        "p",
        "[source.snapshot]\nmode = \"initial\"\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success());
    let err = host.stderr();
    assert!(
        err.contains("cannot create the schema cdc_host")
            && err.contains(&format!(
                "GRANT CREATE ON DATABASE {} TO {}",
                db.name,
                harness::SCRAM_USER
            ))
            && err.contains("mode = \"never\""),
        "{err}"
    );
    // Granted: it starts, and snapshots.
    db.exec(&format!(
        "GRANT CREATE ON DATABASE {} TO {}",
        db.name,
        harness::SCRAM_USER
    ))
    .await;
    db.exec("INSERT INTO t VALUES (1)").await;
    let mut host = start_host(&db, &cfg, "snap_priv").await;
    let out = wait_json(&mut host, 1).await;
    assert_eq!(out[0]["op"], "read");
    stop_clean(&mut host).await;
}
