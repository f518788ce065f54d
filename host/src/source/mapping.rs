//! Domain mapping: decoded pgoutput tuples + the relation they belong to → typed rows.
//!
//! Kept apart from the decoder (which knows only bytes) and from the stream loop (which
//! knows only order), as supabase/etl does: each is testable alone.

use std::sync::Arc;

use crate::change::{Column, Row, Table};
use crate::pgoutput::{ColumnData, Relation, TupleData};
use crate::value::{parse_binary, parse_text, TypeInfo, Value};

/// A tuple that does not fit its relation, or a value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("tuple has {got} columns, relation {table} has {want}")]
    Width {
        table: String,
        got: usize,
        want: usize,
    },
    #[error("{column}: {message}")]
    Value { column: String, message: String },
}

/// Builds the shared table description from a `Relation` message and resolved types.
pub fn table_from_relation(rel: Relation, types: Vec<TypeInfo>) -> Arc<Table> {
    let columns = rel
        .columns
        .into_iter()
        .zip(types)
        .map(|(c, type_info)| Column {
            name: c.name.into(),
            type_oid: c.type_oid,
            type_info,
            is_key: c.is_key,
        })
        .collect();
    Arc::new(Table {
        id: rel.id,
        // pgoutput sends an empty namespace for pg_catalog.
        schema: if rel.namespace.is_empty() {
            "pg_catalog".into()
        } else {
            rel.namespace.into()
        },
        name: rel.name.into(),
        replica_identity: rel.replica_identity,
        columns,
    })
}

/// Turns a tuple into typed values aligned with `table.columns`.
pub fn row_from_tuple(table: &Table, tuple: TupleData) -> Result<Row, MapError> {
    if tuple.0.len() != table.columns.len() {
        return Err(MapError::Width {
            table: format!("{}.{}", table.schema, table.name),
            got: tuple.0.len(),
            want: table.columns.len(),
        });
    }
    let mut values = Vec::with_capacity(tuple.0.len());
    for (data, col) in tuple.0.into_iter().zip(&table.columns) {
        values.push(match data {
            ColumnData::Null => Value::Null,
            ColumnData::UnchangedToast => Value::UnchangedToast,
            ColumnData::Text(raw) => {
                parse_text(&col.type_info, raw).map_err(|e| MapError::Value {
                    column: col.name.to_string(),
                    message: e.to_string(),
                })?
            }
            // Only with `binary = true`; types without a binary decoder were refused at
            // start (and the server sends text for types without a send function).
            ColumnData::Binary(raw) => {
                parse_binary(&col.type_info, raw).map_err(|e| MapError::Value {
                    column: col.name.to_string(),
                    message: e.to_string(),
                })?
            }
        });
    }
    Ok(Row(values))
}

/// REPLICA IDENTITY FULL: the old row of an update is complete (Postgres writes its TOASTed
/// values inline), so a TOASTed column the update left unchanged — not sent in the new
/// row — takes its value from the old row instead of staying unknown.
pub fn fill_unchanged_toast(before: &Row, after: &mut Row) {
    for (new, old) in after.0.iter_mut().zip(&before.0) {
        if matches!(new, Value::UnchangedToast) && !matches!(old, Value::UnchangedToast) {
            *new = old.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_toast_is_filled_from_a_complete_old_row() {
        let before = Row(vec![Value::Int4(1), Value::Int4(2), Value::UnchangedToast]);
        let mut after = Row(vec![
            Value::Int4(1),
            Value::UnchangedToast,
            Value::UnchangedToast,
        ]);
        fill_unchanged_toast(&before, &mut after);
        // Filled where the old row knows the value; still unknown where it does not.
        assert_eq!(
            after.0,
            [Value::Int4(1), Value::Int4(2), Value::UnchangedToast]
        );
    }
}
