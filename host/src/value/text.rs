//! Parsing Postgres text-format output into [`Value`]s.
//!
//! Each parser accepts what the matching Postgres output function prints
//! under the replication session's settings (`DateStyle=ISO`,
//! `IntervalStyle=postgres`, `TimeZone=UTC`, `bytea_output=hex`), plus a few
//! harmless variants (other UTC offsets, `bytea` escape format). Input
//! syntaxes the server never prints (`'yesterday'`, `1e5` numerics, ...) are
//! errors: accepting them would only hide a mismatch between the session
//! settings and this code.
//!
//! Every parser is total: malformed input gives an error, never a panic.

use bytes::Bytes;

use super::json::is_valid_json;
use super::{array, Numeric, PgText, TypeInfo, TypeKind, Value, ValueError};

/// Why a text did not parse; becomes [`ValueError::reason`].
type Reason = &'static str;

pub(crate) const USECS_PER_SEC: i64 = 1_000_000;
pub(crate) const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01, the Postgres epoch.
const UNIX_TO_PG_EPOCH_DAYS: i64 = 10_957;
/// First valid date, 4714-11-24 BC (Julian day 0), in days since 2000-01-01.
const MIN_DATE_DAYS: i64 = -2_451_545;
/// One past the last valid date (5874898-01-01), in days since 2000-01-01.
const END_DATE_DAYS: i64 = 2_147_483_494 - 2_451_545;
/// First valid timestamp, 4714-11-24 00:00:00 BC.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// One past the last valid timestamp, 294277-01-01 00:00:00.
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
/// `timetz` offsets are limited to less than 16 hours either way.
const MAX_TZ_OFFSET_SECS: i32 = 16 * 3600 - 1;

/// Parses the text output of a value of type `ty`.
///
/// `raw` is normally a slice of the network buffer; text-like results share
/// it instead of copying.
pub fn parse_text(ty: &TypeInfo, raw: Bytes) -> Result<Value, ValueError> {
    let s: &[u8] = &raw;
    let parsed = match &ty.kind {
        TypeKind::Bool => parse_bool(s).map(Value::Bool),
        TypeKind::Int2 => parse_int(s).map(Value::Int2),
        TypeKind::Int4 => parse_int(s).map(Value::Int4),
        TypeKind::Int8 => parse_int(s).map(Value::Int8),
        TypeKind::Float4 => parse_float(s).map(Value::Float4),
        TypeKind::Float8 => parse_float(s).map(Value::Float8),
        TypeKind::Numeric => parse_numeric(&raw).map(Value::Numeric),
        TypeKind::Bytea => parse_bytea(s).map(Value::Bytea),
        TypeKind::Uuid => parse_uuid(s).map(Value::Uuid),
        TypeKind::Date => parse_date(s).map(Value::Date),
        TypeKind::Time => parse_time(s).map(Value::Time),
        TypeKind::TimeTz => parse_timetz(s).map(|(micros, offset_secs)| Value::TimeTz {
            micros,
            offset_secs,
        }),
        TypeKind::Timestamp => parse_timestamp(s, false).map(Value::Timestamp),
        TypeKind::TimestampTz => parse_timestamp(s, true).map(Value::TimestampTz),
        TypeKind::Interval => parse_interval(s).map(|(months, days, micros)| Value::Interval {
            months,
            days,
            micros,
        }),
        TypeKind::Text => text(&raw).map(Value::Text),
        TypeKind::Json => json(&raw).map(Value::Json),
        TypeKind::Jsonb => json(&raw).map(Value::Jsonb),
        TypeKind::Enum => text(&raw).map(Value::Enum),
        TypeKind::Other => text(&raw).map(|text| Value::Other {
            type_oid: ty.oid,
            text,
        }),
        TypeKind::Array(elem) => return array::parse_array(ty, elem, raw),
    };
    parsed.map_err(|reason| ValueError::new(ty, s, reason))
}

fn text(raw: &Bytes) -> Result<PgText, Reason> {
    PgText::new(raw.clone()).map_err(|_| "invalid UTF-8")
}

