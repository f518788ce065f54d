//! `COPY … TO STDOUT` text and binary formats → typed rows (pure).
//!
//! Text: Postgres sends one row per CopyData message: fields separated by tabs, `\N` for
//! NULL, backslash escapes for tab, newline, backslash and friends. The text of each field
//! is exactly what the type's output function prints — the same text pgoutput sends — so
//! the same parsers (`value::parse_text`) type it, under the same session settings. A field
//! without a backslash is a slice of the received buffer (no copy).
//!
//! Binary (`FORMAT binary`, used when every column has a binary decoder): a header, then
//! per row a field count and length-prefixed values in each type's send format — what
//! pgoutput sends in binary mode, typed by `value::parse_binary` into the same values. The
//! server does less (no output functions for timestamps, numerics, arrays) and so do we
//! (no tab scanning, no unescaping, no text parsing).

use bytes::{Bytes, BytesMut};

use crate::change::{Row, Table};
use std::ops::Range;

use crate::value::{parse_binary_at, parse_text, TypeInfo, Value, ValueError};

/// A COPY row that does not fit the table.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("COPY row has {got} fields, table {table} has {want} columns")]
    Width {
        table: String,
        got: usize,
        want: usize,
    },
    #[error("{column}: {message}")]
    Value { column: String, message: String },
    #[error("binary COPY data: {0}")]
    Binary(&'static str),
}

/// The 11-byte signature that starts a binary COPY.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Splits binary COPY data into rows. Postgres ends every CopyData message at a row
/// boundary (the header travels with the first row, the trailer alone), so each message is
/// split on its own; a row cut across messages is an error.
#[derive(Debug, Default)]
pub struct BinaryCopy {
    header_seen: bool,
    ended: bool,
}

impl BinaryCopy {
    /// Appends the rows of one CopyData message to `out`, each as its fields (`None`:
    /// NULL), ranges of `msg`. Ranges rather than slices: a slice of `msg` is a reference
    /// count shared with the connection's read buffer (many rows, and dropped by another
    /// thread), so only the values that keep their bytes take one (see `typed_binary_row`).
    pub fn rows(&mut self, msg: &Bytes, out: &mut Tuples) -> Result<(), CopyError> {
        let mut pos = 0;
        if !self.header_seen {
            let head = msg.get(..19).ok_or(CopyError::Binary("header cut short"))?;
            if &head[..11] != SIGNATURE {
                return Err(CopyError::Binary("no binary COPY signature"));
            }
            let ext = u32::from_be_bytes(head[15..19].try_into().expect("4 bytes")) as usize;
            pos = 19usize
                .checked_add(ext)
                .filter(|p| *p <= msg.len())
                .ok_or(CopyError::Binary("header extension cut short"))?;
            self.header_seen = true;
        }
        while pos < msg.len() {
            if self.ended {
                return Err(CopyError::Binary("data after the trailer"));
            }
            let count = msg
                .get(pos..pos + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
                .ok_or(CopyError::Binary("row cut short"))?;
            pos += 2;
            if count == -1 {
                self.ended = true;
                continue;
            }
            let count =
                usize::try_from(count).map_err(|_| CopyError::Binary("negative field count"))?;
            let fields = &mut out.fields;
            fields.reserve(count);
            for _ in 0..count {
                let len = msg
                    .get(pos..pos + 4)
                    .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
                    .ok_or(CopyError::Binary("row cut short"))?;
                pos += 4;
                if len == -1 {
                    fields.push(None);
                    continue;
                }
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|e| *e <= msg.len())
                    .ok_or(CopyError::Binary("field cut short"))?;
                fields.push(Some(pos..end));
                pos = end;
            }
            out.ends.push(out.fields.len());
        }
        Ok(())
    }
}

/// The rows [`BinaryCopy::rows`] split a message into: every row's fields in one vector
/// (not a vector per row: one allocation per row less, reused from message to message).
#[derive(Debug, Default)]
pub struct Tuples {
    fields: Vec<Option<Range<usize>>>,
    /// Where each row's fields end in `fields`.
    ends: Vec<usize>,
}

impl Tuples {
    pub fn clear(&mut self) {
        self.fields.clear();
        self.ends.clear();
    }

