//! The coordinator: picks up requested snapshots, runs up to `workers` tables at once
//! (each on its own connection), and records a chunk's progress once every sink
//! acknowledged it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{pin_mut, TryStreamExt};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_postgres::SimpleQueryMessage;

use super::catalog::{self, CatalogError, Described};
use super::copy::{binary_key_text, typed_binary_row, typed_row, BinaryCopy, CopyError, Tuples};
use super::key::{key_hash, key_text, prints_key_text};
use super::state::{self, Job};
use super::{Chunk, Delivered, Event, Link, Watermark, STATE_SCHEMA, WATERMARK_PREFIX};
use crate::config::SnapshotConfig;
use crate::dsn::ConnParams;
use crate::lsn::Lsn;
use crate::progress::Progress;
use crate::source::control::Control;
use crate::source::error::Context;
use crate::source::types::TypeRegistry;
use crate::source::wire::quote_literal;

/// Chunks of one table copied but not yet acknowledged, at most (memory: this many chunks
/// per worker; speed: the next chunk is copied while the previous one waits for its high
/// watermark and the sinks).
const CHUNKS_IN_FLIGHT: u32 = 3;

/// How often progress is logged (and requests are looked for without a signal).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What the coordinator needs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub conn: ConnParams,
    pub slot: String,
    pub publication: String,
    pub config: SnapshotConfig,
    /// The memory every snapshot chunk held at once may take (see [`Setup::chunk_bytes`]).
    pub chunks_memory: usize,
}

/// Decoded rows take about this many times their COPY bytes (values, the change around
/// them); measured with `bench/snapshot.sh` (peak RSS over the rows in flight).
const DECODED_PER_COPY_BYTE: usize = 3;

impl Setup {
    /// COPY bytes one chunk may hold: the chunks' memory shared by every worker's chunks
    /// in flight. A chunk ends early at this size (the next one starts after its last
    /// row), so memory stays within the budget whatever `chunk_rows` and the rows' width.
    pub fn chunk_bytes(&self) -> usize {
        let in_flight = self.config.workers().max(1) * CHUNKS_IN_FLIGHT as usize;
        (self.chunks_memory / DECODED_PER_COPY_BYTE / in_flight).max(64 * 1024)
    }
}

/// `copying "schema"."table": <server message>`.
fn db_message(table: &str, e: &tokio_postgres::Error) -> String {
    format!(
        "copying {table}: {}",
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())
    )
}

impl Setup {
    /// `job`'s table as the publication publishes it.
    async fn describe(&self, control: &Control, job: &Job) -> Result<Described, CatalogError> {
        let mut types = TypeRegistry::default();
        let mut desc = catalog::describe(
            control,
            &mut types,
            &self.publication,
            &job.schema,
            &job.table,
        )
        .await?;
        desc.binary = self.config.binary
            && desc
                .table
                .columns
                .iter()
                .all(|c| crate::value::has_binary_decoder(&c.type_info));
        desc.server_key_text = !desc
            .key
            .iter()
            .all(|&k| prints_key_text(&desc.table.columns[k].type_info));
        Ok(desc)
    }
}

