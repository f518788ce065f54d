//! The acknowledgement contract: which batches are out, how many sinks still owe an
//! acknowledgement for each, and the progress that follows from them.
//!
//! Progress moves only over the unbroken prefix of batches that every sink they were sent
//! to acknowledged; the checkpoint is the last commit LSN inside that prefix. This is the
//! whole "nothing confirmed past an undelivered change" guarantee, so it stays small and
//! unit-tested.

use std::collections::{BTreeMap, VecDeque};

use crate::change::Change;
use crate::lsn::Lsn;
use crate::progress::Progress;

/// Flow-control bounds of the delivery stage.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Batches handed to sinks and not yet acknowledged by all of them.
    pub max_inflight: usize,
    /// Encoded bytes of those batches.
    pub max_inflight_bytes: usize,
}

/// Which batches are out, and how many sinks still owe an acknowledgement for each.
#[derive(Debug, Default)]
pub struct AckTracker {
    pending: BTreeMap<u64, Outstanding>,
    bytes: usize,
}

#[derive(Debug)]
struct Outstanding {
    remaining: usize,
    checkpoint: Option<Lsn>,
    bytes: usize,
}

impl AckTracker {
    /// Batch `seq` went to `sinks` sinks; `checkpoint` is its last commit's end LSN, if
    /// a commit completes in it.
    pub fn register(&mut self, seq: u64, sinks: usize, checkpoint: Option<Lsn>, bytes: usize) {
        self.pending.insert(
            seq,
            Outstanding {
                remaining: sinks,
                checkpoint,
                bytes,
            },
        );
        self.bytes += bytes;
    }

    /// Records one sink's ack; returns the progress of the acknowledged prefix, if it moved.
    pub fn ack(&mut self, seq: u64, progress: Progress) -> Option<Progress> {
        if let Some(o) = self.pending.get_mut(&seq) {
            o.remaining = o.remaining.saturating_sub(1);
        }
        let mut p = progress;
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().remaining > 0 {
                break;
            }
            let (seq, o) = entry.remove_entry();
            self.bytes -= o.bytes;
            p.acked_seq = seq;
            if let Some(c) = o.checkpoint {
                p.checkpoint = c;
            }
        }
        (p != progress).then_some(p)
    }

    /// Whether another batch would exceed the limits.
    pub fn is_full(&self, limits: &Limits) -> bool {
        self.pending.len() >= limits.max_inflight || self.bytes >= limits.max_inflight_bytes
    }

    /// No batch is awaiting an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Commit times of batches handed to the sinks, until every sink acknowledged them: feeds
/// `cdc_commit_to_ack_seconds` (one observation per transaction; a transaction split
/// across batches is timed with its first part) and `cdc_acked_lsn`. Costs nothing while
/// metrics are off.
#[derive(Debug, Default)]
pub struct CommitClock {
    pending: VecDeque<(u64, Vec<i64>)>,
    last_commit: Option<Lsn>,
}

impl CommitClock {
    /// Batch `seq` with `changes` went out.
    pub fn sent(&mut self, seq: u64, changes: &[Change]) {
        if !crate::metrics::enabled() {
            return;
        }
        let mut commits = Vec::new();
        for c in changes {
            if self.last_commit != Some(c.commit_lsn) {
                self.last_commit = Some(c.commit_lsn);
                commits.push(c.commit_ts);
            }
        }
        if !commits.is_empty() {
            self.pending.push_back((seq, commits));
        }
    }

    /// Every batch up to `progress.acked_seq` is acknowledged: records the metrics.
    pub fn acked(&mut self, progress: Progress) {
        if !crate::metrics::enabled() {
            return;
        }
        crate::metrics::acked_lsn(progress.checkpoint);
        while self
            .pending
            .front()
            .is_some_and(|(s, _)| *s <= progress.acked_seq)
        {
            if let Some((_, commits)) = self.pending.pop_front() {
                crate::metrics::commits_acked(commits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_only_over_a_fully_acknowledged_prefix() {
        let mut t = AckTracker::default();
        let p0 = Progress::default();
        t.register(1, 2, Some(Lsn(10)), 5);
        t.register(2, 2, None, 5);
        t.register(3, 2, Some(Lsn(30)), 5);
        // Batch 2 and 3 acked by both sinks, batch 1 by one only: nothing moves.
        assert_eq!(t.ack(2, p0), None);
        assert_eq!(t.ack(2, p0), None);
        assert_eq!(t.ack(3, p0), None);
        assert_eq!(t.ack(3, p0), None);
        assert_eq!(t.ack(1, p0), None);
        // The last ack of batch 1 releases 1, 2 and 3 together.
        let p = t.ack(1, p0).unwrap();
        assert_eq!(
            p,
            Progress {
                acked_seq: 3,
                checkpoint: Lsn(30)
            }
        );
        assert_eq!(t.bytes, 0);
        assert!(t.is_empty());
    }

    #[test]
    fn a_batch_without_checkpoint_keeps_the_previous_one() {
        let mut t = AckTracker::default();
        t.register(1, 1, Some(Lsn(10)), 1);
        t.register(2, 1, None, 1);
        let p = t.ack(1, Progress::default()).unwrap();
        let p = t.ack(2, p).unwrap();
        assert_eq!(
            p,
            Progress {
                acked_seq: 2,
                checkpoint: Lsn(10)
            }
        );
    }

    #[test]
    fn full_by_count_or_bytes() {
        let limits = Limits {
            max_inflight: 2,
            max_inflight_bytes: 100,
        };
        let mut t = AckTracker::default();
        t.register(1, 1, None, 10);
        assert!(!t.is_full(&limits));
        t.register(2, 1, None, 10);
        assert!(t.is_full(&limits));
        let mut t = AckTracker::default();
        t.register(1, 1, None, 100);
        assert!(t.is_full(&limits));
    }
}
