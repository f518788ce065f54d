//! Fuzz targets for `source::mapping`: decoded tuples against their relation.
//!
//! A tuple may have more or fewer columns than its Relation said (a corrupt stream, or a
//! Relation we mapped wrongly), binary values we never asked for, and texts that do not
//! parse as the column's type. Each must become the matching `MapError`, naming the column.

use std::sync::Arc;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::fuzz;
use super::value::{valid_case, Expect};
use cdc_host::change::{Column, Table};
use cdc_host::pgoutput::{ColumnData, Relation, RelationColumn, ReplicaIdentity, TupleData};
use cdc_host::source::mapping::{row_from_tuple, table_from_relation, MapError};
use cdc_host::value::{builtin_type, parse_binary, parse_text, TypeInfo, Value};

/// What one tuple column carries.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Toast,
    /// The column's generated valid text.
    Valid,
    /// Arbitrary bytes as text.
    Garbage(Vec<u8>),
    Binary(Vec<u8>),
}

fn cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        1 => Just(Cell::Null),
        1 => Just(Cell::Toast),
        6 => Just(Cell::Valid),
        1 => vec(any::<u8>(), 0..12).prop_map(Cell::Garbage),
        1 => vec(any::<u8>(), 0..12).prop_map(Cell::Binary),
    ]
}

fn table(columns: &[(TypeInfo, String, Expect)]) -> Table {
    Table {
        id: 16384,
        schema: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, (ty, _, _))| Column {
                name: format!("c{i}").into(),
                type_oid: ty.oid,
                type_info: ty.clone(),
                is_key: i == 0,
            })
            .collect(),
    }
}

/// Tuples whose width may not match the table, with any mix of column kinds: the row or
/// the error is exactly what a column-by-column reading gives.
#[test]
fn fuzz_row_from_tuple() {
    fuzz(
        "row_from_tuple",
        file!(),
        (vec((valid_case(), cell()), 0..6), -2i32..=2),
        |(columns, width_delta)| {
            let (cols, cells): (Vec<_>, Vec<_>) = columns.into_iter().unzip();
            let table = table(&cols);
            let width = (cols.len() as i32 + width_delta).max(0) as usize;
            let data: Vec<ColumnData> = (0..width)
                .map(|i| match (cells.get(i), cols.get(i)) {
                    (Some(Cell::Null), _) | (None, _) => ColumnData::Null,
                    (Some(Cell::Toast), _) => ColumnData::UnchangedToast,
                    (Some(Cell::Valid), Some((_, text, _))) => {
                        ColumnData::Text(Bytes::from(text.clone()))
                    }
                    (Some(Cell::Valid), None) => ColumnData::Null,
                    (Some(Cell::Garbage(b)), _) => ColumnData::Text(Bytes::from(b.clone())),
                    (Some(Cell::Binary(b)), _) => ColumnData::Binary(Bytes::from(b.clone())),
                })
                .collect();
            let got = row_from_tuple(&table, TupleData(data.clone()));
            if width != cols.len() {
                match got {
                    Err(MapError::Width { table, got, want }) => {
                        prop_assert_eq!(table, "public.t");
                        prop_assert_eq!((got, want), (width, cols.len()));
                    }
                    other => prop_assert!(false, "width {} of {}: {:?}", width, cols.len(), other),
                }
                return Ok(());
            }
            // The expected outcome, column by column.
            let mut want = Ok(Vec::new());
            for (i, (d, col)) in data.iter().zip(&table.columns).enumerate() {
                let v = match d {
                    ColumnData::Null => Value::Null,
                    ColumnData::UnchangedToast => Value::UnchangedToast,
                    ColumnData::Text(raw) => match parse_text(&col.type_info, raw.clone()) {
                        Ok(v) => v,
                        Err(_) => {
                            want = Err((i, "value"));
                            break;
                        }
                    },
                    ColumnData::Binary(raw) => match parse_binary(&col.type_info, raw.clone()) {
                        Ok(v) => v,
                        Err(_) => {
                            want = Err((i, "binary"));
                            break;
                        }
                    },
                };
                if let Ok(values) = &mut want {
                    values.push(v);
                }
            }
            match (want, got) {
                (Ok(values), Ok(row)) => {
                    prop_assert_eq!(row.0.len(), values.len());
                    for (a, b) in row.0.iter().zip(&values) {
                        let both_nan = matches!((a, b), (Value::Float4(x), Value::Float4(y)) if x.is_nan() && y.is_nan())
                            || matches!((a, b), (Value::Float8(x), Value::Float8(y)) if x.is_nan() && y.is_nan());
                        prop_assert!(both_nan || a == b, "{:?} != {:?}", a, b);
                    }
                }
                (Err((i, "value")), Err(MapError::Value { column, message })) => {
                    prop_assert_eq!(column, format!("c{i}"));
                    prop_assert!(message.contains("invalid"), "{}", message);
                }
                (Err((i, "binary")), Err(MapError::Value { column, .. })) => {
                    prop_assert_eq!(column, format!("c{i}"));
                }
                (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
            }
            Ok(())
        },
    );
}

/// A Relation and however many resolved types the caller managed to produce: the table
/// has one column per (column, type) pair, never a panic.
#[test]
fn fuzz_table_from_relation() {
    let column =
        ("[a-z]{1,6}", any::<u32>(), any::<bool>()).prop_map(|(name, type_oid, is_key)| {
            RelationColumn {
                is_key,
                name,
                type_oid,
                type_modifier: -1,
            }
        });
    fuzz(
        "table_from_relation",
        file!(),
        (vec(column, 0..6), "[a-z]{0,4}", 0usize..8, any::<u32>()),
        |(columns, namespace, n_types, id)| {
            let rel = Relation {
                xid: None,
                id,
                namespace: namespace.clone(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Full,
                columns: columns.clone(),
            };
            // Types resolved for the first `n_types` columns (more or fewer than exist).
            let types: Vec<TypeInfo> = (0..n_types)
                .map(|i| {
                    let oid = columns.get(i).map_or(25, |c| c.type_oid);
                    builtin_type(oid).unwrap_or_else(|| TypeInfo::other(oid))
                })
                .collect();
            let table: Arc<Table> = table_from_relation(rel, types);
            prop_assert_eq!(table.columns.len(), columns.len().min(n_types));
            prop_assert_eq!(table.id, id);
            let schema = if namespace.is_empty() {
                "pg_catalog"
            } else {
                namespace.as_str()
            };
            prop_assert_eq!(&*table.schema, schema);
            for (c, rc) in table.columns.iter().zip(&columns) {
                prop_assert_eq!(&*c.name, rc.name.as_str());
                prop_assert_eq!(c.is_key, rc.is_key);
            }
            Ok(())
        },
    );
}
