//! Transaction assembly: decoded pgoutput messages in, batches of whole transactions out.
//!
//! Pure: no socket, no timers, no catalog. The stream loop (`stream.rs`) reads frames,
//! decodes them, resolves a relation's column types (which needs the control connection)
//! and feeds the messages here; it asks for a batch when the pipeline has room, or when
//! `Assembler::is_full` says reading must pause. Everything about *what* goes into a
//! batch is decided here, so it is tested on hand-built messages:
//!
//! - a batch holds whole transactions; one larger than `max_changes` changes or
//!   `max_batch_bytes` (see `Pending::bytes`) is split, and only the batch holding its
//!   commit carries a checkpoint;
//! - transactions that commit below the slot's confirmed position (`start_lsn`) are
//!   skipped: Postgres may resend the boundary transaction after a restart;
//! - a non-transactional logical message stands alone: its own LSN, ordinal 0, and
//!   [`NON_TRANSACTIONAL_COMMIT_TS`].

use std::collections::HashMap;
use std::sync::Arc;

use super::error::SourceError;
use super::mapping::{fill_unchanged_toast, row_from_tuple, table_from_relation, MapError};
use super::snapshot::reconcile::{Closed, Windows};
use super::snapshot::STATE_SCHEMA;
use crate::change::{
    Before, Change, Column, DecodingMessage, Op, ReadKey, Row, SnapshotRead, Table,
};
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage, OldTuple, Relation};
use crate::value::TypeInfo;

/// A run of changes handed to the pipeline. Whole transactions, except that a
/// transaction larger than `max_changes` or `max_batch_bytes` is split across batches.
#[derive(Debug)]
pub struct Batch {
    /// 1, 2, 3 … in stream order.
    pub seq: u64,
    pub changes: Vec<Change>,
    /// End LSN of the last transaction that *completes* in this batch: once this batch
    /// and all before it are acknowledged, the slot may be confirmed up to here.
    pub checkpoint: Option<Lsn>,
    /// Set by the transform stage when a module failed with `on_error = "dead-letter"`:
    /// deliver these (original) changes to this sink only.
    pub dead_letter: Option<std::sync::Arc<str>>,
    /// The last transaction continues in the next batch (a split: this batch holds only
    /// part of one transaction, and no checkpoint).
    pub continues: bool,
}

/// `commit_ts` of a non-transactional logical message (`pg_logical_emit_message` with
/// `transactional = false`): 0, i.e. 2000-01-01 00:00:00 UTC, the Postgres epoch.
///
/// Such a message has no commit, and its WAL record carries no time. Any clock reading
/// would make a replay differ from the first delivery (after a crash the message is
/// streamed again, with the same id): the time of reading it changes, and so does "the
/// last commit seen", because a restarted stream begins at the confirmed position and
/// does not see the transactions before it. A fixed value keeps the output
/// deterministic; consumers tell these messages apart by `transactional: false` (JSON
/// `commit_ts` `"2000-01-01T00:00:00+00:00"`, Debezium `source.ts_ms` 946684800000).
pub const NON_TRANSACTIONAL_COMMIT_TS: i64 = 0;

/// Estimated memory of a decoded change beyond the pgoutput bytes it points into: the
/// `Change` itself and its row vectors' headers.
const CHANGE_OVERHEAD: usize = std::mem::size_of::<Change>() + 64;
/// Estimated memory per decoded column value (its `Value` and name reference).
const VALUE_OVERHEAD: usize = std::mem::size_of::<crate::value::Value>() + 16;

/// The transaction being assembled.
#[derive(Debug)]
struct Txn {
    xid: u32,
    commit_lsn: Lsn,
    commit_ts: i64,
    next_ordinal: u32,
    /// Already confirmed before this run started: Postgres may resend the boundary txn.
    skip: bool,
    /// Its Origin message's name, when it came through another node's replication.
    origin: Option<Arc<str>>,
}

/// Changes collected but not yet handed over.
#[derive(Debug, Default)]
struct Pending {
    changes: Vec<Change>,
    /// `changes[..complete]` are whole transactions (or non-transactional messages).
    complete: usize,
    /// End LSN of the last commit inside `changes[..complete]`.
    checkpoint: Option<Lsn>,
    next_seq: u64,
    /// Approximate memory held by `changes`: the pgoutput bytes their values point into
    /// (decoded values are slices of the received buffers) plus the decoded structures.
    bytes: usize,
    /// `bytes` of `changes[..complete]`.
    complete_bytes: usize,
}

