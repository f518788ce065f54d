//! The replication stream loop: read pgoutput, build batches of whole transactions,
//! hand them to the pipeline, and report the acknowledged position back to Postgres.
//!
//! One task owns the connection, so reading, keepalive replies and status updates never
//! race. When the pipeline is full the loop stops *reading* (TCP backpressure reaches the
//! walsender) but keeps sending status updates on a timer, so a slow sink never trips
//! `wal_sender_timeout`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::control::Control;
use super::error::{Context, SourceError};
use super::mapping::{row_from_tuple, table_from_relation, MapError};
use super::types::TypeRegistry;
use super::wire::{Frame, WireConn};
use crate::change::{Before, Change, DecodingMessage, Op, Table};
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage, OldTuple, ReplicationMessage};

/// Acknowledged positions are reported to Postgres at most this often (and at least every
/// `status_interval`).
const MIN_REPORT_GAP: Duration = Duration::from_millis(100);

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
}

/// What the pipeline reports back: batches acknowledged by every sink, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Highest `Batch::seq` such that it and every earlier batch were acknowledged.
    pub acked_seq: u64,
    /// The checkpoint of the acknowledged prefix.
    pub checkpoint: Lsn,
}

/// Tunables of the loop.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub max_changes: usize,
    /// A batch also closes (or a transaction is split) once its changes take about this
    /// much memory (see [`Pending::bytes`]); what bounds memory when rows are wide.
    pub max_batch_bytes: usize,
    pub status_interval: Duration,
    pub shutdown_grace: Duration,
    /// Emit a heartbeat message this often (None: off).
    pub heartbeat: Option<Duration>,
    /// Warn above this many bytes of WAL retained by the slot.
    pub max_retained_wal: u64,
}

/// Estimated memory of a decoded change beyond the pgoutput bytes it points into: the
/// `Change` itself and its row vectors' headers.
const CHANGE_OVERHEAD: usize = std::mem::size_of::<Change>() + 64;
/// Estimated memory per decoded column value (its `Value` and name reference).
const VALUE_OVERHEAD: usize = std::mem::size_of::<crate::value::Value>() + 16;

/// Prefix of our heartbeat messages; they are consumed here, never delivered.
pub const HEARTBEAT_PREFIX: &str = "cdc-host.heartbeat";

#[derive(Debug)]
pub(super) struct Txn {
    xid: u32,
    commit_lsn: Lsn,
    commit_ts: i64,
    next_ordinal: u32,
    /// Already confirmed before this run started: Postgres may resend the boundary txn.
    skip: bool,
}

/// Changes collected but not yet handed over.
#[derive(Debug, Default)]
pub(super) struct Pending {
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
    fn is_full(&self, settings: &StreamSettings) -> bool {
        self.changes.len() >= settings.max_changes || self.bytes >= settings.max_batch_bytes
    }

    /// Appends a change; the first growth goes straight to a batch's worth of room (growing
    /// by doubling copied every change about twice per batch).
    fn push(&mut self, change: Change, settings: &StreamSettings) {
        if self.changes.len() == self.changes.capacity() {
            // No more room than a batch can use: by count, or by size when rows are wide.
            let room = settings
                .max_changes
                .min(4096)
                .min(settings.max_batch_bytes / CHANGE_OVERHEAD)
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
        }
    }
}

/// The running stream. Build it with [`super::open`].
#[derive(Debug)]
pub struct Replicator {
    pub(super) conn: WireConn,
    pub(super) control: Control,
    pub(super) slot: String,
    pub(super) user: String,
    pub(super) publication: String,
    pub(super) settings: StreamSettings,
    /// Everything below this was confirmed before we started.
    pub(super) start_lsn: Lsn,
    pub(super) relations: HashMap<u32, Arc<Table>>,
    pub(super) types: TypeRegistry,
    pub(super) txn: Option<Txn>,
    pub(super) pending: Pending,
    /// Highest WAL position received.
    pub(super) received: Lsn,
    /// Highest position confirmable because nothing was in flight when a keepalive came.
    pub(super) idle_flush: Lsn,
    /// The flush position last reported to Postgres.
    pub(super) reported: Lsn,
    pub(super) last_report: Instant,
}

