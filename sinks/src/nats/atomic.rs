//! Atomic mode (`[sinks.jetstream] atomic = "transaction"`): each Postgres transaction is
//! published as one JetStream atomic batch (ADR-50, nats-server 2.12+), so a consumer never
//! sees part of one.
//!
//! The protocol, as nats-server implements it (`server/stream.go`,
//! `processJetStreamAtomicBatchMsg`): every message of a batch carries `Nats-Batch-Id` (the
//! same id, at most 64 characters) and `Nats-Batch-Sequence` (1, 2, …); the last one also
//! `Nats-Batch-Commit: 1`. The server stages the messages (answering each one that has a
//! reply subject with an empty message) and stores all of them at the commit, or none: a
//! gap, a refused message or a batch left without its commit for the server's batch timeout
//! (10 s) abandons it. Only the commit is answered with a PubAck (`batch`, `count`).
//!
//! - **Chunks.** A transaction becomes one batch, unless it has more than
//!   `atomic_max_batch` changes (default 1000, the server's own limit, `jetstream { limits {
//!   batch { max_msgs } } }`) or the pipeline split it across batches (past `max_changes` /
//!   `max_batch_bytes`): then it goes out as ordered atomic chunks. Every message carries
//!   `Cdc-Txn-Chunk` (0, 1, … within its transaction) and `Cdc-Txn-Last` (`true` on the
//!   chunk that ends the transaction).
//! - **Order.** The server refuses `Nats-Expected-Last-Msg-Id` inside a batch, so the
//!   ordering fence is not used; instead one chunk is in flight at a time: the next is
//!   published only once the previous one's commit was acknowledged, so nothing can land
//!   ahead of a chunk that has to be published again.
//! - **Ids and replays.** Each message keeps its `Nats-Msg-Id`. A batch holding an id the
//!   stream has seen within its duplicate window is refused as a whole ("atomic publish batch
//!   contains duplicate message id"): after a crash, the chunk was stored before. It is then
//!   published again message by message without batch headers (the plain path: the server
//!   drops each duplicate), which also stores any of its messages that were not.
//! - A failed chunk (timeout, reconnect, incomplete batch, too many batches in flight) is
//!   published again with a new batch id.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError};
use async_nats::{HeaderName, Subject};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::acks::{parse_pub_ack, AckInbox};
use super::prepare::{headers, Prepared};
use super::publish::{publish_error, Publisher};
use super::state::{Failure, FailureKind, Js};
use crate::EncodedBatch;

const BATCH_ID: HeaderName = HeaderName::from_static("Nats-Batch-Id");
const BATCH_SEQUENCE: HeaderName = HeaderName::from_static("Nats-Batch-Sequence");
const BATCH_COMMIT: HeaderName = HeaderName::from_static("Nats-Batch-Commit");
const TXN_CHUNK: HeaderName = HeaderName::from_static("Cdc-Txn-Chunk");
const TXN_LAST: HeaderName = HeaderName::from_static("Cdc-Txn-Last");

/// nats-server's error codes for atomic batches (`server/errors.json`).
pub(super) mod code {
    use async_nats::jetstream::ErrorCode;
    pub const DISABLED: ErrorCode = ErrorCode(10174);
    pub const UNSUPPORTED_HEADER: ErrorCode = ErrorCode(10177);
    pub const TOO_LARGE: ErrorCode = ErrorCode(10199);
    pub const CONTAINS_DUPLICATE: ErrorCode = ErrorCode(10201);
}

/// Messages `start..end` of a batch, published as one atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) start: usize,
    pub(super) end: usize,
    /// Its place in its transaction: 0, 1, …
    pub(super) index: u32,
    /// It ends its transaction.
    pub(super) last: bool,
}

/// A transaction the previous batch left open (it `continues`): its commit LSN, the index of
/// its next chunk, and that batch's sequence number.
#[derive(Debug, Clone)]
pub(super) struct OpenTxn {
    commit_lsn: Arc<str>,
    next_chunk: u32,
    seq: u64,
}

