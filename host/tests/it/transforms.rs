//! Wasm transforms end to end: real Postgres, the real binary, modules built by
//! `scripts/build-guests` (the test command builds them first).

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use crate::common::*;
use crate::fixtures::{TYPES_DDL, TYPES_ROWS};
use cdc_test_harness as harness;
use cdc_test_harness::http_receiver::Receiver;
use cdc_test_harness::{HostProcess, TestDb};

/// `guests/<lang>/<name>/<name with _>.wasm`, which `scripts/build-guests` writes.
pub(crate) fn guest(lang: &str, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root
        .join("guests")
        .join(lang)
        .join(name)
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        p.is_file(),
        "{} is missing: run ./scripts/build-guests (./scripts/test does)",
        p.display()
    );
    p.canonicalize().unwrap()
}

/// One `[[transforms]]` entry.
pub(crate) fn transform(name: &str, module: &Path, extra: &str, config: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[[transforms]]\nname = \"{name}\"\nmodule = \"{}\"\n{extra}\n",
        module.display()
    );
    if !config.is_empty() {
        s.push_str("[transforms.config]\n");
        for (k, v) in config {
            s.push_str(&format!("{k} = \"{v}\"\n"));
        }
    }
    s
}

/// A pipeline file: source, then `body` (transforms, sinks); a stdout sink unless `body`
/// has sinks of its own.
pub(crate) fn pipeline(dir: &Path, db: &TestDb, slot: &str, body: &str) -> PathBuf {
    let mut s = format!(
        "[source]\ndsn = \"{}\"\nslot = \"{slot}\"\npublication = \"p\"\n[source.snapshot]\nmode = \"never\"\n\n[pipeline]\nmodule_cache = \"{}\"\n\n{body}\n",
        db.dsn(),
        dir.join("cache").display()
    );
    if !body.contains("[[sinks]]") {
        s.push_str("[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n");
    }
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, s).unwrap();
    path
}

pub(crate) async fn users_db(hint: &str) -> TestDb {
    db_with(
        hint,
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, phone text, note text);
         CREATE TABLE other (id int PRIMARY KEY, v text);",
        "CREATE PUBLICATION p FOR TABLE users, other",
    )
    .await
}

/// One test's pipeline: its database, slot `s_<hint>`, and a temp dir holding the
/// config and the module cache for as long as the case lives.
pub(crate) struct Case {
    pub(crate) db: TestDb,
    cfg: PathBuf,
    slot: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Case {
    /// `body` on a fresh database with `users` and `other` (see [`users_db`]).
    pub(crate) async fn users(hint: &str, body: &str) -> Case {
        Case::on(users_db(hint).await, hint, body)
    }

    fn on(db: TestDb, hint: &str, body: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let slot = format!("s_{hint}");
        let cfg = pipeline(dir.path(), &db, &slot, body);
        Case { db, cfg, slot, dir }
    }

    /// Starts the host and waits until it streams from the slot.
    pub(crate) async fn start(&self) -> HostProcess {
        start_host(&self.db, &self.cfg, &self.slot).await
    }

    /// Waits until the slot is confirmed up to the WAL position of now.
    pub(crate) async fn wait_confirmed_to_now(&self) {
        let client = self.db.client().await;
        harness::wait_confirmed_to_now(&client, &self.slot, WAIT)
            .await
            .unwrap();
    }
}

/// Waits for the host to exit with an error and returns its stderr.
pub(crate) async fn wait_failure(host: &mut HostProcess) -> String {
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success(), "host should have failed:\n{}", host.stderr());
    host.stderr()
}

