//! pgoutput payload → [`LogicalMessage`], per "Logical Replication Message Formats"
//! (protocol versions 1–4) and `src/backend/replication/logical/proto.c`.

use bytes::Bytes;

use super::message::*;
use super::Reader;

/// Why a payload could not be decoded. Each variant names the message kind (and field)
/// because these errors end up in logs far from the bytes that caused them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown logical replication message tag {c:?} (0x{0:02x})", c = char::from(*.0))]
    UnknownMessage(u8),
    #[error("unknown replication CopyData tag {c:?} (0x{0:02x})", c = char::from(*.0))]
    UnknownCopyData(u8),
    #[error("{kind} message truncated at {field}: needed {needed} bytes, {remaining} remaining")]
    Truncated {
        kind: &'static str,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error(
        "{kind} message: unknown tuple column kind {c:?} (0x{found:02x}) in column {column}",
        c = char::from(*.found)
    )]
    UnknownTupleKind {
        kind: &'static str,
        column: usize,
        found: u8,
    },
    #[error(
        "{kind} message: expected {expected}, found {c:?} (0x{found:02x})",
        c = char::from(*.found)
    )]
    UnexpectedTag {
        kind: &'static str,
        expected: &'static str,
        found: u8,
    },
    #[error("Relation message: unknown replica identity {c:?} (0x{0:02x})", c = char::from(*.0))]
    UnknownReplicaIdentity(u8),
    #[error("{kind} message: {field} is not valid UTF-8")]
    InvalidUtf8 {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} message: {field} has no NUL terminator")]
    MissingNul {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} message: negative {field} {len}")]
    NegativeLength {
        kind: &'static str,
        field: &'static str,
        len: i32,
    },
    #[error("{kind} message: {remaining} unexpected trailing bytes")]
    UnexpectedTrailing {
        kind: &'static str,
        remaining: usize,
    },
}

/// The name of a pgoutput message type by its tag byte (`b'I'` → `"Insert"`), for errors.
pub fn message_kind(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "StreamStart",
        b'E' => "StreamStop",
        b'c' => "StreamCommit",
        b'A' => "StreamAbort",
        b'b' => "BeginPrepare",
        b'P' => "Prepare",
        b'K' => "CommitPrepared",
        b'r' => "RollbackPrepared",
        b'p' => "StreamPrepare",
        _ => return None,
    })
}

