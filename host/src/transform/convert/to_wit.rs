//! Host changes → the WIT record handed to a guest.

use super::{date_to_unix, ts_to_unix};
use crate::change::{Before, Change, Op, Row, Table};
use crate::transform::runtime::wit;
use crate::value::Value;

pub fn to_wit(c: &Change) -> wit::Change {
    let mut w = to_wit_meta(c);
    if let Some(t) = &c.table {
        if let Some((kind, row)) = &c.before {
            w.before = Some(row_to_wit(t, row, *kind == Before::Key));
        }
        w.after = c.after.as_ref().map(|row| row_to_wit(t, row, false));
    }
    w
}

/// The record without its rows (`before`/`after` are `None`; `before_is_full` is set).
pub(crate) fn to_wit_meta(c: &Change) -> wit::Change {
    let (schema, table) = match &c.table {
        Some(t) => (t.schema.to_string(), t.name.to_string()),
        None => (String::new(), String::new()),
    };
    let before_is_full = matches!((&c.before, &c.table), (Some((Before::Full, _)), Some(_)));
    let (route, headers) = match &c.routing {
        Some(r) => (r.route.clone(), r.headers.clone()),
        None => (None, Vec::new()),
    };
    wit::Change {
        id: c.id().to_text(),
        op: match c.op {
            Op::Insert => wit::Op::Insert,
            Op::Update => wit::Op::Update,
            Op::Delete => wit::Op::Delete,
            Op::Truncate => wit::Op::Truncate,
            Op::Message => wit::Op::Message,
            Op::Read => wit::Op::Read,
        },
        schema,
        table,
        before: None,
        before_is_full,
        after: None,
        lsn: c.lsn.0,
        commit_lsn: c.commit_lsn.0,
        xid: c.xid,
        commit_ts: ts_to_unix(c.commit_ts),
        truncate: c
            .truncate
            .map(|(cascade, restart_identity)| wit::TruncateOptions {
                cascade,
                restart_identity,
            }),
        message: c.message.as_ref().map(|m| wit::LogicalMessage {
            prefix: m.prefix.clone(),
            content: m.content.to_vec(),
            transactional: m.transactional,
        }),
        route,
        headers,
        snapshot: c.read.map(|r| wit::SnapshotRead {
            id: r.key.snapshot,
            last: r.last,
        }),
    }
}

/// A row image; with `key_only` (the old key of REPLICA IDENTITY DEFAULT/INDEX) just
/// the key columns, which are all pgoutput sent.
fn row_to_wit(t: &Table, row: &Row, key_only: bool) -> Vec<wit::Column> {
    t.columns
        .iter()
        .zip(&row.0)
        .filter(|(col, _)| !key_only || col.is_key)
        .map(|(col, v)| wit::Column {
            name: col.name.to_string(),
            type_oid: col.type_oid,
            is_key: col.is_key,
            value: value_to_wit(v),
        })
        .collect()
}

pub(super) fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

pub(crate) fn value_to_wit(v: &Value) -> wit::Value {
    use wit::Value as W;
    match v {
        Value::Null => W::Null,
        Value::UnchangedToast => W::UnchangedToast,
        Value::Array(a) => W::Array(wit::PgArray {
            element_oid: a.elem_oid,
            dims: a.dims.clone(),
            elements: a.elements.iter().map(element_to_wit).collect(),
        }),
        other => match element_to_wit(other) {
            wit::Element::Null => W::Null,
            wit::Element::Boolean(b) => W::Boolean(b),
            wit::Element::Int2(x) => W::Int2(x),
            wit::Element::Int4(x) => W::Int4(x),
            wit::Element::Int8(x) => W::Int8(x),
            wit::Element::Float4(x) => W::Float4(x),
            wit::Element::Float8(x) => W::Float8(x),
            wit::Element::Numeric(x) => W::Numeric(x),
            wit::Element::Text(x) => W::Text(x),
            wit::Element::Bytea(x) => W::Bytea(x),
            wit::Element::Json(x) => W::Json(x),
            wit::Element::Jsonb(x) => W::Jsonb(x),
            wit::Element::Uuid(x) => W::Uuid(x),
            wit::Element::Date(x) => W::Date(x),
            wit::Element::Time(x) => W::Time(x),
            wit::Element::Timetz(x) => W::Timetz(x),
            wit::Element::Timestamp(x) => W::Timestamp(x),
            wit::Element::Timestamptz(x) => W::Timestamptz(x),
            wit::Element::Interval(x) => W::Interval(x),
            wit::Element::EnumLabel(x) => W::EnumLabel(x),
            wit::Element::Other(x) => W::Other(x),
        },
    }
}

fn element_to_wit(v: &Value) -> wit::Element {
    use wit::Element as E;
    match v {
        // Neither occurs inside an array; `value_to_wit` handles them at the top level.
        Value::Null | Value::UnchangedToast | Value::Array(_) => E::Null,
        Value::Bool(b) => E::Boolean(*b),
        Value::Int2(x) => E::Int2(*x),
        Value::Int4(x) => E::Int4(*x),
        Value::Int8(x) => E::Int8(*x),
        Value::Float4(x) => E::Float4(*x),
        Value::Float8(x) => E::Float8(*x),
        Value::Numeric(n) => E::Numeric(n.as_str().to_owned()),
        Value::Text(t) => E::Text(t.as_str().to_owned()),
        Value::Bytea(b) => E::Bytea(b.to_vec()),
        Value::Json(t) => E::Json(t.as_str().to_owned()),
        Value::Jsonb(t) => E::Jsonb(t.as_str().to_owned()),
        Value::Uuid(u) => E::Uuid(uuid_text(u)),
        Value::Date(d) => E::Date(date_to_unix(*d)),
        Value::Time(t) => E::Time(*t),
        Value::TimeTz {
            micros,
            offset_secs,
        } => E::Timetz(wit::TimeTz {
            micros: *micros,
            offset_secs: *offset_secs,
        }),
        Value::Timestamp(t) => E::Timestamp(ts_to_unix(*t)),
        Value::TimestampTz(t) => E::Timestamptz(ts_to_unix(*t)),
        Value::Interval {
            months,
            days,
            micros,
        } => E::Interval(wit::Interval {
            months: *months,
            days: *days,
            micros: *micros,
        }),
        Value::Enum(t) => E::EnumLabel(t.as_str().to_owned()),
        Value::Other { type_oid, text } => E::Other(wit::OtherValue {
            type_oid: *type_oid,
            text: text.as_str().to_owned(),
        }),
    }
}
