//! The ordering fence: `Nats-Expected-Last-Msg-Id` on every message of an attempt but the
//! first, naming the previous message bound for the same stream (see the module docs) — the
//! fallback for streams that do not allow batched publishing (else `ordered` keeps order).
//! This module also learns, per stream, its replicas and whether it allows batched
//! publishing (`check_replicas`), and decides which attempts go out as ordered batches.
//!
//! Only streams with a single replica are fenced. On a replicated (clustered) stream,
//! nats-server checks `Nats-Expected-Last-Msg-Id` only when it applies the replicated
//! entry, not before proposing it (`processJetStreamMsg`, "last msgid mismatch"; the
//! clustered pre-proposal checks in `checkMsgHeadersPreClusteredProposal` cover the other
//! `Nats-Expected-*` headers but not this one). Since nats-server 2.14 an error while
//! applying that `applyStreamMsgOp` does not tolerate stops the stream on every replica
//! (`applyStreamEntries` → `setWriteErr`: "JetStream stream ... critical write error: last
//! msgid mismatch"): the refused publish still gets its error PubAck (10070), but the stream
//! loses its leader and no later publish, ours or anyone's, is answered. Measured on 2.15.1
//! (3 nodes): after one refusal the stream had no leader and every publish timed out for
//! 40 s, and a rolling restart of the three servers did not bring it back (no responders
//! 18 s later). A refusal is what the fence is for
//! (a reconnect reordered our publishes), and what a second publisher causes on every
//! interleaving (two sidecars on one stream), so it must never reach a replicated stream:
//! there the check is off (one warning per sink and stream), message ids still keep out
//! duplicates, and order across a reconnect is not enforced. Deciding before publishing
//! is the only safe rule: a rule reacting to refusals or to missing PubAcks would fire
//! after the stream had already stopped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use async_nats::Subject;

use super::prepare::Prepared;
use super::state::{Js, Strikes, Verdict};
use crate::EncodedBatch;

/// Stream lookups per batch for subjects not seen before; the rest are assumed to go to the
/// configured stream (and learned from their PubAcks).
pub(super) const MAX_LOOKUPS_PER_BATCH: usize = 64;
/// Refusals naming an id outside the batch, within one `deliver`, before the order check is
/// dropped as the stream evidently has other publishers.
const FOREIGN_REFUSALS: u32 = 3;

/// Where a message goes, as the fence sees it.
#[derive(Clone)]
pub(super) struct Dest {
    /// Its stream (known, or assumed to be the configured one).
    pub(super) stream: Arc<str>,
    /// Whether `stream` is known rather than assumed.
    pub(super) known: bool,
    /// Whether it carries the check (the stream is known to have one replica).
    pub(super) fenced: bool,
}

impl Js {
    /// Where each message of `prepared` goes, for the ordering check; empty when the
    /// check is off.
    pub(super) fn streams_of(&self, prepared: &[Prepared]) -> Vec<Dest> {
        let fence = self.fence();
        if fence.disabled {
            return Vec::new();
        }
        // Consecutive messages mostly share a subject: look each run up once.
        let mut last: Option<(&Subject, Dest)> = None;
        prepared
            .iter()
            .map(|p| match &last {
                Some((subject, found)) if **subject == p.subject => found.clone(),
                _ => {
                    let (stream, known) = fence.stream_of(p.subject.as_str(), &self.default_stream);
                    let fenced = fence.fences(&stream);
                    let found = Dest {
                        stream,
                        known,
                        fenced,
                    };
                    last = Some((&p.subject, found.clone()));
                    found
                }
            })
            .collect()
    }

