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

use std::fmt;

use super::text::{civil_from_days, USECS_PER_DAY, USECS_PER_SEC};
use super::{Array, Numeric, Value};

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
    match v {
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
        Value::Array(a) => write_array(out, a),
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// [`write_json_str`] on bytes that are known to be UTF-8. Copies runs of
/// plain bytes in one go; only escapes are written byte by byte.
fn write_json_bytes(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc = ESCAPES[usize::from(c)];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
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

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
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
// Integers

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_padded(out, v, 1);
}

/// Writes `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

// ---------------------------------------------------------------------------
// Floats
//
// Postgres prints floats with its copy of Ryu: the shortest decimal that
// reads back as the same float, the one closest to the exact value among
// those, ties to even. Unlike stock Ryu (and unlike Rust's `{}` or
// serde_json), it never accepts a decimal lying exactly on the boundary
// between two floats, even where round-half-even would read it back
// correctly (`acceptBounds` is false). Plain shortest-round-trip output
// therefore differs for about 1 float8 in 3000 and 1 float4 in 100, e.g.
// float4 39823128: Postgres `39823128`, others `39823130`; and ties go the
// other way, e.g. float8 2088702688275956.25: Postgres `...956.2`, Rust
// `...956.3`.
//
// We reproduce Postgres exactly without porting Ryu:
// 1. Format with serde_json's float formatter (a fast shortest-round-trip
//    algorithm, ~5x faster than `{:e}`). Its result is Postgres' unless it
//    sits exactly on a boundary or the value is exactly halfway between two
//    candidates; both are exact integer checks ([`is_postgres_choice`]).
// 2. Otherwise (rare), starting at that length (a lower bound: its
//    acceptance interval is never narrower than Postgres'), round the exact
//    value to that many digits (`{:.*e}` is exact, ties to even) and keep it
//    if it lies strictly inside the rounding interval; if it falls outside,
//    try its neighbour towards the value (as Ryu does), else one more digit.
//
// `to_jsonb` then prints the decimal without an exponent. This was checked
// against 890k float4/float8 values printed by Postgres 15.

/// The float types Postgres formats; implemented for f32 and f64.
trait PgFloat: Copy + PartialOrd + fmt::LowerExp + std::str::FromStr + serde::Serialize {
    /// Digits that always suffice to round-trip.
    const MAX_DIGITS: usize;
    fn classify(self) -> FloatClass;
    /// `(m, e, halved)`: the value is `m * 2^e`; `halved` when the gap to the
    /// next float below is half the gap above (a power of two).
    fn decompose(self) -> (u64, i32, bool);
    fn abs(self) -> Self;
}

enum FloatClass {
    NaN,
    PosInf,
    NegInf,
    Zero,
    Finite { negative: bool },
}

macro_rules! pg_float {
    ($t:ty, $mant_bits:expr, $exp_mask:expr, $bias:expr, $max_digits:expr) => {
        impl PgFloat for $t {
            const MAX_DIGITS: usize = $max_digits;

            fn classify(self) -> FloatClass {
                if self.is_nan() {
                    FloatClass::NaN
                } else if self.is_infinite() {
                    if self > 0.0 {
                        FloatClass::PosInf
                    } else {
                        FloatClass::NegInf
                    }
                } else if self == 0.0 {
                    FloatClass::Zero
                } else {
                    FloatClass::Finite {
                        negative: self < 0.0,
                    }
                }
            }

            fn decompose(self) -> (u64, i32, bool) {
                let bits = self.to_bits();
                let mant = u64::from(bits & ((1 << $mant_bits) - 1));
                let exp = ((bits >> $mant_bits) & $exp_mask) as i32;
                if exp == 0 {
                    (mant, 1 - $bias - $mant_bits, false)
                } else {
                    let m = mant | 1 << $mant_bits;
                    (m, exp - $bias - $mant_bits, mant == 0 && exp > 1)
                }
            }

            fn abs(self) -> Self {
                <$t>::abs(self)
            }
        }
    };
}

pg_float!(f64, 52, 0x7ff, 1023, 17);
pg_float!(f32, 23, 0xff, 127, 9);

/// A float as `to_jsonb` prints it: Postgres' shortest decimal, without an
/// exponent; `0` for both zeros (it goes through `numeric`, which has no
/// negative zero); NaN and infinities as strings.
fn write_float<F: PgFloat>(out: &mut Vec<u8>, v: F) {
    match v.classify() {
        FloatClass::NaN => out.extend_from_slice(b"\"NaN\""),
        FloatClass::PosInf => out.extend_from_slice(b"\"Infinity\""),
        FloatClass::NegInf => out.extend_from_slice(b"\"-Infinity\""),
        FloatClass::Zero => out.push(b'0'),
        FloatClass::Finite { negative } => {
            if negative {
                out.push(b'-');
            }
            let (digits, exp) = shortest_decimal(v.abs());
            write_plain_decimal(out, digits, exp);
        }
    }
}

/// A decimal `digits * 10^exp`.
type Decimal = (u64, i32);

/// Postgres' shortest decimal for a positive finite `v`, without trailing
/// zeros in `digits`.
fn shortest_decimal<F: PgFloat>(v: F) -> Decimal {
    let mut buf = StackBuf::new();
    // serde_json may print `123.0`; the digit count must not include zeros.
    let Some(shortest) = buf.shortest(v).map(normalize) else {
        return (0, 0); // unreachable: a finite float always formats
    };
    if is_postgres_choice(v, shortest) {
        return shortest;
    }
    for len in digit_count(shortest)..=F::MAX_DIGITS {
        let Some(nearest) = buf.format(format_args!("{:.*e}", len - 1, v)) else {
            break;
        };
        if let Some(found) = pick_inside(v, nearest) {
            return normalize(found);
        }
    }
    shortest // unreachable: MAX_DIGITS always round-trip
}

/// The fast path: whether the shortest round-trip decimal `r` of `v` is also
/// Postgres' choice. Such an `r` is the closest to `v` among the shortest
/// decimals in the (closed or open) rounding interval, so it is Postgres'
/// unless it sits exactly on an interval boundary, or `v` lies exactly
/// halfway between `r` and a neighbour (`v == (10d ± 5) * 10^(e-1)`), where
/// the tie may have been broken differently.
fn is_postgres_choice<F: PgFloat>(v: F, r: Decimal) -> bool {
    let (d, e) = r;
    let (m, e2, halved) = v.decompose();
    let on_boundary = decimal_equals_binary(r, lower_boundary(m, halved), e2 - 2)
        || decimal_equals_binary(r, 4 * m + 2, e2 - 2);
    let tie = decimal_equals_binary((d * 10 + 5, e - 1), m, e2)
        || decimal_equals_binary((d * 10 - 5, e - 1), m, e2);
    !on_boundary && !tie
}

/// The lower boundary of `m * 2^e`'s rounding interval is
/// `lower_boundary(m, halved) * 2^(e-2)`; the upper one is `(4m + 2) * 2^(e-2)`.
fn lower_boundary(m: u64, halved: bool) -> u64 {
    4 * m - if halved { 1 } else { 2 }
}

/// `nearest` if it lies strictly inside `v`'s rounding interval, else its
/// neighbour towards `v` if that one does, else `None`.
fn pick_inside<F: PgFloat>(v: F, nearest: Decimal) -> Option<Decimal> {
    let (d, e) = nearest;
    let neighbour = match position(v, nearest) {
        Position::Inside => return Some(nearest),
        Position::Below => (d + 1, e),
        Position::Above => (d.checked_sub(1)?, e),
    };
    matches!(position(v, neighbour), Position::Inside).then_some(neighbour)
}

enum Position {
    Below,
    Inside,
    Above,
}

/// Where decimal `x` lies relative to the open interval of reals that round
/// to `v`. Reading `x` back settles it, except when it reads back as `v`
/// while sitting exactly on a boundary (round-half-even picked `v`).
fn position<F: PgFloat>(v: F, x: Decimal) -> Position {
    let mut buf = StackBuf::new();
    let back = buf
        .text(format_args!("{}e{}", x.0, x.1))
        .and_then(|s| s.parse::<F>().ok());
    match back {
        Some(back) if back < v => return Position::Below,
        Some(back) if back > v => return Position::Above,
        Some(_) => {}
        None => return Position::Below, // unreachable: we built valid float text
    }
    let (m, e2, halved) = v.decompose();
    if decimal_equals_binary(x, lower_boundary(m, halved), e2 - 2) {
        Position::Below
    } else if decimal_equals_binary(x, 4 * m + 2, e2 - 2) {
        Position::Above
    } else {
        Position::Inside
    }
}

/// Whether `d * 10^e == n * 2^k` exactly (for `n` < 2^56).
///
/// `d * 10^e = d * 5^e * 2^e`, so the two sides are equal iff their odd
/// parts and their powers of two are. The power of 5 must divide the other
/// side's odd part, which is below 2^64, so exponents beyond 27 never match.
fn decimal_equals_binary((d, e): Decimal, n: u64, k: i32) -> bool {
    if d == 0 || n == 0 || e.unsigned_abs() > 27 {
        return false;
    }
    let five = 5u128.pow(e.unsigned_abs());
    let (lhs, lhs_pow2, rhs, rhs_pow2) = if e >= 0 {
        (u128::from(d) * five, e, u128::from(n), k)
    } else {
        // d * 10^-f == n * 2^k  <=>  d == n * 5^f * 2^(k+f)
        (u128::from(d), 0, u128::from(n) * five, k - e)
    };
    let (lz, rz) = (lhs.trailing_zeros(), rhs.trailing_zeros());
    lhs >> lz == rhs >> rz
        && i64::from(lhs_pow2) + i64::from(lz) == i64::from(rhs_pow2) + i64::from(rz)
}

fn digit_count((d, _): Decimal) -> usize {
    d.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Strips trailing zeros from the digits.
fn normalize((mut d, mut e): Decimal) -> Decimal {
    while d != 0 && d % 10 == 0 {
        d /= 10;
        e += 1;
    }
    (d, e)
}

/// Writes `digits * 10^exp` without an exponent, as `numeric_out` does.
fn write_plain_decimal(out: &mut Vec<u8>, digits: u64, exp: i32) {
    let mut buf = [0u8; 20];
    let mut n = 0;
    let mut d = digits;
    loop {
        buf[n] = b'0' + (d % 10) as u8;
        n += 1;
        d /= 10;
        if d == 0 {
            break;
        }
    }
    buf[..n].reverse();
    let s = &buf[..n];
    let point = n as i64 + i64::from(exp);
    if exp >= 0 {
        out.extend_from_slice(s);
        out.resize(out.len() + exp as usize, b'0');
    } else if point > 0 {
        out.extend_from_slice(&s[..point as usize]);
        out.push(b'.');
        out.extend_from_slice(&s[point as usize..]);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + point.unsigned_abs() as usize, b'0');
        out.extend_from_slice(s);
    }
}

/// Reads `d[.ddd][e[+-]x]` (no sign) as a [`Decimal`].
fn parse_decimal(s: &[u8]) -> Option<Decimal> {
    let (mantissa, exp) = match s.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (
            &s[..i],
            std::str::from_utf8(&s[i + 1..]).ok()?.parse().ok()?,
        ),
        None => (s, 0i32),
    };
    let mut digits: u64 = 0;
    let mut exp = exp;
    let mut after_point = false;
    for &c in mantissa {
        match c {
            b'.' => after_point = true,
            b'0'..=b'9' => {
                digits = digits.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                exp -= i32::from(after_point);
            }
            _ => return None,
        }
    }
    Some((digits, exp))
}

