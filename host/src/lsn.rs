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
    pub fn write_text(self, out: &mut Vec<u8>) {
        crate::value::push_short(out, Hex::new(self.0 >> 32, 1).as_bytes());
        out.push(b'/');
        crate::value::push_short(out, Hex::new(self.0 & 0xFFFF_FFFF, 1).as_bytes());
    }
}

/// A number in upper-case hex, zero-padded to a minimum width, on the stack.
#[derive(Debug)]
pub(crate) struct Hex {
    buf: [u8; 16],
    start: usize,
}

impl Hex {
    /// `width` is at most 16 (a `u64` has 16 hex digits).
    pub(crate) fn new(v: u64, width: usize) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        // All 16 digits, then skip the leading zeros the width does not keep: a fixed loop
        // the compiler unrolls (ids write three of these per change).
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = DIGITS[((v >> ((15 - i) * 4)) & 0xF) as usize];
        }
        let needed = ((64 - v.leading_zeros() as usize).div_ceil(4)).max(1);
        Hex {
            buf,
            start: 16 - needed.max(width.min(16)),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
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
    fn hex_keeps_at_least_its_width_and_every_digit() {
        let h = |v, w| String::from_utf8(Hex::new(v, w).as_bytes().to_vec()).unwrap();
        assert_eq!(h(0, 1), "0");
        assert_eq!(h(0, 8), "00000000");
        assert_eq!(h(0xABC, 1), "ABC");
        assert_eq!(h(0xABC, 2), "ABC");
        assert_eq!(h(0xABC, 5), "00ABC");
        assert_eq!(h(u64::MAX, 1), "FFFFFFFFFFFFFFFF");
        assert_eq!(h(u64::MAX, 16), "FFFFFFFFFFFFFFFF");
        assert_eq!(h(0x1000_0000, 1), "10000000");
        assert_eq!(h(1 << 63, 8), "8000000000000000");
        assert_eq!(h(0x16B3748, 16), "00000000016B3748");
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "0", "/1", "1/", "g/1", "1/2/3", "123456789/0"] {
            assert!(s.parse::<Lsn>().is_err(), "{s}");
        }
    }
}
