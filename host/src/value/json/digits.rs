//! Integers in decimal and bytes in hex, written straight into the output
//! buffer; shared by every other JSON writer.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex digit of the low nibble of `n`.
pub(super) fn hex_digit(n: u8) -> u8 {
    HEX[usize::from(n & 0xf)]
}

pub(super) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_padded(out, v, 1);
}

/// Writes `v` in decimal, zero-padded to at least `width` digits.
pub(super) fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
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

/// Appends `bytes` as lowercase hex, two digits a byte.
pub(super) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b));
    }
}
