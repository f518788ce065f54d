//! The transform stage: Wasm calls are synchronous and CPU-bound, so transforms run on a
//! blocking thread of their own, between the source and the delivery task, one batch at a
//! time and in order.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Loaded;
use crate::source::Batch;
use crate::transform::{self, Chain, Module, Outcome, TransformError};

/// Compiles (or loads from the cache) and links every configured transform module.
pub fn load_transforms(loaded: &Loaded) -> Result<Vec<Arc<Module>>, TransformError> {
    let configs = loaded.transform_configs();
    let cache = transform::cache_dir(loaded.config.pipeline.module_cache.as_deref());
    transform::load_all(&configs, cache.as_ref())
}

/// Runs every batch through the transform chain, in order, on a blocking thread.
/// Returns when the source is done, or with the error of a module whose policy is
/// `fail` (dropping the receiver stops the source; the failed batch is never acked).
pub fn transform_stage(
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
