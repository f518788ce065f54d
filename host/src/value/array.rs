//! Parser for Postgres array literals, as `array_out` prints them.
//!
//! Grammar (`array_in`'s, which covers everything `array_out` prints):
//!
//! ```text
//! array    := [bounds '='] level
//! bounds   := ('[' int ':' int ']')+        -- dropped: to_jsonb drops them too
//! level    := '{' '}' | '{' item (DELIM item)* '}'
//! item     := level | '"' (char | '\' char)* '"' | unquoted
//! unquoted := run of chars other than DELIM '{' '}' '"'; '\' escapes;
//!             surrounding whitespace is trimmed; bare NULL (any case) is null
//! ```
//!
//! Sub-arrays must be rectangular and all leaves at the same depth, as in
//! Postgres; at most 6 dimensions (Postgres' `MAXDIM`). Elements are parsed
//! with the element type's own parser, so an array of `date` yields
//! `Value::Date`s: the caller (`text::parse_text`) hands itself in as
//! `parse_elem`, which keeps this module below `text` instead of importing it
//! back. `int2vector`/`oidvector` print as space-separated values
//! instead and get their own small parser.

use bytes::Bytes;

use super::model::{Array, Value, ValueError};
use super::types::TypeInfo;

/// Postgres' `MAXDIM`.
const MAX_DIMS: usize = 6;

/// Parses the text of an array of `elem` (the array type is `ty`); each
/// element's text goes through `parse_elem(elem, text)`.
pub(super) fn parse_array<F>(
    ty: &TypeInfo,
    elem: &TypeInfo,
    raw: Bytes,
    parse_elem: F,
) -> Result<Value, ValueError>
where
    F: Fn(&TypeInfo, Bytes) -> Result<Value, ValueError>,
{
    if ty.is_vector() {
        return parse_vector(elem, &raw, parse_elem);
    }
    let mut p = Parser {
        raw: &raw,
        i: 0,
        delim: elem.array_delimiter(),
        elem,
        parse_elem,
        dims: Vec::new(),
        leaf_depth: None,
        elements: Vec::new(),
    };
    match p.run() {
        Ok(()) => Ok(Value::Array(Array {
            elem_oid: elem.oid,
            dims: p.dims,
            elements: p.elements,
        })),
        Err(Error::Syntax(reason)) => Err(ValueError::new(ty, &raw, reason)),
        Err(Error::Element(e)) => Err(e),
    }
}

/// `int2vector`/`oidvector` text: elements separated by single spaces.
fn parse_vector<F>(elem: &TypeInfo, raw: &Bytes, parse_elem: F) -> Result<Value, ValueError>
where
    F: Fn(&TypeInfo, Bytes) -> Result<Value, ValueError>,
{
    let elements = if raw.is_empty() {
        Vec::new()
    } else {
        raw.split(|&c| c == b' ')
            .map(|part| parse_elem(elem, raw.slice_ref(part)))
            .collect::<Result<Vec<_>, _>>()?
    };
    let dims = match elements.len() {
        0 => Vec::new(),
        n => vec![u32::try_from(n).unwrap_or(u32::MAX)],
    };
    Ok(Value::Array(Array {
        elem_oid: elem.oid,
        dims,
        elements,
    }))
}

enum Error {
    Syntax(&'static str),
    /// An element's own text did not parse; reported as that element's error.
    Element(ValueError),
}

impl From<&'static str> for Error {
    fn from(reason: &'static str) -> Self {
        Error::Syntax(reason)
    }
}

struct Parser<'a, F> {
    raw: &'a Bytes,
    i: usize,
    delim: u8,
    elem: &'a TypeInfo,
    parse_elem: F,
    /// Length of each dimension seen so far (0 = not seen yet).
    dims: Vec<u32>,
    /// Depth of the first scalar element; all others must be at this depth.
    leaf_depth: Option<usize>,
    elements: Vec<Value>,
}

