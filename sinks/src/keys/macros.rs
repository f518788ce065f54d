//! `sink_keys!`, which declares a sink type's own keys, and [`element`], which it and the
//! entry's reader use to read keys from an array as serde's derive does.

use serde::de::{self, SeqAccess};
use serde::Deserialize;

/// Element `index` of an array read as a struct (then the next index), or serde's
/// "invalid length" when the array ends.
pub(crate) fn element<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    index: &mut usize,
    expected: &dyn de::Expected,
) -> Result<T, A::Error> {
    *index += 1;
    seq.next_element()?
        .ok_or_else(|| de::Error::invalid_length(*index - 1, expected))
}

/// Declares a sink type's own keys: a struct of optional spanned values, `KEYS` in
/// declaration order (the order serde lists them in), `take`, which reads one of them
/// from the entry's table, `from_seq`, and `present`, the keys present with their spans.
///
/// `present` lists the keys in the order a key that does not apply to the entry's type is
/// reported: declaration order, unless a `report_order: [...]` follows the struct (kept
/// where that order was already pinned differently); it must then name every key once,
/// which is checked at compile time.
macro_rules! sink_keys {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $crate::keys::sink_keys! {
            $(#[$meta])*
            pub struct $name {
                $($(#[$field_meta])* pub $field: $ty,)*
            }
            report_order: [$($field),*]
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
        $(#[$order_meta:meta])*
        report_order: [$($reported:ident),*]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: Option<serde_spanned::Spanned<$ty>>,)*
        }

        const _: () = assert!(
            $crate::keys::same_keys($name::KEYS, &[$(stringify!($reported)),*]),
            concat!("the report_order of ", stringify!($name), " must name each of its keys once"),
        );

        impl $name {
            pub(crate) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Reads the value of `key` if it is one of these keys.
            #[allow(unused_variables)]
            pub(crate) fn take<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                Ok(match key {
                    $(stringify!($field) => {
                        self.$field = Some(map.next_value()?);
                        true
                    })*
                    _ => false,
                })
            }

            /// The keys read from an array, in declaration order, as serde's derive does;
            /// `index` is the index of the first, then past the last.
            #[allow(unused_variables)]
            pub(crate) fn from_seq<'de, A: serde::de::SeqAccess<'de>>(
                seq: &mut A,
                index: &mut usize,
                expected: &dyn serde::de::Expected,
            ) -> Result<Self, A::Error> {
                Ok($name {
                    $($field: $crate::keys::element(seq, index, expected)?,)*
                })
            }

            /// The keys with their spans (`None`: absent), in the order a key that does
            /// not apply to the entry's type is reported.
            pub(crate) fn present(
                &self,
            ) -> [(&'static str, Option<std::ops::Range<usize>>); $name::KEYS.len()] {
                [$((stringify!($reported), $crate::keys::at(&self.$reported))),*]
            }
        }
    };
}
pub(crate) use sink_keys;

/// Whether `reported` names each of `keys` (distinct: a struct's fields) exactly once.
pub(crate) const fn same_keys(keys: &[&str], reported: &[&str]) -> bool {
    if keys.len() != reported.len() {
        return false;
    }
    let mut i = 0;
    while i < keys.len() {
        let mut found = false;
        let mut j = 0;
        while j < reported.len() {
            found |= same_str(keys[i], reported[j]);
            j += 1;
        }
        if !found {
            return false;
        }
        i += 1;
    }
    true
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
