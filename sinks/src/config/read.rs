//! Reading an entry key by key: the hand-written [`Deserialize`] of [`SinkConfig`]. Each
//! sink type's own keys are read by the `take` of its `sink_keys!` struct.

use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
#[cfg(test)]
use serde_spanned::Spanned;

use super::{SinkConfig, TypeKeys};
use crate::keys::element;

/// Every key of an entry, in the order serde's "unknown field …, expected one of …" names
/// them.
static FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    [
        &["name", "type", "format", "url"][..],
        &TypeKeys::KEYS.concat(),
        &["on_reject", "dead_letter_sink", "routes"],
    ]
    .concat()
});

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("SinkConfig", &FIELDS, EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = SinkConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [[sinks]] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SinkConfig, A::Error> {
        let mut name = None;
        let mut kind = None;
        let mut format = None;
        let mut url = None;
        let mut on_reject = None;
        let mut dead_letter_sink = None;
        let mut routes = None;
        let mut keys = TypeKeys::default();
        while let Some(key) = map.next_key_seed(Key)? {
            match key {
                "name" => name = Some(map.next_value()?),
                "type" => kind = Some(map.next_value()?),
                "format" => format = Some(map.next_value()?),
                "url" => url = Some(map.next_value()?),
                "on_reject" => on_reject = Some(map.next_value()?),
                "dead_letter_sink" => dead_letter_sink = Some(map.next_value()?),
                "routes" => routes = Some(map.next_value()?),
                key => {
                    let taken = keys.take(key, &mut map)?;
                    debug_assert!(taken, "{key} is in FIELDS but read by nobody");
                }
            }
        }
        Ok(SinkConfig {
            name,
            kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
            format: format.unwrap_or_default(),
            url,
            on_reject,
            dead_letter_sink,
            routes,
            keys,
        })
    }

    /// Serde's derive also reads a struct from an array, field by field, in declaration
    /// order: kept, so that an array where an entry should be fails with the same message.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SinkConfig, A::Error> {
        let i = &mut 0;
        let name = element(&mut seq, i, &self)?;
        let kind = element(&mut seq, i, &self)?;
        *i += 1;
        let format = seq.next_element()?.unwrap_or_default();
        let url = element(&mut seq, i, &self)?;
        let keys = TypeKeys::from_seq(&mut seq, i, &self)?;
        Ok(SinkConfig {
            name,
            kind,
            format,
            url,
            on_reject: element(&mut seq, i, &self)?,
            dead_letter_sink: element(&mut seq, i, &self)?,
            routes: element(&mut seq, i, &self)?,
            keys,
        })
    }
}

/// A key of an entry: one of [`FIELDS`], else "unknown field" at the key's position.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<&'static str, E> {
        FIELDS
            .iter()
            .find(|f| **f == v)
            .copied()
            .ok_or_else(|| E::unknown_field(v, &FIELDS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        #[allow(dead_code)]
        sinks: Vec<Spanned<SinkConfig>>,
    }

    /// Where toml's error for `src` points (the rest of that line) and its message, as
    /// serde's derive (with `deny_unknown_fields`) gave them for the flat struct this reader
    /// replaced.
    fn error(src: &str) -> (&str, String) {
        let e = toml::from_str::<File>(src).unwrap_err();
        let at = &src[e.span().unwrap().start..];
        (at.lines().next().unwrap(), e.message().to_owned())
    }

    /// A key two sink types (or a type and the shared keys) both declared would be read
    /// by the first only.
    #[test]
    fn every_key_is_declared_once() {
        let mut seen = std::collections::HashSet::new();
        for key in FIELDS.iter() {
            assert!(seen.insert(key), "{key} is declared twice");
        }
    }

    #[test]
    fn errors_read_like_the_derived_struct() {
        let all = "`name`, `type`, `format`, `url`, `subject`, `jetstream`, `user`, `password`, \
                   `token`, `nkey_seed`, `creds_file`, `tls`, `ack_timeout_ms`, `batch`, \
                   `headers`, `timeout_ms`, `max_batch_bytes`, `ca_file`, `max_retries`, \
                   `on_reject`, `dead_letter_sink`, `routes`";
        assert_eq!(
            error("[[sinks]]\ntype = \"stdout\"\nformats = \"json\"\n"),
            (
                "formats = \"json\"",
                format!("unknown field `formats`, expected one of {all}")
            )
        );
        assert_eq!(
            error("[[sinks]]\nname = \"x\"\n"),
            ("[[sinks]]", "missing field `type`".into())
        );
        assert_eq!(
            error("[[sinks]]\ntype = \"nats\"\njetstream = \"CDC\"\n"),
            (
                "\"CDC\"",
                "invalid type: string \"CDC\", expected a [sinks.jetstream] table with stream, \
                 create_stream, subjects, duplicate_window_secs, replicas, ordering_check, \
                 atomic, atomic_max_batch"
                    .into()
            )
        );
        assert_eq!(
            error("[[sinks]]\ntype = \"http\"\nbatch = 1\n"),
            ("1", "wanted string or table".into())
        );
        assert_eq!(
            error("sinks = [[\"a\", \"stdout\", \"json\"]]\n"),
            (
                "[\"a\", \"stdout\", \"json\"]]",
                "invalid length 3, expected a [[sinks]] table".into()
            )
        );
        assert_eq!(
            error("sinks = [\"stdout\"]\n"),
            (
                "\"stdout\"]",
                "invalid type: string \"stdout\", expected a [[sinks]] table".into()
            )
        );
    }
}