/// `array_isspace`.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl<F> Parser<'_, F>
where
    F: Fn(&TypeInfo, Bytes) -> Result<Value, ValueError>,
{
    fn peek(&self) -> Option<u8> {
        self.raw.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.i += 1;
        }
    }

    fn run(&mut self) -> Result<(), Error> {
        self.skip_ws();
        if self.peek() == Some(b'[') {
            self.skip_bounds()?;
        }
        self.skip_ws();
        self.level(0)?;
        self.skip_ws();
        if self.i != self.raw.len() {
            return Err("trailing characters after array".into());
        }
        Ok(())
    }

    /// Skips `[lo:hi]...=`; the bounds are checked for shape only.
    fn skip_bounds(&mut self) -> Result<(), Error> {
        while self.peek() == Some(b'[') {
            self.i += 1;
            let len = self.raw[self.i..]
                .iter()
                .take_while(|&&c| c.is_ascii_digit() || matches!(c, b':' | b'-' | b'+'))
                .count();
            self.i += len;
            if len == 0 || self.peek() != Some(b']') {
                return Err("malformed array bounds".into());
            }
            self.i += 1;
        }
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return Err("missing '=' after array bounds".into());
        }
        self.i += 1;
        Ok(())
    }

    /// One `{...}` at `depth` (0 = outermost).
    fn level(&mut self, depth: usize) -> Result<(), Error> {
        if self.peek() != Some(b'{') {
            return Err("expected '{'".into());
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            // Only the whole array may be empty ("{{}}" is an error in Postgres).
            return if depth == 0 {
                Ok(())
            } else {
                Err("empty sub-array".into())
            };
        }
        let mut count: u32 = 0;
        loop {
            self.skip_ws();
            if self.peek() == Some(b'{') {
                if self.leaf_depth.is_some_and(|d| d <= depth) {
                    return Err("mixed elements and sub-arrays".into());
                }
                if depth + 1 >= MAX_DIMS {
                    return Err("too many dimensions".into());
                }
                self.level(depth + 1)?;
            } else {
                if *self.leaf_depth.get_or_insert(depth) != depth {
                    return Err("mixed elements and sub-arrays".into());
                }
                self.element()?;
            }
            count = count.saturating_add(1);
            self.skip_ws();
            match self.peek() {
                Some(c) if c == self.delim => self.i += 1,
                Some(b'}') => break,
                _ => return Err("expected delimiter or '}'".into()),
            }
        }
        self.i += 1;
        self.record_dim(depth, count)
    }

    /// Records that a sub-array at `depth` has `count` items; all sub-arrays
    /// at one depth must agree.
    fn record_dim(&mut self, depth: usize, count: u32) -> Result<(), Error> {
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, 0);
        }
        match self.dims[depth] {
            0 => self.dims[depth] = count,
            n if n != count => return Err("sub-arrays have different lengths".into()),
            _ => {}
        }
        Ok(())
    }

    /// One scalar element: quoted, unquoted, or bare NULL.
    fn element(&mut self) -> Result<(), Error> {
        let text = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            match self.unquoted()? {
                Some(text) => text,
                None => {
                    self.elements.push(Value::Null);
                    return Ok(());
                }
            }
        };
        let value = (self.parse_elem)(self.elem, text).map_err(Error::Element)?;
        self.elements.push(value);
        Ok(())
    }

    /// A `"..."` element. Without backslashes it is a zero-copy slice.
    fn quoted(&mut self) -> Result<Bytes, Error> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted element".into()),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.i += 2;
                }
                Some(_) => self.i += 1,
            }
        }
        let end = self.i;
        self.i += 1;
        if escaped {
            Ok(Bytes::from(unescape(&self.raw[start..end]).0))
        } else {
            Ok(self.raw.slice(start..end))
        }
    }

    /// An unquoted element; `None` for a bare `NULL`.
    fn unquoted(&mut self) -> Result<Option<Bytes>, Error> {
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err("unexpected end of array".into()),
                Some(c) if c == self.delim || c == b'}' => break,
                Some(b'{' | b'"') => return Err("unexpected character in element".into()),
                Some(b'\\') => {
                    escaped = true;
                    self.i += 2;
                }
                Some(_) => self.i += 1,
            }
        }
        let end = self.i.min(self.raw.len());
        let text = if escaped {
            // Trailing whitespace is trimmed unless it was escaped.
            let (mut v, keep) = unescape(&self.raw[start..end]);
            let trimmed = v[keep..]
                .iter()
                .rposition(|&c| !is_space(c))
                .map_or(keep, |p| keep + p + 1);
            v.truncate(trimmed);
            Bytes::from(v)
        } else {
            let len = self.raw[start..end]
                .iter()
                .rposition(|&c| !is_space(c))
                .map_or(0, |p| p + 1);
            if self.raw[start..start + len].eq_ignore_ascii_case(b"NULL") {
                return Ok(None);
            }
            self.raw.slice(start..start + len)
        };
        if text.is_empty() {
            return Err("empty unquoted element".into());
        }
        Ok(Some(text))
    }
}

