//! End to end: a real Postgres, the real binary, JSON lines on stdout.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::common::*;
use crate::fixtures::{TYPES_DDL, TYPES_ROWS};
use cdc_test_harness as harness;
use cdc_test_harness::{confirmed_flush_lsn, HostProcess};

fn ops(v: &[Json]) -> Vec<&str> {
    v.iter().map(|c| c["op"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_commit_order_and_rollbacks_never_appear() {
    let db = db_with(
        "ops",
        "CREATE TABLE t (id int PRIMARY KEY, name text, n int);
         CREATE TABLE u (k text PRIMARY KEY);",
        "CREATE PUBLICATION p FOR TABLE t, u",
    )
    .await;
    let (_dir, cfg) = config(&db.dsn(), "s_ops", "p", "");
    let mut host = start_host(&db, &cfg, "s_ops").await;

    // One statement (or explicit block) per exec: a multi-statement simple query is one
    // implicit transaction, and a ROLLBACK inside it would undo its neighbours too.
    for sql in [
        "INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20)",
        "UPDATE t SET n = 11 WHERE id = 1",
        "UPDATE t SET id = 3 WHERE id = 2",
        "DELETE FROM t WHERE id = 1",
        "BEGIN; INSERT INTO t VALUES (100, 'rolled back', 0); ROLLBACK;",
        "BEGIN;
           INSERT INTO t VALUES (4, 'kept', 1);
           SAVEPOINT sp; INSERT INTO t VALUES (101, 'savepoint rolled back', 0); ROLLBACK TO SAVEPOINT sp;
           INSERT INTO u VALUES ('x');
           SELECT pg_logical_emit_message(true, 'tx-prefix', 'in a transaction');
         COMMIT;",
        "SELECT pg_logical_emit_message(false, 'nontx', 'outside')",
        "TRUNCATE t, u",
    ] {
        db.exec(sql).await;
    }
    let out = wait_json(&mut host, 11).await;
    assert_eq!(
        ops(&out),
        [
            "insert", "insert", "update", "update", "delete", "insert", "insert", "message",
            "message", "truncate", "truncate"
        ],
        "{out:#?}"
    );
    assert_eq!(out[0]["after"], json!({"id": 1, "name": "a", "n": 10}));
    assert_eq!(out[0]["before"], Json::Null);
    assert_eq!(out[0]["schema"], "public");
    assert_eq!(out[0]["table"], "t");
    // Update of a non-key column under REPLICA IDENTITY DEFAULT: no old tuple.
    assert_eq!(out[2]["before"], Json::Null);
    assert_eq!(out[2]["after"], json!({"id": 1, "name": "a", "n": 11}));
    // Primary-key change: the old key is sent.
    assert_eq!(out[3]["before"], json!({"id": 2}));
    assert_eq!(out[3]["after"]["id"], 3);
    // Delete under DEFAULT: only the key.
    assert_eq!(out[4]["before"], json!({"id": 1}));
    assert_eq!(out[4]["after"], Json::Null);
    assert_eq!(out[5]["after"]["name"], "kept");
    assert_eq!(out[6]["table"], "u");
    assert_eq!(out[7]["prefix"], "tx-prefix");
    assert_eq!(out[7]["content"], "in a transaction");
    assert_eq!(out[7]["transactional"], true);
    assert_eq!(out[8]["prefix"], "nontx");
    assert_eq!(out[8]["transactional"], false);
    assert_eq!(out[8]["schema"], Json::Null);
    assert_eq!(
        (out[9]["table"].as_str(), out[10]["table"].as_str()),
        (Some("t"), Some("u"))
    );
    assert_eq!(out[9]["cascade"], false);
    assert_eq!(out[9]["restart_identity"], false);
    // Nothing from rolled-back work.
    let text = host.stdout_lines().join("\n");
    assert!(!text.contains("rolled back"), "{text}");

    // One transaction: one commit_lsn, one xid, ordinals 0..n, ids unique and sorted.
    let txn: Vec<&Json> = out[5..8].iter().collect();
    assert!(txn
        .iter()
        .all(|c| c["commit_lsn"] == txn[0]["commit_lsn"] && c["xid"] == txn[0]["xid"]));
    let ids: Vec<&str> = out.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids must be unique and in commit order");
    for c in &out {
        for k in ["lsn", "commit_lsn"] {
            let s = c[k].as_str().unwrap();
            assert!(
                s.contains('/') && s.chars().all(|ch| ch == '/' || ch.is_ascii_hexdigit()),
                "{k}: {s}"
            );
        }
        assert!(c["commit_ts"].as_str().unwrap().ends_with("+00:00"));
    }
    stop_clean(&mut host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_and_unchanged_toast() {
    let db = db_with(
        "toast",
        "CREATE TABLE full_t (id int PRIMARY KEY, a text, b int);
         ALTER TABLE full_t REPLICA IDENTITY FULL;
         CREATE TABLE big (id int PRIMARY KEY, note text, blob text);
         ALTER TABLE big ALTER COLUMN blob SET STORAGE EXTERNAL;
         INSERT INTO full_t VALUES (1, 'x', 1);
         INSERT INTO big SELECT 1, 'n', string_agg(md5(g::text), '') FROM generate_series(1, 400) g;
         CREATE TABLE big_full (id int PRIMARY KEY, note text, blob text);
         ALTER TABLE big_full REPLICA IDENTITY FULL;
         ALTER TABLE big_full ALTER COLUMN blob SET STORAGE EXTERNAL;
         INSERT INTO big_full SELECT 1, 'n', string_agg(md5(g::text), '') FROM generate_series(1, 400) g;",
        "CREATE PUBLICATION p FOR TABLE full_t, big, big_full",
    )
    .await;
    let (_dir, cfg) = config(&db.dsn(), "s_toast", "p", "");
    let mut host = start_host(&db, &cfg, "s_toast").await;
    db.exec(
        "UPDATE full_t SET b = 2;
         DELETE FROM full_t;
         UPDATE big SET note = 'changed';
         UPDATE big_full SET note = 'changed';",
    )
    .await;
    let out = wait_json(&mut host, 4).await;
    assert_eq!(out[0]["before"], json!({"id": 1, "a": "x", "b": 1}));
    assert_eq!(out[0]["after"], json!({"id": 1, "a": "x", "b": 2}));
    assert_eq!(out[1]["before"], json!({"id": 1, "a": "x", "b": 2}));
    // The TOASTed column was not sent: it is marked, never rendered as null.
    assert_eq!(out[2]["after"], json!({"id": 1, "note": "changed"}));
    assert_eq!(out[2]["unchanged_toast"], json!(["blob"]));
    // REPLICA IDENTITY FULL: the old row is complete, so the unchanged TOASTed column of
    // `after` is filled from it (and nothing is marked unchanged).
    assert_eq!(
        out[3]["before"]["blob"].as_str().map(str::len),
        Some(400 * 32)
    );
    assert_eq!(out[3]["after"]["note"], "changed");
    assert_eq!(out[3]["after"]["blob"], out[3]["before"]["blob"]);
    assert_eq!(out[3]["unchanged_toast"], Json::Null, "{}", out[3]);
    let full_after = &to_jsonb_rows(&db, "big_full").await[0];
    assert_eq!(&out[3]["after"], full_after);
    stop_clean(&mut host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_matches_to_jsonb_value_for_value() {
    let db = db_with("types", TYPES_DDL, "CREATE PUBLICATION p FOR TABLE typed").await;
    let (_dir, cfg) = config(&db.dsn(), "s_types", "p", "");
    let mut host = start_host(&db, &cfg, "s_types").await;
    db.exec(TYPES_ROWS).await;
    let out = wait_json(&mut host, 5).await;
    let expected = to_jsonb_rows(&db, "typed").await;
    assert_eq!(out.len(), expected.len());
    for (got, want) in out.iter().zip(&expected) {
        let (got, want) = (got["after"].as_object().unwrap(), want.as_object().unwrap());
        // json (not jsonb) keeps the text as written; to_jsonb normalises it. Compare the
        // json column semantically, everything else exactly.
        for (k, w) in want {
            let g = got
                .get(k)
                .unwrap_or_else(|| panic!("row {}: column {k} missing", want["id"]));
            if k == "js" {
                continue;
            }
            assert_eq!(
                g, w,
                "row {} column {k}: got {g}, to_jsonb gives {w}",
                want["id"]
            );
        }
        assert_eq!(got.len(), want.len());
    }
    // json: the original text, still valid JSON.
    let written: Json = serde_json::from_str(r#"{"b": 1, "a": [1, 2.50, "x"]}"#).unwrap();
    assert_eq!(out[0]["after"]["js"], written);
    // Raw text: serde_json would re-spell the number, so look at the line itself.
    assert!(
        host.stdout_lines()[3].contains(r#""js":1.0e2,"#),
        "{}",
        host.stdout_lines()[3]
    );
    stop_clean(&mut host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_follows_acks_and_restart_resumes_without_duplicates() {
    let db = db_with(
        "ckpt",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_dir, cfg) = config(&db.dsn(), "s_ckpt", "p", "");
    let client = db.client().await;
    let mut host = start_host(&db, &cfg, "s_ckpt").await;
    db.exec("INSERT INTO t SELECT g FROM generate_series(1, 10) g")
        .await;
    let after_commit = harness::current_wal_lsn(&client).await;
    let out = wait_json(&mut host, 10).await;
    let commit_lsn = out[9]["commit_lsn"].as_str().unwrap().to_owned();
    // Acked by the stdout sink → confirmed past the commit, within a status interval.
    harness::wait_for_confirmed_flush(&client, "s_ckpt", &after_commit, WAIT)
        .await
        .unwrap();
    stop_clean(&mut host).await;
    assert!(
        host.stderr().contains("stopped cleanly"),
        "{}",
        host.stderr()
    );
    let confirmed = confirmed_flush_lsn(&client, "s_ckpt").await.unwrap();
    assert!(
        lsn(&confirmed) > lsn(&commit_lsn),
        "confirmed {confirmed} vs commit {commit_lsn}"
    );

    // Restart: nothing already confirmed is sent again; new changes are.
    let mut host = start_host(&db, &cfg, "s_ckpt").await;
    db.exec("INSERT INTO t VALUES (11)").await;
    let out = wait_json(&mut host, 1).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["after"]["id"], 11);
    stop_clean(&mut host).await;
    assert_eq!(host.stdout_lines().len(), 1);
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// kill -9 mid-stream, restart: every change arrives, each run delivers in commit order,
/// and exactly what was delivered but not confirmed at the kill is delivered again, with the
/// same ids and content. The host reaches Postgres through a proxy that holds its
/// confirmations for the last moments before the kill, so some delivered changes are always
/// unconfirmed: the replay is certain, not left to chance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_then_restart_loses_nothing() {
    const TXNS: i32 = 300;
    const ROWS: i32 = 100;
    let db = db_with(
        "crash",
        "CREATE TABLE t (id int PRIMARY KEY, payload text)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let proxy = harness::proxy::Proxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        harness::server().port(),
    )))
    .await;
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        proxy.port(),
        db.name
    );
    // Small batches so the kill lands between acknowledged batches, not only before the first.
    let (_dir, cfg) = config(&proxied, "s_crash", "p", "[pipeline]\nmax_changes = 500\n");
    let mut first = start_host(&db, &cfg, "s_crash").await;
    let client = db.client().await;

    // A writer keeps committing while the host is killed and restarted.
    let writer_db = db.dsn();
    let writer = tokio::spawn(async move {
        let c = harness::try_connect(&writer_db).await.unwrap();
        for tx in 0..TXNS {
            let lo = tx * ROWS + 1;
            c.batch_execute(&format!(
                "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({lo}, {}) g",
                lo + ROWS - 1
            ))
            .await
            .unwrap();
            if tx % 10 == 0 {
                c.batch_execute(&format!("UPDATE t SET payload = 'u' WHERE id = {lo}"))
                    .await
                    .unwrap();
            }
        }
    });
    let early = parse_lines(&first.wait_for_lines(3_000, WAIT).await.unwrap());
    // Part of it confirmed (so the restart must not send that again) ...
    let part = early[2_000]["commit_lsn"].as_str().unwrap().to_owned();
    harness::wait_for_confirmed_flush(&client, "s_crash", &part, WAIT)
        .await
        .unwrap();
    // ... and from here on nothing more: the confirmations are held at the proxy.
    proxy.hold_upstream();
    let held_at = first.stdout_lines().len();
    first.wait_for_lines(held_at + 1_000, WAIT).await.unwrap();
    first.kill9().unwrap();
    first.wait_exit(WAIT).await.unwrap();
    proxy.cut();
    let first_out = parse_lines(&first.stdout_lines());
    let at_kill = lsn(&confirmed_flush_lsn(&client, "s_crash").await.unwrap());
    // Delivered but not confirmed (commit at or past the slot's position): must come again.
    let unconfirmed: Vec<&Json> = first_out
        .iter()
        .filter(|c| lsn(c["commit_lsn"].as_str().unwrap()) >= at_kill)
        .collect();
    assert!(
        unconfirmed.len() >= 1_000 && unconfirmed.len() < first_out.len() - 2_000,
        "{} delivered changes unconfirmed at the kill (1,000 were delivered while the confirmations were held)",
        unconfirmed.len()
    );

    let (_dir2, cfg2) = config(&db.dsn(), "s_crash", "p", "[pipeline]\nmax_changes = 500\n");
    let mut second = HostProcess::spawn(BIN, &cfg2).unwrap();
    writer.await.unwrap();
    let expected_changes = (TXNS * ROWS + TXNS / 10) as usize;
    harness::wait_confirmed_to_now(&client, "s_crash", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", second.stderr_tail(20)));
    stop_clean(&mut second).await;
    let second_out = parse_lines(&second.stdout_lines());

    // Each run delivers in commit order: ids strictly increasing in the order written.
    for (run, out) in [("first", &first_out), ("second", &second_out)] {
        let ids: Vec<&str> = out.iter().map(|c| c["id"].as_str().unwrap()).collect();
        if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
            panic!("{run} run delivered {} after {}", w[1], w[0]);
        }
    }
    // The second run starts exactly at the first unconfirmed change, and replays each one
    // identically; nothing confirmed is sent again.
    assert!(
        second_out
            .iter()
            .all(|c| lsn(c["commit_lsn"].as_str().unwrap()) >= at_kill),
        "a change confirmed before the kill was sent again"
    );
    assert_eq!(
        &second_out[..unconfirmed.len()],
        unconfirmed
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
            .as_slice(),
        "the replay is the unconfirmed tail of the first run, change for change"
    );

    let mut union: BTreeMap<String, Json> = BTreeMap::new();
    for c in first_out.iter().chain(&second_out) {
        let id = c["id"].as_str().unwrap().to_owned();
        if let Some(prev) = union.get(&id) {
            assert_eq!(prev, c, "a replayed id must carry the same change");
        }
        union.insert(id, c.clone());
    }
    assert_eq!(union.len(), expected_changes);

    // Replaying the union in commit order rebuilds the table exactly.
    let mut table: BTreeMap<i64, Json> = BTreeMap::new();
    for c in union.values() {
        let after = c["after"].clone();
        table.insert(after["id"].as_i64().unwrap(), after);
    }
    let expected = to_jsonb_rows(&db, "t").await;
    assert_eq!(table.values().cloned().collect::<Vec<_>>(), expected);
    let dupes = first_out.len() + second_out.len() - expected_changes;
    eprintln!(
        "first run {} changes, slot at {at_kill:X} at the kill, duplicates replayed after kill -9: {dupes}",
        first_out.len()
    );
}

// A transaction larger than max_changes, split and confirmed only when complete (the slot's
// confirmed position read while pieces are acknowledged, then a kill -9 after k of m pieces):
// windows::kill9_after_k_of_m_pieces_of_a_split_transaction_replays_it_whole.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_publication_and_slot_when_asked() {
    let db = harness::server().fresh_db("create").await;
    db.exec("CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY);")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\ndsn = \"{}\"\nslot = \"s_create\"\n[source.publication]\nname = \"made_by_host\"\ncreate = true\ntables = [\"public.orders\"]\n[source.snapshot]\nmode = \"never\"\n[[sinks]]\ntype = \"stdout\"\n",
            db.dsn()
        ),
    )
    .unwrap();
    let mut host = start_host(&db, &cfg, "s_create").await;
    db.exec("INSERT INTO other VALUES (1); INSERT INTO orders VALUES (2);")
        .await;
    let out = wait_json(&mut host, 1).await;
    assert_eq!(out[0]["table"], "orders");
    stop_clean(&mut host).await;
    assert_eq!(host.stdout_lines().len(), 1, "only the published table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_md5_roles_stream() {
    for (user, pw) in [
        (harness::SCRAM_USER, harness::SCRAM_PASSWORD),
        (harness::MD5_USER, harness::MD5_PASSWORD),
    ] {
        let db = db_with(
            "auth",
            "CREATE TABLE t (id int PRIMARY KEY)",
            "CREATE PUBLICATION p FOR TABLE t",
        )
        .await;
        let slot = format!("s_{}", user.replace('-', "_"));
        // The password comes from the environment, as a user's secret would.
        let dsn = format!(
            "postgres://{user}:${{CDC_TEST_PASSWORD}}@127.0.0.1:{}/{}?sslmode=disable",
            db.port(),
            db.name
        );
        let (_dir, cfg) = config(&dsn, &slot, "p", "");
        let mut host = start_host_env(&db, &cfg, &slot, &[("CDC_TEST_PASSWORD", pw)]).await;
        db.exec("INSERT INTO t VALUES (1)").await;
        let out = wait_json(&mut host, 1).await;
        assert_eq!(out[0]["after"]["id"], 1, "{user}");
        stop_clean(&mut host).await;
        assert!(
            !host.stderr().contains(pw),
            "the password must never be logged"
        );
    }
}

/// Runs the host expecting it to fail at start; returns stderr.
async fn failing_start(cfg: &std::path::Path) -> String {
    let mut host = HostProcess::spawn(BIN, cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success(), "expected failure, got {st}");
    let err = host.stderr();
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "no panics: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actionable_errors() {
    let db = db_with(
        "errs",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;

    let (_d, cfg) = config(&db.dsn(), "s_err", "no_such_pub", "");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("publication \"no_such_pub\" does not exist")
            && err.contains("CREATE PUBLICATION"),
        "{err}"
    );

    let (_d, cfg) = config(&db.dsn_for(harness::SCRAM_USER, "wrong"), "s_err", "p", "");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("wrong password for role \"cdc_scram\""),
        "{err}"
    );
    assert!(!err.contains("wrong@"), "{err}");

    let (_d, cfg) = config(&db.dsn_for(harness::NOREPL_USER, ""), "s_err", "p", "");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("lacks the REPLICATION attribute")
            && err.contains("ALTER ROLE cdc_norepl REPLICATION"),
        "{err}"
    );

    let (_d, cfg) = config(&db.dsn(), "s_err", "p", "create_slot = false\n");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("does not exist and source.create_slot = false"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let good = harness::write_config(dir.path(), "postgres://u@127.0.0.1:1/db", "s", "p", "");
    let out = cdc_test_harness::host_command(BIN)
        .args(["check".as_ref(), good.as_os_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("slot = ", "slots = "),
    )
    .unwrap();
    let out = cdc_test_harness::host_command(BIN)
        .args(["check".as_ref(), bad.as_os_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1: source.slots: unknown field `slots`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_not_logical_is_explained() {
    let server = harness::PgServer::start().unwrap();
    server
        .psql("postgres", "ALTER SYSTEM SET wal_level = replica")
        .unwrap();
    server.restart().unwrap();
    let db = server.fresh_db("walrep").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let (_d, cfg) = config(&db.dsn(), "s_walrep", "p", "");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("wal_level is \"replica\"") && err.contains("wal_level = logical"),
        "{err}"
    );
}

/// A slot held by another consumer (e.g. the old pod of a rolling update) is retried until
/// it is free, with a clear log line; no second slot is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slot_is_retried_until_free() {
    let db = db_with(
        "busy",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_d, cfg) = config(&db.dsn(), "s_busy", "p", "");
    let mut holder = start_host(&db, &cfg, "s_busy").await;
    let mut waiting = HostProcess::spawn(BIN, &cfg).unwrap();
    waiting
        .wait_for_stderr("is in use by another process", WAIT)
        .await
        .unwrap();
    assert!(
        waiting.try_exit().is_none(),
        "it waits rather than exits:\n{}",
        waiting.stderr()
    );
    stop_clean(&mut holder).await;
    wait_slot_active(&db, "s_busy", &mut waiting).await;
    db.exec("INSERT INTO t VALUES (7)").await;
    let out = wait_json(&mut waiting, 1).await;
    assert_eq!(out[0]["after"]["id"], 7);
    stop_clean(&mut waiting).await;
    let client = db.client().await;
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 1, "no second slot");
}

/// Postgres restarted mid-stream: the host reconnects with backoff and loses nothing. The
/// host reaches Postgres through a proxy that holds its last confirmations and refuses
/// connections while Postgres restarts, so what was delivered but never confirmed is certainly
/// delivered again after the restart — identical, with the same ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_loses_nothing() {
    let server = harness::PgServer::start().unwrap();
    let proxy =
        harness::proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], server.port())))
            .await;
    let db = server.fresh_db("pgrestart").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        proxy.port(),
        db.name
    );
    let (_d, cfg) = config(
        &proxied,
        "s_pgrestart",
        "p",
        "[pipeline]\nmax_changes = 200\n",
    );
    let mut host = start_host(&db, &cfg, "s_pgrestart").await;
    let insert = |t: i64| {
        format!(
            "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
            t * 100 + 1,
            t * 100 + 100
        )
    };
    for t in 0..5 {
        db.exec(&insert(t)).await;
    }
    host.wait_for_lines(500, WAIT).await.unwrap();
    let client = db.client().await;
    harness::wait_confirmed_to_now(&client, "s_pgrestart", WAIT)
        .await
        .unwrap();
    // The confirmations of the next 500 rows are held back: delivered, never confirmed.
    proxy.hold_upstream();
    for t in 5..10 {
        db.exec(&insert(t)).await;
    }
    let before = wait_json(&mut host, 1000).await;
    let last_commit = lsn(before[999]["commit_lsn"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !proxy
        .held_status_flushes()
        .iter()
        .any(|f| *f >= last_commit)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no held confirmation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_refusing(true);
    proxy.cut();
    proxy.release_upstream();
    server.restart().unwrap();
    host.wait_for_stderr("reconnecting", WAIT).await.unwrap();
    proxy.set_refusing(false);
    // New writes after the restart (a fresh connection: the old one died with the server).
    let c = harness::try_connect(&db.dsn()).await.unwrap();
    for t in 10..20 {
        c.batch_execute(&insert(t)).await.unwrap();
    }
    harness::wait_confirmed_to_now(&c, "s_pgrestart", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(20)));
    stop_clean(&mut host).await;

    let out = parse_lines(&host.stdout_lines());
    let mut by_id: BTreeMap<&str, (&Json, usize)> = BTreeMap::new();
    for c in &out {
        let e = by_id.entry(c["id"].as_str().unwrap()).or_insert((c, 0));
        assert_eq!(e.0, c, "a replayed id must carry the same change");
        e.1 += 1;
    }
    let rows: Vec<i64> = by_id
        .values()
        .map(|(c, _)| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        rows,
        (1..=2000).collect::<Vec<_>>(),
        "every row, in commit order"
    );
    let replayed: Vec<i64> = by_id
        .values()
        .filter(|(_, n)| *n > 1)
        .map(|(c, _)| c["after"]["id"].as_i64().unwrap())
        .collect();
    // The delivered but unconfirmed rows come twice: 501..=1000, and possibly rows before
    // them (Postgres 15 writes a logical slot's confirmed position to disk only when the slot
    // is otherwise dirty, so a restart may bring back an older one) — a contiguous run.
    let from = replayed.first().copied().unwrap_or(0);
    assert!(
        replayed.len() >= 500 && replayed == (from..=1000).collect::<Vec<_>>(),
        "replayed rows: {} from {from} to {:?}",
        replayed.len(),
        replayed.last()
    );
    // Delivery order: increasing, but for one step back where the replay starts.
    let ids: Vec<&str> = out.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let back = ids.windows(2).filter(|w| w[0] >= w[1]).count();
    assert_eq!(
        back, 1,
        "one restart, one replay from the confirmed position"
    );
}

