//! Fuzz targets for the replication envelope (`parse_copy_data`) and the pgoutput decoder.
//!
//! Arbitrary bytes rarely get past the tag byte, so most of the work is structure-aware:
//! [`Enc`] encodes any [`LogicalMessage`] exactly as the server would (recording where its
//! counts and lengths sit), and the mutation target damages such encodings in the ways a
//! corrupt or hostile stream would: cut short, bits flipped, bytes inserted or removed, and
//! counts/lengths set to 0, ±1, `i16`/`u16`/`i32`/`u32` extremes.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::{BoxedStrategy, Union};

use super::fuzz;
use cdc_host::lsn::Lsn;
use cdc_host::pgoutput::*;

// ---------------------------------------------------------------------------
// The encoder (the inverse of `decode`)

/// Where a count or length field sits in an encoding, so mutations can hit it exactly.
#[derive(Debug, Clone, Copy)]
struct Field {
    at: usize,
    /// 2 (Int16 column counts) or 4 (Int32 lengths and counts).
    width: usize,
}

/// A pgoutput message being encoded, big-endian, plus its count/length fields.
#[derive(Debug, Default)]
struct Enc {
    buf: Vec<u8>,
    fields: Vec<Field>,
}

impl Enc {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn lsn(&mut self, v: Lsn) {
        self.u64(v.0);
    }
    fn cstr(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn xid(&mut self, xid: Option<u32>) {
        if let Some(x) = xid {
            self.u32(x);
        }
    }
    fn count16(&mut self, n: usize) {
        self.fields.push(Field {
            at: self.buf.len(),
            width: 2,
        });
        self.u16(u16::try_from(n).expect("test messages are small"));
    }
    fn len32(&mut self, n: usize) {
        self.fields.push(Field {
            at: self.buf.len(),
            width: 4,
        });
        self.i32(i32::try_from(n).expect("test messages are small"));
    }
    fn value(&mut self, b: &[u8]) {
        self.len32(b.len());
        self.buf.extend_from_slice(b);
    }

    fn tuple(&mut self, t: &TupleData) {
        self.count16(t.0.len());
        for c in &t.0 {
            match c {
                ColumnData::Null => self.u8(b'n'),
                ColumnData::UnchangedToast => self.u8(b'u'),
                ColumnData::Text(b) => {
                    self.u8(b't');
                    self.value(b);
                }
                ColumnData::Binary(b) => {
                    self.u8(b'b');
                    self.value(b);
                }
            }
        }
    }

    fn old(&mut self, old: &OldTuple) {
        match old {
            OldTuple::Key(t) => {
                self.u8(b'K');
                self.tuple(t);
            }
            OldTuple::Full(t) => {
                self.u8(b'O');
                self.tuple(t);
            }
        }
    }

    fn prepare(&mut self, p: &Prepare) {
        self.u8(p.flags);
        self.lsn(p.prepare_lsn);
        self.lsn(p.end_lsn);
        self.i64(p.prepare_ts);
        self.u32(p.xid);
        self.cstr(&p.gid);
    }
}

/// The bytes the server sends for `msg` (with `xid`s present exactly when the message
/// carries one, i.e. inside a streamed transaction).
fn encode(msg: &LogicalMessage) -> Enc {
    let mut e = Enc::default();
    match msg {
        LogicalMessage::Begin(m) => {
            e.u8(b'B');
            e.lsn(m.final_lsn);
            e.i64(m.commit_ts);
            e.u32(m.xid);
        }
        LogicalMessage::Commit(m) => {
            e.u8(b'C');
            e.u8(m.flags);
            e.lsn(m.commit_lsn);
            e.lsn(m.end_lsn);
            e.i64(m.commit_ts);
        }
        LogicalMessage::Origin(m) => {
            e.u8(b'O');
            e.lsn(m.commit_lsn);
            e.cstr(&m.name);
        }
        LogicalMessage::Relation(m) => {
            e.u8(b'R');
            e.xid(m.xid);
            e.u32(m.id);
            e.cstr(&m.namespace);
            e.cstr(&m.name);
            e.u8(m.replica_identity.as_byte());
            e.count16(m.columns.len());
            for c in &m.columns {
                e.u8(u8::from(c.is_key));
                e.cstr(&c.name);
                e.u32(c.type_oid);
                e.i32(c.type_modifier);
            }
        }
        LogicalMessage::Type(m) => {
            e.u8(b'Y');
            e.xid(m.xid);
            e.u32(m.id);
            e.cstr(&m.namespace);
            e.cstr(&m.name);
        }
        LogicalMessage::Insert(m) => {
            e.u8(b'I');
            e.xid(m.xid);
            e.u32(m.relation_id);
            e.u8(b'N');
            e.tuple(&m.new);
        }
        LogicalMessage::Update(m) => {
            e.u8(b'U');
            e.xid(m.xid);
            e.u32(m.relation_id);
            if let Some(old) = &m.old {
                e.old(old);
            }
            e.u8(b'N');
            e.tuple(&m.new);
        }
        LogicalMessage::Delete(m) => {
            e.u8(b'D');
            e.xid(m.xid);
            e.u32(m.relation_id);
            e.old(&m.old);
        }
        LogicalMessage::Truncate(m) => {
            e.u8(b'T');
            e.xid(m.xid);
            e.len32(m.relation_ids.len());
            e.u8(u8::from(m.cascade) | u8::from(m.restart_identity) << 1);
            for &id in &m.relation_ids {
                e.u32(id);
            }
        }
        LogicalMessage::Message(m) => {
            e.u8(b'M');
            e.xid(m.xid);
            e.u8(u8::from(m.transactional));
            e.lsn(m.lsn);
            e.cstr(&m.prefix);
            e.value(&m.content);
        }
        LogicalMessage::StreamStart(m) => {
            e.u8(b'S');
            e.u32(m.xid);
            e.u8(u8::from(m.first_segment));
        }
        LogicalMessage::StreamStop => e.u8(b'E'),
        LogicalMessage::StreamCommit(m) => {
            e.u8(b'c');
            e.u32(m.xid);
            e.u8(m.flags);
            e.lsn(m.commit_lsn);
            e.lsn(m.end_lsn);
            e.i64(m.commit_ts);
        }
        LogicalMessage::StreamAbort(m) => {
            e.u8(b'A');
            e.u32(m.xid);
            e.u32(m.subxid);
            if let (Some(lsn), Some(ts)) = (m.abort_lsn, m.abort_ts) {
                e.lsn(lsn);
                e.i64(ts);
            }
        }
        LogicalMessage::BeginPrepare(m) => {
            e.u8(b'b');
            e.lsn(m.prepare_lsn);
            e.lsn(m.end_lsn);
            e.i64(m.prepare_ts);
            e.u32(m.xid);
            e.cstr(&m.gid);
        }
        LogicalMessage::Prepare(m) => {
            e.u8(b'P');
            e.prepare(m);
        }
        LogicalMessage::StreamPrepare(m) => {
            e.u8(b'p');
            e.prepare(m);
        }
        LogicalMessage::CommitPrepared(m) => {
            e.u8(b'K');
            e.u8(m.flags);
            e.lsn(m.commit_lsn);
            e.lsn(m.end_lsn);
            e.i64(m.commit_ts);
            e.u32(m.xid);
            e.cstr(&m.gid);
        }
        LogicalMessage::RollbackPrepared(m) => {
            e.u8(b'r');
            e.u8(m.flags);
            e.lsn(m.prepare_end_lsn);
            e.lsn(m.rollback_end_lsn);
            e.i64(m.prepare_ts);
            e.i64(m.rollback_ts);
            e.u32(m.xid);
            e.cstr(&m.gid);
        }
    }
    e
}

/// For messages whose layout depends on `in_stream` (a leading xid), the flag that matches
/// the message; `None` for messages laid out the same either way.
fn stream_flag(msg: &LogicalMessage) -> Option<bool> {
    let xid = match msg {
        LogicalMessage::Relation(m) => m.xid,
        LogicalMessage::Type(m) => m.xid,
        LogicalMessage::Insert(m) => m.xid,
        LogicalMessage::Update(m) => m.xid,
        LogicalMessage::Delete(m) => m.xid,
        LogicalMessage::Truncate(m) => m.xid,
        LogicalMessage::Message(m) => m.xid,
        _ => return None,
    };
    Some(xid.is_some())
}

/// The message kind a decode error names, if it names one.
fn error_kind(e: &DecodeError) -> Option<&'static str> {
    match e {
        DecodeError::Truncated { kind, .. }
        | DecodeError::UnknownTupleKind { kind, .. }
        | DecodeError::UnexpectedTag { kind, .. }
        | DecodeError::InvalidUtf8 { kind, .. }
        | DecodeError::MissingNul { kind, .. }
        | DecodeError::NegativeLength { kind, .. }
        | DecodeError::UnexpectedTrailing { kind, .. } => Some(kind),
        DecodeError::UnknownReplicaIdentity(_) => Some("Relation"),
        DecodeError::Empty | DecodeError::UnknownMessage(_) | DecodeError::UnknownCopyData(_) => {
            None
        }
    }
}

