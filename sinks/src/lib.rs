//! The sink contract and the sinks of cdc-host.
//!
//! Sinks see encoded messages (a stable id, routing metadata, headers, payload bytes),
//! never pgoutput or typed rows: encoding happens once, upstream, per format.
//!
//! The acknowledgement contract: [`Sink::deliver`] returns `Ok` only once the destination
//! holds the whole batch durably (a flushed stdout, a JetStream PubAck, an HTTP 2xx).
//! The host confirms the replication slot only past batches every sink acknowledged.
//!
//! Each sink type lives in its own folder (`stdout/`, `nats/`, `http/`): the sink, and in
//! its `config.rs` its `[[sinks]]` keys, checks, defaults and construction, built on the
//! leaf `keys` (`${ENV}`, URL checks, `sink_keys!`). The keys all sinks share, and the
//! dispatch by `type`, are in [`config`], the one module that knows every type (listed
//! once, in its `sink_types!`); [`SinkConfig::build`] is the one way to build a
//! configured sink.

pub mod config;
pub mod http;
mod id;
mod keys;
pub mod nats;
mod policy;
pub mod retry;
mod routes;
pub mod stdout;

use std::sync::Arc;

use bytes::Bytes;

pub use config::{Format, SinkConfig, SinkType};
pub use id::IdText;
pub use policy::Policy;
pub use routes::RouteFilter;
pub use stdout::StdoutSink;

/// One encoded change.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stable change id (from WAL positions): the deduplication key downstream
    /// (`Nats-Msg-Id`, part of the HTTP `Idempotency-Key`).
    pub id: IdText,
    /// `schema`, `table`, `op`, for subject/route templates (`{schema}`, `{table}`, `{op}`).
    pub schema: Option<Arc<str>>,
    pub table: Option<Arc<str>>,
    pub op: &'static str,
    /// WAL position of the change and of its transaction's commit, as `X/X` text; shared
    /// (a transaction's changes have one commit LSN, a snapshot chunk's reads one LSN too),
    /// so a message costs no allocation for them.
    pub lsn: Arc<str>,
    pub commit_lsn: Arc<str>,
    /// A subject/route chosen by a transform; overrides the sink's template when set.
    pub route: Option<String>,
    /// Extra headers chosen by a transform.
    pub headers: Vec<(String, String)>,
    /// Encoded change, without a trailing newline.
    pub payload: Bytes,
}

impl Message {
    /// Fills a `{schema}.{table}`-style template (`{op}` too); missing parts become `_`.
    pub fn render_template(&self, template: &str) -> String {
        template
            .replace("{schema}", self.schema.as_deref().unwrap_or("_"))
            .replace("{table}", self.table.as_deref().unwrap_or("_"))
            .replace("{op}", self.op)
    }

    /// The route a transform set, else the template filled in.
    pub fn route_or(&self, template: &str) -> String {
        self.route
            .clone()
            .unwrap_or_else(|| self.render_template(template))
    }
}

/// The encoded changes of one pipeline batch, in order.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The pipeline batch sequence number (1, 2, …).
    pub seq: u64,
    pub messages: Vec<Message>,
    /// The batch's last transaction continues in the next batch: a transaction larger
    /// than the pipeline's `max_changes` / `max_batch_bytes` was split here. Every other
    /// transaction of a batch is whole (its commit is in it). The NATS sink's atomic mode
    /// marks the chunk that ends a transaction by it.
    pub continues: bool,
    /// Every message's payload in order, each followed by `\n`, as one buffer — when the
    /// encoder laid the batch out that way (it writes the payloads back to back anyway):
    /// the stdout sink then writes it in one call instead of copying every line into a
    /// buffer of its own. `None` for a batch filtered or built otherwise.
    pub lines: Option<bytes::Bytes>,
}

/// Why a sink could not acknowledge a batch. Transient failures (a server down, a 5xx) are
/// retried inside the sink and never surface here; these are the ones retrying cannot cure,
/// or a sink giving up after its configured retry budget.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: write failed: {source}")]
    Io {
        sink: String,
        source: std::io::Error,
    },
    #[error("sink {sink}: cannot connect: {message}")]
    Connect { sink: String, message: String },
    #[error("sink {sink}: the destination rejected change {id}: {message}")]
    Rejected {
        sink: String,
        id: String,
        message: String,
    },
    #[error("sink {sink}: {message}")]
    Other { sink: String, message: String },
}

/// Watches a sink's health for the host (readiness, metrics) without the sink knowing the
/// host. Sinks call it from their retry loops and connection events; implementations must
/// be cheap and must not block.
pub trait SinkObserver: Send + Sync + std::fmt::Debug {
    /// A delivery attempt failed transiently (`attempt` 1, 2, …); the sink will retry.
    fn retrying(&self, sink: &str, attempt: u32) {
        let _ = (sink, attempt);
    }
    /// The sink's connection to its destination went down (`false`) or came back (`true`).
    fn connection(&self, sink: &str, up: bool) {
        let _ = (sink, up);
    }
}

/// A destination for encoded batches. Batches arrive in order, one at a time.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// The sink's configured name (for logs and errors).
    fn name(&self) -> &str;

    /// Attaches an observer of transient failures and connection changes. Sinks without
    /// retries or connections ignore it.
    fn observe(&mut self, observer: Arc<dyn SinkObserver>) {
        let _ = observer;
    }

    /// Delivers the whole batch; `Ok` means durable at the destination.
    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError>;
}
