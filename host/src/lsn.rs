//! Log sequence numbers: a position in the WAL, printed the way Postgres prints it.

use std::fmt;
use std::str::FromStr;

/// A WAL position (`pg_lsn`). Ordered; `Lsn(0)` is "invalid / none" as in Postgres.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position (`0/0`).
    pub const ZERO: Lsn = Lsn(0);

    /// True for `0/0`.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The `X/X` text, as `to_string()` gives it, without the formatting machinery (every
    /// encoded change carries two of these).
    pub fn to_text(self) -> String {
        let mut out = Vec::with_capacity(17);
        self.write_text(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the `X/X` text.
    ///
    /// Both halves are written as eight digits shifted to the left (so the wanted digits
    /// come first), into one fixed-size array appended whole and then cut to length: fixed
    /// sizes compile to a few register moves, where a copy of varying length is a `memcpy`
    /// call (every encoded change carries two LSNs).
    pub fn write_text(self, out: &mut Vec<u8>) {
        let (hi, lo) = (self.0 >> 32, self.0 & 0xFFFF_FFFF);
        let (hn, ln) = (hex_len32(hi), hex_len32(lo));
        let mut b = [0u8; 18];
        b[..8].copy_from_slice(&hex_fixed::<8>(hi << (4 * (8 - hn))));
        b[hn] = b'/';
        b[hn + 1..hn + 9].copy_from_slice(&hex_fixed::<8>(lo << (4 * (8 - ln))));
        let len = out.len();
        out.extend_from_slice(&b);
        out.truncate(len + hn + 1 + ln);
    }
}

/// Upper-case hex of every byte value: byte `b`'s two digits at `2b` and `2b + 1`.
static HEX_PAIRS: [u8; 512] = {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut t = [0u8; 512];
    let mut i = 0;
    while i < 256 {
        t[2 * i] = DIGITS[i >> 4];
        t[2 * i + 1] = DIGITS[i & 0xF];
        i += 1;
    }
    t
};

/// The low `4 * N` bits of `v` as exactly `N` upper-case hex digits (`N` ≤ 16), two
/// digits per table lookup. Ids are made of these: fixed widths, no branches.
#[inline]
pub(crate) fn hex_fixed<const N: usize>(mut v: u64) -> [u8; N] {
    let mut buf = [b'0'; N];
    let mut i = N;
    while i >= 2 {
        let p = (v & 0xFF) as usize * 2;
        buf[i - 2] = HEX_PAIRS[p];
        buf[i - 1] = HEX_PAIRS[p + 1];
        v >>= 8;
        i -= 2;
    }
    if i == 1 {
        buf[0] = HEX_PAIRS[(v & 0xF) as usize * 2 + 1];
    }
    buf
}

/// Hex digits of a 32-bit value without leading zeros (at least one).
#[inline]
fn hex_len32(v: u64) -> usize {
    ((64 - (v | 1).leading_zeros() as usize).div_ceil(4)).clamp(1, 8)
}

impl fmt::Display for Lsn {
    /// `X/XXXXXXXX`: upper 32 bits, slash, lower 32 bits, hex upper case, as `pg_lsn` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not an `X/X` LSN.
#[derive(Debug, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', e.g. 0/16B3748")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_text() {
        for s in ["0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF", "A/B"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
    }

    #[test]
    fn to_text_is_to_string() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for v in [0, 1, 0xF, 0x10, 0xFFFF_FFFF, 1 << 32, u64::MAX] {
            assert_eq!(Lsn(v).to_text(), Lsn(v).to_string());
        }
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x >> (x % 64);
            assert_eq!(Lsn(v).to_text(), Lsn(v).to_string());
        }
    }

    #[test]
    fn texts_match_the_formatting_machinery() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut values = vec![0, 1, 0xF, 0x10, 0xFFFF_FFFF, 1 << 32, u64::MAX, 0x16B3748];
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Every digit count of both halves.
            values.push(rng >> (rng % 64));
        }
        for v in values {
            assert_eq!(
                Lsn(v).to_text(),
                format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
            );
            assert_eq!(hex_fixed::<16>(v), *format!("{v:016X}").as_bytes());
            assert_eq!(
                hex_fixed::<8>(v),
                *format!("{:08X}", v & 0xFFFF_FFFF).as_bytes()
            );
            assert_eq!(hex_fixed::<3>(v), *format!("{:03X}", v & 0xFFF).as_bytes());
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "0", "/1", "1/", "g/1", "1/2/3", "123456789/0"] {
            assert!(s.parse::<Lsn>().is_err(), "{s}");
        }
    }
}
