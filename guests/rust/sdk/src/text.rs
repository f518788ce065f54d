//! The canonical text of a value: what `value::text` prints in a Postgres
//! session with `TimeZone = 'UTC'`, `DateStyle = 'ISO'`,
//! `IntervalStyle = 'postgres'` and the default `extra_float_digits`.
//!
//! Transforms hash and route on this text, so it has to be stable and
//! reproducible outside the guest: `encode(sha256(convert_to(col::text,
//! 'UTF8')), 'hex')` in such a session gives the same hash as
//! mask-columns' `hash` mode.

use std::fmt::{self, Write};

use crate::{Element, PgArray, Value};

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;

impl Value {
    /// The canonical text of the value (see [`fmt::Display`] for `Value`);
    /// `None` for SQL NULL and for an unchanged TOAST value, which have none.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null | Value::UnchangedToast => None,
            Value::Text(s) => Some(s.clone()),
            v => Some(v.to_string()),
        }
    }
}

/// The value as Postgres' `value::text` prints it (UTC, ISO dates):
/// `true`, `42`, `1.5e-05`, `\x0102`, `2024-01-15 10:20:30.5+00`,
/// `1 year 2 mons -3 days +04:05:06`, `{1,NULL,"a b"}`, ...
///
/// SQL NULL and an unchanged TOAST value print as nothing; use
/// [`Value::to_text`] to tell them apart from an empty string.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null | Value::UnchangedToast => Ok(()),
            // `bool::text` is `true`/`false` (only the output function, used
            // inside arrays, prints `t`/`f`).
            Value::Boolean(b) => f.write_str(if *b { "true" } else { "false" }),
            Value::Int2(i) => write!(f, "{i}"),
            Value::Int4(i) => write!(f, "{i}"),
            Value::Int8(i) => write!(f, "{i}"),
            Value::Float4(x) => float(f, f64::from(*x), &format!("{x:e}"), 6),
            Value::Float8(x) => float(f, *x, &format!("{x:e}"), 15),
            Value::Numeric(s)
            | Value::Text(s)
            | Value::Json(s)
            | Value::Jsonb(s)
            | Value::Uuid(s)
            | Value::EnumLabel(s) => f.write_str(s),
            Value::Other(o) => f.write_str(&o.text),
            Value::Bytea(b) => bytea(f, b),
            Value::Date(d) => date(f, *d),
            Value::Time(t) => time(f, *t),
            Value::Timetz(t) => {
                time(f, t.micros)?;
                offset(f, t.offset_secs)
            }
            Value::Timestamp(ts) => timestamp(f, *ts, false),
            Value::Timestamptz(ts) => timestamp(f, *ts, true),
            Value::Interval(i) => interval(f, i.months, i.days, i.micros),
            Value::Array(a) => array(f, a),
        }
    }
}

/// Shortest round-trip digits, fixed notation for decimal exponents in
/// `-4..max_exp` and `1.5e-05` style otherwise, as Postgres 12+ prints floats.
/// `sci` is Rust's `{:e}` of the value, which has the same shortest digits.
fn float(f: &mut fmt::Formatter<'_>, x: f64, sci: &str, max_exp: i32) -> fmt::Result {
    if x.is_nan() {
        return f.write_str("NaN");
    }
    if x.is_infinite() {
        return f.write_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    f.write_str(sign)?;
    if x == 0.0 {
        return f.write_str("0");
    }
    if (-4..max_exp).contains(&exp) {
        if exp < 0 {
            f.write_str("0.")?;
            for _ in 0..(-exp - 1) {
                f.write_char('0')?;
            }
            f.write_str(&digits)
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                f.write_str(&digits)?;
                for _ in digits.len()..int_len {
                    f.write_char('0')?;
                }
                Ok(())
            } else {
                write!(f, "{}.{}", &digits[..int_len], &digits[int_len..])
            }
        }
    } else {
        f.write_str(&digits[..1])?;
        if digits.len() > 1 {
            write!(f, ".{}", &digits[1..])?;
        }
        let sign = if exp < 0 { '-' } else { '+' };
        write!(f, "e{sign}{:02}", exp.unsigned_abs())
    }
}