/// Removes backslash escapes. Returns the text and the length up to and
/// including the last escaped character (which trimming must not touch).
fn unescape(s: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(s.len());
    let mut keep = 0;
    let mut it = s.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            if let Some(&next) = it.next() {
                out.push(next);
                keep = out.len();
            }
        } else {
            out.push(c);
        }
    }
    (out, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    // Tests go through the real entry point, which hands `parse_text` in.
    use crate::value::{builtin_type, parse_text, PgText};

    fn parse(type_oid: u32, text: &str) -> Result<Array, ValueError> {
        match parse_text(
            &builtin_type(type_oid).unwrap(),
            Bytes::copy_from_slice(text.as_bytes()),
        )? {
            Value::Array(a) => Ok(a),
            v => panic!("not an array: {v:?}"),
        }
    }

    fn texts(a: &Array) -> Vec<Option<&str>> {
        a.elements
            .iter()
            .map(|v| match v {
                Value::Text(t) => Some(t.as_str()),
                Value::Null => None,
                v => panic!("unexpected {v:?}"),
            })
            .collect()
    }

    const INT4_ARRAY: u32 = 1007;
    const TEXT_ARRAY: u32 = 1009;

    #[test]
    fn shapes() {
        let a = parse(INT4_ARRAY, "{{1,2,3},{4,5,6}}").unwrap();
        assert_eq!(a.elem_oid, 23);
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.elements, (1..=6).map(Value::Int4).collect::<Vec<_>>());
        let empty = parse(INT4_ARRAY, "{}").unwrap();
        assert!(empty.dims.is_empty() && empty.elements.is_empty());
        assert_eq!(
            parse(INT4_ARRAY, "[-5:-4][1:1]={{1},{2}}").unwrap().dims,
            vec![2, 1]
        );
        let six = "{{{{{{1}}}}}}";
        assert_eq!(parse(INT4_ARRAY, six).unwrap().dims, vec![1; 6]);
    }

    #[test]
    fn quoting_escapes_and_nulls() {
        let a = parse(
            TEXT_ARRAY,
            r#"{"a,b","c\"d",NULL,"NULL",null,"",plain,"x\\y",{}}"#,
        );
        assert!(a.is_err(), "'{{}}' inside elements is not an element");
        let a = parse(
            TEXT_ARRAY,
            r#"{"a,b","c\"d",NULL,"NULL",null,"",plain,"x\\y"}"#,
        )
        .unwrap();
        assert_eq!(
            texts(&a),
            [
                Some("a,b"),
                Some("c\"d"),
                None,
                Some("NULL"),
                None,
                Some(""),
                Some("plain"),
                Some("x\\y")
            ]
        );
        // Whitespace around unquoted elements is trimmed, inside kept;
        // escapes work unquoted too and protect trailing spaces.
        let a = parse(TEXT_ARRAY, "{  a b  , c\\,d ,e\\ , NULL }").unwrap();
        assert_eq!(texts(&a), [Some("a b"), Some("c,d"), Some("e "), None]);
        let a = parse(TEXT_ARRAY, "{\"emoji 😀\",é}").unwrap();
        assert_eq!(texts(&a), [Some("emoji 😀"), Some("é")]);
    }

    #[test]
    fn quoted_elements_without_escapes_are_not_copied() {
        let raw = Bytes::from_static(b"{\"abc def\"}");
        let ty = builtin_type(TEXT_ARRAY).unwrap();
        let Value::Array(a) = parse_text(&ty, raw.clone()).unwrap() else {
            panic!()
        };
        let Value::Text(t) = &a.elements[0] else {
            panic!()
        };
        assert_eq!(t.as_bytes().as_ptr(), raw[2..].as_ptr());
        assert_eq!(t, &PgText::from_static("abc def"));
    }

    #[test]
    fn box_arrays_use_semicolons() {
        let a = parse(1020, "{(1,1),(0,0);(2,2),(1,1)}").unwrap();
        assert_eq!(a.dims, vec![2]);
        let Value::Other { text, .. } = &a.elements[1] else {
            panic!()
        };
        assert_eq!(text.as_str(), "(2,2),(1,1)");
    }

    #[test]
    fn malformed_arrays() {
        for text in [
            "",
            "{",
            "}",
            "1,2",
            "{1,}",
            "{,1}",
            "{1,,2}",
            "{1}x",
            "{{}}",
            "{{1},{2,3}}",
            "{{1},2}",
            "{1,{2}}",
            "{{{{{{{1}}}}}}}",
            "[1:2]{1,2}",
            "[]={1}",
            "[1:2={1}",
            "{\"1}",
            "{1\"2\"}",
            "{1 2}",
            "{NULL\\}",
        ] {
            assert!(parse(INT4_ARRAY, text).is_err(), "accepted {text:?}");
        }
        assert!(parse(TEXT_ARRAY, "{a\"b\"}").is_err());
        assert!(parse(TEXT_ARRAY, "{\"a\"b}").is_err());
    }
}
