//! `COPY … TO STDOUT` text format → typed rows (pure).
//!
//! Postgres sends one row per CopyData message: fields separated by tabs, `\N` for NULL,
//! backslash escapes for tab, newline, backslash and friends. The text of each field is
//! exactly what the type's output function prints — the same text pgoutput sends — so the
//! same parsers (`value::parse_text`) type it, under the same session settings. A field
//! without a backslash is a slice of the received buffer (no copy).

use bytes::{Bytes, BytesMut};

use crate::change::{Row, Table};
use crate::value::{parse_text, Value};

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
    let mut values = Vec::with_capacity(raw.len());
    for (f, col) in raw.into_iter().zip(&table.columns) {
        values.push(match f {
            None => Value::Null,
            Some(text) => parse_text(&col.type_info, text).map_err(|e| CopyError::Value {
                column: col.name.to_string(),
                message: e.to_string(),
            })?,
        });
    }
    Ok((Row(values), key_text))
}

#[cfg(test)]
mod tests {
    use super::*;

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
