//! The admin endpoint end to end: `/healthz`, `/readyz` (stream started, every sink
//! healthy), `/metrics` (the counts a run produced), JSON logs from the config, and the
//! shutdown contract (drain within the grace period; a second signal exits at once).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::http_receiver::{status, Receiver};
use cdc_test_harness::nats_server::{free_port, NatsServer};
use cdc_test_harness::{confirmed_flush_lsn, HostProcess};

/// `GET path` on the admin endpoint: (status, body); `None` while nothing listens.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Polls `path` until it answers `code` (deadline: WAIT); returns the body.
pub(crate) async fn wait_status(
    addr: SocketAddr,
    path: &str,
    code: u16,
    host: &mut HostProcess,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = get(addr, path).await;
        if let Some((c, body)) = &got {
            if *c == code {
                return body.clone();
            }
        }
        if let Some(st) = host.try_exit() {
            panic!("host exited ({st}) while waiting for {path} = {code}");
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {code}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prometheus text → `name{k="v",…}` (labels sorted) → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value.parse().expect("a number"));
    }
    out
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (code, body) = get(addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    parse_metrics(&body)
}

/// Polls `/metrics` until `ok` holds (deadline: WAIT); returns that scrape.
async fn wait_metrics(
    addr: SocketAddr,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape(addr).await;
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}:\n{m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn admin_toml(addr: SocketAddr) -> String {
    format!("status_interval_secs = 1\n\n[admin]\nlisten = \"{addr}\"\n")
}

fn local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The commit LSN of the first change in an NDJSON body (native format).
fn commit_lsn(body: &[u8]) -> u64 {
    let first = String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    lsn(v["commit_lsn"].as_str().unwrap())
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// `/readyz` is 503 until the stream runs (here: the slot is held by another consumer),
/// `/healthz` is 200 all along; then `/metrics` shows exactly what the test produced, and
/// the logs are JSON lines as `[log] format` asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_stream_and_metrics_count_the_changes() {
    let db = db_with(
        "adminmetrics",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t, u",
    )
    .await;
    let addr = local_addr();
    let (_d, cfg) = config(
        &db.dsn(),
        "s_adminmetrics",
        "p",
        &format!("{}\n[log]\nformat = \"json\"\n", admin_toml(addr)),
    );
    // Another consumer holds the slot: the stream cannot start.
    let (_hd, holder_cfg) = config(&db.dsn(), "s_adminmetrics", "p", "");
    let mut holder = start_host(&db, &holder_cfg, "s_adminmetrics").await;
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    host.wait_for_stderr("is in use by another process", WAIT)
        .await
        .unwrap();
    assert_eq!(get(addr, "/healthz").await, Some((200, "ok\n".into())));
    let body = wait_status(addr, "/readyz", 503, &mut host).await;
    assert!(body.contains("replication stream not running"), "{body}");
    assert_eq!(get(addr, "/nope").await.map(|r| r.0), Some(404));

    stop_clean(&mut holder).await;
    wait_slot_active(&db, "s_adminmetrics", &mut host).await;
    assert_eq!(
        wait_status(addr, "/readyz", 200, &mut host).await,
        "ready\n"
    );

    // Three transactions: 5 inserts + 1 insert into u; 2 updates; 1 delete.
    db.exec("BEGIN; INSERT INTO t SELECT g, 'x' FROM generate_series(1, 5) g; INSERT INTO u VALUES (1); COMMIT")
        .await;
    db.exec("UPDATE t SET v = 'y' WHERE id <= 2").await;
    db.exec("DELETE FROM t WHERE id = 5").await;
    let out = wait_json(&mut host, 9).await;
    assert_eq!(out.len(), 9);

    let m = wait_metrics(addr, "9 changes acknowledged and 3 commits timed", |m| {
        m.get(r#"cdc_sink_changes_total{sink="stdout"}"#) == Some(&9.0)
            && m.get("cdc_commit_to_ack_seconds_count") == Some(&3.0)
            && m.get("cdc_confirmed_lsn").is_some_and(|v| *v > 0.0)
            && m.contains_key("cdc_slot_retained_wal_bytes")
    })
    .await;
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in {m:#?}"))
    };
    for kind in ["received", "emitted"] {
        let c = |table: &str, op: &str| {
            get(&format!(
                r#"cdc_changes_{kind}_total{{op="{op}",table="{table}"}}"#
            ))
        };
        assert_eq!(c("public.t", "insert"), 5.0, "{kind}");
        assert_eq!(c("public.u", "insert"), 1.0, "{kind}");
        assert_eq!(c("public.t", "update"), 2.0, "{kind}");
        assert_eq!(c("public.t", "delete"), 1.0, "{kind}");
    }
    assert!(!m.keys().any(|k| k.starts_with("cdc_changes_dropped_total")));
    let batches = get(r#"cdc_sink_batches_total{sink="stdout"}"#);
    assert!((1.0..=3.0).contains(&batches), "{batches} batches");
    let bytes = get(r#"cdc_sink_bytes_total{sink="stdout"}"#);
    let stdout_bytes: usize = host.stdout_lines().iter().map(|l| l.len()).sum();
    assert_eq!(
        bytes, stdout_bytes as f64,
        "payload bytes = stdout minus newlines"
    );
    assert_eq!(get(r#"cdc_sink_up{sink="stdout"}"#), 1.0);
    assert_eq!(get("cdc_stream_up"), 1.0);
    assert!(
        get("cdc_reconnects_total") >= 1.0,
        "the held slot was retried"
    );
    let last_commit = out.last().unwrap()["commit_lsn"].as_str().unwrap();
    assert!(get("cdc_acked_lsn") > lsn(last_commit) as f64);
    assert!(get("cdc_commit_to_ack_seconds_sum") >= 0.0);
    assert!(m.contains_key(r#"cdc_commit_to_ack_seconds_bucket{le="+Inf"}"#));
    assert!(m.contains_key("cdc_slot_lag_bytes"));
    assert!(m.keys().any(|k| k.starts_with("cdc_build_info{")));

    // The confirmed position reaches Postgres and the gauge.
    let client = db.client().await;
    harness::wait_confirmed_to_now(&client, "s_adminmetrics", WAIT)
        .await
        .unwrap();
    wait_metrics(addr, "confirmed_lsn at the end of WAL", |m| {
        m.get("cdc_confirmed_lsn")
            .is_some_and(|v| *v >= lsn(last_commit) as f64)
    })
    .await;

    stop_clean(&mut host).await;
    let stderr = host.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

/// While a sink fails (an HTTP endpoint answering 503, retried), `/readyz` is 503 and names
/// it; once it delivers again, 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_sink_fails_and_200_once_it_delivers() {
    let mut hook = Receiver::start().await;
    let db = db_with(
        "adminsink",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let addr = local_addr();
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"json\"\n",
        hook.url("/cdc")
    );
    let (_d, cfg) = config(
        &db.dsn(),
        "s_adminsink",
        "p",
        &format!("{}\n{sink}", admin_toml(addr)),
    );
    let mut host = start_host(&db, &cfg, "s_adminsink").await;
    wait_status(addr, "/readyz", 200, &mut host).await;
    db.exec("INSERT INTO t VALUES (1)").await;
    let _ = hook.next().await;
    wait_json(&mut host, 1).await;
    assert_eq!(get(addr, "/readyz").await.map(|r| r.0), Some(200));

    hook.set_default(Some(status(503)));
    db.exec("INSERT INTO t VALUES (2)").await;
    let body = wait_status(addr, "/readyz", 503, &mut host).await;
    assert!(body.contains("hook"), "{body}");
    assert_eq!(get(addr, "/healthz").await.map(|r| r.0), Some(200));
    let m = wait_metrics(addr, "the hook sink down and retrying", |m| {
        m.get(r#"cdc_sink_retries_total{sink="hook"}"#)
            .is_some_and(|v| *v >= 1.0)
    })
    .await;
    assert_eq!(m.get(r#"cdc_sink_up{sink="hook"}"#), Some(&0.0));
    assert_eq!(m.get(r#"cdc_sink_up{sink="stdout"}"#), Some(&1.0));

    hook.set_default(None);
    wait_status(addr, "/readyz", 200, &mut host).await;
    wait_metrics(addr, "the hook sink up with 2 changes", |m| {
        m.get(r#"cdc_sink_up{sink="hook"}"#) == Some(&1.0)
            && m.get(r#"cdc_sink_changes_total{sink="hook"}"#) == Some(&2.0)
    })
    .await;
    stop_clean(&mut host).await;
}

/// A NATS sink whose server goes away while nothing is being published: `/readyz` turns 503
/// on the disconnect and 200 again once the client reconnects, with no change in between;
/// a change published after that is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_an_idle_nats_sink_going_away_and_coming_back() {
    let mut nats = NatsServer::start(&[]);
    let db = db_with(
        "adminnats",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let addr = local_addr();
    let sink = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"cdc.{{table}}\"\n[sinks.jetstream]\nstream = \"ADMIN\"\ncreate_stream = true\n",
        nats.url()
    );
    let (_d, cfg) = config(
        &db.dsn(),
        "s_adminnats",
        "p",
        &format!("{}\n{sink}", admin_toml(addr)),
    );
    let mut host = start_host(&db, &cfg, "s_adminnats").await;
    wait_status(addr, "/readyz", 200, &mut host).await;

    nats.kill();
    let body = wait_status(addr, "/readyz", 503, &mut host).await;
    assert!(body.contains("bus"), "{body}");
    nats.spawn();
    wait_status(addr, "/readyz", 200, &mut host).await;

    db.exec("INSERT INTO t VALUES (1)").await;
    wait_json(&mut host, 1).await;
    wait_metrics(addr, "the change acknowledged by NATS", |m| {
        m.get(r#"cdc_sink_changes_total{sink="bus"}"#) == Some(&1.0)
    })
    .await;
    stop_clean(&mut host).await;
}

fn http_hook(hook: &Receiver, grace_secs: u64) -> String {
    format!(
        "[pipeline]\nshutdown_grace_secs = {grace_secs}\n\n[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"json\"\n",
        hook.url("/cdc")
    )
}

/// SIGTERM while a sink is failing: the host stops reading, keeps retrying within the grace
/// period; when the sink recovers it acknowledges, confirms and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_what_is_in_flight_and_exits_0() {
    let mut hook = Receiver::start().await;
    let db = db_with(
        "admindrain",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_d, cfg) = config(&db.dsn(), "s_admindrain", "p", &http_hook(&hook, 60));
    let mut host = start_host(&db, &cfg, "s_admindrain").await;
    hook.set_default(Some(status(503)));
    db.exec("INSERT INTO t VALUES (1)").await;
    let failed = hook.next().await; // delivery started, and failed
    let commit = commit_lsn(&failed.body);
    let client = db.client().await;

    host.sigterm().unwrap();
    host.wait_for_stderr("signal received", WAIT).await.unwrap();
    let _ = hook.next().await; // still retrying after the signal
    assert!(host.try_exit().is_none(), "it drains instead of exiting");
    hook.set_default(None);
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(st.success(), "{st}:\n{}", host.stderr_tail(20));
    let confirmed = confirmed_flush_lsn(&client, "s_admindrain").await.unwrap();
    assert!(
        lsn(&confirmed) > commit,
        "the final status update confirmed the drained change: {confirmed} <= {commit:X}"
    );
}

/// A second signal during the drain exits at once (status 130) and confirms nothing that
/// was not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_without_confirming_the_unacknowledged() {
    let mut hook = Receiver::start().await;
    let db = db_with(
        "adminsecond",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_d, cfg) = config(&db.dsn(), "s_adminsecond", "p", &http_hook(&hook, 120));
    let mut host = start_host(&db, &cfg, "s_adminsecond").await;
    let client = db.client().await;
    db.exec("INSERT INTO t VALUES (1)").await;
    let _ = hook.next().await;
    let end = harness::current_wal_lsn(&client).await;
    harness::wait_for_confirmed_flush(&client, "s_adminsecond", &end, WAIT)
        .await
        .unwrap();

    hook.set_default(Some(status(503)));
    db.exec("INSERT INTO t VALUES (2)").await;
    let failed = hook.next().await;
    assert!(String::from_utf8_lossy(&failed.body).contains("\"id\":2"));
    let commit = commit_lsn(&failed.body);
    host.sigterm().unwrap();
    host.wait_for_stderr("signal received", WAIT).await.unwrap();
    let _ = hook.next().await; // draining: still retrying
    let sent = Instant::now();
    host.sigint().unwrap();
    let st = host.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exited {:?} after the second signal",
        sent.elapsed()
    );
    assert_eq!(st.code(), Some(130), "{st}");
    assert!(host.stderr().contains("second signal"));
    let confirmed = confirmed_flush_lsn(&client, "s_adminsecond").await.unwrap();
    assert!(
        lsn(&confirmed) >= lsn(&end) && lsn(&confirmed) <= commit,
        "the acknowledged change stays confirmed ({end}), the unacknowledged one is not: {confirmed} vs commit {commit:X}"
    );
}
