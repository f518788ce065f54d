use std::sync::Arc;

use super::*;
use crate::change::{Before, Change, Column, DecodingMessage, Op, Row, Table};
use crate::lsn::Lsn;
use crate::pgoutput::ReplicaIdentity;
use crate::value::{builtin_type, oid, PgText, Value};

fn table(name: &str) -> Arc<Table> {
    let col = |name: &str, type_oid: u32, is_key: bool| Column {
        name: name.into(),
        type_oid,
        type_info: builtin_type(type_oid).unwrap(),
        is_key,
    };
    Arc::new(Table {
        id: 7,
        schema: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Full,
        columns: vec![col("id", oid::INT8, true), col("v", oid::VARCHAR, false)],
    })
}

/// The text of a text value, for comparisons (the WIT types have no `PartialEq`).
fn wtext(v: Option<wit::Value>) -> Option<String> {
    match v {
        Some(wit::Value::Text(t)) => Some(t),
        other => panic!("not text: {other:?}"),
    }
}

fn text(s: &str) -> Value {
    Value::Text(PgText::from(s.to_string()))
}

fn change(t: &Arc<Table>, op: Op, ordinal: u32, id: i64, v: &str) -> Change {
    let row = Row(vec![Value::Int8(id), text(v)]);
    Change {
        op,
        commit_lsn: Lsn(0x100),
        ordinal,
        split: 0,
        lsn: Lsn(0xF0),
        xid: 9,
        commit_ts: 1_000,
        table: Some(Arc::clone(t)),
        before: matches!(op, Op::Update | Op::Delete).then(|| (Before::Full, row.clone())),
        after: (op != Op::Delete).then_some(row),
        truncate: None,
        message: None,
        routing: None,
        read: None,
        origin: None,
    }
}

fn message(ordinal: u32) -> Change {
    Change {
        op: Op::Message,
        table: None,
        before: None,
        after: None,
        message: Some(DecodingMessage {
            prefix: "p".into(),
            content: bytes::Bytes::from_static(b"x"),
            transactional: true,
        }),
        ..change(&table("x"), Op::Insert, ordinal, 0, "")
    }
}

/// users, orders, a message, users again.
fn batch() -> (Arc<Table>, Arc<Table>, Changes) {
    let (users, orders) = (table("users"), table("orders"));
    let changes = Changes::new(vec![
        change(&users, Op::Insert, 0, 1, "a"),
        change(&orders, Op::Update, 1, 2, "b"),
        message(2),
        change(&users, Op::Delete, 3, 3, "c"),
    ]);
    (users, orders, changes)
}

#[test]
fn each_table_is_described_once_and_changes_refer_to_it() {
    let (_, _, b) = batch();
    assert_eq!(b.rel_of, vec![0, 1, NO_RELATION, 0]);
    assert_eq!(b.relations.len(), 2);
    assert_eq!(&*b.relations[0].name, "users");
    let info = b.info(1).unwrap();
    assert_eq!(info.id, "0000000000000100-00000001");
    assert_eq!(info.relation, Some(1));
    assert!(info.has_before && info.before_is_full && info.has_after);
    let info = b.info(2).unwrap();
    assert_eq!(info.relation, None);
    assert_eq!(info.message.unwrap().prefix, "p");
}

#[test]
fn an_edit_is_seen_by_later_reads_and_applied_only_on_success() {
    let (_, _, mut b) = batch();
    b.set(0, 1, wit::Value::Text("A".into()), true)
        .unwrap()
        .unwrap();
    assert_eq!(wtext(b.value(0, 1, true).unwrap()).as_deref(), Some("A"));
    let row = b.row(0, true).unwrap().unwrap();
    assert_eq!(wtext(row.into_iter().nth(1)).as_deref(), Some("A"));
    // The old row is another image: untouched.
    b.set(1, 1, wit::Value::Text("B".into()), false)
        .unwrap()
        .unwrap();
    assert_eq!(wtext(b.value(1, 1, true).unwrap()).as_deref(), Some("b"));
    assert_eq!(wtext(b.value(1, 1, false).unwrap()).as_deref(), Some("B"));
    // After a failed call the host takes the batch back as it came in.
    let unedited = b.into_unedited();
    assert_eq!(unedited[0].after.as_ref().unwrap().0[1], text("a"));
    assert_eq!(unedited[1].before.as_ref().unwrap().1 .0[1], text("b"));
}

#[test]
fn edits_apply_discard_route_headers_and_keep_compatible_types() {
    let (users, orders, mut b) = batch();
    b.set(0, 1, wit::Value::Text("A".into()), true)
        .unwrap()
        .unwrap();
    b.edit(3).unwrap().discard = true;
    b.routing(1).unwrap().route = Some("r.orders".into());
    b.routing(1)
        .unwrap()
        .headers
        .push(("x-a".into(), "1".into()));
    let out = b.into_edited(&mut Shapes::default());
    assert_eq!(out.len(), 3, "the delete was discarded");
    assert_eq!(out[0].after.as_ref().unwrap().0[1], text("A"));
    // Text in a varchar column: the column keeps its type and the very table.
    assert!(Arc::ptr_eq(out[0].table.as_ref().unwrap(), &users));
    assert!(Arc::ptr_eq(out[1].table.as_ref().unwrap(), &orders));
    let r = out[1].routing.as_deref().unwrap();
    assert_eq!(r.route.as_deref(), Some("r.orders"));
    assert_eq!(r.headers, vec![("x-a".to_string(), "1".to_string())]);
    assert_eq!(out[2].op, Op::Message);
}

