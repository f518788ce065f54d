//! Rendering [`Value`]s as JSON, byte-for-byte as Postgres'
//! `to_jsonb(value)::text` prints them (with `TimeZone=UTC`).
//!
//! What `to_jsonb` does per type (Postgres 15, `datum_to_jsonb`):
//! * int2/int4/int8/float4/float8/numeric: the type's *text output* is fed to
//!   `numeric_in`, so the JSON number is that text re-printed as a numeric:
//!   floats lose their exponent (`1e+100` → `1` and 100 zeros, `1.5e-05` →
//!   `0.000015`) and `-0` becomes `0`. Text containing `N`/`n` (`NaN`,
//!   `Infinity`, `-Infinity`) becomes a JSON string instead.
//! * date, timestamp, timestamptz: ISO 8601 strings with a `T`
//!   (`2024-01-15T10:20:30.5+00:00`), `" BC"` appended for BC years, and the
//!   strings `infinity` / `-infinity`.
//! * json/jsonb: embedded as JSON.
//! * everything else (time, timetz, interval, uuid, bytea, text, enums,
//!   `oid`, ...): a JSON string of the type's text output.
//! * arrays: JSON arrays (nested per dimension), with `", "` between
//!   elements as jsonb prints them.
//!
//! Everything is written straight into the caller's buffer; nothing here
//! allocates except growing that buffer.
//!
//! Layout: `digits` (integers in decimal) is the leaf the others print
//! with; `float` and `datetime` format those types; this module dispatches
//! and writes strings, arrays and the rest; `validate` checks `json` input
//! for the parser and is used by nothing here.

mod datetime;
mod digits;
mod float;
pub(in crate::value) use self::float::write_float8_text;
pub(super) mod validate;

use self::datetime::{write_date, write_interval, write_offset, write_time, write_timestamp};
use self::digits::{hex_digit, push_hex, push_i64};
use self::float::write_float;
use super::model::{Array, Numeric, Value};

/// Appends `v` rendered as `to_jsonb` would render it.
///
/// `Value::UnchangedToast` has no value to render; it is written as `null`
/// so the output stays valid JSON, but callers should not get here with it.
///
/// `Value::Json` is embedded as the server sent it (minus surrounding
/// whitespace). `to_jsonb(json)` would normalise it (whitespace, key order,
/// duplicate keys, number spelling such as `1.0e2` → `100`); parsing
/// and re-printing every json value would cost a lot for little gain, so we
/// do not.
pub fn write_json(v: &Value, out: &mut Vec<u8>) {
    write_value(v, out, false)
}

/// [`write_json`], except that `int8` and finite `numeric` values (also inside arrays)
/// are JSON strings of their digits: what the JSON transform world hands to guests,
/// whose JSON parsers (JavaScript's) would round a number to a double.
pub fn write_json_exact(v: &Value, out: &mut Vec<u8>) {
    write_value(v, out, true)
}

fn write_value(v: &Value, out: &mut Vec<u8>, exact: bool) {
    match v {
        Value::Int8(i) if exact => quoted(out, |out| push_i64(out, *i)),
        Value::Numeric(Numeric::Finite(text)) if exact => {
            quoted(out, |out| out.extend_from_slice(text))
        }
        Value::Null | Value::UnchangedToast => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int2(i) => push_i64(out, i64::from(*i)),
        Value::Int4(i) => push_i64(out, i64::from(*i)),
        Value::Int8(i) => push_i64(out, *i),
        Value::Float4(f) => write_float(out, *f),
        Value::Float8(f) => write_float(out, *f),
        Value::Numeric(n) => write_numeric(out, n),
        Value::Text(t) | Value::Enum(t) | Value::Other { text: t, .. } => {
            write_json_bytes(t.as_bytes(), out)
        }
        Value::Json(t) | Value::Jsonb(t) => out.extend_from_slice(t.as_bytes().trim_ascii()),
        Value::Bytea(b) => {
            // The string is `\x0102`, whose backslash JSON escapes.
            out.extend_from_slice(b"\"\\\\x");
            push_hex(out, b);
            out.push(b'"');
        }
        Value::Uuid(u) => write_uuid(out, u),
        Value::Date(d) => quoted(out, |out| write_date(out, *d)),
        Value::Time(t) => quoted(out, |out| write_time(out, *t)),
        Value::TimeTz {
            micros,
            offset_secs,
        } => quoted(out, |out| {
            write_time(out, *micros);
            write_offset(out, *offset_secs);
        }),
        Value::Timestamp(ts) => quoted(out, |out| write_timestamp(out, *ts, false)),
        Value::TimestampTz(ts) => quoted(out, |out| write_timestamp(out, *ts, true)),
        Value::Interval {
            months,
            days,
            micros,
        } => quoted(out, |out| write_interval(out, *months, *days, *micros)),
        Value::Array(a) => write_array(out, a, exact),
    }
}