    /// Each row's fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[Option<Range<usize>>]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let row = &self.fields[start..end];
            start = end;
            row
        })
    }
}

/// Types one binary COPY row against `table`'s columns: the columns' values in their send
/// formats, then `key_count` more fields — the key columns again as text when the chunk
/// query asked for them (`key::text`, see [`binary_key_text`]), which are not typed.
pub fn typed_binary_row(
    table: &Table,
    key_count: usize,
    msg: &Bytes,
    raw: &[Option<Range<usize>>],
) -> Result<Row, CopyError> {
    if raw.len() != table.columns.len() + key_count {
        return Err(CopyError::Width {
            table: format!("{}.{}", table.schema, table.name),
            got: raw.len().saturating_sub(key_count),
            want: table.columns.len(),
        });
    }
    let values = &raw[..table.columns.len()];
    let mut row = Vec::with_capacity(values.len());
    for (f, col) in values.iter().zip(&table.columns) {
        row.push(match f {
            None => Value::Null,
            Some(r) => {
                parse_binary_at(&col.type_info, msg, r.clone()).map_err(|e| CopyError::Value {
                    column: col.name.to_string(),
                    message: e.to_string(),
                })?
            }
        });
    }
    Ok(Row(row))
}

/// The key columns' text of a binary COPY row [`typed_binary_row`] accepted. Only a
/// chunk's last row needs it (the next chunk's lower bound), so it is taken once per
/// message, not per row: each slice is a reference count on the connection's buffer.
pub fn binary_key_text(
    table: &Table,
    msg: &Bytes,
    raw: &[Option<Range<usize>>],
) -> Vec<Option<Bytes>> {
    raw.get(table.columns.len()..)
        .unwrap_or_default()
        .iter()
        .map(|k| k.clone().map(|r| msg.slice(r)))
        .collect()
}

/// The row of `raw` fields (`None`: NULL), each parsed as its column's type by `parse`.
fn typed_values(
    table: &Table,
    raw: Vec<Option<Bytes>>,
    parse: fn(&TypeInfo, Bytes) -> Result<Value, ValueError>,
) -> Result<Row, CopyError> {
    let mut values = Vec::with_capacity(raw.len());
    for (f, col) in raw.into_iter().zip(&table.columns) {
        values.push(match f {
            None => Value::Null,
            Some(v) => parse(&col.type_info, v).map_err(|e| CopyError::Value {
                column: col.name.to_string(),
                message: e.to_string(),
            })?,
        });
    }
    Ok(Row(values))
}

/// Splits one COPY text row (with or without its trailing newline) into fields; `None` is
/// NULL.
pub fn fields(line: &Bytes) -> Vec<Option<Bytes>> {
    let body = match line.last() {
        Some(b'\n') => line.slice(..line.len() - 1),
        _ => line.clone(),
    };
    let mut out = Vec::with_capacity(16);
    let mut start = 0;
    let bytes = &body[..];
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\t' {
            out.push(field(body.slice(start..i)));
            start = i + 1;
        }
    }
    out.push(field(body.slice(start..)));
    out
}

fn field(raw: Bytes) -> Option<Bytes> {
    if &raw[..] == b"\\N" {
        return None;
    }
    if !raw.contains(&b'\\') {
        return Some(raw);
    }
    Some(unescape(&raw))
}

/// Undoes COPY's text-format escapes.
fn unescape(s: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b != b'\\' || i + 1 == s.len() {
            out.extend_from_slice(&[b]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        i += 2;
        let byte = match c {
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0B,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + u32::from(s[i] - b'0');
                    i += 1;
                    n += 1;
                }
                (v & 0xFF) as u8
            }
            b'x' if i < s.len() && s[i].is_ascii_hexdigit() => {
                let mut v = hex(s[i]);
                i += 1;
                if i < s.len() && s[i].is_ascii_hexdigit() {
                    v = v * 16 + hex(s[i]);
                    i += 1;
                }
                v
            }
            other => other,
        };
        out.extend_from_slice(&[byte]);
    }
    out.freeze()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Types one COPY row against `table`'s columns. Also returns the key columns' raw text