fn bytea(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    f.write_str("\\x")?;
    b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian, year 0
/// being 1 BC (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD`; returns the astronomical year so callers can add ` BC`.
fn ymd(f: &mut fmt::Formatter<'_>, days: i64) -> Result<i64, fmt::Error> {
    let (y, m, d) = civil_from_days(days);
    let shown = if y > 0 { y } else { 1 - y };
    write!(f, "{shown:04}-{m:02}-{d:02}")?;
    Ok(y)
}

fn date(f: &mut fmt::Formatter<'_>, days: i32) -> fmt::Result {
    match days {
        i32::MIN => f.write_str("-infinity"),
        i32::MAX => f.write_str("infinity"),
        _ => {
            if ymd(f, i64::from(days))? <= 0 {
                f.write_str(" BC")?;
            }
            Ok(())
        }
    }
}

fn timestamp(f: &mut fmt::Formatter<'_>, ts: i64, with_tz: bool) -> fmt::Result {
    match ts {
        i64::MIN => f.write_str("-infinity"),
        i64::MAX => f.write_str("infinity"),
        _ => {
            let year = ymd(f, ts.div_euclid(USECS_PER_DAY))?;
            f.write_char(' ')?;
            time(f, ts.rem_euclid(USECS_PER_DAY))?;
            if with_tz {
                f.write_str("+00")?;
            }
            if year <= 0 {
                f.write_str(" BC")?;
            }
            Ok(())
        }
    }
}

/// `HH:MM:SS[.ffffff]`, fraction without trailing zeros.
fn time(f: &mut fmt::Formatter<'_>, micros: i64) -> fmt::Result {
    hms(f, micros.clamp(0, USECS_PER_DAY).unsigned_abs())
}

fn hms(f: &mut fmt::Formatter<'_>, micros: u64) -> fmt::Result {
    let secs = micros / 1_000_000;
    write!(
        f,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )?;
    let frac = micros % 1_000_000;
    if frac != 0 {
        let s = format!("{frac:06}");
        write!(f, ".{}", s.trim_end_matches('0'))?;
    }
    Ok(())
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS`, as short as the offset allows.
fn offset(f: &mut fmt::Formatter<'_>, east_secs: i32) -> fmt::Result {
    let s = east_secs.unsigned_abs();
    let sign = if east_secs >= 0 { '+' } else { '-' };
    write!(f, "{sign}{:02}", s / 3600)?;
    let (min, sec) = (s / 60 % 60, s % 60);
    if min != 0 || sec != 0 {
        write!(f, ":{min:02}")?;
    }
    if sec != 0 {
        write!(f, ":{sec:02}")?;
    }
    Ok(())
}

/// `IntervalStyle = postgres`: `1 year 2 mons -3 days +04:05:06.789`.
/// Each part carries its own sign; a `+` marks a positive part after a
/// negative one (Postgres' `AddPostgresIntPart`).
fn interval(f: &mut fmt::Formatter<'_>, months: i32, days: i32, micros: i64) -> fmt::Result {
    if (months, days, micros) == (i32::MAX, i32::MAX, i64::MAX) {
        return f.write_str("infinity");
    }
    if (months, days, micros) == (i32::MIN, i32::MIN, i64::MIN) {
        return f.write_str("-infinity");
    }
    let mut is_zero = true;
    let mut is_before = false;
    let parts = [
        (i64::from(months / 12), "year"),
        (i64::from(months % 12), "mon"),
        (i64::from(days), "day"),
    ];
    for (value, unit) in parts {
        if value == 0 {
            continue;
        }
        let plus = if is_before && value > 0 { "+" } else { "" };
        let space = if is_zero { "" } else { " " };
        let s = if value == 1 { "" } else { "s" };
        write!(f, "{space}{plus}{value} {unit}{s}")?;
        is_before = value < 0;
        is_zero = false;
    }
    if is_zero || micros != 0 {
        if !is_zero {
            f.write_char(' ')?;
        }
        if micros < 0 {
            f.write_char('-')?;
        } else if is_before {
            f.write_char('+')?;
        }
        hms(f, micros.unsigned_abs())?;
    }
    Ok(())
}

/// `{1,2,3}`, nested braces per dimension, `NULL` for nulls, elements quoted
/// when Postgres' `array_out` would quote them.
fn array(f: &mut fmt::Formatter<'_>, a: &PgArray) -> fmt::Result {
    // `box` is the one builtin type whose array delimiter is not a comma.
    let delim = if a.element_oid == 603 { ';' } else { ',' };
    if a.dims.is_empty() || a.dims.contains(&0) {
        return f.write_str("{}");
    }
    let mut elements = a.elements.iter();
    nested(f, &a.dims, &mut elements, delim)
}

fn nested<'a>(
    f: &mut fmt::Formatter<'_>,
    dims: &[u32],
    elements: &mut impl Iterator<Item = &'a Element>,
    delim: char,
) -> fmt::Result {
    f.write_char('{')?;
    for i in 0..dims[0] {
        if i > 0 {
            f.write_char(delim)?;
        }
        if dims.len() > 1 {
            nested(f, &dims[1..], elements, delim)?;
        } else {
            match elements.next() {
                None | Some(Element::Null) => f.write_str("NULL")?,
                Some(e) => quoted_element(f, &element_text(e), delim)?,
            }
        }
    }
    f.write_char('}')
}

/// An element's output-function text: as for a scalar, except `t`/`f`.
fn element_text(e: &Element) -> String {
    let v = match e.clone() {
        Element::Null => return String::new(),
        Element::Boolean(b) => return (if b { "t" } else { "f" }).to_string(),
        Element::Int2(x) => Value::Int2(x),
        Element::Int4(x) => Value::Int4(x),
        Element::Int8(x) => Value::Int8(x),
        Element::Float4(x) => Value::Float4(x),
        Element::Float8(x) => Value::Float8(x),
        Element::Numeric(x) => Value::Numeric(x),
        Element::Text(x) => Value::Text(x),
        Element::Bytea(x) => Value::Bytea(x),
        Element::Json(x) => Value::Json(x),
        Element::Jsonb(x) => Value::Jsonb(x),
        Element::Uuid(x) => Value::Uuid(x),
        Element::Date(x) => Value::Date(x),
        Element::Time(x) => Value::Time(x),
        Element::Timetz(x) => Value::Timetz(x),
        Element::Timestamp(x) => Value::Timestamp(x),
        Element::Timestamptz(x) => Value::Timestamptz(x),
        Element::Interval(x) => Value::Interval(x),
        Element::EnumLabel(x) => Value::EnumLabel(x),
        Element::Other(x) => Value::Other(x),
    };
    v.to_string()
}

fn quoted_element(f: &mut fmt::Formatter<'_>, s: &str, delim: char) -> fmt::Result {
    let needs_quotes = s.is_empty()
        || s.eq_ignore_ascii_case("NULL")
        || s.chars().any(|c| {
            matches!(
                c,
                '"' | '\\' | '{' | '}' | ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'
            ) || c == delim
        });
    if !needs_quotes {
        return f.write_str(s);
    }
    f.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interval, OtherValue, TimeTz};

    fn t(v: Value) -> String {
        v.to_text().unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(Value::Null.to_text(), None);
        assert_eq!(Value::UnchangedToast.to_text(), None);
        assert_eq!(t(Value::Boolean(true)), "true");
        assert_eq!(t(Value::Int2(-5)), "-5");
        assert_eq!(t(Value::Int8(i64::MIN)), "-9223372036854775808");
        assert_eq!(t(Value::Numeric("1.50".into())), "1.50");
        assert_eq!(t(Value::Text("".into())), "");
        assert_eq!(t(Value::Bytea(vec![0, 0xab, 0x10])), "\\x00ab10");
        assert_eq!(
            t(Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        let other = OtherValue {
            type_oid: 869,
            text: "10.0.0.1".into(),
        };
        assert_eq!(t(Value::Other(other)), "10.0.0.1");
    }

    #[test]
    fn floats_match_postgres() {
        // Expected strings are what Postgres 15 prints for `x::text`, as are
        // the other tests' (checked against a server).
        let cases8: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (1.2345e15, "1.2345e+15"),
            (1e100, "1e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (x, want) in cases8 {
            assert_eq!(t(Value::Float8(*x)), *want, "{x:e}");
        }
        let cases4: &[(f32, &str)] = &[
            (1.5, "1.5"),
            (0.1, "0.1"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (3.4028235e38, "3.4028235e+38"),
        ];
        for (x, want) in cases4 {
            assert_eq!(t(Value::Float4(*x)), *want, "{x:e}");
        }
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(t(Value::Date(0)), "1970-01-01");
        assert_eq!(t(Value::Date(19_737)), "2024-01-15");
        assert_eq!(t(Value::Date(-719_162)), "0001-01-01");
        assert_eq!(t(Value::Date(-719_163)), "0001-12-31 BC");
        assert_eq!(t(Value::Date(-719_528)), "0001-01-01 BC");
        assert_eq!(t(Value::Date(i32::MAX)), "infinity");
        assert_eq!(t(Value::Date(i32::MIN)), "-infinity");
        assert_eq!(t(Value::Time(0)), "00:00:00");
        assert_eq!(t(Value::Time(USECS_PER_DAY)), "24:00:00");
        assert_eq!(t(Value::Time(3_723_000_500)), "01:02:03.0005");
        let tz = TimeTz {
            micros: 37_230_000_000,
            offset_secs: 19_800,
        };
        assert_eq!(t(Value::Timetz(tz)), "10:20:30+05:30");
        let tz = TimeTz {
            micros: 0,
            offset_secs: -3_600,
        };
        assert_eq!(t(Value::Timetz(tz)), "00:00:00-01");
        let ts = 1_705_314_030_500_000; // 2024-01-15 10:20:30.5 UTC
        assert_eq!(t(Value::Timestamp(ts)), "2024-01-15 10:20:30.5");
        assert_eq!(t(Value::Timestamptz(ts)), "2024-01-15 10:20:30.5+00");
        assert_eq!(t(Value::Timestamptz(i64::MAX)), "infinity");
        assert_eq!(
            t(Value::Timestamp(-62_198_755_200_000_000)),
            "0002-01-01 00:00:00 BC"
        );
    }

    #[test]
    fn intervals() {
        let iv = |months, days, micros| {
            t(Value::Interval(Interval {
                months,
                days,
                micros,
            }))
        };
        assert_eq!(iv(0, 0, 0), "00:00:00");
        assert_eq!(
            iv(14, -3, 14_706_789_000),
            "1 year 2 mons -3 days +04:05:06.789"
        );
        assert_eq!(iv(1, 1, 0), "1 mon 1 day");
        assert_eq!(iv(0, 0, -1_000_000), "-00:00:01");
        assert_eq!(iv(-12, 0, 0), "-1 years");
        assert_eq!(iv(0, -1, 3_600_000_000), "-1 days +01:00:00");
        assert_eq!(iv(0, 1, -1_000_000), "1 day -00:00:01");
        assert_eq!(iv(-1, 1, 0), "-1 mons +1 day");
    }

    #[test]
    fn arrays() {
        let arr = |oid, dims: Vec<u32>, elements| {
            t(Value::Array(PgArray {
                element_oid: oid,
                dims,
                elements,
            }))
        };
        assert_eq!(arr(23, vec![], vec![]), "{}");
        assert_eq!(
            arr(
                23,
                vec![3],
                vec![Element::Int4(1), Element::Null, Element::Int4(3)]
            ),
            "{1,NULL,3}"
        );
        assert_eq!(
            arr(23, vec![2, 2], (1..=4).map(Element::Int4).collect()),
            "{{1,2},{3,4}}"
        );
        let texts = ["a", "", "b c", "NULL", "q\"x", "{", "x,y"]
            .iter()
            .map(|s| Element::Text(s.to_string()))
            .collect();
        assert_eq!(
            arr(25, vec![7], texts),
            r#"{a,"","b c","NULL","q\"x","{","x,y"}"#
        );
        assert_eq!(
            arr(
                16,
                vec![2],
                vec![Element::Boolean(true), Element::Boolean(false)]
            ),
            "{t,f}"
        );
        assert_eq!(
            arr(17, vec![1], vec![Element::Bytea(vec![1])]),
            r#"{"\\x01"}"#
        );
    }
}