/// A quiet publication must not pin WAL: while another database writes, the slot's
/// confirmed position follows the server's (keepalive WAL end confirmed when idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_publication_does_not_pin_wal() {
    let server = harness::PgServer::start().unwrap();
    let quiet = server.fresh_db("quiet").await;
    quiet
        .exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let busy = server.fresh_db("busy").await;
    busy.exec("CREATE TABLE junk (id int, pad text)").await;
    let (_d, cfg) = config(&quiet.dsn(), "s_quiet", "p", "status_interval_secs = 1\n");
    let mut host = start_host(&quiet, &cfg, "s_quiet").await;
    let client = quiet.client().await;
    let retained_now = || async {
        client
            .query_one(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 's_quiet'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // ~210 MiB of WAL elsewhere, in 32 chunks; the slot's retention is sampled after each.
    let start = harness::current_wal_lsn(&client).await;
    let mut most = 0i64;
    for _ in 0..32 {
        busy.exec(
            "INSERT INTO junk SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 12000) g",
        )
        .await;
        most = most.max(retained_now().await);
    }
    let written: i64 = client
        .query_one(
            &format!("SELECT (pg_current_wal_lsn() - '{start}'::pg_lsn)::bigint"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(written > 200 << 20, "only {written} bytes of WAL written");
    // Confirmations keep up while the other database writes: never more than a few chunks
    // (~8 MB each) behind, against 200 MB if nothing were confirmed.
    assert!(
        most < 64 << 20,
        "the slot held up to {most} bytes of WAL while {written} were written elsewhere"
    );
    harness::wait_confirmed_to_now(&client, "s_quiet", Duration::from_secs(60))
        .await
        .unwrap();
    let retained = retained_now().await;
    eprintln!("idle publication: {written} bytes of WAL written elsewhere; the slot held at most {most}, {retained} at the end");
    assert!(
        retained < 16 << 20,
        "slot holds {retained} bytes of WAL behind"
    );
    assert!(
        host.stdout_lines().is_empty(),
        "nothing from the quiet publication"
    );
    stop_clean(&mut host).await;
}

/// A slot whose WAL was removed (`wal_status = lost`) stops the host with instructions; it
/// is never dropped and recreated behind the user's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_with_instructions() {
    let server = harness::PgServer::start().unwrap();
    server
        .psql(
            "postgres",
            "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'; SELECT pg_reload_conf();",
        )
        .unwrap();
    let db = server.fresh_db("lost").await;
    db.exec("CREATE TABLE t (id int, pad text); CREATE PUBLICATION p FOR TABLE t")
        .await;
    db.exec("SELECT pg_create_logical_replication_slot('s_lost', 'pgoutput')")
        .await;
    let client = db.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        db.exec("INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g; CHECKPOINT;").await;
        let status: Option<String> = client
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 's_lost'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never invalidated ({status:?})"
        );
    }
    let (_d, cfg) = config(&db.dsn(), "s_lost", "p", "");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("wal_status = lost") && err.contains("never recreates a slot"),
        "{err}"
    );
    let still: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_lost'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1, "the slot is left for the user to inspect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_replication_slots_are_explained() {
    let server = harness::PgServer::start().unwrap();
    server
        .psql("postgres", "ALTER SYSTEM SET max_replication_slots = 1")
        .unwrap();
    server.restart().unwrap();
    let db = server.fresh_db("full").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    db.exec("SELECT pg_create_logical_replication_slot('other_tool', 'pgoutput')")
        .await;
    let (_d, cfg) = config(&db.dsn(), "s_full", "p", "");
    let err = failing_start(&cfg).await;
    assert!(
        err.contains("max_replication_slots") && err.contains("drop unused slots"),
        "{err}"
    );
}

