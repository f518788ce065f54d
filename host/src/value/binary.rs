//! Parsing the Postgres binary send format (pgoutput `binary = true`) into the same
//! [`Value`]s as [`super::parse_text`], so every output is byte-identical in both modes.
//!
//! The model was made for this: dates, times, timestamps and intervals are kept as the
//! server's own integers, so binary values need no calendar at all; `numeric` is turned
//! back into the exact decimal text its output function prints (base-10000 digits, `dscale`
//! fractional digits). Types kept as text ([`TypeKind::Other`]) get their text back from
//! the send format where the output function is simple and fixed (see [`TextSend`]:
//! inet/cidr, point, bit strings, macaddr, xml, citext, ltree, …). The rest (money: its
//! text depends on `lc_monetary`; ranges and tsvector: their own quoting; pg_lsn: its
//! text changed in Postgres 18; the reg* types: their text is a catalog name) have no
//! binary decoder; binary mode refuses them at start (see `source::open`) rather than
//! guessing here.
//!
//! Every parser is total: malformed input gives an error, never a panic.

use std::fmt::Write;

use bytes::Bytes;

use super::json::{write_float8_text, write_json, write_json_str};
use super::model::{Array, Numeric, PgText, Value, ValueError};
use super::text::record::object;
use super::types::{Composite, TypeInfo, TypeKind};

type Reason = &'static str;

/// `"char"`: one raw byte in the send format, octal-escaped by its output function.
const CHAR_OID: u32 = 18;
/// Dimensions Postgres allows (`MAXDIM`).
const MAX_DIMS: usize = 6;

/// Whether values of `ty` can be decoded from the binary send format (arrays: their
/// elements).
pub fn has_binary_decoder(ty: &TypeInfo) -> bool {
    match &ty.kind {
        TypeKind::Other => TextSend::of(ty.oid).is_some(),
        TypeKind::Array(elem) => has_binary_decoder(elem),
        // `record_send` sends each field in its own type's binary format.
        TypeKind::Composite(c) => c.fields.iter().all(|f| has_binary_decoder(&f.ty)),
        _ => true,
    }
}

/// Parses the binary send format of a value of type `ty`.
pub fn parse_binary(ty: &TypeInfo, raw: Bytes) -> Result<Value, ValueError> {
    match scalar(ty, &raw) {
        Some(parsed) => parsed.map_err(|reason| ValueError::new(ty, &raw, reason)),
        None => parse_kept(ty, raw),
    }
}

/// [`parse_binary`] of `whole[range]`, taking a slice of `whole` (a shared reference
/// count: an atomic operation here and another where the value is dropped) only for values
/// that keep their bytes — text, bytea, json, arrays, … — not for numbers and times.
pub fn parse_binary_at(
    ty: &TypeInfo,
    whole: &Bytes,
    range: std::ops::Range<usize>,
) -> Result<Value, ValueError> {
    let s = &whole[range.clone()];
    match scalar(ty, s) {
        Some(parsed) => parsed.map_err(|reason| ValueError::new(ty, s, reason)),
        None => parse_kept(ty, whole.slice(range)),
    }
}

