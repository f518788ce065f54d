//! The pipeline: source batches → transforms → encode → every sink → acknowledged progress.
//!
//! - [`run`]: the process's pipeline — sinks built once, transforms compiled once, and the
//!   reconnect loop around one connection's worth of pipeline ([`run_once`]).
//! - [`acks`]: the acknowledgement contract (`AckTracker`), flow-control limits and the
//!   commit-to-ack clock.
//! - [`deliver`]: encode once per format, one ordered lane per sink, progress out.
//! - [`sinks`]: building the configured sinks (and dead-letter targets).
//! - [`transform_stage`]: the Wasm chain on its own thread.
//!
//! Batches are delivered in order; a batch counts as acknowledged when every sink
//! acknowledged it, and progress only moves over an unbroken prefix of acknowledged
//! batches. A sink error stops the pipeline *before* the failed batch is acknowledged,
//! so the slot is never confirmed past a change that was not delivered.

pub mod acks;
pub mod deliver;
pub mod sinks;
pub mod transform_stage;

use std::sync::Arc;

use cdc_sinks::SinkError;
use tokio::sync::{mpsc, watch};

use crate::config::Loaded;
use crate::encode::EncodeContext;
use crate::health::{HealthHandle, StreamUp};
use crate::lsn::Lsn;
use crate::progress::Progress;
use crate::source::{self, snapshot, SourceError};
use crate::transform::{Chain, Module, TransformError};

pub use acks::{AckTracker, Limits};
pub use deliver::{deliver, Delivered};
pub use sinks::{build_sinks, SinkSet, SinkSlot};
pub use transform_stage::load_transforms;

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

