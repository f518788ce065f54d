//! The stdout sink itself.

use std::io::Write;
use std::sync::Arc;

use crate::{EncodedBatch, Sink, SinkError};

/// Writes payloads as lines to the process's stdout (logs go to stderr).
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
}

impl StdoutSink {
    pub fn new(name: impl Into<String>) -> Self {
        StdoutSink { name: name.into() }
    }
}

/// Big enough that a batch is a handful of `write` calls, not one per line.
const BUFFER: usize = 1 << 20;

#[async_trait::async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
        // Blocking writes (a slow pipe reader) must not stall the async workers.
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let stdout = std::io::stdout();
            if let Some(lines) = &batch.lines {
                // Already laid out as lines: one write, no copy on our side.
                let mut out = stdout.lock();
                out.write_all(lines)?;
                return out.flush();
            }
            let mut out = std::io::BufWriter::with_capacity(BUFFER, stdout.lock());
            for m in &batch.messages {
                out.write_all(&m.payload)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.flush()
        })
        .await
        .map_err(|e| SinkError::Other {
            sink: self.name.clone(),
            message: format!("writer task failed: {e}"),
        })?;
        result.map_err(|source| SinkError::Io {
            sink: self.name.clone(),
            source,
        })
    }
}
