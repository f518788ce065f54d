//! The sink contract and the sinks of cdc-host.
//!
//! Sinks see encoded messages (a stable id, routing metadata, headers, payload bytes),
//! never pgoutput or typed rows: encoding happens once, upstream, per format.
//!
//! The acknowledgement contract: [`Sink::deliver`] returns `Ok` only once the destination
//! holds the whole batch durably (a flushed stdout, a JetStream PubAck, an HTTP 2xx).
//! The host confirms the replication slot only past batches every sink acknowledged.

pub mod stdout;

use std::sync::Arc;

use bytes::Bytes;

pub use stdout::StdoutSink;

/// One encoded change.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stable change id (from WAL positions): the deduplication key downstream.
    pub id: String,
    /// `schema`, `table`, `op`, for subject/route templates.
    pub schema: Option<Arc<str>>,
    pub table: Option<Arc<str>>,
    pub op: &'static str,
    /// Encoded change, without a trailing newline.
    pub payload: Bytes,
}

/// The encoded changes of one pipeline batch, in order.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The pipeline batch sequence number (1, 2, …).
    pub seq: u64,
    pub messages: Vec<Message>,
}

/// Why a sink could not acknowledge a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: write failed: {source}")]
    Io {
        sink: String,
        source: std::io::Error,
    },
    #[error("sink {sink}: {message}")]
    Other { sink: String, message: String },
}

/// A destination for encoded batches. Batches arrive in order, one at a time.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// The sink's configured name (for logs and errors).
    fn name(&self) -> &str;

    /// Delivers the whole batch; `Ok` means durable at the destination.
    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError>;
}
