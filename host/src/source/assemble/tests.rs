//! The assembler on hand-built pgoutput messages: no server, no socket.

use bytes::Bytes;

use super::*;
use crate::pgoutput::{
    Begin, ColumnData, Commit, Insert, RelationColumn, ReplicaIdentity, TupleData,
};
use crate::value::{builtin_type, oid, Value};

const REL: u32 = 16_384;

/// `t (id int4)` as relation `REL`.
fn with_table(a: &mut Assembler) {
    let rel = Relation {
        xid: None,
        id: REL,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![RelationColumn {
            is_key: true,
            name: "id".into(),
            type_oid: oid::INT4,
            type_modifier: -1,
        }],
    };
    a.relation(rel, vec![builtin_type(oid::INT4).unwrap()], 40);
}

fn begin(final_lsn: u64, commit_ts: i64, xid: u32) -> LogicalMessage {
    LogicalMessage::Begin(Begin {
        final_lsn: Lsn(final_lsn),
        commit_ts,
        xid,
    })
}

fn commit(commit_lsn: u64, commit_ts: i64) -> LogicalMessage {
    LogicalMessage::Commit(Commit {
        flags: 0,
        commit_lsn: Lsn(commit_lsn),
        end_lsn: Lsn(commit_lsn + 8),
        commit_ts,
    })
}

fn insert(id: i32) -> LogicalMessage {
    LogicalMessage::Insert(Insert {
        xid: None,
        relation_id: REL,
        new: TupleData(vec![ColumnData::Text(Bytes::from(id.to_string()))]),
    })
}

fn non_transactional(lsn: u64, prefix: &str) -> LogicalMessage {
    LogicalMessage::Message(pgoutput::DecodingMessage {
        xid: None,
        transactional: false,
        lsn: Lsn(lsn),
        prefix: prefix.into(),
        content: Bytes::from_static(b"hello"),
    })
}

/// Feeds one transaction of `ids` committing at `commit_lsn`, one message per WAL step.
fn txn(a: &mut Assembler, commit_lsn: u64, ids: std::ops::Range<i32>) -> Result<(), SourceError> {
    a.apply(begin(commit_lsn, 1_000, 7), Lsn(commit_lsn - 100), 21)?;
    for id in ids {
        a.apply(insert(id), Lsn(commit_lsn - 50), 20)?;
    }
    a.apply(commit(commit_lsn, 1_000), Lsn(commit_lsn), 26)
}