/// Every tuple of a decoded message.
fn tuples(msg: &LogicalMessage) -> Vec<&TupleData> {
    match msg {
        LogicalMessage::Insert(m) => vec![&m.new],
        LogicalMessage::Update(m) => {
            let mut t = vec![&m.new];
            t.extend(m.old.as_ref().map(OldTuple::tuple));
            t
        }
        LogicalMessage::Delete(m) => vec![m.old.tuple()],
        _ => Vec::new(),
    }
}

/// The checks that hold for any input: the result names the right message kind; values are
/// views into the input (the hot path copies nothing); vectors were not over-reserved
/// from a forged count; a decoded message re-encodes to something that decodes to itself.
fn check_decode(buf: &Bytes, in_stream: bool) -> Result<(), TestCaseError> {
    let result = decode(buf.clone(), in_stream);
    let tag_kind = buf.first().and_then(|&t| message_kind(t));
    match &result {
        Err(DecodeError::Empty) => prop_assert!(buf.is_empty()),
        Err(DecodeError::UnknownMessage(t)) => {
            prop_assert_eq!(Some(t), buf.first());
            prop_assert!(tag_kind.is_none());
        }
        Err(DecodeError::UnknownCopyData(_)) => prop_assert!(false, "CopyData error from decode"),
        Err(e) => {
            prop_assert_eq!(error_kind(e), tag_kind, "{}", e);
            // Errors must render (they end up in logs and the pipeline's stop reason).
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(m) => {
            prop_assert_eq!(Some(m.kind()), tag_kind);
            let range = buf.as_ptr_range();
            for t in tuples(m) {
                prop_assert!(t.0.capacity() <= t.0.len().max(buf.len()));
                for c in &t.0 {
                    if let ColumnData::Text(v) | ColumnData::Binary(v) = c {
                        let r = v.as_ptr_range();
                        prop_assert!(
                            v.is_empty() || (range.start <= r.start && r.end <= range.end),
                            "value copied out of the input buffer"
                        );
                    }
                }
            }
            if let LogicalMessage::Relation(r) = m {
                prop_assert!(r.columns.capacity() <= r.columns.len().max(buf.len()));
            }
            // Decoding is not injective (flag bytes keep only their defined bits), but what
            // it produced must survive a second trip unchanged.
            let again = Bytes::from(encode(m).buf);
            let in_stream = stream_flag(m).unwrap_or(in_stream);
            let redecoded = decode(again, in_stream);
            prop_assert_eq!(redecoded.as_ref(), Ok(m));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// A protocol name: any text without NUL (the wire terminator).
fn name() -> impl Strategy<Value = String> {
    "[^\\x00]{0,10}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn column() -> impl Strategy<Value = ColumnData> {
    prop_oneof![
        Just(ColumnData::Null),
        Just(ColumnData::UnchangedToast),
        payload().prop_map(ColumnData::Text),
        payload().prop_map(ColumnData::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = TupleData> {
    vec(column(), 0..6).prop_map(TupleData)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop::sample::select(vec![
        ReplicaIdentity::Default,
        ReplicaIdentity::Nothing,
        ReplicaIdentity::Full,
        ReplicaIdentity::Index,
    ])
}

fn prepare() -> impl Strategy<Value = Prepare> {
    (
        any::<u8>(),
        lsn(),
        lsn(),
        any::<i64>(),
        any::<u32>(),
        name(),
    )
        .prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_ts, xid, gid)| Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_ts,
                xid,
                gid,
            },
        )
}

/// Any valid message of any kind, with its `in_stream` flag.
fn message() -> impl Strategy<Value = (LogicalMessage, bool)> {
    use LogicalMessage as L;
    let xid = || proptest::option::of(any::<u32>());
    let kinds: Vec<BoxedStrategy<LogicalMessage>> = vec![
        (lsn(), any::<i64>(), any::<u32>())
            .prop_map(|(final_lsn, commit_ts, xid)| {
                L::Begin(Begin {
                    final_lsn,
                    commit_ts,
                    xid,
                })
            })
            .boxed(),
        (any::<u8>(), lsn(), lsn(), any::<i64>())
            .prop_map(|(flags, commit_lsn, end_lsn, commit_ts)| {
                L::Commit(Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                })
            })
            .boxed(),
        (lsn(), name())
            .prop_map(|(commit_lsn, name)| L::Origin(Origin { commit_lsn, name }))
            .boxed(),
        (
            xid(),
            any::<u32>(),
            name(),
            name(),
            replica_identity(),
            vec(
                (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
                    |(is_key, name, type_oid, type_modifier)| RelationColumn {
                        is_key,
                        name,
                        type_oid,
                        type_modifier,
                    },
                ),
                0..5,
            ),
        )
            .prop_map(|(xid, id, namespace, name, replica_identity, columns)| {
                L::Relation(Relation {
                    xid,
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            })
            .boxed(),
        (xid(), any::<u32>(), name(), name())
            .prop_map(|(xid, id, namespace, name)| {
                L::Type(Type {
                    xid,
                    id,
                    namespace,
                    name,
                })
            })
            .boxed(),
        (xid(), any::<u32>(), tuple())
            .prop_map(|(xid, relation_id, new)| {
                L::Insert(Insert {
                    xid,
                    relation_id,
                    new,
                })
            })
            .boxed(),
        (
            xid(),
            any::<u32>(),
            proptest::option::of(old_tuple()),
            tuple(),
        )
            .prop_map(|(xid, relation_id, old, new)| {
                L::Update(Update {
                    xid,
                    relation_id,
                    old,
                    new,
                })
            })
            .boxed(),
        (xid(), any::<u32>(), old_tuple())
            .prop_map(|(xid, relation_id, old)| {
                L::Delete(Delete {
                    xid,
                    relation_id,
                    old,
                })
            })
            .boxed(),
        (xid(), any::<bool>(), any::<bool>(), vec(any::<u32>(), 0..6))
            .prop_map(|(xid, cascade, restart_identity, relation_ids)| {
                L::Truncate(Truncate {
                    xid,
                    cascade,
                    restart_identity,
                    relation_ids,
                })
            })
            .boxed(),
        (xid(), any::<bool>(), lsn(), name(), payload())
            .prop_map(|(xid, transactional, lsn, prefix, content)| {
                L::Message(DecodingMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            })
            .boxed(),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| L::StreamStart(StreamStart { xid, first_segment }))
            .boxed(),
        Just(L::StreamStop).boxed(),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>())
            .prop_map(|(xid, flags, commit_lsn, end_lsn, commit_ts)| {
                L::StreamCommit(StreamCommit {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                })
            })
            .boxed(),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of((lsn(), any::<i64>())),
        )
            .prop_map(|(xid, subxid, abort)| {
                L::StreamAbort(StreamAbort {
                    xid,
                    subxid,
                    abort_lsn: abort.map(|a| a.0),
                    abort_ts: abort.map(|a| a.1),
                })
            })
            .boxed(),
        (lsn(), lsn(), any::<i64>(), any::<u32>(), name())
            .prop_map(|(prepare_lsn, end_lsn, prepare_ts, xid, gid)| {
                L::BeginPrepare(BeginPrepare {
                    prepare_lsn,
                    end_lsn,
                    prepare_ts,
                    xid,
                    gid,
                })
            })
            .boxed(),
        prepare().prop_map(L::Prepare).boxed(),
        prepare().prop_map(L::StreamPrepare).boxed(),
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<u32>(),
            name(),
        )
            .prop_map(|(flags, commit_lsn, end_lsn, commit_ts, xid, gid)| {
                L::CommitPrepared(CommitPrepared {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                    xid,
                    gid,
                })
            })
            .boxed(),
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            name(),
        )
            .prop_map(
                |(flags, prepare_end_lsn, rollback_end_lsn, prepare_ts, rollback_ts, xid, gid)| {
                    L::RollbackPrepared(RollbackPrepared {
                        flags,
                        prepare_end_lsn,
                        rollback_end_lsn,
                        prepare_ts,
                        rollback_ts,
                        xid,
                        gid,
                    })
                },
            )
            .boxed(),
    ];
    (Union::new(kinds), any::<bool>()).prop_map(|(m, free)| {
        let in_stream = stream_flag(&m).unwrap_or(free);
        (m, in_stream)
    })
}

/// Every message tag, plus the CopyData tags, to bias arbitrary bytes past the first byte.
const TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrpwk";

/// Arbitrary bytes, half of them starting with a known tag.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::option::of(prop::sample::select(TAGS)),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(tag, mut rest)| {
            if let Some(t) = tag {
                rest.insert(0, t);
            }
            rest
        })
}

