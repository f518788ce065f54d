//! `raw-nats-publish`: the "what NATS itself can take" reference of `bench/sinks.sh`.
//!
//! Reads every message back from a JetStream stream (by default `CDC`, the one cdc-host
//! filled), then republishes the very same payloads, in order, into a fresh stream (`RAW`,
//! file storage, 2 min duplicate window, like the one cdc-host creates) with pipelined
//! publishes: up to `--max-in-flight` PubAcks outstanding, awaited in order, every message
//! with its `Nats-Msg-Id`. Only the publish phase is timed.
//!
//! Knobs for finding where time goes (all default to the plain reference):
//! `--headers all|id` (the source's headers, i.e. what cdc-host sent, or `Nats-Msg-Id`
//! only), `--expect-last-id` (chain `Nats-Expected-Last-Msg-Id` as cdc-host's ordering
//! check does), `--batch N` (wait for every ack each N messages, as cdc-host's sink does
//! at the end of each pipeline batch).
//!
//! Prints `key=value` lines on stdout (for the script); progress on stderr.
//! `--info-only` prints the message count of `--source-stream` and exits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, message::PublishMessage};
use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Headers {
    /// The headers the source message carried (cdc-host's: Nats-Msg-Id, Cdc-Op,
    /// Cdc-Table, Cdc-Lsn, Cdc-Commit-Lsn), minus any Nats-Expected-*.
    All,
    /// Only Nats-Msg-Id (the source's).
    Id,
}

#[derive(Debug, Parser)]
#[command(
    about = "Republish a JetStream stream's messages into a fresh stream, pipelined, and time it"
)]
struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Stream to read the payloads (and headers) from.
    #[arg(long, default_value = "CDC")]
    source_stream: String,
    /// Fail unless the source stream holds exactly this many messages.
    #[arg(long)]
    expect: Option<u64>,
    /// Print the source stream's message count and exit.
    #[arg(long)]
    info_only: bool,
    /// Stream to publish into (deleted first if it exists, then created).
    #[arg(long, default_value = "RAW")]
    stream: String,
    /// Subject to publish on (the created stream listens on `<first token>.>`).
    #[arg(long, default_value = "raw.public.bench")]
    subject: String,
    /// PubAcks outstanding at most (cdc-host's NATS sink uses 1024).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    #[arg(long, value_enum, default_value_t = Headers::All)]
    headers: Headers,
    /// Chain Nats-Expected-Last-Msg-Id (the previous message's id) as cdc-host does.
    #[arg(long)]
    expect_last_id: bool,
    /// Wait for every outstanding ack each N messages (0: never, a pure pipeline).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Duplicate window of the created stream, seconds (cdc-host's default: 120).
    #[arg(long, default_value_t = 120)]
    duplicate_window_secs: u64,
    /// Also report the CPU seconds this process (the nats-server) used while publishing.
    #[arg(long)]
    server_pid: Option<u32>,
    /// PubAck timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    ack_timeout_ms: u64,
}

struct Item {
    id: String,
    headers: HeaderMap,
    payload: Bytes,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let max_in_flight = args.max_in_flight.max(1);
    let ack_timeout = Duration::from_millis(args.ack_timeout_ms);
    // The same client/context settings as cdc-host's NATS sink.
    let client = async_nats::ConnectOptions::new()
        .name("raw-nats-publish")
        .request_timeout(Some(ack_timeout))
        .client_capacity(max_in_flight.saturating_mul(2).max(2048))
        .connect(args.url.as_str())
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(ack_timeout)
        .ack_timeout(ack_timeout)
        .max_ack_inflight(max_in_flight.saturating_mul(4).max(64))
        .backpressure_on_inflight(true)
        .build(client.clone());

    let mut source = js
        .get_stream(&args.source_stream)
        .await
        .with_context(|| format!("stream {}", args.source_stream))?;
    let state = source.info().await?.state.clone();
    println!("source_stream={}", args.source_stream);
    println!("source_messages={}", state.messages);
    println!("source_bytes={}", state.bytes);
    if let Some(want) = args.expect {
        if state.messages != want {
            bail!(
                "stream {} holds {} messages, expected {want}",
                args.source_stream,
                state.messages
            );
        }
    }
    if args.info_only {
        return Ok(());
    }
    if state.messages == 0 {
        bail!("stream {} is empty", args.source_stream);
    }

