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
//!
//! One refinement over the paper: an UPDATE that leaves a TOASTed column unchanged does not
//! carry its value, so a consumer that never saw the row could not complete it from the
//! stream. For such keys the window keeps the latest row image; at the high watermark the
//! read is *that image* with the missing values taken from the chunk — correct because a
//! value no change in the window carried was constant throughout the window, and the copy
//! was made inside it.

use std::collections::HashMap;
use std::sync::Arc;

use super::key::key_hash;
use crate::change::{Change, Op, Row, Table};
use crate::value::Value;

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
    changed: HashMap<u128, Latest>,
    truncated: bool,
}

/// The last thing the window saw of a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Latest {
    /// Deleted, or its key changed to another: the chunk's row is gone.
    Gone,
    /// Its latest image was complete (kept to complete a later partial one): the stream
    /// delivered all of it.
    Complete(Row),
    /// Its latest image, with columns no change in the window carried
    /// (`Value::UnchangedToast`) still to be taken from the copy.
    Partial(Row),
    /// Its key changed (to the key hashed `to`) by a change whose new image lacks TOASTed
    /// values: those are the copy's values of this row.
    Moved { to: u128, image: Row },
}

/// What the stream saw while a chunk was being copied.
#[derive(Debug, Default)]
pub struct Closed {
    pub changed: HashMap<u128, Latest>,
    pub truncated: bool,
}

impl Closed {
    /// The rows of a chunk that may still be delivered: untouched ones as copied, and for
    /// keys whose latest change lacked TOASTed values, that change's image completed from
    /// the copy.
    pub fn reconcile(self, rows: Vec<(u128, Row)>) -> Vec<(u128, Row)> {
        if self.truncated {
            return Vec::new();
        }
        if self.changed.is_empty() {
            return rows;
        }
        let mut changed = self.changed;
        let in_chunk: std::collections::HashSet<u128> = rows.iter().map(|(h, _)| *h).collect();
        let fill = |mut latest: Row, copied: Row| {
            for (v, c) in latest.0.iter_mut().zip(copied.0) {
                if matches!(v, Value::UnchangedToast) {
                    *v = c;
                }
            }
            latest
        };
        rows.into_iter()
            .filter_map(|(h, copied)| match changed.remove(&h) {
                None => Some((h, copied)),
                Some(Latest::Gone | Latest::Complete(_)) => None,
                Some(Latest::Partial(latest)) => Some((h, fill(latest, copied))),
                // The row lives on under its new key, which this chunk does not hold.
                Some(Latest::Moved { to, image }) if !in_chunk.contains(&to) => {
                    Some((to, fill(image, copied)))
                }
                Some(Latest::Moved { .. }) => None,
            })
            .collect()
    }
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
            changed: HashMap::new(),
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
            let after = c
                .after
                .as_ref()
                .and_then(|r| Some((key_hash(table, key, r, &mut self.scratch)?, r)));
            // A key change: the old key's last image (if the window saw one) is the
            // new key's previous image.
            let mut moved_from = None;
            if let Some((_, before)) = &c.before {
                if let Some(h) = key_hash(table, key, before, &mut self.scratch) {
                    if after.is_none_or(|(a, _)| a != h) {
                        moved_from = Some((h, w.changed.insert(h, Latest::Gone)));
                    }
                }
            }
            if let Some((h, row)) = after {
                let mut row = row.clone();
                if row.0.iter().any(|v| matches!(v, Value::UnchangedToast)) {
                    // Fill what an earlier change in the window carried.
                    let prev = match &moved_from {
                        Some((_, Some(Latest::Partial(p) | Latest::Complete(p)))) => Some(p),
                        Some(_) => None,
                        None => match w.changed.get(&h) {
                            Some(Latest::Partial(p) | Latest::Complete(p)) => Some(p),
                            _ => None,
                        },
                    };
                    if let Some(prev) = prev {
                        for (v, p) in row.0.iter_mut().zip(&prev.0) {
                            if matches!(v, Value::UnchangedToast) {
                                *v = p.clone();
                            }
                        }
                    }
                }
                let partial = row.0.iter().any(|v| matches!(v, Value::UnchangedToast));
                if let (true, Some((old, _))) = (partial, &moved_from) {
                    // The copy of the old row holds the values this image still lacks.
                    w.changed.insert(
                        *old,
                        Latest::Moved {
                            to: h,
                            image: row.clone(),
                        },
                    );
                }
                let latest = if partial {
                    Latest::Partial(row)
                } else {
                    Latest::Complete(row)
                };
                w.changed.insert(h, latest);
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
            origin: None,
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
        let row = |k: i32| Row(vec![Value::Int4(k), Value::Int4(0)]);
        let want: HashMap<u128, Latest> = [
            (2, Latest::Complete(row(2))),
            (3, Latest::Gone),
            (4, Latest::Complete(row(4))),
            (5, Latest::Gone),
        ]
        .into_iter()
        .map(|(k, l)| (hash(k), l))
        .collect();
        assert_eq!(closed.changed, want);
        assert!(w.is_empty());
        assert!(w.close(7).is_none(), "closed once");
    }

    #[test]
    fn an_update_without_its_toasted_value_is_completed_from_the_copy() {
        let mut w = Windows::default();
        w.open(1, 42, Arc::from(vec![Arc::<str>::from("id")]));
        // id 1: v left unchanged (TOAST) by the only change in the window.
        let mut u = change(Op::Update, None, Some(1));
        u.after = Some(Row(vec![Value::Int4(1), Value::UnchangedToast]));
        w.observe(&u);
        // id 2: a first change carried v fully, a second left it unchanged.
        let mut full = change(Op::Update, None, Some(2));
        full.after = Some(Row(vec![Value::Int4(2), Value::Int4(20)]));
        let mut partial = change(Op::Update, None, Some(2));
        partial.after = Some(Row(vec![Value::Int4(2), Value::UnchangedToast]));
        w.observe(&full);
        w.observe(&partial);
        let copied = |k: i32, v: i32| (hash(k), Row(vec![Value::Int4(k), Value::Int4(v)]));
        let rows = w
            .close(1)
            .unwrap()
            .reconcile(vec![copied(1, 10), copied(2, 99), copied(3, 30)]);
        assert_eq!(rows, vec![copied(1, 10), copied(3, 30)]);
    }

    #[test]
    fn a_key_change_without_its_toasted_value_takes_it_from_the_old_rows_copy() {
        let mut w = Windows::default();
        w.open(1, 42, Arc::from(vec![Arc::<str>::from("id")]));
        let mut u = change(Op::Update, Some(1), Some(5));
        u.after = Some(Row(vec![Value::Int4(5), Value::UnchangedToast]));
        w.observe(&u);
        let copied = |k: i32, v: i32| (hash(k), Row(vec![Value::Int4(k), Value::Int4(v)]));
        // The copy has the old key (made before the change): the row goes out under its
        // new key with the old row's value.
        let closed = w.close(1).unwrap();
        assert_eq!(closed.reconcile(vec![copied(1, 10)]), vec![copied(5, 10)]);
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
