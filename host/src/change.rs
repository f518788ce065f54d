//! The change model: what one row-level event is, independent of wire format and sink.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::lsn::Lsn;
use crate::pgoutput::ReplicaIdentity;
use crate::value::{TypeInfo, Value};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    Message,
    /// A row as it already existed, copied by an initial snapshot or a backfill.
    Read,
}

impl Op {
    /// The `op` field of the native JSON format.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Message => "message",
            Op::Read => "read",
        }
    }
}

/// A published table as pgoutput last described it (shared by every change of it).
#[derive(Debug)]
pub struct Table {
    pub id: u32,
    pub schema: Arc<str>,
    pub name: Arc<str>,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

/// A column, with its type resolved (domains to their base type).
#[derive(Debug)]
pub struct Column {
    pub name: Arc<str>,
    /// The column's declared type oid (a domain's own oid, not its base).
    pub type_oid: u32,
    pub type_info: TypeInfo,
    /// Part of the replica identity (the key pgoutput sends as the old key).
    pub is_key: bool,
}

/// One tuple's values, aligned with `Table::columns`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

/// Which columns `before` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Only the replica identity key columns (REPLICA IDENTITY DEFAULT / INDEX).
    Key,
    /// The whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// A logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodingMessage {
    pub prefix: String,
    pub content: Bytes,
    pub transactional: bool,
}

/// One change, ready for transforms and encoders.
#[derive(Debug, Clone)]
pub struct Change {
    pub op: Op,
    /// LSN of the commit record of the change's transaction (for a non-transactional
    /// message: the message's own LSN). With `ordinal`, the change's identity.
    pub commit_lsn: Lsn,
    /// Position of the change within its transaction, from 0.
    pub ordinal: u32,
    /// WAL position of the change itself.
    pub lsn: Lsn,
    pub xid: u32,
    /// Commit time, microseconds since 2000-01-01 UTC (Postgres's epoch).
    pub commit_ts: i64,
    /// The table, for insert/update/delete/truncate.
    pub table: Option<Arc<Table>>,
    pub before: Option<(Before, Row)>,
    pub after: Option<Row>,
    /// TRUNCATE options (`cascade`, `restart_identity`).
    pub truncate: Option<(bool, bool)>,
    pub message: Option<DecodingMessage>,
    /// 0 as decoded; when a transform splits one change into several with the same id,
    /// the later ones get 1, 2, … (see [`ChangeId`]).
    pub split: u32,
    /// Route and headers a transform set (boxed: most changes have none).
    pub routing: Option<Box<Routing>>,
    /// For `Op::Read`: which snapshot copied the row, and the row's identity in it.
    pub read: Option<SnapshotRead>,
    /// The replication origin the transaction came through (pgoutput's Origin message:
    /// it was applied here by another node's logical replication); `None` for local
    /// writes. Only with `[source] origin = "any"` (or unset) does such a change arrive.
    pub origin: Option<Arc<str>>,
}

/// What identifies a read: the snapshot (or backfill) it belongs to and a hash of its
/// table and key values, so a row re-sent after a crash carries the same id, and the
/// same row copied by a later backfill does not (consumers asked for it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadKey {
    /// The snapshot's number (`cdc_host.snapshots.id`).
    pub snapshot: u32,
    /// 128-bit hash of the table's name and the row's key values.
    pub key: u128,
}

/// A read's place in its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRead {
    pub key: ReadKey,
    /// The last row the snapshot delivers (Debezium's `source.snapshot = "last"`).
    pub last: bool,
}

/// Where sinks send a change and what they attach, as set by a transform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Overrides the sink's subject/route template.
    pub route: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Change {
    /// The stable id: derived from WAL positions only, so a change replayed after a crash
    /// carries the same id (sinks deduplicate on it).
    pub fn id(&self) -> ChangeId {
        match self.read {
            // A read's id does not depend on where in the WAL its chunk was delivered.
            Some(r) => ChangeId {
                commit_lsn: Lsn(0),
                ordinal: 0,
                split: self.split,
                read: Some(r.key),
            },
            None => ChangeId {
                commit_lsn: self.commit_lsn,
                ordinal: self.ordinal,
                split: self.split,
                read: None,
            },
        }
    }
}

/// `<commit LSN as 16 hex digits>-<ordinal as 8 hex digits>`: fixed width, so ids sort
/// in commit order as plain strings. A change a transform split off another carries
/// `.<n>` after it (`…-00000003.1`), which still sorts right after its origin.
///
/// A read (snapshot row) is `r<snapshot as 8 hex digits>-<key hash as 32 hex digits>`:
/// never confused with a stream id (those start with a hex digit); `commit_lsn` and
/// `ordinal` are then 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeId {
    pub commit_lsn: Lsn,
    pub ordinal: u32,
    pub split: u32,
    pub read: Option<ReadKey>,
}

