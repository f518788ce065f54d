//! The replication origins of a batch's transactions, for transforms.
//!
//! An origin belongs to a transaction, not to a change: pgoutput names it once, in the
//! transaction's Origin message. The WIT `change` record has no field for it (adding one
//! would break every 0.2 module), so a module asks for it by commit LSN
//! (`host.origin(commit-lsn)`), and the host puts it back on every change a module
//! returns for that transaction — a change keeps its id, hence its commit LSN, through
//! a transform, and so its origin.

use std::sync::Arc;

use crate::change::Change;
use crate::lsn::Lsn;

/// Commit LSN → origin name, for the transactions of one batch that came through a
/// replication origin. Empty (and free) for the usual batch that has none.
#[derive(Debug, Clone, Default)]
pub struct Origins(Arc<[(Lsn, Arc<str>)]>);

impl Origins {
    /// The origins of `changes`' transactions (snapshot reads have none).
    pub fn of(changes: &[Change]) -> Origins {
        let mut found: Vec<(Lsn, Arc<str>)> = Vec::new();
        for c in changes {
            if let (Some(origin), None) = (&c.origin, &c.read) {
                // A transaction's changes are consecutive: compare with the last only.
                if found.last().is_none_or(|(lsn, _)| *lsn != c.commit_lsn) {
                    found.push((c.commit_lsn, Arc::clone(origin)));
                }
            }
        }
        if found.is_empty() {
            return Origins::default();
        }
        found.sort_by_key(|(lsn, _)| *lsn);
        found.dedup_by_key(|(lsn, _)| *lsn);
        Origins(found.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The origin of the transaction that committed at `commit_lsn`.
    pub fn get(&self, commit_lsn: Lsn) -> Option<&Arc<str>> {
        let i = self
            .0
            .binary_search_by_key(&commit_lsn, |(lsn, _)| *lsn)
            .ok()?;
        Some(&self.0[i].1)
    }

    /// Puts each transaction's origin back on the changes a module returned for it.
    pub fn restore(&self, changes: &mut [Change]) {
        if self.is_empty() {
            return;
        }
        for c in changes.iter_mut() {
            if c.origin.is_none() && c.read.is_none() {
                c.origin = self.get(c.commit_lsn).cloned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Op;

    fn change(commit: u64, origin: Option<&str>) -> Change {
        Change {
            op: Op::Insert,
            commit_lsn: Lsn(commit),
            ordinal: 0,
            lsn: Lsn(commit - 1),
            xid: 1,
            commit_ts: 0,
            table: None,
            before: None,
            after: None,
            truncate: None,
            message: None,
            split: 0,
            routing: None,
            read: None,
            origin: origin.map(Arc::from),
        }
    }

    #[test]
    fn origins_follow_their_transactions() {
        let batch = [
            change(30, Some("pg_1")),
            change(30, Some("pg_1")),
            change(10, None),
            change(20, Some("node_b")),
        ];
        let o = Origins::of(&batch);
        assert_eq!(o.get(Lsn(30)).map(|s| &**s), Some("pg_1"));
        assert_eq!(o.get(Lsn(20)).map(|s| &**s), Some("node_b"));
        assert_eq!(o.get(Lsn(10)), None);
        assert_eq!(o.get(Lsn(99)), None);
        // What a module returned: origins gone, one change split off another.
        let mut out = vec![change(20, None), change(10, None), change(30, None)];
        out.push(change(30, None));
        o.restore(&mut out);
        let names: Vec<_> = out.iter().map(|c| c.origin.as_deref()).collect();
        assert_eq!(names, [Some("node_b"), None, Some("pg_1"), Some("pg_1")]);
        assert!(Origins::of(&[change(5, None)]).is_empty());
    }
}
