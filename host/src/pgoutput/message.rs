//! The decoded shapes of pgoutput messages.
//!
//! Field names follow the PostgreSQL protocol docs so that a reader with the docs open can
//! map each field back to its wire position. Timestamps stay raw (`*_ts`, microseconds since
//! 2000-01-01) because converting would either pull in a date crate or lose precision, and
//! most consumers only forward them.

use bytes::Bytes;

use crate::lsn::Lsn;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(Type),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(DecodingMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
    BeginPrepare(BeginPrepare),
    Prepare(Prepare),
    CommitPrepared(CommitPrepared),
    RollbackPrepared(RollbackPrepared),
    /// Same layout as [`LogicalMessage::Prepare`]; the tag alone says the transaction was
    /// streamed, so the consumer must look up its spooled changes rather than a live txn.
    StreamPrepare(Prepare),
}

impl LogicalMessage {
    /// A stable name for logs and metrics, so callers need not format the whole message
    /// (which may hold row data) just to say what it was.
    pub fn kind(&self) -> &'static str {
        match self {
            LogicalMessage::Begin(_) => "Begin",
            LogicalMessage::Commit(_) => "Commit",
            LogicalMessage::Origin(_) => "Origin",
            LogicalMessage::Relation(_) => "Relation",
            LogicalMessage::Type(_) => "Type",
            LogicalMessage::Insert(_) => "Insert",
            LogicalMessage::Update(_) => "Update",
            LogicalMessage::Delete(_) => "Delete",
            LogicalMessage::Truncate(_) => "Truncate",
            LogicalMessage::Message(_) => "Message",
            LogicalMessage::StreamStart(_) => "StreamStart",
            LogicalMessage::StreamStop => "StreamStop",
            LogicalMessage::StreamCommit(_) => "StreamCommit",
            LogicalMessage::StreamAbort(_) => "StreamAbort",
            LogicalMessage::BeginPrepare(_) => "BeginPrepare",
            LogicalMessage::Prepare(_) => "Prepare",
            LogicalMessage::CommitPrepared(_) => "CommitPrepared",
            LogicalMessage::RollbackPrepared(_) => "RollbackPrepared",
            LogicalMessage::StreamPrepare(_) => "StreamPrepare",
        }
    }
}

/// 'B'. `final_lsn` is the commit record's LSN, known up front because pgoutput only sends
/// a (non-streamed) transaction once it has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub final_lsn: Lsn,
    pub commit_ts: i64,
    pub xid: u32,
}

/// 'C'. `end_lsn` is what to confirm as flushed once the transaction is durable downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Currently always 0; kept so a future server flag is visible rather than dropped.
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_ts: i64,
}

/// 'O': the transaction was replayed from another node (loop detection in multi-master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// How the table identifies rows in old-tuple data; decides whether Update/Delete carry
/// a key ('K'), the full old row ('O'), or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// 'd': primary key.
    Default,
    /// 'n': no old-row information at all.
    Nothing,
    /// 'f': the whole old row.
    Full,
    /// 'i': a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// `None` for bytes the server does not define, so the decoder can report them.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }

    /// The `pg_class.relreplident` letter.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }
}

/// 'R'. Sent before the first change to a table in a session and whenever its schema
/// changes, so tuple data (which carries no names or types) can be interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Present only inside a streamed transaction.
    pub xid: Option<u32>,
    pub id: u32,
    /// Empty means `pg_catalog` (the server abbreviates it on the wire).
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

/// One live (not dropped, and normally not generated) column, in tuple order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity; for `Full` every column is a key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`, -1 when the type has none.
    pub type_modifier: i32,
}

/// 'Y': names a non-built-in type before a Relation refers to its OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    pub xid: Option<u32>,
    pub id: u32,
    /// Empty means `pg_catalog`.
    pub namespace: String,
    pub name: String,
}

/// One column of a tuple. Values are slices of the received buffer: row data is the bulk
/// of the stream, and copying it here would double the decoder's memory traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnData {
    /// 'n'
    Null,
    /// 'u': a TOASTed value the update did not touch; the server does not resend it, so
    /// the consumer must keep the old value rather than treat this as NULL.
    UnchangedToast,
    /// 't': the type's text output.
    Text(Bytes),
    /// 'b': the type's binary send format (only with the `binary` option).
    Binary(Bytes),
}

/// Column values in [`Relation::columns`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData(pub Vec<ColumnData>);

/// Old-row information in Update/Delete; which one arrives depends on the replica identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': only the key columns are meaningful; the others are sent as NULL.
    Key(TupleData),
    /// 'O': the entire old row (replica identity FULL).
    Full(TupleData),
}

impl OldTuple {
    /// The columns regardless of which form was sent.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// 'I'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub new: TupleData,
}

/// 'U'. `old` is `None` when the key did not change under replica identity DEFAULT/INDEX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub old: Option<OldTuple>,
    pub new: TupleData,
}

/// 'D'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub old: OldTuple,
}

/// 'T'. One message covers every table a single TRUNCATE statement hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<u32>,
    pub cascade: bool,
    pub restart_identity: bool,
    pub relation_ids: Vec<u32>,
}

/// 'M': a `pg_logical_emit_message()` payload. Non-transactional ones arrive outside any
/// Begin/Commit and must be handled immediately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodingMessage {
    pub xid: Option<u32>,
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    /// Arbitrary bytes; no encoding is promised.
    pub content: Bytes,
}

/// 'S': the following changes belong to in-progress transaction `xid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: u32,
    pub first_segment: bool,
}

/// 'c': a streamed transaction committed; its spooled changes become durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_ts: i64,
}

/// 'A': discard what was streamed for `subxid` (equal to `xid` for the whole transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: u32,
    pub subxid: u32,
    /// Protocol 4 with parallel streaming only.
    pub abort_lsn: Option<Lsn>,
    /// Protocol 4 with parallel streaming only.
    pub abort_ts: Option<i64>,
}

/// 'b': start of a two-phase transaction's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_ts: i64,
    pub xid: u32,
    pub gid: String,
}

/// 'P' and 'p': PREPARE TRANSACTION reached; the outcome comes later by `gid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub flags: u8,
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_ts: i64,
    pub xid: u32,
    pub gid: String,
}

/// 'K'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_ts: i64,
    pub xid: u32,
    pub gid: String,
}

/// 'r'. Carries the prepare's end LSN and time so a subscriber can tell whether it ever
/// saw that prepare (it may have been skipped before a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    pub flags: u8,
    pub prepare_end_lsn: Lsn,
    pub rollback_end_lsn: Lsn,
    pub prepare_ts: i64,
    pub rollback_ts: i64,
    pub xid: u32,
    pub gid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_identity_round_trips() {
        for b in [b'd', b'n', b'f', b'i'] {
            assert_eq!(ReplicaIdentity::from_byte(b).unwrap().as_byte(), b);
        }
        assert_eq!(ReplicaIdentity::from_byte(b'x'), None);
    }

    #[test]
    fn old_tuple_exposes_columns_of_either_form() {
        let t = TupleData(vec![ColumnData::Null]);
        assert_eq!(OldTuple::Key(t.clone()).tuple(), &t);
        assert_eq!(OldTuple::Full(t.clone()).tuple(), &t);
    }

    #[test]
    fn kind_names_are_variant_names() {
        assert_eq!(LogicalMessage::StreamStop.kind(), "StreamStop");
        let ins = LogicalMessage::Insert(Insert {
            xid: None,
            relation_id: 1,
            new: TupleData::default(),
        });
        assert_eq!(ins.kind(), "Insert");
    }
}
