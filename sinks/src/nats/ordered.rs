//! Ordered batches: a batch published as one JetStream *fast batch* (ADR-50's fast ingest,
//! nats-server 2.14+, on streams with `allow_batched`), in "gap: fail" mode — the ordering
//! guarantee on every stream, replicated or not, with one or several publishers.
//!
//! Why: pipelined publishes can land out of order when some are lost and later ones are
//! not (a reconnect, or a replicated stream changing leader: the old leader drops what it
//! had queued while the new one already stores what follows). The `Nats-Expected-Last-Msg-Id`
//! fence (see `fence`) stops that on a single-replica stream, but nats-server checks it on a
//! replicated stream only when it applies the entry and then stops the stream, and it breaks
//! with a second publisher. A fast batch is checked by the stream leader *before* it proposes
//! a message: each message carries its place in the batch, a message that does not follow
//! the last one stored ends the batch ("gap"), and nothing after a gap or a refusal is
//! stored. So the stream always holds a prefix of what we sent, in order, and the batch's
//! PubAck (or a flow acknowledgement) says how long that prefix is; we go on from there with
//! a new batch. Leader changes are covered by the server: followers track each batch, and a
//! new leader tells the publisher how far the batch got. Message ids still deduplicate
//! (a duplicate inside a batch is skipped, not a gap), so replays after a crash are safe.
//!
//! The protocol (`server/stream.go`, `getFastBatch`, `processJetStreamFastBatchMsg`): the
//! batch lives in the reply subject, `<inbox>.<batch id>.<flow>.fail.<seq>.<op>.$FI`, op 0
//! for the first message, 1 for the next ones, 2 for the last (commit), 4 for a ping (no
//! message: "tell me where the batch stands"). The server answers the first message with a
//! flow acknowledgement `{"type":"ack","seq":0,"msgs":N}`, then one every N stored messages
//! (`seq` = the highest batch sequence stored, everything before it stored too), reports
//! `{"type":"gap"}` and `{"type":"err"}` as they happen, and ends with a PubAck carrying
//! `batch` and `count` (messages 1..=count stored). We keep at most `max_in_flight`
//! messages beyond the last acknowledged one.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError};
use async_nats::Subject;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::acks::{api_error, status_error, AckInbox};
use super::prepare::{headers, Prepared};
use super::publish::{publish_error, Publisher};
use super::state::{Failure, FailureKind};
use crate::EncodedBatch;

/// nats-server's error codes for fast batches (`server/errors.json`).
pub(super) mod code {
    use async_nats::jetstream::ErrorCode;
    /// The stream does not allow batch publishing (`allow_batched`).
    pub const DISABLED: ErrorCode = ErrorCode(10205);
    pub const INVALID_PATTERN: ErrorCode = ErrorCode(10206);
    pub const INVALID_ID: ErrorCode = ErrorCode(10207);
    /// The batch is not known (any more) to the stream's leader.
    pub const UNKNOWN_ID: ErrorCode = ErrorCode(10208);
}

const OP_START: u8 = 0;
const OP_APPEND: u8 = 1;
const OP_COMMIT: u8 = 2;
const OP_PING: u8 = 4;

/// What the server answered to a message of a fast batch.
#[derive(Debug)]
pub(super) enum Reply {
    /// Messages 1..=`seq` are stored (`seq` 0 answers the first message: the batch
    /// exists).
    Flow { seq: u64 },
    /// Messages were lost on the way (informational: the batch ends, a PubAck follows).
    Gap,
    /// Message `seq` was refused (the batch ends, a PubAck follows).
    Refused { seq: u64, error: PublishError },
    /// The batch ended with messages 1..=`count` stored.
    Done { count: u64 },
    /// The batch (or its first message) was refused as a whole.
    Failed(PublishError),
}

#[derive(serde::Deserialize)]
struct Body<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<jetstream::Error>,
}