/// Heartbeats move the slot on an otherwise silent server and never reach a sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_advance_the_slot_and_stay_internal() {
    let server = harness::PgServer::start().unwrap();
    let db = server.fresh_db("beat").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let (_d, cfg) = config(
        &db.dsn(),
        "s_beat",
        "p",
        "status_interval_secs = 1\nheartbeat_secs = 1\n",
    );
    let mut host = start_host_env(
        &db,
        &cfg,
        "s_beat",
        &[("RUST_LOG", "info,cdc_host::source::stream=debug")],
    )
    .await;
    // Emitted by us, seen in our own stream, consumed there.
    host.wait_for_stderr("heartbeat came back through the stream", WAIT)
        .await
        .unwrap();
    let client = db.client().await;
    let start = confirmed_flush_lsn(&client, "s_beat").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = confirmed_flush_lsn(&client, "s_beat").await.unwrap();
        if lsn(&now) > lsn(&start) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot stayed at {start}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_clean(&mut host).await;
    assert!(
        host.stdout_lines().is_empty(),
        "heartbeats are not changes: {:?}",
        host.stdout_lines()
    );
}

/// A slot holding more WAL than `max_retained_wal_mb` is reported (a sink stuck behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_wal_above_the_limit_is_warned() {
    let db = db_with(
        "retain",
        "CREATE TABLE t (id int, pad text)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_d, cfg) = config(&db.dsn(), "s_retain", "p", "status_interval_secs = 1\nmax_retained_wal_mb = 1\n[pipeline]\nmax_inflight = 1\nmax_changes = 10\n");
    let mut host = start_host(&db, &cfg, "s_retain").await;
    db.exec("INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(1, 5000) g")
        .await;
    host.wait_for_stderr("retains more WAL than max_retained_wal_mb", WAIT)
        .await
        .unwrap();
    stop_clean(&mut host).await;
}