/// Writes `s` as a JSON string with Postgres' `escape_json` escapes:
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as
/// `\u00xx` (lowercase hex), and everything else (including non-ASCII and
/// DEL) raw.
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    write_json_bytes(s.as_bytes(), out)
}

/// Escape action per byte: 0 = copy, `u` = `\u00xx`, else `\` + that byte.
static ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any of the 8 bytes in `w` needs an escape: a control character (below
/// 0x20), `"` or a backslash. Bytes of 0x80 and above never do. (The classic "has a zero byte"
/// tests; exact for whether there is one, which is all that is asked.)
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
    below_space || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// [`write_json_str`] on bytes that are known to be UTF-8. Copies runs of
/// plain bytes in one go; only escapes are written byte by byte. Plain runs are
/// skipped 8 bytes at a time (text columns are long runs of plain bytes).
fn write_json_bytes(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        while let Some(word) = s.get(i..i + 8) {
            if word_needs_escape(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
                break;
            }
            i += 8;
        }
        let Some(&c) = s.get(i) else { break };
        let esc = ESCAPES[usize::from(c)];
        i += 1;
        if esc == 0 {
            continue;
        }
        let i = i - 1;
        out.extend_from_slice(&s[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(hex_digit(c >> 4));
            out.push(hex_digit(c));
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Writes `"` + whatever `body` writes + `"`. Only for bodies that need no
/// escaping (dates, times, intervals: ASCII letters, digits and `+-:. `).
fn quoted(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    body(out);
    out.push(b'"');
}

fn write_numeric(out: &mut Vec<u8>, n: &Numeric) {
    match n {
        Numeric::Finite(text) => out.extend_from_slice(text),
        Numeric::NaN => out.extend_from_slice(b"\"NaN\""),
        Numeric::PosInf => out.extend_from_slice(b"\"Infinity\""),
        Numeric::NegInf => out.extend_from_slice(b"\"-Infinity\""),
    }
}

fn write_uuid(out: &mut Vec<u8>, u: &[u8; 16]) {
    out.push(b'"');
    for (i, chunk) in [&u[0..4], &u[4..6], &u[6..8], &u[8..10], &u[10..16]]
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b'-');
        }
        push_hex(out, chunk);
    }
    out.push(b'"');
}

// ---------------------------------------------------------------------------
// Arrays

/// Nested JSON arrays per dimension. A hand-built `Array` whose `dims` do
/// not match its element count is written flat rather than guessed at.
fn write_array(out: &mut Vec<u8>, a: &Array, exact: bool) {
    let product = a
        .dims
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n as usize));
    if a.dims.is_empty() || product != Some(a.elements.len()) {
        return write_list(out, &a.elements, exact);
    }
    let mut next = a.elements.iter();
    write_dims(out, &a.dims, &mut next, exact);
}

fn write_dims<'a>(
    out: &mut Vec<u8>,
    dims: &[u32],
    next: &mut impl Iterator<Item = &'a Value>,
    exact: bool,
) {
    out.push(b'[');
    for i in 0..dims[0] {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        if dims.len() > 1 {
            write_dims(out, &dims[1..], next, exact);
        } else {
            write_value(next.next().unwrap_or(&Value::Null), out, exact);
        }
    }
    out.push(b']');
}