/// Every typed value reaches the guest and comes back unchanged: the pipeline with the
/// identity module prints exactly what `to_jsonb` gives, like the pipeline without it
/// (tests/replication.rs), and byte for byte what the same pipeline prints without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_transform_keeps_every_typed_value() {
    let db = db_with(
        "tx_types",
        TYPES_DDL,
        "CREATE PUBLICATION p FOR TABLE typed",
    )
    .await;
    let body = transform("id", &guest("rust", "identity"), "", &[]);
    let case = Case::on(db, "tx_types", &body);
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(TYPES_ROWS).await;
    db.exec("UPDATE typed SET t = 'changed' WHERE id = 1; DELETE FROM typed WHERE id = 2")
        .await;
    let with = wait_json(&mut host, 7).await;
    stop_clean(&mut host).await;
    let expected = to_jsonb_rows(db, "typed").await;
    for (got, want) in with[..5].iter().zip([1, 2, 3, 4, 5]) {
        assert_eq!(got["after"]["id"], want);
    }
    let rows_after_update: Vec<&Json> = with.iter().filter(|c| c["op"] == "update").collect();
    assert_eq!(rows_after_update.len(), 1);
    let final_row_1 = rows_after_update[0]["after"].clone();
    let want_1 = expected.iter().find(|r| r["id"] == 1).unwrap();
    for (k, w) in want_1.as_object().unwrap() {
        if k == "js" {
            continue;
        }
        assert_eq!(&final_row_1[k], w, "column {k}");
    }
    for (got, want) in with[2..5].iter().zip(&expected[1..]) {
        for (k, w) in want.as_object().unwrap() {
            if k == "js" {
                continue;
            }
            assert_eq!(&got["after"][k], w, "row {} column {k}", want["id"]);
        }
    }
    assert_eq!(with[6]["op"], "delete");
    assert_eq!(with[6]["before"], json!({"id": 2}));
}

/// The same rows through the pipeline with and without the identity module print
/// byte-identical lines (two slots on the same publication, one with the module).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_output_is_byte_identical_to_no_transform() {
    let db = db_with(
        "tx_bytes",
        TYPES_DDL,
        "CREATE PUBLICATION p FOR TABLE typed",
    )
    .await;
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let body = transform("id", &guest("rust", "identity"), "", &[]);
    let with_cfg = pipeline(d1.path(), &db, "s_tx_with", &body);
    let without_cfg = pipeline(d2.path(), &db, "s_tx_without", "");
    let mut with = start_host(&db, &with_cfg, "s_tx_with").await;
    let mut without = start_host(&db, &without_cfg, "s_tx_without").await;
    db.exec(TYPES_ROWS).await;
    db.exec("UPDATE typed SET t = 'changed', i8 = -9223372036854775808 WHERE id = 1; DELETE FROM typed WHERE id = 2; TRUNCATE typed")
        .await;
    with.wait_for_lines(8, WAIT).await.unwrap();
    without.wait_for_lines(8, WAIT).await.unwrap();
    stop_clean(&mut with).await;
    stop_clean(&mut without).await;
    let (a, b) = (with.stdout_lines(), without.stdout_lines());
    assert_eq!(a.len(), 8);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
}

/// An infinite loop is stopped by the deadline; with on_error = "fail" the host stops
/// with an error naming the module, and nothing is confirmed past the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_by_the_deadline() {
    let body = transform(
        "spin",
        &guest("rust", "misbehave"),
        "timeout_ms = 200",
        &[("mode", "loop"), ("trigger", "boom")],
    );
    let case = Case::users("tx_loop", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'fine')")
        .await;
    wait_json(&mut host, 1).await;
    case.wait_confirmed_to_now().await;
    // Where the poison's commit ends, exactly: read back through a second slot (created
    // before it) rather than from the end of WAL, which other work moves on. A host that
    // confirmed the poison would confirm at least there; while the poison was still being
    // written, the host was idle and may legitimately confirm keepalive positions inside it.
    db.exec("SELECT pg_create_logical_replication_slot('peek_loop', 'pgoutput')")
        .await;
    db.exec("INSERT INTO users VALUES (2, 'b@x', '2', 'boom')")
        .await;
    // (Decoded up to the flushed WAL only: the commit is asynchronous, so poll.)
    let peek = db.client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let poison: String = loop {
        let row = peek
            .query_opt(
                "SELECT lsn::text FROM pg_logical_slot_peek_binary_changes('peek_loop', NULL, NULL, \
                 'proto_version', '1', 'publication_names', 'p') WHERE get_byte(data, 0) = 67 LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            break row.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison never decoded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let err = wait_failure(&mut host).await;
    assert!(
        err.contains("transform spin: deadline of 200 ms exceeded on a batch of 1 change (the call was interrupted): raise `timeout_ms` in its [[transforms]] entry"),
        "{err}"
    );
    // Only the first change was emitted, and the slot is not confirmed past the poison.
    assert_eq!(host.stdout_lines().len(), 1);
    let below: bool = db
        .client()
        .await
        .query_one(
            "SELECT confirmed_flush_lsn < $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&case.slot, &poison],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        below,
        "the slot must not be confirmed past the poisoned transaction (its commit ends at {poison})"
    );
}

/// Runs `misbehave` with `extra` settings and `config` on one inserted row; returns the
/// host (exited with an error) and its stderr.
async fn misbehave_until_failure(
    hint: &str,
    extra: &str,
    config: &[(&str, &str)],
) -> (HostProcess, String) {
    let body = transform("bad", &guest("rust", "misbehave"), extra, config);
    let case = Case::users(hint, &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'x')")
        .await;
    let err = wait_failure(&mut host).await;
    (host, err)
}

/// With a fuel budget, a runaway loop runs out of fuel (before a generous deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_stops_a_runaway_loop() {
    let (_, err) = misbehave_until_failure(
        "tx_fuel",
        "timeout_ms = 60000\nfuel = 50000000",
        &[("mode", "loop")],
    )
    .await;
    assert!(
        err.contains("transform bad: trapped: transform: out of fuel"),
        "{err}"
    );
}

