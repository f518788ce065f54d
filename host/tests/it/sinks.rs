//! End to end through the real sinks: NATS JetStream (a real nats-server) and HTTP (a
//! scriptable receiver), fan-out, and a checkpoint that waits for every sink.

mod atomic;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::http_receiver::{status, Receiver, Reply};
use cdc_test_harness::nats_server::{self, stream_len, NatsCluster, NatsServer};
use cdc_test_harness::{confirmed_flush_lsn, HostProcess, PgServer, TestDb};

fn write(dir: &tempfile::TempDir, db: &TestDb, slot: &str, sinks: &str, extra: &str) -> PathBuf {
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{}\"\nslot = \"{slot}\"\npublication = \"p\"\n{extra}\n[source.snapshot]\nmode = \"never\"\n{sinks}",
            db.dsn()
        ),
    )
    .unwrap();
    path
}

fn nats_sink(url: &str, stream: &str) -> String {
    format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{url}\"\nsubject = \"cdc.{{schema}}.{{table}}\"\nformat = \"json\"\n[sinks.jetstream]\nstream = \"{stream}\"\ncreate_stream = true\n"
    )
}

fn http_sink(url: &str) -> String {
    format!("[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{url}\"\nformat = \"debezium\"\nbatch = \"ndjson\"\nheaders = {{ Authorization = \"Bearer ${{CDC_TEST_HOOK_TOKEN}}\" }}\n")
}

/// Every message of a JetStream stream: (Nats-Msg-Id, subject, payload).
async fn read_stream(url: &str, stream: &str) -> Vec<(String, String, Json)> {
    let (_, messages) = nats_server::read_stream(url, stream).await;
    messages
        .iter()
        .map(|m| {
            (
                nats_server::msg_id(m),
                m.subject.to_string(),
                serde_json::from_slice(&m.payload).unwrap(),
            )
        })
        .collect()
}

