//! Publishing one attempt of a batch: JetStream pipelined (acks awaited in batch order),
//! or core NATS (publish, then flush).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError};
use async_nats::{HeaderValue, Subject};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::acks::{parse_pub_ack, AckInbox, AckSlot};
use super::fence::{Chain, Dest};
use super::prepare::{headers, Prepared, EXPECTED_LAST_MSG_ID};
use super::state::{Failure, FailureKind, Js};
use crate::EncodedBatch;

/// What publishing an attempt needs of the sink: its name (for logs), its client, and its
/// limits.
pub(super) struct Publisher<'a> {
    pub(super) name: &'a str,
    pub(super) client: &'a async_nats::Client,
    pub(super) ack_timeout: Duration,
    pub(super) max_in_flight: usize,
}

impl Publisher<'_> {
    /// JetStream: publishes `batch[start..]` pipelined, awaiting acks in order.
    pub(super) async fn jetstream(
        &self,
        js: &Js,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        start: usize,
    ) -> Result<(), Failure> {
        let n = prepared.len();
        let mut inbox = js.acks.lock().await;
        let inbox = &mut *inbox;
        if js.one_batched_stream(&prepared[start..]) {
            return self.ordered(inbox, batch, prepared, start).await;
        }
        let mut attempt = Attempt::new(js, batch, prepared, start, inbox, self.max_in_flight);
        let mut reply = String::with_capacity(inbox.prefix.len() + 20);
        // The ack timeout: no ack for that long while some are awaited. One timer, re-armed
        // only when it fires.
        let mut last_progress = Instant::now();
        let timer = tokio::time::sleep(self.ack_timeout);
        tokio::pin!(timer);
        // Publish in bursts: refill the window only once an eighth of it is free, so the
        // client writes (and the server reads) many messages at a time rather than one per
        // ack.
        let refill_at = self.max_in_flight - self.max_in_flight / 8;
        while attempt.acked < n {
            let fill = attempt.slots.len() <= refill_at;
            while fill && attempt.next < n && attempt.slots.len() < self.max_in_flight {
                if attempt.slots.is_empty() {
                    // Nothing was awaited: the timeout counts from now.
                    last_progress = Instant::now();
                }
                attempt
                    .publish_next(self.client, &inbox.prefix, &mut reply)
                    .await?;
            }
            // Wait for acks; settle the ones at the front.
            tokio::select! {
                biased;
                m = inbox.sub.next() => {
                    let Some(m) = m else {
                        let e = PublishError::new(jetstream::context::PublishErrorKind::BrokenPipe);
                        return Err(attempt.failure(attempt.acked, FailureKind::Publish(e)));
                    };
                    attempt.settle(&m);
                    // Take every ack already there before publishing again.
                    while let Some(Some(m)) = inbox.sub.next().now_or_never() {
                        attempt.settle(&m);
                    }
                }
                () = &mut timer => {
                    if last_progress.elapsed() >= self.ack_timeout {
                        let e = PublishError::new(jetstream::context::PublishErrorKind::TimedOut);
                        return Err(attempt.failure(attempt.acked, FailureKind::Publish(e)));
                    }
                    timer.as_mut().reset(last_progress + self.ack_timeout);
                    continue;
                }
            }
            if attempt.take_acked()? {
                last_progress = Instant::now();
            }
        }
        if attempt.duplicates > 0 {
            tracing::debug!(
                sink = %self.name,
                batch = batch.seq,
                duplicates = attempt.duplicates,
                "the stream already held some messages of the batch (replay)"
            );
        }
        Ok(())
    }

    /// Core NATS: publishes the whole batch, then flushes.
    pub(super) async fn core(
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
                headers(m, p),
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
}

/// One JetStream publish attempt of `prepared[start..]`: the window of messages whose acks
/// are awaited, and where the attempt stands.
struct Attempt<'a> {
    js: &'a Js,
    batch: &'a EncodedBatch,
    prepared: &'a [Prepared],
    start: usize,
    /// Where each message from `start` goes, for the ordering check; empty when the check
    /// is off.
    streams: Vec<Dest>,
    /// Tokens `base..` belong to messages `start..` of this attempt.
    base: u64,
    /// The ordering fence's last id per stream.
    chain: Chain<'a>,
    /// Messages `acked..next`: published, their acks awaited in batch order.
    slots: VecDeque<AckSlot>,
    next: usize,
    acked: usize,
    duplicates: usize,
}