/// A module that allocates without end is stopped by its memory cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_by_the_cap() {
    let (host, err) = misbehave_until_failure(
        "tx_mem",
        "memory_mb = 24\ntimeout_ms = 10000",
        &[("mode", "alloc")],
    )
    .await;
    assert!(
        err.contains("transform bad: memory cap of 24 MiB exceeded on a batch of 1 change: raise `memory_mb` in its [[transforms]] entry, or send smaller batches with `[pipeline] max_changes`"),
        "{err}"
    );
    assert!(host.stdout_lines().is_empty());
}

/// on_error = "skip": a panicking batch is dropped (and logged), the ones around it pass,
/// and the slot moves on past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_with_skip_drops_only_that_batch() {
    let body = transform(
        "panicky",
        &guest("rust", "misbehave"),
        "on_error = \"skip\"",
        &[("mode", "panic"), ("trigger", "boom")],
    );
    let case = Case::users("tx_skip", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'fine')")
        .await;
    wait_json(&mut host, 1).await;
    // Batches hold whole transactions, possibly several: wait for each step so the poisoned
    // transaction is a batch of its own.
    db.exec("INSERT INTO users VALUES (2, 'b@x', '2', 'boom'), (3, 'c@x', '3', 'same txn')")
        .await;
    host.wait_for_stderr("batch skipped", WAIT).await.unwrap();
    case.wait_confirmed_to_now().await;
    // The next batch proves the re-instantiated module works.
    db.exec("INSERT INTO users VALUES (4, 'd@x', '4', 'fine')")
        .await;
    let out3 = wait_json(&mut host, 2).await;
    stop_clean(&mut host).await;
    let ids: Vec<i64> = out3
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 4], "{out3:?}");
    let log = host.stderr();
    assert!(log.contains("batch skipped"), "{log}");
    assert!(log.contains("misbehave: asked to panic"), "{log}");
}

