//! README promises end to end that no other module covers on a real slot: rejections with
//! `on_reject = "fail"` (the default) and `"skip"` — through HTTP and through a subject NATS
//! refuses — with the slot's position checked; the Debezium envelope for every operation;
//! changes a transform drops (or no sink's routes want) still confirm the slot; `/readyz`
//! is 503 while the host reconnects.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::admin::{get, wait_status};
use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::http_receiver::{status, Receiver, Recorded};
use cdc_test_harness::nats_server::{free_port, NatsServer};
use cdc_test_harness::proxy::Proxy;
use cdc_test_harness::{confirmed_flush_lsn, HostProcess, TestDb};

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {s}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

async fn t_db(hint: &str) -> TestDb {
    db_with(
        hint,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE secret (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t, secret",
    )
    .await
}

fn write_cfg(dir: &tempfile::TempDir, dsn: &str, slot: &str, body: &str) -> std::path::PathBuf {
    let path = dir.path().join(format!("{slot}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"{slot}\"\npublication = \"p\"\nstatus_interval_secs = 1\n\n[source.snapshot]\nmode = \"never\"\n\n{body}"
        ),
    )
    .unwrap();
    path
}

fn http_sink(hook: &Receiver, on_reject: &str) -> String {
    format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"json\"\n{on_reject}\n",
        hook.url("/cdc")
    )
}

fn first_change(r: &Recorded) -> Json {
    let body = String::from_utf8(r.body.clone()).unwrap();
    serde_json::from_str(body.lines().next().unwrap()).unwrap()
}

async fn confirmed(db: &TestDb, slot: &str) -> u64 {
    lsn(&confirmed_flush_lsn(&db.client().await, slot).await.unwrap())
}

// ---------------------------------------------------------------------------------------
// Rejections.
// ---------------------------------------------------------------------------------------

/// `on_reject` unset (= "fail"): the endpoint answers 400 to the second change. The host
/// stops with an error naming the sink and the change; the slot stays before that change
/// (the first one is confirmed); a restart sends the rejected change again — it was never
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rejection_with_on_reject_fail_stops_before_the_batch() {
    let slot = "s_rej_fail";
    let mut hook = Receiver::start().await;
    let db = t_db("rej_fail").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(&dir, &db.dsn(), slot, &http_sink(&hook, ""));
    let mut host = start_host(&db, &cfg, slot).await;
    db.exec("INSERT INTO t VALUES (1)").await;
    let one = hook.next().await;
    harness::wait_confirmed_to_now(&db.client().await, slot, WAIT)
        .await
        .unwrap();
    hook.script([status(400)]);
    db.exec("INSERT INTO t VALUES (2)").await;
    let two = hook.next().await;
    let commit = lsn(first_change(&two)["commit_lsn"].as_str().unwrap());
    let st = host.wait_exit(WAIT).await.unwrap();
    let stderr = host.stderr();
    assert!(!st.success(), "{st}:\n{stderr}");
    assert!(
        stderr.contains("hook") && stderr.contains(two.key()),
        "the error names the sink and the change:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let at = confirmed(&db, slot).await;
    assert!(
        at > lsn(first_change(&one)["commit_lsn"].as_str().unwrap()) && at < commit,
        "slot at {at:X}: past the first change, before the rejected one ({commit:X})"
    );
    // Nothing was skipped: the next run delivers the rejected change first.
    let mut again = HostProcess::spawn(BIN, &cfg).unwrap();
    let replay = hook.next().await;
    assert_eq!(replay.key(), two.key());
    assert_eq!(replay.body, two.body);
    harness::wait_confirmed_to_now(&db.client().await, slot, WAIT)
        .await
        .unwrap();
    stop_clean(&mut again).await;
}

/// `on_reject = "skip"`: the rejected batch is logged, counted as delivered and confirmed;
/// the pipeline carries on, and a restart does not send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rejection_with_on_reject_skip_confirms_and_carries_on() {
    let slot = "s_rej_skip";
    let mut hook = Receiver::start().await;
    let db = t_db("rej_skip").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        &dir,
        &db.dsn(),
        slot,
        &http_sink(&hook, "on_reject = \"skip\""),
    );
    let mut host = start_host(&db, &cfg, slot).await;
    hook.script([status(400)]);
    db.exec("INSERT INTO t VALUES (1)").await;
    let rejected = hook.next().await;
    let commit = lsn(first_change(&rejected)["commit_lsn"].as_str().unwrap());
    host.wait_for_stderr("skipped (on_reject = \"skip\")", WAIT)
        .await
        .unwrap();
    db.exec("INSERT INTO t VALUES (2)").await;
    let next = hook.next().await;
    assert_eq!(first_change(&next)["after"]["id"], 2);
    harness::wait_confirmed_to_now(&db.client().await, slot, WAIT)
        .await
        .unwrap();
    assert!(confirmed(&db, slot).await > commit, "the skip is confirmed");
    stop_clean(&mut host).await;

    let mut again = start_host(&db, &cfg, slot).await;
    db.exec("INSERT INTO t VALUES (3)").await;
    let third = hook.next().await;
    assert_eq!(
        first_change(&third)["after"]["id"],
        3,
        "the skipped change is not sent again"
    );
    stop_clean(&mut again).await;
    assert!(hook.drain().is_empty());
}