/// Parses an answer to a fast batch message.
pub(super) fn parse_reply(m: &async_nats::Message) -> Reply {
    use jetstream::context::PublishErrorKind as K;
    if let Some(e) = status_error(m) {
        return Reply::Failed(e);
    }
    let body: Body<'_> = match serde_json::from_slice(&m.payload) {
        Ok(b) => b,
        Err(e) => return Reply::Failed(PublishError::with_source(K::Other, e)),
    };
    match body.kind.as_deref() {
        Some("ack") => Reply::Flow {
            seq: body.seq.unwrap_or(0),
        },
        Some("gap") => Reply::Gap,
        Some("err") => Reply::Refused {
            seq: body.seq.unwrap_or(0),
            error: match body.error {
                Some(e) => api_error(e),
                None => PublishError::with_source(K::Other, "refused without a reason"),
            },
        },
        Some(other) => Reply::Failed(PublishError::with_source(
            K::Other,
            format!("unknown batch answer type {other:?}"),
        )),
        None => match (body.error, body.stream, body.count) {
            (Some(e), _, _) => Reply::Failed(api_error(e)),
            (None, Some(_), Some(count)) => Reply::Done { count },
            _ => Reply::Failed(PublishError::with_source(
                K::Other,
                "batch PubAck without a stream or count",
            )),
        },
    }
}

/// Where one fast batch stands, from its answers.
#[derive(Debug, Default)]
struct Progress {
    /// Messages 1..=`stored` of the batch are stored.
    stored: u64,
    /// The batch ended (its PubAck arrived).
    done: bool,
    /// The first refusal, by batch sequence.
    refused: Option<(u64, PublishError)>,
    /// The batch was refused as a whole.
    failed: Option<PublishError>,
    /// The first message was answered: the rest may follow.
    started: bool,
}

impl Progress {
    /// Records an answer; `true` when it moved the batch on.
    fn apply(&mut self, reply: Reply) -> bool {
        let first = !self.started;
        self.started = true;
        match reply {
            Reply::Flow { seq } => {
                let moved = seq > self.stored;
                self.stored = self.stored.max(seq);
                moved || first
            }
            Reply::Gap => false,
            Reply::Refused { seq, error } => {
                if self.refused.is_none() {
                    self.refused = Some((seq, error));
                }
                true
            }
            Reply::Done { count } => {
                self.stored = count;
                self.done = true;
                true
            }
            Reply::Failed(e) => {
                self.failed = Some(e);
                self.done = true;
                true
            }
        }
    }

    /// Records the answer to message `seq` of the batch: the stream's error answering a
    /// later message than the first is that message's refusal (the server checks some
    /// limits, such as the message size, before the batch sees the message; the batch then
    /// ends at the gap and its PubAck follows), unless the batch is gone. A status instead
    /// (no responders: the stream has no leader right now) ends the batch here: nothing
    /// more will come from the leader that had it, and the next batch starts from what was
    /// acknowledged (anything stored beyond that is a duplicate then).
    fn answer(&mut self, seq: Option<u64>, reply: Reply) -> bool {
        match (seq, reply) {
            (Some(seq), Reply::Failed(error))
                if seq > 1
                    && super::atomic::api_code(&error)
                        .is_some_and(|code| code != code::UNKNOWN_ID) =>
            {
                self.apply(Reply::Refused { seq, error })
            }
            (_, reply) => self.apply(reply),
        }
    }
}