/// on_error = "dead-letter": the batch a module refuses goes, as it came from Postgres
/// (not as the stage before it left it), to the dead-letter sink only; everything else to
/// the regular sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_error_with_dead_letter_sends_the_originals() {
    let mut dlq = Receiver::start().await;
    let mut body = transform(
        "mask",
        &guest("rust", "mask-columns"),
        "",
        &[("columns", "email"), ("tables", "users")],
    );
    body.push_str(&transform(
        "picky",
        &guest("rust", "misbehave"),
        "on_error = \"dead-letter\"\ndead_letter_sink = \"dlq\"",
        &[("mode", "error"), ("trigger", "boom")],
    ));
    body.push_str(&format!(
        "[[sinks]]\nname = \"out\"\ntype = \"stdout\"\n[[sinks]]\nname = \"dlq\"\ntype = \"http\"\nurl = \"{}\"\nbatch = \"ndjson\"\n",
        dlq.url("/dlq")
    ));
    let case = Case::users("tx_dlq", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    // Batches hold whole transactions, possibly several: one step at a time, so the
    // poisoned transaction is a batch of its own.
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'fine')")
        .await;
    wait_json(&mut host, 1).await;
    db.exec("INSERT INTO users VALUES (2, 'b@x', '2', 'boom')")
        .await;
    let dead = dlq.next().await;
    db.exec("INSERT INTO users VALUES (3, 'c@x', '3', 'fine')")
        .await;
    let out = wait_json(&mut host, 2).await;
    case.wait_confirmed_to_now().await;
    stop_clean(&mut host).await;
    let dead: Vec<Json> = String::from_utf8(dead.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["after"]["note"], "boom");
    assert_eq!(dead[0]["after"]["email"], "b@x");
    let ids: Vec<i64> = out
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(out[0]["after"]["email"], "***");
    assert!(dlq.drain().is_empty());
    assert!(host.stderr().contains("misbehave: asked to fail"));
}

/// A module whose init rejects its config: `check` and `run` both stop with one line
/// naming the module and its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_rejection_stops_check_and_run() {
    let body = transform(
        "strict",
        &guest("rust", "misbehave"),
        "",
        &[("mode", "reject-init")],
    );
    let case = Case::users("tx_init", &body).await;
    let out = cdc_test_harness::host_command(BIN)
        .arg("check")
        .arg(&case.cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("transform strict: init rejected the config: misbehave: config rejected"),
        "{err}"
    );
    let mut host = HostProcess::spawn(BIN, &case.cfg).unwrap();
    let err = wait_failure(&mut host).await;
    assert!(err.contains("init rejected the config"), "{err}");
}

/// Two modules chained, in config order, each getting its own config: mask, then route
/// and tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_modules_chain_in_order_with_their_config() {
    let mut body = transform(
        "mask",
        &guest("rust", "mask-columns"),
        "",
        &[("columns", "email,phone"), ("tables", "users")],
    );
    body.push_str(&transform(
        "tag",
        &guest("rust", "misbehave"),
        "",
        &[
            ("mode", "headers"),
            ("route", "audit.users"),
            ("team", "core"),
        ],
    ));
    let case = Case::users("tx_chain", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(
        "INSERT INTO users VALUES (1, 'a@x', '555', NULL);
         INSERT INTO other VALUES (1, 'kept');",
    )
    .await;
    let out = wait_json(&mut host, 2).await;
    stop_clean(&mut host).await;
    assert_eq!(
        out[0]["after"],
        json!({"id": 1, "email": "***", "phone": "***", "note": null})
    );
    assert_eq!(out[0]["route"], "audit.users");
    assert_eq!(out[0]["headers"]["x-config-team"], "core");
    assert_eq!(out[0]["headers"]["x-config-mode"], "headers");
    assert_eq!(out[1]["after"], json!({"id": 1, "v": "kept"}));
    assert_eq!(out[1]["route"], "audit.users");
}

/// The second start loads the compiled module from the cache instead of compiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_start_hits_the_compiled_module_cache() {
    let body = transform("id", &guest("rust", "identity"), "", &[]);
    let case = Case::users("tx_cache", &body).await;
    let mut first = case.start().await;
    stop_clean(&mut first).await;
    assert!(
        first.stderr().contains("cache=\"miss\""),
        "{}",
        first.stderr()
    );
    let mut cached: Vec<_> = std::fs::read_dir(case.dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    // The compiled code and its checksum file (what it was compiled from, what it hashes to).
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert!(cached[0].ends_with(".cwasm") && cached[0].contains("wasmtime-48.0.8"));
    assert_eq!(cached[1], cached[0].replace(".cwasm", ".sum"));
    let mut second = case.start().await;
    case.db
        .exec("INSERT INTO users VALUES (1, 'a@x', '1', 'x')")
        .await;
    wait_json(&mut second, 1).await;
    stop_clean(&mut second).await;
    assert!(
        second.stderr().contains("cache=\"hit\""),
        "{}",
        second.stderr()
    );
}