/// NATS refuses a subject (the user may not publish to `<policy>.secret`): a rejection like an
/// HTTP 4xx. With "fail" the host stops before that change; with "skip" it carries on and
/// confirms. The allowed subject's changes land in the stream either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_nats_refuses_is_a_rejection_fail_or_skip() {
    let conf = tempfile::tempdir().unwrap();
    let nats_conf = conf.path().join("nats.conf");
    std::fs::write(
        &nats_conf,
        r#"authorization {
            users = [{
                user: cdc, password: pw,
                permissions: {
                    publish: { allow: ["fail.t", "skip.t", "$JS.API.>"] },
                    subscribe: { allow: ["_INBOX.>"] }
                }
            }]
        }"#,
    )
    .unwrap();
    let nats = NatsServer::start(&["-c", nats_conf.to_str().unwrap()]);
    for policy in ["fail", "skip"] {
        let slot = format!("s_nats_rej_{policy}");
        let stream = format!("REJ_{}", policy.to_uppercase());
        let db = t_db(&format!("nats_rej_{policy}")).await;
        let dir = tempfile::tempdir().unwrap();
        let sink = format!(
            "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nuser = \"cdc\"\npassword = \"pw\"\nsubject = \"{policy}.{{table}}\"\nformat = \"json\"\non_reject = \"{policy}\"\nack_timeout_ms = 1000\n[sinks.jetstream]\nstream = \"{stream}\"\ncreate_stream = true\nsubjects = [\"{policy}.>\"]\n",
            nats.url()
        );
        let cfg = write_cfg(&dir, &db.dsn(), &slot, &sink);
        let mut host = start_host(&db, &cfg, &slot).await;
        db.exec("INSERT INTO t VALUES (1)").await;
        let client = db.client().await;
        harness::wait_confirmed_to_now(&client, &slot, WAIT)
            .await
            .unwrap();
        let before_secret = lsn(&harness::current_wal_lsn(&client).await);
        db.exec("INSERT INTO secret VALUES (1)").await;
        if policy == "fail" {
            let st = host.wait_exit(WAIT).await.unwrap();
            let stderr = host.stderr();
            assert!(!st.success(), "{st}:\n{stderr}");
            assert!(
                stderr.to_lowercase().contains("permissions violation")
                    && stderr.contains("fail.secret"),
                "{stderr}"
            );
            let at = confirmed(&db, &slot).await;
            assert!(
                at <= before_secret,
                "fail: slot at {at:X}, past the refused change (WAL was at {before_secret:X})"
            );
        } else {
            host.wait_for_stderr("skipped (on_reject = \"skip\")", WAIT)
                .await
                .unwrap();
            db.exec("INSERT INTO t VALUES (2)").await;
            harness::wait_confirmed_to_now(&client, &slot, WAIT)
                .await
                .unwrap();
            assert!(confirmed(&db, &slot).await > before_secret);
            stop_clean(&mut host).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Debezium.
// ---------------------------------------------------------------------------------------

/// The Debezium envelope for every operation: c, u (with the old row under REPLICA IDENTITY
/// FULL), d, t, and m for transactional and non-transactional messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_envelope_for_every_operation() {
    let db = db_with(
        "dbz_ops",
        "CREATE TABLE t (id int PRIMARY KEY, name text); ALTER TABLE t REPLICA IDENTITY FULL;",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        &dir,
        &db.dsn(),
        "s_dbz_ops",
        "[[sinks]]\ntype = \"stdout\"\nformat = \"debezium\"\n",
    );
    let mut host = start_host(&db, &cfg, "s_dbz_ops").await;
    for sql in [
        "INSERT INTO t VALUES (1, 'a')",
        "UPDATE t SET name = 'b' WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
        "TRUNCATE t",
        "BEGIN; INSERT INTO t VALUES (2, 'x'); SELECT pg_logical_emit_message(true, 'txp', 'in'); COMMIT;",
        "SELECT pg_logical_emit_message(false, 'ntx', 'out')",
    ] {
        db.exec(sql).await;
    }
    let out = wait_json(&mut host, 7).await;
    stop_clean(&mut host).await;
    let ops: Vec<&str> = out.iter().map(|c| c["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "u", "d", "t", "c", "m", "m"], "{out:#?}");
    assert_eq!(out[0]["before"], Json::Null);
    assert_eq!(out[0]["after"], json!({"id": 1, "name": "a"}));
    assert_eq!(out[1]["before"], json!({"id": 1, "name": "a"}));
    assert_eq!(out[1]["after"], json!({"id": 1, "name": "b"}));
    assert_eq!(out[2]["before"], json!({"id": 1, "name": "b"}));
    assert_eq!(out[2]["after"], Json::Null);
    for c in &out[..5] {
        let s = &c["source"];
        assert_eq!(s["connector"], "postgresql", "{c}");
        assert_eq!(s["db"], db.name.as_str(), "{c}");
        assert_eq!(s["schema"], "public", "{c}");
        assert_eq!(s["table"], "t", "{c}");
        assert_eq!(s["snapshot"], "false", "{c}");
        assert!(s["lsn"].as_u64().unwrap() > 0 && s["txId"].as_u64().is_some());
        assert!(s["ts_ms"].as_i64().unwrap() > 1_600_000_000_000, "{c}");
        assert!(c["ts_ms"].as_i64().unwrap() >= s["ts_ms"].as_i64().unwrap());
        assert_eq!(c["transaction"], Json::Null);
    }
    assert_eq!(out[3]["before"], Json::Null);
    assert_eq!(out[3]["after"], Json::Null);
    // One transaction: the insert and the message share txId.
    assert_eq!(out[4]["source"]["txId"], out[5]["source"]["txId"]);
    assert_eq!(out[5]["message"], json!({"prefix": "txp", "content": "in"}));
    assert_eq!(
        out[6]["message"],
        json!({"prefix": "ntx", "content": "out"})
    );
    assert_eq!(out[6]["source"]["table"], Json::Null);
    // A non-transactional message has no commit time: the Postgres epoch.
    assert_eq!(out[6]["source"]["ts_ms"], 946_684_800_000i64);
    let lsns: Vec<u64> = out
        .iter()
        .map(|c| c["source"]["lsn"].as_u64().unwrap())
        .collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
}

// ---------------------------------------------------------------------------------------
// Dropped changes.
// ---------------------------------------------------------------------------------------

/// Changes a transform drops count as delivered: a transaction whose every change is dropped
/// (filter-tables denying its table) is confirmed, and so is one that no sink's `routes`
/// want.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_unrouted_changes_confirm_the_slot() {
    let slot = "s_dropped";
    let db = t_db("dropped").await;
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/rust/filter-tables/filter_tables.wasm")
        .canonicalize()
        .expect("run ./scripts/build-guests");
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[pipeline]\nmodule_cache = \"{}\"\n\n[[transforms]]\nname = \"deny-secret\"\nmodule = \"{}\"\n[transforms.config]\ndeny = \"public.secret\"\n\n[[sinks]]\nname = \"out\"\ntype = \"stdout\"\nformat = \"json\"\n\n[[sinks]]\nname = \"routed\"\ntype = \"stdout\"\nformat = \"json\"\nroutes = [\"nothing.matches\"]\n",
        dir.path().join("cache").display(),
        module.display()
    );
    let cfg = write_cfg(&dir, &db.dsn(), slot, &body);
    let mut host = start_host(&db, &cfg, slot).await;
    let client = db.client().await;
    db.exec("INSERT INTO t VALUES (1)").await;
    wait_json(&mut host, 1).await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();
    let before = confirmed(&db, slot).await;
    // Only dropped changes from here: the slot must still move past them.
    db.exec("INSERT INTO secret SELECT generate_series(1, 100)")
        .await;
    let end = harness::current_wal_lsn(&client).await;
    harness::wait_for_confirmed_flush(&client, slot, &end, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(20)));
    assert!(confirmed(&db, slot).await > before);
    stop_clean(&mut host).await;
    let out = parse_lines(&host.stdout_lines());
    assert_eq!(
        out.len(),
        1,
        "only the kept change, once (no sink routes): {out:?}"
    );
}

// ---------------------------------------------------------------------------------------
// /readyz while reconnecting.
// ---------------------------------------------------------------------------------------

/// The connection to Postgres cut and refused: `/readyz` answers 503 (naming the stream)
/// while the host reconnects, `/healthz` 200; once Postgres is reachable again, 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_reconnecting() {
    let slot = "s_ready_reconnect";
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], harness::server().port()))).await;
    let db = t_db("ready_reconnect").await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dsn = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        proxy.port(),
        db.name
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        &dir,
        &dsn,
        slot,
        &format!("[admin]\nlisten = \"{addr}\"\n\n[[sinks]]\ntype = \"stdout\"\n"),
    );
    let mut host = start_host(&db, &cfg, slot).await;
    wait_status(addr, "/readyz", 200, &mut host).await;
    proxy.set_refusing(true);
    proxy.cut();
    host.wait_for_stderr("replication interrupted; reconnecting", WAIT)
        .await
        .unwrap();
    let body = wait_status(addr, "/readyz", 503, &mut host).await;
    assert!(body.contains("replication stream not running"), "{body}");
    assert_eq!(get(addr, "/healthz").await.map(|r| r.0), Some(200));
    // Still 503 while connections keep being refused.
    let refused = proxy.refused();
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.refused() == refused {
        assert!(tokio::time::Instant::now() < deadline, "no attempt refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(addr, "/readyz").await.map(|r| r.0), Some(503));
    proxy.set_refusing(false);
    wait_slot_active(&db, slot, &mut host).await;
    wait_status(addr, "/readyz", 200, &mut host).await;
    db.exec("INSERT INTO t VALUES (1)").await;
    wait_json(&mut host, 1).await;
    stop_clean(&mut host).await;
}

// ---------------------------------------------------------------------------------------
// The guest sandbox.
// ---------------------------------------------------------------------------------------

/// A module that tries to reach outside its batch (misbehave `mode = "sandbox"`) gets
/// nothing: no directory or file (not even one the host can read), no writes, no
/// environment (the host has a secret in its own), no arguments, no TCP
/// connection (to a port the test listens on, which sees no one), no UDP socket, no name
/// lookup. Clocks work (README: clocks and random numbers are the only other WASI calls
/// that do anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reaches_no_file_environment_or_network() {
    let slot = "s_sandbox";
    let db = t_db("sandbox").await;
    let dir = tempfile::tempdir().unwrap();
    let readable = dir.path().join("readable.txt");
    std::fs::write(&readable, "the host can read this").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/rust/misbehave/misbehave.wasm")
        .canonicalize()
        .expect("run ./scripts/build-guests");
    let body = format!(
        "[pipeline]\nmodule_cache = \"{}\"\n\n[[transforms]]\nname = \"probe\"\nmodule = \"{}\"\n[transforms.config]\nmode = \"sandbox\"\nfile = \"{}\"\nconnect = \"{}\"\n\n[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n",
        dir.path().join("cache").display(),
        module.display(),
        readable.display(),
        listener.local_addr().unwrap()
    );
    let cfg = write_cfg(&dir, &db.dsn(), slot, &body);
    let mut host = HostProcess::spawn_with(
        BIN,
        &["run".as_ref(), cfg.as_os_str()],
        &[("CDC_TEST_SECRET", "must-not-reach-the-guest")],
    )
    .unwrap();
    wait_slot_active(&db, slot, &mut host).await;
    db.exec("INSERT INTO t VALUES (1)").await;
    let out = wait_json(&mut host, 1).await;
    stop_clean(&mut host).await;
    let h = &out[0]["headers"];
    let probe = |k: &str| {
        h[format!("x-probe-{k}")]
            .as_str()
            .unwrap_or_else(|| panic!("no x-probe-{k} in {h}"))
            .to_owned()
    };
    for k in [
        "fs-root", "fs-cwd", "fs-read", "fs-write", "tcp", "udp", "dns",
    ] {
        assert!(probe(k).starts_with("err"), "{k}: {} ({h})", probe(k));
    }
    assert_eq!(probe("env"), "0", "{h}");
    assert_eq!(probe("args"), "0", "{h}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the guest connected to the test's port"
    );
    let clock: u64 = probe("clock").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        clock.abs_diff(now) < 3600,
        "guest clock {clock}, host {now}"
    );
    assert!(!dir.path().join("misbehave-probe").exists());
    eprintln!("sandbox probes: {h}");
}

