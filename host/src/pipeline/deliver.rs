//! The delivery stage: encode each batch once per format, hand it to every sink's lane (one
//! task per sink, delivering in order), and publish the acknowledged prefix.
//!
//! Every queue here is bounded by construction: a lane's queue holds at most
//! `max_inflight` batches, which is also how many the [`AckTracker`] lets out at once, so
//! handing a batch to a lane never waits; the acknowledgement queue holds one verdict per
//! batch per lane.

use std::sync::Arc;

use cdc_sinks::{EncodedBatch, SinkError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::acks::{AckTracker, CommitClock, Limits};
use super::sinks::{SharedSink, SinkSet, SinkSlot};
use crate::change::Change;
use crate::config::Format;
use crate::encode::{encode_batch, EncodeContext};
use crate::progress::Progress;
use crate::source::Batch;
use cdc_sinks::{Policy, RouteFilter};

/// A sink's verdict on one batch.
struct Ack {
    seq: u64,
    lane: usize,
    result: Result<(), SinkError>,
}

/// What a lane's task hands back when its queue closes.
enum Returned {
    Regular(usize, Box<SinkSlot>),
    DeadLetter,
}

/// The end of one delivery stage: its result, and the sinks for the next connection's
/// stage when they came back whole (not after a sink failure, which ends the pipeline).
#[derive(Debug)]
pub struct Delivered {
    pub result: Result<(), SinkError>,
    pub sinks: Option<SinkSet>,
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
    sinks: SinkSet,
    progress: watch::Sender<Progress>,
    ctx: EncodeContext,
    limits: Limits,
) -> Delivered {
    let regular = sinks.slots.len();
    let lane_count = regular + sinks.dead_letters.len();
    // At most `max_inflight` batches are out, each owing one verdict per lane.
    // (`max_inflight` is at most MAX_INFLIGHT, so this stays far below tokio's limit.)
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(limits.max_inflight * lane_count.max(1));
    let mut lanes: Vec<Lane> = Vec::with_capacity(lane_count);
    let mut tasks: JoinSet<Returned> = JoinSet::new();
    for (idx, slot) in sinks.slots.into_iter().enumerate() {
        let (queue, q_rx) = mpsc::channel(limits.max_inflight);
        lanes.push(Lane {
            name: slot.sink.name().into(),
            format: slot.format,
            routes: slot.routes.clone(),
            queue,
        });
        tasks.spawn(regular_lane(idx, Box::new(slot), q_rx, ack_tx.clone()));
    }
    let dead_letters = sinks.dead_letters;
    for (name, (sink, format)) in &dead_letters {
        let (queue, q_rx) = mpsc::channel(limits.max_inflight);
        let idx = lanes.len();
        lanes.push(Lane {
            name: name.as_str().into(),
            format: *format,
            routes: None,
            queue,
        });
        tasks.spawn(dead_letter_lane(
            idx,
            Arc::clone(sink),
            q_rx,
            ack_tx.clone(),
        ));
    }
    drop(ack_tx);
    let names: Vec<Arc<str>> = lanes.iter().map(|l| Arc::clone(&l.name)).collect();
    let mut tracker = AckTracker::default();
    let mut clock = CommitClock::default();
    // Our own copy of what we publish: never hold a borrow of the watch channel.
    let mut acked = Progress::default();
    let mut open = true;
    let publish = |p: Progress, acked: &mut Progress, clock: &mut CommitClock| {
        *acked = p;
        tracing::trace!(acked_seq = p.acked_seq, checkpoint = %p.checkpoint, "acknowledged");
        progress.send_replace(p);
        clock.acked(p);
    };
    loop {
        let accepting = open && !tracker.is_full(&limits);
        tokio::select! {
            batch = rx.recv(), if accepting => {
                let Some(batch) = batch else {
                    open = false;
                    lanes.clear(); // sink tasks finish their queues, then end
                    if tracker.is_empty() {
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
                    Some(name) => match lanes.iter().position(|l| *l.name == **name) {
                        Some(i) => vec![i],
                        None => {
                            tasks.abort_all();
                            return Delivered {
                                result: Err(SinkError::Other {
                                    sink: name.to_string(),
                                    message: "dead-letter sink is not configured".into(),
                                }),
                                sinks: None,
                            };
                        }
                    },
                };
                crate::metrics::batch_emitted(&batch.changes);
                clock.sent(batch.seq, &batch.changes);
                let mut encoded: Vec<(Format, Arc<EncodedBatch>)> = Vec::new();
                for &i in &targets {
                    let f = lanes[i].format;
                    if !encoded.iter().any(|(g, _)| *g == f) {
                        let mut e = encode_batch(batch.seq, &batch.changes, f, &ctx);
                        e.continues = batch.continues;
                        encoded.push((f, Arc::new(e)));
                    }
                }
                let bytes = encoded.iter().map(|(_, e)| e.messages.iter().map(|m| m.payload.len()).sum::<usize>()).sum();
                tracker.register(batch.seq, targets.len(), batch.checkpoint, bytes);
                for &i in &targets {
                    let lane = &lanes[i];
                    if let Some((_, enc)) = encoded.iter().find(|(g, _)| *g == lane.format) {
                        // Never waits: the tracker lets at most `max_inflight` batches out,
                        // the queue's capacity. A closed queue means its task ended, and
                        // its verdict is on the ack queue.
                        let _ = lane.queue.send(lane.select(enc)).await;
                    }
                }
                if targets.is_empty() {
                    // Nothing to send (no sink, or nothing left after transforms).
                    if let Some(p) = tracker.ack(batch.seq, acked) {
                        publish(p, &mut acked, &mut clock);
                    }
                }
            }
            ack = ack_rx.recv() => {
                let Some(ack) = ack else { break };
                if let Err(e) = ack.result {
                    tracing::error!(sink = %names[ack.lane], seq = ack.seq, error = %e, "sink failed; stopping before this batch is confirmed");
                    tasks.abort_all();
                    return Delivered { result: Err(e), sinks: None };
                }
                if let Some(p) = tracker.ack(ack.seq, acked) {
                    publish(p, &mut acked, &mut clock);
                }
                if !open && tracker.is_empty() {
                    break;
                }
            }
        }
    }
    drop(lanes);
    let mut slots: Vec<(usize, Box<SinkSlot>)> = Vec::with_capacity(regular);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Returned::Regular(idx, slot)) => slots.push((idx, slot)),
            Ok(Returned::DeadLetter) => {}
            Err(e) => {
                return Delivered {
                    result: Err(SinkError::Other {
                        sink: "pipeline".into(),
                        message: format!("sink task failed: {e}"),
                    }),
                    sinks: None,
                }
            }
        }
    }
    slots.sort_by_key(|(idx, _)| *idx);
    // Every lane came back only if every task ran to the end of its queue.
    let sinks = (slots.len() == regular).then(|| SinkSet {
        slots: slots.into_iter().map(|(_, s)| *s).collect(),
        dead_letters,
    });
    Delivered {
        result: Ok(()),
        sinks,
    }
}