    // --- read back -------------------------------------------------------------
    let t = Instant::now();
    let consumer = source
        .create_consumer(OrderedConfig::default())
        .await
        .context("creating an ordered consumer")?;
    let mut messages = consumer.messages().await?;
    let total = usize::try_from(state.messages)?;
    let mut items = Vec::with_capacity(total);
    let mut payload_bytes = 0usize;
    while items.len() < total {
        let m = match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
            Ok(Some(m)) => m.context("reading the source stream")?,
            Ok(None) => break,
            Err(_) => bail!("no message for 30 s after {} of {total}", items.len()),
        };
        let mut headers = HeaderMap::new();
        let mut id = String::new();
        if let Some(h) = &m.headers {
            for (name, values) in h.iter() {
                let n: &str = name.as_ref();
                if n.len() >= 13 && n[..13].eq_ignore_ascii_case("nats-expected") {
                    continue;
                }
                let is_id = n.eq_ignore_ascii_case("nats-msg-id");
                if is_id {
                    id = values
                        .last()
                        .map(|v| AsRef::<str>::as_ref(v).to_owned())
                        .unwrap_or_default();
                }
                if args.headers == Headers::All || is_id {
                    for v in values {
                        headers.append(name.clone(), v.clone());
                    }
                }
            }
        }
        if id.is_empty() {
            // Not a cdc-host stream: make up unique ids.
            id = format!("raw-{}", items.len());
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        payload_bytes += m.payload.len();
        items.push(Item {
            id,
            headers,
            payload: m.payload.clone(),
        });
    }
    drop(messages);
    if items.len() != total {
        bail!("read {} of {total} messages back", items.len());
    }
    let header_bytes: usize = items
        .iter()
        .map(|i| {
            i.headers
                .iter()
                .map(|(k, vs)| {
                    let k: &str = k.as_ref();
                    vs.iter()
                        .map(|v| k.len() + AsRef::<str>::as_ref(v).len() + 4)
                        .sum::<usize>()
                })
                .sum::<usize>()
        })
        .sum();
    eprintln!(
        "raw-nats-publish: read {total} messages back in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    println!("readback_s={:.3}", t.elapsed().as_secs_f64());
    println!(
        "avg_payload_bytes={:.1}",
        payload_bytes as f64 / total as f64
    );
    println!("avg_header_bytes={:.1}", header_bytes as f64 / total as f64);

    // --- target stream -----------------------------------------------------------
    let _ = js.delete_stream(&args.stream).await;
    let first = args.subject.split('.').next().unwrap_or("raw");
    js.create_stream(jetstream::stream::Config {
        name: args.stream.clone(),
        subjects: vec![format!("{first}.>")],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(args.duplicate_window_secs),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {}", args.stream))?;

    // --- publish ---------------------------------------------------------------------
    let subject = Subject::from(args.subject.as_str());
    let server_stat = args.server_pid.map(|p| format!("/proc/{p}/stat"));
    let server0 = server_stat.as_deref().map(cpu_seconds_of);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut pending = VecDeque::with_capacity(max_in_flight);
    let mut next = 0usize;
    let mut acked = 0usize;
    let mut duplicates = 0usize;
    let mut previous: Option<&str> = None;
    let mut barrier = if args.batch == 0 {
        usize::MAX
    } else {
        args.batch
    };
    while acked < total {
        while next < total && next < barrier && pending.len() < max_in_flight {
            let item = &items[next];
            let mut headers = item.headers.clone();
            if args.expect_last_id {
                // cdc-host starts the chain afresh with each batch it delivers.
                if args.batch > 0 && next.is_multiple_of(args.batch) {
                    previous = None;
                }
                if let Some(prev) = previous {
                    headers.insert("Nats-Expected-Last-Msg-Id", HeaderValue::from(prev));
                }
                previous = Some(item.id.as_str());
            }
            let publish = PublishMessage::build()
                .payload(item.payload.clone())
                .headers(headers);
            let ack = js
                .send_publish(subject.clone(), publish)
                .await
                .with_context(|| format!("publishing message {next}"))?;
            pending.push_back(ack);
            next += 1;
        }
        let Some(ack) = pending.pop_front() else {
            break;
        };
        let ack = ack
            .await
            .with_context(|| format!("PubAck of message {acked}"))?;
        duplicates += usize::from(ack.duplicate);
        acked += 1;
        if acked == barrier {
            barrier = barrier.saturating_add(args.batch);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let server_cpu = server_stat
        .as_deref()
        .map(cpu_seconds_of)
        .zip(server0)
        .map(|(b, a)| b - a);

    let mut target = js.get_stream(&args.stream).await?;
    let stored = target.info().await?.state.messages;
    println!("messages={total}");
    println!("duplicates={duplicates}");
    println!("raw_stream_messages={stored}");
    println!("publish_wall_s={wall:.3}");
    println!("publish_cpu_s={cpu:.2}");
    println!("msgs_per_s={:.0}", total as f64 / wall);
    if let Some(c) = server_cpu {
        println!("server_publish_cpu_s={c:.2}");
    }
    println!("peak_rss_mb={:.1}", peak_rss_mb());
    eprintln!(
        "raw-nats-publish: {total} messages in {wall:.2}s ({:.0}/s), {cpu:.2} CPU s, stream {} holds {stored}",
        total as f64 / wall,
        args.stream
    );
    if stored != total as u64 {
        bail!(
            "stream {} holds {stored} messages, published {total}",
            args.stream
        );
    }
    let _ = js.delete_stream(&args.stream).await;
    drop(items);
    Ok(())
}

/// User + system CPU seconds of this process so far (from /proc; USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file (NaN if unreadable).
fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    // After "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

/// VmHWM (peak resident set) of this process, MiB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
