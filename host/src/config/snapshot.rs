//! `[source.snapshot]`: copying the rows that already exist (initial snapshot, backfills).

use serde::Deserialize;
use serde_spanned::Spanned;

/// When the initial snapshot runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// When cdc-host creates the slot, every existing row of the tables is delivered once
    /// (op `read`), interleaved with live changes.
    #[default]
    Initial,
    /// Never copy existing rows on start (backfills can still be asked for).
    Never,
}

/// `[source.snapshot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [source.snapshot] table with mode, tables, workers, chunk_rows, binary"
)]
pub struct SnapshotConfig {
    #[serde(default)]
    pub mode: SnapshotMode,
    /// `schema.table` names; absent = every table of the publication.
    #[serde(default)]
    pub tables: Option<Spanned<Vec<String>>>,
    /// Tables (or key ranges of one table) copied at once, each on its own connection.
    /// Default: the machine's cores, at most 4.
    #[serde(default)]
    pub workers: Option<Spanned<usize>>,
    /// Rows per chunk (one `COPY` between two watermarks). Default 50000; a chunk also ends
    /// at its share of the memory budget, so wide rows make smaller chunks.
    #[serde(default)]
    pub chunk_rows: Option<Spanned<usize>>,
    /// Copy tables whose every column has a binary decoder in COPY's binary format (less
    /// work for the server and for cdc-host; the same values). `false`: always text.
    #[serde(default = "yes")]
    pub binary: bool,
}

fn yes() -> bool {
    true
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::Initial,
            tables: None,
            workers: None,
            chunk_rows: None,
            binary: true,
        }
    }
}

/// Most workers a snapshot may use (each holds a connection and a chunk in memory).
pub const MAX_WORKERS: usize = 16;
/// Bounds on `chunk_rows`.
pub const MIN_CHUNK_ROWS: usize = 1;
pub const MAX_CHUNK_ROWS: usize = 1_000_000;
/// Large enough that one worker is not held up by each chunk's round trip to the sinks
/// (10,000 gave 0.42 × COPY, 25,000 0.56 ×, 50,000 0.59 × in `bench/snapshot.sh`); memory is
/// bounded by bytes, not by this.
pub const DEFAULT_CHUNK_ROWS: usize = 50_000;

impl SnapshotConfig {
    pub fn workers(&self) -> usize {
        self.workers.as_ref().map_or_else(
            || {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(4)
            },
            |w| *w.get_ref(),
        )
    }

    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows
            .as_ref()
            .map_or(DEFAULT_CHUNK_ROWS, |c| *c.get_ref())
    }

    /// Checks what the file alone can tell; `Err((span, key, message))`.
    pub(super) fn validate(&self) -> Result<(), (std::ops::Range<usize>, &'static str, String)> {
        if let Some(w) = &self.workers {
            if !(1..=MAX_WORKERS).contains(w.get_ref()) {
                return Err((
                    w.span(),
                    "source.snapshot.workers",
                    format!("must be between 1 and {MAX_WORKERS}"),
                ));
            }
        }
        if let Some(c) = &self.chunk_rows {
            if !(MIN_CHUNK_ROWS..=MAX_CHUNK_ROWS).contains(c.get_ref()) {
                return Err((
                    c.span(),
                    "source.snapshot.chunk_rows",
                    format!("must be between {MIN_CHUNK_ROWS} and {MAX_CHUNK_ROWS}"),
                ));
            }
        }
        if let Some(t) = &self.tables {
            for name in t.get_ref() {
                if name
                    .split_once('.')
                    .is_none_or(|(s, n)| s.is_empty() || n.is_empty())
                {
                    return Err((
                        t.span(),
                        "source.snapshot.tables",
                        format!("{name:?}: write tables as schema.table (e.g. \"public.orders\")"),
                    ));
                }
            }
        }
        Ok(())
    }
}