/// The types whose value is built from the bytes without keeping them (`None`: another
/// kind).
fn scalar(ty: &TypeInfo, s: &[u8]) -> Option<Result<Value, Reason>> {
    Some(match &ty.kind {
        TypeKind::Bool => fixed::<1>(s).and_then(|b| match b[0] {
            0 => Ok(Value::Bool(false)),
            1 => Ok(Value::Bool(true)),
            _ => Err("bool byte is neither 0 nor 1"),
        }),
        TypeKind::Int2 => fixed(s).map(|b| Value::Int2(i16::from_be_bytes(b))),
        TypeKind::Int4 => fixed(s).map(|b| Value::Int4(i32::from_be_bytes(b))),
        TypeKind::Int8 => fixed(s).map(|b| Value::Int8(i64::from_be_bytes(b))),
        TypeKind::Float4 => fixed(s).map(|b| Value::Float4(f32::from_be_bytes(b))),
        TypeKind::Float8 => fixed(s).map(|b| Value::Float8(f64::from_be_bytes(b))),
        TypeKind::Numeric => numeric(s).map(Value::Numeric),
        TypeKind::Uuid => fixed(s).map(Value::Uuid),
        TypeKind::Date => fixed(s).map(|b| Value::Date(i32::from_be_bytes(b))),
        TypeKind::Time => fixed(s).map(|b| Value::Time(i64::from_be_bytes(b))),
        TypeKind::TimeTz => fixed::<12>(s).map(|b| {
            let micros = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
            // Stored as seconds west of UTC; the model keeps the printed sign.
            let zone = i32::from_be_bytes(b[8..].try_into().expect("4 bytes"));
            Value::TimeTz {
                micros,
                offset_secs: zone.wrapping_neg(),
            }
        }),
        TypeKind::Timestamp => fixed(s).map(|b| Value::Timestamp(i64::from_be_bytes(b))),
        TypeKind::TimestampTz => fixed(s).map(|b| Value::TimestampTz(i64::from_be_bytes(b))),
        TypeKind::Interval => fixed::<16>(s).map(|b| Value::Interval {
            micros: i64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            days: i32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
            months: i32::from_be_bytes(b[12..].try_into().expect("4 bytes")),
        }),
        TypeKind::Text if ty.oid == CHAR_OID => Ok(Value::Text(char_text(s))),
        _ => return None,
    })
}

/// The kinds whose value keeps (a slice of) `raw`, or is built by a parser of its own.
fn parse_kept(ty: &TypeInfo, raw: Bytes) -> Result<Value, ValueError> {
    // The commonest kinds take `raw` itself: no second reference count.
    match &ty.kind {
        TypeKind::Text => return Value::text_of(ty, raw, Value::Text),
        TypeKind::Json => return Value::text_of(ty, raw, Value::Json),
        TypeKind::Enum => return Value::text_of(ty, raw, Value::Enum),
        TypeKind::Bytea => return Ok(Value::Bytea(raw)),
        TypeKind::Jsonb if raw.first() == Some(&1) => {
            let mut body = raw;
            bytes::Buf::advance(&mut body, 1); // the version byte; no new reference
            return Value::text_of(ty, body, Value::Jsonb);
        }
        _ => {}
    }
    let s: &[u8] = &raw;
    let parsed = match &ty.kind {
        TypeKind::Jsonb => match s.first() {
            Some(_) => Err("unknown jsonb binary version"),
            None => Err("empty jsonb"),
        },
        TypeKind::Array(elem) => return array(ty, elem, &raw),
        TypeKind::Composite(c) => return composite(ty, c, &raw),
        TypeKind::Hstore => return hstore(ty, &raw),
        TypeKind::ExtText { versioned } => {
            let body = if *versioned {
                match s.first() {
                    Some(1) => Ok(raw.slice(1..)),
                    Some(_) => Err("unknown binary format version"),
                    None => Err("empty value"),
                }
            } else {
                Ok(raw.clone())
            };
            body.and_then(|b| text(&b)).map(|text| Value::Other {
                type_oid: ty.oid,
                text,
            })
        }
        TypeKind::Other => match TextSend::of(ty.oid) {
            Some(how) => how.text(&raw).map(|text| Value::Other {
                type_oid: ty.oid,
                text,
            }),
            None => Err("no binary decoder for this type"),
        },
        // Handled by `scalar` or above.
        _ => Err("internal: not a kind parse_kept handles"),
    };
    parsed.map_err(|reason| ValueError::new(ty, s, reason))
}

fn fixed<const N: usize>(s: &[u8]) -> Result<[u8; N], Reason> {
    s.try_into()
        .map_err(|_| "wrong length for the type's binary format")
}