/// A new value for a count/length field.
#[derive(Debug, Clone, Copy)]
enum FieldValue {
    Set(u32),
    /// Added to the current value (wrapping), to land just off the true count.
    Add(i32),
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        prop::sample::select(vec![
            0u32,
            1,
            0x7f,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
        ])
        .prop_map(FieldValue::Set),
        (-3i32..=3).prop_map(FieldValue::Add),
        any::<u32>().prop_map(FieldValue::Set),
    ]
}

/// One way to damage an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only the first `index(len + 1)` bytes.
    Truncate(Index),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Overwrite one recorded count/length field.
    Field(Index, FieldValue),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Overwrite 4 bytes anywhere with an extreme (a misaligned "length").
    Word(Index, FieldValue),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes the decoder dispatches on, so a set byte often changes the path it takes.
    let interesting = prop_oneof![
        prop::sample::select(b"ntubKONdfix\0\x01\x7f\x80\xff".to_vec()),
        any::<u8>()
    ];
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<Index>(), interesting).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        3 => (any::<Index>(), field_value()).prop_map(|(i, v)| Mutation::Field(i, v)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..6)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..6).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), field_value()).prop_map(|(i, v)| Mutation::Word(i, v)),
    ]
}

fn write_field(buf: &mut [u8], at: usize, width: usize, v: FieldValue) {
    let Some(slot) = buf.get_mut(at..at + width) else {
        return;
    };
    let current = match width {
        2 => u32::from(u16::from_be_bytes([slot[0], slot[1]])),
        _ => u32::from_be_bytes([slot[0], slot[1], slot[2], slot[3]]),
    };
    let new = match v {
        FieldValue::Set(n) => n,
        FieldValue::Add(d) => current.wrapping_add_signed(d),
    };
    match width {
        // Int16 counts get the low half (0x8000.. is where i16 turns negative).
        2 => slot.copy_from_slice(&(new as u16).to_be_bytes()),
        _ => slot.copy_from_slice(&new.to_be_bytes()),
    }
}

