//! `[pipeline]`: batching, flow control and the memory budget.

use serde::Deserialize;

/// `[pipeline]`: batching and flow control.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [pipeline] table")]
pub struct BatchConfig {
    /// A batch closes at a transaction boundary once it holds this many changes; a
    /// larger transaction is split (default 4096).
    #[serde(deserialize_with = "at_least_one")]
    pub max_changes: usize,
    /// Batches in flight (sent, not yet acked) before the source stops reading (default 8).
    #[serde(deserialize_with = "at_least_one")]
    pub max_inflight: usize,
    /// Peak memory cdc-host should stay under, in MiB (default 256, at least 64). 32 MiB
    /// are set aside for the process itself (runtime, connections, code); of the rest, a
    /// quarter goes to encoded changes awaiting acknowledgement and a quarter to decoded
    /// batches queued between the stages (the defaults of the two byte limits below), and
    /// half is slack (allocator, encoding buffers). Memory of transform modules (their
    /// `memory_mb`) comes on top.
    #[serde(deserialize_with = "memory_budget")]
    pub memory_budget_mb: usize,
    /// Encoded bytes in flight before the source stops reading (default: a quarter of the
    /// memory budget's share for changes, 56 MiB).
    #[serde(default, deserialize_with = "some_at_least_one")]
    pub max_inflight_bytes: Option<usize>,
    /// A batch closes (or a transaction is split) once its decoded changes take about this
    /// much memory (default: a quarter of the memory budget's share for changes over the
    /// batches that can be queued, `max_inflight + 3`: 5.1 MiB). Bounds memory when rows
    /// are wide.
    #[serde(default, deserialize_with = "some_at_least_one")]
    pub max_batch_bytes: Option<usize>,
    /// On SIGTERM, how long to wait for in-flight batches to be acked (default 30 s).
    pub shutdown_grace_secs: u64,
    /// Where compiled transform modules are cached (default `~/.cache/cdc-host/modules`;
    /// `"off"` disables; `CDC_HOST_MODULE_CACHE` overrides).
    pub module_cache: Option<String>,
    /// Where streamed in-progress transactions (`[source] streaming = "on"`) are spilled
    /// once they outgrow their share of the memory budget (default: the system temp
    /// directory's `cdc-host-spool`). A subdirectory per slot, private (0700), emptied on
    /// start; point it at a writable volume when the root file system is read-only.
    pub spool_dir: Option<std::path::PathBuf>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_changes: 4096,
            max_inflight: 8,
            memory_budget_mb: 256,
            max_inflight_bytes: None,
            max_batch_bytes: None,
            shutdown_grace_secs: 30,
            module_cache: None,
            spool_dir: None,
        }
    }
}

impl BatchConfig {
    /// Encoded bytes in flight before the source stops reading.
    pub fn max_inflight_bytes(&self) -> usize {
        self.max_inflight_bytes.unwrap_or(self.budget_bytes() / 4)
    }

    /// Decoded bytes at which a batch closes.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes.unwrap_or_else(|| {
            // Queued decoded batches: the source→pipeline channel, the one being built, the
            // one in the transform stage and the one being encoded.
            let queued = self.max_inflight.saturating_add(3);
            (self.budget_bytes() / 4 / queued).max(1)
        })
    }

    /// Memory for streamed in-progress transactions before they spill to `spool_dir`: an
    /// eighth of the changes' share (taken from the slack half; 28 MiB at the default
    /// budget, 4 MiB at 64).
    pub fn spool_memory_bytes(&self) -> usize {
        (self.budget_bytes() / 8).max(1 << 20)
    }

    /// Where streamed transactions spill (see `spool_dir`).
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("cdc-host-spool"))
    }

    /// The budget's share for changes in flight: all of it but what the process itself needs.
    pub fn budget_bytes(&self) -> usize {
        self.memory_budget_mb
            .saturating_sub(PROCESS_BASE_MB)
            .saturating_mul(1 << 20)
    }
}

/// A count that must be at least 1; a 0 is reported at the value itself.
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Unsigned(0),
            &"at least 1",
        ));
    }
    Ok(n)
}

/// What the process needs besides changes in flight, in MiB: measured idle and draining
/// with tiny limits at 25–30 MiB resident (`bench/memory.sh`).
const PROCESS_BASE_MB: usize = 32;

/// The memory budget in MiB: at least 64 (the process itself needs about 30).
fn memory_budget<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n < 64 {
        return Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Unsigned(n as u64),
            &"at least 64 (MiB)",
        ));
    }
    Ok(n)
}

/// An optional byte count that, when given, is at least 1.
fn some_at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    at_least_one(d).map(Some)
}