/// A regular sink's task: delivers its queue in order, applying its reject policy, and
/// hands the sink back when the queue closes (or after its first failure).
async fn regular_lane(
    idx: usize,
    mut slot: Box<SinkSlot>,
    mut queue: mpsc::Receiver<Arc<EncodedBatch>>,
    acks: mpsc::Sender<Ack>,
) -> Returned {
    while let Some(batch) = queue.recv().await {
        let result = deliver_one(&mut slot, &batch).await;
        if !send_ack(&acks, batch.seq, idx, result).await {
            break;
        }
    }
    Returned::Regular(idx, slot)
}

/// A dead-letter target's task: what the transform stage routed to it, in order.
async fn dead_letter_lane(
    idx: usize,
    sink: SharedSink,
    mut queue: mpsc::Receiver<Arc<EncodedBatch>>,
    acks: mpsc::Sender<Ack>,
) -> Returned {
    while let Some(batch) = queue.recv().await {
        let result = sink.lock().await.deliver(Arc::clone(&batch)).await;
        if !send_ack(&acks, batch.seq, idx, result).await {
            break;
        }
    }
    Returned::DeadLetter
}

/// A sink's ordered queue as the delivery loop sees it.
struct Lane {
    name: Arc<str>,
    format: Format,
    routes: Option<RouteFilter>,
    queue: mpsc::Sender<Arc<EncodedBatch>>,
}

impl Lane {
    /// Whether any of `changes` goes to this sink.
    fn wants_any(&self, changes: &[Change]) -> bool {
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
            continues: batch.continues,
            lines: None,
        })
    }
}

/// Reports a sink's verdict; `false` when the sink task should stop (it failed, or
/// delivery is over).
async fn send_ack(
    acks: &mpsc::Sender<Ack>,
    seq: u64,
    lane: usize,
    result: Result<(), SinkError>,
) -> bool {
    let failed = result.is_err();
    acks.send(Ack { seq, lane, result }).await.is_ok() && !failed
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