/// SIGTERM in the middle of a burst: a clean exit within the grace period, the slot
/// confirmed exactly up to what was delivered — a restart neither loses nor repeats anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_confirms_exactly_what_was_delivered() {
    const TXNS: i64 = 60;
    let db = db_with(
        "burst",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_d, cfg) = config(
        &db.dsn(),
        "s_burst",
        "p",
        "[pipeline]\nshutdown_grace_secs = 5\n",
    );
    let mut first = start_host(&db, &cfg, "s_burst").await;
    let writer = spawn_id_writer(db.dsn(), TXNS, 1000, Duration::ZERO);
    first.wait_for_lines(5_000, WAIT).await.unwrap();
    first.sigterm().unwrap();
    let st = first.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(st.success(), "{st}:\n{}", first.stderr_tail(20));
    writer.await.unwrap();
    let client = db.client().await;
    let confirmed = lsn(&confirmed_flush_lsn(&client, "s_burst").await.unwrap());
    let run1 = parse_lines(&first.stdout_lines());
    let unconfirmed: Vec<&str> = run1
        .iter()
        .map(|c| c["commit_lsn"].as_str().unwrap())
        .filter(|l| lsn(l) >= confirmed)
        .collect();
    assert!(
        unconfirmed.is_empty(),
        "delivered but not confirmed (slot at {confirmed:X}): {} changes, first {:?}",
        unconfirmed.len(),
        unconfirmed.first(),
    );

    let mut second = start_host(&db, &cfg, "s_burst").await;
    harness::wait_confirmed_to_now(&client, "s_burst", WAIT)
        .await
        .unwrap();
    stop_clean(&mut second).await;
    let run2 = parse_lines(&second.stdout_lines());
    assert!(
        run2.iter()
            .all(|c| lsn(c["commit_lsn"].as_str().unwrap()) > confirmed),
        "nothing confirmed is sent again"
    );
    let mut ids: Vec<i64> = run1
        .iter()
        .chain(&run2)
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=TXNS * 1000).collect::<Vec<_>>(),
        "no loss, no repeat"
    );
}
