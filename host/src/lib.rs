//! cdc-host: Postgres logical replication (`pgoutput`) → typed changes → sinks.
//!
//! The binary (`main.rs`) is a thin CLI over this library. See ARCHITECTURE.md.
//!
//! - [`source`] — replication transport, slot/publication management, the stream loop.
//! - [`pgoutput`] — pure decoding of the wire format.
//! - [`value`] — typed column values and their `to_jsonb()`-exact JSON rendering.
//! - [`change`] — the change model.
//! - [`encode`] — changes → sink messages.
//! - [`pipeline`] — batches through sinks, and the acknowledged checkpoint.
//! - [`config`] — `pipeline.toml`.

pub mod change;
pub mod config;
pub mod encode;
pub mod lsn;
pub mod pgoutput;
pub mod pipeline;
pub mod sink_config;
pub mod source;
pub mod value;
