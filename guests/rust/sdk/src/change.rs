//! Helpers on the generated change types.

use crate::{Change, Column, Op, Row, Value};

impl Change {
    /// `schema.table`; empty for a logical message.
    pub fn qualified_table(&self) -> String {
        if self.table.is_empty() {
            String::new()
        } else {
            format!("{}.{}", self.schema, self.table)
        }
    }

    /// Whether this is a logical decoding message (`op` is `message`).
    pub fn is_message(&self) -> bool {
        self.op == Op::Message
    }

    /// The value of column `name` in the new row (insert, update).
    pub fn after_column(&self, name: &str) -> Option<&Value> {
        find(self.after.as_ref(), name)
    }

    /// The value of column `name` in the old row (update, delete; only the key
    /// columns unless the table is `REPLICA IDENTITY FULL`).
    pub fn before_column(&self, name: &str) -> Option<&Value> {
        find(self.before.as_ref(), name)
    }

    /// Column `name` from `after` if the change has a new row, else from
    /// `before`: the row's current value for inserts and updates, the deleted
    /// row's for deletes. An unchanged TOASTed value in `after` falls back to
    /// `before` too (which has it when the table is `REPLICA IDENTITY FULL`).
    pub fn column(&self, name: &str) -> Option<&Value> {
        match self.after_column(name) {
            Some(Value::UnchangedToast) | None => {
                self.before_column(name).or(self.after_column(name))
            }
            found => found,
        }
    }

    /// The canonical text ([`Value::to_text`]) of [`column`](Self::column)
    /// `name`; `None` when the column is absent, null or an unchanged TOAST
    /// value.
    pub fn column_text(&self, name: &str) -> Option<String> {
        self.column(name).and_then(Value::to_text)
    }

    /// Sets column `name` of the new row, adding it (type oid 0: the host
    /// picks one from the value) if the row has no such column. Returns false,
    /// changing nothing, when the change has no new row (delete, truncate,
    /// message).
    pub fn set_after(&mut self, name: &str, value: Value) -> bool {
        let Some(row) = self.after.as_mut() else {
            return false;
        };
        match row.iter_mut().find(|c| c.name == name) {
            Some(col) => col.value = value,
            None => row.push(Column::new(name, value)),
        }
        true
    }

    /// The replication origin of this change's transaction: `Some(name)` when another
    /// node's logical replication applied it here (needs `[source] origin = "any"`, the
    /// default), `None` for a local transaction. Asks the host ([`crate::origin`]).
    pub fn origin(&self) -> Option<String> {
        crate::origin(self.commit_lsn)
    }

    /// Routes the change: sinks send it here instead of to their own template
    /// (for NATS, the subject).
    pub fn set_route(&mut self, route: impl Into<String>) {
        self.route = Some(route.into());
    }

    /// Adds a header sinks attach to this change.
    pub fn add_header(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.headers.push((key.into(), value.into()));
    }

    /// The value of header `key` (the last one if it appears twice).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn find<'a>(row: Option<&'a Row>, name: &str) -> Option<&'a Value> {
    row?.iter().find(|c| c.name == name).map(|c| &c.value)
}

impl Op {
    /// The WIT name: `insert`, `update`, `delete`, `truncate`, `message`, `read`.
    pub fn as_str(&self) -> &'static str {
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

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Column {
    /// A column a transform adds: not a key, type oid 0 so the host derives
    /// the type from the value.
    pub fn new(name: impl Into<String>, value: Value) -> Column {
        Column {
            name: name.into(),
            type_oid: 0,
            is_key: false,
            value,
        }
    }
}

impl Value {
    /// The string of a `text` value (text, varchar, bpchar, name).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The string of any value carried as a string: text, numeric, json,
    /// jsonb, uuid, enum label, or another type's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Json(s)
            | Value::Jsonb(s)
            | Value::Uuid(s)
            | Value::EnumLabel(s) => Some(s),
            Value::Other(o) => Some(&o.text),
            _ => None,
        }
    }

    /// SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A TOASTed column an UPDATE did not change (value not sent).
    pub fn is_unchanged_toast(&self) -> bool {
        matches!(self, Value::UnchangedToast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{change, col};

    #[test]
    fn columns_and_fallback() {
        let mut c = change(Op::Update, "public", "users");
        c.before = Some(vec![
            col("id", Value::Int4(1)),
            col("bio", Value::Text("old".into())),
        ]);
        c.after = Some(vec![
            col("id", Value::Int4(2)),
            col("bio", Value::UnchangedToast),
        ]);
        assert_eq!(c.qualified_table(), "public.users");
        assert_eq!(c.after_column("id"), Some(&Value::Int4(2)));
        assert_eq!(c.before_column("id"), Some(&Value::Int4(1)));
        assert_eq!(c.column("id"), Some(&Value::Int4(2)));
        assert_eq!(c.column_text("bio").as_deref(), Some("old"));
        assert_eq!(c.column("nope"), None);

        c.before = None;
        assert_eq!(c.column("bio"), Some(&Value::UnchangedToast));
        assert_eq!(c.column_text("bio"), None);

        let mut d = change(Op::Delete, "public", "users");
        d.before = Some(vec![col("id", Value::Int4(7))]);
        assert_eq!(d.column_text("id").as_deref(), Some("7"));
        assert!(!d.set_after("id", Value::Null));
    }

    #[test]
    fn set_after_replaces_or_adds() {
        let mut c = change(Op::Insert, "public", "users");
        c.after = Some(vec![col("id", Value::Int4(1))]);
        assert!(c.set_after("id", Value::Int4(5)));
        assert!(c.set_after("extra", Value::Text("x".into())));
        let row = c.after.as_ref().unwrap();
        assert_eq!(row.len(), 2);
        assert_eq!(row[0].value, Value::Int4(5));
        assert_eq!(row[0].type_oid, 23);
        assert_eq!(row[1], Column::new("extra", Value::Text("x".into())));
    }

    #[test]
    fn routes_and_headers() {
        let mut c = change(Op::Insert, "public", "users");
        assert_eq!(c.op.to_string(), "insert");
        c.set_route("a.b");
        c.add_header("k", "1");
        c.add_header("k", "2");
        assert_eq!(c.route.as_deref(), Some("a.b"));
        assert_eq!(c.header("k"), Some("2"));
        assert_eq!(c.header("x"), None);
    }
}
