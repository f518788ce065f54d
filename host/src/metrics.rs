//! Every metric cdc-host exports, named in one place.
//!
//! Call sites use the small functions below (`metrics::changes_received(table, op, n)`),
//! never the `metrics` macros directly, so names, labels and units stay consistent and the
//! exposition (`/metrics`, Prometheus text format) is documented here.
//!
//! Recording goes through the `metrics` facade. Nothing is recorded until [`install`]
//! (called when `[admin]` is configured) sets the Prometheus recorder: before that, every
//! function here returns after one relaxed atomic load, so a pipeline without an admin
//! endpoint pays nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cdc_changes_received_total` | counter | `table`, `op` — changes read from the slot |
//! | `cdc_changes_emitted_total` | counter | `table`, `op` — changes handed to the sinks (after transforms) |
//! | `cdc_changes_dropped_total` | counter | `table`, `op` — changes a transform filtered out |
//! | `cdc_sink_batches_total` | counter | `sink` — batches the sink acknowledged |
//! | `cdc_sink_changes_total` | counter | `sink` — changes in those batches |
//! | `cdc_sink_bytes_total` | counter | `sink` — encoded payload bytes in those batches |
//! | `cdc_sink_retries_total` | counter | `sink` — transient failures the sink retried |
//! | `cdc_sink_rejected_batches_total` | counter | `sink` — batches rejected (skipped or dead-lettered) |
//! | `cdc_sink_up` | gauge | `sink` — 1 healthy, 0 failing (retrying) |
//! | `cdc_stream_up` | gauge | — 1 while the replication stream runs |
//! | `cdc_acked_lsn` | gauge | — checkpoint every sink acknowledged (LSN as a number) |
//! | `cdc_confirmed_lsn` | gauge | — flush position last reported to Postgres |
//! | `cdc_slot_retained_wal_bytes` | gauge | — `pg_current_wal_lsn() - restart_lsn` (polled) |
//! | `cdc_slot_lag_bytes` | gauge | — `pg_current_wal_lsn() - confirmed_flush_lsn` (polled) |
//! | `cdc_commit_to_ack_seconds` | histogram | — from a transaction's commit to every sink's ack |
//! | `cdc_transform_call_seconds` | histogram | `module` — one transform call |
//! | `cdc_transform_errors_total` | counter | `module` — failed transform calls |
//! | `cdc_reconnects_total` | counter | — replication restarts after a transient failure |
//! | `cdc_snapshot_rows_total` | counter | `table` — snapshot/backfill rows every sink acknowledged |
//! | `cdc_snapshot_remaining_rows` | gauge | `table` — estimated rows still to copy |
//! | `cdc_snapshot_running` | gauge | — tables being copied now |
//! | `cdc_build_info` | gauge | `version` — always 1 |
//!
//! LSNs are exported as numbers (`X/Y` = `X·2³² + Y`); Prometheus stores float64, exact up
//! to 2⁵³ bytes of WAL (8 PiB).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::change::Change;
use crate::lsn::Lsn;

/// Metric names (the `_total` suffix is part of the name: the exporter adds none).
pub mod names {
    pub const CHANGES_RECEIVED: &str = "cdc_changes_received_total";
    pub const CHANGES_EMITTED: &str = "cdc_changes_emitted_total";
    pub const CHANGES_DROPPED: &str = "cdc_changes_dropped_total";
    pub const SINK_BATCHES: &str = "cdc_sink_batches_total";
    pub const SINK_CHANGES: &str = "cdc_sink_changes_total";
    pub const SINK_BYTES: &str = "cdc_sink_bytes_total";
    pub const SINK_RETRIES: &str = "cdc_sink_retries_total";
    pub const SINK_REJECTED: &str = "cdc_sink_rejected_batches_total";
    pub const SINK_UP: &str = "cdc_sink_up";
    pub const STREAM_UP: &str = "cdc_stream_up";
    pub const ACKED_LSN: &str = "cdc_acked_lsn";
    pub const CONFIRMED_LSN: &str = "cdc_confirmed_lsn";
    pub const SLOT_RETAINED_WAL: &str = "cdc_slot_retained_wal_bytes";
    pub const SLOT_LAG: &str = "cdc_slot_lag_bytes";
    pub const COMMIT_TO_ACK: &str = "cdc_commit_to_ack_seconds";
    pub const TRANSFORM_CALL: &str = "cdc_transform_call_seconds";
    pub const TRANSFORM_ERRORS: &str = "cdc_transform_errors_total";
    pub const RECONNECTS: &str = "cdc_reconnects_total";
    pub const SNAPSHOT_ROWS: &str = "cdc_snapshot_rows_total";
    pub const SNAPSHOT_REMAINING: &str = "cdc_snapshot_remaining_rows";
    pub const SNAPSHOT_RUNNING: &str = "cdc_snapshot_running";
    pub const BUILD_INFO: &str = "cdc_build_info";
}

