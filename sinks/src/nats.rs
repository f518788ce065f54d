//! NATS sink: JetStream (durable, acknowledged) or core NATS (fire-and-forget plus flush).
//!
//! With JetStream, [`Sink::deliver`] returns `Ok` once the stream acknowledged (PubAck) every
//! message of the batch. Each message carries `Nats-Msg-Id` = its stable change id, so a
//! batch replayed after a crash (or republished after a lost ack) within the stream's
//! duplicate window is dropped by the server: a PubAck with `duplicate: true` counts as
//! delivered.
//!
//! Publishes are pipelined: up to `max_in_flight` messages are sent before the oldest ack is
//! awaited, and acks are awaited in batch order. When an ack fails or times out, that message
//! and every later one are published again with the same ids. Transient failures (server
//! down, timeouts, JetStream not answering while the server restarts) are retried inside
//! `deliver` with capped exponential backoff and jitter, forever: the pipeline stalls rather
//! than loses data. Only problems retrying cannot cure surface as errors: a missing stream,
//! a subject no stream listens on, an invalid subject or header, an oversized message, an
//! authentication or permission failure.
//!
//! Ordering across outages: when the connection drops mid-batch, the client sends the
//! publishes it still had queued once it reconnects, while some sent before the drop were
//! lost; those would land ahead of the lost ones' republication. To prevent that, each
//! message but the first of an attempt also carries `Nats-Expected-Last-Msg-Id` = the id of
//! the previous message bound for the same stream: the server stores it only right after
//! that one (duplicates are recognised before that check), and refuses it otherwise; the
//! refusal is retried from the first unacknowledged message. Streams are learned per subject
//! (a lookup, then the PubAcks). If the stream turns out to have other publishers (the
//! refusals name ids not ours), the check is dropped for the sink with a warning, and order
//! across reconnects is no longer enforced. Messages whose transform set its own
//! `Nats-Expected-*` header are left alone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_nats::{
    ClientError, ConnectErrorKind, Event, HeaderMap, HeaderName, HeaderValue, ServerAddr,
    ServerError, Subject,
};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use crate::{EncodedBatch, Message, Sink, SinkError, SinkObserver};

/// The subject template used when none is configured.
pub const DEFAULT_SUBJECT: &str = "cdc.{schema}.{table}";
/// How long [`NatsSink::connect`] keeps trying before reporting the server unreachable.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// Default per-publish ack wait.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of unacknowledged publishes pipelined within a batch.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default duplicate window of a stream the sink creates.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

// Header names built once: `from_static` needs no allocation or validation per message.
const EXPECTED_LAST_MSG_ID: HeaderName = HeaderName::from_static("Nats-Expected-Last-Msg-Id");
const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
const CDC_OP: HeaderName = HeaderName::from_static("Cdc-Op");
const CDC_TABLE: HeaderName = HeaderName::from_static("Cdc-Table");
const CDC_LSN: HeaderName = HeaderName::from_static("Cdc-Lsn");
const CDC_COMMIT_LSN: HeaderName = HeaderName::from_static("Cdc-Commit-Lsn");
/// Rendered subject templates remembered per (schema, table, op); cleared when full.
const SUBJECT_CACHE: usize = 256;
/// Stream lookups per batch for subjects not seen before; the rest are assumed to go to the
/// configured stream (and learned from their PubAcks).
const MAX_LOOKUPS_PER_BATCH: usize = 64;
/// Refusals naming an id outside the batch, within one `deliver`, before the order check is
/// dropped as the stream evidently has other publishers.
const FOREIGN_REFUSALS: u32 = 3;
/// Bound on the subjects remembered (per-key routes could otherwise grow it without end).
const SEEN_CAP: usize = 100_000;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

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
}

