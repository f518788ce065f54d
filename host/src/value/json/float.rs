//! Floats, printed as Postgres prints them and then re-printed the way
//! `to_jsonb` shows them (as a numeric, without an exponent).

use std::fmt;

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
pub(super) trait PgFloat:
    Copy + PartialOrd + fmt::LowerExp + std::str::FromStr + serde::Serialize
{
    /// Digits that always suffice to round-trip.
    const MAX_DIGITS: usize;
    fn classify(self) -> FloatClass;
    /// `(m, e, halved)`: the value is `m * 2^e`; `halved` when the gap to the
    /// next float below is half the gap above (a power of two).
    fn decompose(self) -> (u64, i32, bool);
    fn abs(self) -> Self;
    fn is_sign_negative(self) -> bool;
}

pub(super) enum FloatClass {
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

            fn is_sign_negative(self) -> bool {
                <$t>::is_sign_negative(self)
            }
        }
    };
}

pg_float!(f64, 52, 0x7ff, 1023, 17);
pg_float!(f32, 23, 0xff, 127, 9);

/// A float as `to_jsonb` prints it: Postgres' shortest decimal, without an
/// exponent; `0` for both zeros (it goes through `numeric`, which has no
/// negative zero); NaN and infinities as strings.
pub(super) fn write_float<F: PgFloat>(out: &mut Vec<u8>, v: F) {
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

/// A float as its own output function (`float8out`, `float4out`) prints it: Postgres'
/// shortest decimal, fixed-point when the decimal exponent is in -4..15 and `1.5e+20` style
/// otherwise (Ryu's `to_chars` as Postgres has it: at least two exponent digits), `-0` kept,
/// `NaN`, `Infinity`, `-Infinity`. The text of `point` and the other geometric types.
pub(in crate::value) fn write_float8_text(out: &mut Vec<u8>, v: f64) {
    write_float_text(out, v)
}

fn write_float_text<F: PgFloat>(out: &mut Vec<u8>, v: F) {
    match v.classify() {
        FloatClass::NaN => out.extend_from_slice(b"NaN"),
        FloatClass::PosInf => out.extend_from_slice(b"Infinity"),
        FloatClass::NegInf => out.extend_from_slice(b"-Infinity"),
        FloatClass::Zero => {
            if v.is_sign_negative() {
                out.push(b'-');
            }
            out.push(b'0');
        }
        FloatClass::Finite { negative } => {
            if negative {
                out.push(b'-');
            }
            let (digits, exp) = shortest_decimal(v.abs());
            let n = digit_count((digits, exp)) as i32;
            let sci = exp + n - 1;
            if (-4..15).contains(&sci) {
                write_plain_decimal(out, digits, exp);
                return;
            }
            let text = digits.to_string();
            out.push(text.as_bytes()[0]);
            if text.len() > 1 {
                out.push(b'.');
                out.extend_from_slice(&text.as_bytes()[1..]);
            }
            out.push(b'e');
            out.push(if sci < 0 { b'-' } else { b'+' });
            let e = sci.unsigned_abs();
            if e < 10 {
                out.push(b'0');
            }
            out.extend_from_slice(e.to_string().as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_decimal_binary_comparison() {
        // 0.5 == 1 * 2^-1, 1.25 == 5 * 2^-2, 3000 == 375 * 2^3.
        assert!(decimal_equals_binary((5, -1), 1, -1));
        assert!(decimal_equals_binary((125, -2), 5, -2));
        assert!(decimal_equals_binary((3, 3), 375, 3));
        assert!(!decimal_equals_binary((1, -1), 1, -3));
        assert!(!decimal_equals_binary((1, 30), 1, 100));
    }
}
