//! A change id's text, kept inline: every message carries one, and a heap string per
//! message was an allocation per change (freed on another thread, once the batch is
//! acknowledged).

use std::fmt;
use std::ops::Deref;

/// Bytes kept inline: a read's id is 42, a stream change's 25, a split suffix (`.N`) at
/// most 11 more.
const INLINE: usize = 54;

/// A change id (`Message::id`): reads as a `&str`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdText(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// The bytes past `len` are zero, so the derived equality compares the text.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer than any id cdc-host makes (only a test's text).
    Heap(Box<str>),
}

impl IdText {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied from a str")
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for IdText {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            IdText(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            IdText(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for IdText {
    fn from(s: String) -> Self {
        IdText::from(s.as_str())
    }
}

impl Deref for IdText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for IdText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for IdText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for IdText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for IdText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<IdText> for str {
    fn eq(&self, other: &IdText) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<IdText> for &str {
    fn eq(&self, other: &IdText) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<IdText> for String {
    fn eq(&self, other: &IdText) -> bool {
        self == other.as_str()
    }
}

impl fmt::Display for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_the_text_inline_or_not() {
        let long = "x".repeat(INLINE + 1);
        for s in [
            "",
            "00000000016B3748-00000000",
            "r00000001-0123456789abcdef0123456789abcdef.12",
            &long,
        ] {
            let id = IdText::from(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id, *s);
            assert_eq!(id, IdText::from(s.to_owned()));
            assert_eq!(id.to_string(), s);
        }
        assert_ne!(IdText::from("a"), IdText::from("ab"));
    }
}
