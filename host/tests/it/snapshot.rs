//! Initial snapshots and backfills: existing rows delivered as op `read`, consistent with
//! the live stream (DBLog watermarks), resumable after `kill -9`, requested without a port.

use std::collections::{BTreeMap, HashMap};
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
                if let Some(before) = c["before"].as_object() {
                    let old = key_of(&Json::Object(before.clone()));
                    if old != key_of(&after) {
                        rows.remove(&old);
                    }
                }
                let key = key_of(&after);
                let mut row = after.as_object().unwrap().clone();
                // A row not read yet may be updated (its TOASTed value unknown here): the
                // read that follows brings the whole row; the final comparison tells.
                if let (Some(toast), Some(prev)) = (c["unchanged_toast"].as_array(), rows.get(&key))
                {
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

/// Waits until every snapshot row of `slot` is in a final state; returns them.
async fn wait_snapshots_done(
    db: &TestDb,
    slot: &str,
    host: &mut HostProcess,
    wait: Duration,
) -> Vec<(String, String, i64)> {
    let client = db.client().await;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let rows = client
            .query(
                "SELECT format('%s.%s', schema_name, table_name), state, rows_done FROM cdc_host.snapshots WHERE slot = $1 ORDER BY id",
                &[&slot],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect::<Vec<(String, String, i64)>>())
            .unwrap_or_default();
        if !rows.is_empty()
            && rows
                .iter()
                .all(|(_, s, _)| s != "pending" && s != "running")
        {
            return rows;
        }
        if let Some(st) = host.try_exit() {
            panic!("host exited ({st}):\n{}", host.stderr_tail(40));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshots not done: {rows:?}\n{}",
            host.stderr_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a marker row and waits for it on stdout: everything committed before it has
/// been delivered.
async fn wait_marker(db: &TestDb, host: &mut HostProcess, marker: i64) -> Vec<Json> {
    db.exec(&format!("INSERT INTO marker VALUES ({marker})"))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = parse_lines(&host.stdout_lines());
        if lines
            .iter()
            .any(|c| c["table"] == "marker" && c["after"]["id"] == marker)
        {
            return lines;
        }
        if let Some(st) = host.try_exit() {
            panic!("host exited ({st}):\n{}", host.stderr_tail(40));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "marker {marker} never arrived:\n{}",
            host.stderr_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    assert_eq!(states.len(), 3, "{states:?}");
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
    // Exactly one `last` per table.
    for t in ["a", "b", "marker"] {
        let lasts = reads
            .iter()
            .filter(|r| r["table"] == t && r["snapshot"]["last"] == true)
            .count();
        if t != "marker" {
            assert_eq!(lasts, 1, "table {t}");
        }
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