/// Histogram buckets (upper bounds, seconds) for `cdc_commit_to_ack_seconds`.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Histogram buckets (upper bounds, seconds) for `cdc_transform_call_seconds`.
const TRANSFORM_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The `table` label of changes without a table (logical decoding messages).
pub const NO_TABLE: &str = "(message)";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether a recorder is installed (the functions below are no-ops until then).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the process-wide Prometheus recorder (once; later calls return a handle to
/// the same registry). The caller serves [`PrometheusHandle::render`] and calls
/// [`PrometheusHandle::run_upkeep`] now and then (the admin server does both).
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(names::COMMIT_TO_ACK.into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::TRANSFORM_CALL.into()),
                        TRANSFORM_BUCKETS,
                    )
                })
                .expect("non-empty bucket lists")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            ENABLED.store(true, Ordering::Relaxed);
            describe();
            gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            gauge!(names::STREAM_UP).set(0.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::CHANGES_RECEIVED,
        Unit::Count,
        "Changes read from the replication slot, by table and op."
    );
    describe_counter!(
        names::CHANGES_EMITTED,
        Unit::Count,
        "Changes handed to the sinks after transforms, by table and op."
    );
    describe_counter!(
        names::CHANGES_DROPPED,
        Unit::Count,
        "Changes a transform filtered out, by table and op."
    );
    describe_counter!(
        names::SINK_BATCHES,
        Unit::Count,
        "Batches a sink acknowledged."
    );
    describe_counter!(
        names::SINK_CHANGES,
        Unit::Count,
        "Changes in the batches a sink acknowledged."
    );
    describe_counter!(
        names::SINK_BYTES,
        Unit::Bytes,
        "Encoded payload bytes in the batches a sink acknowledged."
    );
    describe_counter!(
        names::SINK_RETRIES,
        Unit::Count,
        "Transient sink failures that were retried."
    );
    describe_counter!(
        names::SINK_REJECTED,
        Unit::Count,
        "Batches a sink rejected (skipped or dead-lettered by on_reject)."
    );
    describe_gauge!(
        names::SINK_UP,
        "1 while the sink delivers, 0 while it is failing and retrying."
    );
    describe_gauge!(names::STREAM_UP, "1 while the replication stream runs.");
    describe_gauge!(
        names::ACKED_LSN,
        "WAL position (as a number) every sink acknowledged."
    );
    describe_gauge!(
        names::CONFIRMED_LSN,
        "WAL position (as a number) last confirmed to Postgres (flush)."
    );
    describe_gauge!(
        names::SLOT_RETAINED_WAL,
        Unit::Bytes,
        "WAL the slot retains: pg_current_wal_lsn() - restart_lsn (polled)."
    );
    describe_gauge!(
        names::SLOT_LAG,
        Unit::Bytes,
        "WAL not yet confirmed: pg_current_wal_lsn() - confirmed_flush_lsn (polled)."
    );
    describe_histogram!(
        names::COMMIT_TO_ACK,
        Unit::Seconds,
        "From a transaction's commit to its acknowledgement by every sink."
    );
    describe_histogram!(
        names::TRANSFORM_CALL,
        Unit::Seconds,
        "Duration of one transform call, by module."
    );
    describe_counter!(
        names::TRANSFORM_ERRORS,
        Unit::Count,
        "Failed transform calls, by module."
    );
    describe_counter!(
        names::RECONNECTS,
        Unit::Count,
        "Replication restarts after a transient failure."
    );
    describe_counter!(
        names::SNAPSHOT_ROWS,
        Unit::Count,
        "Snapshot and backfill rows every sink acknowledged."
    );
    describe_gauge!(
        names::SNAPSHOT_REMAINING,
        "Estimated rows of a table still to copy (pg_class.reltuples minus rows done)."
    );
    describe_gauge!(names::SNAPSHOT_RUNNING, "Tables being copied now.");
    describe_gauge!(
        names::BUILD_INFO,
        "Always 1; the version label names the build."
    );
}