impl<'a> Attempt<'a> {
    fn new(
        js: &'a Js,
        batch: &'a EncodedBatch,
        prepared: &'a [Prepared],
        start: usize,
        inbox: &mut AckInbox,
        max_in_flight: usize,
    ) -> Self {
        let n = prepared.len();
        let streams = js.streams_of(&prepared[start..]);
        let base = inbox.next_token;
        inbox.next_token += (n - start) as u64;
        Attempt {
            js,
            batch,
            prepared,
            start,
            streams,
            base,
            chain: Chain::default(),
            slots: VecDeque::with_capacity(max_in_flight.min(n - start)),
            next: start,
            acked: start,
            duplicates: 0,
        }
    }

    /// Whether the ordering check is on for this attempt.
    fn fenced(&self) -> bool {
        !self.streams.is_empty()
    }

    fn token_of(&self, index: usize) -> u64 {
        self.base + (index - self.start) as u64
    }

    fn failure(&self, index: usize, kind: FailureKind) -> Failure {
        Failure {
            acked: self.acked,
            index,
            kind,
        }
    }

    /// Publishes message `next`, its ack to come to `<prefix><token>`.
    async fn publish_next(
        &mut self,
        client: &async_nats::Client,
        prefix: &str,
        reply: &mut String,
    ) -> Result<(), Failure> {
        let index = self.next;
        let (prepared, batch): (&'a [Prepared], &'a EncodedBatch) = (self.prepared, self.batch);
        let p = &prepared[index];
        let m = &batch.messages[index];
        let id = p.msg_id.as_deref().unwrap_or(&m.id);
        let mut headers = headers(m, p);
        let dest = self.streams.get(index - self.start);
        if let Some(dest) = dest.filter(|d| d.fenced) {
            if let Some(previous) = self.chain.follow(&dest.stream, id) {
                if !p.user_expectation {
                    if let Ok(value) = HeaderValue::from_str(previous) {
                        headers.insert(EXPECTED_LAST_MSG_ID, value);
                    }
                }
            }
        }
        reply.clear();
        let _ = write!(reply, "{prefix}{}", self.token_of(index));
        let published = client
            .publish_with_reply_and_headers(
                p.subject.clone(),
                Subject::from(reply.as_str()),
                headers,
                m.payload.clone(),
            )
            .await;
        if let Err(e) = published {
            return Err(self.failure(index, FailureKind::Publish(publish_error(e))));
        }
        self.slots.push_back(AckSlot::Pending);
        self.next += 1;
        Ok(())
    }

    /// Records the ack `m` in its slot (an earlier attempt's is ignored), and learns the
    /// stream of its subject.
    fn settle(&mut self, m: &async_nats::Message) {
        let token = m
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        let Some(k) = token
            .and_then(|t| t.checked_sub(self.token_of(self.acked)))
            .and_then(|k| usize::try_from(k).ok())
            .filter(|k| *k < self.slots.len())
        else {
            return;
        };
        let index = self.acked + k;
        self.slots[k] = match parse_pub_ack(m) {
            Ok((stream, duplicate)) => {
                if self.fenced() {
                    let dest = &self.streams[index - self.start];
                    if !dest.known || *dest.stream != *stream {
                        let js = self.js;
                        js.fence().learn(
                            self.prepared[index].subject.as_str(),
                            &stream,
                            &js.default_stream,
                        );
                    }
                }
                self.duplicates += usize::from(duplicate);
                AckSlot::Done
            }
            Err(e) => AckSlot::Failed(e),
        };
    }

    /// Moves `acked` past the settled front of the window; `true` when it moved.
    fn take_acked(&mut self) -> Result<bool, Failure> {
        let before = self.acked;
        while let Some(front) = self.slots.pop_front() {
            match front {
                AckSlot::Pending => {
                    self.slots.push_front(AckSlot::Pending);
                    break;
                }
                AckSlot::Done => self.acked += 1,
                AckSlot::Failed(e) => {
                    return Err(self.failure(self.acked, FailureKind::Publish(e)));
                }
            }
        }
        Ok(self.acked > before)
    }
}

/// A core-NATS publish error (the message never left: too large, bad subject, connection
/// gone) as the JetStream publish error the failure paths classify.
pub(super) fn publish_error(e: async_nats::client::PublishError) -> PublishError {
    use async_nats::client::PublishErrorKind as C;
    use jetstream::context::PublishErrorKind as K;
    let kind = match e.kind() {
        C::MaxPayloadExceeded => K::MaxPayloadExceeded,
        C::InvalidSubject | C::Send => K::Other,
    };
    PublishError::with_source(kind, e)
}
