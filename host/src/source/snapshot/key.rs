//! A row's identity within a table: a 128-bit hash of the table's name and the key
//! columns' values.
//!
//! Both sides of the reconciliation compute it — the stream from pgoutput rows, the
//! snapshot from COPY rows — over the same typed values (both are parsed from the same
//! output functions' text), written as `to_jsonb` prints them. Read ids carry it, so a row
//! re-sent after a crash has the same id.

use xxhash_rust::xxh3::xxh3_128;

use crate::change::{Row, Table};
use crate::value::{write_json, TypeInfo, TypeKind, Value};

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
    // One shot: the streaming hasher (the same XXH3 value) copies its input into a buffer
    // of its own first.
    Some(xxh3_128(scratch))
}

/// Whether [`key_text`] prints every value of a key column of type `ty`: then a binary
/// chunk's next lower bound is made from the last row's values, and the chunk query asks
/// for nothing more than the columns. Otherwise it also selects `key::text` — which costs
/// the server a projection per row: a 3M-row table copied in 25,000-row chunks took 4.3–4.8 s
/// with `id::text` against 3.5–3.7 s without (psql, binary COPY; `bench/README.md`).
pub fn prints_key_text(ty: &TypeInfo) -> bool {
    use crate::value::oid;
    match ty.kind {
        TypeKind::Int2 | TypeKind::Int4 | TypeKind::Int8 | TypeKind::Numeric | TypeKind::Uuid => {
            true
        }
        // Not `"char"` (a byte, printed as an octal escape when it is not ASCII), nor a
        // domain over text (its oid is its own): the server prints those.
        TypeKind::Text => matches!(ty.oid, oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME),
        _ => false,
    }
}

/// `v` as its type's output function prints it — which its input function reads back as
/// the same value — for the values of the types [`prints_key_text`] accepts; `None` for any
/// other value.
pub fn key_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Int2(i) => i.to_string(),
        Value::Int4(i) => i.to_string(),
        Value::Int8(i) => i.to_string(),
        Value::Numeric(n) => n.as_str().to_owned(),
        Value::Text(t) => t.as_str().to_owned(),
        // `to_jsonb` prints a uuid as `uuid_out` does, in quotes.
        Value::Uuid(_) => {
            let mut quoted = Vec::with_capacity(38);
            write_json(v, &mut quoted);
            String::from_utf8(quoted.get(1..quoted.len().saturating_sub(1))?.to_vec()).ok()?
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{builtin_type, oid, parse_binary, parse_text};
    use bytes::Bytes;

    /// Read ids carry this hash: the one-shot XXH3 must give what the streaming hasher
    /// gave before it, at every input length (short keys, and past its 256-byte buffer).
    #[test]
    fn the_one_shot_hash_is_the_streaming_hash() {
        for len in [0, 1, 16, 17, 128, 129, 240, 241, 256, 257, 1000, 5000] {
            let input: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&input);
            assert_eq!(xxh3_128(&input), h.digest128(), "length {len}");
        }
    }

    /// What the server prints, typed, printed again: the same text.
    #[test]
    fn key_text_prints_what_the_server_prints() {
        let cases: &[(u32, &[&str])] = &[
            (oid::INT2, &["0", "-32768", "32767"]),
            (oid::INT4, &["7", "-2147483648", "2147483647"]),
            (
                oid::INT8,
                &["-9223372036854775808", "9223372036854775807", "5000000"],
            ),
            (
                oid::NUMERIC,
                &[
                    "0",
                    "-1.50",
                    "12345678901234567890.000000001",
                    "NaN",
                    "Infinity",
                    "-Infinity",
                ],
            ),
            (
                oid::TEXT,
                &["", "a b", "tab\there", "quote'd", "h\u{e9}llo"],
            ),
            (oid::VARCHAR, &["x"]),
            (oid::BPCHAR, &["ab  "]),
            (oid::NAME, &["orders"]),
            (
                oid::UUID,
                &[
                    "01234567-89ab-cdef-0123-456789abcdef",
                    "00000000-0000-0000-0000-000000000000",
                ],
            ),
        ];
        for (type_oid, texts) in cases {
            let ty = builtin_type(*type_oid).expect("builtin");
            assert!(prints_key_text(&ty), "{type_oid}");
            for text in *texts {
                let v = parse_text(&ty, Bytes::copy_from_slice(text.as_bytes())).unwrap();
                assert_eq!(key_text(&v).as_deref(), Some(*text), "{type_oid}");
            }
        }
        // From the binary send format too (what a binary COPY chunk holds).
        let ty = builtin_type(oid::INT8).unwrap();
        let v = parse_binary(&ty, Bytes::copy_from_slice(&(-42i64).to_be_bytes())).unwrap();
        assert_eq!(key_text(&v).as_deref(), Some("-42"));
    }

    #[test]
    fn other_key_types_are_printed_by_the_server() {
        for type_oid in [
            oid::CHAR,
            oid::DATE,
            oid::TIMESTAMPTZ,
            oid::BYTEA,
            oid::FLOAT8,
            oid::BOOL,
        ] {
            assert!(
                !prints_key_text(&builtin_type(type_oid).unwrap()),
                "{type_oid}"
            );
        }
        assert_eq!(key_text(&Value::Bool(true)), None);
        assert_eq!(key_text(&Value::Date(0)), None);
    }
}
