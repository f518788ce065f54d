//! The pipeline: source batches → encode → every sink → acknowledged progress.
//!
//! Batches are delivered in order; a batch counts as acknowledged when every sink
//! acknowledged it, and progress only moves over an unbroken prefix of acknowledged
//! batches. A sink error stops the pipeline *before* the failed batch is acknowledged,
//! so the slot is never confirmed past a change that was not delivered.

use std::collections::BTreeMap;
use std::sync::Arc;

use cdc_sinks::{EncodedBatch, Sink, SinkError, StdoutSink};
use tokio::sync::{mpsc, watch};

use crate::config::{Format, Loaded, SinkType};
use crate::encode::encode_batch;
use crate::lsn::Lsn;
use crate::source::{self, Batch, Progress, SourceError};

/// A configured sink and the format it wants.
pub struct SinkSlot {
    pub sink: Box<dyn Sink>,
    pub format: Format,
}

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
}

/// Builds the configured sinks.
pub fn build_sinks(loaded: &Loaded) -> Vec<SinkSlot> {
    loaded
        .config
        .sinks
        .iter()
        .map(|s| {
            let s = s.get_ref();
            let sink: Box<dyn Sink> = match s.kind {
                SinkType::Stdout => Box::new(StdoutSink::new(s.display_name())),
            };
            SinkSlot {
                sink,
                format: s.format,
            }
        })
        .collect()
}

/// Runs source and sinks until `shutdown` (then drains) or an error. Returns the last
/// confirmed LSN.
pub async fn run(loaded: &Loaded, shutdown: watch::Receiver<bool>) -> Result<Lsn, RunError> {
    let sinks = build_sinks(loaded);
    let replicator = source::open(loaded).await?;
    let (tx, rx) = mpsc::channel(loaded.config.pipeline.max_inflight);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let deliver = tokio::spawn(deliver(rx, sinks, progress_tx));
    let source_result = replicator.run(tx, progress_rx, shutdown).await;
    // The source dropped its sender; the delivery task ends once the queue is empty.
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

/// Encodes and delivers batches in order, publishing acknowledged progress.
pub async fn deliver(
    mut rx: mpsc::Receiver<Batch>,
    mut sinks: Vec<SinkSlot>,
    progress: watch::Sender<Progress>,
) -> Result<(), SinkError> {
    while let Some(batch) = rx.recv().await {
        let mut encoded: BTreeMap<u8, Arc<EncodedBatch>> = BTreeMap::new();
        for slot in &sinks {
            encoded
                .entry(slot.format as u8)
                .or_insert_with(|| Arc::new(encode_batch(batch.seq, &batch.changes, slot.format)));
        }
        let deliveries = sinks.iter_mut().map(|slot| {
            let enc = Arc::clone(&encoded[&(slot.format as u8)]);
            slot.sink.deliver(enc)
        });
        futures_util::future::try_join_all(deliveries).await?;
        tracing::trace!(
            seq = batch.seq,
            changes = batch.changes.len(),
            "batch acknowledged"
        );
        progress.send_modify(|p| {
            p.acked_seq = batch.seq;
            if let Some(c) = batch.checkpoint {
                p.checkpoint = c;
            }
        });
    }
    Ok(())
}