#[test]
fn a_value_of_another_type_retypes_the_column_once_per_table() {
    let users = table("users");
    let mut b = Changes::new(vec![
        change(&users, Op::Insert, 0, 1, "a"),
        change(&users, Op::Insert, 1, 2, "b"),
        change(&users, Op::Insert, 2, 3, "c"),
    ]);
    for i in 0..2 {
        b.set(i, 0, wit::Value::Text("***".into()), true)
            .unwrap()
            .unwrap();
    }
    let mut shapes = Shapes::default();
    let out = b.into_edited(&mut shapes);
    let (t0, t1, t2) = (
        out[0].table.as_ref().unwrap(),
        out[1].table.as_ref().unwrap(),
        out[2].table.as_ref().unwrap(),
    );
    assert_eq!(t0.columns[0].type_oid, oid::TEXT);
    assert!(t0.columns[0].is_key);
    assert_eq!(t0.columns[1].type_oid, oid::VARCHAR);
    assert!(Arc::ptr_eq(t0, t1), "one retyped table for the batch");
    assert!(
        Arc::ptr_eq(t2, &users),
        "an unedited change keeps its table"
    );
    // The next batch masked alike gets the same retyped table.
    let mut b = Changes::new(vec![change(&users, Op::Insert, 0, 4, "d")]);
    b.set(0, 0, wit::Value::Text("***".into()), true)
        .unwrap()
        .unwrap();
    let again = b.into_edited(&mut shapes);
    assert!(Arc::ptr_eq(again[0].table.as_ref().unwrap(), t0));
}

#[test]
fn bad_edits_are_errors_the_guest_sees_and_bad_indexes_trap() {
    let (_, _, mut b) = batch();
    let e = b
        .set(0, 0, wit::Value::Numeric("12abc".into()), true)
        .unwrap()
        .unwrap_err();
    assert!(
        e.contains("column id") && e.contains("invalid numeric"),
        "{e}"
    );
    let e = b
        .set(3, 1, wit::Value::Text("x".into()), true)
        .unwrap()
        .unwrap_err();
    assert!(e.contains("has no new row"), "{e}");
    let e = b
        .set(2, 0, wit::Value::Text("x".into()), true)
        .unwrap()
        .unwrap_err();
    assert!(e.contains("without a table"), "{e}");
    let e = b
        .set(
            0,
            1,
            wit::Value::Array(wit::PgArray {
                element_oid: oid::INT4,
                dims: vec![],
                elements: vec![],
            }),
            true,
        )
        .unwrap()
        .unwrap_err();
    assert!(e.contains("not an array"), "{e}");
    let trap = b.value(4, 0, true).unwrap_err().to_string();
    assert!(
        trap.contains("change index 4 is out of range (the batch holds 4)"),
        "{trap}"
    );
    let trap = b.value(0, 2, true).unwrap_err().to_string();
    assert!(
        trap.contains("column index 2 is out of range (public.users has 2 columns)"),
        "{trap}"
    );
    assert!(b
        .edits
        .iter()
        .all(|e| e.as_ref().is_none_or(|e| e.after.is_empty())));
}

#[test]
fn many_at_once_reads_and_sets_all_or_nothing() {
    let (users, _, mut b) = batch();
    let got = b.get_many(&[0, 1, 2, 3], 1, true).unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(wtext(got[0].clone()).as_deref(), Some("a"));
    assert!(
        got[2].is_none() && got[3].is_none(),
        "a message and a delete: no new row"
    );
    // One value for all: a mask. Column 0 (int8) becomes text in both tables.
    b.set_many(&[0, 1], 0, vec![wit::Value::Text("***".into())], true)
        .unwrap()
        .unwrap();
    // One per change.
    b.set_many(
        &[0, 1],
        1,
        vec![wit::Value::Text("x".into()), wit::Value::Text("y".into())],
        true,
    )
    .unwrap()
    .unwrap();
    let before = b.get_many(&[1, 3], 1, false).unwrap();
    assert_eq!(wtext(before[1].clone()).as_deref(), Some("c"));
    // All or nothing: change 3 has no new row, so change 0 is not set either.
    let e = b
        .set_many(&[0, 3], 1, vec![wit::Value::Text("z".into())], true)
        .unwrap()
        .unwrap_err();
    assert!(e.contains("change 3 (a delete) has no new row"), "{e}");
    let e = b
        .set_many(&[0, 1], 1, vec![wit::Value::Text("z".into()); 3], true)
        .unwrap()
        .unwrap_err();
    assert!(e.contains("3 values for 2 changes"), "{e}");
    assert!(
        b.get_many(&[9], 0, true).is_err(),
        "an index out of range traps"
    );
    // Kinds: a value, a value, none (a message), none (a delete); edits seen.
    assert_eq!(b.kinds(&[0, 1, 2, 3], 1, true).unwrap(), vec![3, 3, 0, 0]);
    b.set(0, 1, wit::Value::Null, true).unwrap().unwrap();
    assert_eq!(b.kinds(&[0, 3], 1, true).unwrap(), vec![1, 0]);
    assert_eq!(b.kinds(&[0, 3], 1, false).unwrap(), vec![0, 3]);
    b.set(0, 1, wit::Value::Text("x".into()), true)
        .unwrap()
        .unwrap();
    let out = b.into_edited(&mut Shapes::default());
    assert_eq!(
        out[0].after.as_ref().unwrap().0,
        vec![text("***"), text("x")]
    );
    assert_eq!(
        out[1].after.as_ref().unwrap().0,
        vec![text("***"), text("y")]
    );
    assert_eq!(
        out[0].table.as_ref().unwrap().columns[0].type_oid,
        oid::TEXT
    );
    assert!(!Arc::ptr_eq(out[0].table.as_ref().unwrap(), &users));
}
