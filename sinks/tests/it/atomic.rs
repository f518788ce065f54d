//! `[sinks.jetstream] atomic = "transaction"`: each transaction one JetStream atomic batch
//! (ADR-50), against the pinned nats-server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use cdc_sinks::nats::{Atomic, JetStreamOptions, NatsOptions, NatsSink};
use cdc_sinks::{EncodedBatch, Message, Sink, SinkError};
use cdc_test_harness::nats_server::NatsServer;
use futures_util::StreamExt;

const STEP: Duration = Duration::from_secs(60);

/// Change `ordinal` of the transaction committed at `0/<txn>`.
fn change(txn: u64, ordinal: u64) -> Message {
    Message {
        id: format!("{txn:016X}-{ordinal:08X}").into(),
        schema: Some("public".into()),
        table: Some("orders".into()),
        op: "insert",
        lsn: format!("0/{:X}", txn * 0x10000 + ordinal).into(),
        commit_lsn: format!("0/{txn:X}").into(),
        route: None,
        headers: Vec::new(),
        payload: Bytes::from(format!("{{\"txn\":{txn},\"n\":{ordinal}}}")),
    }
}

/// A batch of whole transactions `(txn, changes)`.
fn txns(seq: u64, list: &[(u64, u64)]) -> Arc<EncodedBatch> {
    Arc::new(EncodedBatch {
        seq,
        messages: list
            .iter()
            .flat_map(|&(t, n)| (0..n).map(move |i| change(t, i)))
            .collect(),
        continues: false,
        lines: None,
    })
}

fn atomic_options(url: &str, stream: &str) -> NatsOptions {
    let mut opts = NatsOptions::new("nats-atomic", url);
    let mut js = JetStreamOptions::new(stream);
    js.atomic = Atomic::Transaction;
    opts.jetstream = Some(js);
    opts
}

fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cdc_sinks=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init()
        .ok();
}

async fn try_connect(opts: NatsOptions) -> Result<NatsSink, SinkError> {
    logs();
    tokio::time::timeout(STEP, NatsSink::connect(opts))
        .await
        .expect("connect timed out")
}

async fn deliver(sink: &mut NatsSink, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
    tokio::time::timeout(STEP, sink.deliver(batch))
        .await
        .expect("deliver timed out")
}

/// A stored message's headers, as a consumer reads them.
#[derive(Debug)]
struct Seen {
    id: String,
    commit_lsn: String,
    batch_id: Option<String>,
    batch_seq: Option<u64>,
    commit: bool,
    chunk: Option<u32>,
    last: Option<bool>,
    expected_last: bool,
}

/// Every message of `stream`, read by a pull consumer from the start.
async fn consume(url: &str, stream: &str) -> Vec<Seen> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let total = s.info().await.unwrap().state.messages as usize;
    let consumer = s
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total);
    let mut messages = consumer.messages().await.unwrap();
    while out.len() < total {
        let m = tokio::time::timeout(STEP, messages.next())
            .await
            .expect("consumer stalled")
            .unwrap()
            .unwrap();
        let h = m.headers.as_ref().expect("headers");
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
        out.push(Seen {
            id: get("Nats-Msg-Id").unwrap(),
            commit_lsn: get("Cdc-Commit-Lsn").unwrap(),
            batch_id: get("Nats-Batch-Id"),
            batch_seq: get("Nats-Batch-Sequence").map(|v| v.parse().unwrap()),
            commit: get("Nats-Batch-Commit").as_deref() == Some("1"),
            chunk: get("Cdc-Txn-Chunk").map(|v| v.parse().unwrap()),
            last: get("Cdc-Txn-Last").map(|v| v == "true"),
            expected_last: h.get("Nats-Expected-Last-Msg-Id").is_some(),
        });
    }
    out
}

