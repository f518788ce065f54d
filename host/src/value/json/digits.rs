//! Integers in decimal and bytes in hex, written straight into the output
//! buffer; shared by every other JSON writer.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex digit of the low nibble of `n`.
pub(super) fn hex_digit(n: u8) -> u8 {
    HEX[usize::from(n & 0xf)]
}

/// Writes `v` in decimal (`itoa`: four digits a division, about twice the speed of
/// [`push_padded`]'s general path; every integer column of every row goes through here).
pub(super) fn push_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes `v` in decimal, zero-padded to at least `width` digits.
///
/// Dates and times call this seven times a value: the two-digit fields take a path that
/// writes a fixed-size array (no `memcpy` call, no division loop).
#[inline]
pub(super) fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    if v < 100 && width <= 2 {
        // Two-digit fields, and small integers (width 1).
        if v < 10 && width <= 1 {
            out.push(b'0' + v as u8);
        } else {
            out.extend_from_slice(&pair(v));
        }
        return;
    }
    if v < 10_000 && width == 4 {
        let v = v as u16;
        out.extend_from_slice(&[
            b'0' + (v / 1000) as u8,
            b'0' + (v / 100 % 10) as u8,
            b'0' + (v / 10 % 10) as u8,
            b'0' + (v % 10) as u8,
        ]);
        return;
    }
    push_padded_slow(out, v, width);
}

/// `00`, `01`, … `99`: integers are written two digits per division (every snapshot row's
/// integer columns and timestamps' fractions go through here).
static PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// The two decimal digits of `v` (< 100).
#[inline]
pub(super) fn pair(v: u64) -> [u8; 2] {
    let p = v as usize * 2;
    [PAIRS[p], PAIRS[p + 1]]
}

fn push_padded_slow(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let digits = v.checked_ilog10().map_or(1, |d| d as usize + 1);
    if width > 20 {
        // Wider than any u64: the zeros the fixed buffer has no room for.
        out.resize(out.len() + width - 20, b'0');
        return push_padded_slow(out, v, 20);
    }
    let n = digits.max(width);
    // The digits fill `buf[n - digits..n]` from the right, after `width`'s zeros; the
    // whole fixed-size buffer is appended and then cut to `n`: a copy of a fixed size is
    // a few register moves, one of varying length a `memcpy` call.
    let mut buf = [b'0'; 20];
    let mut i = n;
    while v >= 100 {
        let p = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    }
    if v >= 10 {
        let p = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    let len = out.len();
    out.extend_from_slice(&buf);
    out.truncate(len + n);
}

/// Appends `bytes` as lowercase hex, two digits a byte.
pub(super) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_their_decimal_text() {
        for v in [
            0,
            7,
            -7,
            10,
            99,
            100,
            -12_345,
            5_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = b"x".to_vec();
            push_i64(&mut out, v);
            assert_eq!(out, format!("x{v}").into_bytes());
        }
    }

    #[test]
    fn padded_fast_paths_match_the_general_one() {
        for width in [0, 1, 2, 3, 4, 6, 19, 20, 23] {
            for v in
                (0..12_000).chain([99_999, 123_456, 10u64.pow(19) - 1, 10u64.pow(19), u64::MAX])
            {
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                push_padded(&mut fast, v, width);
                push_padded_slow(&mut slow, v, width);
                assert_eq!(fast, slow, "v {v} width {width}");
                assert_eq!(slow, format!("{v:0width$}").into_bytes());
                // Appends: what the buffer held stays.
                let mut after = b"x".to_vec();
                push_padded(&mut after, v, width);
                assert_eq!(after, format!("x{v:0width$}").into_bytes());
            }
        }
    }
}
