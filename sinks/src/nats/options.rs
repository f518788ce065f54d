//! [`NatsOptions`]: what a [`NatsSink`](super::NatsSink) is built from, and its defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The subject template used when none is configured.
pub const DEFAULT_SUBJECT: &str = "cdc.{schema}.{table}";
/// How long [`NatsSink::connect`] keeps trying before reporting the server unreachable.
///
/// [`NatsSink::connect`]: super::NatsSink::connect
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// Default per-publish ack wait.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of unacknowledged publishes pipelined within a batch.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default duplicate window of a stream the sink creates.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Default `atomic_max_batch`: nats-server's own limit on the messages of one atomic batch
/// (`streamDefaultMaxAtomicBatchSize`; raised in the server's configuration with
/// `jetstream { limits { batch { max_msgs: N } } }`).
pub const DEFAULT_ATOMIC_MAX_BATCH: usize = 1000;

/// How changes are grouped into JetStream atomic batches (ADR-50, nats-server 2.12+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Atomic {
    /// One publish per change, no batch (the default).
    #[default]
    None,
    /// Each Postgres transaction is one atomic batch (or, when larger than
    /// `atomic_max_batch` or split by the pipeline, ordered atomic chunks).
    Transaction,
}

/// How to reach NATS and where to publish.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Sink name, for logs and errors.
    pub name: String,
    /// Server URL, e.g. `nats://127.0.0.1:4222`; a comma-separated list is allowed.
    pub url: String,
    /// Subject template (`{schema}`, `{table}`, `{op}`); a transform's route overrides it.
    pub subject: String,
    /// `None`: core NATS, publish + flush only (no durability).
    pub jetstream: Option<JetStreamOptions>,
    pub auth: NatsAuth,
    pub tls: Option<NatsTls>,
    /// How long no PubAck may arrive while some are awaited before the unacknowledged
    /// messages are published again (same ids).
    pub ack_timeout: Duration,
    /// Unacknowledged publishes pipelined within a batch (at least 1).
    pub max_in_flight: usize,
}

impl NatsOptions {
    /// Options with the defaults: subject `cdc.{schema}.{table}`, no JetStream (set
    /// [`NatsOptions::jetstream`]), no auth, no TLS, 5 s ack timeout, 1024 in flight.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        NatsOptions {
            name: name.into(),
            url: url.into(),
            subject: DEFAULT_SUBJECT.to_string(),
            jetstream: None,
            auth: NatsAuth::None,
            tls: None,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// The JetStream stream the sink publishes to.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    pub stream: String,
    /// Create the stream when it does not exist (file storage, `subjects`,
    /// `duplicate_window`). An existing stream is left as it is.
    pub create_stream: bool,
    /// Subjects of a created stream; empty means derived from the subject template
    /// (see [`JetStreamOptions::default_subjects`]).
    pub subjects: Vec<String>,
    /// Duplicate window of a created stream: replays within it are dropped by `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Replicas of a created stream (an existing one with others is warned about).
    pub replicas: usize,
    /// Order across reconnects and leader changes (see the module docs): ordered batches
    /// where the stream allows batched publishing, else `Nats-Expected-Last-Msg-Id` on each
    /// message of a single-replica stream this sink alone publishes to (never on a
    /// replicated one, see `fence`). Off: plain pipelined publishes.
    pub ordering_check: bool,
    /// Each transaction as one atomic batch (see [`Atomic`]); a created stream then allows
    /// atomic publishing, an existing one must.
    pub atomic: Atomic,
    /// Most messages in one atomic batch (at least 1): a larger transaction goes out as
    /// ordered atomic chunks of at most this many.
    pub atomic_max_batch: usize,
}

impl JetStreamOptions {
    /// `create_stream = true`, subjects derived from the template, 2 min duplicate window.
    pub fn new(stream: impl Into<String>) -> Self {
        JetStreamOptions {
            stream: stream.into(),
            create_stream: true,
            subjects: Vec::new(),
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            replicas: 1,
            ordering_check: true,
            atomic: Atomic::None,
            atomic_max_batch: DEFAULT_ATOMIC_MAX_BATCH,
        }
    }

    /// The stream subjects covering a subject template: the literal tokens before the first
    /// placeholder followed by `>` (`cdc.{schema}.{table}` → `cdc.>`); a template starting
    /// with a placeholder gets `*` for each token holding one (`{schema}.{table}` → `*.*`);
    /// a template without placeholders is its own subject.
    pub fn default_subjects(template: &str) -> Vec<String> {
        let tokens: Vec<&str> = template.split('.').collect();
        match tokens.iter().position(|t| t.contains('{')) {
            None => vec![template.to_string()],
            Some(0) => vec![tokens
                .iter()
                .map(|t| if t.contains('{') { "*" } else { t })
                .collect::<Vec<_>>()
                .join(".")],
            Some(first) => vec![format!("{}.>", tokens[..first].join("."))],
        }
    }
}

/// How the sink authenticates.
#[derive(Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// An NKey seed (`SU…`).
    NkeySeed(String),
    /// A `.creds` file (JWT + NKey seed).
    CredsFile(PathBuf),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::NkeySeed(_) => f.write_str("NkeySeed(***)"),
            NatsAuth::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
        }
    }
}

/// TLS settings. Without a CA file the system roots are trusted.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Refuse to talk plain text even when the server does not ask for TLS.
    pub required: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_subjects_cover_the_template() {
        assert_eq!(
            JetStreamOptions::default_subjects("cdc.{schema}.{table}"),
            ["cdc.>"]
        );
        assert_eq!(JetStreamOptions::default_subjects("a.b.{op}.x"), ["a.b.>"]);
        assert_eq!(
            JetStreamOptions::default_subjects("{schema}.{table}"),
            ["*.*"]
        );
        assert_eq!(JetStreamOptions::default_subjects("{schema}.x"), ["*.x"]);
        assert_eq!(
            JetStreamOptions::default_subjects("fixed.subject"),
            ["fixed.subject"]
        );
    }
}