    /// Learns whether the streams the fence may name are replicated (one stream info
    /// request per stream, once): the configured one and those learned for subjects. A
    /// stream whose info cannot be had now stays unfenced and is asked about again.
    pub(super) async fn check_replicas(&self, sink: &str) {
        let unknown: Vec<Arc<str>> = {
            let mut fence = self.fence();
            if fence.disabled {
                return;
            }
            let mut unknown = std::mem::take(&mut fence.unchecked);
            if !fence.replicated.contains_key(&self.default_stream) {
                unknown.push(self.default_stream.clone());
            }
            unknown
        };
        for stream in unknown {
            let info = match self.context.get_stream(&*stream).await {
                Ok(mut s) => s
                    .info()
                    .await
                    .map(|i| (i.config.num_replicas, i.config.allow_batch_publish))
                    .ok(),
                Err(_) => None,
            };
            let Some((replicas, batched)) = info.map(|(r, b)| (r.max(1), b)) else {
                // Not answering now: ask again before the next batch.
                let mut fence = self.fence();
                if !fence.unchecked.contains(&stream) && stream != self.default_stream {
                    fence.unchecked.push(stream);
                }
                continue;
            };
            let replicated = replicas > 1;
            if replicated && !batched && first_warning(sink, &stream) {
                tracing::warn!(
                    sink = %sink,
                    stream = %stream,
                    replicas,
                    "JetStream stream {stream} has {replicas} replicas and does not allow \
                     batched publishing: after a reconnect or a change of the stream's leader a \
                     few messages may land out of order (message ids still keep duplicates \
                     out). Allow it (allow_batched = true in the stream's configuration, \
                     nats-server 2.14 or later; streams cdc-host creates have it) and cdc-host \
                     publishes ordered batches the server checks before storing. The \
                     Nats-Expected-Last-Msg-Id check (ordering_check) is not used on a \
                     replicated stream: nats-server stops a replicated stream that refuses it \
                     (\"critical write error: last msgid mismatch\"). Set [sinks.jetstream] \
                     ordering_check = false to say so and silence this warning"
                );
            }
            if batched && first_warning(sink, &format!("ordered {stream}")) {
                tracing::info!(
                    sink = %sink,
                    stream = %stream,
                    replicas,
                    "publishing ordered batches to JetStream stream {stream} (it allows batched \
                     publishing): the server keeps our messages in order across reconnects and \
                     leader changes"
                );
            }
            let mut fence = self.fence();
            fence.replicated.insert(stream.clone(), replicated);
            fence.batched.insert(stream, batched);
        }
    }

    /// Whether `prepared` can go out as ordered batches (see `ordered`): ordering is on,
    /// every message is bound for one stream, known to allow batched publishing, and no
    /// transform set an expectation header of its own.
    pub(super) fn one_batched_stream(&self, prepared: &[Prepared]) -> bool {
        let fence = self.fence();
        if fence.disabled {
            return false;
        }
        let mut last: Option<&Subject> = None;
        let mut stream: Option<Arc<str>> = None;
        for p in prepared {
            if p.user_expectation {
                return false;
            }
            if last == Some(&p.subject) {
                continue;
            }
            last = Some(&p.subject);
            let (s, known) = fence.stream_of(p.subject.as_str(), &self.default_stream);
            if !known {
                return false;
            }
            match &stream {
                Some(first) if *first != s => return false,
                Some(_) => {}
                None => stream = Some(s),
            }
        }
        stream.is_some_and(|s| fence.batched.get(&s) == Some(&true))
    }

    /// A stream refused batched publishing after all (its configuration changed): publish
    /// to it message by message from now on.
    pub(super) fn not_batched(&self, prepared: &[Prepared]) {
        let mut fence = self.fence();
        let Some(p) = prepared.first() else { return };
        let (stream, _) = fence.stream_of(p.subject.as_str(), &self.default_stream);
        fence.batched.insert(stream, false);
    }
}

/// Whether the replicated-stream warning is still due for sink `sink` and `stream` in this
/// process: it is about the configuration, so a sink built again does not repeat it.
fn first_warning(sink: &str, stream: &str) -> bool {
    static WARNED: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    warned
        .get_or_insert_with(HashSet::new)
        .insert((sink.to_owned(), stream.to_owned()))
}

/// Per stream, the id of the last message published in an attempt: what the next message
/// bound for that stream names in `Nats-Expected-Last-Msg-Id`. A list: a sink mostly feeds
/// one or two streams.
#[derive(Default)]
pub(super) struct Chain<'a>(Vec<(Arc<str>, &'a str)>);

impl<'a> Chain<'a> {
    /// Records `id` as the last message bound for `stream`; returns the one before it, the
    /// id the message must expect.
    pub(super) fn follow(&mut self, stream: &Arc<str>, id: &'a str) -> Option<&'a str> {
        let slot = self
            .0
            .iter()
            .position(|(s, _)| Arc::ptr_eq(s, stream) || s == stream);
        match (slot, id.is_empty()) {
            // Stored without an id, it leaves nothing to check against.
            (Some(i), true) => {
                self.0.swap_remove(i);
                None
            }
            (None, true) => None,
            (Some(i), false) => Some(std::mem::replace(&mut self.0[i].1, id)),
            (None, false) => {
                self.0.push((stream.clone(), id));
                None
            }
        }
    }
}

impl Js {
    /// Our `Nats-Expected-Last-Msg-Id` check refused a message (of sink `sink`): retry at
    /// once; drop the check when the stream evidently has other publishers.
    pub(super) fn fence_refused(
        &self,
        sink: &str,
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
        let known = self.fence().seen.contains(subject);
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
                self.fence().disabled = true;
                tracing::warn!(
                    sink = %sink,
                    stream = %self.opts.stream,
                    "the stream holds messages from other publishers (last id {:?} is not \
                     ours): no longer checking Nats-Expected-Last-Msg-Id, so after a \
                     reconnect messages may land out of order",
                    last.unwrap_or_default()
                );
            }
        }
        Verdict::RetryNow
    }
}
