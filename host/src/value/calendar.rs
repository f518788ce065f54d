//! Proleptic Gregorian calendar arithmetic in Postgres' terms (days since
//! 2000-01-01, astronomical years), shared by the text parser (`text`) and
//! the JSON writer (`json`): each needs one direction, and keeping both here
//! lets neither import the other.

pub(super) const USECS_PER_SEC: i64 = 1_000_000;
pub(super) const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01, the Postgres epoch.
const UNIX_TO_PG_EPOCH_DAYS: i64 = 10_957;
/// First valid date, 4714-11-24 BC (Julian day 0), in days since 2000-01-01.
pub(super) const MIN_DATE_DAYS: i64 = -2_451_545;
/// One past the last valid date (5874898-01-01), in days since 2000-01-01.
pub(super) const END_DATE_DAYS: i64 = 2_147_483_494 - 2_451_545;

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

pub(super) fn days_in_month(y: i64, m: i64) -> i64 {
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
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - UNIX_TO_PG_EPOCH_DAYS
}

/// The inverse of [`days_from_civil`]: `(astronomical year, month, day)`.
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
