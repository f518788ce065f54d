//! HTTP (webhook) sink: POSTs encoded changes to a URL.
//!
//! A batch goes out as one request (NDJSON or a JSON array, split above
//! [`HttpOptions::max_batch_bytes`]) or as one request per change. Requests of a batch are
//! sent in order, one at a time, and [`Sink::deliver`] returns `Ok` only once every one of
//! them was answered with a 2xx.
//!
//! Transient failures (connect errors, timeouts, 5xx, 408, 429) are retried inside
//! `deliver` with capped exponential backoff and full jitter, forever unless
//! [`HttpOptions::max_retries`] says otherwise, so the pipeline stalls rather than losing
//! data. A `Retry-After` (seconds or HTTP-date) on a retried answer replaces the backoff
//! delay, up to `max(retry_max, 5 min)`. Any other answer (other 4xx, a 3xx: redirects are
//! not followed) is [`SinkError::Rejected`], naming the request's `Idempotency-Key` as the
//! id (the change id, or `<first id>..<last id>` for a group); the host decides whether
//! that fails the pipeline or dead-letters the changes. Requests before it in the batch
//! were delivered; none after it was sent.
//!
//! Every request carries an `Idempotency-Key`: the change id for a request holding one
//! change, `<first id>..<last id>` for a request holding several. It is the same on each
//! retry, and after a crash whenever the replay groups the same changes into one request
//! (the split of a batch depends only on its payloads and the options, but batches form as
//! changes arrive, so a restarted backlog may group differently): receivers that must not
//! apply a change twice deduplicate per change, on each change's `id` (also listed in
//! `Cdc-Change-Ids` while that header stays small).
//!
//! [`Sink::deliver`]: crate::Sink::deliver
//! [`SinkError::Rejected`]: crate::SinkError::Rejected

pub mod config;
mod options;
mod request;
mod response;
mod sink;
mod tls;

pub use options::{
    HttpBatching, HttpOptions, DEFAULT_MAX_BATCH_BYTES, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    DEFAULT_TIMEOUT,
};
pub use sink::HttpSink;