/// A pipeline on `p` with `origin = "none"` (protocol 4, Postgres ≥ 16) to stdout.
fn origin_none_cfg(dir: &tempfile::TempDir, dsn: &str, slot: &str) -> std::path::PathBuf {
    let path = dir.path().join(format!("{slot}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"{slot}\"\npublication = \"p\"\nproto_version = 4\norigin = \"none\"\n\n[source.snapshot]\nmode = \"never\"\n\n[[sinks]]\ntype = \"stdout\"\n"
        ),
    )
    .unwrap();
    path
}

/// A transaction applied through a replication origin (as another node's logical
/// replication applies it) carries the origin's name: native JSON `origin`, Debezium
/// `source.origin`; a local one has none. With `origin = "none"` (Postgres ≥ 16) the server
/// skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_a_replication_origin_name_it() {
    let db = db_with(
        "origin_name",
        "CREATE TABLE t (id int PRIMARY KEY); SELECT pg_replication_origin_create('node_b')",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let json_cfg = write_cfg(
        &dir,
        &db.dsn(),
        "s_origin_json",
        "[[sinks]]\ntype = \"stdout\"\n",
    );
    let dbz_cfg = write_cfg(
        &dir,
        &db.dsn(),
        "s_origin_dbz",
        "[[sinks]]\ntype = \"stdout\"\nformat = \"debezium\"\n",
    );
    let filtered = (harness::server().major() >= 16)
        .then(|| origin_none_cfg(&dir, &db.dsn(), "s_origin_none"));
    let mut json_host = start_host(&db, &json_cfg, "s_origin_json").await;
    let mut dbz_host = start_host(&db, &dbz_cfg, "s_origin_dbz").await;
    let mut none_host = match &filtered {
        Some(cfg) => Some(start_host(&db, cfg, "s_origin_none").await),
        None => None,
    };
    db.exec("INSERT INTO t VALUES (1)").await;
    // One session replaying as node_b, as a subscription's apply worker does.
    let c = db.client().await;
    c.batch_execute("SELECT pg_replication_origin_session_setup('node_b')")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    c.batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
        .unwrap();
    db.exec("INSERT INTO t VALUES (3)").await;
    let out = wait_json(&mut json_host, 3).await;
    let dbz = wait_json(&mut dbz_host, 3).await;
    stop_clean(&mut json_host).await;
    stop_clean(&mut dbz_host).await;
    let ids: Vec<i64> = out
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(out[0].get("origin").is_none(), "{}", out[0]);
    assert_eq!(out[1]["origin"], "node_b", "{}", out[1]);
    assert!(out[2].get("origin").is_none(), "{}", out[2]);
    assert!(dbz[0]["source"].get("origin").is_none());
    assert_eq!(dbz[1]["source"]["origin"], "node_b", "{}", dbz[1]);
    if let Some(host) = &mut none_host {
        let out = wait_json(host, 2).await;
        stop_clean(host).await;
        let ids: Vec<i64> = out
            .iter()
            .map(|c| c["after"]["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [1, 3], "origin = \"none\" skips node_b's transaction");
    }
}

/// Two servers replicating to each other through native logical replication (a
/// subscription each way on Postgres ≥ 16, with the subscriptions' own `origin = none`;
/// one way on older servers, which cannot stop a loop): cdc-host on server B sees B's own
/// transactions without an origin and A's, applied by B's subscription, with the
/// subscription's origin `pg_<oid>` — in native JSON, and to a transform through
/// `host.origin` (route-by-column's `{origin}`), which keeps the origin on what it returns.
/// With `origin = "none"` B's walsender leaves A's transaction out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_replicating_to_each_other_name_the_origin() {
    let a = harness::server().fresh_db("origin_two_a").await;
    let server_b = harness::PgServer::start().unwrap();
    let b = server_b.fresh_db("origin_two_b").await;
    let both_ways = server_b.major() >= 16;
    for db in [&a, &b] {
        db.exec("CREATE TABLE t (id int PRIMARY KEY, at text NOT NULL)")
            .await;
        db.exec("CREATE PUBLICATION p FOR TABLE t").await;
    }
    let sub_opts = if both_ways {
        "copy_data = false, origin = none"
    } else {
        "copy_data = false"
    };
    b.exec(&format!(
        "CREATE SUBSCRIPTION from_a CONNECTION '{}' PUBLICATION p WITH ({sub_opts})",
        a.dsn()
    ))
    .await;
    if both_ways {
        a.exec(&format!(
            "CREATE SUBSCRIPTION from_b CONNECTION '{}' PUBLICATION p WITH ({sub_opts})",
            b.dsn()
        ))
        .await;
    }
    let sub_oid: u32 = b
        .client()
        .await
        .query_one(
            "SELECT oid FROM pg_subscription WHERE subname = 'from_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let origin = format!("pg_{sub_oid}");

    let dir = tempfile::tempdir().unwrap();
    let route = crate::transforms::transform(
        "route",
        &crate::transforms::guest("rust", "route-by-column"),
        "",
        &[("column", "id"), ("template", "{origin}.{table}")],
    );
    let any_cfg = write_cfg(
        &dir,
        &b.dsn(),
        "s_two_any",
        &format!("{route}\n[[sinks]]\ntype = \"stdout\"\n"),
    );
    let mut any_host = start_host(&b, &any_cfg, "s_two_any").await;
    let mut none_host = if both_ways {
        let path = origin_none_cfg(&dir, &b.dsn(), "s_two_none");
        Some(start_host(&b, &path, "s_two_none").await)
    } else {
        None
    };

    // Rows appear on the other server once its subscription applied them.
    async fn wait_rows(db: &TestDb, n: i64) {
        let c = db.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got: i64 = c
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .unwrap()
                .get(0);
            if got >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {got} of {n} rows replicated",
                db.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    b.exec("INSERT INTO t VALUES (1, 'b')").await;
    a.exec("INSERT INTO t VALUES (2, 'a')").await;
    wait_rows(&b, 2).await;
    b.exec("INSERT INTO t VALUES (3, 'b')").await;
    let out = wait_json(&mut any_host, 3).await;
    let filtered = match &mut none_host {
        Some(host) => Some(wait_json(host, 2).await),
        None => None,
    };
    if both_ways {
        // B's own rows went back to A (and A's did not come back to B twice: a second
        // copy would have failed B's subscription on the primary key).
        wait_rows(&a, 3).await;
    }
    stop_clean(&mut any_host).await;
    if let Some(host) = &mut none_host {
        stop_clean(host).await;
    }
    // Each subscription's slot lives on the other server: drop them while both run.
    if both_ways {
        a.exec("DROP SUBSCRIPTION from_b").await;
    }
    b.exec("DROP SUBSCRIPTION from_a").await;

    let rows: Vec<(i64, &str)> = out
        .iter()
        .map(|c| {
            (
                c["after"]["id"].as_i64().unwrap(),
                c["after"]["at"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(1, "b"), (2, "a"), (3, "b")], "{out:?}");
    assert!(out[0].get("origin").is_none(), "{}", out[0]);
    assert_eq!(out[1]["origin"], origin.as_str(), "{}", out[1]);
    assert!(out[2].get("origin").is_none(), "{}", out[2]);
    // The transform asked the host, and the origin stayed on what it returned.
    assert_eq!(out[0]["route"], "local.t", "{}", out[0]);
    assert_eq!(out[1]["route"], format!("{origin}.t"), "{}", out[1]);
    assert_eq!(out[2]["route"], "local.t", "{}", out[2]);
    if let Some(out) = filtered {
        let ids: Vec<i64> = out
            .iter()
            .map(|c| c["after"]["id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            ids,
            [1, 3],
            "origin = \"none\" leaves out what B's subscription applied"
        );
    }
}
