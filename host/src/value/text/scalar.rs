//! Parsers for the non-temporal scalar types: `bool`, integers, floats,
//! `numeric`, `bytea`, `uuid`.

use bytes::Bytes;

use crate::value::model::Numeric;

/// Why a text did not parse; becomes [`ValueError::reason`](crate::value::ValueError::reason).
pub(super) type Reason = &'static str;

pub(super) fn parse_bool(s: &[u8]) -> Result<bool, Reason> {
    match s {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => Err("expected t or f"),
    }
}

/// An integer: optional sign and up to 19 digits, range-checked for `T`.
pub(super) fn parse_int<T: TryFrom<i64>>(s: &[u8]) -> Result<T, Reason> {
    let v = parse_i64(s).ok_or("not an integer")?;
    T::try_from(v).map_err(|_| "integer out of range")
}

pub(super) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    // 19 digits cannot overflow a u64.
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    if neg {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// `float4`/`float8`: `NaN`, `[-]Infinity` or a decimal with optional
/// exponent (`1e+100`, `1.5e-05`). Rust's parser is correctly rounded, so
/// the shortest-exact text the server sends gives back the exact value.
pub(super) fn parse_float<T: std::str::FromStr>(s: &[u8]) -> Result<T, Reason> {
    let t = std::str::from_utf8(s).map_err(|_| "not a number")?;
    let ok = !t.is_empty()
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+'));
    if !ok {
        return Err("not a number");
    }
    t.parse().map_err(|_| "not a number")
}

/// `numeric`: `NaN`, `[-]Infinity`, or `-?digits(.digits)?` kept verbatim.
/// The grammar is checked because the text is later written into JSON
/// unquoted; it is the JSON number grammar without an exponent, which
/// `numeric_out` never prints.
pub(super) fn parse_numeric(raw: &Bytes) -> Result<Numeric, Reason> {
    match &raw[..] {
        b"NaN" => Ok(Numeric::NaN),
        b"Infinity" => Ok(Numeric::PosInf),
        b"-Infinity" => Ok(Numeric::NegInf),
        s if is_plain_decimal(s) => Ok(Numeric::Finite(raw.clone())),
        _ => Err("not a numeric"),
    }
}

fn is_plain_decimal(s: &[u8]) -> bool {
    let s = s.strip_prefix(b"-").unwrap_or(s);
    let (int, frac) = match s.iter().position(|&c| c == b'.') {
        Some(dot) => (&s[..dot], Some(&s[dot + 1..])),
        None => (s, None),
    };
    let all_digits = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    all_digits(int) && (int.len() == 1 || int[0] != b'0') && frac.is_none_or(all_digits)
}

/// `bytea` in hex format (`\x0102`), or the legacy escape format in case a
/// session forgets `bytea_output=hex`.
pub(super) fn parse_bytea(s: &[u8]) -> Result<Bytes, Reason> {
    match s.strip_prefix(b"\\x") {
        Some(hex) => decode_hex(hex),
        None => decode_bytea_escape(s),
    }
}

fn decode_hex(hex: &[u8]) -> Result<Bytes, Reason> {
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits");
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        let hi = hex_val(pair[0]).ok_or("invalid hex digit")?;
        let lo = hex_val(pair[1]).ok_or("invalid hex digit")?;
        out.push(hi << 4 | lo);
    }
    Ok(Bytes::from(out))
}

fn decode_bytea_escape(s: &[u8]) -> Result<Bytes, Reason> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
        } else if s.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = s.get(i + 1..i + 4).ok_or("invalid escape")?;
            let digit = |c: u8| matches!(c, b'0'..=b'7').then(|| u32::from(c - b'0'));
            let v = match (digit(oct[0]), digit(oct[1]), digit(oct[2])) {
                (Some(a), Some(b), Some(c)) => a * 64 + b * 8 + c,
                _ => return Err("invalid escape"),
            };
            out.push(u8::try_from(v).map_err(|_| "invalid escape")?);
            i += 4;
        }
    }
    Ok(Bytes::from(out))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `uuid`: the canonical 8-4-4-4-12 form (any case), or 32 bare hex digits.