impl Publisher<'_> {
    /// Publishes `prepared[start..]` as ordered fast batches until every message is stored
    /// or a batch fails: a batch that ends early without a refusal (a gap: messages lost on
    /// the way) is followed by a new one from the first message not stored.
    pub(super) async fn ordered(
        &self,
        inbox: &mut AckInbox,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        start: usize,
    ) -> Result<(), Failure> {
        let mut from = start;
        while from < prepared.len() {
            let stored = self.fast_batch(inbox, batch, prepared, from).await?;
            if stored == 0 {
                // Ended at once without a reason (the leader changed as it began): the
                // caller backs off and tries again.
                let e = PublishError::with_source(
                    jetstream::context::PublishErrorKind::Other,
                    "the batch ended before storing a message",
                );
                return Err(Failure {
                    acked: from,
                    index: from,
                    kind: FailureKind::Publish(e),
                });
            }
            from += stored;
        }
        Ok(())
    }

    /// One fast batch of `prepared[from..]`; `Ok(k)`: its first `k` messages are stored and
    /// the batch ended.
    async fn fast_batch(
        &self,
        inbox: &mut AckInbox,
        batch: &EncodedBatch,
        prepared: &[Prepared],
        from: usize,
    ) -> Result<usize, Failure> {
        let total = (prepared.len() - from) as u64;
        let (_, id) = inbox.batch_id(1, "cdc", "f");
        // `<inbox>.<id>.`: answers to this batch start with it.
        let ours = format!("{}{id}.", inbox.prefix);
        // The acknowledgement interval asked for: a few per window.
        let flow = (self.max_in_flight / 4).clamp(1, 500);
        let head = format!("{ours}{flow}.fail.");
        let mut reply = String::with_capacity(head.len() + 32);
        let mut progress = Progress::default();
        let fail = |progress: &Progress, kind: FailureKind| Failure {
            acked: from + progress.stored as usize,
            index: from + progress.stored as usize,
            kind,
        };
        let mut sent = 0u64;
        let ping_every = (self.ack_timeout / 3).max(Duration::from_millis(10));
        let mut last_progress = Instant::now();
        let mut last_ping = last_progress;
        let timer = tokio::time::sleep(ping_every);
        tokio::pin!(timer);
        loop {
            // Send while the window allows: only the first message until it is answered
            // (a stream refusing the batch says so once, not once per message).
            while !progress.done
                && sent < total
                && (sent == 0 || progress.started)
                && sent - progress.stored < self.max_in_flight as u64
            {
                let index = from + sent as usize;
                let seq = sent + 1;
                let op = if seq == total {
                    OP_COMMIT
                } else if seq == 1 {
                    OP_START
                } else {
                    OP_APPEND
                };
                reply.clear();
                let _ = write!(reply, "{head}{seq}.{op}.$FI");
                let (p, m) = (&prepared[index], &batch.messages[index]);
                let published = self
                    .client
                    .publish_with_reply_and_headers(
                        p.subject.clone(),
                        Subject::from(reply.as_str()),
                        headers(m, p),
                        m.payload.clone(),
                    )
                    .await;
                if let Err(e) = published {
                    return Err(fail(&progress, FailureKind::Publish(publish_error(e))));
                }
                sent = seq;
                // Take the answers already there: a long batch must not fill the inbox.
                while let Some(Some(m)) = inbox.sub.next().now_or_never() {
                    if let Some((seq, r)) = ours_reply(&m, &ours) {
                        if progress.answer(seq, r) {
                            last_progress = Instant::now();
                        }
                    }
                }
            }
            if progress.done {
                if let Some(e) = progress.failed.take() {
                    return Err(fail(&progress, FailureKind::Publish(e)));
                }
                if progress.stored >= total {
                    return Ok(total as usize);
                }
                // Ended early: a refusal of the next message is final for this attempt;
                // otherwise the rest was lost on the way (a gap) and goes out again.
                return match progress.refused.take() {
                    Some((seq, e)) if seq == progress.stored + 1 => {
                        Err(fail(&progress, FailureKind::Publish(e)))
                    }
                    _ => {
                        tracing::info!(
                            sink = %self.name,
                            batch = batch.seq,
                            stored = progress.stored,
                            sent,
                            total,
                            "ordered batch ended early (messages lost on the way, e.g. the \
                             stream's leader changed); going on from the first not stored"
                        );
                        Ok(progress.stored as usize)
                    }
                };
            }
            tokio::select! {
                biased;
                m = inbox.sub.next() => {
                    let Some(m) = m else {
                        let e = PublishError::new(jetstream::context::PublishErrorKind::BrokenPipe);
                        return Err(fail(&progress, FailureKind::Publish(e)));
                    };
                    let mut moved =
                        ours_reply(&m, &ours).is_some_and(|(seq, r)| progress.answer(seq, r));
                    while let Some(Some(m)) = inbox.sub.next().now_or_never() {
                        if let Some((seq, r)) = ours_reply(&m, &ours) {
                            moved |= progress.answer(seq, r);
                        }
                    }
                    if moved {
                        last_progress = Instant::now();
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now.duration_since(last_progress) >= self.ack_timeout {
                        let e = PublishError::new(jetstream::context::PublishErrorKind::TimedOut);
                        return Err(fail(&progress, FailureKind::Publish(e)));
                    }
                    if sent > 0 && now.duration_since(last_progress) >= ping_every
                        && now.duration_since(last_ping) >= ping_every
                    {
                        // Acknowledgements may have been lost (a leader change): ask.
                        last_ping = now;
                        reply.clear();
                        let _ = write!(reply, "{head}{sent}.{OP_PING}.$FI");
                        let subject = prepared[from].subject.clone();
                        if let Err(e) = self
                            .client
                            .publish_with_reply(subject, Subject::from(reply.as_str()), bytes::Bytes::new())
                            .await
                        {
                            return Err(fail(&progress, FailureKind::Publish(publish_error(e))));
                        }
                    }
                    timer.as_mut().reset(now + ping_every);
                }
            }
        }
    }
}