/// Guest stdout and the host log import both land in the host's log, tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_goes_to_the_log_tagged_with_the_module() {
    let body = transform(
        "chatty",
        &guest("rust", "misbehave"),
        "",
        &[("mode", "ok"), ("print", "yes")],
    );
    let case = Case::users("tx_log", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'x')")
        .await;
    wait_json(&mut host, 1).await;
    stop_clean(&mut host).await;
    let log = host.stderr();
    let tagged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("misbehave: batch of 1") && l.contains("module=chatty"))
        .collect();
    assert_eq!(tagged.len(), 2, "{log}");
    assert!(
        tagged.iter().any(|l| l.contains("stream=\"stdout\"")),
        "{log}"
    );
    // Nothing the guest prints reaches the data stream.
    assert_eq!(host.stdout_lines().len(), 1);
}

/// The mask and identity examples of every language and of both the records world and the
/// batch world (`*-batch`), on a real slot: same input, same output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_columns_in_every_language() {
    let db = users_db("tx_langs").await;
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    for lang in ["rust", "js", "python", "c"] {
        for world in ["", "-batch"] {
            let name = format!("{lang}{world}");
            let d = dir.path().join(&name);
            std::fs::create_dir_all(&d).unwrap();
            let mut body = transform(
                &format!("mask-{name}"),
                &guest(lang, &format!("mask-columns{world}")),
                "timeout_ms = 5000\nmemory_mb = 256",
                &[("columns", "email, phone"), ("tables", "public.users")],
            );
            // Each language's identity module too, chained after its mask.
            body.push_str(&transform(
                &format!("identity-{name}"),
                &guest(lang, &format!("identity{world}")),
                "timeout_ms = 5000\nmemory_mb = 256",
                &[],
            ));
            let slot = format!("s_tx_{}", name.replace('-', "_"));
            let cfg = pipeline(&d, &db, &slot, &body);
            hosts.push((name, start_host(&db, &cfg, &slot).await));
        }
    }
    db.exec(
        "ALTER TABLE users REPLICA IDENTITY FULL;
         INSERT INTO users VALUES (1, 'a@x', '555', 'n1'), (2, NULL, '666', 'n2');
         UPDATE users SET note = 'n1b' WHERE id = 1;
         DELETE FROM users WHERE id = 2;
         INSERT INTO other VALUES (1, 'email');",
    )
    .await;
    let mut outputs = Vec::new();
    for (lang, host) in &mut hosts {
        let lines = host
            .wait_for_lines(5, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{lang}: {e:#}\n{}", host.stderr_tail(30)));
        outputs.push((lang.clone(), lines));
    }
    for (_, host) in &mut hosts {
        stop_clean(host).await;
    }
    let rust = parse_lines(&outputs[0].1);
    assert_eq!(
        rust[0]["after"],
        json!({"id": 1, "email": "***", "phone": "***", "note": "n1"})
    );
    assert_eq!(
        rust[1]["after"],
        json!({"id": 2, "email": null, "phone": "***", "note": "n2"})
    );
    assert_eq!(
        rust[2]["before"],
        json!({"id": 1, "email": "***", "phone": "***", "note": "n1"})
    );
    assert_eq!(
        rust[3]["before"],
        json!({"id": 2, "email": null, "phone": "***", "note": "n2"})
    );
    assert_eq!(rust[4]["after"], json!({"id": 1, "v": "email"}));
    for (lang, lines) in &outputs[1..] {
        assert_eq!(lines, &outputs[0].1, "{lang} differs from rust");
    }
}

/// The Rust examples on a real slot: filter, route, outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_examples_filter_route_and_outbox() {
    let db = db_with(
        "tx_examples",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, region text);
         CREATE TABLE audit (id int PRIMARY KEY);
         CREATE TABLE outbox (id int PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb);",
        "CREATE PUBLICATION p FOR TABLE users, audit, outbox",
    )
    .await;
    let mut body = transform(
        "filter",
        &guest("rust", "filter-tables"),
        "",
        &[("deny", "public.audit")],
    );
    body.push_str(&transform(
        "outbox",
        &guest("rust", "outbox"),
        "",
        &[("passthrough", "true")],
    ));
    body.push_str(&transform(
        "route",
        &guest("rust", "route-by-column"),
        "",
        &[("column", "region"), ("template", "users.{value}")],
    ));
    let case = Case::on(db, "tx_examples", &body);
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(
        "INSERT INTO audit VALUES (1);
         INSERT INTO users VALUES (1, 'a@x', 'eu');
         INSERT INTO outbox VALUES (1, 'order', 'o-17', 'created', '{\"total\": 5}');
         DELETE FROM outbox WHERE id = 1;",
    )
    .await;
    let out = wait_json(&mut host, 2).await;
    stop_clean(&mut host).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["table"], "users");
    assert_eq!(out[0]["route"], "users.eu");
    assert_eq!(out[1]["op"], "message");
    assert_eq!(out[1]["route"], "outbox.order.created");
    assert_eq!(out[1]["content"], "{\"total\": 5}");
    assert_eq!(out[1]["headers"]["aggregate-id"], "o-17");
}

