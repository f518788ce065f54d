//! What the pipeline reports back to the source: how far every sink acknowledged.
//!
//! A leaf shared by both ends: the pipeline produces it, the replication stream reads it
//! to confirm the slot, so the dependency runs only pipeline → source.

use crate::lsn::Lsn;

/// What the pipeline reports back: batches acknowledged by every sink, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Highest `Batch::seq` such that it and every earlier batch were acknowledged.
    pub acked_seq: u64,
    /// The checkpoint of the acknowledged prefix.
    pub checkpoint: Lsn,
}
