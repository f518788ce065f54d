//! Readiness: is the replication stream running, and is every sink delivering?
//!
//! One [`Health`] exists per process, created by the binary and handed as a [`HealthHandle`]
//! (an `Arc`) to the pipeline, which marks the stream up and wraps each sink with
//! [`observed`], and to the admin endpoint, which only reads it. No global state: tests
//! and embedders get their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cdc_sinks::{EncodedBatch, Sink, SinkError, SinkObserver};

/// A shared reference to the process's readiness state.
pub type HealthHandle = Arc<Health>;

/// Readiness state shared by the pipeline, the sinks' observers and the admin server.
#[derive(Debug, Default)]
pub struct Health {
    stream: AtomicBool,
    /// Per sink (by name): healthy or not.
    sinks: Mutex<Vec<(String, bool)>>,
}

impl Health {
    /// A fresh state behind a handle: stream down, no sinks.
    pub fn handle() -> HealthHandle {
        Arc::new(Health::default())
    }

    /// The replication stream started (`true`) or stopped (`false`).
    pub fn set_stream(&self, up: bool) {
        self.stream.store(up, Ordering::Relaxed);
        crate::metrics::stream_up(up);
    }

    /// Marks the sink `name` healthy or not; returns whether that changed its state.
    /// Unknown names are added.
    pub fn set_sink(&self, name: &str, healthy: bool) -> bool {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match sinks.iter_mut().find(|(n, _)| n == name) {
            Some((_, h)) => std::mem::replace(h, healthy) != healthy,
            None => {
                sinks.push((name.to_owned(), healthy));
                true
            }
        };
        if changed {
            crate::metrics::sink_up(name, healthy);
        }
        changed
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.stream.load(Ordering::Relaxed) {
            return Err("replication stream not running".into());
        }
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let down: Vec<&str> = sinks
            .iter()
            .filter(|(_, h)| !h)
            .map(|(n, _)| n.as_str())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("sink(s) failing: {}", down.join(", ")))
        }
    }
}

/// Marks the stream up for as long as it lives.
#[derive(Debug)]
pub struct StreamUp(HealthHandle);

impl StreamUp {
    pub fn mark(health: &HealthHandle) -> StreamUp {
        health.set_stream(true);
        StreamUp(Arc::clone(health))
    }
}

impl Drop for StreamUp {
    fn drop(&mut self) {
        self.0.set_stream(false);
    }
}

/// Wraps a sink for readiness and metrics: registers it healthy, attaches an observer (its
/// retries mark it failing), and after each acknowledged batch marks it healthy again and
/// counts the batch, its changes and bytes; counts rejected batches.
pub fn observed(sink: Box<dyn Sink>, health: &HealthHandle) -> Box<dyn Sink> {
    let mut inner = sink;
    health.set_sink(inner.name(), true);
    inner.observe(Arc::new(Observer {
        health: Arc::clone(health),
    }));
    Box::new(Observed {
        inner,
        health: Arc::clone(health),
    })
}

struct Observed {
    inner: Box<dyn Sink>,
    health: HealthHandle,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("sink", &self.inner.name())
            .finish()
    }
}

#[async_trait::async_trait]
impl Sink for Observed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn observe(&mut self, observer: Arc<dyn SinkObserver>) {
        self.inner.observe(observer);
    }

    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
        let result = self.inner.deliver(Arc::clone(&batch)).await;
        let name = self.inner.name();
        match &result {
            Ok(()) => {
                if self.health.set_sink(name, true) {
                    tracing::info!(sink = name, "sink delivering again");
                }
                let bytes: usize = batch.messages.iter().map(|m| m.payload.len()).sum();
                crate::metrics::sink_batch(name, batch.messages.len() as u64, bytes as u64);
            }
            Err(SinkError::Rejected { .. }) => crate::metrics::sink_rejected(name),
            Err(_) => {}
        }
        result
    }
}

#[derive(Debug)]
struct Observer {
    health: HealthHandle,
}

impl SinkObserver for Observer {
    fn retrying(&self, sink: &str, _attempt: u32) {
        crate::metrics::sink_retry(sink);
        if self.health.set_sink(sink, false) {
            tracing::warn!(sink, "sink failing: not ready until it delivers again");
        }
    }

    fn connection(&self, sink: &str, up: bool) {
        // Reconnected counts as healthy (an idle sink has no delivery to prove it); if a
        // delivery is still failing, its next retry marks the sink failing again.
        if self.health.set_sink(sink, up) {
            if up {
                tracing::info!(sink, "sink reconnected");
            } else {
                tracing::warn!(sink, "sink disconnected: not ready until it reconnects");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_the_stream_and_every_sink() {
        let h = Health::handle();
        assert!(h.readiness().unwrap_err().contains("stream"));
        h.set_stream(true);
        assert!(h.readiness().is_ok());
        assert!(h.set_sink("a", true));
        assert!(h.set_sink("b", true));
        assert!(h.readiness().is_ok());
        assert!(h.set_sink("b", false));
        assert!(!h.set_sink("b", false));
        assert_eq!(h.readiness().unwrap_err(), "sink(s) failing: b");
        h.set_sink("b", true);
        assert!(h.readiness().is_ok());
        h.set_stream(false);
        assert!(h.readiness().is_err());
    }

    #[test]
    fn stream_up_lasts_as_long_as_its_guard() {
        let h = Health::handle();
        {
            let _up = StreamUp::mark(&h);
            assert!(h.readiness().is_ok());
        }
        assert!(h.readiness().is_err());
    }
}
