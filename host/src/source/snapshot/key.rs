//! A row's identity within a table: a 128-bit hash of the table's name and the key
//! columns' values.
//!
//! Both sides of the reconciliation compute it — the stream from pgoutput rows, the
//! snapshot from COPY rows — over the same typed values (both are parsed from the same
//! output functions' text), written as `to_jsonb` prints them. Read ids carry it, so a row
//! re-sent after a crash has the same id.

use xxhash_rust::xxh3::Xxh3;

use crate::change::{Row, Table};
use crate::value::{write_json, Value};

/// Hashes `table`'s name and the values at `key` (column indexes) of `row`. `None` when a
/// key value is missing from the row (an unchanged TOAST placeholder).
pub fn key_hash(table: &Table, key: &[usize], row: &Row, scratch: &mut Vec<u8>) -> Option<u128> {
    scratch.clear();
    scratch.extend_from_slice(table.schema.as_bytes());
    scratch.push(0);
    scratch.extend_from_slice(table.name.as_bytes());
    for &k in key {
        let v = row.0.get(k)?;
        if matches!(v, Value::UnchangedToast) {
            return None;
        }
        scratch.push(0);
        write_json(v, scratch);
    }
    let mut h = Xxh3::new();
    h.update(scratch);
    Some(h.digest128())
}