impl JetStreamOptions {
    /// `create_stream = true`, subjects derived from the template, 2 min duplicate window.
    pub fn new(stream: impl Into<String>) -> Self {
        JetStreamOptions {
            stream: stream.into(),
            create_stream: true,
            subjects: Vec::new(),
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
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

/// Publishes encoded batches to NATS; see the module docs for the guarantees.
#[derive(Debug)]
pub struct NatsSink {
    name: String,
    /// The URL list with any credentials masked, for messages.
    url: String,
    client: async_nats::Client,
    js: Option<Js>,
    subject: String,
    ack_timeout: Duration,
    max_in_flight: usize,
    events: Arc<ConnEvents>,
    /// Recently rendered subjects (see [`NatsSink::subject_for`]).
    subjects: Vec<CachedSubject>,
    /// Reused by every `deliver` (empty between calls).
    prepared: Vec<Prepared>,
}

#[derive(Debug)]
struct CachedSubject {
    schema: Option<Arc<str>>,
    table: Option<Arc<str>>,
    op: &'static str,
    subject: Subject,
}

#[derive(Debug)]
struct Js {
    context: jetstream::Context,
    opts: JetStreamOptions,
    /// The subjects a created stream gets.
    subjects: Vec<String>,
    /// `opts.stream`, the assumed stream of a subject not looked up yet.
    default_stream: Arc<str>,
    fence: Mutex<Fence>,
    /// Where the PubAcks of our publishes arrive (one `deliver` at a time uses it).
    acks: tokio::sync::Mutex<AckInbox>,
}

/// The PubAcks of our publishes, on one wildcard subscription `<inbox>.*`: each publish
/// replies to `<inbox>.<token>`, tokens counting up for the sink's lifetime.
///
/// Why not `jetstream::Context::send_publish`: per message it makes an inbox name, a
/// oneshot channel, a SipHash map entry in the client's request multiplexer, a boxed
/// future with its own timer, and parses the PubAck through an untagged enum; together
/// the largest share of the sink's CPU in profiles. Here a publish is a plain publish with
/// a reply subject, an ack is matched by its token, and one timer watches for the lack of
/// progress. The subscription is renewed by the client after a reconnect; acks of an
/// earlier attempt carry tokens below the current attempt's and are ignored.
#[derive(Debug)]
struct AckInbox {
    /// `<inbox>.`
    prefix: String,
    sub: async_nats::Subscriber,
    next_token: u64,
}

/// The part of a PubAck (or of a JetStream API error) the sink uses.
#[derive(serde::Deserialize)]
struct PubAckBody<'a> {
    #[serde(borrow, default)]
    stream: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<jetstream::Error>,
}

/// Where one message of an attempt stands.
enum AckSlot {
    Pending,
    Done,
    Failed(jetstream::context::PublishError),
}

impl Js {
    fn fence(&self) -> std::sync::MutexGuard<'_, Fence> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// State of the `Nats-Expected-Last-Msg-Id` ordering check.
#[derive(Debug, Default)]
struct Fence {
    /// Subjects stored by another stream than the configured one (from lookups, PubAcks).
    streams: HashMap<String, Arc<str>>,
    /// Subjects whose stream is known (looked up or acknowledged); bounded by `SEEN_CAP`.
    seen: HashSet<String>,
    /// Dropped once the stream turned out to have other publishers.
    disabled: bool,
}

impl Fence {
    /// The stream of `subject` (the configured one unless known otherwise), and whether
    /// that is known rather than assumed.
    fn stream_of(&self, subject: &str, default: &Arc<str>) -> (Arc<str>, bool) {
        let stream = self.streams.get(subject).unwrap_or(default).clone();
        (stream, self.seen.contains(subject))
    }

    fn learn(&mut self, subject: &str, stream: &str, default: &Arc<str>) {
        if stream == &**default {
            self.streams.remove(subject);
        } else if self.streams.len() < SEEN_CAP {
            self.streams.insert(subject.to_string(), Arc::from(stream));
        }
        if self.seen.len() < SEEN_CAP && !self.seen.contains(subject) {
            self.seen.insert(subject.to_string());
        }
    }
}

/// What the connection's event callback saw that retrying cannot cure.
#[derive(Debug, Default)]
struct ConnEvents {
    inner: Mutex<EventState>,
    /// The host's health hook, once attached.
    observer: Mutex<Option<Arc<dyn SinkObserver>>>,
}

#[derive(Debug, Default)]
struct EventState {
    last_connected: Option<Instant>,
    /// An authentication failure while reconnecting, and when.
    auth_failure: Option<(Instant, String)>,
    /// A permissions violation reported by the server.
    permission_violation: Option<String>,
}

impl ConnEvents {
    fn observer(&self) -> Option<Arc<dyn SinkObserver>> {
        self.observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, event: &Event) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Connected => state.last_connected = Some(Instant::now()),
            Event::ServerError(ServerError::AuthorizationViolation) => {
                state.auth_failure = Some((Instant::now(), "authorization violation".into()));
            }
            Event::ServerError(ServerError::Other(text))
                if text.to_ascii_lowercase().contains("permissions violation") =>
            {
                state.permission_violation = Some(text.clone());
            }
            Event::ClientError(ClientError::Other(text))
                if text.contains("authorization violation")
                    || text.contains("failed signing nonce") =>
            {
                state.auth_failure = Some((Instant::now(), text.clone()));
            }
            _ => {}
        }
    }

    /// A failure seen since the last (re)connection that makes retrying pointless: a
    /// permissions violation for `subject` (or for the ack subscription), or, while
    /// disconnected, an authentication failure after the last successful connection.
    fn take_fatal(&self, connected: bool, subject: Option<&str>) -> Option<String> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(text) = state.permission_violation.take() {
            let lower = text.to_ascii_lowercase();
            let ours = subject.is_some_and(|s| text.contains(&format!("\"{s}\"")));
            if ours || lower.contains("subscription") {
                return Some(format!("the NATS server refused: {text}"));
            }
        }
        if connected {
            return None;
        }
        match (&state.auth_failure, state.last_connected) {
            (Some((at, text)), last) if last.is_none_or(|c| *at > c) => {
                let text = text.clone();
                state.auth_failure = None;
                Some(format!("authentication failed while reconnecting: {text}"))
            }
            _ => None,
        }
    }
}

/// A message ready to publish: subject checked, a transform's headers validated. The
/// headers themselves are built at each publish (see [`NatsSink::headers`]): building
/// them once and cloning per attempt cost twice the allocations.
#[derive(Debug)]
struct Prepared {
    subject: Subject,
    /// Headers a transform set, validated; added after (and over) ours.
    extra: Vec<(HeaderName, HeaderValue)>,
    /// A transform set a `Nats-Expected-*` header: no ordering check of ours, and a refusal
    /// is final.
    user_expectation: bool,
    /// A `Nats-Msg-Id` set by a transform, replacing the change id.
    msg_id: Option<String>,
}

/// Counters across the attempts of one `deliver`.
#[derive(Default)]
struct Strikes {
    /// "No stream matches the subject" answers in a row.
    no_stream: u32,
    /// Ordering-check refusals naming an id outside the batch.
    foreign: u32,
}

/// What to do after a failed attempt.
enum Verdict {
    /// Transient: back off, then retry from the first unacknowledged message.
    Retry,
    /// Our ordering check refused a message: retry at once (the retry's first message
    /// carries no check, so every retry makes progress).
    RetryNow,
    Fatal(SinkError),
}

/// Why a publish attempt stopped; `acked` messages from the batch start are durable.
struct Failure {
    acked: usize,
    index: usize,
    kind: FailureKind,
}

enum FailureKind {
    Publish(jetstream::context::PublishError),
    Core(String),
    /// Core NATS refused the message itself (too large, bad subject).
    CoreRejected(String),
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Publish(e) => write!(f, "{e}"),
            FailureKind::Core(e) | FailureKind::CoreRejected(e) => f.write_str(e),
        }
    }
}

