//! The replication stream loop: read pgoutput, feed the decoded messages to the
//! `Assembler` (which builds batches of whole transactions), hand its batches to the
//! pipeline, and report the acknowledged position back to Postgres.
//!
//! One task owns the connection, so reading, keepalive replies and status updates never
//! race. When the pipeline is full the loop stops *reading* (TCP backpressure reaches the
//! walsender) but keeps sending status updates on a timer, so a slow sink never trips
//! `wal_sender_timeout`.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use std::collections::HashMap;

use super::assemble::{Assembler, Batch};
use super::control::Control;
use super::error::{Context, SourceError};
use super::snapshot::{
    Chunk, Delivered, Event, KeyNames, Link, Watermark, SIGNAL_PREFIX, WATERMARK_PREFIX,
};
use super::spool::{Replay, Spool};
use super::types::TypeRegistry;
use super::wire::{Frame, WireConn};
use crate::config::{BatchConfig, SourceConfig};
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage, ReplicationMessage};
use crate::progress::Progress;
use crate::value::{TypeInfo, TypeKind};

/// Acknowledged positions are reported to Postgres at most this often (and at least every
/// `status_interval`).
const MIN_REPORT_GAP: Duration = Duration::from_millis(100);

/// Tunables of the loop.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub max_changes: usize,
    /// A batch also closes (or a transaction is split) once its changes take about this
    /// much memory (see the assembler); what bounds memory when rows are wide.
    pub max_batch_bytes: usize,
    pub status_interval: Duration,
    pub shutdown_grace: Duration,
    /// Emit a heartbeat message this often (None: off).
    pub heartbeat: Option<Duration>,
    /// Warn above this many bytes of WAL retained by the slot.
    pub max_retained_wal: u64,
    /// Deliver logical decoding messages (`[source] messages`). pgoutput always sends them:
    /// snapshot watermarks travel as messages.
    pub deliver_messages: bool,
    /// Streamed in-progress transactions (`streaming` on) and prepared ones (`two_phase`):
    /// where they spill and how much of them memory holds. None: both off.
    pub spool: Option<(std::path::PathBuf, usize)>,
}

impl StreamSettings {
    /// The settings `[source]` and `[pipeline]` ask for.
    pub fn new(source: &SourceConfig, batch: &BatchConfig) -> Self {
        StreamSettings {
            max_changes: batch.max_changes,
            max_batch_bytes: batch.max_batch_bytes(),
            status_interval: Duration::from_secs(source.status_interval_secs.max(1)),
            shutdown_grace: Duration::from_secs(batch.shutdown_grace_secs),
            heartbeat: source
                .heartbeat_secs
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_retained_wal: source.max_retained_wal_mb.saturating_mul(1 << 20),
            deliver_messages: source.messages,
            spool: (*source.streaming.get_ref() != crate::config::Streaming::Off
                || *source.two_phase.get_ref())
            .then(|| (batch.spool_dir(), batch.spool_memory_bytes())),
        }
    }
}

/// Prefix of our heartbeat messages; they are consumed here, never delivered.
pub const HEARTBEAT_PREFIX: &str = "cdc-host.heartbeat";

/// The running stream. Build it with [`super::open`].
#[derive(Debug)]
pub struct Replicator {
    pub(super) conn: WireConn,
    pub(super) control: Control,
    pub(super) slot: String,
    pub(super) user: String,
    pub(super) publication: String,
    pub(super) settings: StreamSettings,
    pub(super) types: TypeRegistry,
    pub(super) assembler: Assembler,
    /// Highest WAL position received.
    pub(super) received: Lsn,
    /// Highest position confirmable because nothing was in flight when a keepalive came.
    pub(super) idle_flush: Lsn,
    /// The flush position last reported to Postgres.
    pub(super) reported: Lsn,
    pub(super) last_report: Instant,
    /// The snapshot machinery's end (None: no snapshots in this run).
    pub(super) snapshot: Option<Link>,
    /// Chunk announcements and rows received from the workers, by chunk seq, until their
    /// watermarks come through the stream.
    pub(super) chunks_open: HashMap<u64, (u32, KeyNames)>,
    pub(super) chunks_copied: HashMap<u64, Chunk>,
    /// Key ranges whose final chunk this connection delivered, by snapshot and table.
    pub(super) ranges_finished: HashMap<(u32, u32), i64>,
    /// Streamed in-progress transactions (None: streaming off).
    pub(super) spool: Option<Spool>,
    /// Inside a stream block: the transaction it belongs to.
    pub(super) in_stream: Option<u32>,
    /// A committed streamed transaction being fed to the assembler.
    pub(super) replay: Option<Replaying>,
    /// Inside a Begin Prepare … Prepare block: the transaction it belongs to.
    pub(super) in_prepare: Option<u32>,
    /// Prepared transactions (two-phase) by xid, whose COMMIT or ROLLBACK PREPARED has not
    /// come yet: their changes wait in the spool.
    pub(super) prepared: HashMap<u32, PreparedTxn>,
}