/// A fixed buffer for formatting floats without allocating.
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 48],
            len: 0,
        }
    }

    /// Formats `args` into the buffer (replacing its contents).
    fn text(&mut self, args: fmt::Arguments<'_>) -> Option<&str> {
        self.len = 0;
        fmt::Write::write_fmt(self, args).ok()?;
        std::str::from_utf8(&self.buf[..self.len]).ok()
    }

    /// Formats `args` and reads the result as a [`Decimal`].
    fn format(&mut self, args: fmt::Arguments<'_>) -> Option<Decimal> {
        self.text(args)?;
        parse_decimal(&self.buf[..self.len])
    }

    /// The shortest round-trip decimal of a positive finite `v`.
    fn shortest<F: PgFloat>(&mut self, v: F) -> Option<Decimal> {
        self.len = 0;
        serde_json::to_writer(&mut *self, &v).ok()?;
        parse_decimal(&self.buf[..self.len])
    }

    fn append(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
                true
            }
            None => false,
        }
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.append(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl std::io::Write for StackBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.append(bytes) {
            Ok(bytes.len())
        } else {
            Err(std::io::ErrorKind::WriteZero.into())
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Dates and times

const USECS_PER_MINUTE: u64 = 60 * USECS_PER_SEC as u64;
const USECS_PER_HOUR: u64 = 60 * USECS_PER_MINUTE;

/// `YYYY-MM-DD` (year padded to 4 digits, more if needed) plus ` BC` for
/// years before 1 AD, as Postgres' ISO/XSD date style prints them.
fn write_date(out: &mut Vec<u8>, days: i32) {
    match days {
        super::DATE_NEG_INFINITY => out.extend_from_slice(b"-infinity"),
        super::DATE_POS_INFINITY => out.extend_from_slice(b"infinity"),
        _ => {
            let year = write_ymd(out, i64::from(days));
            if year <= 0 {
                out.extend_from_slice(b" BC");
            }
        }
    }
}

/// Writes the date part of `days`, returning its astronomical year.
fn write_ymd(out: &mut Vec<u8>, days: i64) -> i64 {
    let (y, m, d) = civil_from_days(days);
    // 1 BC is year 0.
    let shown = if y > 0 { y } else { 1 - y };
    push_padded(out, shown.unsigned_abs(), 4);
    out.push(b'-');
    push_padded(out, u64::from(m), 2);
    out.push(b'-');
    push_padded(out, u64::from(d), 2);
    y
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff][+00:00][ BC]`. `timestamptz` is shown in
/// UTC (`to_jsonb` uses the session time zone, which for us is UTC).
fn write_timestamp(out: &mut Vec<u8>, ts: i64, with_tz: bool) {
    match ts {
        super::TS_NEG_INFINITY => out.extend_from_slice(b"-infinity"),
        super::TS_POS_INFINITY => out.extend_from_slice(b"infinity"),
        _ => {
            let year = write_ymd(out, ts.div_euclid(USECS_PER_DAY));
            out.push(b'T');
            write_time(out, ts.rem_euclid(USECS_PER_DAY));
            if with_tz {
                out.extend_from_slice(b"+00:00");
            }
            if year <= 0 {
                out.extend_from_slice(b" BC");
            }
        }
    }
}

/// `HH:MM:SS` plus `.ffffff` without trailing zeros when there is a fraction.
/// Out-of-range values (only possible for hand-built `Value`s) are clamped.
fn write_time(out: &mut Vec<u8>, micros: i64) {
    let t = micros.clamp(0, USECS_PER_DAY) as u64;
    write_hms(out, t / USECS_PER_HOUR, t % USECS_PER_HOUR);
}

/// `HH:MM:SS[.ffffff]` for `hours` and the microseconds within the hour.
fn write_hms(out: &mut Vec<u8>, hours: u64, rest: u64) {
    push_padded(out, hours, 2);
    out.push(b':');
    push_padded(out, rest / USECS_PER_MINUTE, 2);
    out.push(b':');
    let secs = rest % USECS_PER_MINUTE;
    push_padded(out, secs / USECS_PER_SEC as u64, 2);
    let mut frac = secs % USECS_PER_SEC as u64;
    if frac != 0 {
        let mut width = 6;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_padded(out, frac, width);
    }
}

/// A UTC offset as `timetz_out` prints it: `+HH`, `+HH:MM` or `+HH:MM:SS`,
/// as short as the value allows.
fn write_offset(out: &mut Vec<u8>, east_secs: i32) {
    out.push(if east_secs >= 0 { b'+' } else { b'-' });
    let s = u64::from(east_secs.unsigned_abs());
    push_padded(out, s / 3600, 2);
    let (min, sec) = (s / 60 % 60, s % 60);
    if min != 0 || sec != 0 {
        out.push(b':');
        push_padded(out, min, 2);
    }
    if sec != 0 {
        out.push(b':');
        push_padded(out, sec, 2);
    }
}

/// An interval as `interval_out` prints it with `IntervalStyle=postgres`:
/// `1 year 2 mons -3 days +04:05:06.789`. Each part is signed on its own; a
/// `+` is shown on a positive part that follows a negative one.
fn write_interval(out: &mut Vec<u8>, months: i32, days: i32, micros: i64) {
    if (months, days, micros) == (i32::MAX, i32::MAX, i64::MAX) {
        return out.extend_from_slice(b"infinity");
    }
    if (months, days, micros) == (i32::MIN, i32::MIN, i64::MIN) {
        return out.extend_from_slice(b"-infinity");
    }
    let mut state = IntervalState {
        is_zero: true,
        is_before: false,
    };
    state.part(out, i64::from(months / 12), b"year");
    state.part(out, i64::from(months % 12), b"mon");
    state.part(out, i64::from(days), b"day");
    if state.is_zero || micros != 0 {
        if !state.is_zero {
            out.push(b' ');
        }
        if micros < 0 {
            out.push(b'-');
        } else if state.is_before {
            out.push(b'+');
        }
        let t = micros.unsigned_abs();
        write_hms(out, t / USECS_PER_HOUR, t % USECS_PER_HOUR);
    }
}

/// Mirrors `AddPostgresIntPart`'s bookkeeping.
struct IntervalState {
    is_zero: bool,
    is_before: bool,
}

impl IntervalState {
    fn part(&mut self, out: &mut Vec<u8>, value: i64, unit: &[u8]) {
        if value == 0 {
            return;
        }
        if !self.is_zero {
            out.push(b' ');
        }
        if self.is_before && value > 0 {
            out.push(b'+');
        }
        push_i64(out, value);
        out.push(b' ');
        out.extend_from_slice(unit);
        if value != 1 {
            out.push(b's');
        }
        self.is_before = value < 0;
        self.is_zero = false;
    }
}

// ---------------------------------------------------------------------------
// Arrays

/// Nested JSON arrays per dimension. A hand-built `Array` whose `dims` do
/// not match its element count is written flat rather than guessed at.
fn write_array(out: &mut Vec<u8>, a: &Array) {
    let product = a
        .dims
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n as usize));
    if a.dims.is_empty() || product != Some(a.elements.len()) {
        return write_list(out, &a.elements);
    }
    let mut next = a.elements.iter();
    write_dims(out, &a.dims, &mut next);
}

fn write_dims<'a>(out: &mut Vec<u8>, dims: &[u32], next: &mut impl Iterator<Item = &'a Value>) {
    out.push(b'[');
    for i in 0..dims[0] {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        if dims.len() > 1 {
            write_dims(out, &dims[1..], next);
        } else {
            write_json(next.next().unwrap_or(&Value::Null), out);
        }
    }
    out.push(b']');
}

fn write_list(out: &mut Vec<u8>, values: &[Value]) {
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_json(v, out);
    }
    out.push(b']');
}

// ---------------------------------------------------------------------------
// JSON validation

/// Whether `s` is one complete JSON value (RFC 8259, which is also what
/// Postgres' `json` input accepts), optionally surrounded by whitespace.
///
/// Iterative, so deeply nested input cannot overflow the stack; nesting is
/// tracked in a bit stack that only allocates beyond 64 levels.
pub(crate) fn is_valid_json(s: &[u8]) -> bool {
    let mut stack = Nesting::default();
    let mut i = skip_ws(s, 0);
    loop {
        // A value starts at i.
        i = match s.get(i) {
            Some(b'{') => {
                let j = skip_ws(s, i + 1);
                if s.get(j) == Some(&b'}') {
                    j + 1
                } else {
                    stack.push(true);
                    match member_key(s, j) {
                        Some(j) => {
                            i = j;
                            continue;
                        }
                        None => return false,
                    }
                }
            }
            Some(b'[') => {
                let j = skip_ws(s, i + 1);
                if s.get(j) == Some(&b']') {
                    j + 1
                } else {
                    stack.push(false);
                    i = j;
                    continue;
                }
            }
            Some(b'"') => match json_string(s, i) {
                Some(j) => j,
                None => return false,
            },
            Some(b't') if s[i..].starts_with(b"true") => i + 4,
            Some(b'f') if s[i..].starts_with(b"false") => i + 5,
            Some(b'n') if s[i..].starts_with(b"null") => i + 4,
            Some(b'-' | b'0'..=b'9') => match json_number(s, i) {
                Some(j) => j,
                None => return false,
            },
            _ => return false,
        };
        // After a value: close containers or move on to the next value.
        loop {
            i = skip_ws(s, i);
            let Some(in_object) = stack.top() else {
                return i == s.len();
            };
            match (s.get(i), in_object) {
                (Some(b','), false) => {
                    i = skip_ws(s, i + 1);
                    break;
                }
                (Some(b','), true) => match member_key(s, skip_ws(s, i + 1)) {
                    Some(j) => {
                        i = j;
                        break;
                    }
                    None => return false,
                },
                (Some(b']'), false) | (Some(b'}'), true) => {
                    stack.pop();
                    i += 1;
                }
                _ => return false,
            }
        }
    }
}

/// `"key" :` at `i`; returns where the member's value starts.
fn member_key(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let j = skip_ws(s, json_string(s, i)?);
    (s.get(j) == Some(&b':')).then(|| skip_ws(s, j + 1))
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The string starting at the `"` at `i`; returns the index after it.
fn json_string(s: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *s.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if s.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `i`.
fn json_number(s: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: usize| {
        s[i.min(s.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    let n = digits(i);
    if n == 0 || (n > 1 && s[i] == b'0') {
        return None;
    }
    i += n;
    if s.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// A stack of "is this container an object" flags.
#[derive(Default)]
struct Nesting {
    inline: u64,
    depth: usize,
    deep: Vec<bool>,
}

impl Nesting {
    fn push(&mut self, is_object: bool) {
        if self.depth < 64 {
            self.inline = self.inline & !(1 << self.depth) | u64::from(is_object) << self.depth;
        } else {
            self.deep.push(is_object);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if self.depth >= 64 {
            self.deep.pop();
        }
    }

    fn top(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 64 => Some(self.inline >> (d - 1) & 1 == 1),
            _ => self.deep.last().copied(),
        }
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

    #[test]
    fn exact_decimal_binary_comparison() {
        // 0.5 == 1 * 2^-1, 1.25 == 5 * 2^-2, 3000 == 375 * 2^3.
        assert!(decimal_equals_binary((5, -1), 1, -1));
        assert!(decimal_equals_binary((125, -2), 5, -2));
        assert!(decimal_equals_binary((3, 3), 375, 3));
        assert!(!decimal_equals_binary((1, -1), 1, -3));
        assert!(!decimal_equals_binary((1, 30), 1, 100));
    }

    #[test]
    fn json_validation() {
        let deep_ok = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let deep_obj = format!("{}1{}", r#"{"k":"#.repeat(200), "}".repeat(200));
        for ok in [
            "0",
            "-0",
            "1.5e+10",
            "2E-3",
            " true ",
            "null",
            "\"\"",
            r#""\u00e9\ud800\/\b""#,
            "[]",
            "{}",
            r#"{"a": [1, {"b": null}], "c": "d"}"#,
            "\n[ 1 , 2 ]\t",
            deep_ok.as_str(),
            deep_obj.as_str(),
        ] {
            assert!(is_valid_json(ok.as_bytes()), "rejected {ok:?}");
        }
        let deep_bad = format!("{}{}", "[".repeat(1000), "]".repeat(999));
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "-",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "tru",
            "nul",
            "\"\u{1}\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"abc",
            "[",
            "]",
            "{}{}",
            "[}",
            "{]",
            "1 2",
            "NaN",
            deep_bad.as_str(),
        ] {
            assert!(!is_valid_json(bad.as_bytes()), "accepted {bad:?}");
        }
    }
}
