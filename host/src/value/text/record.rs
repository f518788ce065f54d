//! Composite (row) values and `hstore`, parsed from their text output and rendered as the
//! JSON object `to_jsonb()` makes of them.
//!
//! `to_jsonb` turns a composite into an object of its fields by name (each field rendered
//! by its own type: nested composites are objects, arrays are arrays, domains their base
//! type) and an `hstore` into the object of hstore's cast to json (every value a string or
//! null). Both come out as `jsonb` text: keys in jsonb's order (shorter first, then bytewise)
//! with `": "` and `", "` between them, byte for byte what `to_jsonb(..)::text` prints.
//!
//! The result is kept as a [`Value::Jsonb`]: every consumer then sees the field names and
//! nested values — the native JSON and Debezium encoders embed it, and transforms get it as
//! WIT `jsonb` (the WIT has no recursive types, so a composite cannot be a record of WIT
//! values there). The column's `type_oid` still names the composite or hstore type.

use bytes::Bytes;

use super::super::json::{write_json, write_json_str};
use super::super::model::{PgText, Value, ValueError};
use super::super::types::{Composite, TypeInfo};

/// `record_out`'s text (`(1,"a b",,"")`: an empty field is NULL, `""` the empty string)
/// → the `to_jsonb` object, fields parsed as their types by `parse`.
pub(super) fn parse_composite(
    ty: &TypeInfo,
    c: &Composite,
    raw: &[u8],
    parse: fn(&TypeInfo, Bytes) -> Result<Value, ValueError>,
) -> Result<Value, ValueError> {
    let err = |reason| ValueError::new(ty, raw, reason);
    let inner = raw
        .strip_prefix(b"(")
        .and_then(|r| r.strip_suffix(b")"))
        .ok_or_else(|| err("a composite value is (field,...)"))?;
    let mut pos = 0;
    let mut entries: Vec<(&str, Vec<u8>)> = Vec::with_capacity(c.fields.len());
    for (i, field) in c.fields.iter().enumerate() {
        if i > 0 {
            if inner.get(pos) != Some(&b',') {
                return Err(err("fewer fields than the composite type has"));
            }
            pos += 1;
        }
        let (text, next) = field_text(inner, pos).ok_or_else(|| err("unterminated quote"))?;
        pos = next;
        let mut rendered = Vec::new();
        match text {
            None => rendered.extend_from_slice(b"null"),
            Some(t) => write_json(&parse(&field.ty, Bytes::from(t))?, &mut rendered),
        }
        entries.push((&*field.name, rendered));
    }
    if pos != inner.len() {
        return Err(err("more fields than the composite type has"));
    }
    Ok(Value::Jsonb(object(entries)))
}

/// One field of `record_out`'s text starting at `pos`: `None` for NULL (nothing before the
/// next `,` or the end), else its unescaped bytes (`""` inside quotes is `"`, `\x` is `x`),
/// and where the field ends. `None` overall for an unterminated quote or escape.
#[allow(clippy::type_complexity)]
fn field_text(s: &[u8], mut pos: usize) -> Option<(Option<Vec<u8>>, usize)> {
    if pos == s.len() || s[pos] == b',' {
        return Some((None, pos));
    }
    let mut out = Vec::new();
    let mut in_quote = false;
    while pos < s.len() {
        let ch = s[pos];
        if !in_quote && ch == b',' {
            break;
        }
        pos += 1;
        match ch {
            b'\\' => {
                out.push(*s.get(pos)?);
                pos += 1;
            }
            b'"' if !in_quote => in_quote = true,
            b'"' if s.get(pos) == Some(&b'"') => {
                out.push(b'"');
                pos += 1;
            }
            b'"' => in_quote = false,
            _ => out.push(ch),
        }
    }
    if in_quote {
        return None;
    }
    Some((Some(out), pos))
}

/// `hstore_out`'s text (`"k"=>"v", "n"=>NULL`, keys and values always quoted, `"` and `\`
/// backslash-escaped) → `{"k": "v", "n": null}`.
pub(super) fn parse_hstore(ty: &TypeInfo, raw: &[u8]) -> Result<Value, ValueError> {
    let err = |reason| ValueError::new(ty, raw, reason);
    let mut pos = 0;
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let skip_ws = |pos: &mut usize| {
        while raw.get(*pos).is_some_and(u8::is_ascii_whitespace) {
            *pos += 1;
        }
    };
    skip_ws(&mut pos);
    while pos < raw.len() {
        if !entries.is_empty() {
            if raw[pos] != b',' {
                return Err(err("pairs are separated by ','"));
            }
            pos += 1;
            skip_ws(&mut pos);
        }
        let key = quoted(raw, &mut pos).ok_or_else(|| err("a key is a quoted string"))?;
        skip_ws(&mut pos);
        if !raw[pos..].starts_with(b"=>") {
            return Err(err("a key is followed by =>"));
        }
        pos += 2;
        skip_ws(&mut pos);
        let mut rendered = Vec::new();
        if raw[pos..].len() >= 4 && raw[pos..pos + 4].eq_ignore_ascii_case(b"NULL") {
            pos += 4;
            rendered.extend_from_slice(b"null");
        } else {
            let v = quoted(raw, &mut pos).ok_or_else(|| err("a value is NULL or quoted"))?;
            let v = String::from_utf8(v).map_err(|_| err("invalid UTF-8"))?;
            write_json_str(&v, &mut rendered);
        }
        let key = String::from_utf8(key).map_err(|_| err("invalid UTF-8"))?;
        entries.push((key, rendered));
        skip_ws(&mut pos);
    }
    // hstore keeps keys unique; a repeated key would be an invalid JSON object here.
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(err("repeated key"));
    }
    Ok(Value::Jsonb(object(
        entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect(),
    )))
}