/// Decodes one pgoutput message (an `XLogData` payload).
///
/// `in_stream` must be true between Stream Start and Stream Stop: only then do the
/// data-carrying messages include a leading xid, and nothing in the bytes says so.
pub fn decode(buf: Bytes, in_stream: bool) -> Result<LogicalMessage, DecodeError> {
    let tag = *buf.first().ok_or(DecodeError::Empty)?;
    let kind = message_kind(tag).ok_or(DecodeError::UnknownMessage(tag))?;
    let mut r = Reader::after_tag(buf, kind);
    let msg = match tag {
        b'B' => LogicalMessage::Begin(Begin {
            final_lsn: r.lsn("final_lsn")?,
            commit_ts: r.i64("commit_ts")?,
            xid: r.u32("xid")?,
        }),
        b'C' => LogicalMessage::Commit(Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_ts: r.i64("commit_ts")?,
        }),
        b'O' => LogicalMessage::Origin(Origin {
            commit_lsn: r.lsn("commit_lsn")?,
            name: r.cstr("origin name")?,
        }),
        b'R' => LogicalMessage::Relation(relation(&mut r, in_stream)?),
        b'Y' => LogicalMessage::Type(Type {
            xid: stream_xid(&mut r, in_stream)?,
            id: r.u32("type oid")?,
            namespace: r.cstr("namespace")?,
            name: r.cstr("type name")?,
        }),
        b'I' => {
            let xid = stream_xid(&mut r, in_stream)?;
            let relation_id = r.u32("relation id")?;
            expect_tag(&mut r, b'N', "'N'")?;
            LogicalMessage::Insert(Insert {
                xid,
                relation_id,
                new: tuple(&mut r)?,
            })
        }
        b'U' => LogicalMessage::Update(update(&mut r, in_stream)?),
        b'D' => {
            let xid = stream_xid(&mut r, in_stream)?;
            let relation_id = r.u32("relation id")?;
            let old = match r.u8("tuple tag")? {
                b'K' => OldTuple::Key(tuple(&mut r)?),
                b'O' => OldTuple::Full(tuple(&mut r)?),
                found => return Err(unexpected(&r, "'K' or 'O'", found)),
            };
            LogicalMessage::Delete(Delete {
                xid,
                relation_id,
                old,
            })
        }
        b'T' => LogicalMessage::Truncate(truncate(&mut r, in_stream)?),
        b'M' => LogicalMessage::Message(DecodingMessage {
            xid: stream_xid(&mut r, in_stream)?,
            transactional: r.u8("flags")? & 1 != 0,
            lsn: r.lsn("lsn")?,
            prefix: r.cstr("prefix")?,
            content: {
                let len = r.len_i32("content length")?;
                r.bytes(len, "content")?
            },
        }),
        b'S' => LogicalMessage::StreamStart(StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first_segment")? == 1,
        }),
        b'E' => LogicalMessage::StreamStop,
        b'c' => LogicalMessage::StreamCommit(StreamCommit {
            xid: r.u32("xid")?,
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_ts: r.i64("commit_ts")?,
        }),
        b'A' => LogicalMessage::StreamAbort(stream_abort(&mut r)?),
        b'b' => LogicalMessage::BeginPrepare(BeginPrepare {
            prepare_lsn: r.lsn("prepare_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            prepare_ts: r.i64("prepare_ts")?,
            xid: r.u32("xid")?,
            gid: r.cstr("gid")?,
        }),
        b'P' => LogicalMessage::Prepare(prepare(&mut r)?),
        b'p' => LogicalMessage::StreamPrepare(prepare(&mut r)?),
        b'K' => LogicalMessage::CommitPrepared(CommitPrepared {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_ts: r.i64("commit_ts")?,
            xid: r.u32("xid")?,
            gid: r.cstr("gid")?,
        }),
        b'r' => LogicalMessage::RollbackPrepared(RollbackPrepared {
            flags: r.u8("flags")?,
            prepare_end_lsn: r.lsn("prepare_end_lsn")?,
            rollback_end_lsn: r.lsn("rollback_end_lsn")?,
            prepare_ts: r.i64("prepare_ts")?,
            rollback_ts: r.i64("rollback_ts")?,
            xid: r.u32("xid")?,
            gid: r.cstr("gid")?,
        }),
        // Every tag accepted above has an arm; this keeps the match total without a panic.
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    r.finish()?;
    Ok(msg)
}

fn stream_xid(r: &mut Reader, in_stream: bool) -> Result<Option<u32>, DecodeError> {
    in_stream.then(|| r.u32("xid")).transpose()
}

fn unexpected(r: &Reader, expected: &'static str, found: u8) -> DecodeError {
    DecodeError::UnexpectedTag {
        kind: r.kind,
        expected,
        found,
    }
}

fn expect_tag(r: &mut Reader, want: u8, expected: &'static str) -> Result<(), DecodeError> {
    match r.u8("tuple tag")? {
        found if found == want => Ok(()),
        found => Err(unexpected(r, expected, found)),
    }
}