/// The `table` label of a change: `schema.table`, or [`NO_TABLE`] for messages.
pub fn table_label(change: &Change) -> Cow<'_, str> {
    match &change.table {
        Some(t) => Cow::Owned(format!("{}.{}", t.schema, t.name)),
        None => Cow::Borrowed(NO_TABLE),
    }
}

/// Calls `f(table, op, n)` once per distinct (table, op) of `changes`.
pub fn count_by_table_op(changes: &[Change], f: impl FnMut(&str, &'static str, u64)) {
    group(
        changes.iter().map(|c| (c.table.as_deref(), c.op.as_str())),
        f,
    );
}

fn group<'a>(
    items: impl Iterator<Item = (Option<&'a crate::change::Table>, &'static str)>,
    mut f: impl FnMut(&str, &'static str, u64),
) {
    // Few distinct tables per batch: a linear scan beats hashing.
    let mut runs: Vec<(Option<&crate::change::Table>, &'static str, u64)> = Vec::new();
    for (table, op) in items {
        match runs
            .iter_mut()
            .find(|(t, o, _)| *o == op && same_table(*t, table))
        {
            Some(run) => run.2 += 1,
            None => runs.push((table, op, 1)),
        }
    }
    for (table, op, n) in runs {
        match table {
            Some(t) => f(&format!("{}.{}", t.schema, t.name), op, n),
            None => f(NO_TABLE, op, n),
        }
    }
}

fn same_table(a: Option<&crate::change::Table>, b: Option<&crate::change::Table>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b) || (a.schema == b.schema && a.name == b.name),
        (None, None) => true,
        _ => false,
    }
}

/// `n` changes of `table` (`schema.table`) and `op` read from the slot.
pub fn changes_received(table: &str, op: &str, n: u64) {
    if enabled() {
        counter!(names::CHANGES_RECEIVED, "table" => table.to_owned(), "op" => op.to_owned())
            .increment(n);
    }
}

/// Counts a whole batch of received changes by table and op.
pub fn batch_received(changes: &[Change]) {
    if enabled() {
        count_by_table_op(changes, changes_received);
    }
}

/// `n` changes handed to the sinks (after transforms).
pub fn changes_emitted(table: &str, op: &str, n: u64) {
    if enabled() {
        counter!(names::CHANGES_EMITTED, "table" => table.to_owned(), "op" => op.to_owned())
            .increment(n);
    }
}

/// Counts a whole batch of emitted changes by table and op.
pub fn batch_emitted(changes: &[Change]) {
    if enabled() {
        count_by_table_op(changes, changes_emitted);
    }
}

/// `n` changes a transform filtered out.
pub fn changes_dropped(table: &str, op: &str, n: u64) {
    if enabled() {
        counter!(names::CHANGES_DROPPED, "table" => table.to_owned(), "op" => op.to_owned())
            .increment(n);
    }
}

/// One transform call of `module` that took `duration`; `ok = false` counts an error.
pub fn transform_call(module: &str, duration: Duration, ok: bool) {
    if enabled() {
        histogram!(names::TRANSFORM_CALL, "module" => module.to_owned())
            .record(duration.as_secs_f64());
        if !ok {
            counter!(names::TRANSFORM_ERRORS, "module" => module.to_owned()).increment(1);
        }
    }
}

/// A batch of `changes` changes and `bytes` encoded bytes acknowledged by `sink`.
pub fn sink_batch(sink: &str, changes: u64, bytes: u64) {
    if enabled() {
        counter!(names::SINK_BATCHES, "sink" => sink.to_owned()).increment(1);
        counter!(names::SINK_CHANGES, "sink" => sink.to_owned()).increment(changes);
        counter!(names::SINK_BYTES, "sink" => sink.to_owned()).increment(bytes);
    }
}

/// `sink` failed transiently and retries.
pub fn sink_retry(sink: &str) {
    if enabled() {
        counter!(names::SINK_RETRIES, "sink" => sink.to_owned()).increment(1);
    }
}