/// Applies `muts` in order. Field positions refer to the original layout; after an insert
/// or removal they may land elsewhere, which is just another mutation.
fn mutate(enc: &Enc, muts: &[Mutation]) -> Vec<u8> {
    let mut b = enc.buf.clone();
    for m in muts {
        let len = b.len();
        match m {
            Mutation::Truncate(i) => b.truncate(i.index(len + 1)),
            Mutation::FlipBit(i, bit) if len > 0 => b[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, v) if len > 0 => b[i.index(len)] = *v,
            Mutation::Field(i, v) if !enc.fields.is_empty() => {
                let f = enc.fields[i.index(enc.fields.len())];
                write_field(&mut b, f.at, f.width, *v);
            }
            // Without recorded fields, hit the bytes right after the tag.
            Mutation::Field(_, v) => write_field(&mut b, 1, 4, *v),
            Mutation::Insert(i, bytes) => {
                let at = i.index(len + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                b.drain(at..(at + n).min(len));
            }
            Mutation::Word(i, v) if len > 0 => write_field(&mut b, i.index(len), 4, *v),
            _ => {}
        }
    }
    b
}

// ---------------------------------------------------------------------------
// Targets

#[test]
fn fuzz_copy_data_arbitrary_bytes() {
    fuzz("copy_data_arbitrary_bytes", file!(), raw_bytes(), |bytes| {
        let buf = Bytes::from(bytes);
        match parse_copy_data(buf.clone()) {
            Ok(ReplicationMessage::XLogData { data, .. }) => {
                prop_assert_eq!(buf[0], b'w');
                prop_assert_eq!(&data[..], &buf[25..]);
                // The payload is a view, not a copy.
                prop_assert!(data.is_empty() || data.as_ptr() == buf[25..].as_ptr());
            }
            Ok(ReplicationMessage::PrimaryKeepalive { .. }) => {
                prop_assert_eq!((buf[0], buf.len()), (b'k', 18));
            }
            Err(DecodeError::Empty) => prop_assert!(buf.is_empty()),
            Err(DecodeError::UnknownCopyData(t)) => {
                prop_assert!(t != b'w' && t != b'k');
                prop_assert_eq!(Some(&t), buf.first());
            }
            Err(e) => {
                let want = if buf[0] == b'w' {
                    "XLogData"
                } else {
                    "PrimaryKeepalive"
                };
                prop_assert_eq!(error_kind(&e), Some(want), "{}", e);
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_copy_data_round_trip() {
    let msg = prop_oneof![
        (lsn(), lsn(), any::<i64>(), payload()).prop_map(
            |(wal_start, wal_end, send_time, data)| {
                ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data,
                }
            }
        ),
        (lsn(), any::<i64>(), any::<bool>()).prop_map(|(wal_end, send_time, reply_requested)| {
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                send_time,
                reply_requested,
            }
        }),
    ];
    fuzz("copy_data_round_trip", file!(), msg, |msg| {
        let mut e = Enc::default();
        let header = match &msg {
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data,
            } => {
                e.u8(b'w');
                e.lsn(*wal_start);
                e.lsn(*wal_end);
                e.i64(*send_time);
                e.buf.extend_from_slice(data);
                25
            }
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                send_time,
                reply_requested,
            } => {
                e.u8(b'k');
                e.lsn(*wal_end);
                e.i64(*send_time);
                e.u8(u8::from(*reply_requested));
                18
            }
        };
        let buf = Bytes::from(e.buf);
        prop_assert_eq!(parse_copy_data(buf.clone()), Ok(msg.clone()));
        // Short headers are errors, never a message with made-up fields.
        for cut in 0..header {
            prop_assert!(parse_copy_data(buf.slice(..cut)).is_err());
        }
        if let ReplicationMessage::PrimaryKeepalive { .. } = msg {
            let mut long = buf.to_vec();
            long.push(0);
            prop_assert_eq!(
                parse_copy_data(Bytes::from(long)),
                Err(DecodeError::UnexpectedTrailing {
                    kind: "PrimaryKeepalive",
                    remaining: 1
                })
            );
        }
        Ok(())
    });
}

#[test]
fn fuzz_decode_arbitrary_bytes() {
    fuzz(
        "decode_arbitrary_bytes",
        file!(),
        (raw_bytes(), any::<bool>()),
        |(bytes, in_stream)| check_decode(&Bytes::from(bytes), in_stream),
    );
}

/// decode(encode(m)) == m for every kind, and every strict prefix is an error naming the
/// message kind (a short read never yields a message with made-up fields).
#[test]
fn fuzz_decode_round_trip_and_every_prefix() {
    fuzz(
        "decode_round_trip_and_every_prefix",
        file!(),
        message(),
        |(msg, in_stream)| {
            let buf = Bytes::from(encode(&msg).buf);
            prop_assert_eq!(decode(buf.clone(), in_stream), Ok(msg.clone()));
            check_decode(&buf, in_stream)?;
            for cut in 0..buf.len() {
                match decode(buf.slice(..cut), in_stream) {
                    Err(DecodeError::Empty) => prop_assert_eq!(cut, 0),
                    Err(e) => prop_assert_eq!(error_kind(&e), Some(msg.kind()), "{}", e),
                    // Only Stream Abort's protocol-4 tail is optional.
                    Ok(LogicalMessage::StreamAbort(a)) if cut == 9 => {
                        prop_assert_eq!(a.abort_lsn, None);
                    }
                    Ok(m) => prop_assert!(false, "prefix {} decoded to {:?}", cut, m),
                }
            }
            Ok(())
        },
    );
}

/// Valid encodings, damaged: the decoder must still only return messages or typed errors,
/// and everything `check_decode` demands.
#[test]
fn fuzz_decode_mutated_messages() {
    fuzz(
        "decode_mutated_messages",
        file!(),
        (message(), vec(mutation(), 1..5), any::<bool>()),
        |((msg, in_stream), muts, flip_stream)| {
            let enc = encode(&msg);
            let buf = Bytes::from(mutate(&enc, &muts));
            check_decode(&buf, in_stream ^ flip_stream)?;
            // The same damaged payload as it arrives: inside an XLogData envelope.
            let mut frame = vec![b'w'];
            frame.extend_from_slice(&[0; 24]);
            frame.extend_from_slice(&buf);
            match parse_copy_data(Bytes::from(frame)) {
                Ok(ReplicationMessage::XLogData { data, .. }) => {
                    prop_assert_eq!(&data, &buf);
                    check_decode(&data, in_stream)?;
                }
                other => prop_assert!(false, "envelope: {:?}", other),
            }
            Ok(())
        },
    );
}

/// Each count and length field on its own, at every extreme: the decoder must reject or
/// accept without over-reading, over-allocating or panicking.
#[test]
fn fuzz_decode_forged_counts() {
    fuzz(
        "decode_forged_counts",
        file!(),
        (message(), any::<Index>(), field_value()),
        |((msg, in_stream), which, value)| {
            let enc = encode(&msg);
            if enc.fields.is_empty() {
                return Ok(());
            }
            let f = enc.fields[which.index(enc.fields.len())];
            let mut b = enc.buf.clone();
            write_field(&mut b, f.at, f.width, value);
            check_decode(&Bytes::from(b), in_stream)
        },
    );
}