/// The stored messages grouped by `Nats-Batch-Id`, in order; each group checked to be one
/// well-formed atomic batch (sequence 1..n, the commit on the last).
fn batches(seen: &[Seen]) -> Vec<&[Seen]> {
    let mut out: Vec<&[Seen]> = Vec::new();
    let mut start = 0;
    for i in 1..=seen.len() {
        if i == seen.len() || seen[i].batch_id != seen[start].batch_id {
            let group = &seen[start..i];
            let id = group[0].batch_id.as_deref().expect("a batch id");
            for (k, s) in group.iter().enumerate() {
                assert_eq!(s.batch_seq, Some(k as u64 + 1), "batch {id}: {s:?}");
                assert_eq!(s.commit, k + 1 == group.len(), "batch {id}: {s:?}");
                assert!(!s.expected_last, "no ordering header in a batch: {s:?}");
                assert_eq!(s.chunk, group[0].chunk, "one chunk index per batch");
                assert_eq!(s.last, group[0].last, "one Cdc-Txn-Last per batch");
            }
            out.push(group);
            start = i;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transaction_is_one_atomic_batch() {
    let server = NatsServer::start(&[]);
    let mut sink = try_connect(atomic_options(&server.url(), "CDC"))
        .await
        .unwrap();
    let sizes = [(0x100, 3), (0x200, 1), (0x300, 7), (0x400, 250)];
    deliver(&mut sink, txns(1, &sizes)).await.unwrap();
    deliver(&mut sink, txns(2, &[(0x500, 2)])).await.unwrap();

    // The stream cdc-host created allows atomic batches.
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let info = js
        .get_stream("CDC")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert!(info.config.allow_atomic_publish, "{:?}", info.config);

    let seen = consume(&server.url(), "CDC").await;
    let want: Vec<String> = sizes
        .iter()
        .chain(&[(0x500, 2)])
        .flat_map(|&(t, n)| (0..n).map(move |i| change(t, i).id.to_string()))
        .collect();
    assert_eq!(seen.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), want);
    let groups = batches(&seen);
    assert_eq!(groups.len(), 5, "one batch per transaction");
    let mut ids = HashSet::new();
    for (g, &(t, n)) in groups.iter().zip(sizes.iter().chain(&[(0x500, 2)])) {
        assert_eq!(g.len() as u64, n);
        assert!(g.iter().all(|s| s.commit_lsn == format!("0/{t:X}")));
        assert_eq!(g[0].chunk, Some(0));
        assert_eq!(g[0].last, Some(true));
        assert!(ids.insert(g[0].batch_id.clone()), "batch ids are unique");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_the_limit_goes_out_as_ordered_atomic_chunks() {
    let server = NatsServer::start(&[]);
    let mut sink = try_connect(atomic_options(&server.url(), "CDC"))
        .await
        .unwrap();
    // 2,500 changes: over the server's 1,000 per batch (the default atomic_max_batch).
    deliver(&mut sink, txns(1, &[(0x100, 2), (0x200, 2500), (0x300, 1)]))
        .await
        .unwrap();
    // A transaction the pipeline split across batches (`continues`): chunks go on.
    let mut first = (*txns(2, &[(0x400, 1), (0x500, 600)])).clone();
    first.continues = true;
    deliver(&mut sink, Arc::new(first)).await.unwrap();
    let rest = Arc::new(EncodedBatch {
        seq: 3,
        messages: (600..1200)
            .map(|i| change(0x500, i))
            .chain((0..2).map(|i| change(0x600, i)))
            .collect(),
        continues: false,
        lines: None,
    });
    deliver(&mut sink, rest).await.unwrap();

    let seen = consume(&server.url(), "CDC").await;
    assert_eq!(seen.len(), 2 + 2500 + 1 + 1 + 1200 + 2);
    let shape: Vec<(String, usize, u32, bool)> = batches(&seen)
        .iter()
        .map(|g| {
            (
                g[0].commit_lsn.clone(),
                g.len(),
                g[0].chunk.unwrap(),
                g[0].last.unwrap(),
            )
        })
        .collect();
    let want = [
        ("0/100", 2, 0, true),
        ("0/200", 1000, 0, false),
        ("0/200", 1000, 1, false),
        ("0/200", 500, 2, true),
        ("0/300", 1, 0, true),
        ("0/400", 1, 0, true),
        ("0/500", 600, 0, false),
        ("0/500", 600, 1, true),
        ("0/600", 2, 0, true),
    ];
    let want: Vec<(String, usize, u32, bool)> = want
        .iter()
        .map(|&(l, n, c, last)| (l.to_string(), n, c, last))
        .collect();
    assert_eq!(shape, want);
    let ids: Vec<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in commit order");

    // More than the server takes per batch: a clear error naming both limits.
    let mut opts = atomic_options(&server.url(), "CDC");
    opts.jetstream.as_mut().unwrap().atomic_max_batch = 1500;
    let mut big = try_connect(opts).await.unwrap();
    let e = deliver(&mut big, txns(4, &[(0x700, 1200)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("atomic_max_batch = 1500") && e.contains("max_msgs"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_batch_limit_can_be_raised() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        "jetstream {\n  limits {\n    batch {\n      max_msgs: 3000\n    }\n  }\n}\n",
    )
    .unwrap();
    let server = NatsServer::start(&["-c", conf.to_str().unwrap()]);
    let mut opts = atomic_options(&server.url(), "CDC");
    opts.jetstream.as_mut().unwrap().atomic_max_batch = 3000;
    let mut sink = try_connect(opts).await.unwrap();
    deliver(&mut sink, txns(1, &[(0x100, 2500)])).await.unwrap();
    let seen = consume(&server.url(), "CDC").await;
    let groups = batches(&seen);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].len(), 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_atomic_batches_are_stored_once_in_order() {
    let server = NatsServer::start(&[]);
    let url = server.url();
    let mut sink = try_connect(atomic_options(&url, "CDC")).await.unwrap();
    let b1 = txns(1, &[(0x100, 3), (0x200, 1500), (0x300, 2)]);
    deliver(&mut sink, b1.clone()).await.unwrap();
    // A replay after a crash: a new sink (connection), the same ids; the stream refuses
    // each batch for its duplicates, the sink then lets it drop them one by one.
    let mut replay = try_connect(atomic_options(&url, "CDC")).await.unwrap();
    deliver(&mut replay, b1.clone()).await.unwrap();
    // Overlapping: one old transaction, then new ones.
    deliver(&mut replay, txns(2, &[(0x300, 2), (0x400, 5), (0x500, 1)]))
        .await
        .unwrap();
    deliver(&mut sink, txns(2, &[(0x600, 4)])).await.unwrap();

    let seen = consume(&url, "CDC").await;
    let got: Vec<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let want: Vec<String> = [
        (0x100, 3),
        (0x200, 1500),
        (0x300, 2),
        (0x400, 5),
        (0x500, 1),
        (0x600, 4),
    ]
    .iter()
    .flat_map(|&(t, n)| (0..n).map(move |i| change(t, i).id.to_string()))
    .collect();
    assert_eq!(got, want);
    // Everything still went out in atomic batches (the replays stored nothing).
    assert_eq!(batches(&seen).len(), 1 + 2 + 1 + 1 + 1 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_without_atomic_batches_is_a_clear_error() {
    let server = NatsServer::start(&[]);
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: "PLAIN".into(),
        subjects: vec!["cdc.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = try_connect(atomic_options(&server.url(), "PLAIN"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not allow atomic batches")
            && e.contains("nats stream edit PLAIN --allow-batch"),
        "{e}"
    );
    // Allowed, it works.
    let mut config = js
        .get_stream("PLAIN")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.allow_atomic_publish = true;
    js.update_stream(config).await.unwrap();
    let mut sink = try_connect(atomic_options(&server.url(), "PLAIN"))
        .await
        .unwrap();
    deliver(&mut sink, txns(1, &[(0x100, 3)])).await.unwrap();
    assert_eq!(batches(&consume(&server.url(), "PLAIN").await).len(), 1);
}

/// The server killed while transactions are published as atomic batches, back ~2 s later:
/// every change once, in order, and every stored message inside a whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_publish_leaves_whole_batches_once_in_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const TXNS: u64 = 3000;
    let server = Arc::new(Mutex::new(NatsServer::start(&[])));
    let url = server.lock().unwrap().url();
    let mut opts = atomic_options(&url, "CDC");
    opts.ack_timeout = Duration::from_secs(2);
    let mut sink = try_connect(opts).await.unwrap();
    // Transactions of 1 to 12 changes, and every 500th one of 1,200 (two chunks).
    let list: Vec<(u64, u64)> = (1..=TXNS)
        .map(|t| (t, if t % 500 == 250 { 1200 } else { 1 + t % 12 }))
        .collect();
    let total: u64 = list.iter().map(|(_, n)| n).sum();
    let restarted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let server = server.clone();
        let restarted = restarted.clone();
        let js = jetstream::new(async_nats::connect(url.clone()).await.unwrap());
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + STEP;
            loop {
                let n = match js.get_stream("CDC").await {
                    Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                    Err(_) => 0,
                };
                if n >= total / 3 {
                    server.lock().unwrap().kill();
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "nothing landed");
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
    deliver(&mut sink, txns(1, &list)).await.unwrap();
    assert!(
        restarted.load(Ordering::SeqCst),
        "delivered before the restart"
    );
    tokio::time::timeout(STEP, watcher).await.unwrap().unwrap();
    deliver(&mut sink, txns(2, &[(TXNS + 1, 3)])).await.unwrap();

    let seen = consume(&url, "CDC").await;
    let got: Vec<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let want: Vec<String> = list
        .iter()
        .chain(&[(TXNS + 1, 3)])
        .flat_map(|&(t, n)| (0..n).map(move |i| change(t, i).id.to_string()))
        .collect();
    assert_eq!(got.len(), want.len(), "lost or duplicated changes");
    assert_eq!(got, want, "every change once, in order");
    // Whole batches: per transaction, chunks 0.. with the last one marked.
    let groups = batches(&seen);
    let mut k = 0;
    for &(t, n) in list.iter().chain(&[(TXNS + 1, 3)]) {
        let chunks = if n > 1000 {
            vec![1000, n as usize - 1000]
        } else {
            vec![n as usize]
        };
        for (c, size) in chunks.iter().enumerate() {
            let g = groups[k];
            assert_eq!(g[0].commit_lsn, format!("0/{t:X}"));
            assert_eq!(
                (g.len(), g[0].chunk, g[0].last),
                (*size, Some(c as u32), Some(c + 1 == chunks.len())),
                "transaction {t:X}"
            );
            k += 1;
        }
    }
    assert_eq!(k, groups.len());
}
