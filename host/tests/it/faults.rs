//! Faults end to end: the connection to Postgres cut (and refused) by a proxy, NATS down
//! for a minute, an HTTP endpoint failing for a minute, and a malformed pgoutput message
//! on the wire. Each test uses its own database, slot and (where it needs one) nats-server
//! or HTTP receiver, and stops everything it started.
//!
//! The two 60 s outages also watch the host's memory: with the in-flight caps set small
//! (`CAPS`), a host that keeps reading the replication socket while its sink is down would
//! grow by about as much as the rows written meanwhile; one that stops reading stays flat.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio_postgres::Client;

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::http_receiver::{status, Receiver, Recorded, Reply};
use cdc_test_harness::nats_server::{self, stream_len, NatsServer};
use cdc_test_harness::proxy::{BackendMessage, Proxy};
use cdc_test_harness::{confirmed_flush_lsn, current_wal_lsn, HostProcess, TestDb};

/// What the host logs on every reconnection attempt (`pipeline::run`).
const RECONNECT_LOG: &str = "replication interrupted; reconnecting";

/// How long the sink stays down in the outage tests (at least; see `MIN_WINDOW_DATA`).
const OUTAGE: Duration = Duration::from_secs(60);
/// The outage is extended up to this while the writer has not yet written `MIN_WINDOW_DATA`.
const MAX_OUTAGE: Duration = Duration::from_secs(240);
/// RSS growth is measured over the outage's last 45 s: the in-flight caps fill up within
/// the first seconds (see `RSS_GROWTH_BOUND`), after that nothing should grow.
const WINDOW_FROM: u64 = 15;
/// Bound on the RSS growth over the window. What the host may hold with `CAPS`: the
/// delivery stage ≤ 4 batches (≤ 4 MiB encoded + their decoded changes), the bounded queue
/// to it ≤ 4 batches, the batch being built ≤ 250 changes, the read buffer (256 KiB
/// chunks): at most ~9 × 250 changes of ~4 KB decoded (≈ 9 MB) + ~5 MB encoded + the
/// sink's retry state (bounded client queues holding references to the same payloads) —
/// about 15 MB, reached after ~6 s of the outage writer's ~2.4 MB/s, well before the window
/// opens. 32 MiB leaves room for allocator noise, and is under half the row data written
/// to the published table during the window (asserted ≥ `MIN_WINDOW_DATA`), which a host
/// that kept reading would have to hold (and more: decoded and encoded copies).
const RSS_GROWTH_BOUND: u64 = 32 << 20;
/// The writer must put at least this much row data (`pad` bytes) into the published table
/// during the window for the RSS bound to mean something.
const MIN_WINDOW_DATA: u64 = 64 << 20;
/// Small in-flight caps for the outage tests (see `RSS_GROWTH_BOUND`).
const CAPS: &str = "status_interval_secs = 1\n[pipeline]\nmax_changes = 250\nmax_inflight = 4\nmax_inflight_bytes = 4194304\n";
/// Outage writer: 60 rows of 4000 bytes (stored PLAIN: no compression, no TOAST) every
/// 100 ms ≈ 2.4 MB/s of WAL.
const PAD: usize = 4000;
const PAD_ROWS_PER_TICK: i64 = 60;
const WRITE_EVERY: Duration = Duration::from_millis(100);

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {s}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn lsn_text(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// VmRSS of a process in bytes, from /proc/<pid>/status.
fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Inserts ids 1, 2, 3 … into `t` from a task of its own, `rows` per transaction every
/// `every` (with a `pad` column of that many bytes when `pad > 0`), until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    /// The last id committed so far.
    written: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<i64>,
}

impl Writer {
    fn start(dsn: String, rows: i64, pad: usize, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let written = Arc::new(AtomicI64::new(0));
        let progress = written.clone();
        let task = tokio::spawn(async move {
            let c = harness::try_connect(&dsn).await.unwrap();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 1i64;
            while !flag.load(Ordering::SeqCst) {
                tick.tick().await;
                let hi = next + rows - 1;
                let sql = if pad > 0 {
                    format!("INSERT INTO t SELECT g, repeat('x', {pad}) FROM generate_series({next}, {hi}) g")
                } else {
                    format!("INSERT INTO t SELECT g FROM generate_series({next}, {hi}) g")
                };
                c.batch_execute(&sql).await.unwrap();
                progress.store(hi, Ordering::SeqCst);
                next = hi + 1;
            }
            next - 1
        });
        Writer {
            stop,
            written,
            task,
        }
    }

