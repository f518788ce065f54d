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
/// declaration order (the order serde lists them in), and `take`, which reads one of them
/// from the entry's table.
macro_rules! sink_keys {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: Option<serde_spanned::Spanned<$ty>>,)*
        }

        impl $name {
            pub(crate) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Reads the value of `key` if it is one of these keys.
            pub(crate) fn take<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($field) => self.$field = Some(map.next_value()?),)*
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// The keys read from an array, in declaration order, as serde's derive does;
            /// `index` is the index of the first, then past the last.
            pub(crate) fn from_seq<'de, A: serde::de::SeqAccess<'de>>(
                seq: &mut A,
                index: &mut usize,
                expected: &dyn serde::de::Expected,
            ) -> Result<Self, A::Error> {
                Ok($name {
                    $($field: $crate::keys::element(seq, index, expected)?,)*
                })
            }
        }
    };
}
pub(crate) use sink_keys;