/// The answer `m`, if it is one to the batch whose answers start with `ours`: the batch
/// sequence of the message it answers (from `<flow>.fail.<seq>.<op>.$FI`), and what it says.
fn ours_reply(m: &async_nats::Message, ours: &str) -> Option<(Option<u64>, Reply)> {
    let rest = m.subject.as_str().strip_prefix(ours)?;
    let seq = rest.split('.').nth(2).and_then(|t| t.parse::<u64>().ok());
    Some((seq, parse_reply(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(payload: &str) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.x.cdcxf1.256.fail.3.1.$FI".into(),
            reply: None,
            payload: bytes::Bytes::from(payload.to_owned()),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    fn progress(answers: &[&str]) -> Progress {
        let mut p = Progress::default();
        for a in answers {
            p.apply(parse_reply(&answer(a)));
        }
        p
    }

    #[test]
    fn answers_are_parsed() {
        assert!(matches!(
            parse_reply(&answer(r#"{"type":"ack","seq":0,"msgs":256}"#)),
            Reply::Flow { seq: 0 }
        ));
        assert!(matches!(
            parse_reply(&answer(r#"{"type":"gap","last_seq":4,"seq":6}"#)),
            Reply::Gap
        ));
        match parse_reply(&answer(
            r#"{"type":"err","seq":5,"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#,
        )) {
            Reply::Refused { seq: 5, error } => {
                assert!(error.to_string().contains("exceeds maximum"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_reply(&answer(
                r#"{"stream":"CDC","seq":17,"batch":"b","count":9}"#
            )),
            Reply::Done { count: 9 }
        ));
        // The first message a duplicate: the batch ends there.
        assert!(matches!(
            parse_reply(&answer(
                r#"{"stream":"CDC","seq":3,"duplicate": true,"batch":"b","count":1}"#
            )),
            Reply::Done { count: 1 }
        ));
        match parse_reply(&answer(
            r#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"CDC"}"#,
        )) {
            Reply::Failed(e) => assert_eq!(atomic_code(&e), Some(code::DISABLED)),
            other => panic!("{other:?}"),
        }
        let mut none = answer("");
        none.status = Some(async_nats::StatusCode::NO_RESPONDERS);
        assert!(matches!(
            parse_reply(&none),
            Reply::Failed(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
        ));
        assert!(matches!(parse_reply(&answer("{")), Reply::Failed(_)));
        assert!(matches!(parse_reply(&answer("{}")), Reply::Failed(_)));
    }

    fn atomic_code(e: &PublishError) -> Option<jetstream::ErrorCode> {
        super::super::atomic::api_code(e)
    }

    #[test]
    fn progress_follows_the_answers() {
        // Started by the first message's answer, moved by flow acknowledgements, ended by
        // the PubAck, whose count is what is stored.
        let p = progress(&[r#"{"type":"ack","seq":0,"msgs":2}"#]);
        assert!(p.started && !p.done && p.stored == 0);
        let p = progress(&[
            r#"{"type":"ack","seq":0,"msgs":2}"#,
            r#"{"type":"ack","seq":4,"msgs":2}"#,
            r#"{"type":"ack","seq":2,"msgs":2}"#,
        ]);
        assert_eq!(p.stored, 4, "a late acknowledgement does not move it back");
        let p = progress(&[
            r#"{"type":"ack","seq":0,"msgs":2}"#,
            r#"{"type":"ack","seq":2,"msgs":2}"#,
            r#"{"type":"gap","last_seq":3,"seq":5}"#,
            r#"{"stream":"CDC","seq":9,"batch":"b","count":2}"#,
        ]);
        assert!(p.done && p.stored == 2 && p.refused.is_none() && p.failed.is_none());
        let p = progress(&[
            r#"{"type":"ack","seq":0,"msgs":2}"#,
            r#"{"type":"err","seq":3,"error":{"code":400,"err_code":10054,"description":"too big"}}"#,
            r#"{"stream":"CDC","seq":9,"batch":"b","count":2}"#,
        ]);
        assert!(p.done && p.stored == 2);
        assert_eq!(p.refused.as_ref().map(|r| r.0), Some(3));
        let p = progress(&[
            r#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"}}"#,
        ]);
        assert!(p.done && p.failed.is_some() && p.stored == 0);
    }

    #[test]
    fn an_error_answering_a_later_message_is_its_refusal() {
        let too_big = r#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#;
        let mut p = Progress::default();
        p.answer(
            Some(1),
            parse_reply(&answer(r#"{"type":"ack","seq":0,"msgs":2}"#)),
        );
        p.answer(Some(3), parse_reply(&answer(too_big)));
        assert!(!p.done, "the batch's PubAck is still to come");
        p.answer(
            Some(4),
            parse_reply(&answer(r#"{"stream":"CDC","seq":9,"batch":"b","count":2}"#)),
        );
        assert!(p.done && p.stored == 2 && p.failed.is_none());
        assert_eq!(p.refused.as_ref().map(|r| r.0), Some(3));
        // The first message refused, or the batch unknown: over at once.
        let mut p = Progress::default();
        p.answer(Some(1), parse_reply(&answer(too_big)));
        assert!(p.done && p.failed.is_some());
        let mut p = Progress::default();
        p.answer(
            Some(7),
            parse_reply(&answer(
                r#"{"error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"}}"#,
            )),
        );
        assert!(p.done && p.failed.is_some());
        let mut none = answer("");
        none.status = Some(async_nats::StatusCode::NO_RESPONDERS);
        let mut p = Progress::default();
        p.answer(Some(7), parse_reply(&none));
        assert!(p.done && p.failed.is_some(), "no leader: the batch is over");
    }

    #[test]
    fn only_this_batchs_answers_count() {
        let m = answer(r#"{"type":"ack","seq":3,"msgs":2}"#);
        assert_eq!(
            ours_reply(&m, "_INBOX.x.cdcxf1.").map(|r| r.0),
            Some(Some(3))
        );
        assert!(ours_reply(&m, "_INBOX.x.cdcxf12.").is_none());
        assert!(ours_reply(&m, "_INBOX.x.cdcxf0.").is_none());
    }
}