/// (`key` are column indexes), which is what the next chunk's lower bound is made of.
pub fn typed_row(
    table: &Table,
    key: &[usize],
    line: &Bytes,
) -> Result<(Row, Vec<Option<Bytes>>), CopyError> {
    let raw = fields(line);
    if raw.len() != table.columns.len() {
        return Err(CopyError::Width {
            table: format!("{}.{}", table.schema, table.name),
            got: raw.len(),
            want: table.columns.len(),
        });
    }
    let key_text = key.iter().map(|&k| raw[k].clone()).collect();
    Ok((typed_values(table, raw, parse_text)?, key_text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_row(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    #[test]
    fn binary_copy_splits_header_rows_and_trailer() {
        let mut first = SIGNATURE.to_vec();
        first.extend_from_slice(&0u32.to_be_bytes()); // flags
        first.extend_from_slice(&2u32.to_be_bytes()); // a header extension, skipped
        first.extend_from_slice(b"xx");
        first.extend_from_slice(&binary_row(&[Some(&7i32.to_be_bytes()), None, Some(b"")]));
        let second = binary_row(&[Some(b"ab"), Some(b"c"), None]);
        let trailer = (-1i16).to_be_bytes().to_vec();
        let mut c = BinaryCopy::default();
        let mut out = Vec::new();
        for m in [&first, &second, &trailer] {
            let msg = Bytes::copy_from_slice(m);
            let mut rows = Tuples::default();
            c.rows(&msg, &mut rows).unwrap();
            out.extend(rows.iter().map(|r| {
                r.iter()
                    .map(|f| f.clone().map(|r| msg.slice(r)))
                    .collect::<Vec<_>>()
            }));
        }
        let b = |s: &[u8]| Some(Bytes::copy_from_slice(s));
        assert_eq!(
            out,
            vec![
                vec![b(&7i32.to_be_bytes()), None, b(b"")],
                vec![b(b"ab"), b(b"c"), None],
            ]
        );
        // After the trailer nothing may follow.
        assert!(c
            .rows(&Bytes::from(second.clone()), &mut Tuples::default())
            .is_err());
        // Header and trailer in one message: an empty result.
        let mut empty = SIGNATURE.to_vec();
        empty.extend_from_slice(&[0; 8]);
        empty.extend_from_slice(&trailer);
        let mut out = Tuples::default();
        BinaryCopy::default()
            .rows(&Bytes::from(empty), &mut out)
            .unwrap();
        assert_eq!(out.iter().count(), 0);
    }

    #[test]
    fn binary_copy_refuses_cut_or_foreign_data() {
        let mut msg = SIGNATURE.to_vec();
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(&binary_row(&[Some(b"abc"), None]));
        for cut in 0..msg.len() {
            let mut out = Tuples::default();
            let r = BinaryCopy::default().rows(&Bytes::copy_from_slice(&msg[..cut]), &mut out);
            // Cut exactly after the header is a valid (empty) message; anything else errs.
            assert_eq!(r.is_ok(), cut == 19, "cut at {cut}");
        }
        let mut out = Tuples::default();
        assert!(BinaryCopy::default()
            .rows(&Bytes::from_static(b"1\tabc\n"), &mut out)
            .is_err());
    }

    fn f(s: &str) -> Vec<Option<String>> {
        fields(&Bytes::from(s.to_owned()))
            .into_iter()
            .map(|o| o.map(|b| String::from_utf8(b.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn splits_fields_and_nulls() {
        assert_eq!(
            f("1\tabc\t\\N\t\n"),
            vec![
                Some("1".into()),
                Some("abc".into()),
                None,
                Some(String::new())
            ]
        );
        assert_eq!(f("x"), vec![Some("x".into())]);
    }

    #[test]
    fn undoes_escapes() {
        assert_eq!(
            f("a\\tb\\nc\\\\d\\r\\101\\x41\\q\n"),
            vec![Some("a\tb\nc\\d\rAAq".into())]
        );
        // `\N` only as the whole field is NULL; inside text it is an escaped N.
        assert_eq!(f("x\\N"), vec![Some("xN".into())]);
        // Multi-byte UTF-8 passes through untouched.
        assert_eq!(f("h\u{e9}llo\\t"), vec![Some("h\u{e9}llo\t".into())]);
    }
}