/// `check` names the module and the reason for files that are not transforms.
#[test]
fn check_explains_modules_that_are_not_transforms() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    for (file, needle) in [
        (&core, "is a core Wasm module, not a component"),
        (&empty, "does not implement the transform world (no export cdc:pipeline/transformer@0.2.0): it exports nothing"),
        (&text, "is not a Wasm component"),
    ] {
        let cfg = dir.path().join("p.toml");
        std::fs::write(
            &cfg,
            format!(
                "[source]\ndsn = \"host=127.0.0.1 user=u dbname=x\"\nslot = \"s\"\npublication = \"p\"\n[pipeline]\nmodule_cache = \"off\"\n[[transforms]]\nname = \"m\"\nmodule = \"{}\"\n[[sinks]]\ntype = \"stdout\"\n",
                file.display()
            ),
        )
        .unwrap();
        let out = cdc_test_harness::host_command(BIN)
            .arg("check")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("transform m ({})", file.display())), "{err}");
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

/// A cache directory others can write: named in the config or the environment, `check`
/// refuses it and says how to fix it; the default one is skipped with one warning.
#[test]
fn check_refuses_a_named_cache_others_can_write_and_skips_an_unsafe_default() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open_dir = |path: &Path| {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    let cache = dir.path().join("cache");
    open_dir(&cache);
    let cfg = dir.path().join("p.toml");
    let write_cfg = |pipeline: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[source]\ndsn = \"host=127.0.0.1 user=u dbname=x\"\nslot = \"s\"\npublication = \"p\"\n{pipeline}[[transforms]]\nname = \"m\"\nmodule = \"{}\"\n[[sinks]]\ntype = \"stdout\"\n",
                guest("rust", "identity").display()
            ),
        )
        .unwrap();
    };
    let check = |env: &[(&str, &Path)]| {
        let mut cmd = cdc_test_harness::host_command(BIN);
        cmd.arg("check")
            .arg(&cfg)
            .env_remove("CDC_HOST_MODULE_CACHE")
            .env("XDG_CACHE_HOME", dir.path().join("xdg"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let fix = format!("`chmod 700 {}`", cache.display());

    write_cfg(&format!(
        "[pipeline]\nmodule_cache = \"{}\"\n",
        cache.display()
    ));
    let out = check(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("module cache {} is mode 0777", cache.display())),
        "{err}"
    );
    assert!(err.contains(&fix), "{err}");
    assert!(err.contains("[pipeline] module_cache"), "{err}");

    write_cfg("");
    let out = check(&[("CDC_HOST_MODULE_CACHE", &cache)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&fix), "{err}");
    assert!(err.contains("CDC_HOST_MODULE_CACHE"), "{err}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);

    let default = dir.path().join("xdg").join("cdc-host").join("modules");
    open_dir(&default);
    let out = check(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&format!("module cache {} is mode 0777", default.display())),
        "{err}"
    );
    assert!(warnings[0].contains("compiling modules in memory"), "{err}");
    assert_eq!(std::fs::read_dir(&default).unwrap().count(), 0);
}

/// `cdc-host transform` runs a module over recorded output, without Postgres.
#[test]
fn transform_cli_replays_recorded_changes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("changes.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id":"0000000001000000-00000000","op":"insert","schema":"public","table":"users","before":null,"after":{"id":1,"email":"a@x","phone":"555","note":null},"lsn":"0/FFFF00","commit_lsn":"0/1000000","xid":7,"commit_ts":"2024-05-06T07:08:09.123456+00:00"}"#,
            "\n",
            r#"{"id":"0000000001000000-00000001","op":"insert","schema":"public","table":"other","before":null,"after":{"id":1,"email":"kept"},"lsn":"0/FFFF10","commit_lsn":"0/1000000","xid":7,"commit_ts":"2024-05-06T07:08:09.123456+00:00"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = cdc_test_harness::host_command(BIN)
        .args(["transform"])
        .arg(guest("rust", "mask-columns"))
        .arg("--input")
        .arg(&input)
        .args([
            "--config",
            "columns=email,phone",
            "--config",
            "tables=users",
        ])
        .env("CDC_HOST_MODULE_CACHE", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["after"],
        json!({"id": 1, "email": "***", "phone": "***", "note": null})
    );
    assert_eq!(lines[1]["after"], json!({"id": 1, "email": "kept"}));
    assert_eq!(lines[0]["commit_ts"], "2024-05-06T07:08:09.123456+00:00");
    // A module that rejects its config: one clear line, non-zero exit.
    let out = cdc_test_harness::host_command(BIN)
        .args(["transform"])
        .arg(guest("rust", "mask-columns"))
        .arg("--input")
        .arg(&input)
        .env("CDC_HOST_MODULE_CACHE", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("init rejected the config"), "{err}");
}