impl ChangeId {
    /// The id's text, as `to_string()` gives it, without the formatting machinery (one per
    /// encoded change).
    pub fn to_text(&self) -> String {
        // A read's id is 42 bytes, a stream change's 25; a split suffix at most 11 more.
        let base = if self.read.is_some() { 42 } else { 25 };
        let mut out = Vec::with_capacity(base + if self.split > 0 { 11 } else { 0 });
        self.write_text(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the id's text: fixed widths, built in one array and appended whole.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        use crate::lsn::hex_fixed;
        if let Some(r) = self.read {
            let mut b = [0u8; 42];
            b[0] = b'r';
            b[1..9].copy_from_slice(&hex_fixed::<8>(u64::from(r.snapshot)));
            b[9] = b'-';
            b[10..26].copy_from_slice(&hex_fixed::<16>((r.key >> 64) as u64));
            b[26..42].copy_from_slice(&hex_fixed::<16>(r.key as u64));
            out.extend_from_slice(&b);
        } else {
            let mut b = [0u8; 25];
            b[..16].copy_from_slice(&hex_fixed::<16>(self.commit_lsn.0));
            b[16] = b'-';
            b[17..].copy_from_slice(&hex_fixed::<8>(u64::from(self.ordinal)));
            out.extend_from_slice(&b);
        }
        if self.split > 0 {
            // Split suffixes are rare: the formatting machinery is fine here.
            out.push(b'.');
            out.extend_from_slice(self.split.to_string().as_bytes());
        }
    }
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.read {
            Some(r) => write!(f, "r{:08X}-{:032X}", r.snapshot, r.key)?,
            None => write!(f, "{:016X}-{:08X}", self.commit_lsn.0, self.ordinal)?,
        }
        if self.split > 0 {
            write!(f, ".{}", self.split)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ChangeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid change id {s:?} (expected <16 hex>-<8 hex>[.<n>], or r<8 hex>-<32 hex>[.<n>] for a read)"
            )
        };
        let (main, split) = match s.split_once('.') {
            Some((m, n)) => (m, n.parse::<u32>().map_err(|_| bad())?),
            None => (s, 0),
        };
        if let Some(read) = main.strip_prefix('r') {
            let (snapshot, key) = read.split_once('-').ok_or_else(bad)?;
            if snapshot.len() != 8 || key.len() != 32 {
                return Err(bad());
            }
            return Ok(ChangeId {
                commit_lsn: Lsn(0),
                ordinal: 0,
                split,
                read: Some(ReadKey {
                    snapshot: u32::from_str_radix(snapshot, 16).map_err(|_| bad())?,
                    key: u128::from_str_radix(key, 16).map_err(|_| bad())?,
                }),
            });
        }
        let (lsn, ordinal) = main.split_once('-').ok_or_else(bad)?;
        if lsn.len() != 16 || ordinal.len() != 8 {
            return Err(bad());
        }
        Ok(ChangeId {
            commit_lsn: Lsn(u64::from_str_radix(lsn, 16).map_err(|_| bad())?),
            ordinal: u32::from_str_radix(ordinal, 16).map_err(|_| bad())?,
            split,
            read: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_width_and_sort_in_commit_order() {
        let a = ChangeId {
            commit_lsn: Lsn(0x16B3748),
            ordinal: 3,
            split: 0,
            read: None,
        };
        let b = ChangeId {
            commit_lsn: Lsn(0x1_0000_0000),
            ordinal: 0,
            split: 0,
            read: None,
        };
        assert_eq!(a.to_string(), "00000000016B3748-00000003");
        for id in [
            a,
            b,
            ChangeId {
                commit_lsn: Lsn(u64::MAX),
                ordinal: u32::MAX,
                split: 17,
                read: None,
            },
        ] {
            assert_eq!(id.to_text(), id.to_string());
        }
        assert!(a.to_string() < b.to_string());
        let c = ChangeId { split: 2, ..a };
        assert_eq!(c.to_string(), "00000000016B3748-00000003.2");
        assert!(a.to_string() < c.to_string() && c.to_string() < b.to_string());
        for id in [a, b, c] {
            assert_eq!(id.to_string().parse::<ChangeId>(), Ok(id));
        }
        assert!("16B3748-3".parse::<ChangeId>().is_err());
    }

    #[test]
    fn read_ids_are_distinct_and_round_trip() {
        let r = ChangeId {
            commit_lsn: Lsn(0),
            ordinal: 0,
            split: 0,
            read: Some(ReadKey {
                snapshot: 3,
                key: 0x0123_4567_89AB_CDEF_0011_2233_4455_6677,
            }),
        };
        assert_eq!(r.to_string(), "r00000003-0123456789ABCDEF0011223344556677");
        assert_eq!(r.to_text(), r.to_string());
        assert_eq!(r.to_string().parse::<ChangeId>(), Ok(r));
        let s = ChangeId { split: 1, ..r };
        assert_eq!(s.to_text(), format!("{r}.1"));
        assert_eq!(s.to_string().parse::<ChangeId>(), Ok(s));
        assert!("r3-12".parse::<ChangeId>().is_err());
    }
}
