//! cdc-host: Postgres logical replication (`pgoutput`) → typed changes → sinks.
//!
//! The binary (`main.rs`) is a thin CLI over this library. See ARCHITECTURE.md.
//!
//! - [`source`] — replication transport, slot/publication management, the stream loop.
//! - [`pgoutput`] — pure decoding of the wire format.
//! - [`value`] — typed column values and their `to_jsonb()`-exact JSON rendering.
//! - [`change`] — the change model.
//! - [`encode`] — changes → sink messages.
//! - [`transform`] — Wasm components that filter, modify, split and route changes.
//! - [`pipeline`] — batches through transforms and sinks, and the acknowledged checkpoint.
//! - [`config`] — `pipeline.toml`; [`dsn`] — connection strings.
//! - [`progress`] — what the pipeline acknowledged, reported back to the source.
//! - [`metrics`] — every exported metric, named in one place.
//! - [`health`] — readiness state: the stream and each sink, shared as a handle.
//! - [`admin`] — `/healthz`, `/readyz`, `/metrics` over that state.

pub mod admin;
pub mod change;
pub mod config;
pub mod dsn;
pub mod encode;
pub mod health;
pub mod lsn;
pub mod metrics;
pub mod pgoutput;
pub mod pipeline;
pub mod progress;
pub mod source;
pub mod transform;
pub mod value;
