//! Standard output: one encoded change per line. Acknowledged once flushed.

pub mod config;
mod sink;

pub use sink::StdoutSink;
