//! cdc-host: Postgres logical replication (`pgoutput`) → typed changes → sinks.
//!
//! The binary (`main.rs`) is a thin CLI over this library. See ARCHITECTURE.md.

pub mod lsn;
pub mod pgoutput;
pub mod value;
