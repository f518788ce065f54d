//! [`NatsSink`]: the sink, and delivery of a batch until it is durable.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;

use super::events::ConnEvents;
use super::prepare::{prepare, Prepared, Subjects};
use super::publish::Publisher;
use super::state::{sink_error, Failure, FailureKind, Js, Strikes, Verdict, RETRY};
use crate::{EncodedBatch, Sink, SinkError, SinkObserver};

/// Publishes encoded batches to NATS; see the module docs for the guarantees.
#[derive(Debug)]
pub struct NatsSink {
    pub(super) name: String,
    /// The URL list with any credentials masked, for messages.
    pub(super) url: String,
    pub(super) client: async_nats::Client,
    pub(super) js: Option<Js>,
    pub(super) ack_timeout: Duration,
    pub(super) max_in_flight: usize,
    pub(super) events: Arc<ConnEvents>,
    /// The subject template, and its recently rendered subjects.
    pub(super) subjects: Subjects,
    /// Reused by every `deliver` (empty between calls).
    pub(super) prepared: Vec<Prepared>,
}

impl NatsSink {
    pub(super) fn err(&self, message: String) -> SinkError {
        sink_error(&self.name, message)
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
            prepared.push(prepare(&self.name, &mut self.subjects, m)?);
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
            js.resolve_streams(prepared).await;
        }
        let publisher = Publisher {
            name: &self.name,
            client: &self.client,
            ack_timeout: self.ack_timeout,
            max_in_flight: self.max_in_flight,
        };
        let mut start = 0usize;
        let mut attempt = 0u32;
        let mut strikes = Strikes::default();
        loop {
            let result = match &self.js {
                Some(js) => publisher.jetstream(js, batch, prepared, start).await,
                None => publisher.core(batch, prepared).await,
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
                    RETRY.delay(attempt)
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
                js.fence_refused(&self.name, batch, prepared, subject, e, strikes)
            }
            K::WrongLastMessageId | K::WrongLastSequence => rejected(format!(
                "{e} (an expectation header set by a transform failed)"
            )),
            K::StreamNotFound if connected => {
                js.check_subject_bound(&self.name, &subject(), &mut strikes.no_stream)
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
                        js.check_subject_bound(&self.name, &subject(), &mut strikes.no_stream)
                            .await
                    }
                    _ => Verdict::Retry,
                }
            }
            _ => Verdict::Retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..40 {
            let d = RETRY.delay(attempt);
            assert!(d <= cap, "{d:?}");
            assert!(d >= base / 2, "{d:?}");
        }
        assert!(RETRY.delay(1) <= base);
        assert!(RETRY.delay(30) >= cap / 2);
    }
}