impl Pending {
    fn has_complete(&self) -> bool {
        self.complete > 0 || self.checkpoint.is_some()
    }

    /// Too large to keep reading into: hand over (whole transactions, or a split one).
    fn is_full(&self, limits: &Limits) -> bool {
        self.changes.len() >= limits.max_changes || self.bytes >= limits.max_batch_bytes
    }

    /// Appends a change; the first growth goes straight to a batch's worth of room (growing
    /// by doubling copied every change about twice per batch).
    fn push(&mut self, change: Change, limits: &Limits) {
        if self.changes.len() == self.changes.capacity() {
            // No more room than a batch can use: by count, or by size when rows are wide.
            let room = limits
                .max_changes
                .min(4096)
                .min(limits.max_batch_bytes / CHANGE_OVERHEAD)
                .max(1);
            if self.changes.len() < room {
                self.changes.reserve_exact(room - self.changes.len());
            }
        }
        self.changes.push(change);
    }

    /// Marks everything so far as whole transactions.
    fn mark_complete(&mut self) {
        self.complete = self.changes.len();
        self.complete_bytes = self.bytes;
    }

    /// Takes the complete part, or everything when `split` (a transaction too big to wait for).
    fn take(&mut self, split: bool) -> Batch {
        let changes = if split {
            self.bytes = 0;
            std::mem::take(&mut self.changes)
        } else {
            self.bytes -= self.complete_bytes;
            let tail = self.changes.split_off(self.complete);
            std::mem::replace(&mut self.changes, tail)
        };
        self.complete = 0;
        self.complete_bytes = 0;
        self.next_seq += 1;
        crate::metrics::batch_received(&changes);
        Batch {
            seq: self.next_seq,
            changes,
            checkpoint: self.checkpoint.take(),
            dead_letter: None,
            continues: split,
        }
    }
}

/// When a batch is due regardless of the pipeline: `max_changes` changes or about
/// `max_batch_bytes` of decoded data.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_changes: usize,
    max_batch_bytes: usize,
}

/// Builds batches of whole transactions from decoded pgoutput messages.
#[derive(Debug)]
pub(super) struct Assembler {
    limits: Limits,
    /// Everything below this was confirmed before we started.
    start_lsn: Lsn,
    relations: HashMap<u32, Arc<Table>>,
    txn: Option<Txn>,
    pending: Pending,
    /// Snapshot chunks being reconciled against the stream.
    windows: Windows,
    /// A chunk's reads not yet in `pending` (see [`Assembler::push_reads`]).
    reads_left: Option<ReadsLeft>,
}

/// The reads of a chunk still to join the open transaction: they go into `pending` as
/// batches are handed over, so a chunk of tens of thousands of rows travels in batches of
/// `max_changes` like any large transaction. (As one batch, every chunk took fresh
/// megabytes for its changes, its encoding and its messages: page faults, and more memory
/// at once than `max_changes` promises.)
#[derive(Debug)]
struct ReadsLeft {
    table: Arc<Table>,
    snapshot: u32,
    rows: std::vec::IntoIter<(u128, Row)>,
    last: Option<u128>,
    lsn: Lsn,
    /// The chunk's COPY bytes spread over its rows (the values point into them).
    row_bytes: usize,
}

impl Assembler {
    /// An assembler for a stream that starts at the slot's confirmed position `start_lsn`.
    pub(super) fn new(start_lsn: Lsn, max_changes: usize, max_batch_bytes: usize) -> Self {
        Assembler {
            limits: Limits {
                max_changes,
                max_batch_bytes,
            },
            start_lsn,
            relations: HashMap::new(),
            txn: None,
            pending: Pending::default(),
            windows: Windows::default(),
            reads_left: None,
        }
    }

    /// A snapshot chunk's low watermark (see `snapshot::reconcile`).
    pub(super) fn open_window(&mut self, seq: u64, table_oid: u32, key: Arc<[Arc<str>]>) {
        self.windows.open(seq, table_oid, key);
    }

    /// A chunk's high watermark: what the stream changed while it was copied.
    pub(super) fn close_window(&mut self, seq: u64) -> Option<Closed> {
        self.windows.close(seq)
    }

    /// A chunk given up before its high watermark.
    pub(super) fn abort_window(&mut self, seq: u64) {
        self.windows.abort(seq);
    }

    /// The open transaction's commit LSN.
    pub(super) fn current_commit_lsn(&self) -> Option<Lsn> {
        self.txn.as_ref().map(|t| t.commit_lsn)
    }