/// Starts the coordinator; returns the stream loop's end and the task (abort it when the
/// connection's pipeline ends: a restart resumes from the recorded progress).
pub fn start(
    setup: Setup,
    progress: watch::Receiver<Progress>,
) -> (Link, tokio::task::JoinHandle<()>) {
    let nonce = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (delivered_tx, delivered_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let link = Link {
        slot: setup.slot.clone(),
        nonce,
        events: events_rx,
        delivered: delivered_tx,
        wake: Arc::clone(&wake),
    };
    let task = tokio::spawn(async move {
        let mut c = Coordinator {
            setup: Arc::new(setup),
            nonce,
            events: events_tx,
            next_seq: Arc::new(AtomicU64::new(1)),
            acks: Acks::default(),
            register: None,
        };
        let (mut delivered, mut progress) = (delivered_rx, progress);
        // Nothing before the stream is open (the pipeline wakes us): a watermark written
        // before would never come through it, and a connection that cannot stream needs
        // no second one.
        wake.notified().await;
        loop {
            match c.run(&mut delivered, &wake, &mut progress).await {
                Ok(()) => return, // the pipeline is gone
                Err(e) => {
                    // Its workers are gone with it; their jobs resume from what was
                    // recorded, on a new connection.
                    tracing::warn!(error = %e, "snapshot coordinator interrupted; retrying in 5 s");
                    c.acks = Acks::default();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
    (link, task)
}

struct Coordinator {
    setup: Arc<Setup>,
    nonce: u64,
    events: mpsc::UnboundedSender<Event>,
    next_seq: Arc<AtomicU64>,
    acks: Acks,
    register: Option<mpsc::UnboundedSender<Registered>>,
}

/// A chunk handed to the stream, waiting for its delivery and acknowledgement.
struct Registered {
    seq: u64,
    job: Arc<JobProgress>,
    upper: Option<Vec<String>>,
    permit: OwnedSemaphorePermit,
}

/// Counters of one running table, shared by its worker and the coordinator.
struct JobProgress {
    id: i64,
    table: String,
    estimate: AtomicU64,
    done: AtomicU64,
    started: Instant,
    /// A chunk of this job was not delivered (the stream could not reconcile it): the
    /// worker stops and the job is picked up again from its recorded progress.
    spoiled: AtomicBool,
}

#[derive(Default)]
struct Acks {
    /// Registered chunks by seq (seqs grow in the order chunks reach the stream).
    waiting: BTreeMap<u64, (Registered, Option<Delivered>)>,
    /// Deliveries that came before their registration.
    early: HashMap<u64, Delivered>,
}

impl Coordinator {
    async fn run(
        &mut self,
        delivered: &mut mpsc::UnboundedReceiver<Delivered>,
        wake: &Notify,
        progress: &mut watch::Receiver<Progress>,
    ) -> Result<(), String> {
        let ctx = Context {
            user: &self.setup.conn.user,
            slot: &self.setup.slot,
            publication: &self.setup.publication,
        };
        let mut control = Control::connect(&self.setup.conn, &ctx)
            .await
            .map_err(|e| e.to_string())?;
        let (reg_tx, mut reg_rx) = mpsc::unbounded_channel::<Registered>();
        self.register = Some(reg_tx);
        let mut workers: JoinSet<(i64, Result<Outcome, String>)> = JoinSet::new();
        let mut running: HashMap<i64, Arc<JobProgress>> = HashMap::new();
        let mut retry_after: HashMap<i64, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.reset();
        let mut scan = true;
        loop {
            if scan {
                scan = false;
                let jobs = state::runnable(control.client(), &self.setup.slot)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut split_any = false;
                for job in jobs {
                    if running.len() >= self.setup.config.workers() {
                        break;
                    }
                    if running.contains_key(&job.id)
                        || retry_after
                            .get(&job.id)
                            .is_some_and(|t| *t > Instant::now())
                    {
                        continue;
                    }
                    if self.split(&mut control, &job).await {
                        // The list is stale now: look again.
                        split_any = true;
                        break;
                    }
                    let p = Arc::new(JobProgress {
                        id: job.id,
                        // As the metrics label tables: `schema.table`.
                        table: format!("{}.{}", job.schema, job.table),
                        estimate: AtomicU64::new(job.rows_estimated.unwrap_or(0).max(0) as u64),
                        done: AtomicU64::new(job.rows_done.max(0) as u64),
                        started: Instant::now(),
                        spoiled: AtomicBool::new(false),
                    });
                    running.insert(job.id, Arc::clone(&p));
                    crate::metrics::snapshot_running(running.len());
                    let worker = Worker {
                        setup: Arc::clone(&self.setup),
                        nonce: self.nonce,
                        events: self.events.clone(),
                        register: self.register.clone().expect("set above"),
                        next_seq: Arc::clone(&self.next_seq),
                        progress: p,
                    };
                    let id = job.id;
                    workers.spawn(async move { (id, worker.run(job).await) });
                }
                if split_any {
                    scan = true;
                    continue;
                }
            }
            tokio::select! {
                _ = wake.notified() => scan = true,
                Some(r) = reg_rx.recv() => self.acks.register(r),
                Some(d) = delivered.recv() => {
                    self.acks.delivered(d);
                    // Its batch may be acknowledged already (progress moved before this
                    // message was read): with an idle stream, nothing else would record it.
                    let checkpoint = progress.borrow().checkpoint;
                    self.acks.acknowledged(checkpoint, control.client()).await.map_err(|e| e.to_string())?;
                }
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let checkpoint = progress.borrow_and_update().checkpoint;
                    self.acks.acknowledged(checkpoint, control.client()).await.map_err(|e| e.to_string())?;
                }
                Some(done) = workers.join_next(), if !workers.is_empty() => {
                    scan = true;
                    let Ok((id, outcome)) = done else { continue };
                    let p = running.remove(&id);
                    crate::metrics::snapshot_running(running.len());
                    let table = p.as_ref().map(|p| p.table.clone()).unwrap_or_default();
                    match outcome {
                        Ok(Outcome::Done) => {
                            let rows = p.as_ref().map_or(0, |p| p.done.load(Ordering::Relaxed));
                            tracing::info!(job = id, table = %table, rows, "snapshot of table complete");
                            crate::metrics::snapshot_remaining(&table, 0);
                        }
                        Ok(Outcome::Cancelled) => tracing::info!(job = id, table = %table, "snapshot cancelled"),
                        Err(e) => {
                            tracing::warn!(job = id, table = %table, error = %e, "snapshot of table interrupted; it resumes from its last acknowledged chunk");
                            self.acks.forget_job(id);
                            retry_after.insert(id, Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
                _ = tick.tick() => {
                    scan = true;
                    for p in running.values() {
                        log_progress(p);
                    }
                    if !running.is_empty() {
                        log_retained_wal(control.client(), &self.setup.slot).await;
                    }
                }
            }
        }
    }
}

impl Coordinator {
    /// A large table not started yet, with more than one worker: cut it into key ranges
    /// (recorded, so a restart keeps them), one job each. `true` when it was split.
    async fn split(&self, control: &mut Control, job: &Job) -> bool {
        let workers = self.setup.config.workers();
        let chunk = self.setup.config.chunk_rows() as i64;
        let estimate = job.rows_estimated.unwrap_or(0);
        if workers < 2 || !job.pending || job.last_key.is_some() || job.range_hi.is_some() {
            return false;
        }
        let n = (estimate / (4 * chunk)).clamp(1, workers as i64) as usize;
        if n < 2 {
            return false;
        }
        let desc = match self.setup.describe(control, job).await {
            Ok(d) => d,
            Err(_) => return false, // the worker reports it
        };
        let bounds = match desc.split_points(control.client(), estimate, n).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "sampling split points failed; one range");
                return false;
            }
        };
        match state::split(control.client_mut(), job, &bounds).await {
            Ok(done) => {
                if done {
                    tracing::info!(table = %catalog::qualified(&job.schema, &job.table), ranges = bounds.len() + 1, "snapshot of table split into key ranges, one worker each");
                }
                done
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not split the table into key ranges");
                false
            }
        }
    }
}

impl Acks {
    fn register(&mut self, r: Registered) {
        let d = self.early.remove(&r.seq);
        self.waiting.insert(r.seq, (r, None));
        if let Some(d) = d {
            self.delivered(d);
        }
    }

    fn delivered(&mut self, d: Delivered) {
        match self.waiting.get_mut(&d.seq) {
            Some(entry) => {
                if d.commit_lsn.is_none() {
                    entry.0.job.spoiled.store(true, Ordering::Relaxed);
                    self.waiting.remove(&d.seq);
                } else {
                    entry.1 = Some(d);
                }
            }
            None => {
                self.early.insert(d.seq, d);
            }
        }
    }

    fn forget_job(&mut self, id: i64) {
        self.waiting.retain(|_, (r, _)| r.job.id != id);
    }

    /// Records every delivered chunk at or below `checkpoint`, in stream order.
    async fn acknowledged(
        &mut self,
        checkpoint: Lsn,
        client: &tokio_postgres::Client,
    ) -> Result<(), state::StateError> {
        let acked: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, d))| {
                d.and_then(|d| d.commit_lsn)
                    .is_some_and(|lsn| checkpoint > lsn)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in acked {
            let Some((r, Some(d))) = self.waiting.remove(&seq) else {
                continue;
            };
            state::record_chunk(client, r.job.id, r.upper.as_deref(), d.emitted as i64).await?;
            let done = r.job.done.fetch_add(d.emitted as u64, Ordering::Relaxed) + d.emitted as u64;
            crate::metrics::snapshot_rows(&r.job.table, d.emitted as u64);
            let est = r.job.estimate.load(Ordering::Relaxed);
            crate::metrics::snapshot_remaining(&r.job.table, est.saturating_sub(done));
            drop(r.permit);
        }
        Ok(())
    }
}

fn log_progress(p: &JobProgress) {
    let done = p.done.load(Ordering::Relaxed);
    let est = p.estimate.load(Ordering::Relaxed).max(done);
    let secs = p.started.elapsed().as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let percent = if est > 0 {
        done as f64 * 100.0 / est as f64
    } else {
        0.0
    };
    let eta_secs = if rate > 0.0 {
        ((est - done) as f64 / rate) as u64
    } else {
        0
    };
    tracing::info!(
        table = %p.table,
        rows = done,
        estimated = est,
        percent = format!("{percent:.1}"),
        rows_per_sec = rate as u64,
        eta_secs,
        "snapshot progress"
    );
}

async fn log_retained_wal(client: &tokio_postgres::Client, slot: &str) {
    let sql = "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1";
    if let Ok(Some(row)) = client.query_opt(sql, &[&slot]).await {
        let retained: Option<i64> = row.get(0);
        tracing::info!(
            slot,
            retained_wal_mb = retained.unwrap_or(0).max(0) >> 20,
            "WAL retained by the slot while the snapshot runs"
        );
    }
}

enum Outcome {
    Done,
    Cancelled,
}

/// Copies one table.
struct Worker {
    setup: Arc<Setup>,
    nonce: u64,
    events: mpsc::UnboundedSender<Event>,
    register: mpsc::UnboundedSender<Registered>,
    next_seq: Arc<AtomicU64>,
    progress: Arc<JobProgress>,
}

impl Worker {
    async fn run(self, job: Job) -> Result<Outcome, String> {
        let ctx = Context {
            user: &self.setup.conn.user,
            slot: &self.setup.slot,
            publication: &self.setup.publication,
        };
        let control = Control::connect(&self.setup.conn, &ctx)
            .await
            .map_err(|e| e.to_string())?;
        let client = control.client();
        // The text the parsers expect: the replication session's settings.
        client
            .batch_execute(
                "SET DateStyle = ISO; SET IntervalStyle = postgres; SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = hex; SET standard_conforming_strings = on; SET client_encoding = 'UTF8'",
            )
            .await
            .map_err(|e| e.to_string())?;
        let desc = match self.setup.describe(&control, &job).await {
            Ok(d) => d,
            Err(e @ CatalogError::Source(_)) => return Err(e.to_string()),
            Err(e) => {
                // Permanent: the table cannot be copied; say why in --status.
                let message = e.to_string();
                tracing::error!(table = %self.progress.table, error = %message, "snapshot of table failed");
                let _ = state::finish(client, job.id, "failed", Some(&message)).await;
                return Ok(Outcome::Cancelled);
            }
        };
        // A filtered backfill keeps the estimate made for its filter.
        let estimate = match (&job.filter, job.rows_estimated) {
            (Some(_), Some(e)) => e,
            _ => desc.estimate,
        }
        .max(job.rows_done);
        self.progress
            .estimate
            .store(estimate as u64, Ordering::Relaxed);
        state::mark_running(client, job.id, estimate)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            table = %self.progress.table,
            snapshot = job.snapshot,
            estimated_rows = estimate,
            resume = job.last_key.is_some(),
            copy_format = if desc.binary { "binary" } else { "text" },
            "snapshot of table started"
        );
        let permits = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT as usize));
        let mut after = job.last_key.clone();
        let mut limit = self.setup.config.chunk_rows();
        // Per chunk, two round trips: the COPY, and one batch that ends its read-only
        // transaction, writes its high watermark and the next chunk's low watermark (one
        // flushed commit for both: the next window opens where this one closes, a little
        // earlier than it must, which only drops more rows from that chunk in favour of the
        // stream's newer images), reads the job's state (how `--cancel` arrives) and begins
        // the next chunk's read-only transaction.
        let mut permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let mut seq = self.open(&desc);
        if !self.marks(client, job.id, false, None, Some(seq)).await? {
            self.abort(client, seq).await;
            return Ok(Outcome::Cancelled);
        }
        loop {
            if self.progress.spoiled.load(Ordering::Relaxed) {
                self.abort(client, seq).await;
                return Err("a chunk could not be reconciled with the stream".into());
            }
            let copy_started = Instant::now();
            let (chunk, upper, more, bytes) = match self
                .chunk(client, &desc, &job, seq, after.as_deref(), limit)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    self.abort(client, seq).await;
                    return Err(e);
                }
            };
            // Wide rows: the next chunk asks for fewer rows than this one cut short.
            if bytes > self.setup.chunk_bytes() && limit > 1 {
                limit = (limit / 2).max(1);
            }
            let _ = self.register.send(Registered {
                seq,
                job: Arc::clone(&self.progress),
                upper: upper.clone(),
                permit,
            });
            let _ = self.events.send(Event::Rows(chunk));
            // Where a chunk's time goes (debug log): its COPY, the wait for room among the
            // chunks in flight, the watermarks' round trip.
            let copied = copy_started.elapsed();
            let wait_started = Instant::now();
            let next = if more {
                let p = Arc::clone(&permits)
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?;
                Some((self.open(&desc), p))
            } else {
                None
            };
            let waited = wait_started.elapsed();
            let marks_started = Instant::now();
            let running = self
                .marks(client, job.id, true, Some(seq), next.as_ref().map(|n| n.0))
                .await?;
            tracing::debug!(
                seq,
                copy_ms = copied.as_millis() as u64,
                permit_wait_ms = waited.as_millis() as u64,
                marks_ms = marks_started.elapsed().as_millis() as u64,
                "snapshot chunk timings"
            );
            let Some((next_seq, next_permit)) = next else {
                break;
            };
            if !running {
                self.abort(client, next_seq).await;
                return Ok(Outcome::Cancelled);
            }
            (seq, permit, after) = (next_seq, next_permit, upper);
        }
        // Done once every chunk is acknowledged.
        let _all = permits
            .acquire_many(CHUNKS_IN_FLIGHT)
            .await
            .map_err(|e| e.to_string())?;
        if self.progress.spoiled.load(Ordering::Relaxed) {
            return Err("a chunk could not be reconciled with the stream".into());
        }
        state::finish(client, job.id, "done", None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Done)
    }

    /// Announces the next chunk to the stream loop (before its low watermark is written).
    fn open(&self, desc: &Described) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Event::Open {
            seq,
            table_oid: desc.table.id,
            key: Arc::clone(&desc.key_names),
        });
        seq
    }

    /// Copies one chunk inside the read-only transaction `marks` began. Returns it with its
    /// upper key, whether more rows follow, and its COPY bytes.
    async fn chunk(
        &self,
        client: &tokio_postgres::Client,
        desc: &Described,
        job: &Job,
        seq: u64,
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<(Chunk, Option<Vec<String>>, bool, usize), String> {
        // One more row than the chunk: tells whether this is the table's last chunk.
        let sql = desc.chunk_sql(
            after,
            job.range_hi.as_deref(),
            job.filter.as_deref(),
            limit + 1,
        );
        // Rows are typed as they arrive, so the server keeps sending while we parse.
        let table = &self.progress.table;
        let mut rows = Vec::with_capacity(limit.min(65_536));
        let mut upper: Option<Vec<String>> = None;
        let mut more = false;
        let mut bytes = 0usize;
        let mut last_key = Vec::new();
        let stream = client
            .copy_out(sql.as_str())
            .await
            .map_err(|e| db_message(table, &e))?;
        pin_mut!(stream);
        let mut scratch = Vec::new();
        let mut binary = desc.binary.then(BinaryCopy::default);
        // A binary chunk of a table whose key cdc-host prints itself (`prints_key_text`)
        // selects no key text: the next bound is printed from the last row's values.
        // Otherwise a binary row has the key again as text after its columns.
        let prints_key = desc.binary && !desc.server_key_text;
        let key_fields = if prints_key { 0 } else { desc.key.len() };
        let mut tuples = Tuples::default();
        // COPY bytes received so far; past the cap the chunk ends at the rows it has (they
        // are all from this chunk's window, and the next chunk starts after the last).
        let received = std::sync::atomic::AtomicUsize::new(0);
        let cap = self.setup.chunk_bytes();
        // `true` when the row joined the chunk.
        let mut take = |r: Result<_, CopyError>| -> Result<bool, String> {
            if rows.len() == limit || (received.load(Ordering::Relaxed) > cap && !rows.is_empty()) {
                more = true; // the one extra row: not delivered, the next chunk starts at it
                return Ok(false);
            }
            let row = r.map_err(|e| format!("{table}: {e}"))?;
            let h = key_hash(&desc.table, &desc.key, &row, &mut scratch)
                .ok_or_else(|| format!("{table}: a key value is missing"))?;
            rows.push((h, row));
            Ok(true)
        };
        while let Some(msg) = stream.try_next().await.map_err(|e| db_message(table, &e))? {
            bytes += msg.len();
            received.store(bytes, Ordering::Relaxed);
            match &mut binary {
                None => {
                    let (row, key_text) = match typed_row(&desc.table, &desc.key, &msg) {
                        Ok((row, key_text)) => (Ok(row), key_text),
                        Err(e) => (Err(e), Vec::new()),
                    };
                    if take(row)? {
                        last_key = key_text;
                    }
                }
                Some(b) => {
                    tuples.clear();
                    b.rows(&msg, &mut tuples)
                        .map_err(|e| format!("{table}: {e}"))?;
                    let mut taken = None;
                    for t in tuples.iter() {
                        if take(typed_binary_row(&desc.table, key_fields, &msg, t))? {
                            taken = Some(t);
                        }
                    }
                    if let Some(t) = taken.filter(|_| !prints_key) {
                        last_key = binary_key_text(&desc.table, &msg, t);
                    }
                }
            }
        }
        tracing::debug!(
            table = %table,
            seq,
            rows = rows.len(),
            copy_bytes = bytes,
            cut_at_byte_share = more && rows.len() < limit,
            "snapshot chunk copied"
        );
        if let Some((_, row)) = rows.last().filter(|_| prints_key) {
            let text = desc
                .key
                .iter()
                .map(|&k| row.0.get(k).and_then(key_text))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| format!("{table}: a key value of the last row cannot be printed"))?;
            upper = Some(text);
        } else if !rows.is_empty() {
            upper = Some(
                last_key
                    .into_iter()
                    .map(|k| {
                        k.map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default()
                    })
                    .collect(),
            );
        }
        // A range's final chunk: its last row is the table's last if no other range is
        // still to finish (the stream loop decides, it sees them in order).
        let last = match (more, rows.last()) {
            (false, Some((h, _))) => Some((
                *h,
                state::open_ranges(client, job)
                    .await
                    .map_err(|e| e.to_string())?,
            )),
            _ => None,
        };
        Ok((
            Chunk {
                seq,
                snapshot: u32::try_from(job.snapshot).unwrap_or(u32::MAX),
                table: Arc::clone(&desc.table),
                rows,
                last,
                bytes,
            },
            upper,
            more,
            bytes,
        ))
    }

    /// One round trip: ends the chunk's read-only transaction (`in_copy`), writes the
    /// watermarks in one transaction flushed at once (a walsender sends only flushed WAL;
    /// with `synchronous_commit = off` the WAL writer would flush it up to 200 ms later and
    /// the chunk would wait that long), reads the job's state and, when a low watermark was
    /// written, begins the next chunk's read-only transaction (its snapshot is taken by the
    /// COPY, after the low watermark). `true` while the job is still running.
    async fn marks(
        &self,
        client: &tokio_postgres::Client,
        job: i64,
        in_copy: bool,
        high: Option<u64>,
        low: Option<u64>,
    ) -> Result<bool, String> {
        let mut sql = String::new();
        if in_copy {
            sql.push_str("COMMIT; ");
        }
        sql.push_str("BEGIN; SET LOCAL synchronous_commit = on; ");
        for w in [high.map(Watermark::High), low.map(Watermark::Low)]
            .into_iter()
            .flatten()
        {
            sql.push_str(&format!(
                "SELECT pg_logical_emit_message(true, {}, {}); ",
                quote_literal(WATERMARK_PREFIX),
                quote_literal(&w.content(&self.setup.slot, self.nonce))
            ));
        }
        sql.push_str(&format!(
            "SELECT state FROM {STATE_SCHEMA}.snapshots WHERE id = {job}; COMMIT"
        ));
        if low.is_some() {
            sql.push_str("; BEGIN READ ONLY");
        }
        let replies = client
            .simple_query(&sql)
            .await
            .map_err(|e| format!("writing a snapshot watermark: {e}"))?;
        let state = replies.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r)
                if r.columns().first().map(|c| c.name()) == Some("state") =>
            {
                r.get(0)
            }
            _ => None,
        });
        Ok(state == Some("running"))
    }

    /// Closes chunk `seq`'s window without delivering it (best effort: the stream loop
    /// also forgets windows that never close).
    async fn abort(&self, client: &tokio_postgres::Client, seq: u64) {
        let _ = client.batch_execute("ROLLBACK").await;
        let _ = self.watermark(client, Watermark::Abort(seq)).await;
    }

    async fn watermark(&self, client: &tokio_postgres::Client, w: Watermark) -> Result<(), String> {
        let content = w.content(&self.setup.slot, self.nonce);
        // Its own transaction, flushed at once: a walsender sends only flushed WAL, and with
        // synchronous_commit = off the WAL writer would flush it up to 200 ms later (the
        // chunk would wait that long for its high watermark).
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_logical_emit_message(true, {}, {}); COMMIT",
                quote_literal(WATERMARK_PREFIX),
                quote_literal(&content)
            ))
            .await
            .map_err(|e| format!("writing a snapshot watermark: {e}"))
    }
}
