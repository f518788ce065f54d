use std::sync::Arc;

use super::from_wit::uuid;
use super::to_wit::uuid_text;
use super::*;
use crate::change::{Change, Column, Op, Row, Table};
use crate::lsn::Lsn;
use crate::pgoutput::ReplicaIdentity;
use crate::transform::runtime::wit;
use crate::value::{builtin_type, oid, PgText, Value};

fn table() -> Arc<Table> {
    Arc::new(Table {
        id: 7,
        schema: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            Column {
                name: "id".into(),
                type_oid: oid::INT8,
                type_info: builtin_type(oid::INT8).unwrap(),
                is_key: true,
            },
            Column {
                name: "v".into(),
                type_oid: oid::TEXT,
                type_info: builtin_type(oid::TEXT).unwrap(),
                is_key: false,
            },
        ],
    })
}

fn change(values: Vec<Value>) -> Change {
    Change {
        op: Op::Insert,
        commit_lsn: Lsn(0x100),
        ordinal: 2,
        split: 0,
        lsn: Lsn(0xF0),
        xid: 9,
        commit_ts: 1_000,
        table: Some(table()),
        before: None,
        after: Some(Row(values)),
        truncate: None,
        message: None,
        routing: None,
        read: None,
        origin: None,
    }
}

#[test]
fn round_trip_keeps_values_and_the_table() {
    let values = vec![
        Value::Int8(i64::MIN),
        Value::Text(PgText::from("héllo".to_string())),
    ];
    let c = change(values.clone());
    let mut fg = FromGuest::default();
    let back = fg
        .convert(std::slice::from_ref(&c), vec![to_wit(&c)])
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].after, Some(Row(values)));
    assert!(Arc::ptr_eq(
        back[0].table.as_ref().unwrap(),
        c.table.as_ref().unwrap()
    ));
    assert_eq!(back[0].id(), c.id());
    assert_eq!(back[0].commit_ts, c.commit_ts);
}

#[test]
fn epochs_move_to_unix_and_back_but_infinities_stay() {
    assert_eq!(date_to_unix(0), 10_957);
    assert_eq!(date_from_unix(date_to_unix(-5)), -5);
    assert_eq!(date_to_unix(DATE_POS_INFINITY), DATE_POS_INFINITY);
    assert_eq!(ts_to_unix(0), EPOCH_MICROS);
    assert_eq!(ts_to_unix(TS_NEG_INFINITY), TS_NEG_INFINITY);
    assert_eq!(ts_from_unix(ts_to_unix(123)), 123);
}

#[test]
fn splits_get_distinct_stable_ids() {
    let c = change(vec![Value::Int8(1), Value::Null]);
    let w = to_wit(&c);
    let mut fg = FromGuest::default();
    let out = fg
        .convert(std::slice::from_ref(&c), vec![w.clone(), w.clone(), w])
        .unwrap();
    let ids: Vec<String> = out.iter().map(|c| c.id().to_string()).collect();
    assert_eq!(
        ids,
        [
            "0000000000000100-00000002",
            "0000000000000100-00000002.1",
            "0000000000000100-00000002.2"
        ]
    );
}

#[test]
fn reshaped_rows_get_a_new_table_once() {
    let c = change(vec![Value::Int8(1), Value::Null]);
    let mut w = to_wit(&c);
    let after = w.after.as_mut().unwrap();
    after[1].type_oid = oid::BOOL;
    after[1].value = wit::Value::Boolean(true);
    after.push(wit::Column {
        name: "extra".into(),
        type_oid: 0,
        is_key: false,
        value: wit::Value::Int4(5),
    });
    let mut fg = FromGuest::default();
    let out = fg
        .convert(std::slice::from_ref(&c), vec![w.clone(), w])
        .unwrap();
    let t0 = out[0].table.as_ref().unwrap();
    assert!(Arc::ptr_eq(t0, out[1].table.as_ref().unwrap()));
    assert_eq!(t0.columns.len(), 3);
    assert_eq!(t0.columns[2].type_oid, oid::INT4);
    assert_eq!(t0.columns[1].type_oid, oid::BOOL);
}

#[test]
fn bad_values_from_a_guest_are_errors() {
    for (bad, needle) in [
        (wit::Value::Numeric("1e5".into()), "invalid numeric"),
        (wit::Value::Numeric("".into()), "invalid numeric"),
        (wit::Value::Json("{".into()), "invalid json"),
        (wit::Value::Uuid("nope".into()), "invalid uuid"),
        (wit::Value::Time(-1), "out of range"),
    ] {
        let c = change(vec![Value::Int8(1), Value::Null]);
        let mut w = to_wit(&c);
        w.after.as_mut().unwrap()[1].value = bad;
        let err = FromGuest::default()
            .convert(std::slice::from_ref(&c), vec![w])
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let c = change(vec![Value::Int8(1), Value::Null]);
    let mut w = to_wit(&c);
    w.id = "x".into();
    assert!(FromGuest::default()
        .convert(std::slice::from_ref(&c), vec![w])
        .is_err());
}

#[test]
fn uuid_text_round_trips() {
    let u = [
        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
        0x11,
    ];
    let s = uuid_text(&u);
    assert_eq!(s, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(uuid(&s).unwrap(), u);
}

/// A 0.1 module sees a read as an insert with the same id and values, and what it hands
/// back converts up unchanged (but for `snapshot`, which 0.1 does not have).
#[test]
fn wit_0_1_compat_moves_every_field() {
    use crate::change::{ReadKey, SnapshotRead};
    let mut c = change(vec![
        Value::Int8(5),
        Value::Text(PgText::from("x".to_string())),
    ]);
    c.op = Op::Read;
    c.read = Some(SnapshotRead {
        key: ReadKey {
            snapshot: 3,
            key: 0xabc,
        },
        last: true,
    });
    let w = to_wit(&c);
    assert_eq!(w.op, wit::Op::Read);
    assert_eq!(w.snapshot.map(|s| (s.id, s.last)), Some((3, true)));
    let old = compat::down(w.clone());
    assert_eq!(
        old.op,
        crate::transform::runtime::v01::cdc::pipeline::types::Op::Insert
    );
    assert_eq!(old.id, w.id);
    let back = compat::up(old);
    assert_eq!(back.op, wit::Op::Insert);
    assert_eq!(format!("{:?}", back.after), format!("{:?}", w.after));
    assert!(back.snapshot.is_none());
    let out = FromGuest::default().convert(&[c], vec![back]).unwrap();
    assert_eq!(out[0].op, Op::Read);
    assert_eq!(
        out[0].read.map(|r| (r.key.snapshot, r.last)),
        Some((3, true))
    );
}

/// A read whose id is not a read id is refused.
#[test]
fn a_read_needs_a_read_id() {
    let c = change(vec![Value::Int8(5), Value::Null]);
    let mut w = to_wit(&c);
    w.op = wit::Op::Read;
    let err = FromGuest::default().convert(&[c], vec![w]).unwrap_err();
    assert!(err.message.contains("needs a read id"), "{err}");
}
