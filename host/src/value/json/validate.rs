//! Checking that `json`/`jsonb` column text is one JSON value before it is
//! embedded verbatim in our output. Used by the text parser; a leaf.

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
