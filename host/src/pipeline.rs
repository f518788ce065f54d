//! The pipeline: source batches → transforms → encode → every sink → acknowledged progress.
//!
//! Transforms run on a thread of their own (Wasm calls are synchronous and CPU-bound),
//! between the source and the delivery task, one batch at a time and in order.
//!
//! Batches are delivered in order; a batch counts as acknowledged when every sink
//! acknowledged it, and progress only moves over an unbroken prefix of acknowledged
//! batches. A sink error stops the pipeline *before* the failed batch is acknowledged,
//! so the slot is never confirmed past a change that was not delivered.

use std::collections::BTreeMap;
use std::sync::Arc;

use cdc_sinks::{EncodedBatch, Policy, RouteFilter, Sink, SinkConfig, SinkError};
use tokio::sync::{mpsc, watch};

use crate::config::{Format, Loaded};
use crate::encode::{encode_batch, EncodeContext};
use crate::lsn::Lsn;
use crate::source::{self, Batch, Progress, SourceError};
use crate::transform::{self, Chain, Module, Outcome, TransformError};

/// A configured sink and the format it wants.
pub struct SinkSlot {
    pub sink: Box<dyn Sink>,
    pub format: Format,
    pub on_reject: Policy,
    /// Where rejected batches go with `Policy::DeadLetter`.
    pub dead_letter: Option<SharedSink>,
    /// `routes`: only changes whose transform-set route matches go to this sink.
    pub routes: Option<RouteFilter>,
}

/// A sink used by several tasks (a dead-letter target).
pub type SharedSink = Arc<tokio::sync::Mutex<Box<dyn Sink>>>;

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSlot")
            .field("sink", &self.sink.name())
            .field("format", &self.format)
            .finish()
    }
}

/// Why a pipeline run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Transform(#[from] TransformError),
}

/// Regular sinks, plus the dead-letter targets (which receive no regular batches).
pub struct Sinks {
    pub slots: Vec<SinkSlot>,
    /// By name: the shared sink and the format it wants.
    pub dead_letters: BTreeMap<String, (SharedSink, Format)>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field("slots", &self.slots)
            .field(
                "dead_letters",
                &self.dead_letters.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Builds (and for NATS, connects) the configured sinks. Dead-letter targets (of sinks or
/// of transforms) are built once, shared by everything that uses them, and receive no
/// regular batches.
pub async fn build_sinks(loaded: &Loaded) -> Result<Sinks, SinkError> {
    let configs: Vec<&SinkConfig> = loaded.config.sinks.iter().map(|s| s.get_ref()).collect();
    let targets: Vec<String> = configs
        .iter()
        .filter_map(|c| c.dead_letter_sink.as_ref().map(|d| d.get_ref().clone()))
        .chain(
            loaded
                .config
                .transforms
                .iter()
                .filter_map(|t| t.get_ref().dead_letter_sink.as_ref())
                .map(|d| d.get_ref().clone()),
        )
        .collect();
    let mut shared: BTreeMap<String, SharedSink> = BTreeMap::new();
    for c in configs
        .iter()
        .filter(|c| targets.contains(&c.display_name()))
    {
        shared.insert(
            c.display_name(),
            Arc::new(tokio::sync::Mutex::new(build_sink(c).await?)),
        );
    }
    let mut out = Vec::with_capacity(configs.len());
    for c in configs
        .iter()
        .filter(|c| !targets.contains(&c.display_name()))
    {
        out.push(SinkSlot {
            sink: build_sink(c).await?,
            format: c.format,
            on_reject: c.reject_policy(),
            dead_letter: c
                .dead_letter_sink
                .as_ref()
                .and_then(|d| shared.get(d.get_ref()).cloned()),
            routes: c.route_filter(),
        });
    }
    let dead_letters = shared
        .into_iter()
        .map(|(name, sink)| {
            let format = configs
                .iter()
                .find(|c| c.display_name() == name)
                .map_or(Format::Json, |c| c.format);
            (name, (sink, format))
        })
        .collect();
    Ok(Sinks {
        slots: out,
        dead_letters,
    })
}

async fn build_sink(c: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    Ok(crate::admin::observed(c.build().await?))
}

/// Runs source and sinks until `shutdown` (then drains) or an error. Returns the last
/// confirmed LSN.
///
/// Transient failures (Postgres restarting, the network cut, the slot still held by a
/// previous consumer) restart the pipeline with capped exponential backoff and jitter; each
/// attempt is logged. Everything unconfirmed is streamed again, with the same ids.
pub async fn run(loaded: &Loaded, mut shutdown: watch::Receiver<bool>) -> Result<Lsn, RunError> {
    // Compiling modules is the slow part of starting transforms: once per process.
    let modules = load_transforms(loaded)?;
    let mut attempt: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        let err = match run_once(loaded, &modules, shutdown.clone()).await {
            Err(RunError::Source(e)) if e.is_transient() && !*shutdown.borrow() => e,
            other => return other,
        };
        // A connection that lived a while starts the backoff over.
        if started.elapsed() > RESET_BACKOFF_AFTER {
            attempt = 0;
        }
        attempt += 1;
        let delay = backoff(attempt);
        tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %err, "replication interrupted; reconnecting");
        crate::metrics::reconnect();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(Lsn::ZERO),
        }
    }
}