impl Replicator {
    /// Runs until `shutdown` turns true (then drains in-flight batches within the grace
    /// period) or an error occurs. Batches go to `tx`; acknowledgements come on `progress`.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Batch>,
        mut progress: watch::Receiver<Progress>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Lsn, SourceError> {
        let mut tick = tokio::time::interval(self.settings.status_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut report_due: Option<Instant> = None;
        // The retained-WAL check runs every status interval; heartbeats at their own pace.
        let slot_check_every = self.settings.status_interval;
        let mut housekeeping = tokio::time::interval(
            self.settings
                .heartbeat
                .unwrap_or(slot_check_every)
                .min(slot_check_every),
        );
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_slot_check: Option<Instant> = None;
        'stream: loop {
            while let Some(frame) = self.conn.try_frame()? {
                self.handle_frame(frame, &progress).await?;
                if self.pending.is_full(&self.settings) {
                    // Too many changes to keep reading: wait for room, keep reporting. Hand
                    // over whole transactions; split one only when it alone is this large.
                    loop {
                        tokio::select! {
                            biased;
                            _ = shutdown.wait_for(|s| *s) => break 'stream,
                            permit = tx.reserve() => {
                                permit.map_err(|_| pipeline_gone())?.send(self.pending.take(self.pending.complete == 0));
                                break;
                            }
                            _ = tick.tick() => self.report(latest(&progress), false).await?,
                        }
                    }
                }
            }
            let can_send = self.pending.has_complete();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break 'stream,
                permit = tx.reserve(), if can_send => {
                    permit.map_err(|_| pipeline_gone())?.send(self.pending.take(false));
                }
                changed = progress.changed() => {
                    changed.map_err(|_| pipeline_gone())?;
                    let p = *progress.borrow_and_update();
                    if p.checkpoint > self.reported {
                        // Confirm promptly, but at most every MIN_REPORT_GAP.
                        report_due.get_or_insert(self.last_report + MIN_REPORT_GAP);
                    }
                }
                _ = tokio::time::sleep_until(report_due.unwrap_or_else(Instant::now)), if report_due.is_some() => {
                    report_due = None;
                    self.report(latest(&progress), false).await?;
                }
                _ = tick.tick() => self.report(latest(&progress), false).await?,
                _ = housekeeping.tick() => {
                    if last_slot_check.is_none_or(|t| t.elapsed() >= slot_check_every) {
                        last_slot_check = Some(Instant::now());
                        self.check_retained_wal().await;
                    }
                    if self.settings.heartbeat.is_some() {
                        self.heartbeat().await;
                    }
                }
                filled = self.conn.fill() => filled?,
            }
        }
        self.drain(tx, progress).await
    }

    /// Stop reading; hand over complete transactions; wait (bounded) for their acks;
    /// report the final position and close the session.
    async fn drain(
        mut self,
        tx: mpsc::Sender<Batch>,
        mut progress: watch::Receiver<Progress>,
    ) -> Result<Lsn, SourceError> {
        tracing::info!(
            grace_secs = self.settings.shutdown_grace.as_secs(),
            "stopping: draining in-flight batches"
        );
        let deadline = Instant::now() + self.settings.shutdown_grace;
        let mut last_seq = self.pending.next_seq;
        if self.pending.has_complete() {
            if let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, tx.reserve()).await {
                let batch = self.pending.take(false);
                last_seq = batch.seq;
                permit.send(batch);
            }
        }
        drop(tx);
        let mut tick = tokio::time::interval(self.settings.status_interval);
        loop {
            let p = *progress.borrow_and_update();
            if p.acked_seq >= last_seq {
                break;
            }
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { break },
                _ = tick.tick() => self.report(p, false).await?,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(acked = p.acked_seq, sent = last_seq, "shutdown grace period over before every batch was acknowledged; unacknowledged changes will be sent again on restart");
                    break;
                }
            }
        }
        let p = *progress.borrow();
        self.report(p, false).await?;
        let confirmed = self.reported;
        self.conn.close().await;
        tracing::info!(confirmed_lsn = %confirmed, "replication stopped");
        Ok(confirmed)
    }

    /// Warns when the slot holds more WAL than configured (a stuck sink, a huge backlog);
    /// exports retained and unconfirmed WAL as metrics.
    async fn check_retained_wal(&self) {
        let sql = "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1";
        match self.control.client().query_opt(sql, &[&self.slot]).await {
            Ok(Some(row)) => {
                let retained: Option<i64> = row.get(0);
                let retained = retained.unwrap_or(0).max(0) as u64;
                let lag: Option<i64> = row.get(1);
                crate::metrics::slot_wal(retained, lag.unwrap_or(0).max(0) as u64);
                if retained > self.settings.max_retained_wal {
                    tracing::warn!(
                        slot = %self.slot,
                        retained_mb = retained >> 20,
                        limit_mb = self.settings.max_retained_wal >> 20,
                        "the slot retains more WAL than max_retained_wal_mb: a sink is behind or failing, and Postgres keeps the WAL until it catches up"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "retained-WAL check failed"),
        }
    }

    /// A non-transactional logical message in our database: it moves our slot's stream even
    /// when the published tables are idle. Consumed by `message`, never delivered.
    async fn heartbeat(&self) {
        let sql = format!("SELECT pg_logical_emit_message(false, '{HEARTBEAT_PREFIX}', '')");
        if let Err(e) = self.control.client().batch_execute(&sql).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }

    /// Sends a standby status update: written = received, flushed = acknowledged.
    async fn report(&mut self, p: Progress, reply_requested: bool) -> Result<(), SourceError> {
        let flush = p.checkpoint.max(self.idle_flush).max(self.reported);
        let write = self.received.max(flush);
        let msg = pgoutput::standby_status_update(
            write,
            flush,
            flush,
            pgoutput::pg_epoch_micros_now(),
            reply_requested,
        );
        self.conn.send_copy_data(&msg).await?;
        if flush > self.reported {
            tracing::trace!(flush_lsn = %flush, "confirmed");
        }
        self.reported = flush;
        crate::metrics::confirmed_lsn(flush);
        self.last_report = Instant::now();
        Ok(())
    }

    async fn handle_frame(
        &mut self,
        frame: Frame,
        progress: &watch::Receiver<Progress>,
    ) -> Result<(), SourceError> {
        match frame.tag {
            b'd' => {}
            b'E' => {
                let ctx = Context {
                    user: &self.user,
                    slot: &self.slot,
                    publication: &self.publication,
                };
                return Err(SourceError::server(
                    super::error::PgError::parse(&frame.body),
                    &ctx,
                ));
            }
            b'c' => {
                return Err(SourceError::Protocol(
                    "server ended the replication stream (CopyDone)".into(),
                ))
            }
            _ => return Ok(()), // notices, parameter status
        }
        let msg = pgoutput::parse_copy_data(frame.body).map_err(|source| SourceError::Decode {
            lsn: self.received,
            kind: "CopyData",
            cause: source,
        })?;
        match msg {
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                let p = *progress.borrow();
                // Nothing open, nothing pending, everything acked: all WAL up to the
                // server's position is done with. Confirming it keeps a quiet
                // publication from pinning WAL forever.
                if self.txn.is_none()
                    && self.pending.changes.is_empty()
                    && !self.pending.has_complete()
                    && p.acked_seq == self.pending.next_seq
                {
                    self.idle_flush = self.idle_flush.max(wal_end);
                }
                if reply_requested || self.idle_flush > self.reported {
                    self.report(p, false).await?;
                }
            }
            ReplicationMessage::XLogData {
                wal_start, data, ..
            } => {
                self.received = self.received.max(wal_start);
                let kind_hint = data.first().copied().unwrap_or(b'?');
                // The decoded values are slices of this message: count its bytes while the
                // pending changes hold them (Begin/Commit/Relation too: noise).
                self.pending.bytes += data.len();
                let logical =
                    pgoutput::decode(data, false).map_err(|source| SourceError::Decode {
                        lsn: wal_start,
                        kind: pgoutput::message_kind(kind_hint).unwrap_or("unknown"),
                        cause: source,
                    })?;
                self.handle_logical(logical, wal_start).await?;
                if self.pending.changes.is_empty() {
                    // Nothing holds those bytes (a skipped or empty transaction).
                    self.pending.bytes = 0;
                    self.pending.complete_bytes = 0;
                }
            }
        }
        Ok(())
    }

    async fn handle_logical(&mut self, msg: LogicalMessage, lsn: Lsn) -> Result<(), SourceError> {
        match msg {
            LogicalMessage::Begin(b) => {
                self.txn = Some(Txn {
                    xid: b.xid,
                    commit_lsn: b.final_lsn,
                    commit_ts: b.commit_ts,
                    next_ordinal: 0,
                    skip: b.final_lsn < self.start_lsn,
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
            LogicalMessage::Relation(rel) => {
                let mut types = Vec::with_capacity(rel.columns.len());
                for c in &rel.columns {
                    types.push(self.types.resolve(c.type_oid, &self.control).await?);
                }
                let table = table_from_relation(rel, types);
                tracing::debug!(relation_id = table.id, schema = %table.schema, table = %table.name, "relation");
                self.relations.insert(table.id, table);
            }
            LogicalMessage::Type(t) => self.types.invalidate(t.id),
            LogicalMessage::Origin(_) => {}
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
                    let after =
                        row_from_tuple(&table, u.new).map_err(|e| value_err(e, &table, lsn))?;
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
        if m.prefix == HEARTBEAT_PREFIX && !m.transactional {
            tracing::debug!(lsn = %m.lsn, "heartbeat came back through the stream");
            return;
        }
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
            commit_ts: pgoutput::pg_epoch_micros_now(),
            table: None,
            before: None,
            after: None,
            truncate: None,
            message: Some(body),
            split: 0,
            routing: None,
        };
        self.pending.push(change, &self.settings);
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
        self.relations
            .get(&relation_id)
            .cloned()
            .map(Some)
            .ok_or(SourceError::UnknownRelation { relation_id, lsn })
    }

    fn push(
        &mut self,
        op: Op,
        lsn: Lsn,
        table: Option<Arc<Table>>,
        before: Option<(Before, crate::change::Row)>,
        after: Option<crate::change::Row>,
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
        };
        self.pending.push(change, &self.settings);
    }
}

fn old_row(table: &Table, old: OldTuple) -> Result<(Before, crate::change::Row), MapError> {
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

/// The latest progress. A function, so the channel's read guard is dropped before any
/// `.await` in the caller's statement (holding it would block the pipeline's writes).
fn latest(rx: &watch::Receiver<Progress>) -> Progress {
    *rx.borrow()
}

fn pipeline_gone() -> SourceError {
    SourceError::Setup("the pipeline stopped (see the error above)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_changes: usize, max_batch_bytes: usize) -> StreamSettings {
        StreamSettings {
            max_changes,
            max_batch_bytes,
            status_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            heartbeat: None,
            max_retained_wal: u64::MAX,
        }
    }

    fn change(ordinal: u32) -> Change {
        Change {
            op: Op::Message,
            commit_lsn: Lsn(1),
            ordinal,
            lsn: Lsn(1),
            xid: 1,
            commit_ts: 0,
            table: None,
            before: None,
            after: None,
            truncate: None,
            message: None,
            split: 0,
            routing: None,
        }
    }

    /// Wide rows close a batch by bytes long before `max_changes`; a whole transaction is
    /// handed over with its bytes, the open one keeps its own.
    #[test]
    fn batches_close_by_bytes_and_keep_the_open_transaction_s_bytes() {
        let s = settings(1000, 10_000);
        let mut p = Pending::default();
        for i in 0..3 {
            p.changes.push(change(i));
            p.bytes += 3_000;
        }
        assert!(!p.is_full(&s));
        p.mark_complete();
        p.checkpoint = Some(Lsn(10));
        p.changes.push(change(3));
        p.bytes += 3_000;
        assert!(p.is_full(&s));
        let b = p.take(p.complete == 0);
        assert_eq!(b.changes.len(), 3);
        assert_eq!(b.checkpoint, Some(Lsn(10)));
        assert_eq!((p.changes.len(), p.bytes), (1, 3_000));
        // The open transaction alone grows past the limit: split it.
        for i in 4..8 {
            p.changes.push(change(i));
            p.bytes += 3_000;
        }
        assert!(p.is_full(&s) && p.complete == 0);
        let b = p.take(true);
        assert_eq!((b.changes.len(), b.checkpoint), (5, None));
        assert_eq!((p.changes.len(), p.bytes, p.complete_bytes), (0, 0, 0));
    }
}