/// Runs source and sinks until `shutdown` (then drains) or an error. Returns the last
/// confirmed LSN.
///
/// Sinks are built and transforms compiled once per process. Transient source failures
/// (Postgres restarting, the network cut, the slot still held by a previous consumer)
/// restart the connection's pipeline with capped exponential backoff and jitter, with the
/// same sinks; each attempt is logged. Everything unconfirmed is streamed again, with the
/// same ids.
pub async fn run(
    loaded: &Loaded,
    health: &HealthHandle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Lsn, RunError> {
    // Compiling modules is the slow part of starting transforms: once per process.
    let modules = load_transforms(loaded)?;
    let mut sinks = build_sinks(loaded, health).await?;
    let mut attempt: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        let err = match run_once(loaded, &modules, sinks, health, shutdown.clone()).await {
            (Err(RunError::Source(e)), Some(back)) if e.is_transient() && !*shutdown.borrow() => {
                sinks = back;
                e
            }
            (result, _) => return result,
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

/// How long a shutdown waits for the delivery stage after the source has drained (its
/// grace period already spent): enough for acknowledgements already on their way.
const SHUTDOWN_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Exponential backoff from 500 ms, capped at 30 s, with full jitter (so a fleet of
/// sidecars does not reconnect in lockstep).
fn backoff(attempt: u32) -> std::time::Duration {
    let cap_ms = 500u64.saturating_mul(1 << attempt.min(6)).min(30_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    std::time::Duration::from_millis(cap_ms / 2 + nanos % (cap_ms / 2 + 1))
}

/// One connection's worth of pipeline: source, transforms, delivery through `sinks`, until
/// stop or error. Hands the sinks back when delivery ended cleanly (so a reconnect reuses
/// them).
async fn run_once(
    loaded: &Loaded,
    modules: &[Arc<Module>],
    sinks: SinkSet,
    health: &HealthHandle,
    shutdown: watch::Receiver<bool>,
) -> (Result<Lsn, RunError>, Option<SinkSet>) {
    let chain = match Chain::start(modules) {
        Ok(c) => c,
        Err(e) => return (Err(e.into()), Some(sinks)),
    };
    // Several hosts in the DSN: the one that fits target_session_attrs now (after a
    // promotion, the new primary); every connection of this session goes there.
    let ctx = source::error::Context {
        user: &loaded.conn.user,
        slot: loaded.config.source.slot.get_ref(),
        publication: &loaded.publication.name,
    };
    let conn = match source::select_host(&loaded.conn, &ctx).await {
        Ok(c) => c,
        Err(e) => return (Err(e.into()), Some(sinks)),
    };
    let settings = source::StreamSettings::new(&loaded.config.source, &loaded.config.pipeline);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    // Snapshots and backfills: their coordinator lives as long as this connection.
    let (link, coordinator) = snapshot::worker::start(
        snapshot::worker::Setup {
            conn: conn.clone(),
            slot: loaded.config.source.slot.get_ref().clone(),
            publication: loaded.publication.name.clone(),
            config: loaded.config.source.snapshot.clone(),
            // The share a batch of changes has: chunks become changes once reconciled.
            chunks_memory: loaded.config.pipeline.budget_bytes() / 4,
        },
        progress_rx.clone(),
    );
    let _coordinator = AbortOnDrop(coordinator);
    let snapshot_wake = Arc::clone(&link.wake);
    let opened = source::open(
        &loaded.config.source,
        &loaded.publication,
        &conn,
        settings,
        Some(link),
    )
    .await;
    let replicator = match opened {
        Ok(r) => r,
        Err(e) => return (Err(e.into()), Some(sinks)),
    };
    // The stream is open: watermarks written from now on will come through it.
    snapshot_wake.notify_one();
    // Ready (with healthy sinks) from here until this connection's pipeline is over.
    let _stream_up = StreamUp::mark(health);
    let b = &loaded.config.pipeline;
    let (tx, rx) = mpsc::channel(b.max_inflight);
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
        let stage =
            tokio::task::spawn_blocking(move || transform_stage::transform_stage(chain, rx, t_tx));
        (t_rx, Some(stage))
    };
    let mut delivery = tokio::spawn(deliver(rx, sinks, progress_tx, ctx, limits));
    let stopping = shutdown.clone();
    let source_result = replicator.run(tx, progress_rx, shutdown).await;
    // The source has stopped: not ready until the next connection streams.
    drop(_stream_up);
    let stopping = *stopping.borrow();
    let mut settled = None;
    if stopping {
        // Shutting down: the source waited up to the grace period for acknowledgements and
        // sent its last status update, so nothing more can be confirmed in this session. A
        // sink still retrying (its destination down) must not hold the process: stop it;
        // what it had not delivered is streamed again on the next start.
        match tokio::time::timeout(SHUTDOWN_SETTLE, &mut delivery).await {
            Ok(done) => settled = Some(done),
            Err(_) => {
                delivery.abort();
                tracing::warn!("a sink was still delivering at shutdown; its unacknowledged changes will be sent again on restart");
                if let Some(stage) = stage {
                    let _ = stage.await;
                }
                return (source_result.map_err(RunError::from), None);
            }
        }
    }
    // A transform failure is the root cause of everything stopping after it.
    if let Some(stage) = stage {
        let result = stage.await.unwrap_or_else(|e| {
            Err(TransformError::Runtime(format!(
                "transform thread panicked: {e}"
            )))
        });
        if let Err(e) = result {
            delivery.abort();
            return (Err(e.into()), None);
        }
    }
    // The source dropped its sender; the delivery task ends once everything is acked.
    let joined = match settled {
        Some(done) => done,
        None => delivery.await,
    };
    let delivered = joined.unwrap_or_else(|e| Delivered {
        result: Err(SinkError::Other {
            sink: "pipeline".into(),
            message: format!("delivery task panicked: {e}"),
        }),
        sinks: None,
    });
    // A sink failure is the root cause of the source's "pipeline stopped": report it first.
    if let Err(e) = delivered.result {
        return (Err(e.into()), None);
    }
    (source_result.map_err(RunError::from), delivered.sinks)
}

/// Aborts a task when dropped (the snapshot coordinator ends with its connection).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
}