/// A sink with `routes` receives only the changes a transform routed its way; the others
/// still count as delivered for it (the slot moves past them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_with_routes_get_only_matching_changes() {
    let mut eu = Receiver::start().await;
    let db = db_with(
        "tx_routes",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, region text)",
        "CREATE PUBLICATION p FOR TABLE users",
    )
    .await;
    let mut body = transform(
        "route",
        &guest("rust", "route-by-column"),
        "",
        &[("column", "region"), ("template", "users.{value}")],
    );
    body.push_str(&format!(
        "[[sinks]]\nname = \"all\"\ntype = \"stdout\"\n[[sinks]]\nname = \"eu\"\ntype = \"http\"\nurl = \"{}\"\nbatch = \"ndjson\"\nroutes = [\"users.eu\", \"users.eu.>\"]\n",
        eu.url("/eu")
    ));
    let case = Case::on(db, "tx_routes", &body);
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(
        "INSERT INTO users VALUES (1, 'a@x', 'us');
         INSERT INTO users VALUES (2, 'b@x', 'eu'), (3, 'c@x', 'us');
         INSERT INTO users VALUES (4, 'd@x', 'us');",
    )
    .await;
    let all = wait_json(&mut host, 4).await;
    case.wait_confirmed_to_now().await;
    stop_clean(&mut host).await;
    let got: Vec<Json> = eu
        .drain()
        .into_iter()
        .flat_map(|r| {
            String::from_utf8(r.body)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Json>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["after"]["id"], 2);
    assert_eq!(all.len(), 4);
}

