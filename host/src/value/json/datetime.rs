//! Dates, times, timestamps and intervals as `to_jsonb` prints them (the
//! caller adds the quotes).

use super::digits::{pair, push_i64, push_padded};
use crate::value::calendar::{civil_from_days, USECS_PER_DAY, USECS_PER_SEC};
use crate::value::model::{DATE_NEG_INFINITY, DATE_POS_INFINITY, TS_NEG_INFINITY, TS_POS_INFINITY};

const USECS_PER_MINUTE: u64 = 60 * USECS_PER_SEC as u64;
const USECS_PER_HOUR: u64 = 60 * USECS_PER_MINUTE;

/// `YYYY-MM-DD` (year padded to 4 digits, more if needed) plus ` BC` for
/// years before 1 AD, as Postgres' ISO/XSD date style prints them.
pub(super) fn write_date(out: &mut Vec<u8>, days: i32) {
    match days {
        DATE_NEG_INFINITY => out.extend_from_slice(b"-infinity"),
        DATE_POS_INFINITY => out.extend_from_slice(b"infinity"),
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
///
/// Years 1 to 9999 (all but a few real values) are built in one fixed-size array and
/// appended at once: a snapshot row's timestamp otherwise took seven digit writes and five
/// pushes, each checking the buffer's capacity (`push_padded` was the host's largest single
/// symbol in a one-worker snapshot profile).
pub(super) fn write_timestamp(out: &mut Vec<u8>, ts: i64, with_tz: bool) {
    if ts != TS_NEG_INFINITY && ts != TS_POS_INFINITY {
        let (y, m, d) = civil_from_days(ts.div_euclid(USECS_PER_DAY));
        if (1..=9999).contains(&y) {
            return write_timestamp_common(out, (y as u64, m, d), ts, with_tz);
        }
    }
    write_timestamp_general(out, ts, with_tz);
}

/// [`write_timestamp`] for a year of four digits AD.
fn write_timestamp_common(out: &mut Vec<u8>, (y, m, d): (u64, u32, u32), ts: i64, tz: bool) {
    let t = ts.rem_euclid(USECS_PER_DAY) as u64;
    let (hours, rest) = (t / USECS_PER_HOUR, t % USECS_PER_HOUR);
    let secs = rest % USECS_PER_MINUTE;
    let mut b = *b"0000-00-00T00:00:00.000000+00:00";
    b[0..2].copy_from_slice(&pair(y / 100));
    b[2..4].copy_from_slice(&pair(y % 100));
    b[5..7].copy_from_slice(&pair(u64::from(m)));
    b[8..10].copy_from_slice(&pair(u64::from(d)));
    b[11..13].copy_from_slice(&pair(hours));
    b[14..16].copy_from_slice(&pair(rest / USECS_PER_MINUTE));
    b[17..19].copy_from_slice(&pair(secs / USECS_PER_SEC as u64));
    let frac = secs % USECS_PER_SEC as u64;
    let mut len = 19;
    if frac != 0 {
        b[20..22].copy_from_slice(&pair(frac / 10_000));
        b[22..24].copy_from_slice(&pair(frac / 100 % 100));
        b[24..26].copy_from_slice(&pair(frac % 100));
        // Without trailing zeros, as Postgres prints it.
        len = 26;
        while b[len - 1] == b'0' {
            len -= 1;
        }
    }
    if tz {
        b.copy_within(26..32, len);
        len += 6;
    }
    // The whole array, then cut: a copy of a fixed size is a few register moves.
    let start = out.len();
    out.extend_from_slice(&b);
    out.truncate(start + len);
}

/// [`write_timestamp`] for every value: infinities, years before 1 AD or after 9999.
fn write_timestamp_general(out: &mut Vec<u8>, ts: i64, with_tz: bool) {
    match ts {
        TS_NEG_INFINITY => out.extend_from_slice(b"-infinity"),
        TS_POS_INFINITY => out.extend_from_slice(b"infinity"),
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
pub(super) fn write_time(out: &mut Vec<u8>, micros: i64) {
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
pub(super) fn write_offset(out: &mut Vec<u8>, east_secs: i32) {
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
pub(super) fn write_interval(out: &mut Vec<u8>, months: i32, days: i32, micros: i64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-array path writes exactly what the general one does, for every field width,
    /// fraction length and the year bounds around it.
    #[test]
    fn common_timestamps_match_the_general_writer() {
        let day = USECS_PER_DAY;
        let year_1 = -730_119 * day; // 0001-01-01 (Postgres epoch 2000-01-01)
        let year_10000 = 2_921_940 * day; // 10000-01-01
        let mut cases = vec![
            0,
            1,
            -1,
            day - 1,
            year_1,
            year_1 - 1,
            year_10000,
            year_10000 - 1,
            TS_NEG_INFINITY,
            TS_POS_INFINITY,
        ];
        for frac in [
            1, 10, 100, 1_000, 10_000, 100_000, 120_000, 123_456, 999_999, 500_000,
        ] {
            cases.push(86_399 * USECS_PER_SEC + frac);
            cases.push(-frac);
        }
        // A spread of instants over the years 1 to 9999 and beyond.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (year_10000 - year_1) as u64 + 4 * day as u64;
            cases.push(year_1 - 2 * day + (x % span) as i64);
        }
        for ts in cases {
            for tz in [false, true] {
                let (mut fast, mut general) = (b"x".to_vec(), b"x".to_vec());
                write_timestamp(&mut fast, ts, tz);
                write_timestamp_general(&mut general, ts, tz);
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(general).unwrap(),
                    "ts {ts}, tz {tz}"
                );
            }
        }
        let mut out = Vec::new();
        write_timestamp(&mut out, year_1, true);
        assert_eq!(out, b"0001-01-01T00:00:00+00:00");
        out.clear();
        write_timestamp(&mut out, year_1 - 1, false);
        assert_eq!(out, b"0001-12-31T23:59:59.999999 BC");
        out.clear();
        write_timestamp(&mut out, year_10000 - 1, false);
        assert_eq!(out, b"9999-12-31T23:59:59.999999");
        out.clear();
        write_timestamp(&mut out, 120_000, true);
        assert_eq!(out, b"2000-01-01T00:00:00.12+00:00");
    }
}
