//! [`NatsSink`]: the sink, and delivery of a batch until it is durable.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;

use super::atomic::{self, api_code, Chunk, OpenTxn};
use super::events::ConnEvents;
use super::options::Atomic;
use super::ordered;
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
    /// Atomic mode: the batch's chunks (reused), and the transaction the last batch left
    /// open.
    pub(super) chunks: Vec<Chunk>,
    pub(super) open_txn: Option<OpenTxn>,
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
        let mut chunks = std::mem::take(&mut self.chunks);
        chunks.clear();
        if let Some(js) = self
            .js
            .as_ref()
            .filter(|j| j.opts.atomic == Atomic::Transaction)
        {
            atomic::chunks(
                &batch,
                js.opts.atomic_max_batch,
                &mut self.open_txn,
                &mut chunks,
            );
        }
        let result = self.deliver_prepared(&batch, &prepared, &chunks).await;
        prepared.clear();
        self.prepared = prepared;
        self.chunks = chunks;
        result
    }
}

impl NatsSink {
    /// Publishes a prepared batch until it is durable, retrying transient failures: as
    /// atomic `chunks` when there are some, else one publish per message.
    async fn deliver_prepared(
        &self,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        chunks: &[Chunk],
    ) -> Result<(), SinkError> {
        if prepared.is_empty() {
            return Ok(());
        }
        if let Some(js) = &self.js {
            js.resolve_streams(prepared).await;
            js.check_replicas(&self.name).await;
        }
        match &self.js {
            Some(js) if !chunks.is_empty() => {
                self.deliver_atomic(js, batch, prepared, chunks).await
            }
            _ => self.deliver_plain(batch, prepared).await,
        }
    }

    fn publisher(&self) -> Publisher<'_> {
        Publisher {
            name: &self.name,
            client: &self.client,
            ack_timeout: self.ack_timeout,
            max_in_flight: self.max_in_flight,
        }
    }

    /// Atomic mode: the chunks in order, each retried until durable (see `atomic`).
    async fn deliver_atomic(
        &self,
        js: &Js,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        chunks: &[Chunk],
    ) -> Result<(), SinkError> {
        let publisher = self.publisher();
        let mut next = 0usize;
        let mut attempt = 0u32;
        let mut strikes = Strikes::default();
        while next < chunks.len() {
            let f = match publisher.atomic(js, batch, prepared, &chunks[next..]).await {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            if f.done > 0 {
                attempt = 0;
            }
            next += f.done;
            let c = &chunks[next];
            if f.duplicate {
                // Stored before (a replay after a crash or a lost PubAck): message by
                // message, so the server drops what it holds and stores anything missing.
                tracing::debug!(
                    sink = %self.name,
                    batch = batch.seq,
                    change = %batch.messages[c.start].id,
                    changes = c.end - c.start,
                    "the stream already holds changes of this atomic batch (replay); \
                     publishing them one by one"
                );
                let part = EncodedBatch {
                    seq: batch.seq,
                    messages: batch.messages[c.start..c.end].to_vec(),
                    continues: false,
                    lines: None,
                };
                self.deliver_plain(&part, &prepared[c.start..c.end]).await?;
                next += 1;
                attempt = 0;
                continue;
            }
            let failure = f.failure;
            let wait = match self.classify(batch, prepared, &failure, &mut strikes).await {
                Verdict::Fatal(e) => return Err(e),
                Verdict::RetryNow => continue,
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
                chunk = next,
                chunks = chunks.len(),
                change = %batch.messages[failure.index.min(batch.messages.len() - 1)].id,
                retry_in_ms = wait.as_millis() as u64,
                "NATS atomic batch publish to {} failed; retrying the batch",
                self.url
            );
            if let Some(o) = self.events.observer() {
                o.retrying(&self.name, attempt);
            }
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// One publish per message, pipelined, until the batch is durable.
    async fn deliver_plain(
        &self,
        batch: &EncodedBatch,
        prepared: &[Prepared],
    ) -> Result<(), SinkError> {
        let publisher = self.publisher();
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
                    id: m.id.to_string(),
                    message: fatal,
                },
                None => self.err(fatal),
            });
        }
        if let FailureKind::CoreRejected(message) = &failure.kind {
            return Verdict::Fatal(SinkError::Rejected {
                sink: self.name.clone(),
                id: batch.messages[failure.index].id.to_string(),
                message: message.clone(),
            });
        }
        let (FailureKind::Publish(e), Some(js)) = (&failure.kind, &self.js) else {
            return Verdict::Retry;
        };
        let rejected = |message: String| {
            Verdict::Fatal(SinkError::Rejected {
                sink: self.name.clone(),
                id: batch.messages[failure.index].id.to_string(),
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
                let stream = &js.opts.stream;
                match api_code(e) {
                    Some(atomic::code::DISABLED) => Verdict::Fatal(self.err(format!(
                        "{e}: JetStream stream {stream} does not allow atomic batches, which \
                         [sinks.jetstream] atomic = \"transaction\" needs (allow them with \
                         `nats stream edit {stream} --allow-batch`, i.e. allow_atomic = true in \
                         the stream's configuration; nats-server 2.12 or later)"
                    ))),
                    Some(atomic::code::TOO_LARGE) => Verdict::Fatal(self.err(format!(
                        "{e}: the server takes fewer messages per atomic batch than \
                         atomic_max_batch = {}: lower atomic_max_batch or raise the server's \
                         limit (jetstream {{ limits {{ batch {{ max_msgs: N }} }} }})",
                        js.opts.atomic_max_batch
                    ))),
                    Some(
                        ordered::code::DISABLED
                        | ordered::code::INVALID_PATTERN
                        | ordered::code::INVALID_ID,
                    ) => {
                        tracing::warn!(
                            sink = %self.name,
                            error = %e,
                            "the stream refused an ordered batch; publishing to it message by \
                             message from now on"
                        );
                        js.not_batched(&prepared[failure.index..]);
                        Verdict::RetryNow
                    }
                    // The stream's leader changed and the new one no longer knows the batch.
                    Some(ordered::code::UNKNOWN_ID) => Verdict::RetryNow,
                    Some(atomic::code::UNSUPPORTED_HEADER) => rejected(format!(
                        "{e} (a header set by a transform is not allowed in an atomic batch)"
                    )),
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