/// `json` and `jsonb` text is embedded in our JSON output as-is, so it is
/// checked: a wrongly typed column must not corrupt the output document.
fn json(raw: &Bytes) -> Result<PgText, Reason> {
    let t = text(raw)?;
    if is_valid_json(t.as_bytes()) {
        Ok(t)
    } else {
        Err("invalid JSON")
    }
}

fn parse_bool(s: &[u8]) -> Result<bool, Reason> {
    match s {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => Err("expected t or f"),
    }
}

/// An integer: optional sign and up to 19 digits, range-checked for `T`.
fn parse_int<T: TryFrom<i64>>(s: &[u8]) -> Result<T, Reason> {
    let v = parse_i64(s).ok_or("not an integer")?;
    T::try_from(v).map_err(|_| "integer out of range")
}

fn parse_i64(s: &[u8]) -> Option<i64> {
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
fn parse_float<T: std::str::FromStr>(s: &[u8]) -> Result<T, Reason> {
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
fn parse_numeric(raw: &Bytes) -> Result<Numeric, Reason> {
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
fn parse_bytea(s: &[u8]) -> Result<Bytes, Reason> {
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
fn parse_uuid(s: &[u8]) -> Result<[u8; 16], Reason> {
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

fn parse_date(s: &[u8]) -> Result<i32, Reason> {
    match s {
        b"infinity" => return Ok(super::DATE_POS_INFINITY),
        b"-infinity" => return Ok(super::DATE_NEG_INFINITY),
        _ => {}
    }
    let mut c = Cursor::new(s);
    let (y, m, d) = c.date()?;
    let bc = c.eat_str(b" BC");
    c.end()?;
    let days = date_days(y, m, d, bc)?;
    if !(MIN_DATE_DAYS..END_DATE_DAYS).contains(&days) {
        return Err("date out of range");
    }
    i32::try_from(days).map_err(|_| "date out of range")
}

fn parse_time(s: &[u8]) -> Result<i64, Reason> {
    let mut c = Cursor::new(s);
    let t = c.time_of_day()?;
    c.end()?;
    check_time(t)
}

fn parse_timetz(s: &[u8]) -> Result<(i64, i32), Reason> {
    let mut c = Cursor::new(s);
    let t = check_time(c.time_of_day()?)?;
    let offset = c.utc_offset()?;
    c.end()?;
    Ok((t, offset))
}

/// `time` goes up to and including `24:00:00`.
fn check_time(micros: i64) -> Result<i64, Reason> {
    if micros <= USECS_PER_DAY {
        Ok(micros)
    } else {
        Err("time out of range")
    }
}

/// `timestamp` and `timestamptz`: `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]`.
/// The result is UTC for `timestamptz`.
fn parse_timestamp(s: &[u8], with_tz: bool) -> Result<i64, Reason> {
    match s {
        b"infinity" => return Ok(super::TS_POS_INFINITY),
        b"-infinity" => return Ok(super::TS_NEG_INFINITY),
        _ => {}
    }
    let mut c = Cursor::new(s);
    let (y, m, d) = c.date()?;
    c.expect(b' ')?;
    let time = c.time_of_day()?;
    if time >= USECS_PER_DAY {
        return Err("time out of range");
    }
    let offset = if with_tz { c.utc_offset()? } else { 0 };
    let bc = c.eat_str(b" BC");
    c.end()?;
    let days = date_days(y, m, d, bc)?;
    let local = i128::from(days) * i128::from(USECS_PER_DAY) + i128::from(time);
    let utc = local - i128::from(offset) * i128::from(USECS_PER_SEC);
    match i64::try_from(utc) {
        Ok(ts) if (MIN_TIMESTAMP..END_TIMESTAMP).contains(&ts) => Ok(ts),
        _ => Err("timestamp out of range"),
    }
}

/// `interval` in `IntervalStyle=postgres` output form:
/// `[N year[s]] [N mon[s]] [N day[s]] [[+-]H:MM:SS[.ffffff]]`, each number
/// signed on its own (`1 year -2 mons +3 days -04:05:06`), or Postgres 17's
/// `infinity`/`-infinity`.
fn parse_interval(s: &[u8]) -> Result<(i32, i32, i64), Reason> {
    match s {
        b"infinity" => return Ok((i32::MAX, i32::MAX, i64::MAX)),
        b"-infinity" => return Ok((i32::MIN, i32::MIN, i64::MIN)),
        _ => {}
    }
    let (mut months, mut days, mut micros) = (0i64, 0i64, None);
    let mut tokens = s.split(|&c| c == b' ');
    while let Some(tok) = tokens.next() {
        if micros.is_some() {
            return Err("text after the time part");
        }
        if tok.contains(&b':') {
            micros = Some(interval_time(tok)?);
            continue;
        }
        let n = parse_i64(tok).ok_or("expected a number")?;
        let (field, factor) = match tokens.next().ok_or("missing unit")? {
            b"year" | b"years" => (&mut months, 12),
            b"mon" | b"mons" => (&mut months, 1),
            b"day" | b"days" => (&mut days, 1),
            _ => return Err("unknown unit"),
        };
        *field = n
            .checked_mul(factor)
            .and_then(|v| field.checked_add(v))
            .ok_or("interval out of range")?;
    }
    let months = i32::try_from(months).map_err(|_| "interval out of range")?;
    let days = i32::try_from(days).map_err(|_| "interval out of range")?;
    Ok((months, days, micros.unwrap_or(0)))
}

/// The `[+-]H:MM:SS[.ffffff]` part of an interval; hours are unbounded
/// (up to the i64 microsecond range).
fn interval_time(tok: &[u8]) -> Result<i64, Reason> {
    let mut c = Cursor::new(tok);
    let neg = if c.eat(b'-') {
        true
    } else {
        c.eat(b'+');
        false
    };
    let (h, _) = c.digits(1, 12)?;
    c.expect(b':')?;
    let (m, _) = c.digits(2, 2)?;
    c.expect(b':')?;
    let (sec, _) = c.digits(2, 2)?;
    let frac = c.fraction()?;
    c.end()?;
    if m > 59 || sec > 59 {
        return Err("field out of range");
    }
    let secs = (i128::from(h) * 60 + i128::from(m)) * 60 + i128::from(sec);
    let magnitude = secs * i128::from(USECS_PER_SEC) + i128::from(frac);
    i64::try_from(if neg { -magnitude } else { magnitude }).map_err(|_| "interval out of range")
}

/// Days since 2000-01-01 of a date as printed (`y` AD, or `y` BC when
/// `bc`), validating the fields and the year range Postgres allows.
fn date_days(y: i64, m: i64, d: i64, bc: bool) -> Result<i64, Reason> {
    // Astronomical year: 1 BC is 0, 2 BC is -1.
    let astro = if bc { 1 - y } else { y };
    if y < 1 || !(-4713..=5_874_897).contains(&astro) {
        return Err("year out of range");
    }
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(astro, m) {
        return Err("date field out of range");
    }
    Ok(days_from_civil(astro, m, d))
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 2000-01-01 of a proleptic Gregorian date (astronomical year).
/// This is the "days from civil" algorithm; it agrees with Postgres'
/// `date2j` over the whole Postgres range and is total over i64 inputs of
/// that size.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - UNIX_TO_PG_EPOCH_DAYS
}

/// The inverse of [`days_from_civil`]: `(astronomical year, month, day)`.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + UNIX_TO_PG_EPOCH_DAYS + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m is 1..=12 by construction.
    (y, m as u32, d as u32)
}

/// A byte cursor for the fixed-layout date/time formats.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cursor { s, i: 0 }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn eat_str(&mut self, t: &[u8]) -> bool {
        let hit = self.s[self.i..].starts_with(t);
        if hit {
            self.i += t.len();
        }
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), Reason> {
        if self.eat(c) {
            Ok(())
        } else {
            Err("unexpected character")
        }
    }

    fn end(&self) -> Result<(), Reason> {
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err("trailing characters")
        }
    }

    /// `min..=max` decimal digits (max <= 18, so no overflow); returns the
    /// value and the digit count.
    fn digits(&mut self, min: usize, max: usize) -> Result<(i64, usize), Reason> {
        let run = self.s[self.i..]
            .iter()
            .take(max + 1)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if run < min || run > max {
            return Err("wrong number of digits");
        }
        let v = self.s[self.i..self.i + run]
            .iter()
            .fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
        self.i += run;
        Ok((v, run))
    }

    /// `YYYY-MM-DD` (the year has 4 or more digits) → (year as printed,
    /// month, day), not yet validated.
    fn date(&mut self) -> Result<(i64, i64, i64), Reason> {
        let (y, _) = self.digits(4, 9)?;
        self.expect(b'-')?;
        let (m, _) = self.digits(2, 2)?;
        self.expect(b'-')?;
        let (d, _) = self.digits(2, 2)?;
        Ok((y, m, d))
    }

    /// `HH:MM:SS[.f{1,6}]` → microseconds (hour <= 24, checked by callers).
    fn time_of_day(&mut self) -> Result<i64, Reason> {
        let (h, _) = self.digits(2, 2)?;
        self.expect(b':')?;
        let (m, _) = self.digits(2, 2)?;
        self.expect(b':')?;
        let (s, _) = self.digits(2, 2)?;
        let frac = self.fraction()?;
        if h > 24 || m > 59 || s > 59 {
            return Err("time field out of range");
        }
        Ok(((h * 60 + m) * 60 + s) * USECS_PER_SEC + frac)
    }

    /// An optional `.f{1,6}` → microseconds.
    fn fraction(&mut self) -> Result<i64, Reason> {
        if !self.eat(b'.') {
            return Ok(0);
        }
        let (v, n) = self.digits(1, 6)?;
        Ok(v * 10i64.pow(6 - n as u32))
    }

    /// `+HH[:MM[:SS]]` / `-HH...` → seconds east of UTC.
    fn utc_offset(&mut self) -> Result<i32, Reason> {
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Err("missing UTC offset");
        };
        let (h, _) = self.digits(2, 2)?;
        let (m, s) = if self.eat(b':') {
            let (m, _) = self.digits(2, 2)?;
            let s = if self.eat(b':') {
                self.digits(2, 2)?.0
            } else {
                0
            };
            (m, s)
        } else {
            (0, 0)
        };
        if m > 59 || s > 59 {
            return Err("UTC offset out of range");
        }
        let secs = (h * 60 + m) * 60 + s;
        match i32::try_from(secs) {
            Ok(secs) if secs <= MAX_TZ_OFFSET_SECS => Ok(sign * secs),
            _ => Err("UTC offset out of range"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{builtin_type, oid};

    fn parse(type_oid: u32, text: &str) -> Result<Value, ValueError> {
        parse_text(
            &builtin_type(type_oid).unwrap(),
            Bytes::copy_from_slice(text.as_bytes()),
        )
    }

    fn ok(type_oid: u32, text: &str) -> Value {
        parse(type_oid, text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rejects(type_oid: u32, texts: &[&str]) {
        for text in texts {
            assert!(
                parse(type_oid, text).is_err(),
                "type {type_oid} accepted {text:?}"
            );
        }
    }

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

    #[test]
    fn dates() {
        assert_eq!(ok(oid::DATE, "2000-01-01"), Value::Date(0));
        assert_eq!(ok(oid::DATE, "1970-01-01"), Value::Date(-10_957));
        assert_eq!(ok(oid::DATE, "4714-11-24 BC"), Value::Date(-2_451_545));
        assert_eq!(ok(oid::DATE, "infinity"), Value::Date(i32::MAX));
        // 1 BC and 5 BC are leap years (astronomical 0 and -4); 4 BC is not.
        ok(oid::DATE, "0001-02-29 BC");
        ok(oid::DATE, "0005-02-29 BC");
        rejects(
            oid::DATE,
            &[
                "0004-02-29 BC",
                "2023-02-29",
                "1900-02-29",
                "0000-01-01",
                "2024-13-01",
                "2024-00-10",
                "2024-04-31",
                "4714-11-23 BC",
                "5874898-01-01",
                "24-01-01",
                "2024-1-01",
                "2024-01-01 AD",
                "2024-01-01 bc",
                "Infinity",
            ],
        );
    }

    #[test]
    fn times() {
        assert_eq!(ok(oid::TIME, "24:00:00"), Value::Time(USECS_PER_DAY));
        assert_eq!(ok(oid::TIME, "00:00:00.5"), Value::Time(500_000));
        assert_eq!(
            ok(oid::TIMETZ, "10:20:30.5+05:30"),
            Value::TimeTz {
                micros: (10 * 3600 + 20 * 60 + 30) * USECS_PER_SEC + 500_000,
                offset_secs: 19_800
            }
        );
        assert_eq!(
            ok(oid::TIMETZ, "00:00:00-05:30:15"),
            Value::TimeTz {
                micros: 0,
                offset_secs: -19_815
            }
        );
        rejects(
            oid::TIME,
            &[
                "24:00:00.000001",
                "25:00:00",
                "10:60:00",
                "10:00:60",
                "10:00",
                "1:00:00",
                "10:00:00.1234567",
            ],
        );
        rejects(
            oid::TIMETZ,
            &[
                "10:00:00",
                "10:00:00+16",
                "10:00:00+05:60",
                "10:00:00 +05",
                "10:00:00+5",
            ],
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            ok(oid::TIMESTAMP, "2000-01-01 00:00:00"),
            Value::Timestamp(0)
        );
        assert_eq!(
            ok(oid::TIMESTAMP, "1999-12-31 23:59:59.999999"),
            Value::Timestamp(-1)
        );
        assert_eq!(
            ok(oid::TIMESTAMP, "4714-11-24 00:00:00 BC"),
            Value::Timestamp(MIN_TIMESTAMP)
        );
        assert_eq!(
            ok(oid::TIMESTAMP, "294276-12-31 23:59:59.999999"),
            Value::Timestamp(END_TIMESTAMP - 1)
        );
        // Offsets are folded into UTC.
        assert_eq!(
            ok(oid::TIMESTAMPTZ, "2000-01-01 05:30:00+05:30"),
            ok(oid::TIMESTAMPTZ, "2000-01-01 00:00:00+00")
        );
        assert_eq!(
            ok(oid::TIMESTAMPTZ, "-infinity"),
            Value::TimestampTz(i64::MIN)
        );
        rejects(
            oid::TIMESTAMP,
            &[
                "294277-01-01 00:00:00",
                "4714-11-23 23:59:59 BC",
                "2024-01-01 24:00:00",
                "2024-01-01T10:00:00",
                "2024-01-01 10:00:00+00",
                "2024-01-01",
            ],
        );
        rejects(
            oid::TIMESTAMPTZ,
            &[
                "2024-01-01 10:00:00",
                "4714-11-24 00:00:00+00:00:01 BC",
                "2024-01-01 10:00:00+00 AD",
            ],
        );
    }

    #[test]
    fn intervals() {
        let iv = |months, days, micros| Value::Interval {
            months,
            days,
            micros,
        };
        assert_eq!(ok(oid::INTERVAL, "00:00:00"), iv(0, 0, 0));
        assert_eq!(
            ok(oid::INTERVAL, "1 year 2 mons -3 days +04:05:06.789"),
            iv(14, -3, ((4 * 60 + 5) * 60 + 6) * USECS_PER_SEC + 789_000)
        );
        assert_eq!(ok(oid::INTERVAL, "-1 years -2 mons"), iv(-14, 0, 0));
        assert_eq!(
            ok(
                oid::INTERVAL,
                "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"
            ),
            iv(i32::MIN, i32::MIN, i64::MIN)
        );
        assert_eq!(
            ok(oid::INTERVAL, "infinity"),
            iv(i32::MAX, i32::MAX, i64::MAX)
        );
        rejects(
            oid::INTERVAL,
            &[
                "",
                "1",
                "1 fortnight",
                "1 day 2",
                "00:00:00 1 day",
                "1  day",
                "178956971 years",
                "2147483648 days",
                "2562047788:00:54.775808",
                "-00:60:00",
                "1 day +",
                "@ 1 day",
            ],
        );
    }

    #[test]
    fn civil_conversions_round_trip() {
        let mut days = MIN_DATE_DAYS;
        while days < END_DATE_DAYS {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
            days += 997;
        }
        assert_eq!(civil_from_days(0), (2000, 1, 1));
        assert_eq!(civil_from_days(END_DATE_DAYS - 1), (5_874_897, 12, 31));
    }
}