fn text(raw: &Bytes) -> Result<PgText, Reason> {
    PgText::new(raw.clone()).map_err(|_| "invalid UTF-8")
}

/// `charout`: a byte with the high bit set prints as `\ooo`, a zero byte as nothing.
fn char_text(s: &[u8]) -> PgText {
    match s.first() {
        None | Some(0) => PgText::from_static(""),
        Some(&b) if b >= 0x80 => PgText::from(format!("\\{b:03o}")),
        Some(&b) => PgText::from(String::from(b as char)),
    }
}

/// `numeric_send` → the text `numeric_out` prints: `ndigits`, `weight`, `sign`, `dscale`,
/// then `ndigits` base-10000 digits, the first of which is worth 10000^weight.
fn numeric(s: &[u8]) -> Result<Numeric, Reason> {
    let head: [u8; 8] = s
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("numeric header cut short")?;
    let ndigits = i16::from_be_bytes([head[0], head[1]]);
    let weight = i16::from_be_bytes([head[2], head[3]]) as i32;
    let sign = u16::from_be_bytes([head[4], head[5]]);
    let dscale = u16::from_be_bytes([head[6], head[7]]);
    match sign {
        0xC000 => return Ok(Numeric::NaN),
        0xD000 => return Ok(Numeric::PosInf),
        0xF000 => return Ok(Numeric::NegInf),
        0x0000 | 0x4000 => {}
        _ => return Err("invalid numeric sign"),
    }
    if ndigits < 0 || dscale > 0x3FFF {
        return Err("invalid numeric header");
    }
    let body = &s[8..];
    if body.len() != ndigits as usize * 2 {
        return Err("numeric digits do not match ndigits");
    }
    if body
        .chunks_exact(2)
        .any(|d| u16::from_be_bytes([d[0], d[1]]) > 9999)
    {
        return Err("numeric digit out of range");
    }
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| body.get(2 * i..2 * i + 2))
            .map_or(0, |d| u16::from_be_bytes([d[0], d[1]]))
    };
    // The exact length first: one allocation of the final size, which `Bytes` then takes
    // over as it is (a buffer with spare capacity would cost it a second allocation).
    // A snapshot of a table with numeric columns types one of these per row and column.
    let first = digit(0);
    let int_len = if weight < 0 {
        1
    } else {
        group_width(first) + 4 * weight as usize
    };
    let len =
        usize::from(sign == 0x4000) + int_len + if dscale > 0 { 1 + dscale as usize } else { 0 };
    let mut out = Vec::with_capacity(len);
    if sign == 0x4000 {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        let g = group(first);
        out.extend_from_slice(&g[4 - group_width(first)..]);
        for i in 1..=weight {
            out.extend_from_slice(&group(digit(i)));
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let mut left = dscale as usize;
        let mut i = weight + 1;
        while left > 0 {
            let n = left.min(4);
            out.extend_from_slice(&group(digit(i))[..n]);
            left -= n;
            i += 1;
        }
    }
    debug_assert_eq!(out.len(), len);
    Ok(Numeric::Finite(Bytes::from(out)))
}

/// A base-10000 digit as its four decimal digits.
fn group(d: u16) -> [u8; 4] {
    [
        b'0' + (d / 1000) as u8,
        b'0' + (d / 100 % 10) as u8,
        b'0' + (d / 10 % 10) as u8,
        b'0' + (d % 10) as u8,
    ]
}

/// How many decimal digits `d` prints without padding (`0` prints one).
fn group_width(d: u16) -> usize {
    match d {
        1000.. => 4,
        100.. => 3,
        10.. => 2,
        _ => 1,
    }
}

