//! Building changes by hand, for transforms' unit tests on the build machine.

use crate::{Change, Column, Op, Value};

/// A change with `op` on `schema.table`, id `0000000000000001-00000000`, no
/// rows, no route, no headers. Fill in `before`/`after`/`message` as needed.
pub fn change(op: Op, schema: &str, table: &str) -> Change {
    Change {
        id: "0000000000000001-00000000".to_string(),
        op,
        schema: schema.to_string(),
        table: table.to_string(),
        before: None,
        before_is_full: false,
        after: None,
        lsn: 1,
        commit_lsn: 1,
        xid: 1,
        commit_ts: 0,
        truncate: None,
        message: None,
        route: None,
        headers: Vec::new(),
        snapshot: None,
    }
}

/// An insert into `schema.table` whose new row has the given columns.
pub fn insert(schema: &str, table: &str, columns: Vec<Column>) -> Change {
    Change {
        after: Some(columns),
        ..change(Op::Insert, schema, table)
    }
}

/// A logical decoding message.
pub fn message(prefix: &str, content: &[u8]) -> Change {
    Change {
        message: Some(crate::LogicalMessage {
            prefix: prefix.to_string(),
            content: content.to_vec(),
            transactional: true,
        }),
        ..change(Op::Message, "", "")
    }
}

/// A column with the type oid Postgres would send for `value`'s type
/// (0 where there is no single one, e.g. arrays and `other`).
pub fn col(name: &str, value: Value) -> Column {
    let type_oid = match &value {
        Value::Boolean(_) => 16,
        Value::Bytea(_) => 17,
        Value::Int8(_) => 20,
        Value::Int2(_) => 21,
        Value::Int4(_) => 23,
        Value::Text(_) => 25,
        Value::Json(_) => 114,
        Value::Float4(_) => 700,
        Value::Float8(_) => 701,
        Value::Date(_) => 1082,
        Value::Time(_) => 1083,
        Value::Timestamp(_) => 1114,
        Value::Timestamptz(_) => 1184,
        Value::Interval(_) => 1186,
        Value::Timetz(_) => 1266,
        Value::Numeric(_) => 1700,
        Value::Uuid(_) => 2950,
        Value::Jsonb(_) => 3802,
        Value::Other(o) => o.type_oid,
        _ => 0,
    };
    Column {
        type_oid,
        ..Column::new(name, value)
    }
}
