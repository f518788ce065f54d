//! `raw-nats-publish`: the "what NATS itself can take" reference of `bench/sinks.sh`.
//!
//! Reads every message back from a JetStream stream (by default `CDC`, the one cdc-host
//! filled), then republishes the very same messages (payloads and headers as stored), in
//! order, into a fresh stream (`RAW`, file storage, 2 min duplicate window, like the one
//! cdc-host creates) with pipelined publishes: up to `--max-in-flight` PubAcks
//! outstanding, awaited in order. Only the publish phase is timed.
//!
//! The stored headers are what cdc-host sent: `Nats-Msg-Id`, the `Cdc-*` headers and, on
//! every message but the first of each delivery, its ordering check
//! `Nats-Expected-Last-Msg-Id` (the previous message's id). Replayed in the same order
//! into an empty stream, that chain holds again, so the server does the same work per
//! message for both publishers.
//!
//! Knobs for finding where time goes: `--headers no-expect` (drop `Nats-Expected-*`: a
//! publisher without cdc-host's ordering check), `--headers id` (only `Nats-Msg-Id`),
//! `--expect-last-id` (chain `Nats-Expected-Last-Msg-Id` afresh on every message but the
//! first of each `--batch`), `--batch N` (wait for every ack each N messages, as
//! cdc-host's sink does at the end of each pipeline batch), `--acks inbox` (PubAcks on one
//! wildcard subscription, matched by reply token, as cdc-host's sink takes them, instead
//! of async-nats's JetStream API with its per-publish request machinery).
//!
//! Clusters: `--url` takes comma-separated seed servers (as cdc-host's does); `--replicas 3`
//! creates the target stream with three replicas, like cdc-host's `[sinks.jetstream]
//! replicas = 3`, so both publishers pay for the same replication; `--wait-jetstream`
//! only waits until JetStream answers (a cluster's meta leader is elected) and exits.
//!
//! Prints `key=value` lines on stdout (for the script); progress on stderr.
//! `--info-only` prints the message count of `--source-stream` and exits.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, message::PublishMessage};
use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Headers {
    /// The headers the source message carried, as stored (cdc-host's: Nats-Msg-Id,
    /// Cdc-Op, Cdc-Table, Cdc-Lsn, Cdc-Commit-Lsn, Nats-Expected-Last-Msg-Id).
    All,
    /// The source's headers minus any `Nats-Expected-*` (no ordering check).
    NoExpect,
    /// Only Nats-Msg-Id (the source's).
    Id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Acks {
    /// `jetstream::Context::send_publish`: how an application publishes with async-nats.
    Api,
    /// `publish_with_reply_and_headers` to `<inbox>.<n>`, the PubAcks read from one
    /// `<inbox>.*` subscription (cdc-host's way).
    Inbox,
}

#[derive(Debug, Parser)]
#[command(
    about = "Republish a JetStream stream's messages into a fresh stream, pipelined, and time it"
)]
struct Args {
    /// NATS server URL, or several seed servers comma-separated.
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
    /// How PubAcks are requested and awaited.
    #[arg(long, value_enum, default_value_t = Acks::Api)]
    acks: Acks,
    /// Set Nats-Expected-Last-Msg-Id to the previous message's id on every message but the
    /// first of each `--batch` (replacing a stored one).
    #[arg(long)]
    expect_last_id: bool,
    /// Wait for every outstanding ack each N messages (0: never, a pure pipeline).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Duplicate window of the created stream, seconds (cdc-host's default: 120).
    #[arg(long, default_value_t = 120)]
    duplicate_window_secs: u64,
    /// Replicas of the created stream (3 on a 3-node cluster, as cdc-host's `replicas`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    replicas: u16,
    /// Only wait (up to this many seconds) until JetStream answers an account info request
    /// (on a fresh cluster: once a meta leader is elected), then exit.
    #[arg(long)]
    wait_jetstream: Option<u64>,
    /// Also report the CPU seconds these processes (the nats-servers, comma-separated pids)
    /// used while publishing, summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Read the messages from this file (written by `--dump`) instead of a stream.
    #[arg(long, conflicts_with = "dump")]
    from_file: Option<PathBuf>,
    /// Read the source stream, write its messages to this file and exit: the publish can
    /// then run against a fresh server (`--from-file`), as cdc-host's did.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// PubAck timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    ack_timeout_ms: u64,
}