/// `array_send`: `ndim`, a has-nulls flag, the element type, `ndim` × (length, lower
/// bound), then each element as a length (-1: NULL) and its bytes.
fn array(ty: &TypeInfo, elem: &TypeInfo, raw: &Bytes) -> Result<Value, ValueError> {
    let err = |reason| ValueError::new(ty, raw, reason);
    let mut pos = 0;
    let i32_at = |pos: &mut usize| -> Result<i32, ValueError> {
        let b = raw
            .get(*pos..*pos + 4)
            .ok_or_else(|| err("array cut short"))?;
        *pos += 4;
        Ok(i32::from_be_bytes(b.try_into().expect("4 bytes")))
    };
    let ndim = i32_at(&mut pos)?;
    let _flags = i32_at(&mut pos)?;
    let _elem_oid = i32_at(&mut pos)?;
    let ndim = usize::try_from(ndim)
        .ok()
        .filter(|n| *n <= MAX_DIMS)
        .ok_or_else(|| err("invalid array dimensions"))?;
    let mut dims = Vec::with_capacity(ndim);
    let mut total: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let len = i32_at(&mut pos)?;
        let _lower = i32_at(&mut pos)?;
        let len = u32::try_from(len).map_err(|_| err("negative array length"))?;
        total = total
            .checked_mul(len as usize)
            .filter(|t| *t <= raw.len())
            .ok_or_else(|| err("array longer than its bytes"))?;
        dims.push(len);
    }
    let mut elements = Vec::with_capacity(total);
    for _ in 0..total {
        let len = i32_at(&mut pos)?;
        if len == -1 {
            elements.push(Value::Null);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| err("invalid element length"))?;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= raw.len())
            .ok_or_else(|| err("array element cut short"))?;
        elements.push(parse_binary(elem, raw.slice(pos..end))?);
        pos = end;
    }
    if pos != raw.len() {
        return Err(err("trailing bytes after the array"));
    }
    if total == 0 {
        dims.clear();
    }
    Ok(Value::Array(Array {
        elem_oid: elem.oid,
        dims,
        elements,
    }))
}

/// Reads big-endian `i32`s and length-prefixed values (`-1`: NULL) off a send buffer,
/// every read bounds-checked.
struct Reader<'a> {
    raw: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn i32(&mut self) -> Result<i32, Reason> {
        let b = self
            .raw
            .get(self.pos..self.pos + 4)
            .ok_or("value cut short")?;
        self.pos += 4;
        Ok(i32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    /// A length-prefixed value: `None` for NULL.
    fn value(&mut self) -> Result<Option<Bytes>, Reason> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| "invalid length")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.raw.len())
            .ok_or("value cut short")?;
        let v = self.raw.slice(self.pos..end);
        self.pos = end;
        Ok(Some(v))
    }

    fn done(&self) -> bool {
        self.pos == self.raw.len()
    }
}

/// `record_send`: the number of (non-dropped) fields, then per field its type oid and its
/// value in that type's binary format → the same `to_jsonb` object text mode makes.
fn composite(ty: &TypeInfo, c: &Composite, raw: &Bytes) -> Result<Value, ValueError> {
    let err = |reason| ValueError::new(ty, raw, reason);
    let mut r = Reader { raw, pos: 0 };
    let n = r.i32().map_err(err)?;
    if usize::try_from(n).ok() != Some(c.fields.len()) {
        return Err(err("field count differs from the composite type's"));
    }
    let mut entries: Vec<(&str, Vec<u8>)> = Vec::with_capacity(c.fields.len());
    for field in &c.fields {
        // The field's type oid: the attribute's own (a domain's, not its base's), so it
        // says nothing the catalog lookup did not; the type comes from `c`.
        let _oid = r.i32().map_err(err)?;
        let mut rendered = Vec::new();
        match r.value().map_err(err)? {
            None => rendered.extend_from_slice(b"null"),
            Some(v) => write_json(&parse_binary(&field.ty, v)?, &mut rendered),
        }
        entries.push((&*field.name, rendered));
    }
    if !r.done() {
        return Err(err("trailing bytes after the composite"));
    }
    Ok(Value::Jsonb(object(entries)))
}