/// `sink` rejected a batch that `on_reject` skipped or dead-lettered.
pub fn sink_rejected(sink: &str) {
    if enabled() {
        counter!(names::SINK_REJECTED, "sink" => sink.to_owned()).increment(1);
    }
}

/// `sink` is delivering (`true`) or failing and retrying (`false`).
pub fn sink_up(sink: &str, up: bool) {
    if enabled() {
        gauge!(names::SINK_UP, "sink" => sink.to_owned()).set(if up { 1.0 } else { 0.0 });
    }
}

/// The replication stream started (`true`) or stopped (`false`).
pub fn stream_up(up: bool) {
    if enabled() {
        gauge!(names::STREAM_UP).set(if up { 1.0 } else { 0.0 });
    }
}

/// Every sink acknowledged everything up to `lsn`.
pub fn acked_lsn(lsn: Lsn) {
    if enabled() {
        gauge!(names::ACKED_LSN).set(lsn.0 as f64);
    }
}

/// `lsn` was confirmed to Postgres (standby status update, flush position).
pub fn confirmed_lsn(lsn: Lsn) {
    if enabled() {
        gauge!(names::CONFIRMED_LSN).set(lsn.0 as f64);
    }
}

/// The slot's retained WAL and unconfirmed WAL, from `pg_replication_slots`.
pub fn slot_wal(retained_bytes: u64, lag_bytes: u64) {
    if enabled() {
        gauge!(names::SLOT_RETAINED_WAL).set(retained_bytes as f64);
        gauge!(names::SLOT_LAG).set(lag_bytes as f64);
    }
}

/// One transaction went from commit to acknowledged-by-every-sink in `latency`.
pub fn commit_to_ack(latency: Duration) {
    if enabled() {
        histogram!(names::COMMIT_TO_ACK).record(latency.as_secs_f64());
    }
}

/// Commit-to-ack latencies for transactions committed at `commit_ts` (microseconds since
/// 2000-01-01, as pgoutput sends them), acknowledged now.
pub fn commits_acked(commit_ts: impl IntoIterator<Item = i64>) {
    if enabled() {
        let now = crate::pgoutput::pg_epoch_micros_now();
        let h = histogram!(names::COMMIT_TO_ACK);
        for ts in commit_ts {
            h.record(now.saturating_sub(ts).max(0) as f64 / 1e6);
        }
    }
}

/// The replication stream is restarting after a transient failure.
pub fn reconnect() {
    if enabled() {
        counter!(names::RECONNECTS).increment(1);
    }
}

/// `rows` snapshot rows of `table` were acknowledged by every sink.
pub fn snapshot_rows(table: &str, rows: u64) {
    if enabled() {
        counter!(names::SNAPSHOT_ROWS, "table" => table.to_owned()).increment(rows);
    }
}

/// Estimated rows of `table` still to copy.
pub fn snapshot_remaining(table: &str, rows: u64) {
    if enabled() {
        gauge!(names::SNAPSHOT_REMAINING, "table" => table.to_owned()).set(rows as f64);
    }
}

/// Tables being copied now.
pub fn snapshot_running(tables: usize) {
    if enabled() {
        gauge!(names::SNAPSHOT_RUNNING).set(tables as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_functions_are_no_ops() {
        // No recorder in this test binary unless `install` ran: must not panic either way.
        changes_received("public.t", "insert", 1);
        transform_call("m", Duration::from_millis(1), false);
        commits_acked([0, 1]);
    }

    #[test]
    fn counts_group_by_table_and_op() {
        use crate::change::Table;
        let table = |name: &str| Table {
            id: 1,
            schema: "public".into(),
            name: name.into(),
            replica_identity: crate::pgoutput::ReplicaIdentity::Default,
            columns: vec![],
        };
        let (a, b, a2) = (table("a"), table("b"), table("a"));
        let items = [
            (Some(&a), "insert"),
            (Some(&b), "insert"),
            (Some(&a2), "insert"),
            (Some(&a), "delete"),
            (None, "message"),
        ];
        let mut seen = Vec::new();
        group(items.into_iter(), |t, op, n| {
            seen.push((t.to_owned(), op, n))
        });
        assert_eq!(
            seen,
            vec![
                ("public.a".to_owned(), "insert", 2),
                ("public.b".to_owned(), "insert", 1),
                ("public.a".to_owned(), "delete", 1),
                (NO_TABLE.to_owned(), "message", 1),
            ]
        );
    }
}