/// A message as read back: its headers and payload.
struct Raw {
    headers: Vec<(String, String)>,
    payload: Bytes,
}

struct Item {
    id: String,
    headers: HeaderMap,
    payload: Bytes,
}

// The allocator cdc-host uses: the comparison is about the pipeline, not malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        .connect(servers(&args.url)?)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(ack_timeout)
        .ack_timeout(ack_timeout)
        .max_ack_inflight(max_in_flight.saturating_mul(4).max(64))
        .backpressure_on_inflight(true)
        .build(client.clone());

    if let Some(secs) = args.wait_jetstream {
        return wait_jetstream(&js, Duration::from_secs(secs)).await;
    }

    let t = Instant::now();
    let raws = match &args.from_file {
        Some(path) => {
            let raws = read_dump(path).with_context(|| format!("reading {}", path.display()))?;
            println!("source_messages={}", raws.len());
            raws
        }
        None => match read_stream(&js, &args).await? {
            Some(raws) => raws,
            None => return Ok(()), // --info-only
        },
    };
    if let Some(want) = args.expect {
        if raws.len() as u64 != want {
            bail!("the source holds {} messages, expected {want}", raws.len());
        }
    }
    if raws.is_empty() {
        bail!("the source holds no message");
    }
    if let Some(path) = &args.dump {
        write_dump(path, &raws).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "raw-nats-publish: wrote {} messages to {} in {:.2}s",
            raws.len(),
            path.display(),
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let total = raws.len();
    let mut payload_bytes = 0usize;
    let mut header_bytes = 0usize;
    let mut items = Vec::with_capacity(total);
    for (i, raw) in raws.into_iter().enumerate() {
        let mut headers = HeaderMap::new();
        let mut id = String::new();
        for (name, value) in &raw.headers {
            let is_id = name.eq_ignore_ascii_case("nats-msg-id");
            if is_id {
                id.clone_from(value);
            }
            let is_expect = name.len() >= 13 && name[..13].eq_ignore_ascii_case("nats-expected");
            let keep = match args.headers {
                Headers::All => true,
                Headers::NoExpect => !is_expect,
                Headers::Id => is_id,
            };
            if keep {
                headers.append(name.as_str(), value.as_str());
                header_bytes += name.len() + value.len() + 4;
            }
        }
        if id.is_empty() {
            // Not a cdc-host stream: make up unique ids.
            id = format!("raw-{i}");
            header_bytes += "Nats-Msg-Id".len() + id.len() + 4;
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        payload_bytes += raw.payload.len();
        items.push(Item {
            id,
            headers,
            payload: raw.payload,
        });
    }
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
    let created = Instant::now();
    js.create_stream(jetstream::stream::Config {
        name: args.stream.clone(),
        subjects: vec![format!("{first}.>")],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(args.duplicate_window_secs),
        num_replicas: usize::from(args.replicas),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {}", args.stream))?;
    // Not in the publish phase; on a cluster an R3 stream's creation (its own Raft group and
    // leader election) is a noticeable share of a short run, which cdc-host's timed run
    // includes: the script reports both.
    println!("create_stream_s={:.3}", created.elapsed().as_secs_f64());

    // --- publish ---------------------------------------------------------------------
    // Start with no dirty pages of earlier phases waiting to be written back (the script
    // does the same before cdc-host's run).
    let _ = std::process::Command::new("sync").status();
    let subject = Subject::from(args.subject.as_str());
    let server_stats: Vec<String> = args
        .server_pid
        .iter()
        .map(|p| format!("/proc/{p}/stat"))
        .collect();
    let servers_cpu = || -> Option<f64> {
        (!server_stats.is_empty()).then(|| server_stats.iter().map(|p| cpu_seconds_of(p)).sum())
    };
    let server0 = servers_cpu();
    let cpu0 = cpu_seconds();
    let machine0 = machine_ticks();
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
    let inbox = client.new_inbox();
    let mut ack_sub = match args.acks {
        Acks::Inbox => Some(
            client
                .subscribe(format!("{inbox}.*"))
                .await
                .context("subscribing to the PubAck inbox")?,
        ),
        Acks::Api => None,
    };
    let mut in_flight = 0usize;
    while acked < total {
        while next < total && next < barrier && in_flight < max_in_flight {
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
            match args.acks {
                Acks::Api => {
                    let publish = PublishMessage::build()
                        .payload(item.payload.clone())
                        .headers(headers);
                    let ack = js
                        .send_publish(subject.clone(), publish)
                        .await
                        .with_context(|| format!("publishing message {next}"))?;
                    pending.push_back(ack);
                }
                Acks::Inbox => client
                    .publish_with_reply_and_headers(
                        subject.clone(),
                        format!("{inbox}.{next}"),
                        headers,
                        item.payload.clone(),
                    )
                    .await
                    .with_context(|| format!("publishing message {next}"))?,
            }
            in_flight += 1;
            next += 1;
        }
        if in_flight == 0 {
            break;
        }
        let duplicate = match ack_sub.as_mut() {
            None => {
                let Some(ack) = pending.pop_front() else {
                    bail!("no PubAck pending for message {acked}");
                };
                ack.await
                    .with_context(|| format!("PubAck of message {acked}"))?
                    .duplicate
            }
            Some(sub) => {
                let m = tokio::time::timeout(ack_timeout, sub.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("no PubAck for {ack_timeout:?}"))?
                    .context("the PubAck subscription ended")?;
                inbox_ack(&m).with_context(|| format!("PubAck on {}", m.subject))?
            }
        };
        in_flight -= 1;
        duplicates += usize::from(duplicate);
        acked += 1;
        if acked == barrier {
            barrier = barrier.saturating_add(args.batch);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let machine1 = machine_ticks();
    let server_cpu = servers_cpu().zip(server0).map(|(b, a)| b - a);

    let mut target = js.get_stream(&args.stream).await?;
    let info = target.info().await?;
    let (stored, replicas) = (info.state.messages, info.config.num_replicas);
    println!("messages={total}");
    println!("replicas={replicas}");
    println!("duplicates={duplicates}");
    println!("raw_stream_messages={stored}");
    println!("publish_wall_s={wall:.3}");
    println!("publish_cpu_s={cpu:.2}");
    println!("msgs_per_s={:.0}", total as f64 / wall);
    if let Some(c) = server_cpu {
        println!("server_publish_cpu_s={c:.2}");
    }
    if let (Some(m0), Some(m1)) = (machine0, machine1) {
        if m1.total > m0.total {
            let pct = |a: u64, b: u64| 100.0 * (b - a) as f64 / (m1.total - m0.total) as f64;
            println!("machine_busy_pct={:.1}", pct(m0.busy, m1.busy));
            println!("machine_steal_pct={:.1}", pct(m0.steal, m1.steal));
        }
    }
    println!("peak_rss_mb={:.1}", peak_rss_mb());
    eprintln!(
        "raw-nats-publish: {total} messages in {wall:.2}s ({:.0}/s), {cpu:.2} CPU s, stream {} holds {stored}",
        total as f64 / wall,
        args.stream
    );
    if replicas != usize::from(args.replicas) {
        bail!(
            "stream {} has {replicas} replicas, asked for {}",
            args.stream,
            args.replicas
        );
    }
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

/// `--url`'s comma-separated seed servers (async-nats parses a `&str` as one address).
fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().with_context(|| format!("server url {u:?}")))
        .collect()
}

/// `--wait-jetstream`: polls account info until JetStream answers or `limit` passes.
async fn wait_jetstream(js: &jetstream::Context, limit: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        // Asked again every 250 ms: a request sent before the meta leader was elected gets
        // no answer (it would wait out the whole request timeout).
        match tokio::time::timeout(Duration::from_millis(250), js.query_account()).await {
            Ok(Ok(_)) => {
                println!("jetstream_ready_s={:.3}", t.elapsed().as_secs_f64());
                return Ok(());
            }
            Ok(Err(e)) if t.elapsed() >= limit => {
                bail!("JetStream did not answer in {limit:?}: {e}")
            }
            Err(_) if t.elapsed() >= limit => bail!("JetStream did not answer in {limit:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The `duplicate` flag of a PubAck read from the inbox subscription; an error otherwise.
fn inbox_ack(m: &async_nats::Message) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct PubAck {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        duplicate: bool,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        bail!("no responders: no stream listens on the subject");
    }
    let ack: PubAck = serde_json::from_slice(&m.payload).context("not a PubAck")?;
    if let Some(e) = ack.error {
        bail!("JetStream error: {e}");
    }
    if ack.stream.is_none() {
        bail!("a PubAck without a stream");
    }
    Ok(ack.duplicate)
}

/// Reads the source stream back in order (an ordered consumer). `None` with `--info-only`.
async fn read_stream(js: &jetstream::Context, args: &Args) -> Result<Option<Vec<Raw>>> {
    let mut source = js
        .get_stream(&args.source_stream)
        .await
        .with_context(|| format!("stream {}", args.source_stream))?;
    let state = source.info().await?.state.clone();
    println!("source_stream={}", args.source_stream);
    println!("source_messages={}", state.messages);
    println!("source_bytes={}", state.bytes);
    println!(
        "source_replicas={}",
        source.cached_info().config.num_replicas
    );
    if args.info_only {
        return Ok(None);
    }
    let consumer = source
        .create_consumer(OrderedConfig::default())
        .await
        .context("creating an ordered consumer")?;
    let mut messages = consumer.messages().await?;
    let total = usize::try_from(state.messages)?;
    let mut raws = Vec::with_capacity(total);
    while raws.len() < total {
        let m = match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
            Ok(Some(m)) => m.context("reading the source stream")?,
            Ok(None) => break,
            Err(_) => bail!("no message for 30 s after {} of {total}", raws.len()),
        };
        let mut headers = Vec::new();
        if let Some(h) = &m.headers {
            for (name, values) in h.iter() {
                let n: &str = name.as_ref();
                for v in values {
                    headers.push((n.to_owned(), AsRef::<str>::as_ref(v).to_owned()));
                }
            }
        }
        raws.push(Raw {
            headers,
            payload: m.payload.clone(),
        });
    }
    if raws.len() != total {
        bail!("read {} of {total} messages back", raws.len());
    }
    Ok(Some(raws))
}

/// `--dump` format: per message, u32 header count, per header u32 name length, name, u32
/// value length, value; then u32 payload length, payload (little endian).
fn write_dump(path: &Path, raws: &[Raw]) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let field = |w: &mut BufWriter<std::fs::File>, b: &[u8]| -> Result<()> {
        w.write_all(&u32::try_from(b.len())?.to_le_bytes())?;
        w.write_all(b)?;
        Ok(())
    };
    for raw in raws {
        w.write_all(&u32::try_from(raw.headers.len())?.to_le_bytes())?;
        for (name, value) in &raw.headers {
            field(&mut w, name.as_bytes())?;
            field(&mut w, value.as_bytes())?;
        }
        field(&mut w, &raw.payload)?;
    }
    w.into_inner()?.sync_all()?;
    Ok(())
}

fn read_dump(path: &Path) -> Result<Vec<Raw>> {
    let mut r = BufReader::new(std::fs::File::open(path)?);
    fn u32_of(r: &mut impl Read) -> std::io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        match r.read_exact(&mut b) {
            Ok(()) => Ok(Some(u32::from_le_bytes(b))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn bytes_of(r: &mut impl Read) -> Result<Vec<u8>> {
        let n = u32_of(r)?.context("truncated dump")?;
        let mut v = vec![0u8; n as usize];
        r.read_exact(&mut v)?;
        Ok(v)
    }
    let mut raws = Vec::new();
    while let Some(count) = u32_of(&mut r)? {
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = String::from_utf8(bytes_of(&mut r)?)?;
            let value = String::from_utf8(bytes_of(&mut r)?)?;
            headers.push((name, value));
        }
        let payload = Bytes::from(bytes_of(&mut r)?);
        raws.push(Raw { headers, payload });
    }
    Ok(raws)
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

/// Busy and total clock ticks of all CPUs (the first line of /proc/stat): the difference
/// of two readings says whether the publish phase kept every core busy.
/// Clock ticks of all CPUs so far (/proc/stat): busy (steal included), stolen by the
/// hypervisor, and in total.
struct MachineTicks {
    busy: u64,
    steal: u64,
    total: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let (idle, iowait, steal) = (*v.get(3)?, *v.get(4)?, *v.get(7)?);
    let total: u64 = v.iter().sum();
    Some(MachineTicks {
        busy: total - idle - iowait,
        steal,
        total,
    })
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