/// A `"…"` string with backslash escapes at `pos`; advances past it.
fn quoted(s: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    if s.get(*pos) != Some(&b'"') {
        return None;
    }
    let mut i = *pos + 1;
    let mut out = Vec::new();
    loop {
        match *s.get(i)? {
            b'"' => break,
            b'\\' => {
                out.push(*s.get(i + 1)?);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    *pos = i + 1;
    Some(out)
}

/// A jsonb object's text: keys sorted as jsonb stores them (by length, then bytes), `": "`
/// after a key and `", "` between pairs. Keys are unique (composite fields, hstore keys).
/// The binary decoder builds the same objects from the send formats.
pub(in crate::value) fn object(mut entries: Vec<(&str, Vec<u8>)>) -> PgText {
    entries.sort_by(|(a, _), (b, _)| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
    let mut out = Vec::with_capacity(
        2 + entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>(),
    );
    out.push(b'{');
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_json_str(k, &mut out);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
    }
    out.push(b'}');
    PgText::from(String::from_utf8(out).expect("JSON written from UTF-8 parts"))
}

#[cfg(test)]
mod tests {
    use super::super::parse_text;
    use super::*;
    use crate::value::{builtin_type, oid, Field};

    fn field(name: &str, oid: u32) -> Field {
        Field {
            name: name.into(),
            ty: builtin_type(oid).unwrap(),
        }
    }

    fn json(ty: &TypeInfo, text: &str) -> String {
        match parse_text(ty, Bytes::copy_from_slice(text.as_bytes())) {
            Ok(Value::Jsonb(t)) => t.as_str().to_owned(),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    /// Expected texts are `to_jsonb(..)::text` from PostgreSQL 15.
    #[test]
    fn composites_render_as_to_jsonb() {
        let holding = TypeInfo::composite(
            90001,
            vec![
                field("quantity", oid::NUMERIC),
                field("instrument_code", oid::TEXT),
            ],
        );
        assert_eq!(
            json(&holding, "(10.50,AAPL)"),
            r#"{"quantity": 10.50, "instrument_code": "AAPL"}"#
        );
        assert_eq!(
            json(&holding, r#"(,"")"#),
            r#"{"quantity": null, "instrument_code": ""}"#
        );
        assert_eq!(
            json(&holding, r#"(1,"a ""q"" \\ b, (c)")"#),
            r#"{"quantity": 1, "instrument_code": "a \"q\" \\ b, (c)"}"#
        );
        // Nested, with arrays inside and an array of them.
        let outer = TypeInfo::composite(
            90002,
            vec![
                Field {
                    name: "h".into(),
                    ty: holding.clone(),
                },
                field("at", oid::TIMESTAMPTZ),
                field("tags", 1009),
                field("ok", oid::BOOL),
            ],
        );
        assert_eq!(
            json(
                &outer,
                r#"("(2,X)","2024-01-15 10:20:30+00","{a,""b c""}",t)"#
            ),
            r#"{"h": {"quantity": 2, "instrument_code": "X"}, "at": "2024-01-15T10:20:30+00:00", "ok": true, "tags": ["a", "b c"]}"#
        );
        let arr = TypeInfo::array(90003, holding.clone());
        let v = parse_text(&arr, Bytes::from_static(br#"{"(1,A)",NULL,"(,\"x y\")"}"#)).unwrap();
        let mut out = Vec::new();
        write_json(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"quantity": 1, "instrument_code": "A"}, null, {"quantity": null, "instrument_code": "x y"}]"#
        );
        for bad in ["", "(1)", "(1,a,b)", "1,a", "(1,\"a)", "(x,a)"] {
            assert!(
                parse_text(&holding, Bytes::copy_from_slice(bad.as_bytes())).is_err(),
                "{bad:?}"
            );
        }
        // jsonb key order: shorter keys first, then bytewise.
        let keys = TypeInfo::composite(
            90004,
            vec![
                field("bb", oid::INT4),
                field("a", oid::INT4),
                field("ab", oid::INT4),
            ],
        );
        assert_eq!(json(&keys, "(1,2,3)"), r#"{"a": 2, "ab": 3, "bb": 1}"#);
    }

    #[test]
    fn hstore_renders_as_to_jsonb() {
        let h = TypeInfo::hstore(90010);
        assert_eq!(
            json(&h, r#""key1"=>"val1", "key2"=>NULL"#),
            r#"{"key1": "val1", "key2": null}"#
        );
        assert_eq!(json(&h, ""), "{}");
        assert_eq!(
            json(&h, r#""a\"b"=>"c\\d", "zz"=>"NULL", "b"=>"""#),
            r#"{"b": "", "zz": "NULL", "a\"b": "c\\d"}"#
        );
        let arr = TypeInfo::array(90011, h.clone());
        let v = parse_text(&arr, Bytes::from_static(br#"{"\"a\"=>\"1\"",NULL}"#)).unwrap();
        let mut out = Vec::new();
        write_json(&v, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"[{"a": "1"}, null]"#);
        for bad in [
            r#""a"=>"1" "b"=>"2""#,
            r#""a"=>"#,
            r#"a=>b"#,
            r#""a"=>"1", "a"=>"2""#,
        ] {
            assert!(
                parse_text(&h, Bytes::copy_from_slice(bad.as_bytes())).is_err(),
                "{bad:?}"
            );
        }
    }
}
