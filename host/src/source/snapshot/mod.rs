//! Rows that already exist: the initial snapshot and on-demand backfills, copied in
//! key-ordered chunks while the stream keeps running (DBLog, as Debezium's incremental
//! snapshots).
//!
//! - [`copy`]: COPY text rows → typed rows (pure).
//! - [`key`]: a row's identity (hash of table and key values), shared by both sides.
//! - [`reconcile`]: the watermark windows the stream keeps (pure).
//! - [`catalog`]: what to copy of a table — its published columns, the key to chunk by,
//!   the publication's row filter.
//! - [`state`]: the `cdc_host` schema where requests and acknowledged progress live.
//! - [`worker`]: the coordinator and its workers (one connection each), and progress.
//!
//! How a chunk travels: the worker announces it to the stream loop ([`Event::Open`]),
//! writes the low watermark, copies the chunk, hands the rows over ([`Event::Rows`]),
//! writes the high watermark. The stream loop (which owns the ordering) opens a window at
//! the low watermark, and at the high one delivers the rows the window saw no change of,
//! as reads inside the high watermark's transaction; it reports the chunk's commit LSN
//! back ([`Delivered`]). Once every sink acknowledged that position, the worker records
//! the chunk's upper key in `cdc_host.snapshots`: a restart resumes after it.

pub mod catalog;
pub mod copy;
pub mod key;
pub mod reconcile;
pub mod request;
pub mod state;
pub mod worker;

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::change::{Row, Table};
use crate::lsn::Lsn;

/// The schema of cdc-host's own tables; changes to them are never delivered.
pub const STATE_SCHEMA: &str = "cdc_host";

/// Prefix of the watermark messages (transactional, consumed by the stream, never
/// delivered). Content: `<slot> <run nonce> <chunk seq> low|high|abort`.
pub const WATERMARK_PREFIX: &str = "cdc-host.snapshot";

/// Prefix of the message `cdc-host backfill` writes to wake the running instance
/// (content: the slot name). Consumed, never delivered.
pub const SIGNAL_PREFIX: &str = "cdc-host.signal";

/// The key columns a chunk is ordered by (and reconciled on).
pub type KeyNames = Arc<[Arc<str>]>;

/// What a worker tells the stream loop about a chunk.
#[derive(Debug)]
pub enum Event {
    /// Sent before the low watermark is written.
    Open {
        seq: u64,
        table_oid: u32,
        key: KeyNames,
    },
    /// Sent before the high watermark is written.
    Rows(Chunk),
}

/// A copied chunk.
#[derive(Debug)]
pub struct Chunk {
    pub seq: u64,
    pub snapshot: u32,
    pub table: Arc<Table>,
    /// Each row with its key hash.
    pub rows: Vec<(u128, Row)>,
    /// The key hash of the table's very last row, when this chunk holds it.
    pub last: Option<u128>,
    /// COPY bytes the rows point into.
    pub bytes: usize,
}

/// The stream loop's answer: chunk `seq` was delivered (`emitted` reads) in the
/// transaction committed at `commit_lsn`, or dropped (`commit_lsn` None: the worker copies
/// it again).
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub seq: u64,
    pub commit_lsn: Option<Lsn>,
    pub emitted: usize,
}

/// The stream loop's end of the snapshot machinery.
#[derive(Debug)]
pub struct Link {
    pub slot: String,
    /// Random per connection: watermarks of an earlier run (streamed again after a
    /// restart) are recognised and ignored.
    pub nonce: u64,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub delivered: mpsc::UnboundedSender<Delivered>,
    /// Woken when a signal message arrives (a backfill was requested or cancelled).
    pub wake: Arc<Notify>,
}

/// A watermark message of ours, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Watermark {
    Low(u64),
    High(u64),
    Abort(u64),
}

impl Watermark {
    pub fn content(&self, slot: &str, nonce: u64) -> String {
        let (seq, kind) = match self {
            Watermark::Low(s) => (s, "low"),
            Watermark::High(s) => (s, "high"),
            Watermark::Abort(s) => (s, "abort"),
        };
        format!("{slot} {nonce:016x} {seq} {kind}")
    }

    /// `None` for another slot's or another run's watermark (or garbage).
    pub fn parse(content: &[u8], slot: &str, nonce: u64) -> Option<Watermark> {
        let text = std::str::from_utf8(content).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != slot || u64::from_str_radix(parts.next()?, 16).ok()? != nonce {
            return None;
        }
        let seq = parts.next()?.parse().ok()?;
        match parts.next()? {
            "low" => Some(Watermark::Low(seq)),
            "high" => Some(Watermark::High(seq)),
            "abort" => Some(Watermark::Abort(seq)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_round_trip_and_foreign_ones_are_ignored() {
        let w = Watermark::High(17);
        let text = w.content("s1", 0xabc);
        assert_eq!(text, "s1 0000000000000abc 17 high");
        assert_eq!(Watermark::parse(text.as_bytes(), "s1", 0xabc), Some(w));
        assert_eq!(Watermark::parse(text.as_bytes(), "s2", 0xabc), None);
        assert_eq!(Watermark::parse(text.as_bytes(), "s1", 0xabd), None);
        assert_eq!(Watermark::parse(b"junk", "s1", 0xabc), None);
    }
}