const RESET_BACKOFF_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Exponential backoff from 500 ms, capped at 30 s, with jitter in the upper half of each
/// bound (so a fleet of sidecars does not reconnect in lockstep): attempt 1 waits 0.5–1 s.
fn backoff(attempt: u32) -> std::time::Duration {
    const RECONNECT: cdc_sinks::retry::Backoff = cdc_sinks::retry::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(30),
    )
    .half_jitter();
    // The reconnect loop counts its first retry as 1, with the bound 500 ms · 2.
    RECONNECT.delay(attempt.saturating_add(1))
}

/// Compiles (or loads from the cache) and links every configured transform module.
pub fn load_transforms(loaded: &Loaded) -> Result<Vec<Arc<Module>>, TransformError> {
    let configs = loaded.transform_configs();
    let cache = transform::cache_dir(loaded.config.pipeline.module_cache.as_deref());
    transform::load_all(&configs, cache.as_deref())
}

/// One connection's worth of pipeline: sinks, source, transforms, delivery, until stop
/// or error.
async fn run_once(
    loaded: &Loaded,
    modules: &[Arc<Module>],
    shutdown: watch::Receiver<bool>,
) -> Result<Lsn, RunError> {
    let configs = loaded.transform_configs();
    let chain = Chain::start(modules, &configs)?;
    let sinks = build_sinks(loaded).await?;
    let replicator = source::open(loaded).await?;
    // Ready (with healthy sinks) from here until this connection's pipeline is over.
    let _stream_up = crate::admin::StreamUp::mark(crate::admin::Health::global());
    let b = &loaded.config.pipeline;
    let (tx, rx) = mpsc::channel(b.max_inflight);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let ctx = EncodeContext {
        database: loaded.conn.dbname.as_str().into(),
        server_name: loaded.config.source.slot.get_ref().as_str().into(),
    };
    let limits = Limits {
        max_inflight: b.max_inflight,
        max_inflight_bytes: b.max_inflight_bytes(),
    };
    let (rx, stage) = if chain.is_empty() {
        (rx, None)
    } else {
        let (t_tx, t_rx) = mpsc::channel(1);
        let stage = tokio::task::spawn_blocking(move || transform_stage(chain, rx, t_tx));
        (t_rx, Some(stage))
    };
    let deliver = tokio::spawn(deliver(rx, sinks, progress_tx, ctx, limits));
    let source_result = replicator.run(tx, progress_rx, shutdown).await;
    // A transform failure is the root cause of everything stopping after it.
    if let Some(stage) = stage {
        let result = stage.await.unwrap_or_else(|e| {
            Err(TransformError::Runtime(format!(
                "transform thread panicked: {e}"
            )))
        });
        if let Err(e) = result {
            deliver.abort();
            return Err(e.into());
        }
    }
    // The source dropped its sender; the delivery task ends once everything is acked.
    let deliver_result = deliver.await.unwrap_or_else(|e| {
        Err(SinkError::Other {
            sink: "pipeline".into(),
            message: format!("delivery task panicked: {e}"),
        })
    });
    // A sink failure is the root cause of the source's "pipeline stopped": report it first.
    deliver_result?;
    Ok(source_result?)
}

