//! `sink_types!`: from the one list of sink types in the parent module, everything that
//! differs by type: [`SinkType`](super::SinkType) (its `type = "…"` names, `as_str`,
//! `shared_keys`), [`TypeKeys`](super::TypeKeys) (each type's keys, read, reported and
//! lent to the type as an [`Entry`](super::Entry)), and the dispatch of `check` and
//! `build` to the type's `config` module.
//!
//! A macro rather than a trait: the list must also give an enum, a struct with a field
//! per type and `match` arms, which only a macro can write from one list.
//!
//! Each type's folder provides, in its `config.rs`: its keys `Keys` (a `sink_keys!`
//! struct, named in the list), and
//! - `SHARED_KEYS: &[&str]`: which of `url`, `on_reject`, `dead_letter_sink` it accepts;
//! - `check(&Entry<Keys>) -> Result<(), KeyError>`: what can be checked without the
//!   environment (run before the dead-letter checks);
//! - `check_resolved(&Entry<Keys>) -> Result<(), KeyError>`: the values as `build` will
//!   resolve them (`${ENV}`, URLs, credentials; run last);
//! - `async fn build(Entry<Keys>) -> Result<Box<dyn Sink>, SinkError>`.

/// See the module docs. Each line: `"<type>" => <SinkType variant>(<folder>, <keys type>)`;
/// the order of the lines is the order in which their keys are listed ("expected one of")
/// and a key of another type is reported.
macro_rules! sink_types {
    ($($name:tt => $variant:ident($module:ident, $keys:ident),)*) => {
        /// The kinds of sink (`type`).
        #[derive(Debug, serde::Deserialize, Clone, Copy, PartialEq, Eq)]
        pub enum SinkType {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl SinkType {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(SinkType::$variant => $name,)*
                }
            }

            /// The optional keys every sink may have (url, on_reject, dead_letter_sink)
            /// that this type accepts.
            fn shared_keys(self) -> &'static [&'static str] {
                match self {
                    $(SinkType::$variant => $crate::$module::config::SHARED_KEYS,)*
                }
            }
        }

        /// The keys of each sink type, one field per type (named after its folder). Any
        /// present for a type other than the entry's are rejected by
        /// [`SinkConfig::check`].
        #[derive(Debug, Default)]
        pub struct TypeKeys {
            $(pub $module: $crate::$module::config::$keys,)*
        }

        impl TypeKeys {
            /// Each type's keys, in the order of the list.
            const KEYS: &'static [&'static [&'static str]] =
                &[$($crate::$module::config::$keys::KEYS),*];

            /// Reads the value of `key` if it is one of a type's keys.
            fn take<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                Ok($(self.$module.take(key, map)? ||)* false)
            }

            /// The keys read from an array, type after type, as serde's derive does.
            fn from_seq<'de, A: serde::de::SeqAccess<'de>>(
                seq: &mut A,
                index: &mut usize,
                expected: &dyn serde::de::Expected,
            ) -> Result<Self, A::Error> {
                Ok(TypeKeys {
                    $($module: $crate::$module::config::$keys::from_seq(seq, index, expected)?,)*
                })
            }

            /// The first key present of a type other than `kind`, with its span.
            fn foreign(&self, kind: SinkType) -> Option<(&'static str, std::ops::Range<usize>)> {
                $(
                    if kind != SinkType::$variant {
                        let mut present = self.$module.present().into_iter();
                        if let Some(found) = present.find_map(|(key, span)| Some((key, span?))) {
                            return Some(found);
                        }
                    }
                )*
                None
            }
        }

        $(
            impl<'a> From<&'a SinkConfig> for Entry<'a, $crate::$module::config::$keys> {
                fn from(c: &'a SinkConfig) -> Self {
                    c.entry(&c.keys.$module)
                }
            }
        )*

        impl SinkConfig {
            /// The checks of the entry's type, without the environment.
            fn check_type(&self) -> Result<(), KeyError> {
                match self.kind {
                    $(SinkType::$variant => $crate::$module::config::check(&self.into()),)*
                }
            }

            /// The checks of the entry's type, of its values resolved.
            fn check_type_resolved(&self) -> Result<(), KeyError> {
                match self.kind {
                    $(SinkType::$variant => $crate::$module::config::check_resolved(&self.into()),)*
                }
            }

            /// Builds the sink by its type's `build`.
            async fn build_type(&self) -> Result<Box<dyn Sink>, SinkError> {
                match self.kind {
                    $(SinkType::$variant => $crate::$module::config::build(self.into()).await,)*
                }
            }
        }
    };
}
pub(super) use sink_types;
