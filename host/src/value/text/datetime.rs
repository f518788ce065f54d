//! Parsers for `date`, `time`, `timetz`, `timestamp`, `timestamptz` and
//! `interval` as the server prints them with `DateStyle=ISO`,
//! `IntervalStyle=postgres` and `TimeZone=UTC`.

use super::scalar::{parse_i64, Reason};
use crate::value::calendar::{
    days_from_civil, days_in_month, END_DATE_DAYS, MIN_DATE_DAYS, USECS_PER_DAY, USECS_PER_SEC,
};
use crate::value::model::{DATE_NEG_INFINITY, DATE_POS_INFINITY, TS_NEG_INFINITY, TS_POS_INFINITY};

/// First valid timestamp, 4714-11-24 00:00:00 BC.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// One past the last valid timestamp, 294277-01-01 00:00:00.
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
/// `timetz` offsets are limited to less than 16 hours either way.
const MAX_TZ_OFFSET_SECS: i32 = 16 * 3600 - 1;

pub(super) fn parse_date(s: &[u8]) -> Result<i32, Reason> {
    match s {
        b"infinity" => return Ok(DATE_POS_INFINITY),
        b"-infinity" => return Ok(DATE_NEG_INFINITY),
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

pub(super) fn parse_time(s: &[u8]) -> Result<i64, Reason> {
    let mut c = Cursor::new(s);
    let t = c.time_of_day()?;
    c.end()?;
    check_time(t)
}

pub(super) fn parse_timetz(s: &[u8]) -> Result<(i64, i32), Reason> {
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
pub(super) fn parse_timestamp(s: &[u8], with_tz: bool) -> Result<i64, Reason> {
    match s {
        b"infinity" => return Ok(TS_POS_INFINITY),
        b"-infinity" => return Ok(TS_NEG_INFINITY),
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
pub(super) fn parse_interval(s: &[u8]) -> Result<(i32, i32, i64), Reason> {
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
    use super::super::check::{ok, rejects};
    use super::*;
    use crate::value::{oid, Value};

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
}