/// A prepared transaction waiting for its outcome.
#[derive(Debug)]
pub(super) struct PreparedTxn {
    gid: String,
    /// The PREPARE record's position. Postgres re-sends a prepared transaction after a
    /// restart only when its PREPARE lies at or after the slot's confirmed position, so
    /// nothing past it is confirmed until the outcome is delivered.
    prepare_lsn: Lsn,
    /// Its changes came in stream blocks (messages carry the xid) rather than in a Begin
    /// Prepare block.
    streamed: bool,
}

/// A streamed transaction between its Stream Commit and the last of its records: fed to
/// the assembler as a protocol 1 transaction would be (Begin, the changes, Commit), so
/// ordinals, skipping and snapshot watermarks work the same.
#[derive(Debug)]
pub(super) struct Replaying {
    commit: pgoutput::StreamCommit,
    records: Replay,
    begun: bool,
    /// Records of stream blocks carry their xid; those of a Begin Prepare block do not.
    streamed: bool,
}

/// Replayed messages handled before the loop looks at its timers and channels again.
const REPLAY_SLICE: usize = 1024;

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
            let mut replayed = 0;
            loop {
                if self.replay.is_some() {
                    if replayed == REPLAY_SLICE {
                        // A long replay: let the timers and the pipeline's progress in.
                        break;
                    }
                    replayed += 1;
                    self.replay_step().await?;
                } else if let Some(frame) = self.conn.try_frame()? {
                    self.handle_frame(frame, &progress).await?;
                } else {
                    break;
                }
                // Once a batch is due; again while a snapshot chunk's reads wait to join
                // (nothing is read on until all of them are handed over).
                let mut due = self.assembler.is_full();
                while due {
                    // Too many changes to keep reading: wait for room, keep reporting. Hand
                    // over whole transactions; split one only when it alone is this large.
                    loop {
                        tokio::select! {
                            biased;
                            _ = shutdown.wait_for(|s| *s) => break 'stream,
                            permit = tx.reserve() => {
                                permit.map_err(|_| pipeline_gone())?.send(self.assembler.take_full());
                                break;
                            }
                            _ = tick.tick() => self.report(latest(&progress), false).await?,
                        }
                    }
                    due = self.assembler.has_reads_left();
                }
            }
            let can_send = self.assembler.has_complete();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break 'stream,
                permit = tx.reserve(), if can_send => {
                    permit.map_err(|_| pipeline_gone())?.send(self.assembler.take_complete());
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
                () = std::future::ready(()), if self.replay.is_some() => {}
                _ = housekeeping.tick() => {
                    if last_slot_check.is_none_or(|t| t.elapsed() >= slot_check_every) {
                        last_slot_check = Some(Instant::now());
                        self.check_retained_wal().await;
                    }
                    if self.settings.heartbeat.is_some() {
                        self.heartbeat().await;
                    }
                }
                filled = self.conn.fill_coalesced() => filled?,
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
        let mut last_seq = self.assembler.last_seq();
        if self.assembler.has_complete() {
            if let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, tx.reserve()).await {
                let batch = self.assembler.take_complete();
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
    /// when the published tables are idle. Consumed by `handle_logical`, never delivered.
    async fn heartbeat(&self) {
        let sql = format!("SELECT pg_logical_emit_message(false, '{HEARTBEAT_PREFIX}', '')");
        if let Err(e) = self.control.client().batch_execute(&sql).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }

    /// Sends a standby status update: written = received, flushed = acknowledged.
    async fn report(&mut self, p: Progress, reply_requested: bool) -> Result<(), SourceError> {
        let mut flush = p.checkpoint.max(self.idle_flush);
        // Never past an unresolved PREPARE: Postgres would not send that transaction again.
        if let Some(hold) = self.prepared.values().map(|t| t.prepare_lsn).min() {
            flush = flush.min(hold);
        }
        let flush = flush.max(self.reported);
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
                if self.assembler.is_drained()
                    && self.streams_drained()
                    && p.acked_seq == self.assembler.last_seq()
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
                let size = data.len();
                if let Some(xid) = self.in_stream {
                    if kind_hint != b'E' {
                        return self.spool_message(xid, wal_start, data);
                    }
                }
                if let Some(xid) = self.in_prepare {
                    // Relation and Type messages describe the schema for every later
                    // transaction too (pgoutput marks them sent): applied now, not held.
                    // The prepared transaction's locks keep its tables' schema until its
                    // outcome, so its changes decode the same at COMMIT PREPARED.
                    if !matches!(kind_hint, b'P' | b'R' | b'Y') {
                        // No xid in these messages: all of them belong to the transaction.
                        let spool = self
                            .spool
                            .as_mut()
                            .expect("a prepare block only with a spool");
                        spool.append(
                            xid,
                            super::spool::Record {
                                lsn: wal_start,
                                subxid: xid,
                                data,
                            },
                        )?;
                        return Ok(());
                    }
                }
                let logical =
                    pgoutput::decode(data, false).map_err(|source| SourceError::Decode {
                        lsn: wal_start,
                        kind: pgoutput::message_kind(kind_hint).unwrap_or("unknown"),
                        cause: source,
                    })?;
                match logical {
                    LogicalMessage::StreamStart(s) if self.spool.is_some() => {
                        if s.first_segment {
                            if let Some(spool) = &mut self.spool {
                                spool.begin(s.xid);
                            }
                        }
                        self.in_stream = Some(s.xid);
                    }
                    LogicalMessage::StreamStop if self.in_stream.is_some() => {
                        self.in_stream = None;
                    }
                    LogicalMessage::StreamAbort(a) if self.spool.is_some() => {
                        if let Some(spool) = &mut self.spool {
                            spool.abort(a.xid, a.subxid);
                        }
                        tracing::debug!(
                            xid = a.xid,
                            subxid = a.subxid,
                            "streamed transaction aborted"
                        );
                    }
                    LogicalMessage::StreamCommit(c) if self.spool.is_some() => {
                        let records = match &mut self.spool {
                            Some(spool) => spool.take(c.xid)?,
                            None => Replay::default(),
                        };
                        tracing::debug!(xid = c.xid, commit_lsn = %c.commit_lsn, "streamed transaction committed");
                        self.replay = Some(Replaying {
                            commit: c,
                            records,
                            begun: false,
                            streamed: true,
                        });
                    }
                    LogicalMessage::BeginPrepare(b) if self.spool.is_some() => {
                        if let Some(spool) = &mut self.spool {
                            spool.begin(b.xid);
                        }
                        self.in_prepare = Some(b.xid);
                        self.prepared.insert(
                            b.xid,
                            PreparedTxn {
                                gid: b.gid,
                                prepare_lsn: b.prepare_lsn,
                                streamed: false,
                            },
                        );
                    }
                    LogicalMessage::Prepare(p) if self.in_prepare == Some(p.xid) => {
                        self.in_prepare = None;
                        tracing::debug!(xid = p.xid, gid = %p.gid, prepare_lsn = %p.prepare_lsn, "transaction prepared; held until COMMIT PREPARED");
                    }
                    LogicalMessage::StreamPrepare(p) if self.spool.is_some() => {
                        tracing::debug!(xid = p.xid, gid = %p.gid, prepare_lsn = %p.prepare_lsn, "streamed transaction prepared; held until COMMIT PREPARED");
                        self.prepared.insert(
                            p.xid,
                            PreparedTxn {
                                gid: p.gid,
                                prepare_lsn: p.prepare_lsn,
                                streamed: true,
                            },
                        );
                    }
                    LogicalMessage::CommitPrepared(c) if self.spool.is_some() => {
                        let Some(prepared) = self.prepared.remove(&c.xid) else {
                            return Err(SourceError::Protocol(format!(
                                "COMMIT PREPARED {:?} (xid {}) without its PREPARE: nothing of it was received",
                                c.gid, c.xid
                            )));
                        };
                        let records = match &mut self.spool {
                            Some(spool) => spool.take(c.xid)?,
                            None => Replay::default(),
                        };
                        tracing::debug!(xid = c.xid, gid = %prepared.gid, commit_lsn = %c.commit_lsn, "prepared transaction committed");
                        self.replay = Some(Replaying {
                            commit: pgoutput::StreamCommit {
                                xid: c.xid,
                                flags: c.flags,
                                commit_lsn: c.commit_lsn,
                                end_lsn: c.end_lsn,
                                commit_ts: c.commit_ts,
                            },
                            records,
                            begun: false,
                            streamed: prepared.streamed,
                        });
                    }
                    LogicalMessage::RollbackPrepared(r) if self.spool.is_some() => {
                        if let Some(spool) = &mut self.spool {
                            spool.abort(r.xid, r.xid);
                        }
                        self.prepared.remove(&r.xid);
                        tracing::debug!(xid = r.xid, gid = %r.gid, "prepared transaction rolled back; nothing of it is delivered");
                    }
                    other => self.handle_logical(other, wal_start, size).await?,
                }
            }
        }
        Ok(())
    }

    /// One decoded message: what needs the catalog (relations, types) or is ours
    /// (heartbeats) is handled here, everything else goes to the assembler. `size` is the
    /// message's pgoutput size (the assembler estimates memory from it).
    async fn handle_logical(
        &mut self,
        msg: LogicalMessage,
        lsn: Lsn,
        size: usize,
    ) -> Result<(), SourceError> {
        match msg {
            LogicalMessage::Relation(rel) => {
                let mut types = Vec::with_capacity(rel.columns.len());
                for c in &rel.columns {
                    types.push(self.types.resolve(c.type_oid, &self.control).await?);
                }
                self.assembler.relation(rel, types, size);
            }
            LogicalMessage::Message(m) if m.prefix == HEARTBEAT_PREFIX && !m.transactional => {
                tracing::debug!(lsn = %m.lsn, "heartbeat came back through the stream");
                self.assembler.ignore(size);
            }
            LogicalMessage::Message(m) if m.prefix == WATERMARK_PREFIX => {
                self.assembler.ignore(size);
                self.watermark(&m.content, lsn);
            }
            LogicalMessage::Message(m) if m.prefix == SIGNAL_PREFIX => {
                self.assembler.ignore(size);
                if let Some(link) = &self.snapshot {
                    if &m.content[..] == link.slot.as_bytes() {
                        tracing::debug!("snapshot request signal");
                        link.wake.notify_one();
                    }
                }
            }
            LogicalMessage::Message(_) if !self.settings.deliver_messages => {
                self.assembler.ignore(size);
            }
            other => {
                if let LogicalMessage::Type(t) = &other {
                    self.types.invalidate(t.id);
                }
                // `ALTER TYPE … ADD/DROP ATTRIBUTE` changes the shape of a composite's values
                // without a new Relation message: a row of a table holding composites that
                // does not fit the cached fields is tried again (see `refit_composites`).
                let again = row_relation(&other)
                    .filter(|id| self.holds_composite(*id))
                    .map(|id| (id, other.clone()));
                match self.assembler.apply(other, lsn, size) {
                    Err(e @ SourceError::Value { .. }) if again.is_some() => {
                        let (id, msg) = again.expect("checked");
                        self.refit_composites(id, msg, lsn, size, e).await?;
                    }
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// A row of relation `id` has a composite value that does not fit its type as cached.
    /// The catalog knows only a composite's current fields, not those it had when an older
    /// change was written, so: (1) read the composite types again and apply the row —
    /// right whenever cdc-host keeps up (the cache predates the `ALTER TYPE`); (2) in text
    /// mode, if it still does not fit (a change written before an `ALTER TYPE` cdc-host had
    /// not read yet), deliver that row's composites as their text (`"(1,x)"`) with a
    /// warning rather than guess field names or stop. In binary mode the value has no text,
    /// so the error stands (its message says what to do).
    async fn refit_composites(
        &mut self,
        id: u32,
        msg: LogicalMessage,
        lsn: Lsn,
        size: usize,
        first: SourceError,
    ) -> Result<(), SourceError> {
        if let SourceError::Value { table, column, .. } = &first {
            tracing::info!(%table, %column, %lsn, "a composite value does not fit its type as cached; reading the composite types again (ALTER TYPE?)");
        }
        self.types.forget_composites();
        let oids: Vec<u32> = self
            .assembler
            .table(id)
            .map(|t| t.columns.iter().map(|c| c.type_oid).collect())
            .unwrap_or_default();
        let mut types = Vec::with_capacity(oids.len());
        for oid in &oids {
            types.push(self.types.resolve(*oid, &self.control).await?);
        }
        self.assembler.retype(id, types.clone());
        let err = match self.assembler.apply(msg.clone(), lsn, size) {
            Ok(()) => return Ok(()),
            Err(e @ SourceError::Value { .. }) => e,
            Err(e) => return Err(e),
        };
        let as_text: Vec<TypeInfo> = types.iter().map(composite_as_text).collect();
        if let SourceError::Value { table, column, .. } = &err {
            tracing::warn!(%table, %column, %lsn, "a composite value was written before its type last changed (ALTER TYPE) and its old fields are unknown: delivering this row's composites as their text");
        }
        self.assembler.retype(id, as_text);
        let result = self.assembler.apply(msg, lsn, size);
        self.assembler.retype(id, types);
        result.map_err(|e| match e {
            // Binary mode: a composite's binary value has no text to fall back on.
            SourceError::Value { lsn, table, column, message } => SourceError::Value {
                lsn,
                table,
                column,
                message: format!("{message}: a composite type changed shape (ALTER TYPE) after this change was written, and binary mode cannot deliver the value; set source.binary = false and restart (text mode delivers such values as their text)"),
            },
            other => other,
        })
    }

    /// Whether a column of relation `id` holds a composite type.
    fn holds_composite(&self, id: u32) -> bool {
        self.assembler.table(id).is_some_and(|t| {
            t.columns
                .iter()
                .any(|c| super::types::holds_composite(&c.type_info))
        })
    }
}

/// `t` with every composite in it kept as text instead (an array of composites becomes an
/// array of texts).
fn composite_as_text(t: &TypeInfo) -> TypeInfo {
    match &t.kind {
        TypeKind::Composite(_) => TypeInfo::other(t.oid),
        TypeKind::Array(e) => TypeInfo::array(t.oid, composite_as_text(e)),
        _ => t.clone(),
    }
}

/// The relation a row message (insert, update, delete) belongs to.
fn row_relation(msg: &LogicalMessage) -> Option<u32> {
    match msg {
        LogicalMessage::Insert(m) => Some(m.relation_id),
        LogicalMessage::Update(m) => Some(m.relation_id),
        LogicalMessage::Delete(m) => Some(m.relation_id),
        _ => None,
    }
}

impl Replicator {
    /// No streamed transaction open, none being replayed: nothing received is unaccounted
    /// for (an idle keepalive may be confirmed).
    fn streams_drained(&self) -> bool {
        self.in_stream.is_none()
            && self.in_prepare.is_none()
            && self.prepared.is_empty()
            && self.replay.is_none()
            && self.spool.as_ref().is_none_or(Spool::is_empty)
    }

    /// A message inside a stream block: kept (raw) until its transaction's Stream Commit.
    fn spool_message(&mut self, xid: u32, lsn: Lsn, data: bytes::Bytes) -> Result<(), SourceError> {
        let kind =
            pgoutput::message_kind(data.first().copied().unwrap_or(b'?')).unwrap_or("unknown");
        let subxid = super::spool::stream_xid(&data).ok_or(SourceError::Decode {
            lsn,
            kind,
            cause: pgoutput::DecodeError::Empty,
        })?;
        let spool = self
            .spool
            .as_mut()
            .expect("in a stream block only with a spool");
        spool.append(xid, super::spool::Record { lsn, subxid, data })?;
        Ok(())
    }

    /// Feeds the assembler one step of the committed streamed transaction: its Begin, one
    /// record, or (after the last) its Commit.
    async fn replay_step(&mut self) -> Result<(), SourceError> {
        let Some(r) = &mut self.replay else {
            return Ok(());
        };
        let c = &r.commit;
        if !r.begun {
            r.begun = true;
            let begin = LogicalMessage::Begin(pgoutput::Begin {
                final_lsn: c.commit_lsn,
                commit_ts: c.commit_ts,
                xid: c.xid,
            });
            return self.assembler.apply(begin, c.commit_lsn, 0);
        }
        match r.records.next_record()? {
            Some(rec) => {
                let kind_hint = rec.data.first().copied().unwrap_or(b'?');
                let size = rec.data.len();
                let msg = pgoutput::decode(rec.data, r.streamed).map_err(|source| {
                    SourceError::Decode {
                        lsn: rec.lsn,
                        kind: pgoutput::message_kind(kind_hint).unwrap_or("unknown"),
                        cause: source,
                    }
                })?;
                self.handle_logical(msg, rec.lsn, size).await
            }
            None => {
                let commit = LogicalMessage::Commit(pgoutput::Commit {
                    flags: c.flags,
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_ts: c.commit_ts,
                });
                let lsn = c.end_lsn;
                self.replay = None;
                self.assembler.apply(commit, lsn, 0)
            }
        }
    }

    /// A snapshot watermark of ours (others' — another slot's, an earlier run's — are
    /// consumed and ignored). See `snapshot::reconcile`.
    fn watermark(&mut self, content: &[u8], lsn: Lsn) {
        let Some(link) = &mut self.snapshot else {
            return;
        };
        let Some(w) = Watermark::parse(content, &link.slot, link.nonce) else {
            return;
        };
        while let Ok(ev) = link.events.try_recv() {
            match ev {
                Event::Open {
                    seq,
                    table_oid,
                    key,
                } => {
                    if self.chunks_open.len() >= 64 {
                        if let Some(oldest) = self.chunks_open.keys().min().copied() {
                            self.chunks_open.remove(&oldest);
                        }
                    }
                    self.chunks_open.insert(seq, (table_oid, key));
                }
                Event::Rows(chunk) => {
                    // Chunks of a worker that died before their high watermark would stay
                    // here forever: keep the newest few.
                    if self.chunks_copied.len() >= 64 {
                        if let Some(oldest) = self.chunks_copied.keys().min().copied() {
                            self.chunks_copied.remove(&oldest);
                        }
                    }
                    self.chunks_copied.insert(chunk.seq, chunk);
                }
            }
        }
        match w {
            Watermark::Low(seq) => {
                if let Some((oid, key)) = self.chunks_open.remove(&seq) {
                    self.assembler.open_window(seq, oid, key);
                }
            }
            Watermark::High(seq) => {
                let chunk = self.chunks_copied.remove(&seq);
                let closed = self.assembler.close_window(seq);
                let delivered = match (chunk, closed) {
                    (Some(chunk), Some(closed)) if self.assembler.in_live_txn() => {
                        let changed = closed.changed.len();
                        let last = chunk.last.and_then(|(hash, open)| {
                            let done = self
                                .ranges_finished
                                .entry((chunk.snapshot, chunk.table.id))
                                .or_default();
                            *done += 1;
                            (*done >= open).then_some(hash)
                        });
                        let rows = closed.reconcile(chunk.rows);
                        let emitted = self.assembler.push_reads(
                            &chunk.table,
                            chunk.snapshot,
                            rows,
                            last,
                            lsn,
                            chunk.bytes,
                        );
                        tracing::debug!(chunk = seq, emitted, changed, "snapshot chunk reconciled");
                        Delivered {
                            seq,
                            commit_lsn: self.assembler.current_commit_lsn(),
                            emitted,
                        }
                    }
                    _ => Delivered {
                        seq,
                        commit_lsn: None,
                        emitted: 0,
                    },
                };
                let _ = link.delivered.send(delivered);
            }
            Watermark::Abort(seq) => {
                self.assembler.abort_window(seq);
                self.chunks_open.remove(&seq);
                self.chunks_copied.remove(&seq);
            }
        }
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