fn relation(r: &mut Reader, in_stream: bool) -> Result<Relation, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let id = r.u32("relation id")?;
    let namespace = r.cstr("namespace")?;
    let name = r.cstr("relation name")?;
    let ident = r.u8("replica identity")?;
    let replica_identity =
        ReplicaIdentity::from_byte(ident).ok_or(DecodeError::UnknownReplicaIdentity(ident))?;
    let n = usize::from(r.u16("column count")?);
    // Each column takes at least 10 bytes; capping by that keeps a forged count from
    // reserving megabytes for a message that is about to fail anyway.
    let mut columns = Vec::with_capacity(n.min(r.remaining() / 10));
    for _ in 0..n {
        columns.push(RelationColumn {
            is_key: r.u8("column flags")? & 1 != 0,
            name: r.cstr("column name")?,
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(Relation {
        xid,
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn update(r: &mut Reader, in_stream: bool) -> Result<Update, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let relation_id = r.u32("relation id")?;
    let old = match r.u8("tuple tag")? {
        b'K' => Some(OldTuple::Key(tuple(r)?)),
        b'O' => Some(OldTuple::Full(tuple(r)?)),
        b'N' => None,
        found => return Err(unexpected(r, "'K', 'O' or 'N'", found)),
    };
    if old.is_some() {
        expect_tag(r, b'N', "'N'")?;
    }
    Ok(Update {
        xid,
        relation_id,
        old,
        new: tuple(r)?,
    })
}

/// The hot path: one `Vec` allocation, values sliced from the input.
fn tuple(r: &mut Reader) -> Result<TupleData, DecodeError> {
    let n = usize::from(r.u16("column count")?);
    // At least one byte per column, so a forged count cannot force a large reservation.
    let mut columns = Vec::with_capacity(n.min(r.remaining()));
    for column in 0..n {
        columns.push(match r.u8("column kind")? {
            b'n' => ColumnData::Null,
            b'u' => ColumnData::UnchangedToast,
            b't' => {
                let len = r.len_i32("column length")?;
                ColumnData::Text(r.bytes(len, "column value")?)
            }
            b'b' => {
                let len = r.len_i32("column length")?;
                ColumnData::Binary(r.bytes(len, "column value")?)
            }
            found => {
                return Err(DecodeError::UnknownTupleKind {
                    kind: r.kind,
                    column,
                    found,
                })
            }
        });
    }
    Ok(TupleData(columns))
}

fn truncate(r: &mut Reader, in_stream: bool) -> Result<Truncate, DecodeError> {
    let xid = stream_xid(r, in_stream)?;
    let n = r.len_i32("relation count")?;
    let options = r.u8("options")?;
    // Check the whole id array up front: the count is untrusted and sizes the allocation.
    let needed = n.saturating_mul(4);
    if needed > r.remaining() {
        return Err(r.truncated("relation ids", needed));
    }
    let mut relation_ids = Vec::with_capacity(n);
    for _ in 0..n {
        relation_ids.push(r.u32("relation id")?);
    }
    Ok(Truncate {
        xid,
        cascade: options & 1 != 0,
        restart_identity: options & 2 != 0,
        relation_ids,
    })
}

/// The abort LSN and time exist only with protocol 4 parallel streaming, and the message
/// has no flag for it; the only signal is whether the bytes are there.
fn stream_abort(r: &mut Reader) -> Result<StreamAbort, DecodeError> {
    let xid = r.u32("xid")?;
    let subxid = r.u32("subxid")?;
    let (abort_lsn, abort_ts) = if r.remaining() == 0 {
        (None, None)
    } else {
        (Some(r.lsn("abort_lsn")?), Some(r.i64("abort_ts")?))
    };
    Ok(StreamAbort {
        xid,
        subxid,
        abort_lsn,
        abort_ts,
    })
}

fn prepare(r: &mut Reader) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: r.u8("flags")?,
        prepare_lsn: r.lsn("prepare_lsn")?,
        end_lsn: r.lsn("end_lsn")?,
        prepare_ts: r.i64("prepare_ts")?,
        xid: r.u32("xid")?,
        gid: r.cstr("gid")?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Wire;
    use super::*;
    use crate::lsn::Lsn;

    fn ok(w: Wire, in_stream: bool) -> LogicalMessage {
        let b = w.bytes();
        let m = decode(b.clone(), in_stream).unwrap();
        // Every strict prefix must fail, not decode to something shorter.
        for cut in 0..b.len() {
            assert!(
                decode(b.slice(..cut), in_stream).is_err(),
                "prefix {cut} of {m:?}"
            );
        }
        m
    }

    fn text(s: &'static str) -> ColumnData {
        ColumnData::Text(Bytes::from_static(s.as_bytes()))
    }

    /// Columns: text "1", NULL, unchanged TOAST, binary [0xde, 0xad].
    fn four_cols(w: Wire) -> Wire {
        w.u16(4)
            .u8(b't')
            .i32(1)
            .raw(b"1")
            .u8(b'n')
            .u8(b'u')
            .u8(b'b')
            .i32(2)
            .raw(&[0xde, 0xad])
    }

    fn four_cols_data() -> TupleData {
        TupleData(vec![
            text("1"),
            ColumnData::Null,
            ColumnData::UnchangedToast,
            ColumnData::Binary(Bytes::from_static(&[0xde, 0xad])),
        ])
    }

    fn key_tuple(w: Wire) -> Wire {
        w.u16(1).u8(b't').i32(2).raw(b"42")
    }

    #[test]
    fn begin() {
        let m = ok(Wire::tag(b'B').u64(0x1_0000_0010).i64(-5).u32(700), false);
        assert_eq!(
            m,
            LogicalMessage::Begin(Begin {
                final_lsn: Lsn(0x1_0000_0010),
                commit_ts: -5,
                xid: 700
            })
        );
        assert_eq!(m.kind(), "Begin");
    }

    #[test]
    fn commit() {
        let m = ok(Wire::tag(b'C').u8(0).u64(10).u64(20).i64(30), false);
        assert_eq!(
            m,
            LogicalMessage::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(10),
                end_lsn: Lsn(20),
                commit_ts: 30
            })
        );
    }

    #[test]
    fn origin() {
        let m = ok(Wire::tag(b'O').u64(99).cstr("node_a"), false);
        assert_eq!(
            m,
            LogicalMessage::Origin(Origin {
                commit_lsn: Lsn(99),
                name: "node_a".into()
            })
        );
    }

    fn relation_wire(w: Wire) -> Wire {
        w.u32(16384)
            .cstr("public")
            .cstr("users")
            .u8(b'i')
            .u16(2)
            .u8(1)
            .cstr("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .cstr("name")
            .u32(1043)
            .i32(68)
    }

    fn relation_value(xid: Option<u32>) -> LogicalMessage {
        LogicalMessage::Relation(Relation {
            xid,
            id: 16384,
            namespace: "public".into(),
            name: "users".into(),
            replica_identity: ReplicaIdentity::Index,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "name".into(),
                    type_oid: 1043,
                    type_modifier: 68,
                },
            ],
        })
    }

    #[test]
    fn relation() {
        assert_eq!(
            ok(relation_wire(Wire::tag(b'R')), false),
            relation_value(None)
        );
        assert_eq!(
            ok(relation_wire(Wire::tag(b'R').u32(77)), true),
            relation_value(Some(77))
        );
    }

    #[test]
    fn relation_unknown_replica_identity() {
        let b = Wire::tag(b'R')
            .u32(1)
            .cstr("")
            .cstr("t")
            .u8(b'x')
            .u16(0)
            .bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::UnknownReplicaIdentity(b'x'))
        );
    }

    #[test]
    fn type_message() {
        let m = ok(
            Wire::tag(b'Y').u32(5).u32(90000).cstr("").cstr("mood"),
            true,
        );
        assert_eq!(
            m,
            LogicalMessage::Type(Type {
                xid: Some(5),
                id: 90000,
                namespace: String::new(),
                name: "mood".into()
            })
        );
        assert_eq!(m.kind(), "Type");
    }

    #[test]
    fn insert_with_every_column_kind() {
        let m = ok(four_cols(Wire::tag(b'I').u32(16384).u8(b'N')), false);
        assert_eq!(
            m,
            LogicalMessage::Insert(Insert {
                xid: None,
                relation_id: 16384,
                new: four_cols_data()
            })
        );
    }

    #[test]
    fn insert_values_are_zero_copy() {
        let b = four_cols(Wire::tag(b'I').u32(1).u8(b'N')).bytes();
        let LogicalMessage::Insert(ins) = decode(b.clone(), false).unwrap() else {
            panic!("not an insert");
        };
        let ColumnData::Text(v) = &ins.new.0[0] else {
            panic!("not text");
        };
        let range = b.as_ptr_range();
        assert!(range.contains(&v.as_ptr()));
    }

    #[test]
    fn insert_in_stream_has_xid() {
        let m = ok(
            four_cols(Wire::tag(b'I').u32(900).u32(16384).u8(b'N')),
            true,
        );
        let LogicalMessage::Insert(ins) = m else {
            panic!("{m:?}")
        };
        assert_eq!((ins.xid, ins.relation_id), (Some(900), 16384));
    }

    #[test]
    fn update_with_old_key() {
        let w = four_cols(key_tuple(Wire::tag(b'U').u32(1).u8(b'K')).u8(b'N'));
        assert_eq!(
            ok(w, false),
            LogicalMessage::Update(Update {
                xid: None,
                relation_id: 1,
                old: Some(OldTuple::Key(TupleData(vec![text("42")]))),
                new: four_cols_data(),
            })
        );
    }

    #[test]
    fn update_with_old_tuple() {
        let w = four_cols(four_cols(Wire::tag(b'U').u32(1).u8(b'O')).u8(b'N'));
        assert_eq!(
            ok(w, false),
            LogicalMessage::Update(Update {
                xid: None,
                relation_id: 1,
                old: Some(OldTuple::Full(four_cols_data())),
                new: four_cols_data(),
            })
        );
    }

    #[test]
    fn update_with_only_new() {
        let w = four_cols(Wire::tag(b'U').u32(3).u32(1).u8(b'N'));
        assert_eq!(
            ok(w, true),
            LogicalMessage::Update(Update {
                xid: Some(3),
                relation_id: 1,
                old: None,
                new: four_cols_data(),
            })
        );
    }

    #[test]
    fn update_bad_tags() {
        let b = Wire::tag(b'U').u32(1).u8(b'X').bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::UnexpectedTag {
                kind: "Update",
                found: b'X',
                ..
            })
        ));
        // After an old tuple only 'N' may follow.
        let b = key_tuple(Wire::tag(b'U').u32(1).u8(b'K'))
            .u8(b'K')
            .u16(0)
            .bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::UnexpectedTag {
                expected: "'N'",
                found: b'K',
                ..
            })
        ));
    }

    #[test]
    fn delete_with_key_and_full() {
        assert_eq!(
            ok(key_tuple(Wire::tag(b'D').u32(1).u8(b'K')), false),
            LogicalMessage::Delete(Delete {
                xid: None,
                relation_id: 1,
                old: OldTuple::Key(TupleData(vec![text("42")])),
            })
        );
        assert_eq!(
            ok(four_cols(Wire::tag(b'D').u32(8).u32(1).u8(b'O')), true),
            LogicalMessage::Delete(Delete {
                xid: Some(8),
                relation_id: 1,
                old: OldTuple::Full(four_cols_data()),
            })
        );
        let b = key_tuple(Wire::tag(b'D').u32(1).u8(b'N')).bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::UnexpectedTag { kind: "Delete", .. })
        ));
    }

    #[test]
    fn truncate() {
        assert_eq!(
            ok(Wire::tag(b'T').u32(2).u8(3).u32(10).u32(11), false),
            LogicalMessage::Truncate(Truncate {
                xid: None,
                cascade: true,
                restart_identity: true,
                relation_ids: vec![10, 11],
            })
        );
        assert_eq!(
            ok(Wire::tag(b'T').u32(4).u32(1).u8(2).u32(10), true),
            LogicalMessage::Truncate(Truncate {
                xid: Some(4),
                cascade: false,
                restart_identity: true,
                relation_ids: vec![10],
            })
        );
    }

    #[test]
    fn truncate_forged_count_fails_before_allocating() {
        let b = Wire::tag(b'T').i32(i32::MAX).u8(0).u32(1).bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::Truncated {
                field: "relation ids",
                ..
            })
        ));
        let b = Wire::tag(b'T').i32(-1).u8(0).bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::NegativeLength { len: -1, .. })
        ));
    }

    #[test]
    fn logical_decoding_message() {
        let w = Wire::tag(b'M')
            .u8(1)
            .u64(55)
            .cstr("audit")
            .i32(3)
            .raw(&[0, 0xff, 1]);
        assert_eq!(
            ok(w, false),
            LogicalMessage::Message(DecodingMessage {
                xid: None,
                transactional: true,
                lsn: Lsn(55),
                prefix: "audit".into(),
                content: Bytes::from_static(&[0, 0xff, 1]),
            })
        );
        let w = Wire::tag(b'M').u32(12).u8(0).u64(1).cstr("p").i32(0);
        let m = ok(w, true);
        let LogicalMessage::Message(msg) = &m else {
            panic!("{m:?}")
        };
        assert_eq!((msg.xid, msg.transactional), (Some(12), false));
        assert_eq!(m.kind(), "Message");
    }

    #[test]
    fn stream_start_stop_commit() {
        assert_eq!(
            ok(Wire::tag(b'S').u32(9).u8(1), false),
            LogicalMessage::StreamStart(StreamStart {
                xid: 9,
                first_segment: true
            })
        );
        assert_eq!(ok(Wire::tag(b'E'), true), LogicalMessage::StreamStop);
        assert_eq!(
            ok(Wire::tag(b'c').u32(9).u8(0).u64(1).u64(2).i64(3), false),
            LogicalMessage::StreamCommit(StreamCommit {
                xid: 9,
                flags: 0,
                commit_lsn: Lsn(1),
                end_lsn: Lsn(2),
                commit_ts: 3
            })
        );
    }

    #[test]
    fn stream_abort_with_and_without_proto4_fields() {
        let short = Wire::tag(b'A').u32(9).u32(10).bytes();
        assert_eq!(
            decode(short, false).unwrap(),
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 9,
                subxid: 10,
                abort_lsn: None,
                abort_ts: None
            })
        );
        let long = Wire::tag(b'A').u32(9).u32(10).u64(0x20).i64(-1).bytes();
        assert_eq!(
            decode(long.clone(), false).unwrap(),
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 9,
                subxid: 10,
                abort_lsn: Some(Lsn(0x20)),
                abort_ts: Some(-1)
            })
        );
        // Partially present proto-4 fields are truncation, not "absent".
        for cut in 10..long.len() {
            assert!(matches!(
                decode(long.slice(..cut), false),
                Err(DecodeError::Truncated {
                    kind: "StreamAbort",
                    ..
                })
            ));
        }
        let extra = Wire::tag(b'A').u32(9).u32(10).u64(1).i64(1).u8(0).bytes();
        assert!(matches!(
            decode(extra, false),
            Err(DecodeError::UnexpectedTrailing { remaining: 1, .. })
        ));
    }

    #[test]
    fn two_phase_messages() {
        assert_eq!(
            ok(
                Wire::tag(b'b').u64(1).u64(2).i64(3).u32(4).cstr("g1"),
                false
            ),
            LogicalMessage::BeginPrepare(BeginPrepare {
                prepare_lsn: Lsn(1),
                end_lsn: Lsn(2),
                prepare_ts: 3,
                xid: 4,
                gid: "g1".into()
            })
        );
        let prep = Prepare {
            flags: 0,
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_ts: 3,
            xid: 4,
            gid: "g1".into(),
        };
        let w = |t| Wire::tag(t).u8(0).u64(1).u64(2).i64(3).u32(4).cstr("g1");
        assert_eq!(ok(w(b'P'), false), LogicalMessage::Prepare(prep.clone()));
        let sp = ok(w(b'p'), false);
        assert_eq!(sp, LogicalMessage::StreamPrepare(prep));
        assert_eq!(sp.kind(), "StreamPrepare");
        assert_eq!(
            ok(w(b'K'), false),
            LogicalMessage::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: Lsn(1),
                end_lsn: Lsn(2),
                commit_ts: 3,
                xid: 4,
                gid: "g1".into()
            })
        );
        let rb = Wire::tag(b'r')
            .u8(0)
            .u64(1)
            .u64(2)
            .i64(3)
            .i64(4)
            .u32(5)
            .cstr("g2");
        assert_eq!(
            ok(rb, false),
            LogicalMessage::RollbackPrepared(RollbackPrepared {
                flags: 0,
                prepare_end_lsn: Lsn(1),
                rollback_end_lsn: Lsn(2),
                prepare_ts: 3,
                rollback_ts: 4,
                xid: 5,
                gid: "g2".into()
            })
        );
    }

    #[test]
    fn error_kinds_match_message_kinds() {
        // The kind in a truncation error must be the same name kind() reports.
        let samples: Vec<Bytes> = vec![
            Wire::tag(b'B').u64(1).i64(1).u32(1).bytes(),
            Wire::tag(b'C').u8(0).u64(1).u64(1).i64(1).bytes(),
            Wire::tag(b'S').u32(1).u8(0).bytes(),
            Wire::tag(b'b')
                .u64(1)
                .u64(1)
                .i64(1)
                .u32(1)
                .cstr("g")
                .bytes(),
            Wire::tag(b'r')
                .u8(0)
                .u64(1)
                .u64(1)
                .i64(1)
                .i64(1)
                .u32(1)
                .cstr("g")
                .bytes(),
        ];
        for b in samples {
            let kind = decode(b.clone(), false).unwrap().kind();
            match decode(b.slice(..b.len() - 1), false) {
                Err(DecodeError::Truncated { kind: k, .. })
                | Err(DecodeError::MissingNul { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn truncation_reports_field_and_sizes() {
        let b = Wire::tag(b'B').u64(1).raw(&[0, 0, 0]).bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::Truncated {
                kind: "Begin",
                field: "commit_ts",
                needed: 8,
                remaining: 3
            })
        );
        // Declared value length longer than what follows.
        let b = Wire::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(10)
            .raw(b"abc")
            .bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::Truncated {
                kind: "Insert",
                field: "column value",
                needed: 10,
                remaining: 3
            })
        );
        // Fewer columns than the count says.
        let mut v = key_tuple(Wire::tag(b'I').u32(1).u8(b'N')).0;
        v[7] = 2; // column count low byte: 1 -> 2
        assert!(matches!(
            decode(Bytes::from(v), false),
            Err(DecodeError::Truncated {
                field: "column kind",
                ..
            })
        ));
    }

    #[test]
    fn empty_and_unknown_tag() {
        assert_eq!(decode(Bytes::new(), false), Err(DecodeError::Empty));
        assert_eq!(
            decode(Bytes::from_static(b"Z"), false),
            Err(DecodeError::UnknownMessage(b'Z'))
        );
    }

    #[test]
    fn bad_tuple_kind() {
        let b = Wire::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(2)
            .u8(b'n')
            .u8(b'x')
            .bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::UnknownTupleKind {
                kind: "Insert",
                column: 1,
                found: b'x'
            })
        );
    }

    #[test]
    fn negative_column_length() {
        let b = Wire::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b'b')
            .i32(-3)
            .bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::NegativeLength {
                kind: "Insert",
                field: "column length",
                len: -3
            })
        );
        let b = Wire::tag(b'M').u8(0).u64(1).cstr("p").i32(-1).bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::NegativeLength {
                field: "content length",
                ..
            })
        ));
    }

    #[test]
    fn invalid_utf8_names() {
        let b = Wire::tag(b'O').u64(1).raw(&[0xc3, 0x28, 0]).bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::InvalidUtf8 {
                kind: "Origin",
                field: "origin name"
            })
        );
        let b = Wire::tag(b'R')
            .u32(1)
            .cstr("public")
            .raw(&[0xff, 0])
            .u8(b'd')
            .u16(0)
            .bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::InvalidUtf8 {
                field: "relation name",
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes() {
        let b = Wire::tag(b'E').u8(0).bytes();
        assert_eq!(
            decode(b, false),
            Err(DecodeError::UnexpectedTrailing {
                kind: "StreamStop",
                remaining: 1
            })
        );
        let b = key_tuple(Wire::tag(b'D').u32(1).u8(b'K'))
            .raw(b"zz")
            .bytes();
        assert!(matches!(
            decode(b, false),
            Err(DecodeError::UnexpectedTrailing {
                kind: "Delete",
                remaining: 2
            })
        ));
    }

    #[test]
    fn stream_flag_changes_layout() {
        // A non-stream Insert read as stream mode is misparsed and must fail, not panic.
        let b = four_cols(Wire::tag(b'I').u32(1).u8(b'N')).bytes();
        assert!(decode(b, true).is_err());
    }

    #[test]
    fn errors_display_readably() {
        let e = DecodeError::Truncated {
            kind: "Insert",
            field: "column value",
            needed: 10,
            remaining: 3,
        };
        assert_eq!(
            e.to_string(),
            "Insert message truncated at column value: needed 10 bytes, 3 remaining"
        );
        assert_eq!(
            DecodeError::UnknownMessage(b'Z').to_string(),
            "unknown logical replication message tag 'Z' (0x5a)"
        );
    }
}