    fn written(&self) -> i64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Stops after the transaction in progress; returns the last id written.
    async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// A database with `t (id int PRIMARY KEY[, pad text STORAGE PLAIN])` published as `p`.
async fn table_db(hint: &str, pad: bool) -> TestDb {
    let ddl = if pad {
        "CREATE TABLE t (id int PRIMARY KEY, pad text); ALTER TABLE t ALTER COLUMN pad SET STORAGE PLAIN"
    } else {
        "CREATE TABLE t (id int PRIMARY KEY)"
    };
    db_with(hint, ddl, "CREATE PUBLICATION p FOR TABLE t").await
}

/// `dir/pipeline.toml` with the given sinks and extra `[source]`/`[pipeline]` keys.
fn write_cfg(
    dir: &tempfile::TempDir,
    dsn: &str,
    slot: &str,
    sinks: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"{slot}\"\npublication = \"p\"\n{extra}\n[source.snapshot]\nmode = \"never\"\n{sinks}"
        ),
    )
    .unwrap();
    path
}

/// The same database as `db`, reached through `proxy` (plain protocol).
fn proxied_dsn(db: &TestDb, proxy: &Proxy) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        proxy.port(),
        db.name
    )
}

fn pg_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], harness::server().port()))
}

/// Row ids of the stdout changes, checking that a change seen twice (a replay after a
/// reconnect) is the same both times.
fn stdout_row_ids(host: &HostProcess) -> (BTreeSet<i64>, usize) {
    let mut by_id: HashMap<String, Json> = HashMap::new();
    let mut replays = 0;
    for c in parse_lines(&host.stdout_lines()) {
        let id = c["id"].as_str().unwrap().to_owned();
        match by_id.get(&id) {
            Some(prev) => {
                assert_eq!(prev, &c, "change {id} replayed with other content");
                replays += 1;
            }
            None => {
                by_id.insert(id, c);
            }
        }
    }
    let rows = by_id
        .values()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    (rows, replays)
}