/// `hstore_send`: the number of pairs, then per pair a key and a value (`-1`: NULL) →
/// `{"k": "v", "n": null}`, as hstore's cast to json (what `to_jsonb` uses).
fn hstore(ty: &TypeInfo, raw: &Bytes) -> Result<Value, ValueError> {
    let err = |reason| ValueError::new(ty, raw, reason);
    let mut r = Reader { raw, pos: 0 };
    let n = r.i32().map_err(err)?;
    let n = usize::try_from(n)
        .ok()
        .filter(|n| n.saturating_mul(8) <= raw.len())
        .ok_or_else(|| err("invalid pair count"))?;
    let mut keys: Vec<String> = Vec::with_capacity(n);
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.value().map_err(err)?.ok_or_else(|| err("NULL key"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| err("invalid UTF-8"))?;
        let mut rendered = Vec::new();
        match r.value().map_err(err)? {
            None => rendered.extend_from_slice(b"null"),
            Some(v) => {
                let v = std::str::from_utf8(&v).map_err(|_| err("invalid UTF-8"))?;
                write_json_str(v, &mut rendered);
            }
        }
        keys.push(key);
        values.push(rendered);
    }
    if !r.done() {
        return Err(err("trailing bytes after the hstore"));
    }
    let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(err("repeated key"));
    }
    Ok(Value::Jsonb(object(
        keys.iter().map(String::as_str).zip(values).collect(),
    )))
}

#[cfg(test)]
mod tests;

/// Builtin types kept as text whose output function is simple enough to redo from the
/// send format, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextSend {
    /// The send format is the text (`xml` in the connection's UTF-8, `refcursor`).
    Plain,
    /// A version byte `1`, then the text (`jsonpath`).
    Versioned,
    /// `oid`, `xid`, `cid`: an unsigned 32-bit integer.
    U32,
    /// `xid8`: an unsigned 64-bit integer.
    U64,
    /// `tid`: block number and item offset, `(0,1)`.
    Tid,
    /// `macaddr` (6 bytes) and `macaddr8` (8): lower-case hex pairs with colons.
    Mac,
    /// `inet` and `cidr`.
    Inet,
    /// `point`: two float8, `(x,y)`.
    Point,
    /// `bit` and `bit varying`: the bit count, then the bits packed from the high end.
    Bits,
}

impl TextSend {
    fn of(oid: u32) -> Option<TextSend> {
        use super::types::oid::*;
        Some(match oid {
            XML | REFCURSOR => TextSend::Plain,
            JSONPATH => TextSend::Versioned,
            OID | XID | CID => TextSend::U32,
            XID8 => TextSend::U64,
            TID => TextSend::Tid,
            MACADDR | MACADDR8 => TextSend::Mac,
            INET | CIDR => TextSend::Inet,
            POINT => TextSend::Point,
            BIT | VARBIT => TextSend::Bits,
            _ => return None,
        })
    }

    fn text(self, raw: &Bytes) -> Result<PgText, Reason> {
        let s: &[u8] = raw;
        let built = match self {
            TextSend::Plain => return text(raw),
            TextSend::Versioned => {
                return match s.first() {
                    Some(1) => text(&raw.slice(1..)),
                    Some(_) => Err("unknown binary format version"),
                    None => Err("empty value"),
                }
            }
            TextSend::U32 => u32::from_be_bytes(fixed(s)?).to_string(),
            TextSend::U64 => u64::from_be_bytes(fixed(s)?).to_string(),
            TextSend::Tid => {
                let b: [u8; 6] = fixed(s)?;
                let block = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let offset = u16::from_be_bytes([b[4], b[5]]);
                format!("({block},{offset})")
            }
            TextSend::Mac => {
                if s.len() != 6 && s.len() != 8 {
                    return Err("wrong length for the type's binary format");
                }
                let mut out = String::with_capacity(s.len() * 3);
                for (i, b) in s.iter().enumerate() {
                    if i > 0 {
                        out.push(':');
                    }
                    let _ = write!(out, "{b:02x}");
                }
                out
            }
            TextSend::Inet => inet_text(s)?,
            TextSend::Point => {
                let b: [u8; 16] = fixed(s)?;
                let x = f64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                let y = f64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
                let mut out = Vec::with_capacity(32);
                out.push(b'(');
                write_float8_text(&mut out, x);
                out.push(b',');
                write_float8_text(&mut out, y);
                out.push(b')');
                String::from_utf8(out).map_err(|_| "invalid UTF-8")?
            }
            TextSend::Bits => bits_text(s)?,
        };
        Ok(PgText::from(built))
    }
}

