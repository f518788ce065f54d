//! The ordering fence: `Nats-Expected-Last-Msg-Id` on every message of an attempt but the
//! first, naming the previous message bound for the same stream (see the module docs).

use std::sync::Arc;

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
impl Js {
    /// The stream of each message of `prepared` (known, or assumed to be the configured
    /// one), for the ordering check; empty when the check is off.
    pub(super) fn streams_of(&self, prepared: &[Prepared]) -> Vec<(Arc<str>, bool)> {
        let fence = self.fence();
        if fence.disabled {
            return Vec::new();
        }
        // Consecutive messages mostly share a subject: look each run up once.
        let mut last: Option<(&Subject, (Arc<str>, bool))> = None;
        prepared
            .iter()
            .map(|p| match &last {
                Some((subject, found)) if **subject == p.subject => found.clone(),
                _ => {
                    let found = fence.stream_of(p.subject.as_str(), &self.default_stream);
                    last = Some((&p.subject, found.clone()));
                    found
                }
            })
            .collect()
    }
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