fn write_list(out: &mut Vec<u8>, values: &[Value], exact: bool) {
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_value(v, out, exact);
    }
    out.push(b']');
}

impl Value {
    /// Renders this value as `to_jsonb(value)` would, appending to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        write_json(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn json(v: &Value) -> String {
        let mut out = Vec::new();
        write_json(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Postgres' `escape_json`, written the obvious way.
    fn reference_escape(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn string_escapes_match_escape_json() {
        let all_ascii: String = (0u8..0x80).map(char::from).collect();
        for s in [
            all_ascii.as_str(),
            "",
            "plain",
            "a\"b\\c",
            "é😀\u{7f}\u{80}\u{2028}",
            "\u{0}end",
            "</script>",
        ] {
            let mut out = Vec::new();
            write_json_str(s, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), reference_escape(s));
        }
    }

    /// The 8-bytes-at-a-time scan: every character that needs an escape, at every
    /// position of strings around a word's length, among plain ASCII and non-ASCII.
    #[test]
    fn escapes_are_found_wherever_they_fall_in_a_word() {
        for len in 0..20 {
            for pos in 0..len {
                for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', ' ', '~'] {
                    for filler in ['a', 'ü'] {
                        let s: String = (0..len)
                            .map(|i| if i == pos { special } else { filler })
                            .collect();
                        let mut out = Vec::new();
                        write_json_str(&s, &mut out);
                        assert_eq!(
                            String::from_utf8(out).unwrap(),
                            reference_escape(&s),
                            "{s:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn hand_built_values_never_panic() {
        for v in [
            Value::Date(i32::MIN + 1),
            Value::Date(i32::MAX - 1),
            Value::Timestamp(i64::MIN + 1),
            Value::Timestamp(i64::MAX - 1),
            Value::Time(-1),
            Value::Time(i64::MAX),
            Value::TimeTz {
                micros: 0,
                offset_secs: i32::MIN,
            },
            Value::Interval {
                months: i32::MIN,
                days: 0,
                micros: i64::MIN,
            },
            Value::Float4(f32::MIN_POSITIVE / 2.0),
            Value::Float8(f64::MAX),
        ] {
            let out = json(&v);
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                "{v:?}: {out}"
            );
        }
    }

    #[test]
    fn intervals() {
        let iv = |months, days, micros| {
            json(&Value::Interval {
                months,
                days,
                micros,
            })
        };
        assert_eq!(iv(i32::MAX, i32::MAX, i64::MAX), "\"infinity\"");
        assert_eq!(iv(i32::MIN, i32::MIN, i64::MIN), "\"-infinity\"");
        assert_eq!(iv(-13, 1, 0), "\"-1 years -1 mons +1 day\"");
        assert_eq!(iv(0, -1, 1), "\"-1 days +00:00:00.000001\"");
        assert_eq!(iv(1, 0, -3_600_000_000), "\"1 mon -01:00:00\"");
    }

    #[test]
    fn arrays_with_inconsistent_dims_render_flat() {
        let a = Value::Array(Array {
            elem_oid: 23,
            dims: vec![2, 2],
            elements: vec![Value::Int4(1), Value::Null, Value::Int4(3)],
        });
        assert_eq!(json(&a), "[1, null, 3]");
        let huge = Value::Array(Array {
            elem_oid: 23,
            dims: vec![u32::MAX, u32::MAX, u32::MAX],
            elements: vec![],
        });
        assert_eq!(json(&huge), "[]");
    }

    #[test]
    fn bytea_and_uuid() {
        assert_eq!(
            json(&Value::Bytea(Bytes::from_static(b"\x00\xff"))),
            r#""\\x00ff""#
        );
        let u = Value::Uuid(*b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef");
        assert_eq!(json(&u), "\"01234567-89ab-cdef-0123-456789abcdef\"");
    }
}