/// On a real slot: a transaction of 20,000 rows, one batch (`max_changes` above it), through
/// the JavaScript identity module with a cap too small for a whole batch (the host halves
/// the batch and learns a smaller one), chained with a module built against WIT 0.1.0
/// (still loads; tags what it saw). At the default `max_changes` (4,096) a batch sits at
/// the edge of 16 MiB and may fit, so the halving would not be certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_under_a_small_cap_and_a_wit_0_1_module_on_a_real_slot() {
    let _heavy = harness::heavy().await;
    // Lands in the harness's `[pipeline]` table: the body follows its keys.
    let mut body = String::from("max_changes = 20000\n");
    body.push_str(&transform(
        "js-small",
        &guest("js", "identity"),
        "memory_mb = 16\ntimeout_ms = 30000",
        &[],
    ));
    body.push_str(&transform("old", &guest("rust", "identity-v01"), "", &[]));
    let case = Case::users("tx_bigbatch", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(
        "INSERT INTO users SELECT g, 'u' || g || '@x', NULL, NULL FROM generate_series(1, 20000) g",
    )
    .await;
    let lines = host
        .wait_for_lines(20000, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    let out = parse_lines(&lines);
    assert_eq!(out[19999]["after"]["id"], 20000);
    assert!(out
        .iter()
        .all(|c| c["op"] == "insert" && c["headers"]["x-seen-op"] == "insert"));
    case.wait_confirmed_to_now().await;
    let err = host.stderr();
    assert!(
        err.contains("handing this transform smaller batches from now on"),
        "{err}"
    );
    assert!(err.contains("built against cdc:pipeline@0.1.0"), "{err}");
    stop_clean(&mut host).await;
}

/// A live typed recording: the stdout sink's `format = "json-typed"` writes every column's
/// type and the key, and `cdc-host transform --typed` replays it with exactly those types —
/// an identity module of every language (and of both worlds) gives the recording back
/// byte for byte, twice. Builtin types, arrays of them, an enum and a domain, through an
/// insert, an update and a key-only delete. (Composites, hstore and arrays of enums or
/// composites replay as their text: the recording does not describe their structure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_typed_recording_replays_with_the_exact_types() {
    let db = db_with(
        "tx_rec",
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TABLE rec (id int PRIMARY KEY, i8 int8, num numeric(12,4), t text,
           vc varchar(10), b bool, f8 float8, u uuid, d date, ts timestamp, tstz timestamptz,
           iv interval, by bytea, jb jsonb, a_i4 int[], a_t text[], a_num numeric[], e mood,
           dom posint);",
        "CREATE PUBLICATION p FOR TABLE rec",
    )
    .await;
    let case = Case::on(
        db,
        "tx_rec",
        "[[sinks]]\ntype = \"stdout\"\nformat = \"json-typed\"\n",
    );
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(
        "INSERT INTO rec VALUES
           (1, 9223372036854775807, 1.5, 'a \"q\" é', 'vc', true, 0.1,
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-01-15 10:20:30.123456',
            '2024-01-15 10:20:30.5+02', '1 year 2 mons 3 days 04:05:06.789', '\\x00ff',
            '{\"b\": [1, 2.50], \"a\": null}', '{1,NULL,3}', '{\"a,b\",NULL}', '{1.10,NaN}',
            'happy', 7),
           (2, NULL, 'NaN', NULL, '', false, '-Infinity', NULL, 'infinity', '-infinity',
            NULL, '-1 days', '\\x', '[]', '{}', '{}', NULL, NULL, 1);",
    )
    .await;
    db.exec("UPDATE rec SET t = 'changed' WHERE id = 1; DELETE FROM rec WHERE id = 2")
        .await;
    let lines = host.wait_for_lines(4, WAIT).await.unwrap();
    stop_clean(&mut host).await;
    let first: Json = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["types"]["id"], 23, "{first}");
    assert_eq!(first["types"]["tstz"], 1184, "{first}");
    assert_eq!(first["types"]["e"]["enum"], true, "{first}");
    assert_eq!(first["types"]["dom"]["base"], 23, "{first}");
    assert_eq!(first["key"], json!(["id"]));
    let recording = case.dir.path().join("rec.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&recording, &text).unwrap();
    for (lang, module) in [
        ("rust", "identity"),
        ("rust", "identity-batch"),
        ("c", "identity"),
        ("c", "identity-batch"),
        ("js", "identity"),
        ("js", "identity-batch"),
        ("python", "identity"),
        ("python", "identity-batch"),
    ] {
        for round in 0..2 {
            let out = cdc_test_harness::host_command(BIN)
                .args(["transform"])
                .arg(guest(lang, module))
                .arg("--input")
                .arg(&recording)
                .arg("--typed")
                .env("CDC_HOST_MODULE_CACHE", case.dir.path().join("cache"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{lang} {module}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                text,
                "{lang} {module}, replay {round}"
            );
        }
    }
}