impl NatsSink {
    /// Connects (and checks or creates the stream). Gives up after about 10 s when the
    /// server cannot be reached; authentication and TLS errors fail at once. After this,
    /// outages are ridden out: the client reconnects by itself and `deliver` retries.
    pub async fn connect(opts: NatsOptions) -> Result<NatsSink, SinkError> {
        let name = opts.name.clone();
        let url = mask_url(&opts.url);
        let connect_err = |message: String| SinkError::Connect {
            sink: name.clone(),
            message,
        };
        let servers = opts
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                ServerAddr::from_str(s)
                    .map_err(|e| connect_err(format!("invalid NATS URL {:?}: {e}", mask_url(s))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(connect_err("no NATS URL configured".into()));
        }
        // The template must at least render to a valid subject with ordinary names.
        let sample = opts
            .subject
            .replace("{schema}", "s")
            .replace("{table}", "t")
            .replace("{op}", "insert");
        if let Err(why) = check_subject(&sample) {
            return Err(SinkError::Other {
                sink: name.clone(),
                message: format!("subject template {:?} is invalid: {why}", opts.subject),
            });
        }
        let max_in_flight = opts.max_in_flight.max(1);
        let ack_timeout = if opts.ack_timeout.is_zero() {
            DEFAULT_ACK_TIMEOUT
        } else {
            opts.ack_timeout
        };

        let deadline = Instant::now() + CONNECT_DEADLINE;
        let events = Arc::new(ConnEvents::default());
        let mut attempt = 0u32;
        let client = loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let options = connect_options(&opts, &events, max_in_flight, ack_timeout)
                .await
                .map_err(&connect_err)?
                .connection_timeout(
                    remaining.clamp(Duration::from_millis(500), Duration::from_secs(5)),
                );
            match options.connect(servers.clone()).await {
                Ok(client) => break client,
                Err(e) => {
                    let permanent = is_tls_failure(&e)
                        || matches!(
                            e.kind(),
                            ConnectErrorKind::Authentication
                                | ConnectErrorKind::AuthorizationViolation
                                | ConnectErrorKind::Tls
                                | ConnectErrorKind::ServerParse
                        );
                    let wait = backoff(attempt);
                    if permanent || Instant::now() + wait >= deadline {
                        return Err(connect_err(format!("cannot connect to {url}: {e}")));
                    }
                    tracing::warn!(sink = %name, attempt, error = %e, "cannot connect to {url} yet; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };

        let js = match opts.jetstream.clone() {
            None => {
                tracing::warn!(
                    sink = %name,
                    "core NATS (no JetStream): a batch counts as delivered once flushed to the \
                     server; nothing is stored, so changes published while no subscriber \
                     listens, or lost in an outage, are gone (configure a JetStream stream for \
                     durability)"
                );
                None
            }
            Some(js_opts) => {
                let context = jetstream::context::ContextBuilder::new()
                    // Stream management only: publishes and their acks bypass it (see
                    // `AckInbox`).
                    .timeout(ack_timeout)
                    .build(client.clone());
                let subjects = if js_opts.subjects.is_empty() {
                    JetStreamOptions::default_subjects(&opts.subject)
                } else {
                    js_opts.subjects.clone()
                };
                let inbox = client.new_inbox();
                let sub = client
                    .subscribe(format!("{inbox}.*"))
                    .await
                    .map_err(|e| connect_err(format!("cannot subscribe to {inbox}.*: {e}")))?;
                let js = Js {
                    context,
                    default_stream: Arc::from(js_opts.stream.as_str()),
                    opts: js_opts,
                    subjects,
                    fence: Mutex::default(),
                    acks: tokio::sync::Mutex::new(AckInbox {
                        prefix: format!("{inbox}."),
                        sub,
                        next_token: 0,
                    }),
                };
                ensure_stream_until(&name, &url, &js, deadline).await?;
                Some(js)
            }
        };

        Ok(NatsSink {
            name,
            url,
            client,
            js,
            subject: opts.subject,
            ack_timeout,
            max_in_flight,
            events,
            subjects: Vec::new(),
            prepared: Vec::new(),
        })
    }

    fn err(&self, message: String) -> SinkError {
        SinkError::Other {
            sink: self.name.clone(),
            message,
        }
    }

    fn prepare(&mut self, m: &Message) -> Result<Prepared, SinkError> {
        let subject = match &m.route {
            Some(route) => check_subject(route)
                .map(|()| Subject::from(route.as_str()))
                .map_err(|why| (route.clone(), why)),
            None => self.subject_for(m),
        };
        let rejected = |message: String| SinkError::Rejected {
            sink: self.name.clone(),
            id: m.id.clone(),
            message,
        };
        let subject = subject.map_err(|(subject, why)| {
            rejected(format!("invalid NATS subject {subject:?}: {why}"))
        })?;
        // Quoted Postgres identifiers may hold line breaks, which a header value cannot.
        let ours = [m.id.as_str(), &m.lsn, &m.commit_lsn]
            .into_iter()
            .chain(m.schema.as_deref())
            .chain(m.table.as_deref());
        for value in ours {
            if value.contains(['\r', '\n']) {
                return Err(rejected(format!(
                    "{value:?} cannot be a header value (line break)"
                )));
            }
        }
        let mut extra = Vec::new();
        for (key, value) in &m.headers {
            let name = HeaderName::from_str(key)
                .map_err(|e| rejected(format!("invalid header name {key:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| rejected(format!("invalid value of header {key}: {e}")))?;
            extra.push((name, value));
        }
        let user_expectation = m.headers.iter().any(|(k, _)| {
            k.get(..13)
                .is_some_and(|p| p.eq_ignore_ascii_case("nats-expected"))
        });
        // A transform may set its own dedup id; the ordering check must name that one.
        let msg_id = m
            .headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case("nats-msg-id"))
            .map(|(_, v)| v.clone());
        Ok(Prepared {
            subject,
            extra,
            user_expectation,
            msg_id,
        })
    }

    /// The sink's subject template filled in for `m`, from a small cache: rendering and
    /// checking it for every message was a visible share of the sink's CPU.
    fn subject_for(&mut self, m: &Message) -> Result<Subject, (String, &'static str)> {
        let same = |a: &Option<Arc<str>>, b: &Option<Arc<str>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if let Some(hit) = self
            .subjects
            .iter()
            .rev()
            .find(|e| e.op == m.op && same(&e.table, &m.table) && same(&e.schema, &m.schema))
        {
            return Ok(hit.subject.clone());
        }
        let rendered = m.render_template(&self.subject);
        if let Err(why) = check_subject(&rendered) {
            return Err((rendered, why));
        }
        let subject = Subject::from(rendered);
        if self.subjects.len() >= SUBJECT_CACHE {
            self.subjects.clear();
        }
        self.subjects.push(CachedSubject {
            schema: m.schema.clone(),
            table: m.table.clone(),
            op: m.op,
            subject: subject.clone(),
        });
        Ok(subject)
    }

    /// The headers of one publish of `m`: the change id, op, table and LSNs, then those a
    /// transform set.
    fn headers(m: &Message, p: &Prepared) -> HeaderMap {
        let mut table = String::with_capacity(
            m.schema.as_deref().map_or(1, str::len) + m.table.as_deref().map_or(1, str::len) + 1,
        );
        table.push_str(m.schema.as_deref().unwrap_or("_"));
        table.push('.');
        table.push_str(m.table.as_deref().unwrap_or("_"));
        let mut headers = HeaderMap::new();
        // `prepare` rejected values with line breaks: `HeaderValue::from` cannot panic.
        headers.insert(MSG_ID, m.id.clone());
        headers.insert(CDC_OP, m.op);
        headers.insert(CDC_TABLE, table);
        headers.insert(CDC_LSN, m.lsn.clone());
        headers.insert(CDC_COMMIT_LSN, m.commit_lsn.clone());
        for (name, value) in &p.extra {
            headers.insert(name.clone(), value.clone());
        }
        headers
    }

    /// Learns the streams of subjects not seen before (a bounded number of lookups).
    async fn resolve_streams(&self, js: &Js, prepared: &[Prepared]) {
        let unknown: Vec<&str> = {
            let fence = js.fence();
            if fence.disabled {
                return;
            }
            if fence.seen.len() >= SEEN_CAP {
                return;
            }
            let mut distinct = HashSet::new();
            prepared
                .iter()
                .map(|p| p.subject.as_str())
                .filter(|s| !fence.seen.contains(*s) && distinct.insert(*s))
                .take(MAX_LOOKUPS_PER_BATCH)
                .collect()
        };
        for subject in unknown {
            use jetstream::context::GetStreamByNameErrorKind as K;
            match js.context.stream_by_subject(subject).await {
                Ok(stream) => js.fence().learn(subject, &stream, &js.default_stream),
                Err(e) if e.kind() == K::NotFound => {}
                // JetStream not answering: assume the configured stream for now.
                Err(_) => break,
            }
        }
    }

    /// JetStream: publishes `batch[start..]` pipelined, awaiting acks in order.
    async fn publish_js(
        &self,
        js: &Js,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        start: usize,
    ) -> Result<(), Failure> {
        let n = prepared.len();
        // The stream of each message (known, or assumed to be the configured one), for the
        // ordering check; empty when the check is off.
        let streams: Vec<(Arc<str>, bool)> = {
            let fence = js.fence();
            if fence.disabled {
                Vec::new()
            } else {
                // Consecutive messages mostly share a subject: look each run up once.
                let mut last: Option<(&Subject, (Arc<str>, bool))> = None;
                prepared[start..]
                    .iter()
                    .map(|p| match &last {
                        Some((subject, found)) if **subject == p.subject => found.clone(),
                        _ => {
                            let found = fence.stream_of(p.subject.as_str(), &js.default_stream);
                            last = Some((&p.subject, found.clone()));
                            found
                        }
                    })
                    .collect()
            }
        };
        let fenced = !streams.is_empty();
        let mut inbox = js.acks.lock().await;
        let inbox = &mut *inbox;
        // Tokens base.. belong to messages start.. of this attempt.
        let base = inbox.next_token;
        inbox.next_token += (n - start) as u64;
        let token_of = |index: usize| base + (index - start) as u64;
        let mut reply = String::with_capacity(inbox.prefix.len() + 20);
        // Per stream, the id of the last message published in this attempt (a list: a sink
        // mostly feeds one or two streams).
        let mut chain: Vec<(Arc<str>, &str)> = Vec::new();
        // Messages acked.. next: published, their acks awaited in batch order.
        let mut slots: VecDeque<AckSlot> =
            VecDeque::with_capacity(self.max_in_flight.min(n - start));
        let mut next = start;
        let mut acked = start;
        let mut duplicates = 0usize;
        // The ack timeout: no ack for that long while some are awaited. One timer, re-armed
        // only when it fires.
        let mut last_progress = Instant::now();
        let timer = tokio::time::sleep(self.ack_timeout);
        tokio::pin!(timer);
        // Records the ack `m` in its slot (an earlier attempt's is ignored).
        let settle = |m: &async_nats::Message,
                      slots: &mut VecDeque<AckSlot>,
                      acked: usize,
                      duplicates: &mut usize| {
            let token = m
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .and_then(|t| t.parse::<u64>().ok());
            let Some(k) = token
                .and_then(|t| t.checked_sub(token_of(acked)))
                .and_then(|k| usize::try_from(k).ok())
                .filter(|k| *k < slots.len())
            else {
                return;
            };
            let index = acked + k;
            slots[k] = match parse_pub_ack(m) {
                Ok((stream, duplicate)) => {
                    if fenced {
                        let (assumed, known) = &streams[index - start];
                        if !known || **assumed != *stream {
                            js.fence().learn(
                                prepared[index].subject.as_str(),
                                &stream,
                                &js.default_stream,
                            );
                        }
                    }
                    *duplicates += usize::from(duplicate);
                    AckSlot::Done
                }
                Err(e) => AckSlot::Failed(e),
            };
        };
        // Publish in bursts: refill the window only once an eighth of it is free, so the
        // client writes (and the server reads) many messages at a time rather than one per
        // ack.
        let refill_at = self.max_in_flight - self.max_in_flight / 8;
        while acked < n {
            let fill = slots.len() <= refill_at;
            while fill && next < n && slots.len() < self.max_in_flight {
                let p = &prepared[next];
                let id = p.msg_id.as_deref().unwrap_or(&batch.messages[next].id);
                let mut headers = Self::headers(&batch.messages[next], p);
                if fenced {
                    let stream = &streams[next - start].0;
                    let slot = chain
                        .iter()
                        .position(|(s, _)| Arc::ptr_eq(s, stream) || s == stream);
                    let previous = match (slot, id.is_empty()) {
                        // Stored without an id, it leaves nothing to check against.
                        (Some(i), true) => {
                            chain.swap_remove(i);
                            None
                        }
                        (None, true) => None,
                        (Some(i), false) => Some(std::mem::replace(&mut chain[i].1, id)),
                        (None, false) => {
                            chain.push((stream.clone(), id));
                            None
                        }
                    };
                    if let Some(previous) = previous {
                        if !p.user_expectation {
                            if let Ok(value) = HeaderValue::from_str(previous) {
                                headers.insert(EXPECTED_LAST_MSG_ID, value);
                            }
                        }
                    }
                }
                reply.clear();
                let _ = write!(reply, "{}{}", inbox.prefix, token_of(next));
                if slots.is_empty() {
                    // Nothing was awaited: the timeout counts from now.
                    last_progress = Instant::now();
                }
                let published = self
                    .client
                    .publish_with_reply_and_headers(
                        p.subject.clone(),
                        Subject::from(reply.as_str()),
                        headers,
                        batch.messages[next].payload.clone(),
                    )
                    .await;
                if let Err(e) = published {
                    use async_nats::client::PublishErrorKind as C;
                    use jetstream::context::PublishErrorKind as K;
                    let kind = match e.kind() {
                        C::MaxPayloadExceeded => K::MaxPayloadExceeded,
                        C::InvalidSubject | C::Send => K::Other,
                    };
                    return Err(Failure {
                        acked,
                        index: next,
                        kind: FailureKind::Publish(jetstream::context::PublishError::with_source(
                            kind, e,
                        )),
                    });
                }
                slots.push_back(AckSlot::Pending);
                next += 1;
            }
            // Wait for acks; settle the ones at the front.
            tokio::select! {
                biased;
                m = inbox.sub.next() => {
                    let Some(m) = m else {
                        return Err(Failure {
                            acked,
                            index: acked,
                            kind: FailureKind::Publish(jetstream::context::PublishError::new(
                                jetstream::context::PublishErrorKind::BrokenPipe,
                            )),
                        });
                    };
                    settle(&m, &mut slots, acked, &mut duplicates);
                    // Take every ack already there before publishing again.
                    while let Some(Some(m)) = inbox.sub.next().now_or_never() {
                        settle(&m, &mut slots, acked, &mut duplicates);
                    }
                }
                () = &mut timer => {
                    if last_progress.elapsed() >= self.ack_timeout {
                        return Err(Failure {
                            acked,
                            index: acked,
                            kind: FailureKind::Publish(jetstream::context::PublishError::new(
                                jetstream::context::PublishErrorKind::TimedOut,
                            )),
                        });
                    }
                    timer.as_mut().reset(last_progress + self.ack_timeout);
                    continue;
                }
            }
            let before = acked;
            while let Some(front) = slots.pop_front() {
                match front {
                    AckSlot::Pending => {
                        slots.push_front(AckSlot::Pending);
                        break;
                    }
                    AckSlot::Done => acked += 1,
                    AckSlot::Failed(e) => {
                        return Err(Failure {
                            acked,
                            index: acked,
                            kind: FailureKind::Publish(e),
                        })
                    }
                }
            }
            if acked > before {
                last_progress = Instant::now();
            }
        }
        if duplicates > 0 {
            tracing::debug!(
                sink = %self.name,
                batch = batch.seq,
                duplicates,
                "the stream already held some messages of the batch (replay)"
            );
        }
        Ok(())
    }

    /// Core NATS: publishes the whole batch, then flushes.
    async fn publish_core(
        &self,
        batch: &EncodedBatch,
        prepared: &[Prepared],
    ) -> Result<(), Failure> {
        let fail = |index: usize, e: String| Failure {
            acked: 0,
            index,
            kind: FailureKind::Core(e),
        };
        for (i, (p, m)) in prepared.iter().zip(&batch.messages).enumerate() {
            let publish = self.client.publish_with_headers(
                p.subject.clone(),
                Self::headers(m, p),
                m.payload.clone(),
            );
            match tokio::time::timeout(self.ack_timeout, publish).await {
                Ok(Ok(())) => {}
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        async_nats::PublishErrorKind::MaxPayloadExceeded
                            | async_nats::PublishErrorKind::InvalidSubject
                    ) =>
                {
                    return Err(Failure {
                        acked: 0,
                        index: i,
                        kind: FailureKind::CoreRejected(e.to_string()),
                    })
                }
                Ok(Err(e)) => return Err(fail(i, e.to_string())),
                Err(_) => return Err(fail(i, "timed out queueing the publish".into())),
            }
        }
        match tokio::time::timeout(self.ack_timeout, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(prepared.len(), format!("flush failed: {e}"))),
            Err(_) => Err(fail(prepared.len(), "flush timed out".into())),
        }
    }

    /// Decides whether a failed attempt is worth retrying.
    async fn classify(
        &self,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        failure: &Failure,
        strikes: &mut Strikes,
    ) -> Verdict {
        let connected = self.client.connection_state() == State::Connected;
        let subject = prepared.get(failure.index).map(|p| p.subject.as_str());
        if let Some(fatal) = self.events.take_fatal(connected, subject) {
            return Verdict::Fatal(match batch.messages.get(failure.index) {
                Some(m) => SinkError::Rejected {
                    sink: self.name.clone(),
                    id: m.id.clone(),
                    message: fatal,
                },
                None => self.err(fatal),
            });
        }
        if let FailureKind::CoreRejected(message) = &failure.kind {
            return Verdict::Fatal(SinkError::Rejected {
                sink: self.name.clone(),
                id: batch.messages[failure.index].id.clone(),
                message: message.clone(),
            });
        }
        let (FailureKind::Publish(e), Some(js)) = (&failure.kind, &self.js) else {
            return Verdict::Retry;
        };
        let rejected = |message: String| {
            Verdict::Fatal(SinkError::Rejected {
                sink: self.name.clone(),
                id: batch.messages[failure.index].id.clone(),
                message,
            })
        };
        let subject = || prepared[failure.index].subject.to_string();
        use jetstream::context::PublishErrorKind as K;
        use jetstream::ErrorCode;
        match e.kind() {
            K::MaxPayloadExceeded => rejected(format!(
                "{e} (raise the server's max_payload or shrink the change)"
            )),
            K::WrongLastMessageId if !prepared[failure.index].user_expectation => {
                let subject = prepared[failure.index].subject.as_str();
                self.fence_refused(js, batch, prepared, subject, e, strikes)
            }
            K::WrongLastMessageId | K::WrongLastSequence => rejected(format!(
                "{e} (an expectation header set by a transform failed)"
            )),
            K::StreamNotFound if connected => {
                self.check_subject_bound(js, &subject(), &mut strikes.no_stream)
                    .await
            }
            K::Other => {
                let api =
                    std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
                match api.map(|a| a.error_code()) {
                    Some(
                        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                        | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
                    ) => rejected(e.to_string()),
                    Some(ErrorCode::STREAM_NOT_FOUND) => {
                        self.check_subject_bound(js, &subject(), &mut strikes.no_stream)
                            .await
                    }
                    _ => Verdict::Retry,
                }
            }
            _ => Verdict::Retry,
        }
    }

    /// Our `Nats-Expected-Last-Msg-Id` check refused a message: retry at once; drop the
    /// check when the stream evidently has other publishers.
    fn fence_refused(
        &self,
        js: &Js,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        subject: &str,
        e: &jetstream::context::PublishError,
        strikes: &mut Strikes,
    ) -> Verdict {
        // "wrong last msg ID: <id> (code 400, error code 10070)"
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let last = text
            .split_once("wrong last msg ID: ")
            .map(|(_, rest)| rest.split(" (code").next().unwrap_or(rest));
        // Only a refusal by a stream known to store the subject says something about the
        // stream's publishers (an assumed stream may simply be the wrong one).
        let known = js.fence().seen.contains(subject);
        let ours = match last {
            Some(last) => {
                batch.messages.iter().any(|m| m.id == last)
                    || prepared.iter().any(|p| p.msg_id.as_deref() == Some(last))
            }
            None => true,
        };
        if !ours && known {
            strikes.foreign += 1;
            if strikes.foreign >= FOREIGN_REFUSALS {
                js.fence().disabled = true;
                tracing::warn!(
                    sink = %self.name,
                    stream = %js.opts.stream,
                    "the stream holds messages from other publishers (last id {:?} is not \
                     ours): no longer checking Nats-Expected-Last-Msg-Id, so after a \
                     reconnect messages may land out of order",
                    last.unwrap_or_default()
                );
            }
        }
        Verdict::RetryNow
    }

    /// After "no responders" on a publish: is there a stream for the subject at all?
    async fn check_subject_bound(&self, js: &Js, subject: &str, strikes: &mut u32) -> Verdict {
        use jetstream::context::GetStreamByNameErrorKind as K;
        match js.context.stream_by_subject(subject).await {
            Ok(_) => {
                *strikes = 0;
                Verdict::Retry
            }
            Err(e) if e.kind() == K::NotFound => {
                *strikes += 1;
                if js.opts.create_stream {
                    // Deleted while we run? Recreate it; if it exists, it does not cover
                    // the subject.
                    match ensure_stream(&js.context, &js.opts, &js.subjects, &self.name).await {
                        Ok(true) => return Verdict::RetryNow,
                        Ok(false) => {}
                        Err(Step::Retry(_)) => return Verdict::Retry,
                        Err(Step::Fatal(message)) => return Verdict::Fatal(self.err(message)),
                    }
                }
                // Ask twice (a backoff apart) before giving up: a restarting cluster may
                // answer before its streams are back.
                if *strikes < 2 {
                    return Verdict::Retry;
                }
                let message = if js.opts.create_stream {
                    format!(
                        "no stream matches subject {subject}: add it to the subjects of stream \
                         {} (it exists, so create_stream leaves it as it is) or change the \
                         subject template or route",
                        js.opts.stream
                    )
                } else {
                    format!(
                        "no stream matches subject {subject}: add it to the stream's subjects \
                         or set create_stream (stream {})",
                        js.opts.stream
                    )
                };
                Verdict::Fatal(self.err(message))
            }
            Err(_) => Verdict::Retry,
        }
    }
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, observer: Arc<dyn SinkObserver>) {
        *self
            .events
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
        // One vector for every batch: a fresh multi-hundred-KB allocation per batch showed
        // up as page faults in profiles.
        let mut prepared = std::mem::take(&mut self.prepared);
        prepared.clear();
        for m in &batch.messages {
            prepared.push(self.prepare(m)?);
        }
        let result = self.deliver_prepared(&batch, &prepared).await;
        prepared.clear();
        self.prepared = prepared;
        result
    }
}

impl NatsSink {
    /// Publishes a prepared batch until it is durable, retrying transient failures.
    async fn deliver_prepared(
        &self,
        batch: &EncodedBatch,
        prepared: &[Prepared],
    ) -> Result<(), SinkError> {
        if prepared.is_empty() {
            return Ok(());
        }
        if let Some(js) = &self.js {
            self.resolve_streams(js, prepared).await;
        }
        let mut start = 0usize;
        let mut attempt = 0u32;
        let mut strikes = Strikes::default();
        loop {
            let result = match &self.js {
                Some(js) => self.publish_js(js, batch, prepared, start).await,
                None => self.publish_core(batch, prepared).await,
            };
            let failure = match result {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            let verdict = self.classify(batch, prepared, &failure, &mut strikes).await;
            if failure.acked > start {
                // Progress: the next failure starts a fresh backoff.
                attempt = 0;
            }
            start = failure.acked;
            let id = batch
                .messages
                .get(failure.index)
                .map(|m| m.id.as_str())
                .unwrap_or("(flush)");
            let wait = match verdict {
                Verdict::Fatal(e) => return Err(e),
                Verdict::RetryNow => {
                    tracing::debug!(
                        sink = %self.name,
                        error = %failure.kind,
                        batch = batch.seq,
                        acked = start,
                        change = id,
                        "out-of-order publish refused by the ordering check; republishing"
                    );
                    continue;
                }
                Verdict::Retry => {
                    attempt += 1;
                    backoff(attempt)
                }
            };
            tracing::warn!(
                sink = %self.name,
                attempt,
                error = %failure.kind,
                batch = batch.seq,
                acked = start,
                total = prepared.len(),
                change = id,
                retry_in_ms = wait.as_millis() as u64,
                "NATS publish to {} failed; retrying",
                self.url
            );
            if let Some(o) = self.events.observer() {
                o.retrying(&self.name, attempt);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The stream and duplicate flag of a PubAck, or the error it carries.
fn parse_pub_ack(
    m: &async_nats::Message,
) -> Result<(std::borrow::Cow<'_, str>, bool), jetstream::context::PublishError> {
    use jetstream::context::{PublishError, PublishErrorKind as K};
    use jetstream::ErrorCode;
    if let Some(status) = m.status {
        if status == async_nats::StatusCode::NO_RESPONDERS {
            return Err(PublishError::new(K::StreamNotFound));
        }
        if !status.is_success() {
            let why = m.description.clone().unwrap_or_default();
            return Err(PublishError::with_source(
                K::Other,
                format!("status {status} {why}"),
            ));
        }
    }
    let body: PubAckBody<'_> =
        serde_json::from_slice(&m.payload).map_err(|e| PublishError::with_source(K::Other, e))?;
    if let Some(error) = body.error {
        let kind = match error.error_code() {
            ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => K::WrongLastMessageId,
            ErrorCode::STREAM_WRONG_LAST_SEQUENCE => K::WrongLastSequence,
            _ => K::Other,
        };
        return Err(PublishError::with_source(kind, error));
    }
    match body.stream {
        Some(stream) => Ok((stream, body.duplicate)),
        None => Err(PublishError::with_source(
            K::Other,
            "PubAck without a stream name",
        )),
    }
}

/// The client options for one connection attempt.
async fn connect_options(
    opts: &NatsOptions,
    events: &Arc<ConnEvents>,
    max_in_flight: usize,
    ack_timeout: Duration,
) -> Result<async_nats::ConnectOptions, String> {
    let mut options = match &opts.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsAuth::NkeySeed(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?,
    };
    if let Some(tls) = &opts.tls {
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => return Err("TLS client_cert and client_key must be set together".into()),
        }
        options = options.require_tls(tls.required);
    }
    let name = opts.name.clone();
    let events = events.clone();
    Ok(options
        .name(format!("cdc-host:{}", opts.name))
        .max_reconnects(None)
        .ping_interval(Duration::from_secs(10))
        .request_timeout(Some(ack_timeout))
        .client_capacity(max_in_flight.saturating_mul(2).max(2048))
        .event_callback(move |event| {
            let events = events.clone();
            let name = name.clone();
            async move {
                events.record(&event);
                if let (Some(o), Event::Connected | Event::Disconnected) =
                    (events.observer(), &event)
                {
                    o.connection(&name, matches!(event, Event::Connected));
                }
                match &event {
                    Event::Disconnected => {
                        tracing::warn!(sink = %name, "disconnected from NATS; reconnecting")
                    }
                    Event::Connected => tracing::info!(sink = %name, "connected to NATS"),
                    // Each failed reconnection attempt; `deliver` reports the stall itself.
                    Event::ClientError(_) | Event::Closed => {
                        tracing::debug!(sink = %name, event = %event, "NATS connection event")
                    }
                    other => tracing::warn!(sink = %name, event = %other, "NATS connection event"),
                }
            }
        }))
}

/// What to do after a failed stream check.
enum Step {
    Retry(String),
    Fatal(String),
}

/// Makes sure the stream exists; `Ok(true)` when it was just created.
async fn ensure_stream(
    context: &jetstream::Context,
    opts: &JetStreamOptions,
    subjects: &[String],
    sink: &str,
) -> Result<bool, Step> {
    use jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
    use jetstream::ErrorCode;
    let missing = match context.get_stream(&opts.stream).await {
        Ok(mut s) => {
            let info = s.info().await.ok().map(|i| i.config.clone());
            tracing::info!(
                sink,
                stream = %opts.stream,
                subjects = ?info.as_ref().map(|c| &c.subjects),
                duplicate_window = ?info.as_ref().map(|c| c.duplicate_window),
                "JetStream stream exists; leaving its configuration as is"
            );
            return Ok(false);
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND || api.code() == 404 =>
            {
                true
            }
            GetStreamErrorKind::JetStream(api) => {
                return Err(Step::Retry(format!("JetStream answered: {api}")))
            }
            GetStreamErrorKind::Request => {
                return Err(Step::Retry(format!(
                    "JetStream does not answer ({e}): is the server running with JetStream \
                     enabled (-js, or a jetstream {{}} block), and is the account JetStream-enabled?"
                )))
            }
            GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => {
                return Err(Step::Fatal(format!(
                    "invalid JetStream stream name {:?}: {e}",
                    opts.stream
                )))
            }
        },
    };
    debug_assert!(missing);
    if !opts.create_stream {
        return Err(Step::Fatal(format!(
            "JetStream stream {stream} does not exist: create it (for example `nats stream add \
             {stream} --subjects '{subjects}' --storage file --dupe-window 2m`) or set \
             create_stream = true",
            stream = opts.stream,
            subjects = subjects.join(","),
        )));
    }
    let config = stream::Config {
        name: opts.stream.clone(),
        subjects: subjects.to_vec(),
        storage: stream::StorageType::File,
        duplicate_window: opts.duplicate_window,
        ..Default::default()
    };
    match context.create_stream(config).await {
        Ok(_) => {
            tracing::info!(
                sink,
                stream = %opts.stream,
                ?subjects,
                duplicate_window = ?opts.duplicate_window,
                "created JetStream stream"
            );
            Ok(true)
        }
        Err(e) => match e.kind() {
            // Created concurrently by someone else: fine.
            CreateStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                Ok(false)
            }
            CreateStreamErrorKind::JetStream(api) => Err(Step::Fatal(format!(
                "cannot create JetStream stream {} with subjects {subjects:?}: {api}",
                opts.stream
            ))),
            CreateStreamErrorKind::EmptyStreamName
            | CreateStreamErrorKind::InvalidStreamName
            | CreateStreamErrorKind::DomainAndExternalSet => Err(Step::Fatal(format!(
                "cannot create JetStream stream {:?}: {e}",
                opts.stream
            ))),
            _ => Err(Step::Retry(format!(
                "cannot create JetStream stream {}: {e}",
                opts.stream
            ))),
        },
    }
}

/// [`ensure_stream`], retrying transient failures until `deadline`.
async fn ensure_stream_until(
    sink: &str,
    url: &str,
    js: &Js,
    deadline: Instant,
) -> Result<(), SinkError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match ensure_stream(&js.context, &js.opts, &js.subjects, sink).await {
            Ok(_) => return Ok(()),
            Err(Step::Fatal(message)) => {
                return Err(SinkError::Other {
                    sink: sink.to_string(),
                    message,
                })
            }
            Err(Step::Retry(message)) => {
                let wait = backoff(attempt);
                if Instant::now() + wait >= deadline {
                    return Err(SinkError::Connect {
                        sink: sink.to_string(),
                        message: format!("{url}: {message}"),
                    });
                }
                tracing::warn!(sink, attempt, error = %message, "JetStream not ready; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A TLS handshake failure (untrusted or refused certificate, …): the client reports those
/// as I/O errors, but retrying will not cure them.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if err.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if inner.is::<async_nats::rustls::Error>() {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// A subject one can publish to: non-empty tokens, no whitespace or control characters,
/// no wildcards.
fn check_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("empty subject");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    for token in subject.split('.') {
        match token {
            "" => return Err("empty token (leading, trailing or doubled '.')"),
            "*" | ">" => return Err("wildcards cannot be published to"),
            _ => {}
        }
    }
    Ok(())
}

/// Capped exponential backoff with jitter: attempt 1 waits 50–100 ms, doubling to 2.5–5 s.
fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    let jitter = RandomState::new().hash_one(attempt) % 1000;
    full / 2 + full / 2 * (jitter as u32) / 1000
}

/// The URL list with passwords and tokens in `user:pass@` replaced by `***`.
fn mask_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            let rest_at = u.find("://").map(|i| i + 3).unwrap_or(0);
            match u[rest_at..].find('@') {
                Some(at) => format!("{}***@{}", &u[..rest_at], &u[rest_at + at + 1..]),
                None => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("cdc.public.users").is_ok());
        assert!(check_subject("").is_err());
        assert!(check_subject("cdc..users").is_err());
        assert!(check_subject("cdc.users.").is_err());
        assert!(check_subject("cdc.my table").is_err());
        assert!(check_subject("cdc.*").is_err());
        assert!(check_subject("cdc.>").is_err());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP, "{d:?}");
            assert!(d >= BACKOFF_BASE / 2, "{d:?}");
        }
        assert!(backoff(1) <= BACKOFF_BASE);
        assert!(backoff(30) >= BACKOFF_CAP / 2);
    }

    fn reply(payload: &str, status: Option<async_nats::StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.x.1".into(),
            reply: None,
            payload: bytes::Bytes::from(payload.to_owned()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn pub_acks_are_parsed() {
        use jetstream::context::PublishErrorKind as K;
        let ok = reply(r#"{"stream":"CDC","seq":7}"#, None);
        assert_eq!(parse_pub_ack(&ok).unwrap(), ("CDC".into(), false));
        let dup = reply(r#"{"stream":"CDC","seq":7,"duplicate":true}"#, None);
        assert_eq!(parse_pub_ack(&dup).unwrap(), ("CDC".into(), true));
        let wrong_last = reply(
            r#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: a"}}"#,
            None,
        );
        let e = parse_pub_ack(&wrong_last).unwrap_err();
        assert_eq!(e.kind(), K::WrongLastMessageId);
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .to_string()
                .contains("wrong last msg ID: a"),
            "{e}"
        );
        let other = reply(
            r#"{"error":{"code":503,"err_code":10077,"description":"resource limits"}}"#,
            None,
        );
        assert_eq!(parse_pub_ack(&other).unwrap_err().kind(), K::Other);
        let none = reply("", Some(async_nats::StatusCode::NO_RESPONDERS));
        assert_eq!(parse_pub_ack(&none).unwrap_err().kind(), K::StreamNotFound);
        assert_eq!(
            parse_pub_ack(&reply("{", None)).unwrap_err().kind(),
            K::Other
        );
        assert_eq!(
            parse_pub_ack(&reply("{}", None)).unwrap_err().kind(),
            K::Other
        );
    }

    #[test]
    fn urls_are_masked() {
        assert_eq!(
            mask_url("nats://u:p@h:4222, nats://h2"),
            "nats://***@h:4222,nats://h2"
        );
        assert_eq!(mask_url("h:4222"), "h:4222");
    }
}