/// Runs every batch through the transform chain, in order, on a blocking thread.
/// Returns when the source is done, or with the error of a module whose policy is
/// `fail` (dropping the receiver stops the source; the failed batch is never acked).
fn transform_stage(
    mut chain: Chain,
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Batch>,
) -> Result<(), TransformError> {
    while let Some(mut batch) = rx.blocking_recv() {
        match chain.run(std::mem::take(&mut batch.changes))? {
            Outcome::Changes(changes) => batch.changes = changes,
            Outcome::Skipped { .. } => {}
            Outcome::DeadLetter { sink, changes, .. } => {
                batch.changes = changes;
                batch.dead_letter = Some(sink);
            }
        }
        if tx.blocking_send(batch).is_err() {
            break;
        }
    }
    Ok(())
}

/// Flow-control bounds of the delivery stage.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Batches handed to sinks and not yet acknowledged by all of them.
    pub max_inflight: usize,
    /// Encoded bytes of those batches.
    pub max_inflight_bytes: usize,
}

/// A sink's verdict on one batch.
struct Ack {
    seq: u64,
    sink: usize,
    result: Result<(), SinkError>,
}

/// Which batches are out, and how many sinks still owe an acknowledgement for each.
#[derive(Debug, Default)]
struct AckTracker {
    pending: BTreeMap<u64, Outstanding>,
    bytes: usize,
}

#[derive(Debug)]
struct Outstanding {
    remaining: usize,
    checkpoint: Option<Lsn>,
    bytes: usize,
}

impl AckTracker {
    fn register(&mut self, seq: u64, sinks: usize, checkpoint: Option<Lsn>, bytes: usize) {
        self.pending.insert(
            seq,
            Outstanding {
                remaining: sinks,
                checkpoint,
                bytes,
            },
        );
        self.bytes += bytes;
    }

    /// Records one sink's ack; returns the progress of the acknowledged prefix, if it moved.
    fn ack(&mut self, seq: u64, progress: Progress) -> Option<Progress> {
        if let Some(o) = self.pending.get_mut(&seq) {
            o.remaining = o.remaining.saturating_sub(1);
        }
        let mut p = progress;
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().remaining > 0 {
                break;
            }
            let (seq, o) = entry.remove_entry();
            self.bytes -= o.bytes;
            p.acked_seq = seq;
            if let Some(c) = o.checkpoint {
                p.checkpoint = c;
            }
        }
        (p != progress).then_some(p)
    }

    fn is_full(&self, limits: &Limits) -> bool {
        self.pending.len() >= limits.max_inflight || self.bytes >= limits.max_inflight_bytes
    }
}