/// Cuts `batch` into chunks: its transactions (runs of one commit LSN), each cut into
/// pieces of at most `max`. The last transaction of a batch that `continues` does not end
/// there: its chunks are not `last`, and its numbering goes on in the next batch (`open`) —
/// when that batch is the very next one (a reconnect starts the transaction over, and
/// batches again from 1).
pub(super) fn chunks(
    batch: &EncodedBatch,
    max: usize,
    open: &mut Option<OpenTxn>,
    out: &mut Vec<Chunk>,
) {
    out.clear();
    let max = max.max(1);
    let carried = open.take().filter(|o| o.seq + 1 == batch.seq);
    let messages = &batch.messages;
    let mut i = 0;
    while i < messages.len() {
        let lsn = &messages[i].commit_lsn;
        let end = messages[i..]
            .iter()
            .position(|m| m.commit_lsn != *lsn)
            .map_or(messages.len(), |k| i + k);
        let mut index = match &carried {
            Some(o) if i == 0 && o.commit_lsn == *lsn => o.next_chunk,
            _ => 0,
        };
        let ends = !(end == messages.len() && batch.continues);
        let mut start = i;
        while start < end {
            let stop = (start + max).min(end);
            out.push(Chunk {
                start,
                end: stop,
                index,
                last: ends && stop == end,
            });
            index += 1;
            start = stop;
        }
        if !ends {
            *open = Some(OpenTxn {
                commit_lsn: lsn.clone(),
                next_chunk: index,
                seq: batch.seq,
            });
        }
        i = end;
    }
}

/// Why an atomic attempt stopped: `done` chunks are durable, the next one failed.
pub(super) struct AtomicFailure {
    pub(super) done: usize,
    pub(super) failure: Failure,
    /// The stream refused the chunk for holding an id it has seen (a replay).
    pub(super) duplicate: bool,
}

/// The JetStream error code behind a publish error, if any.
pub(super) fn api_code(e: &PublishError) -> Option<jetstream::ErrorCode> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(|a| a.error_code())
}

impl Publisher<'_> {
    /// Publishes `chunks` of `batch` in order, each as one atomic batch, one at a time.
    pub(super) async fn atomic(
        &self,
        js: &Js,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        chunks: &[Chunk],
    ) -> Result<(), AtomicFailure> {
        let mut inbox = js.acks.lock().await;
        let inbox = &mut *inbox;
        for (done, chunk) in chunks.iter().enumerate() {
            if let Err(failure) = self.chunk(inbox, batch, prepared, chunk).await {
                let duplicate = matches!(&failure.kind, FailureKind::Publish(e)
                    if api_code(e) == Some(code::CONTAINS_DUPLICATE));
                return Err(AtomicFailure {
                    done,
                    failure,
                    duplicate,
                });
            }
        }
        Ok(())
    }

    /// One chunk: its messages published back to back, each with a reply token; then the
    /// answers awaited until the commit's.
    async fn chunk(
        &self,
        inbox: &mut AckInbox,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        c: &Chunk,
    ) -> Result<(), Failure> {
        let n = c.end - c.start;
        let (base, batch_id) = inbox.batch_id(n as u64, "cdc-", "-");
        let mut wait = Wait {
            base,
            n,
            start: c.start,
            staged_error: None,
            commit: None,
        };
        let mut reply = String::with_capacity(inbox.prefix.len() + 20);
        let fail = |index: usize, kind: FailureKind| Failure {
            acked: c.start,
            index,
            kind,
        };
        for k in 0..n {
            let index = c.start + k;
            let (p, m) = (&prepared[index], &batch.messages[index]);
            let mut h = headers(m, p);
            h.insert(BATCH_ID, batch_id.as_str());
            h.insert(BATCH_SEQUENCE, (k + 1).to_string());
            h.insert(TXN_CHUNK, c.index.to_string());
            h.insert(TXN_LAST, if c.last { "true" } else { "false" });
            if k + 1 == n {
                h.insert(BATCH_COMMIT, "1");
            }
            reply.clear();
            reply.push_str(&inbox.prefix);
            reply.push_str(&(base + k as u64).to_string());
            let published = self
                .client
                .publish_with_reply_and_headers(
                    p.subject.clone(),
                    Subject::from(reply.as_str()),
                    h,
                    m.payload.clone(),
                )
                .await;
            if let Err(e) = published {
                return Err(fail(index, FailureKind::Publish(publish_error(e))));
            }
            // Take the answers already there: a large chunk must not fill the inbox.
            while let Some(Some(m)) = inbox.sub.next().now_or_never() {
                wait.settle(&m);
            }
        }
        let mut last_progress = Instant::now();
        loop {
            if let Some(result) = wait.commit.take() {
                return match (result, wait.staged_error.take()) {
                    (Ok(()), _) => Ok(()),
                    // A staged message's own refusal says more than "incomplete batch".
                    (Err(_), Some((index, e))) => Err(fail(index, FailureKind::Publish(e))),
                    (Err(e), None) => Err(fail(c.end - 1, FailureKind::Publish(e))),
                };
            }
            let left = self.ack_timeout.saturating_sub(last_progress.elapsed());
            match tokio::time::timeout(left.max(Duration::from_millis(1)), inbox.sub.next()).await {
                Ok(Some(m)) => {
                    if wait.settle(&m) {
                        last_progress = Instant::now();
                    }
                }
                Ok(None) => {
                    let e = PublishError::new(jetstream::context::PublishErrorKind::BrokenPipe);
                    return Err(fail(c.start, FailureKind::Publish(e)));
                }
                Err(_) => {
                    let e = match wait.staged_error.take() {
                        Some((_, e)) => e,
                        None => PublishError::new(jetstream::context::PublishErrorKind::TimedOut),
                    };
                    return Err(fail(c.start, FailureKind::Publish(e)));
                }
            }
        }
    }
}