    /// Whether a transaction is open and not skipped (reads can join it).
    pub(super) fn in_live_txn(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| !t.skip)
    }

    /// Delivers a chunk's rows as reads, inside the current transaction (the high
    /// watermark's): they share its commit LSN and time and take the next ordinals, so
    /// the batch holding them carries that transaction's checkpoint. `bytes` is the
    /// chunk's COPY size (the rows' values point into it). Returns how many were added.
    pub(super) fn push_reads(
        &mut self,
        table: &Arc<Table>,
        snapshot: u32,
        rows: Vec<(u128, Row)>,
        last: Option<u128>,
        lsn: Lsn,
        bytes: usize,
    ) -> usize {
        if self.txn.is_none() || rows.is_empty() {
            return 0;
        }
        // Another chunk's reads still waiting (not expected: the stream loop hands batches
        // over until none are left before it reads on) go first, whatever the limits.
        self.fill_reads(true);
        // No reserve here: `Pending::push` grows straight to a batch's worth of room.
        let n = rows.len();
        self.reads_left = Some(ReadsLeft {
            table: Arc::clone(table),
            snapshot,
            rows: rows.into_iter(),
            last,
            lsn,
            row_bytes: bytes / n,
        });
        self.fill_reads(false);
        n
    }

    /// Moves waiting reads into `pending` until it is full (or all of them when `all`).
    fn fill_reads(&mut self, all: bool) {
        let Some(left) = self.reads_left.as_mut() else {
            return;
        };
        let Some(txn) = self.txn.as_mut() else {
            self.reads_left = None;
            return;
        };
        while all || !self.pending.is_full(&self.limits) {
            let Some((key, row)) = left.rows.next() else {
                break;
            };
            let ordinal = txn.next_ordinal;
            txn.next_ordinal += 1;
            self.pending.bytes += left.row_bytes + CHANGE_OVERHEAD + row.0.len() * VALUE_OVERHEAD;
            let change = Change {
                op: Op::Read,
                commit_lsn: txn.commit_lsn,
                ordinal,
                lsn: left.lsn,
                xid: txn.xid,
                commit_ts: txn.commit_ts,
                table: Some(Arc::clone(&left.table)),
                before: None,
                after: Some(row),
                truncate: None,
                message: None,
                split: 0,
                routing: None,
                read: Some(SnapshotRead {
                    key: ReadKey {
                        snapshot: left.snapshot,
                        key,
                    },
                    last: left.last == Some(key),
                }),
                origin: None,
            };
            self.pending.push(change, &self.limits);
        }
        if left.rows.len() == 0 {
            self.reads_left = None;
        }
    }

    /// A `Relation` message, with its columns' types resolved by the caller (that needs the
    /// catalog). `size` is the message's pgoutput size, counted like every message's.
    pub(super) fn relation(&mut self, rel: Relation, types: Vec<TypeInfo>, size: usize) {
        let table = table_from_relation(rel, types);
        tracing::debug!(relation_id = table.id, schema = %table.schema, table = %table.name, "relation");
        self.relations.insert(table.id, table);
        self.count(size);
    }

    /// A message that changes nothing here (e.g. a heartbeat the caller consumed); its
    /// `size` is counted like every message's.
    pub(super) fn ignore(&mut self, size: usize) {
        self.count(size);
    }

    /// Applies one decoded message received at WAL position `lsn`; `size` is its pgoutput
    /// size. `Relation` messages go through [`Assembler::relation`] instead (here they are
    /// ignored), and so does the caller's own bookkeeping for `Type`.
    pub(super) fn apply(
        &mut self,
        msg: LogicalMessage,
        lsn: Lsn,
        size: usize,
    ) -> Result<(), SourceError> {
        // The decoded values are slices of this message: count its bytes while the pending
        // changes hold them (Begin/Commit too: noise).
        self.pending.bytes += size;
        if let Err(e) = self.apply_message(msg, lsn) {
            // Nothing of it was kept; the caller may apply it again (see `retype`).
            self.pending.bytes -= size;
            return Err(e);
        }
        self.release_unheld();
        Ok(())
    }

    /// The table relation `id` describes, if a `Relation` message described it.
    pub(super) fn table(&self, id: u32) -> Option<&Arc<Table>> {
        self.relations.get(&id)
    }

    /// Gives a described table's columns freshly resolved types (a composite type one of
    /// them holds changed shape: Postgres sends no new `Relation` message for that).
    pub(super) fn retype(&mut self, id: u32, types: Vec<TypeInfo>) {
        if let Some(table) = self.relations.get_mut(&id) {
            let columns = table
                .columns
                .iter()
                .zip(types)
                .map(|(c, type_info)| Column {
                    name: Arc::clone(&c.name),
                    type_oid: c.type_oid,
                    type_info,
                    is_key: c.is_key,
                })
                .collect();
            *table = Arc::new(Table {
                id: table.id,
                schema: Arc::clone(&table.schema),
                name: Arc::clone(&table.name),
                replica_identity: table.replica_identity,
                columns,
            });
        }
    }

    /// Whether reading should pause until a batch is handed over.
    pub(super) fn is_full(&self) -> bool {
        self.pending.is_full(&self.limits) || self.reads_left.is_some()
    }

    /// Whether a snapshot chunk's reads still wait to join their transaction.
    pub(super) fn has_reads_left(&self) -> bool {
        self.reads_left.is_some()
    }

    /// Whether whole transactions (or a lone checkpoint) wait to be handed over.
    pub(super) fn has_complete(&self) -> bool {
        self.pending.has_complete()
    }

    /// Nothing open, nothing pending: every change received so far was handed over.
    pub(super) fn is_drained(&self) -> bool {
        self.txn.is_none()
            && self.pending.changes.is_empty()
            && !self.pending.has_complete()
            && self.reads_left.is_none()
    }

    /// `seq` of the last batch handed over (0 before the first).
    pub(super) fn last_seq(&self) -> u64 {
        self.pending.next_seq
    }

    /// The next batch once [`Assembler::is_full`]: the whole transactions collected, or,
    /// when the open transaction alone is that large, its changes so far (a split: no
    /// checkpoint; the rest follows in later batches).
    pub(super) fn take_full(&mut self) -> Batch {
        let split = self.pending.complete == 0;
        let batch = self.pending.take(split);
        self.fill_reads(false);
        batch
    }

    /// The whole transactions collected so far (see [`Assembler::has_complete`]).
    pub(super) fn take_complete(&mut self) -> Batch {
        self.pending.take(false)
    }

    fn count(&mut self, size: usize) {
        self.pending.bytes += size;
        self.release_unheld();
    }

    /// Nothing holds the counted bytes (a skipped or empty transaction, a relation).
    fn release_unheld(&mut self) {
        if self.pending.changes.is_empty() {
            self.pending.bytes = 0;
            self.pending.complete_bytes = 0;
        }
    }

    fn apply_message(&mut self, msg: LogicalMessage, lsn: Lsn) -> Result<(), SourceError> {
        // Whatever follows a chunk's reads in the stream comes after all of them.
        self.fill_reads(true);
        match msg {
            LogicalMessage::Begin(b) => {
                self.txn = Some(Txn {
                    xid: b.xid,
                    commit_lsn: b.final_lsn,
                    commit_ts: b.commit_ts,
                    next_ordinal: 0,
                    skip: b.final_lsn < self.start_lsn,
                    origin: None,
                });
            }
            LogicalMessage::Commit(c) => {
                let txn = self.txn.take().ok_or_else(|| {
                    SourceError::Protocol(format!("Commit without Begin at {lsn}"))
                })?;
                if !txn.skip {
                    self.pending.mark_complete();
                    self.pending.checkpoint = Some(c.end_lsn);
                }
            }
            LogicalMessage::Origin(o) => {
                if let Some(txn) = &mut self.txn {
                    txn.origin = Some(Arc::from(o.name));
                }
            }
            LogicalMessage::Relation(_) | LogicalMessage::Type(_) => {}
            LogicalMessage::Insert(i) => {
                if let Some(table) = self.table_for_change(i.relation_id, lsn)? {
                    let after =
                        row_from_tuple(&table, i.new).map_err(|e| value_err(e, &table, lsn))?;
                    self.push(Op::Insert, lsn, Some(table), None, Some(after));
                }
            }
            LogicalMessage::Update(u) => {
                if let Some(table) = self.table_for_change(u.relation_id, lsn)? {
                    let before = match u.old {
                        Some(old) => {
                            Some(old_row(&table, old).map_err(|e| value_err(e, &table, lsn))?)
                        }
                        None => None,
                    };
                    let mut after =
                        row_from_tuple(&table, u.new).map_err(|e| value_err(e, &table, lsn))?;
                    if let Some((Before::Full, old)) = &before {
                        fill_unchanged_toast(old, &mut after);
                    }
                    self.push(Op::Update, lsn, Some(table), before, Some(after));
                }
            }
            LogicalMessage::Delete(d) => {
                if let Some(table) = self.table_for_change(d.relation_id, lsn)? {
                    let before = old_row(&table, d.old).map_err(|e| value_err(e, &table, lsn))?;
                    self.push(Op::Delete, lsn, Some(table), Some(before), None);
                }
            }
            LogicalMessage::Truncate(t) => {
                for id in t.relation_ids {
                    if let Some(table) = self.table_for_change(id, lsn)? {
                        self.push(Op::Truncate, lsn, Some(table), None, None);
                        if let Some(last) = self.pending.changes.last_mut() {
                            last.truncate = Some((t.cascade, t.restart_identity));
                        }
                    }
                }
            }
            LogicalMessage::Message(m) => self.message(m, lsn),
            other => {
                return Err(SourceError::Protocol(format!(
                    "unexpected {} message at {lsn}: streaming and two-phase are not enabled",
                    other.kind()
                )))
            }
        }
        Ok(())
    }

    fn message(&mut self, m: pgoutput::DecodingMessage, lsn: Lsn) {
        let body = DecodingMessage {
            prefix: m.prefix,
            content: m.content,
            transactional: m.transactional,
        };
        if self.txn.is_some() {
            if self.txn.as_ref().is_some_and(|t| !t.skip) {
                self.push(Op::Message, lsn, None, None, None);
                if let Some(last) = self.pending.changes.last_mut() {
                    last.message = Some(body);
                }
            }
            return;
        }
        // Non-transactional: stands alone, identified by its own LSN.
        if m.lsn < self.start_lsn {
            return;
        }
        let change = Change {
            op: Op::Message,
            commit_lsn: m.lsn,
            ordinal: 0,
            lsn,
            xid: m.xid.unwrap_or(0),
            commit_ts: NON_TRANSACTIONAL_COMMIT_TS,
            table: None,
            before: None,
            after: None,
            truncate: None,
            message: Some(body),
            split: 0,
            routing: None,
            read: None,
            origin: None,
        };
        self.pending.push(change, &self.limits);
        self.pending.bytes += CHANGE_OVERHEAD;
        self.pending.mark_complete();
    }

    /// The table for a row change, or `None` when the transaction is being skipped.
    fn table_for_change(
        &self,
        relation_id: u32,
        lsn: Lsn,
    ) -> Result<Option<Arc<Table>>, SourceError> {
        let txn = self.txn.as_ref().ok_or_else(|| {
            SourceError::Protocol(format!("row change outside a transaction at {lsn}"))
        })?;
        if txn.skip {
            return Ok(None);
        }
        let table = self
            .relations
            .get(&relation_id)
            .ok_or(SourceError::UnknownRelation { relation_id, lsn })?;
        // cdc-host's own bookkeeping (snapshot progress) is never delivered, even when
        // the publication is FOR ALL TABLES.
        if &*table.schema == STATE_SCHEMA {
            return Ok(None);
        }
        Ok(Some(Arc::clone(table)))
    }

    fn push(
        &mut self,
        op: Op,
        lsn: Lsn,
        table: Option<Arc<Table>>,
        before: Option<(Before, Row)>,
        after: Option<Row>,
    ) {
        let Some(txn) = self.txn.as_mut() else { return };
        let ordinal = txn.next_ordinal;
        txn.next_ordinal += 1;
        let columns =
            before.as_ref().map_or(0, |(_, r)| r.0.len()) + after.as_ref().map_or(0, |r| r.0.len());
        self.pending.bytes += CHANGE_OVERHEAD + columns * VALUE_OVERHEAD;
        let change = Change {
            op,
            commit_lsn: txn.commit_lsn,
            ordinal,
            lsn,
            xid: txn.xid,
            commit_ts: txn.commit_ts,
            table,
            before,
            after,
            truncate: None,
            message: None,
            split: 0,
            routing: None,
            read: None,
            origin: txn.origin.clone(),
        };
        if !self.windows.is_empty() {
            self.windows.observe(&change);
        }
        self.pending.push(change, &self.limits);
    }
}

fn old_row(table: &Table, old: OldTuple) -> Result<(Before, Row), MapError> {
    match old {
        OldTuple::Key(t) => Ok((Before::Key, row_from_tuple(table, t)?)),
        OldTuple::Full(t) => Ok((Before::Full, row_from_tuple(table, t)?)),
    }
}

fn value_err(e: MapError, table: &Table, lsn: Lsn) -> SourceError {
    let (column, message) = match e {
        MapError::Value { column, message } => (column, message),
        other => (String::new(), other.to_string()),
    };
    SourceError::Value {
        lsn,
        table: format!("{}.{}", table.schema, table.name),
        column,
        message,
    }
}

#[cfg(test)]
mod tests;