async fn wait_stream_len(url: &str, stream: &str, n: u64, host: &mut HostProcess) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let len = stream_len(url, stream).await;
        if len >= n {
            return;
        }
        if let Some(st) = host.try_exit() {
            panic!(
                "host exited ({st}) with {len}/{n} in the stream:\n{}",
                host.stderr_tail(30)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{len}/{n} in the stream:\n{}",
            host.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of every NDJSON request body received so far.
fn ndjson_lines(bodies: &[Vec<u8>]) -> Vec<Json> {
    bodies
        .iter()
        .flat_map(|b| {
            String::from_utf8(b.clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Json>>()
        })
        .collect()
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_both_receive_everything() {
    let nats = NatsServer::start(&[]);
    let mut hook = Receiver::start().await;
    let db = db_with(
        "fanout",
        "CREATE TABLE orders (id int PRIMARY KEY, v text)",
        "CREATE PUBLICATION p FOR TABLE orders",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &db,
        "s_fanout",
        &format!(
            "{}\n{}",
            nats_sink(&nats.url(), "CDC"),
            http_sink(&hook.url("/cdc"))
        ),
        "",
    );
    let mut host = start_host_env(&db, &cfg, "s_fanout", &[("CDC_TEST_HOOK_TOKEN", "t0ken")]).await;
    for t in 0..5 {
        db.exec(&format!(
            "INSERT INTO orders SELECT g, 'v' || g FROM generate_series({}, {}) g",
            t * 10 + 1,
            t * 10 + 10
        ))
        .await;
    }
    wait_stream_len(&nats.url(), "CDC", 50, &mut host).await;
    let mut bodies = Vec::new();
    while ndjson_lines(&bodies).len() < 50 {
        let r = hook.next().await;
        assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        bodies.push(r.body);
    }
    let stored = read_stream(&nats.url(), "CDC").await;
    assert_eq!(stored.len(), 50);
    let ids: Vec<&str> = stored.iter().map(|(id, _, _)| id.as_str()).collect();
    for (id, subject, payload) in &stored {
        assert_eq!(subject, "cdc.public.orders");
        assert_eq!(
            payload["id"].as_str(),
            Some(id.as_str()),
            "Nats-Msg-Id is the change id"
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "JetStream holds the changes in commit order");
    let hooked = ndjson_lines(&bodies);
    assert_eq!(hooked.len(), 50);
    assert!(hooked.iter().all(|c| c["op"] == "c"
        && c["source"]["table"] == "orders"
        && c["source"]["connector"] == "postgresql"));
    let hook_ids: Vec<i64> = hooked
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(hook_ids, (1..=50).collect::<Vec<_>>());
    stop_clean(&mut host).await;
    assert!(!host.stderr().contains("t0ken"), "secrets are never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_holds_the_checkpoint_until_it_recovers() {
    let nats = NatsServer::start(&[]);
    let mut hook = Receiver::start().await;
    hook.set_default(Some(status(503)));
    let db = db_with(
        "hold",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &db,
        "s_hold",
        &format!(
            "{}\n{}",
            nats_sink(&nats.url(), "HOLD"),
            http_sink(&hook.url("/cdc"))
        ),
        "status_interval_secs = 1",
    );
    let mut host = start_host_env(&db, &cfg, "s_hold", &[("CDC_TEST_HOOK_TOKEN", "x")]).await;

    db.exec("INSERT INTO t VALUES (1)").await;
    db.exec("INSERT INTO t VALUES (2)").await;
    // NATS acks both; HTTP keeps failing and is retried with the same key.
    wait_stream_len(&nats.url(), "HOLD", 2, &mut host).await;
    let first = hook.next().await;
    let retry = hook.next().await;
    assert_eq!(
        first.key(),
        retry.key(),
        "a retry carries the same Idempotency-Key"
    );
    let first_change: u64 = ndjson_lines(std::slice::from_ref(&first.body))[0]["source"]["lsn"]
        .as_u64()
        .unwrap();
    // Several status intervals later, the slot has not moved past the unacknowledged batch.
    for _ in 0..3 {
        let _ = hook.next().await;
    }
    let held = confirmed_flush_lsn(&client, "s_hold").await.unwrap();
    assert!(
        lsn(&held) <= first_change,
        "confirmed {held} passed the first unacked change at {first_change:X}"
    );

    // Recovery: everything is delivered and the slot moves on.
    hook.set_default(None);
    harness::wait_confirmed_to_now(&client, "s_hold", Duration::from_secs(60))
        .await
        .unwrap();
    let mut bodies = vec![first.body];
    bodies.extend(hook.drain().into_iter().map(|r| r.body));
    let ids: HashSet<i64> = ndjson_lines(&bodies)
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from([1, 2]));
    stop_clean(&mut host).await;
}

/// kill -9 mid-stream, restart: JetStream's duplicate window drops the replays, so each
/// change is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_and_restart_leaves_each_change_once_in_jetstream() {
    const ROWS: i64 = 20_000;
    let nats = NatsServer::start(&[]);
    let db = db_with(
        "jskill",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &db,
        "s_jskill",
        &nats_sink(&nats.url(), "ONCE"),
        "[pipeline]\nmax_changes = 500\n",
    );
    let mut first = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_jskill", &mut first).await;
    for t in 0..20 {
        db.exec(&format!(
            "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
            t * 1000 + 1,
            t * 1000 + 1000
        ))
        .await;
    }
    let end = harness::current_wal_lsn(&client).await;
    wait_stream_len(&nats.url(), "ONCE", 3_000, &mut first).await;
    first.kill9().unwrap();
    let mut second = HostProcess::spawn(BIN, &cfg).unwrap();
    harness::wait_for_confirmed_flush(&client, "s_jskill", &end, Duration::from_secs(120))
        .await
        .unwrap();
    stop_clean(&mut second).await;
    let stored = read_stream(&nats.url(), "ONCE").await;
    let ids: HashSet<&str> = stored.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "no change stored twice");
    assert_eq!(stored.len() as i64, ROWS);
    let rows: Vec<i64> = stored
        .iter()
        .map(|(_, _, p)| p["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        rows,
        (1..=ROWS).collect::<Vec<_>>(),
        "in commit order, nothing missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_loses_nothing() {
    const TXNS: i64 = 80;
    let mut nats = NatsServer::start(&[]);
    let db = db_with(
        "jsrestart",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &db,
        "s_jsrestart",
        &nats_sink(&nats.url(), "RESTART"),
        "[pipeline]\nmax_changes = 200\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_jsrestart", &mut host).await;
    let writer = spawn_id_writer(db.dsn(), TXNS, 100, Duration::from_millis(50));
    wait_stream_len(&nats.url(), "RESTART", 500, &mut host).await;
    nats.kill();
    // No PubAck can arrive once the server is gone, so no transaction committed after the
    // kill can be acknowledged: the confirmed position must stay at or before the commit of
    // the first of them (Postgres skips on restart only transactions whose commit lies
    // before the confirmed position). The bound is checked once the stream shows where those
    // commits are; the WAL position itself may pass the kill while the host is idle (other
    // databases' WAL, read by the walsender and reported in keepalives), which loses nothing.
    // The outage lasts 2.5 s (sampled every 100 ms) while the writer keeps committing.
    let at_kill = lsn(&harness::current_wal_lsn(&client).await);
    let mut confirmed_in_outage = 0u64;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = lsn(&confirmed_flush_lsn(&client, "s_jsrestart").await.unwrap());
        confirmed_in_outage = confirmed_in_outage.max(now);
    }
    let wal = lsn(&harness::current_wal_lsn(&client).await);
    assert!(
        wal > at_kill,
        "the writer committed nothing during the outage"
    );
    nats.spawn();
    writer.await.unwrap();
    harness::wait_confirmed_to_now(&client, "s_jsrestart", Duration::from_secs(120))
        .await
        .unwrap();
    stop_clean(&mut host).await;
    let stored = read_stream(&nats.url(), "RESTART").await;
    let rows: Vec<i64> = stored
        .iter()
        .map(|(_, _, p)| p["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        rows,
        (1..=TXNS * 100).collect::<Vec<_>>(),
        "everything, once, in order"
    );
    let first_commit_after_kill = stored
        .iter()
        .map(|(_, _, p)| lsn(p["commit_lsn"].as_str().unwrap()))
        .filter(|&c| c > at_kill)
        .min()
        .expect("a transaction committed during the outage");
    assert!(
        confirmed_in_outage <= first_commit_after_kill,
        "confirmed {confirmed_in_outage:X} while NATS was down, past the commit \
         {first_commit_after_kill:X} of a transaction committed after the kill ({at_kill:X})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_config_errors_point_at_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let cases = [
        ("[[sinks]]\ntype = \"stdout\"\nsubject = \"x\"\n", "p.toml:7:11: sinks.subject: does not apply to a stdout sink"),
        ("[[sinks]]\ntype = \"nats\"\n", "sinks.url: a nats sink needs a url"),
        ("[[sinks]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nsubject = \"cdc.{tabel}\"\n", "unknown placeholder {tabel}"),
        ("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nbatch = \"xml\"\n", "p.toml:8:9: sinks.batch: unknown variant `xml`"),
        ("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nheaders = { A = \"${CDC_TEST_UNSET_VAR}\" }\n", "environment variable CDC_TEST_UNSET_VAR is not set"),
        ("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\n[[sinks]]\ntype = \"http\"\nurl = \"http://y\"\n", "duplicate sink name \"http\""),
        ("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\non_reject = \"dead-letter\"\n", "sinks.on_reject: \"dead-letter\" needs dead_letter_sink"),
        ("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\non_reject = \"dead-letter\"\ndead_letter_sink = \"nope\"\n", "sinks.dead_letter_sink: no sink is named \"nope\""),
        ("[[sinks]]\ntype = \"stdout\"\non_reject = \"skip\"\n", "sinks.on_reject: does not apply to a stdout sink"),
    ];
    for (sinks, want) in cases {
        std::fs::write(&path, format!("[source]\ndsn = \"postgres://u@127.0.0.1/db\"\nslot = \"s\"\npublication = \"p\"\n{sinks}")).unwrap();
        let out = cdc_test_harness::host_command(BIN)
            .args(["check".as_ref(), path.as_os_str()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sinks}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{sinks}\nwant {want}\ngot {err}");
        assert!(!err.contains("panicked"));
    }
}

/// Backpressure: a slow sink stops the host reading the replication socket, but status
/// updates keep flowing, so even a 2 s wal_sender_timeout never disconnects it. (With
/// `status_interval_secs = 10` this test fails: the walsender times out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_never_trips_wal_sender_timeout() {
    let server = PgServer::start().unwrap();
    server
        .psql(
            "postgres",
            "ALTER SYSTEM SET wal_sender_timeout = '2s'; SELECT pg_reload_conf();",
        )
        .unwrap();
    let hook = Receiver::start().await;
    hook.set_default(Some(Reply::Delay(Duration::from_millis(400))));
    let db = server.fresh_db("slow").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\n",
        hook.url("/slow")
    );
    let cfg = write(
        &dir,
        &db,
        "s_slow",
        &sink,
        "status_interval_secs = 1\n[pipeline]\nmax_changes = 100\nmax_inflight = 2\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_slow", &mut host).await;
    // 30 batches at 0.4 s each: ~12 s of a full pipeline, six times the timeout.
    for t in 0..30 {
        db.exec(&format!(
            "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series({}, {}) g",
            t * 100 + 1,
            t * 100 + 100
        ))
        .await;
    }
    harness::wait_confirmed_to_now(&client, "s_slow", Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        host.try_exit().is_none(),
        "host died:\n{}",
        host.stderr_tail(20)
    );
    stop_clean(&mut host).await;
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        !log.contains("replication timeout"),
        "walsender timed out:\n{}",
        server.log_tail(20)
    );
}

/// on_reject = "dead-letter": a batch the endpoint refuses (400) goes to the dead-letter sink
/// and the pipeline carries on; the dead-letter sink receives nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batches_go_to_the_dead_letter_sink() {
    let mut hook = Receiver::start().await;
    hook.script([status(400)]);
    let db = db_with(
        "dlq",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\non_reject = \"dead-letter\"\ndead_letter_sink = \"dlq\"\n[[sinks]]\nname = \"dlq\"\ntype = \"stdout\"\n",
        hook.url("/cdc")
    );
    let cfg = write(&dir, &db, "s_dlq", &sinks, "");
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_dlq", &mut host).await;
    db.exec("INSERT INTO t VALUES (1)").await;
    let rejected = hook.next().await;
    db.exec("INSERT INTO t VALUES (2)").await;
    let accepted = hook.next().await;
    assert_eq!(ndjson_lines(&[rejected.body])[0]["after"]["id"], 1);
    assert_eq!(ndjson_lines(&[accepted.body])[0]["after"]["id"], 2);
    harness::wait_confirmed_to_now(&client, "s_dlq", Duration::from_secs(60))
        .await
        .unwrap();
    stop_clean(&mut host).await;
    let dead = parse_lines(&host.stdout_lines());
    assert_eq!(
        dead.len(),
        1,
        "only the rejected change is dead-lettered: {dead:?}"
    );
    assert_eq!(dead[0]["after"]["id"], 1);
    assert!(host.stderr().contains("sent to the dead-letter sink"));
}

/// The client ids (`cid`) of the connections named `name` open on a nats-server, from its
/// monitoring endpoint. A client that reconnects gets a new id. (The test's own readers are
/// unnamed, and may linger for a moment after they are dropped.)
async fn nats_client_ids(monitor_port: u16, name: &str) -> Vec<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", monitor_port))
        .await
        .unwrap();
    s.write_all(b"GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let v: Json = serde_json::from_str(body).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| c["cid"].as_u64().unwrap())
        .collect()
}

/// Sinks are built once per process: Postgres restarting mid-stream makes the host
/// reconnect to Postgres, but its NATS connection stays the one it opened at start (the
/// server sees the same client id throughout), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_keeps_the_nats_connection() {
    let server = PgServer::start().unwrap();
    let monitor = harness::nats_server::free_port();
    let nats = NatsServer::start(&["-m", &monitor.to_string()]);
    let db = server.fresh_db("pgrestart").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        &db,
        "s_pgrestart",
        &nats_sink(&nats.url(), "PGRESTART"),
        "status_interval_secs = 1\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_pgrestart", &mut host).await;
    db.exec("INSERT INTO t SELECT generate_series(1, 500)")
        .await;
    wait_stream_len(&nats.url(), "PGRESTART", 500, &mut host).await;
    // cdc-host names its connection after the sink.
    let before = nats_client_ids(monitor, "cdc-host:bus").await;
    assert_eq!(before.len(), 1, "one connection for the sink: {before:?}");
    server.restart().unwrap();
    host.wait_for_stderr(
        "replication interrupted; reconnecting",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    // The test's cached connection died with the server: a new one.
    db.client()
        .await
        .batch_execute("INSERT INTO t SELECT generate_series(501, 1000)")
        .await
        .unwrap();
    // Streaming again once the rows written after the restart arrive.
    wait_stream_len(&nats.url(), "PGRESTART", 1000, &mut host).await;
    let after = nats_client_ids(monitor, "cdc-host:bus").await;
    assert_eq!(
        after,
        before,
        "cdc-host opened another NATS connection after the Postgres restart:\n{}",
        host.stderr_tail(30)
    );
    stop_clean(&mut host).await;
    let ids: HashSet<i64> = read_stream(&nats.url(), "PGRESTART")
        .await
        .iter()
        .map(|(_, _, j)| j["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=1000).collect::<HashSet<_>>());
}

/// SIGTERM while a sink's destination is down: the host drains for `shutdown_grace_secs`,
/// then stops that sink and exits 0 instead of retrying forever; nothing undelivered is
/// confirmed, so a restart sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_sink_is_down_exits_after_the_grace_period() {
    let mut hook = Receiver::start().await;
    hook.set_default(Some(status(500)));
    let db = db_with(
        "stuckstop",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\n",
        hook.url("/down")
    );
    let cfg = write(
        &dir,
        &db,
        "s_stuckstop",
        &sink,
        "status_interval_secs = 1\n[pipeline]\nshutdown_grace_secs = 2\n",
    );
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, "s_stuckstop", &mut host).await;
    db.exec("INSERT INTO t SELECT generate_series(1, 5)").await;
    // The sink is retrying: the batch reached it at least once.
    let attempt = hook.next().await;
    let body = String::from_utf8(attempt.body).unwrap();
    let commit_lsn = body
        .split("\"commit_lsn\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no commit_lsn in {body}"))
        .to_owned();
    host.sigterm().unwrap();
    let st = host.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(st.success(), "host exit {st}:\n{}", host.stderr_tail(40));
    assert!(
        host.stderr().contains("still delivering at shutdown"),
        "{}",
        host.stderr_tail(20)
    );
    // Postgres sends a transaction again when its commit record lies at or after the
    // slot's confirmed position. (The position may pass the transaction's first records: a
    // keepalive while the server waits for its commit names how far it has read.)
    let confirmed = confirmed_flush_lsn(&client, "s_stuckstop").await.unwrap();
    assert!(
        lsn(&confirmed) <= lsn(&commit_lsn),
        "confirmed {confirmed} past the undelivered transaction's commit at {commit_lsn}\n{}",
        host.stderr_tail(60)
    );
    // And it does come again: the sink recovered, a restart delivers all five rows.
    hook.set_default(None);
    hook.drain(); // the failed attempts before the stop
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    let mut ids = Vec::new();
    while ids.len() < 5 {
        let r = hook.next().await;
        for c in ndjson_lines(&[r.body]) {
            ids.push(c["after"]["id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    stop_clean(&mut host).await;
}

/// A 3-node JetStream cluster, a database with table `t`, and a host publishing it into the
/// R3 stream `stream` (url: every seed) — started and streaming.
struct ClusterPipeline {
    cluster: NatsCluster,
    db: TestDb,
    client: tokio_postgres::Client,
    host: HostProcess,
    _dir: tempfile::TempDir,
}

async fn cluster_pipeline(hint: &str, slot: &str, stream: &str) -> ClusterPipeline {
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let db = db_with(
        hint,
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("{}replicas = 3\n", nats_sink(&cluster.url(), stream));
    let cfg = write(&dir, &db, slot, &sink, "[pipeline]\nmax_changes = 200\n");
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    wait_slot_active(&db, slot, &mut host).await;
    ClusterPipeline {
        cluster,
        db,
        client,
        host,
        _dir: dir,
    }
}

/// An R3 stream on a 3-node JetStream cluster (`replicas = 3`, the url lists every seed):
/// its leader is killed mid-stream, then a second node, leaving no quorum. While there is no
/// quorum nothing new is confirmed to Postgres; once the nodes are back every change is in
/// the stream once, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_loses_its_leader_then_its_quorum_and_no_change() {
    const TXNS: i64 = 200;
    let ClusterPipeline {
        mut cluster,
        db,
        client,
        mut host,
        _dir,
    } = cluster_pipeline("jscluster", "s_jscluster", "R3").await;
    let writer = spawn_id_writer(db.dsn(), TXNS, 100, Duration::from_millis(100));
    wait_stream_len(&cluster.nodes[0].url(), "R3", 500, &mut host).await;
    let leader = cluster
        .stream_leader(0, "R3")
        .await
        .expect("the R3 stream has a leader");
    cluster.nodes[leader].kill();
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    // A new leader is elected; changes keep arriving.
    let before = stream_len(&cluster.nodes[survivor].url(), "R3").await;
    wait_stream_len(
        &cluster.nodes[survivor].url(),
        "R3",
        before + 500,
        &mut host,
    )
    .await;
    // Now no quorum: one node of three left.
    let second = (0..3).find(|i| *i != leader && *i != survivor).unwrap();
    cluster.nodes[second].kill();
    tokio::time::sleep(Duration::from_secs(1)).await; // publishes in flight settle
    let at_loss = lsn(&confirmed_flush_lsn(&client, "s_jscluster").await.unwrap());
    let wal_at_loss = lsn(&harness::current_wal_lsn(&client).await);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = lsn(&confirmed_flush_lsn(&client, "s_jscluster").await.unwrap());
        assert!(
            now <= wal_at_loss.max(at_loss),
            "confirmed {now:X} without a quorum, past the WAL at the loss ({wal_at_loss:X})"
        );
    }
    let wal = lsn(&harness::current_wal_lsn(&client).await);
    assert!(
        wal > wal_at_loss,
        "the writer committed nothing without a quorum"
    );
    cluster.nodes[second].spawn();
    cluster.nodes[leader].spawn();
    writer.await.unwrap();
    harness::wait_confirmed_to_now(&client, "s_jscluster", Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    stop_clean(&mut host).await;
    let stored = read_stream(&cluster.nodes[survivor].url(), "R3").await;
    let rows: Vec<i64> = stored
        .iter()
        .map(|(_, _, p)| p["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        rows,
        (1..=TXNS * 100).collect::<Vec<_>>(),
        "everything, once, in order"
    );
    let js = async_nats::jetstream::new(
        async_nats::connect(cluster.nodes[survivor].url())
            .await
            .unwrap(),
    );
    let info = js
        .get_stream("R3")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
}

/// A rolling restart of all three nodes of the cluster while changes flow into an R3
/// stream: one node down at a time (the stream keeps its quorum), each back before the next
/// goes. Every change is in the stream once, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_cluster_keeps_every_change_once() {
    const TXNS: i64 = 300;
    let ClusterPipeline {
        mut cluster,
        db,
        client,
        mut host,
        _dir,
    } = cluster_pipeline("jsrolling", "s_jsrolling", "ROLL").await;
    let writer = spawn_id_writer(db.dsn(), TXNS, 100, Duration::from_millis(100));
    let mut seen = 0;
    let total = (TXNS * 100) as u64;
    for i in 0..3 {
        let other = (i + 1) % 3;
        let url = cluster.nodes[other].url();
        wait_stream_len(&url, "ROLL", (seen + 300).min(total), &mut host).await;
        cluster.nodes[i].kill();
        seen = stream_len(&url, "ROLL").await;
        // Changes keep arriving with one node down.
        wait_stream_len(&url, "ROLL", (seen + 300).min(total), &mut host).await;
        cluster.nodes[i].spawn();
        cluster.wait_jetstream(i).await;
        seen = stream_len(&url, "ROLL").await;
    }
    writer.await.unwrap();
    harness::wait_confirmed_to_now(&client, "s_jsrolling", Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    stop_clean(&mut host).await;
    let stored = read_stream(&cluster.nodes[0].url(), "ROLL").await;
    let rows: Vec<i64> = stored
        .iter()
        .map(|(_, _, p)| p["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        rows,
        (1..=TXNS * 100).collect::<Vec<_>>(),
        "everything, once, in order"
    );
}

/// "When one sidecar is not enough": two cdc-host processes, each on its own publication and
/// slot of one database, publish into one R3 stream. One is killed with `kill -9` mid-stream
/// and started again; the other is unaffected; every change of both is in the stream once,
/// each table's in commit order.
///
/// `ordering_check = false` on both, as the README recommends for a shared stream (see
/// `..._with_the_default_ordering_check` for the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_on_two_publications_share_one_r3_stream() {
    let logs =
        two_sidecars_share_one_r3_stream("jssidecars", "s_side", "ordering_check = false\n").await;
    for log in &logs {
        assert_eq!(log.matches(REPLICATED_WARNING).count(), 0, "{log}");
    }
}

/// The same with the default `ordering_check = true`: the stream cdc-host creates allows
/// batched publishing, so each sidecar publishes ordered batches (the server keeps each
/// publisher's messages in order, whoever else publishes) and says so once; no warning.
/// (Before ordered batches the check was `Nats-Expected-Last-Msg-Id`, which a second
/// publisher makes fail and which stops a replicated stream when it does: see
/// `sinks/src/nats/fence.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_one_r3_stream_with_the_default_ordering_check() {
    let logs = two_sidecars_share_one_r3_stream("jssidecarsdef", "s_sdef", "").await;
    for log in &logs {
        assert_eq!(log.matches(REPLICATED_WARNING).count(), 0, "{log}");
        assert_eq!(
            log.matches(ORDERED_BATCHES).count(),
            1,
            "once per sidecar process:\n{log}"
        );
    }
}

/// The warning a sink logs for a replicated stream that takes no ordered batches.
const REPLICATED_WARNING: &str = "does not allow batched publishing";
/// What a sink logs once per stream it publishes ordered batches to.
const ORDERED_BATCHES: &str = "publishing ordered batches to JetStream stream";

/// The two-sidecar run (database `db_name`, slots `<slot>_a`/`<slot>_b`, `extra` appended to
/// `[sinks.jetstream]`); returns the stderr of sidecar a before and after its restart and of
/// sidecar b.
async fn two_sidecars_share_one_r3_stream(db_name: &str, slot: &str, extra: &str) -> [String; 3] {
    const TXNS: i64 = 100;
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let db = db_with(
        db_name,
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)",
        "CREATE PUBLICATION pa FOR TABLE a; CREATE PUBLICATION pb FOR TABLE b",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "{}replicas = 3\n{extra}",
        nats_sink(&cluster.url(), "SIDECARS")
    );
    let config = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[source]\ndsn = \"{}\"\nslot = \"{slot}_{name}\"\npublication = \"p{name}\"\n[source.snapshot]\nmode = \"never\"\n[pipeline]\nmax_changes = 200\n{sink}",
                db.dsn()
            ),
        )
        .unwrap();
        path
    };
    let (cfg_a, cfg_b) = (config("a"), config("b"));
    let (slot_a, slot_b) = (format!("{slot}_a"), format!("{slot}_b"));
    let mut host_a = HostProcess::spawn(BIN, &cfg_a).unwrap();
    let mut host_b = HostProcess::spawn(BIN, &cfg_b).unwrap();
    wait_slot_active(&db, &slot_a, &mut host_a).await;
    wait_slot_active(&db, &slot_b, &mut host_b).await;
    let writer = |table: &'static str| {
        let dsn = db.dsn();
        tokio::spawn(async move {
            let c = harness::try_connect(&dsn).await.unwrap();
            for t in 0..TXNS {
                let lo = t * 100 + 1;
                c.batch_execute(&format!(
                    "INSERT INTO {table} SELECT g FROM generate_series({lo}, {}) g",
                    lo + 99
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (wa, wb) = (writer("a"), writer("b"));
    let url = cluster.nodes[0].url();
    wait_stream_len(&url, "SIDECARS", 2000, &mut host_b).await;
    host_a.kill9().unwrap();
    host_a.wait_exit(WAIT).await.unwrap();
    let log_a = host_a.stderr();
    // B carries on alone meanwhile.
    let len = stream_len(&url, "SIDECARS").await;
    wait_stream_len(&url, "SIDECARS", len + 500, &mut host_b).await;
    let mut host_a = HostProcess::spawn(BIN, &cfg_a).unwrap();
    wa.await.unwrap();
    wb.await.unwrap();
    for (slot, host) in [(&slot_a, &mut host_a), (&slot_b, &mut host_b)] {
        harness::wait_confirmed_to_now(&client, slot, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    }
    stop_clean(&mut host_a).await;
    stop_clean(&mut host_b).await;
    assert!(
        !host_b.stderr().contains("reconnecting"),
        "sidecar b was disturbed:\n{}",
        host_b.stderr_tail(20)
    );
    let stored = read_stream(&url, "SIDECARS").await;
    for table in ["a", "b"] {
        let subject = format!("cdc.public.{table}");
        let rows: Vec<i64> = stored
            .iter()
            .filter(|(_, s, _)| *s == subject)
            .map(|(_, _, p)| p["after"]["id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            rows,
            (1..=TXNS * 100).collect::<Vec<_>>(),
            "table {table}: everything, once, in order"
        );
    }
    assert_eq!(stored.len() as i64, 2 * TXNS * 100);
    [log_a, host_a.stderr(), host_b.stderr()]
}