/// Encodes each batch once per format, hands it to every sink (each sink has its own task
/// and delivers in order), and publishes the acknowledged prefix. The first sink error
/// ends delivery; nothing at or after the failed batch is acknowledged.
///
/// A batch with no changes left (transforms dropped them all) is acknowledged at once; a
/// batch marked for a dead-letter sink goes to that sink only. Either way it takes its
/// place in the acknowledged prefix like any other.
pub async fn deliver(
    mut rx: mpsc::Receiver<Batch>,
    sinks: Sinks,
    progress: watch::Sender<Progress>,
    ctx: EncodeContext,
    limits: Limits,
) -> Result<(), SinkError> {
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
    let regular = sinks.slots.len();
    let mut lanes: Vec<Lane> = Vec::with_capacity(regular + sinks.dead_letters.len());
    let mut tasks = tokio::task::JoinSet::new();
    for (idx, mut slot) in sinks.slots.into_iter().enumerate() {
        let (q_tx, mut q_rx) = mpsc::unbounded_channel::<Arc<EncodedBatch>>();
        let acks = ack_tx.clone();
        lanes.push(Lane {
            name: slot.sink.name().into(),
            format: slot.format,
            routes: slot.routes.clone(),
            queue: q_tx,
        });
        tasks.spawn(async move {
            while let Some(batch) = q_rx.recv().await {
                let result = deliver_one(&mut slot, &batch).await;
                if !send_ack(&acks, batch.seq, idx, result) {
                    break;
                }
            }
        });
    }
    for (name, (sink, format)) in sinks.dead_letters {
        let idx = lanes.len();
        let (q_tx, mut q_rx) = mpsc::unbounded_channel::<Arc<EncodedBatch>>();
        let acks = ack_tx.clone();
        lanes.push(Lane {
            name: name.into(),
            format,
            routes: None,
            queue: q_tx,
        });
        tasks.spawn(async move {
            while let Some(batch) = q_rx.recv().await {
                let result = sink.lock().await.deliver(Arc::clone(&batch)).await;
                if !send_ack(&acks, batch.seq, idx, result) {
                    break;
                }
            }
        });
    }
    drop(ack_tx);
    let mut tracker = AckTracker::default();
    let mut clock = crate::metrics::CommitClock::default();
    // Our own copy of what we publish: never hold a borrow of the watch channel.
    let mut acked = Progress::default();
    let mut open = true;
    loop {
        let accepting = open && !tracker.is_full(&limits);
        tokio::select! {
            batch = rx.recv(), if accepting => {
                let Some(batch) = batch else {
                    open = false;
                    lanes.clear(); // sink tasks finish their queues, then end
                    if tracker.pending.is_empty() {
                        break;
                    }
                    continue;
                };
                let targets: Vec<usize> = match &batch.dead_letter {
                    _ if batch.changes.is_empty() => Vec::new(),
                    // Sinks with `routes` only when some change is routed their way.
                    None => (0..regular)
                        .filter(|&i| lanes[i].wants_any(&batch.changes))
                        .collect(),
                    Some(name) => match lanes.iter().position(|l| l.name == *name) {
                        Some(i) => vec![i],
                        None => {
                            return Err(SinkError::Other {
                                sink: name.to_string(),
                                message: "dead-letter sink is not configured".into(),
                            })
                        }
                    },
                };
                crate::metrics::batch_emitted(&batch.changes);
                clock.sent(batch.seq, &batch.changes);
                let mut encoded: Vec<(Format, Arc<EncodedBatch>)> = Vec::new();
                for &i in &targets {
                    let f = lanes[i].format;
                    if !encoded.iter().any(|(g, _)| *g == f) {
                        encoded.push((f, Arc::new(encode_batch(batch.seq, &batch.changes, f, &ctx))));
                    }
                }
                let bytes = encoded.iter().map(|(_, e)| e.messages.iter().map(|m| m.payload.len()).sum::<usize>()).sum();
                tracker.register(batch.seq, targets.len(), batch.checkpoint, bytes);
                for &i in &targets {
                    let lane = &lanes[i];
                    if let Some((_, enc)) = encoded.iter().find(|(g, _)| *g == lane.format) {
                        let _ = lane.queue.send(lane.select(enc));
                    }
                }
                if targets.is_empty() {
                    // Nothing to send (no sink, or nothing left after transforms).
                    if let Some(p) = tracker.ack(batch.seq, acked) {
                        acked = p;
                        progress.send_replace(p);
                        crate::metrics::acked(p.checkpoint, p.acked_seq, &mut clock);
                    }
                }
            }
            ack = ack_rx.recv() => {
                let Some(ack) = ack else { break };
                if let Err(e) = ack.result {
                    tracing::error!(sink = ack.sink, seq = ack.seq, error = %e, "sink failed; stopping before this batch is confirmed");
                    tasks.abort_all();
                    return Err(e);
                }
                if let Some(p) = tracker.ack(ack.seq, acked) {
                    acked = p;
                    tracing::trace!(acked_seq = p.acked_seq, checkpoint = %p.checkpoint, "acknowledged");
                    progress.send_replace(p);
                    crate::metrics::acked(p.checkpoint, p.acked_seq, &mut clock);
                }
                if !open && tracker.pending.is_empty() {
                    break;
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A sink's queue as the delivery loop sees it.
struct Lane {
    name: Arc<str>,
    format: Format,
    routes: Option<RouteFilter>,
    queue: mpsc::UnboundedSender<Arc<EncodedBatch>>,
}

impl Lane {
    /// Whether any of `changes` goes to this sink.
    fn wants_any(&self, changes: &[crate::change::Change]) -> bool {
        let Some(f) = &self.routes else { return true };
        changes.iter().any(|c| {
            c.routing
                .as_ref()
                .and_then(|r| r.route.as_deref())
                .is_some_and(|r| f.matches(r))
        })
    }

    /// The part of `batch` that goes to this sink (all of it without `routes`).
    fn select(&self, batch: &Arc<EncodedBatch>) -> Arc<EncodedBatch> {
        let Some(f) = &self.routes else {
            return Arc::clone(batch);
        };
        let messages: Vec<_> = batch
            .messages
            .iter()
            .filter(|m| m.route.as_deref().is_some_and(|r| f.matches(r)))
            .cloned()
            .collect();
        if messages.len() == batch.messages.len() {
            return Arc::clone(batch);
        }
        Arc::new(EncodedBatch {
            seq: batch.seq,
            messages,
        })
    }
}

/// Reports a sink's verdict; `false` when the sink task should stop (it failed, or
/// delivery is over).
fn send_ack(
    acks: &mpsc::UnboundedSender<Ack>,
    seq: u64,
    sink: usize,
    result: Result<(), SinkError>,
) -> bool {
    let failed = result.is_err();
    acks.send(Ack { seq, sink, result }).is_ok() && !failed
}

/// One sink, one batch, with the sink's policy for rejected batches applied.
async fn deliver_one(slot: &mut SinkSlot, batch: &Arc<EncodedBatch>) -> Result<(), SinkError> {
    let err = match slot.sink.deliver(Arc::clone(batch)).await {
        Ok(()) => return Ok(()),
        Err(e @ SinkError::Rejected { .. }) => e,
        Err(e) => return Err(e),
    };
    match (slot.on_reject, &slot.dead_letter) {
        (Policy::Skip, _) => {
            tracing::error!(sink = slot.sink.name(), seq = batch.seq, changes = batch.messages.len(), error = %err, "batch rejected; skipped (on_reject = \"skip\")");
            Ok(())
        }
        (Policy::DeadLetter, Some(dlq)) => {
            let mut dlq = dlq.lock().await;
            tracing::error!(sink = slot.sink.name(), dead_letter_sink = dlq.name(), seq = batch.seq, changes = batch.messages.len(), error = %err, "batch rejected; sent to the dead-letter sink");
            dlq.deliver(Arc::clone(batch)).await
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt).as_millis() as u64;
            let cap = (500u64 << attempt.min(6)).min(30_000);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d} ms");
        }
    }

    #[test]
    fn progress_moves_only_over_a_fully_acknowledged_prefix() {
        let mut t = AckTracker::default();
        let p0 = Progress::default();
        t.register(1, 2, Some(Lsn(10)), 5);
        t.register(2, 2, None, 5);
        t.register(3, 2, Some(Lsn(30)), 5);
        // Batch 2 and 3 acked by both sinks, batch 1 by one only: nothing moves.
        assert_eq!(t.ack(2, p0), None);
        assert_eq!(t.ack(2, p0), None);
        assert_eq!(t.ack(3, p0), None);
        assert_eq!(t.ack(3, p0), None);
        assert_eq!(t.ack(1, p0), None);
        // The last ack of batch 1 releases 1, 2 and 3 together.
        let p = t.ack(1, p0).unwrap();
        assert_eq!(
            p,
            Progress {
                acked_seq: 3,
                checkpoint: Lsn(30)
            }
        );
        assert_eq!(t.bytes, 0);
    }

    #[test]
    fn a_batch_without_checkpoint_keeps_the_previous_one() {
        let mut t = AckTracker::default();
        t.register(1, 1, Some(Lsn(10)), 1);
        t.register(2, 1, None, 1);
        let p = t.ack(1, Progress::default()).unwrap();
        let p = t.ack(2, p).unwrap();
        assert_eq!(
            p,
            Progress {
                acked_seq: 2,
                checkpoint: Lsn(10)
            }
        );
    }

    #[test]
    fn full_by_count_or_bytes() {
        let limits = Limits {
            max_inflight: 2,
            max_inflight_bytes: 100,
        };
        let mut t = AckTracker::default();
        t.register(1, 1, None, 10);
        assert!(!t.is_full(&limits));
        t.register(2, 1, None, 10);
        assert!(t.is_full(&limits));
        let mut t = AckTracker::default();
        t.register(1, 1, None, 100);
        assert!(t.is_full(&limits));
    }
}
