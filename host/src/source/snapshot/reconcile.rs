//! The DBLog reconciliation, pure: which copied rows a chunk may still deliver.
//!
//! A chunk is copied between two watermarks the snapshot worker writes into the WAL
//! (`pg_logical_emit_message`, transactional, each in its own transaction). The stream
//! sees them in commit order. Between the low and the high watermark it records the key
//! of every row the chunk's table changed (inserts, both images of updates, deletes) and
//! whether the table was truncated. At the high watermark, the chunk's rows whose key was
//! changed are dropped — the stream already delivered a change at least as new — and the
//! rest are delivered as reads right there, in the stream's order. A read therefore never
//! overwrites a newer change, and the stream never pauses.

use std::collections::HashSet;
use std::sync::Arc;

use super::key::key_hash;
use crate::change::{Change, Op, Table};

/// Open windows, at most [`MAX_OPEN`] (a worker that died between its watermarks must not
/// make the stream collect keys forever).
#[derive(Debug, Default)]
pub struct Windows {
    open: Vec<Window>,
    scratch: Vec<u8>,
}

/// More than workers × chunks in flight ever need.
const MAX_OPEN: usize = 64;

#[derive(Debug)]
struct Window {
    seq: u64,
    table_oid: u32,
    key_names: Arc<[Arc<str>]>,
    /// Key column indexes in the stream's description of the table (resolved on first use,
    /// again if the relation changes shape).
    resolved: Option<(usize, Vec<usize>)>,
    changed: HashSet<u128>,
    truncated: bool,
}

/// What the stream saw while a chunk was being copied.
#[derive(Debug, Default)]
pub struct Closed {
    pub changed: HashSet<u128>,
    pub truncated: bool,
}

impl Windows {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The low watermark of chunk `seq` of table `table_oid` (chunked by `key_names`).
    pub fn open(&mut self, seq: u64, table_oid: u32, key_names: Arc<[Arc<str>]>) {
        if self.open.len() >= MAX_OPEN {
            let dropped = self.open.remove(0);
            tracing::warn!(
                chunk = dropped.seq,
                "snapshot chunk window dropped (too many open); the chunk will be copied again"
            );
        }
        self.open.push(Window {
            seq,
            table_oid,
            key_names,
            resolved: None,
            changed: HashSet::new(),
            truncated: false,
        });
    }

    /// The high watermark of chunk `seq`: what changed since its low one. `None` when the
    /// window was never opened here (its low watermark came before this stream started).
    pub fn close(&mut self, seq: u64) -> Option<Closed> {
        let pos = self.open.iter().position(|w| w.seq == seq)?;
        let w = self.open.remove(pos);
        Some(Closed {
            changed: w.changed,
            truncated: w.truncated,
        })
    }

    /// Drops a window without delivering anything (the worker gave the chunk up).
    pub fn abort(&mut self, seq: u64) {
        self.open.retain(|w| w.seq != seq);
    }

    /// A change the stream delivers while windows are open.
    pub fn observe(&mut self, c: &Change) {
        let Some(table) = &c.table else { return };
        for w in self.open.iter_mut().filter(|w| w.table_oid == table.id) {
            if c.op == Op::Truncate {
                w.truncated = true;
                continue;
            }
            let key = match &w.resolved {
                Some((n, key)) if *n == table.columns.len() => key,
                _ => match resolve(table, &w.key_names) {
                    Some(k) => &w.resolved.insert((table.columns.len(), k)).1,
                    // The key columns are not all published: nothing can be matched, so
                    // nothing of the chunk may be trusted.
                    None => {
                        w.truncated = true;
                        continue;
                    }
                },
            };
            for row in c.after.iter().chain(c.before.as_ref().map(|(_, r)| r)) {
                if let Some(h) = key_hash(table, key, row, &mut self.scratch) {
                    w.changed.insert(h);
                }
            }
        }
    }
}

fn resolve(table: &Table, names: &[Arc<str>]) -> Option<Vec<usize>> {
    names
        .iter()
        .map(|n| table.columns.iter().position(|c| c.name == *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Before, Column, Row};
    use crate::lsn::Lsn;
    use crate::pgoutput::ReplicaIdentity;
    use crate::value::{builtin_type, oid, Value};

    fn table() -> Arc<Table> {
        let col = |name: &str, key| Column {
            name: name.into(),
            type_oid: oid::INT4,
            type_info: builtin_type(oid::INT4).unwrap(),
            is_key: key,
        };
        Arc::new(Table {
            id: 42,
            schema: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("id", true), col("v", false)],
        })
    }

    fn change(op: Op, before: Option<i32>, after: Option<i32>) -> Change {
        let row = |k: i32| Row(vec![Value::Int4(k), Value::Int4(0)]);
        Change {
            op,
            commit_lsn: Lsn(1),
            ordinal: 0,
            lsn: Lsn(1),
            xid: 1,
            commit_ts: 0,
            table: Some(table()),
            before: before.map(|k| (Before::Key, row(k))),
            after: after.map(row),
            truncate: None,
            message: None,
            split: 0,
            routing: None,
            read: None,
        }
    }

    fn hash(k: i32) -> u128 {
        key_hash(
            &table(),
            &[0],
            &Row(vec![Value::Int4(k), Value::Int4(7)]),
            &mut Vec::new(),
        )
        .unwrap()
    }

    #[test]
    fn collects_every_key_the_table_changed_between_the_watermarks() {
        let mut w = Windows::default();
        w.observe(&change(Op::Insert, None, Some(1))); // before the low watermark
        w.open(7, 42, Arc::from(vec![Arc::<str>::from("id")]));
        w.observe(&change(Op::Insert, None, Some(2)));
        w.observe(&change(Op::Update, Some(3), Some(4))); // key change: both keys
        w.observe(&change(Op::Delete, Some(5), None));
        let closed = w.close(7).unwrap();
        assert!(!closed.truncated);
        let want: HashSet<u128> = [2, 3, 4, 5].into_iter().map(hash).collect();
        assert_eq!(closed.changed, want);
        assert!(w.is_empty());
        assert!(w.close(7).is_none(), "closed once");
    }

    #[test]
    fn a_truncate_spoils_the_chunk_and_other_tables_do_not_count() {
        let mut w = Windows::default();
        w.open(1, 42, Arc::from(vec![Arc::<str>::from("id")]));
        w.open(2, 43, Arc::from(vec![Arc::<str>::from("id")]));
        w.observe(&change(Op::Truncate, None, None));
        assert!(w.close(1).unwrap().truncated);
        let other = w.close(2).unwrap();
        assert!(!other.truncated && other.changed.is_empty());
    }

    #[test]
    fn an_unpublished_key_column_spoils_the_chunk() {
        let mut w = Windows::default();
        w.open(1, 42, Arc::from(vec![Arc::<str>::from("missing")]));
        w.observe(&change(Op::Insert, None, Some(1)));
        assert!(w.close(1).unwrap().truncated);
    }
}
