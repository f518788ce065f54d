//! The state and verdicts the NATS sink's layers share: the JetStream side ([`Js`], with
//! the ordering fence's memory), the outcome of a publish attempt ([`Failure`]) and what to
//! do about it ([`Verdict`]). A leaf: `sink` → `publish` → `fence` → here, and `stream`,
//! `connect` build on it too, so no layer below the sink names the sink.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;

use super::acks::AckInbox;
use super::options::JetStreamOptions;
use crate::retry::Backoff;
use crate::SinkError;

/// Transient failures: attempt 1 waits 50–100 ms, doubling to 2.5–5 s.
pub(super) const RETRY: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).half_jitter();

/// Bound on the subjects remembered (per-key routes could otherwise grow it without end).
pub(super) const SEEN_CAP: usize = 100_000;

/// The JetStream side of a sink.
#[derive(Debug)]
pub(super) struct Js {
    pub(super) context: jetstream::Context,
    pub(super) opts: JetStreamOptions,
    /// The subjects a created stream gets.
    pub(super) subjects: Vec<String>,
    /// `opts.stream`, the assumed stream of a subject not looked up yet.
    pub(super) default_stream: Arc<str>,
    pub(super) fence: Mutex<Fence>,
    /// Where the PubAcks of our publishes arrive (one `deliver` at a time uses it).
    pub(super) acks: tokio::sync::Mutex<AckInbox>,
}

/// Counters across the attempts of one `deliver`.
#[derive(Default)]
pub(super) struct Strikes {
    /// "No stream matches the subject" answers in a row.
    pub(super) no_stream: u32,
    /// Ordering-check refusals naming an id outside the batch.
    pub(super) foreign: u32,
}

/// What to do after a failed attempt.
pub(super) enum Verdict {
    /// Transient: back off, then retry from the first unacknowledged message.
    Retry,
    /// Our ordering check refused a message: retry at once (the retry's first message
    /// carries no check, so every retry makes progress).
    RetryNow,
    Fatal(SinkError),
}

impl Js {
    pub(super) fn fence(&self) -> std::sync::MutexGuard<'_, Fence> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// State of the `Nats-Expected-Last-Msg-Id` ordering check.
#[derive(Debug, Default)]
pub(super) struct Fence {
    /// Subjects stored by another stream than the configured one (from lookups, PubAcks).
    pub(super) streams: HashMap<String, Arc<str>>,
    /// Subjects whose stream is known (looked up or acknowledged); bounded by `SEEN_CAP`.
    pub(super) seen: HashSet<String>,
    /// Dropped once the stream turned out to have other publishers.
    pub(super) disabled: bool,
    /// Per stream, whether it is replicated (see `fence`: a replicated stream is never
    /// fenced); a stream not in here yet is not fenced either until its replicas are known.
    pub(super) replicated: HashMap<Arc<str>, bool>,
    /// Streams learned for subjects whose replicas are not known yet.
    pub(super) unchecked: Vec<Arc<str>>,
    /// Per stream, whether it allows fast batches (`allow_batched`): batches bound for
    /// such a stream alone go out as ordered batches (see `ordered`) instead of fenced
    /// publishes. Learned with `replicated`.
    pub(super) batched: HashMap<Arc<str>, bool>,
}

impl Fence {
    /// The stream of `subject` (the configured one unless known otherwise), and whether
    /// that is known rather than assumed.
    pub(super) fn stream_of(&self, subject: &str, default: &Arc<str>) -> (Arc<str>, bool) {
        let stream = self.streams.get(subject).unwrap_or(default).clone();
        (stream, self.seen.contains(subject))
    }

    /// Whether messages bound for `stream` carry the check: only once the stream is known
    /// to have a single replica.
    pub(super) fn fences(&self, stream: &str) -> bool {
        self.replicated.get(stream) == Some(&false)
    }

    pub(super) fn learn(&mut self, subject: &str, stream: &str, default: &Arc<str>) {
        if stream == &**default {
            self.streams.remove(subject);
        } else if self.streams.len() < SEEN_CAP {
            let stream: Arc<str> = Arc::from(stream);
            if !self.replicated.contains_key(&stream) && !self.unchecked.contains(&stream) {
                self.unchecked.push(stream.clone());
            }
            self.streams.insert(subject.to_string(), stream);
        }
        if self.seen.len() < SEEN_CAP && !self.seen.contains(subject) {
            self.seen.insert(subject.to_string());
        }
    }
}

/// Why a publish attempt stopped; `acked` messages from the batch start are durable.
pub(super) struct Failure {
    pub(super) acked: usize,
    pub(super) index: usize,
    pub(super) kind: FailureKind,
}

pub(super) enum FailureKind {
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

/// A sink's error that is not about one change.
pub(super) fn sink_error(sink: &str, message: String) -> SinkError {
    SinkError::Other {
        sink: sink.to_owned(),
        message,
    }
}