pub(super) fn parse_uuid(s: &[u8]) -> Result<[u8; 16], Reason> {
    const HYPHENS: [usize; 4] = [8, 13, 18, 23];
    let hyphenated = s.len() == 36 && HYPHENS.iter().all(|&i| s[i] == b'-');
    if !hyphenated && s.len() != 32 {
        return Err("not a uuid");
    }
    let mut out = [0u8; 16];
    let mut nibbles = s.iter().filter(|&&c| !hyphenated || c != b'-');
    for byte in &mut out {
        let hi = nibbles.next().and_then(|&c| hex_val(c));
        let lo = nibbles.next().and_then(|&c| hex_val(c));
        match (hi, lo) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return Err("not a uuid"),
        }
    }
    if nibbles.next().is_some() {
        return Err("not a uuid");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::check::{ok, rejects};
    use crate::value::{oid, Numeric, Value};

    #[test]
    fn integers() {
        assert_eq!(ok(oid::INT2, "-32768"), Value::Int2(i16::MIN));
        assert_eq!(ok(oid::INT8, "-9223372036854775808"), Value::Int8(i64::MIN));
        assert_eq!(ok(oid::INT4, "+7"), Value::Int4(7));
        rejects(oid::INT2, &["32768", "-32769"]);
        rejects(
            oid::INT4,
            &["", "-", "+", "1.0", " 1", "1 ", "0x10", "2147483648"],
        );
        rejects(
            oid::INT8,
            &[
                "9223372036854775808",
                "-9223372036854775809",
                "99999999999999999999",
            ],
        );
    }

    #[test]
    fn floats() {
        assert_eq!(ok(oid::FLOAT8, "1e+100"), Value::Float8(1e100));
        assert_eq!(
            ok(oid::FLOAT8, "-Infinity"),
            Value::Float8(f64::NEG_INFINITY)
        );
        assert_eq!(ok(oid::FLOAT4, "1.1"), Value::Float4(1.1));
        let Value::Float8(nan) = ok(oid::FLOAT8, "NaN") else {
            panic!()
        };
        assert!(nan.is_nan());
        let Value::Float8(neg_zero) = ok(oid::FLOAT8, "-0") else {
            panic!()
        };
        assert!(neg_zero == 0.0 && neg_zero.is_sign_negative());
        rejects(oid::FLOAT8, &["", "1,5", " 1", "1e", "--1", "0x1p3"]);
    }

    #[test]
    fn numerics_keep_their_text() {
        let Value::Numeric(Numeric::Finite(b)) = ok(oid::NUMERIC, "-0.0100") else {
            panic!()
        };
        assert_eq!(&b[..], b"-0.0100");
        assert_eq!(
            ok(oid::NUMERIC, "-Infinity"),
            Value::Numeric(Numeric::NegInf)
        );
        rejects(
            oid::NUMERIC,
            &[
                "", "-", "01", "1.", ".5", "1e5", "--1", "+1", "1.2.3", "nan", "inf",
            ],
        );
    }

    #[test]
    fn bool_is_t_or_f() {
        assert_eq!(ok(oid::BOOL, "t"), Value::Bool(true));
        rejects(oid::BOOL, &["true", "T", "", "yes"]);
    }

    #[test]
    fn bytea_hex_and_escape_formats() {
        assert_eq!(
            ok(oid::BYTEA, "\\xDEad00"),
            Value::Bytea(Bytes::from_static(b"\xde\xad\x00"))
        );
        assert_eq!(
            ok(oid::BYTEA, "a\\\\b\\001\\377"),
            Value::Bytea(Bytes::from_static(b"a\\b\x01\xff"))
        );
        rejects(
            oid::BYTEA,
            &["\\x0", "\\xzz", "\\x0g", "\\", "\\400", "\\01", "a\\b"],
        );
    }

    #[test]
    fn uuids() {
        let want = Value::Uuid([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        assert_eq!(ok(oid::UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), want);
        assert_eq!(ok(oid::UUID, "A0EEBC999C0B4EF8BB6D6BB9BD380A11"), want);
        rejects(
            oid::UUID,
            &[
                "",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
                "a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            ],
        );
    }
}