/// The answers to one chunk's messages.
struct Wait {
    /// Tokens `base..base + n` are messages `start..start + n` of the batch.
    base: u64,
    n: usize,
    start: usize,
    /// The first refusal of a message before the commit.
    staged_error: Option<(usize, PublishError)>,
    commit: Option<Result<(), PublishError>>,
}

impl Wait {
    /// Records an answer; `true` when it belongs to this chunk.
    fn settle(&mut self, m: &async_nats::Message) -> bool {
        let token = m
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        let Some(k) = token
            .and_then(|t| t.checked_sub(self.base))
            .and_then(|k| usize::try_from(k).ok())
            .filter(|k| *k < self.n)
        else {
            return false;
        };
        if k + 1 == self.n {
            self.commit = Some(parse_pub_ack(m).map(drop));
        } else if m.status.is_some() || !m.payload.is_empty() {
            // Staged messages are answered with an empty message; anything else is a
            // refusal.
            if let Err(e) = parse_pub_ack(m) {
                if self.staged_error.is_none() {
                    self.staged_error = Some((self.start + k, e));
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn batch(seq: u64, lsns: &[&str], continues: bool) -> EncodedBatch {
        EncodedBatch {
            seq,
            messages: lsns
                .iter()
                .enumerate()
                .map(|(i, l)| Message {
                    id: format!("{l}-{i}").into(),
                    schema: None,
                    table: None,
                    op: "insert",
                    lsn: "".into(),
                    commit_lsn: (*l).into(),
                    route: None,
                    headers: Vec::new(),
                    payload: bytes::Bytes::new(),
                })
                .collect(),
            continues,
            lines: None,
        }
    }

    fn cut(
        b: &EncodedBatch,
        max: usize,
        open: &mut Option<OpenTxn>,
    ) -> Vec<(usize, usize, u32, bool)> {
        let mut out = Vec::new();
        chunks(b, max, open, &mut out);
        out.into_iter()
            .map(|c| (c.start, c.end, c.index, c.last))
            .collect()
    }

    #[test]
    fn transactions_become_chunks() {
        let mut open = None;
        // Three transactions; the second larger than the limit.
        let b = batch(1, &["A", "A", "B", "B", "B", "B", "B", "C"], false);
        assert_eq!(
            cut(&b, 2, &mut open),
            [
                (0, 2, 0, true),
                (2, 4, 0, false),
                (4, 6, 1, false),
                (6, 7, 2, true),
                (7, 8, 0, true)
            ]
        );
        assert!(open.is_none());
        // A transaction split across batches: numbering goes on, `last` only at its end.
        let b = batch(2, &["D", "E", "E", "E"], true);
        assert_eq!(
            cut(&b, 2, &mut open),
            [(0, 1, 0, true), (1, 3, 0, false), (3, 4, 1, false)]
        );
        let b = batch(3, &["E", "E", "E"], true);
        assert_eq!(cut(&b, 2, &mut open), [(0, 2, 2, false), (2, 3, 3, false)]);
        let b = batch(4, &["E", "F"], false);
        assert_eq!(cut(&b, 2, &mut open), [(0, 1, 4, true), (1, 2, 0, true)]);
        assert!(open.is_none());
        // After a reconnect (batches from 1 again) the transaction starts over at chunk 0.
        let b = batch(5, &["G", "G"], true);
        assert_eq!(cut(&b, 10, &mut open), [(0, 2, 0, false)]);
        let b = batch(1, &["G", "G", "G"], false);
        assert_eq!(cut(&b, 10, &mut open), [(0, 3, 0, true)]);
    }
}