/// `inet_send`: family (2 = IPv4, 3 = IPv6), mask bits, is-cidr flag, address length,
/// address → the text `inet_out`/`cidr_out` print (`pg_inet_net_ntop`: all four IPv4
/// octets; IPv6 with the longest run of two or more zero groups as `::`, an IPv4 tail for
/// `::a.b.c.d` and `::ffff:a.b.c.d`; `/bits` unless a full mask — always for cidr).
fn inet_text(s: &[u8]) -> Result<String, Reason> {
    let [family, bits, is_cidr, len] = *s.get(..4).ok_or("inet header cut short")? else {
        return Err("inet header cut short");
    };
    let addr = &s[4..];
    if addr.len() != usize::from(len) {
        return Err("inet address length differs from its header");
    }
    let (mut out, full) = match (family, len) {
        (2, 4) => (
            format!("{}.{}.{}.{}", addr[0], addr[1], addr[2], addr[3]),
            32,
        ),
        (3, 16) => (ipv6_text(addr.try_into().expect("16 bytes")), 128),
        _ => return Err("unknown inet family or address length"),
    };
    if bits > full {
        return Err("inet mask longer than the address");
    }
    if bits != full || is_cidr != 0 {
        let _ = write!(out, "/{bits}");
    }
    Ok(out)
}

/// BIND's `inet_net_ntop_ipv6` as Postgres has it.
fn ipv6_text(a: &[u8; 16]) -> String {
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([a[2 * i], a[2 * i + 1]]));
    // The longest run of zero words (the first of equal ones), if at least two long.
    // (first word, length) of a run of zero words.
    type Run = Option<(usize, usize)>;
    let (mut best, mut cur): (Run, Run) = (None, None);
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            cur = Some(cur.map_or((i, 1), |(b, l)| (b, l + 1)));
        } else if let Some(c) = cur.take() {
            if best.is_none_or(|b| c.1 > b.1) {
                best = Some(c);
            }
        }
    }
    if let Some(c) = cur {
        if best.is_none_or(|b| c.1 > b.1) {
            best = Some(c);
        }
    }
    let best = best.filter(|b| b.1 >= 2);
    let mut out = String::with_capacity(40);
    for (i, w) in words.iter().enumerate() {
        if let Some((base, len)) = best {
            if i >= base && i < base + len {
                if i == base {
                    out.push(':');
                }
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && best.is_some_and(|(base, len)| {
                base == 0
                    && (len == 6 || (len == 7 && words[7] != 1) || (len == 5 && words[5] == 0xffff))
            })
        {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return out;
        }
        let _ = write!(out, "{w:x}");
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        out.push(':');
    }
    out
}

/// `bit_send`: the bit count (int4), then the bits packed high bit first → `0`/`1` text.
fn bits_text(s: &[u8]) -> Result<String, Reason> {
    let count = i32::from_be_bytes(
        s.get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or("bit string header cut short")?,
    );
    let count = usize::try_from(count).map_err(|_| "negative bit count")?;
    let bytes = &s[4..];
    if bytes.len() != count.div_ceil(8) {
        return Err("bit string length differs from its bit count");
    }
    Ok((0..count)
        .map(|i| {
            if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                '1'
            } else {
                '0'
            }
        })
        .collect())
}
