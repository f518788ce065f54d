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
//! Ordering across outages: where the stream allows batched publishing (streams the sink
//! creates do), a batch goes out as one ordered fast batch (`ordered`): the stream's leader
//! stores a message only right after its predecessor, so whatever is lost, what is stored is
//! an in-order prefix, and the sink goes on from its end. That holds on replicated streams and
//! with other publishers. Otherwise, the fence below.
//!
//! The fence: when the connection drops mid-batch, the client sends the
//! publishes it still had queued once it reconnects, while some sent before the drop were
//! lost; those would land ahead of the lost ones' republication. To prevent that, each
//! message but the first of an attempt also carries `Nats-Expected-Last-Msg-Id` = the id of
//! the previous message bound for the same stream: the server stores it only right after
//! that one (duplicates are recognised before that check), and refuses it otherwise; the
//! refusal is retried from the first unacknowledged message. Streams are learned per subject
//! (a lookup, then the PubAcks), and only streams with one replica are fenced: nats-server
//! stops a replicated stream that refuses the check (see `fence`), so there the check is off
//! with one warning. If the stream turns out to have other publishers (the
//! refusals name ids not ours), the check is dropped for the sink with a warning, and order
//! across reconnects is no longer enforced. Messages whose transform set its own
//! `Nats-Expected-*` header are left alone.
//!
//! Atomic mode (`atomic = "transaction"`, see `atomic`): each transaction one JetStream
//! atomic batch, or ordered atomic chunks; one chunk in flight at a time takes the fence's
//! place (the server refuses `Nats-Expected-Last-Msg-Id` inside a batch).
//!
//! Layers, each using only those below it: `sink` (the [`NatsSink`] and its `deliver`
//! loop) and `connect` at the top; `atomic` (chunks, and one atomic attempt) over
//! `publish` (one attempt, through a `Publisher` of the sink's client and limits; an
//! attempt bound for one batched stream is an ordered batch, `ordered`); `stream` (stream
//! lookups); `fence` (the ordering check);
//! `prepare` (subjects, headers); `state` (the JetStream side `Js`, the fence's memory,
//! `Failure`, `Verdict`), `acks`, `events` and `options` at the bottom.
//!
//! [`Sink::deliver`]: crate::Sink::deliver

mod acks;
mod atomic;
pub mod config;
mod connect;
mod events;
mod fence;
mod options;
mod ordered;
mod prepare;
mod publish;
mod sink;
mod state;
mod stream;

pub use options::{
    Atomic, JetStreamOptions, NatsAuth, NatsOptions, NatsTls, CONNECT_DEADLINE,
    DEFAULT_ACK_TIMEOUT, DEFAULT_ATOMIC_MAX_BATCH, DEFAULT_DUPLICATE_WINDOW, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_SUBJECT,
};
pub use sink::NatsSink;