fn ids(b: &Batch) -> Vec<i32> {
    b.changes
        .iter()
        .map(|c| match c.after.as_ref().map(|r| &r.0[..]) {
            Some([Value::Int4(id)]) => *id,
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

#[test]
fn whole_transactions_make_one_batch_with_the_commit_s_checkpoint() {
    let mut a = Assembler::new(Lsn::ZERO, 100, usize::MAX);
    with_table(&mut a);
    txn(&mut a, 1_000, 0..3).unwrap();
    txn(&mut a, 2_000, 3..4).unwrap();
    assert!(a.has_complete() && !a.is_full());
    let b = a.take_complete();
    assert_eq!((b.seq, ids(&b)), (1, vec![0, 1, 2, 3]));
    assert_eq!(b.checkpoint, Some(Lsn(2_008)));
    // Ordinals count within each transaction; ids come from the commit LSN.
    let ordinals: Vec<_> = b
        .changes
        .iter()
        .map(|c| (c.commit_lsn.0, c.ordinal))
        .collect();
    assert_eq!(ordinals, [(1_000, 0), (1_000, 1), (1_000, 2), (2_000, 0)]);
    assert!(a.is_drained() && a.last_seq() == 1);
}

/// A transaction larger than `max_changes` is split; only the batch with its commit
/// carries a checkpoint.
#[test]
fn a_transaction_is_split_at_max_changes_and_only_its_last_part_is_a_checkpoint() {
    let mut a = Assembler::new(Lsn::ZERO, 3, usize::MAX);
    with_table(&mut a);
    a.apply(begin(5_000, 1_000, 7), Lsn(4_000), 21).unwrap();
    let mut batches = Vec::new();
    for id in 0..7 {
        a.apply(insert(id), Lsn(4_100), 20).unwrap();
        if a.is_full() {
            batches.push(a.take_full());
        }
    }
    assert!(!a.has_complete(), "the transaction is still open");
    a.apply(commit(5_000, 1_000), Lsn(5_000), 26).unwrap();
    assert!(a.has_complete());
    batches.push(a.take_complete());
    let parts: Vec<_> = batches
        .iter()
        .map(|b| (b.seq, ids(b), b.checkpoint))
        .collect();
    assert_eq!(
        parts,
        [
            (1, vec![0, 1, 2], None),
            (2, vec![3, 4, 5], None),
            (3, vec![6], Some(Lsn(5_008))),
        ]
    );
    // One transaction across the batches: ordinals continue.
    let ordinals: Vec<u32> = batches
        .iter()
        .flat_map(|b| b.changes.iter().map(|c| c.ordinal))
        .collect();
    assert_eq!(ordinals, (0..7).collect::<Vec<_>>());
}

/// Whole transactions are handed over before the open one is split.
#[test]
fn a_full_batch_hands_over_whole_transactions_first() {
    let mut a = Assembler::new(Lsn::ZERO, 4, usize::MAX);
    with_table(&mut a);
    txn(&mut a, 1_000, 0..2).unwrap();
    a.apply(begin(2_000, 1_000, 8), Lsn(1_100), 21).unwrap();
    a.apply(insert(2), Lsn(1_200), 20).unwrap();
    a.apply(insert(3), Lsn(1_300), 20).unwrap();
    assert!(a.is_full());
    let b = a.take_full();
    assert_eq!((ids(&b), b.checkpoint), (vec![0, 1], Some(Lsn(1_008))));
    assert!(!a.is_full() && !a.has_complete());
}

/// After a restart from confirmed position `start_lsn`, a transaction committing below it
/// (Postgres may resend the boundary one) is skipped entirely, checkpoint included.
#[test]
fn transactions_below_the_confirmed_position_are_skipped() {
    let mut a = Assembler::new(Lsn(1_500), 100, usize::MAX);
    with_table(&mut a);
    txn(&mut a, 1_000, 0..3).unwrap();
    a.apply(non_transactional(1_200, "old"), Lsn(1_200), 30)
        .unwrap();
    assert!(!a.has_complete() && a.is_drained());
    txn(&mut a, 2_000, 3..5).unwrap();
    let b = a.take_complete();
    assert_eq!((ids(&b), b.checkpoint), (vec![3, 4], Some(Lsn(2_008))));
}

/// A non-transactional message stands alone: its own LSN as commit LSN, ordinal 0,
/// complete at once (no checkpoint: it has no commit), even inside another transaction's
/// gap.
#[test]
fn a_non_transactional_message_stands_alone() {
    let mut a = Assembler::new(Lsn::ZERO, 100, usize::MAX);
    a.apply(non_transactional(3_000, "audit"), Lsn(3_000), 30)
        .unwrap();
    assert!(a.has_complete());
    let b = a.take_complete();
    assert_eq!(b.checkpoint, None);
    let [c] = &b.changes[..] else {
        panic!("{:?}", b.changes)
    };
    assert_eq!(
        (c.op, c.commit_lsn, c.ordinal),
        (Op::Message, Lsn(3_000), 0)
    );
    let m = c.message.as_ref().unwrap();
    assert_eq!((m.prefix.as_str(), m.transactional), ("audit", false));
    assert_eq!(&m.content[..], b"hello");
    assert_eq!(c.commit_ts, NON_TRANSACTIONAL_COMMIT_TS);
}

/// The same non-transactional message gives the same change whether the stream saw
/// transactions before it (first delivery) or starts right before it (the replay after a
/// crash), and whatever the time is.
#[test]
fn a_non_transactional_message_is_the_same_on_replay() {
    let render = |c: &Change| {
        let mut out = Vec::new();
        crate::encode::json::write_change(c, &mut out);
        String::from_utf8(out).unwrap()
    };
    let mut first = Assembler::new(Lsn::ZERO, 100, usize::MAX);
    with_table(&mut first);
    txn(&mut first, 1_000, 0..1).unwrap();
    first
        .apply(non_transactional(3_000, "audit"), Lsn(3_000), 30)
        .unwrap();
    let first = first.take_complete();

    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut replay = Assembler::new(Lsn(2_000), 100, usize::MAX);
    replay
        .apply(non_transactional(3_000, "audit"), Lsn(3_000), 30)
        .unwrap();
    let replay = replay.take_complete();

    let delivered = first.changes.last().unwrap();
    assert_eq!(render(delivered), render(&replay.changes[0]));
    assert!(
        render(delivered).contains(r#""commit_ts":"2000-01-01T00:00:00+00:00""#),
        "{}",
        render(delivered)
    );
}

#[test]
fn protocol_errors() {
    let mut a = Assembler::new(Lsn::ZERO, 100, usize::MAX);
    assert!(matches!(
        a.apply(commit(1_000, 0), Lsn(1_000), 26),
        Err(SourceError::Protocol(_))
    ));
    assert!(matches!(
        a.apply(insert(1), Lsn(1_000), 20),
        Err(SourceError::Protocol(_))
    ));
    a.apply(begin(1_000, 0, 1), Lsn(900), 21).unwrap();
    assert!(matches!(
        a.apply(insert(1), Lsn(950), 20),
        Err(SourceError::UnknownRelation {
            relation_id: REL,
            ..
        })
    ));
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
        read: None,
        origin: None,
    }
}

/// Wide rows close a batch by bytes long before `max_changes`; a whole transaction is
/// handed over with its bytes, the open one keeps its own.
#[test]
fn batches_close_by_bytes_and_keep_the_open_transaction_s_bytes() {
    let s = Limits {
        max_changes: 1000,
        max_batch_bytes: 10_000,
    };
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

/// The assembler counts every message's bytes while changes hold them, and forgets them
/// when nothing does (a skipped transaction, a relation).
#[test]
fn message_bytes_are_counted_only_while_changes_hold_them() {
    let mut a = Assembler::new(Lsn(1_500), 100, 1_000_000);
    with_table(&mut a);
    assert_eq!(a.pending.bytes, 0);
    txn(&mut a, 1_000, 0..3).unwrap(); // skipped
    assert_eq!(a.pending.bytes, 0);
    a.apply(begin(2_000, 0, 1), Lsn(1_900), 21).unwrap();
    // Nothing holds the Begin's bytes yet.
    assert_eq!(a.pending.bytes, 0);
    a.apply(insert(1), Lsn(1_950), 20).unwrap();
    assert_eq!(a.pending.bytes, 20 + CHANGE_OVERHEAD + VALUE_OVERHEAD);
    a.ignore(10);
    assert_eq!(a.pending.bytes, 30 + CHANGE_OVERHEAD + VALUE_OVERHEAD);
}

/// A snapshot chunk's reads join the open transaction batch by batch (`max_changes` each),
/// in order, with ordinals after the transaction's own changes; the commit that follows
/// them closes the last batch.
#[test]
fn a_chunk_s_reads_travel_in_batches_of_max_changes() {
    let mut a = Assembler::new(Lsn::ZERO, 4, usize::MAX);
    with_table(&mut a);
    let table = Arc::clone(a.relations.get(&REL).unwrap());
    a.apply(begin(9_000, 1_000, 7), Lsn(8_000), 21).unwrap();
    a.apply(insert(100), Lsn(8_100), 20).unwrap();
    let rows: Vec<(u128, Row)> = (0..10)
        .map(|id| (id as u128, Row(vec![Value::Int4(id)])))
        .collect();
    assert_eq!(
        a.push_reads(&table, 1, rows, Some(9), Lsn(8_200), 1_000),
        10
    );
    let mut batches = Vec::new();
    while a.is_full() {
        batches.push(a.take_full());
    }
    a.apply(commit(9_000, 1_000), Lsn(9_000), 26).unwrap();
    batches.push(a.take_complete());
    let parts: Vec<_> = batches
        .iter()
        .map(|b| (ids(b), b.checkpoint, b.continues))
        .collect();
    assert_eq!(
        parts,
        [
            (vec![100, 0, 1, 2], None, true),
            (vec![3, 4, 5, 6], None, true),
            (vec![7, 8, 9], Some(Lsn(9_008)), false),
        ]
    );
    let reads: Vec<_> = batches
        .iter()
        .flat_map(|b| &b.changes)
        .filter_map(|c| c.read.map(|r| (c.ordinal, r.key.key, r.last)))
        .collect();
    assert_eq!(reads.len(), 10);
    assert!(reads
        .iter()
        .enumerate()
        .all(|(i, &(ordinal, key, last))| ordinal == i as u32 + 1
            && key == i as u128
            && last == (i == 9)));
    assert!(a.is_drained());
}