/// Waits until the host has printed at least `n` changes (stdout lines).
async fn wait_lines(host: &mut HostProcess, n: usize) {
    host.wait_for_lines(n, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

// ---------------------------------------------------------------------------------------
// 1. The connection to Postgres cut by a proxy (and refused for a while).
// ---------------------------------------------------------------------------------------

/// A proxy between the host and Postgres resets every connection three times while rows
/// are written, once also refusing new connections for a few seconds: the host logs each
/// reconnection attempt, comes back each time, and in the end every row is in its output
/// (replays allowed: at-least-once) and the slot is confirmed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cuts_and_refusals_are_ridden_out_without_losing_a_row() {
    let started = Instant::now();
    let proxy = Proxy::start(pg_addr()).await;
    let db = table_db("cuts", false).await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        &dir,
        &proxied_dsn(&db, &proxy),
        "s_cuts",
        "[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n",
        "status_interval_secs = 1\n[pipeline]\nmax_changes = 200\n",
    );
    let mut host = start_host(&db, &cfg, "s_cuts").await;
    // 10 rows every 20 ms, straight to Postgres (not through the proxy).
    let writer = Writer::start(db.dsn(), 10, 0, Duration::from_millis(20));
    wait_lines(&mut host, 200).await;

    const CUTS: usize = 3;
    let mut cut_sizes = Vec::new();
    for round in 0..CUTS {
        let before = host.stdout_lines().len();
        let refusing = round == 1;
        if refusing {
            proxy.set_refusing(true);
        }
        let refused_before = proxy.refused();
        let cut = proxy.cut();
        assert!(
            cut >= 2,
            "round {round}: the host had {cut} connections through the proxy (control + replication expected)"
        );
        cut_sizes.push(cut);
        if refusing {
            // Keep refusing for a few seconds, and until at least one attempt was refused.
            let deadline = Instant::now() + WAIT;
            let refuse_at_least = Instant::now() + Duration::from_secs(3);
            while Instant::now() < refuse_at_least || proxy.refused() == refused_before {
                assert!(
                    Instant::now() < deadline,
                    "no reconnection attempt while refusing:\n{}",
                    host.stderr_tail(20)
                );
                assert!(
                    host.try_exit().is_none(),
                    "host exited:\n{}",
                    host.stderr_tail(20)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            proxy.set_refusing(false);
        }
        // Back: the slot is streaming again and new rows come out.
        wait_slot_active(&db, "s_cuts", &mut host).await;
        wait_lines(&mut host, before + 300).await;
    }
    let last = writer.stop().await;
    harness::wait_confirmed_to_now(&client, "s_cuts", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(20)));
    let deadline = Instant::now() + WAIT;
    let (rows, replays) = loop {
        let (rows, replays) = stdout_row_ids(&host);
        if rows.len() as i64 >= last || Instant::now() > deadline {
            break (rows, replays);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop_clean(&mut host).await;

    let missing: Vec<i64> = (1..=last).filter(|i| !rows.contains(i)).take(20).collect();
    assert!(missing.is_empty(), "rows missing (first 20): {missing:?}");
    assert_eq!(rows.len() as i64, last, "rows that were never written?");
    let stderr = host.stderr();
    let attempts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(RECONNECT_LOG))
        .collect();
    let refused = proxy.refused();
    assert!(
        attempts.len() >= CUTS + refused,
        "{} reconnection attempts logged for {CUTS} cuts and {refused} refused connections:\n{stderr}",
        attempts.len()
    );
    assert!(
        attempts.iter().any(|l| l.contains("cannot connect")),
        "a refused attempt is logged as such:\n{}",
        attempts.join("\n")
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    eprintln!(
        "cuts: {CUTS} cuts (connections reset: {cut_sizes:?}), {refused} refused connections, \
         {} reconnect lines, {last} rows, {replays} replayed changes, {:.1}s",
        attempts.len(),
        started.elapsed().as_secs_f64()
    );
    for l in &attempts {
        eprintln!("  {l}");
    }
}

// ---------------------------------------------------------------------------------------
// 2./3. A sink down for 60 s while Postgres keeps writing.
// ---------------------------------------------------------------------------------------

/// One sample per second of the outage.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: u64,
    rss: u64,
    confirmed: u64,
}

#[derive(Debug)]
struct Outage {
    samples: Vec<Sample>,
    /// RSS just before the sink went down.
    rss_before: u64,
    /// Row data (`PAD` bytes per row) written to the published table over the window
    /// (`WINDOW_FROM` s to the end of the outage).
    window_data: u64,
    /// WAL the whole server wrote over the window (other tests share it).
    window_wal: u64,
    /// How far the slot's walsender got in sending over the window (`sent_lsn`): it stalls
    /// once the host stops reading and TCP pushes back.
    window_sent: Option<u64>,
}

impl Outage {
    fn max_confirmed(&self) -> u64 {
        self.samples.iter().map(|s| s.confirmed).max().unwrap()
    }

    /// (RSS at the window's start, its peak in the window, growth).
    fn window_rss(&self) -> (u64, u64, u64) {
        let window: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.secs >= WINDOW_FROM)
            .collect();
        let start = window[0].rss;
        let peak = window.iter().map(|s| s.rss).max().unwrap();
        (start, peak, peak.saturating_sub(start))
    }

    /// Asserts the memory bound and reports the figures.
    fn check_memory(&self, what: &str) {
        let (start, peak, growth) = self.window_rss();
        let all_peak = self.samples.iter().map(|s| s.rss).max().unwrap();
        let end = self.samples.last().unwrap().rss;
        eprintln!(
            "{what}: RSS before {:.1} MiB, at {WINDOW_FROM}s {:.1} MiB, peak {:.1} MiB (window peak {:.1}), end {:.1} MiB; \
             window growth {:.1} MiB (bound {:.0}); row data written in the window {:.1} MiB ({:.2} MiB/s; server WAL {:.1} MiB); \
             walsender sent {} in the window",
            mib(self.rss_before),
            mib(start),
            mib(all_peak),
            mib(peak),
            mib(end),
            mib(growth),
            mib(RSS_GROWTH_BOUND),
            mib(self.window_data),
            mib(self.window_data) / (self.samples.len() as u64 - WINDOW_FROM) as f64,
            mib(self.window_wal),
            self.window_sent
                .map_or("?".to_owned(), |b| format!("{:.1} MiB", mib(b)))
        );
        let trace: Vec<String> = self
            .samples
            .iter()
            .map(|s| format!("{}s:{:.1}", s.secs, mib(s.rss)))
            .collect();
        eprintln!("{what}: RSS MiB per second: {}", trace.join(" "));
        assert!(
            self.window_data >= MIN_WINDOW_DATA,
            "the writer wrote only {:.1} MiB during the window: the memory bound proves nothing",
            mib(self.window_data)
        );
        assert!(
            growth < RSS_GROWTH_BOUND,
            "RSS grew {:.1} MiB over the outage's last {}s (bound {:.0} MiB) while {:.1} MiB of WAL were written: \
             the host keeps reading while its sink is down",
            mib(growth),
            self.samples.len() as u64 - WINDOW_FROM,
            mib(RSS_GROWTH_BOUND),
            mib(self.window_data)
        );
    }
}

/// `sent_lsn` of the walsender serving `slot`, if it runs.
async fn sent_lsn(client: &Client, slot: &str) -> Option<u64> {
    let row = client
        .query_opt(
            "SELECT r.sent_lsn::text FROM pg_stat_replication r \
             JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0).map(|s| lsn(&s))
}

/// Rides out the outage: every second, the host must still run; samples its RSS and the
/// slot's confirmed position and calls `each_second(secs)`. Returns after `OUTAGE`, or
/// later (up to `MAX_OUTAGE`) until the window holds `MIN_WINDOW_DATA`.
async fn ride_outage(
    host: &mut HostProcess,
    client: &Client,
    slot: &str,
    writer: &Writer,
    mut each_second: impl FnMut(u64),
) -> Outage {
    let rss_before = rss_bytes(host.pid()).unwrap();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut samples = Vec::new();
    let (mut wal_from, mut wal_to, mut rows_from, mut rows_to) = (0, 0, 0, 0);
    let (mut sent_from, mut sent_to) = (None, None);
    // At least OUTAGE, longer while the writer has not yet put MIN_WINDOW_DATA into the window
    // (a busy machine writes more slowly: the window grows instead of the test failing).
    let mut secs = 0;
    loop {
        secs += 1;
        tick.tick().await;
        if let Some(st) = host.try_exit() {
            panic!(
                "host exited ({st}) {secs}s into the outage:\n{}",
                host.stderr_tail(30)
            );
        }
        let rss = rss_bytes(host.pid()).expect("host's /proc status");
        let confirmed = lsn(&confirmed_flush_lsn(client, slot).await.unwrap());
        samples.push(Sample {
            secs,
            rss,
            confirmed,
        });
        if secs == WINDOW_FROM {
            wal_from = lsn(&current_wal_lsn(client).await);
            rows_from = writer.written();
            sent_from = sent_lsn(client, slot).await;
        }
        let enough = (writer.written() - rows_from) as u64 * PAD as u64 >= MIN_WINDOW_DATA;
        let last = secs >= OUTAGE.as_secs() && (enough || secs >= MAX_OUTAGE.as_secs());
        if last {
            wal_to = lsn(&current_wal_lsn(client).await);
            rows_to = writer.written();
            sent_to = sent_lsn(client, slot).await;
        }
        each_second(secs);
        if last {
            break;
        }
    }
    Outage {
        samples,
        rss_before,
        window_data: (rows_to - rows_from) as u64 * PAD as u64,
        window_wal: wal_to - wal_from,
        window_sent: sent_from.zip(sent_to).map(|(a, b)| b.saturating_sub(a)),
    }
}

/// Every message of a JetStream stream in stream order (through an ordered consumer):
/// (Nats-Msg-Id, row id, commit LSN, when the server stored it).
async fn read_stream(
    url: &str,
    stream: &str,
) -> Vec<(String, i64, u64, async_nats::datetime::DateTime)> {
    let (_, messages) = nats_server::read_stream(url, stream).await;
    let mut out = Vec::with_capacity(messages.len());
    for m in &messages {
        let published = m.info().unwrap().published;
        let id = nats_server::msg_id(m);
        let payload: Json = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            payload["id"].as_str(),
            Some(id.as_str()),
            "Nats-Msg-Id is the change id"
        );
        out.push((
            id,
            payload["after"]["id"].as_i64().unwrap(),
            lsn(payload["commit_lsn"].as_str().unwrap()),
            published,
        ));
    }
    out
}

/// NATS killed for 60 s while Postgres keeps writing ~2.4 MB/s: nothing is confirmed past
/// what JetStream stored before the kill, the host neither exits nor grows, and once NATS is
/// back (same store directory) the stream holds every change exactly once, in order, and the
/// slot is confirmed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_60s_holds_the_slot_keeps_memory_flat_and_loses_nothing() {
    // Long and machine-loading: never beside another such test (see `heavy`).
    let _heavy = harness::heavy().await;
    let started = Instant::now();
    let mut nats = NatsServer::start(&[]);
    let db = table_db("nats_outage", true).await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"cdc.{{schema}}.{{table}}\"\nformat = \"json\"\n[sinks.jetstream]\nstream = \"OUTAGE\"\ncreate_stream = true\n",
        nats.url()
    );
    let cfg = write_cfg(&dir, &db.dsn(), "s_nats_outage", &sink, CAPS);
    let mut host = start_host(&db, &cfg, "s_nats_outage").await;
    let writer = Writer::start(db.dsn(), PAD_ROWS_PER_TICK, PAD, WRITE_EVERY);
    let deadline = Instant::now() + WAIT;
    while stream_len(&nats.url(), "OUTAGE").await < 500 {
        assert!(
            Instant::now() < deadline,
            "no delivery:\n{}",
            host.stderr_tail(20)
        );
        assert!(host.try_exit().is_none(), "{}", host.stderr_tail(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Anything stored from here on was stored after the restart.
    let killed_at = async_nats::datetime::now();
    nats.kill();
    let outage = ride_outage(&mut host, &client, "s_nats_outage", &writer, |_| {}).await;
    nats.spawn();
    let recovered = Instant::now();
    let last = writer.stop().await;
    harness::wait_confirmed_to_now(&client, "s_nats_outage", Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    let catch_up = recovered.elapsed();
    stop_clean(&mut host).await;

    let stored = read_stream(&nats.url(), "OUTAGE").await;
    let ids: BTreeSet<&str> = stored.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "a change stored twice");
    let rows: Vec<i64> = stored.iter().map(|(_, row, ..)| *row).collect();
    assert!(
        rows.iter().copied().eq(1..=last),
        "the stream holds {} changes, not rows 1..={last} in order",
        rows.len()
    );
    // Nothing was confirmed during the outage past what JetStream had stored before it.
    let after: Vec<u64> = stored
        .iter()
        .filter(|(.., at)| *at >= killed_at)
        .map(|(_, _, commit, _)| *commit)
        .collect();
    assert!(!after.is_empty(), "nothing was written during the outage?");
    let first_unacked = *after.iter().min().unwrap();
    let max_confirmed = outage.max_confirmed();
    assert!(
        max_confirmed < first_unacked,
        "confirmed {} during the outage, past the commit {} of a change JetStream stored only after it",
        lsn_text(max_confirmed),
        lsn_text(first_unacked)
    );
    let moved: BTreeSet<u64> = outage.samples.iter().map(|s| s.confirmed).collect();
    eprintln!(
        "nats outage: {last} rows, {} stored after the restart; confirmed during the outage {:?} (first change stored after: commit {}); \
         caught up {:.1}s after NATS came back; test {:.1}s",
        after.len(),
        moved.iter().map(|l| lsn_text(*l)).collect::<Vec<_>>(),
        lsn_text(first_unacked),
        catch_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    outage.check_memory("nats outage");
    let stderr = host.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Status updates kept flowing: the walsender never timed out on the stalled host.
    assert!(!stderr.contains(RECONNECT_LOG), "{stderr}");
}

/// One request as the HTTP test keeps it (bodies are parsed and dropped as they come).
struct Req {
    at: Instant,
    key: String,
    body_hash: u64,
    /// (change id, row id, commit LSN)
    changes: Vec<(String, i64, u64)>,
}

fn parse_request(r: Recorded) -> Req {
    let key = r.key().to_owned();
    let mut h = DefaultHasher::new();
    r.body.hash(&mut h);
    let changes = String::from_utf8(r.body)
        .unwrap()
        .lines()
        .map(|l| {
            let c: Json = serde_json::from_str(l).unwrap();
            (
                c["id"].as_str().unwrap().to_owned(),
                c["after"]["id"].as_i64().unwrap(),
                lsn(c["commit_lsn"].as_str().unwrap()),
            )
        })
        .collect();
    Req {
        at: r.at,
        key,
        body_hash: h.finish(),
        changes,
    }
}

/// The HTTP endpoint answers 500 for 20 s, then 429 with `Retry-After: 1` for 40 s, while
/// Postgres keeps writing ~2.4 MB/s: nothing is confirmed past what was answered 2xx before,
/// the host neither exits nor grows, retries carry the same `Idempotency-Key` (and body),
/// `Retry-After` paces the retries, and after recovery every change is delivered and the slot
/// is confirmed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_failing_for_60s_holds_the_slot_keeps_memory_flat_and_loses_nothing() {
    // Long and machine-loading: never beside another such test (see `heavy`).
    let _heavy = harness::heavy().await;
    const FAIL_500_FOR: u64 = 20;
    let started = Instant::now();
    let mut hook = Receiver::start().await;
    let db = table_db("http_outage", true).await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"json\"\nbatch = \"ndjson\"\n",
        hook.url("/cdc")
    );
    let cfg = write_cfg(&dir, &db.dsn(), "s_http_outage", &sink, CAPS);
    let mut host = start_host(&db, &cfg, "s_http_outage").await;
    let writer = Writer::start(db.dsn(), PAD_ROWS_PER_TICK, PAD, WRITE_EVERY);
    let mut reqs: Vec<Req> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while reqs.iter().map(|r| r.changes.len()).sum::<usize>() < 500 {
        assert!(
            Instant::now() < deadline,
            "no delivery:\n{}",
            host.stderr_tail(20)
        );
        assert!(host.try_exit().is_none(), "{}", host.stderr_tail(20));
        reqs.extend(hook.drain().into_iter().map(parse_request));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t0 = Instant::now();
    hook.set_default(Some(status(500)));
    let mut t1 = None;
    let outage = ride_outage(&mut host, &client, "s_http_outage", &writer, |secs| {
        if secs == FAIL_500_FOR {
            t1 = Some(Instant::now());
            hook.set_default(Some(Reply::Status {
                code: 429,
                headers: vec![("Retry-After", "1".to_owned())],
                body: "slow down".into(),
            }));
        }
        reqs.extend(hook.drain().into_iter().map(parse_request));
    })
    .await;
    let t1 = t1.unwrap();
    let t2 = Instant::now();
    hook.set_default(None);
    let last = writer.stop().await;
    let end = current_wal_lsn(&client).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        reqs.extend(hook.drain().into_iter().map(parse_request));
        let row = client
            .query_one(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&"s_http_outage", &end],
            )
            .await
            .unwrap();
        if row.get::<_, Option<bool>>(0) == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot not confirmed to {end} after recovery:\n{}",
            host.stderr_tail(30)
        );
        assert!(host.try_exit().is_none(), "{}", host.stderr_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up = t2.elapsed();
    stop_clean(&mut host).await;
    reqs.extend(hook.drain().into_iter().map(parse_request));

    // Everything delivered.
    let rows: BTreeSet<i64> = reqs
        .iter()
        .flat_map(|r| r.changes.iter().map(|c| c.1))
        .collect();
    let missing: Vec<i64> = (1..=last).filter(|i| !rows.contains(i)).take(20).collect();
    assert!(
        missing.is_empty(),
        "rows never sent (first 20): {missing:?}"
    );
    assert_eq!(rows.len() as i64, last);
    // A key always names the same body.
    let mut bodies: HashMap<&str, u64> = HashMap::new();
    for r in &reqs {
        let prev = *bodies.entry(r.key.as_str()).or_insert(r.body_hash);
        assert_eq!(
            prev, r.body_hash,
            "Idempotency-Key {} sent with two bodies",
            r.key
        );
    }
    // During the outage (leaving 1 s at its end for a reply chosen after it), the sink
    // retried one request, with one key; the first request after is that same one.
    let settled = t2 - Duration::from_secs(1);
    let during: Vec<&Req> = reqs
        .iter()
        .filter(|r| r.at >= t0 && r.at < settled)
        .collect();
    let keys: BTreeSet<&str> = during.iter().map(|r| r.key.as_str()).collect();
    assert!(
        during.len() >= 5,
        "only {} requests during the outage",
        during.len()
    );
    assert_eq!(
        keys.len(),
        1,
        "retries during the outage carried several keys: {keys:?}"
    );
    let key = *keys.first().unwrap();
    let first_after = reqs
        .iter()
        .find(|r| r.at >= settled)
        .expect("a request after the outage");
    assert_eq!(
        first_after.key, key,
        "the request delivered after the outage is the one retried during it"
    );
    // Retry-After: 1 replaced the (by then up to 30 s) backoff after each 429.
    let after_429: Vec<f64> = during
        .windows(2)
        .filter(|w| w[0].at >= t1)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    assert!(
        after_429.len() >= 3 && after_429.iter().all(|g| (0.9..10.0).contains(g)),
        "gaps after a 429 with Retry-After: 1 (s): {after_429:?}"
    );
    // Nothing confirmed past what could have been answered 2xx: everything sent before the
    // outage began at most.
    let sent_before: BTreeSet<&str> = reqs
        .iter()
        .filter(|r| r.at < t0)
        .flat_map(|r| r.changes.iter().map(|c| c.0.as_str()))
        .collect();
    let first_unacked = reqs
        .iter()
        .flat_map(|r| r.changes.iter())
        .filter(|c| !sent_before.contains(c.0.as_str()))
        .map(|c| c.2)
        .min()
        .expect("changes written during the outage");
    let max_confirmed = outage.max_confirmed();
    assert!(
        max_confirmed < first_unacked,
        "confirmed {} during the outage, past the commit {} of a change not yet acknowledged",
        lsn_text(max_confirmed),
        lsn_text(first_unacked)
    );
    let moved: BTreeSet<u64> = outage.samples.iter().map(|s| s.confirmed).collect();
    let n500 = during.iter().filter(|r| r.at < t1).count();
    eprintln!(
        "http outage: {last} rows, {} requests ({n500} answered 500, {} answered 429 → gaps {:.2}..{:.2}s), one key {key}; \
         confirmed during the outage {:?} (first unacknowledged commit {}); caught up {:.1}s after recovery; test {:.1}s",
        reqs.len(),
        during.len() - n500,
        after_429.iter().copied().fold(f64::MAX, f64::min),
        after_429.iter().copied().fold(0.0, f64::max),
        moved.iter().map(|l| lsn_text(*l)).collect::<Vec<_>>(),
        lsn_text(first_unacked),
        catch_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    outage.check_memory("http outage");
    let stderr = host.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Status updates kept flowing: the walsender never timed out on the stalled host.
    assert!(!stderr.contains(RECONNECT_LOG), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// 4. A malformed pgoutput message on the wire.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Corruption {
    /// The Insert's tag byte `'I'` becomes `'Z'`, which no protocol version uses.
    UnknownTag,
    /// The kind byte of the Insert's first column (`'t'`, text) becomes `'x'`.
    TupleKind,
}

/// Corrupts the first Insert seen once armed; remembers the LSN (XLogData WAL start).
#[derive(Default)]
struct Tampering {
    armed: AtomicBool,
    hit: Mutex<Option<u64>>,
}

impl Tampering {
    fn apply(&self, m: &mut BackendMessage, how: Corruption) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let Some((wal_start, msg)) = m.xlog_data_mut() else {
            return;
        };
        if msg.first() != Some(&b'I') {
            return;
        }
        let mut hit = self.hit.lock().unwrap();
        if hit.is_some() {
            return;
        }
        match how {
            Corruption::UnknownTag => msg[0] = b'Z',
            Corruption::TupleKind => {
                // 'I', relation oid (4), 'N', column count (2), then the first column's kind.
                assert_eq!(msg[5], b'N', "Insert layout");
                assert_eq!(msg[8], b't', "first column sent as text");
                msg[8] = b'x';
            }
        }
        *hit = Some(wal_start);
    }
}

/// Rows 1–3 stream through the tampering proxy; the first Insert after that (row 4) is
/// corrupted on the wire. The host must stop with an error naming the message and its LSN,
/// must not have confirmed the slot past it, and a host started afterwards straight against
/// Postgres must receive row 4: nothing was skipped.
async fn malformed_insert(how: Corruption, slot: &str, want: impl Fn(&str) -> String) {
    let started = Instant::now();
    let state = Arc::new(Tampering::default());
    let proxy = {
        let state = state.clone();
        Proxy::start_tampering(pg_addr(), move |m| state.apply(m, how)).await
    };
    let db = db_with(
        slot,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let stdout = "[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n";
    let cfg = write_cfg(
        &dir,
        &proxied_dsn(&db, &proxy),
        slot,
        stdout,
        "status_interval_secs = 1\n",
    );
    let mut host = start_host(&db, &cfg, slot).await;
    for i in 1..=3 {
        db.exec(&format!("INSERT INTO t VALUES ({i}, 'v{i}')"))
            .await;
    }
    wait_lines(&mut host, 3).await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();

    state.armed.store(true, Ordering::SeqCst);
    db.exec("INSERT INTO t VALUES (4, 'v4')").await;
    let st = host
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|e| panic!("the host did not stop on the malformed message: {e:#}"));
    let at = state.hit.lock().unwrap().expect("an Insert was corrupted");
    let at_text = lsn_text(at);
    let stderr = host.stderr();
    assert!(
        !st.success() && st.code().is_some(),
        "exit {st} (want a non-zero exit code, not a signal):\n{stderr}"
    );
    let expected = want(&at_text);
    assert!(
        stderr.contains(&expected),
        "want {expected:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let confirmed = confirmed_flush_lsn(&client, slot).await.unwrap();
    assert!(
        lsn(&confirmed) <= at,
        "the slot was confirmed to {confirmed}, past the malformed message at {at_text}"
    );
    let out = parse_lines(&host.stdout_lines());
    let ids: Vec<i64> = out
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [1, 2, 3],
        "nothing from the corrupted transaction is delivered"
    );
    let error_line = stderr
        .lines()
        .find(|l| l.contains("malformed pgoutput"))
        .unwrap_or_default()
        .to_owned();

    // Straight to Postgres: row 4 is still there to be streamed.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = write_cfg(&dir2, &db.dsn(), slot, stdout, "");
    let mut again = start_host(&db, &cfg2, slot).await;
    let out = wait_json(&mut again, 1).await;
    assert_eq!(out[0]["after"]["id"], 4, "{out:?}");
    stop_clean(&mut again).await;
    drop(proxy);
    eprintln!(
        "malformed ({how:?}): corrupted the Insert at {at_text}; exit {st}; slot confirmed {confirmed}; {:.1}s\n  {error_line}",
        started.elapsed().as_secs_f64()
    );
}

/// An unknown message tag. The kind cannot be named from the tag (it is no kind): the
/// error names the tag and the LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pgoutput_unknown_tag_stops_the_host_before_confirming_it() {
    malformed_insert(Corruption::UnknownTag, "s_bad_tag", |at| {
        format!("message at {at}: unknown logical replication message tag 'Z' (0x5a)")
    })
    .await;
}

/// A garbled tuple inside an Insert: the error names the Insert, its LSN and the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pgoutput_insert_tuple_stops_the_host_before_confirming_it() {
    malformed_insert(Corruption::TupleKind, "s_bad_tuple", |at| {
        format!("malformed pgoutput Insert message at {at}: Insert message: unknown tuple column kind 'x' (0x78) in column 0")
    })
    .await;
}
