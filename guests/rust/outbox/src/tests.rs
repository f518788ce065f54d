use cdc_guest::testing::{change, col, insert, message};
use cdc_guest::{Column, Config, Op, Transform, Value};

use crate::Outbox;

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn init(pairs: &[(&str, &str)]) -> Outbox {
    Outbox::init(Config::from_pairs(pairs)).unwrap()
}

fn outbox_row(payload: Value) -> Vec<Column> {
    vec![
        col(
            "id",
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        col("aggregatetype", text("order")),
        col("aggregateid", text("42")),
        col("type", text("created")),
        col("payload", payload),
    ]
}

#[test]
fn insert_becomes_an_event() {
    let mut o = init(&[]);
    let mut row = insert(
        "public",
        "outbox",
        outbox_row(Value::Jsonb(r#"{"a": 1}"#.into())),
    );
    row.id = "00000000000000AA-00000003".into();
    let out = o.transform(vec![row]).unwrap();
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.op, Op::Message);
    assert_eq!(e.id, "00000000000000AA-00000003");
    assert_eq!((e.schema.as_str(), e.table.as_str()), ("", ""));
    assert_eq!(e.after, None);
    assert_eq!(e.route.as_deref(), Some("outbox.order.created"));
    assert_eq!(e.header("aggregate-id"), Some("42"));
    assert_eq!(e.header("event-type"), Some("created"));
    let m = e.message.as_ref().unwrap();
    assert_eq!((m.prefix.as_str(), m.transactional), ("outbox", true));
    assert_eq!(m.content, br#"{"a": 1}"#);
}

#[test]
fn payload_types() {
    let mut o = init(&[]);
    let mut content = |payload| {
        let out = o
            .transform(vec![insert("s", "outbox", outbox_row(payload))])
            .unwrap();
        out[0].message.as_ref().unwrap().content.clone()
    };
    assert_eq!(content(Value::Bytea(vec![0, 255])), [0, 255]);
    assert_eq!(content(text("héllo")), "héllo".as_bytes());
    assert_eq!(content(Value::Json("[1]".into())), b"[1]");
    assert_eq!(content(Value::Null), b"");
}

#[test]
fn updates_deletes_and_others() {
    let mut o = init(&[]);
    let batch = vec![
        change(Op::Update, "public", "outbox"),
        change(Op::Delete, "public", "outbox"),
        change(Op::Insert, "public", "orders"),
        message("outbox.billing", b"m1"),
        message("outbox", b"m2"),
        message("outboxes", b"m3"),
        message("other", b"m4"),
    ];
    let out = o.transform(batch.clone()).unwrap();
    let routes: Vec<_> = out.iter().map(|c| c.route.as_deref().unwrap()).collect();
    assert_eq!(routes, ["outbox.billing", "outbox", "outbox.outboxes"]);
    assert_eq!(out[0].message.as_ref().unwrap().content, b"m1");

    let mut o = init(&[("passthrough", "true")]);
    let out = o.transform(batch).unwrap();
    let kept: Vec<_> = out.iter().map(|c| (c.op, c.route.is_some())).collect();
    let want = [
        (Op::Insert, false),
        (Op::Message, true),
        (Op::Message, true),
    ];
    assert_eq!(kept[..3], want);
    assert_eq!(kept.len(), 5);
}

#[test]
fn custom_columns_and_prefix() {
    let mut o = init(&[
        ("table", "app.events"),
        ("aggregate_type_column", "kind"),
        ("aggregate_id_column", "key"),
        ("type_column", "name"),
        ("payload_column", "body"),
        ("message_prefix", "evt"),
    ]);
    let row = vec![
        col("kind", text("user")),
        col("key", Value::Int8(7)),
        col("name", text("renamed")),
        col("body", text("x")),
    ];
    let out = o
        .transform(vec![
            insert("app", "events", row),
            insert("public", "events", vec![]),
        ])
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].route.as_deref(), Some("evt.user.renamed"));
    assert_eq!(out[0].header("aggregate-id"), Some("7"));
    assert_eq!(out[0].message.as_ref().unwrap().prefix, "evt");
}

#[test]
fn missing_columns_fail_the_batch() {
    let mut o = init(&[]);
    let row = vec![
        col("aggregatetype", text("order")),
        col("aggregateid", Value::Null),
    ];
    let err = o
        .transform(vec![insert("public", "outbox", row)])
        .unwrap_err();
    assert_eq!(
        err,
        "outbox row 0000000000000001-00000000: column `aggregateid` is missing or null"
    );
}

#[test]
fn config_errors() {
    let err = |pairs: &[(&str, &str)]| Outbox::init(Config::from_pairs(pairs)).err().unwrap();
    assert!(err(&[("passthrough", "maybe")]).contains("true or false"));
    assert!(err(&[("tabel", "x")]).starts_with("unknown config key `tabel`"));
}

#[test]
fn readme_shows_this_source() {
    assert!(include_str!("../README.md").contains(include_str!("lib.rs")));
}
