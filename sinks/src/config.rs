//! `[[sinks]]` entries: the keys every sink shares, and the dispatch by `type` to the
//! sink types' own `config` modules ([`crate::stdout::config`], [`crate::nats::config`],
//! [`crate::http::config`]), which hold their keys, checks, defaults and construction.
//!
//! An entry is one flat table (`[[sinks]]` with `type = "…"` and the type's keys beside
//! the shared ones), read by a hand-written [`Deserialize`] rather than serde's tagged
//! enums, which buffer the table and lose every position: each key is read where it
//! stands, so every error keeps its exact line and column, and unknown keys are refused
//! with the full list of keys (`deny_unknown_fields`). Each sink type declares its own
//! keys ([`sink_keys!`]: `NatsKeys`, `HttpKeys`) in its `config.rs`; a key of another type
//! is then rejected by [`SinkConfig::check`] at its own position.
//!
//! Adding a sink type: a folder with its `config.rs` (its keys, `SHARED_KEYS`, `check`,
//! `build`), a field for its keys in [`SinkConfig`], and its arm in each `match self.kind`.

use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

use crate::http::config::HttpKeys;
use crate::nats::config::NatsKeys;
use crate::{http, nats, stdout, Policy, RouteFilter, Sink, SinkError};

/// Output encodings.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One native JSON object per change.
    #[default]
    Json,
    /// The Debezium envelope (`before`, `after`, `source`, `op`, `ts_ms`).
    Debezium,
}

/// The kinds of sink.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Stdout,
    Nats,
    Http,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Stdout => "stdout",
            SinkType::Nats => "nats",
            SinkType::Http => "http",
        }
    }

    /// The optional keys every sink may have (url, on_reject, dead_letter_sink) that this
    /// type accepts.
    fn shared_keys(self) -> &'static [&'static str] {
        match self {
            SinkType::Stdout => stdout::config::SHARED_KEYS,
            SinkType::Nats => nats::config::SHARED_KEYS,
            SinkType::Http => http::config::SHARED_KEYS,
        }
    }
}

/// One `[[sinks]]` entry, as written. See the module docs for how it is read.
#[derive(Debug)]
pub struct SinkConfig {
    /// Unique name (default: the type, e.g. `stdout`).
    pub name: Option<String>,
    /// `type`.
    pub kind: SinkType,
    pub format: Format,
    /// nats, http: where to send (`${ENV}` allowed).
    pub url: Option<Spanned<String>>,
    /// nats, http: `fail` (default), `skip` or `dead-letter`.
    pub on_reject: Option<Spanned<Policy>>,
    /// With `on_reject = "dead-letter"`: the name of the sink that receives rejected batches.
    /// That sink then receives nothing else.
    pub dead_letter_sink: Option<Spanned<String>>,
    /// Only changes whose route (set by a transform) matches one of these patterns go to
    /// this sink: `.`-separated tokens, `*` matches one token, `>` (last) the rest. Absent:
    /// every change.
    pub routes: Option<Spanned<Vec<String>>>,
    /// The keys of a NATS sink (any that are present when the type is another are
    /// rejected by [`SinkConfig::check`]).
    pub nats: NatsKeys,
    /// The keys of an HTTP sink (likewise).
    pub http: HttpKeys,
}

/// Every key of an entry, in the order serde's "unknown field …, expected one of …" names
/// them.
static FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    [
        &["name", "type", "format", "url"][..],
        NatsKeys::KEYS,
        HttpKeys::KEYS,
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
        let mut nats = NatsKeys::default();
        let mut http = HttpKeys::default();
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
                    let taken = nats.take(key, &mut map)? || http.take(key, &mut map)?;
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
            nats,
            http,
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
        let nats = NatsKeys::from_seq(&mut seq, i, &self)?;
        let http = HttpKeys::from_seq(&mut seq, i, &self)?;
        Ok(SinkConfig {
            name,
            kind,
            format,
            url,
            on_reject: element(&mut seq, i, &self)?,
            dead_letter_sink: element(&mut seq, i, &self)?,
            routes: element(&mut seq, i, &self)?,
            nats,
            http,
        })
    }
}

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
                    $($field: $crate::config::element(seq, index, expected)?,)*
                })
            }
        }
    };
}
pub(crate) use sink_keys;

/// The span of an optional spanned value.
pub(crate) fn at<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// A problem with one key of a sink entry: its span (`None`: the whole entry), dotted key
/// and message.
pub type KeyError = (Option<Range<usize>>, &'static str, String);

impl SinkConfig {
    /// The route filter, if `routes` is set (validated by [`SinkConfig::check`]).
    pub fn route_filter(&self) -> Option<RouteFilter> {
        self.routes
            .as_ref()
            .and_then(|r| RouteFilter::new(r.get_ref()).ok())
    }

    /// The sink's name, defaulting to its type.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.kind.as_str().to_owned())
    }

    /// What to do with rejected batches.
    pub fn reject_policy(&self) -> Policy {
        self.on_reject
            .as_ref()
            .map(|p| *p.get_ref())
            .unwrap_or_default()
    }

    /// Checks the entry: keys that do not apply to its type, missing ones, the type's own
    /// checks, then the values resolved as [`SinkConfig::build`] will resolve them
    /// (`${ENV}`, URLs, credentials). Errors other than a dead-letter sink's name.
    pub fn check(&self) -> Result<(), KeyError> {
        if let Some(r) = &self.routes {
            RouteFilter::new(r.get_ref()).map_err(|m| (Some(r.span()), "routes", m))?;
        }
        let shared = [
            ("url", at(&self.url)),
            ("on_reject", at(&self.on_reject)),
            ("dead_letter_sink", at(&self.dead_letter_sink)),
        ];
        let nats = self
            .nats
            .present()
            .map(|(k, s)| (k, s, self.kind == SinkType::Nats));
        let http = self
            .http
            .present()
            .map(|(k, s)| (k, s, self.kind == SinkType::Http));
        let shared = shared.map(|(k, s)| (k, s, self.kind.shared_keys().contains(&k)));
        let foreign = nats
            .into_iter()
            .chain(http)
            .chain(shared)
            .find(|(_, span, allowed)| span.is_some() && !allowed);
        if let Some((key, span, _)) = foreign {
            return Err((
                span,
                key,
                format!("does not apply to a {} sink", self.kind.as_str()),
            ));
        }
        match self.kind {
            SinkType::Stdout => stdout::config::check(self)?,
            SinkType::Nats => nats::config::check(self)?,
            SinkType::Http => http::config::check(self)?,
        }
        let dead_letter = self.reject_policy() == Policy::DeadLetter;
        match (&self.dead_letter_sink, dead_letter) {
            (None, true) => {
                let span = self.on_reject.as_ref().map(Spanned::span);
                return Err((
                    span,
                    "on_reject",
                    "\"dead-letter\" needs dead_letter_sink = \"<sink name>\"".into(),
                ));
            }
            (Some(d), false) => {
                return Err((
                    Some(d.span()),
                    "dead_letter_sink",
                    "only used with on_reject = \"dead-letter\"".into(),
                ));
            }
            _ => {}
        }
        match self.kind {
            SinkType::Stdout => Ok(()),
            SinkType::Nats => nats::config::options(self).map(drop),
            SinkType::Http => http::config::options(self).map(drop),
        }
    }

    /// Builds (for NATS: connects) the sink. `${ENV}` is read again here, so a secret is
    /// never kept in the config.
    pub async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        match self.kind {
            SinkType::Stdout => stdout::config::build(self),
            SinkType::Nats => nats::config::build(self).await,
            SinkType::Http => http::config::build(self).await,
        }
    }

    /// A [`KeyError`] found while building, as the sink's error.
    pub(crate) fn build_error(&self, (_, key, message): KeyError) -> SinkError {
        SinkError::Other {
            sink: self.display_name(),
            message: format!("{key}: {message}"),
        }
    }

    /// `url`, `${ENV}` filled in, checked by the type's `check` (whose message must not
    /// quote the URL: it may hold a secret).
    pub(crate) fn resolved_url(
        &self,
        check: fn(&str) -> Result<(), String>,
    ) -> Result<String, KeyError> {
        let Some(u) = &self.url else {
            return Ok(String::new());
        };
        let url = env(u, "url")?;
        check(&url).map_err(|m| (Some(u.span()), "url", m))?;
        Ok(url)
    }

    /// "a {type} sink needs a url" when `url` is missing.
    pub(crate) fn require_url(&self) -> Result<(), KeyError> {
        match self.url {
            Some(_) => Ok(()),
            None => Err((
                None,
                "url",
                format!("a {} sink needs a url", self.kind.as_str()),
            )),
        }
    }
}

/// A string value with `${ENV}` filled in; errors point at the value.
pub(crate) fn env(v: &Spanned<String>, key: &'static str) -> Result<String, KeyError> {
    interpolate(v.get_ref()).map_err(|m| (Some(v.span()), key, m))
}

/// Replaces `${NAME}` with the environment variable's value; `$$` is a literal `$`.
pub fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or("unterminated ${ in value")?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The scheme as typed, if it looks like one (it is quoted in messages).
pub(crate) fn safe_scheme(scheme: &str) -> &str {
    if !scheme.is_empty()
        && scheme.len() <= 16
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        scheme
    } else {
        "?"
    }
}

/// `[user[:password]@]host[:port][/path…]`: a host, a valid port, no spaces.
pub(crate) fn check_authority(rest: &str) -> Result<(), String> {
    if rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("invalid URL: it contains spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("invalid URL: unclosed '[' in the host".into());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("invalid URL: unexpected text after the IPv6 host".into()),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("invalid URL: it names no host".into());
    }
    if let Some(p) = port {
        if !p.is_empty() && !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err("invalid URL: the port must be a number from 1 to 65535".into());
        }
    }
    Ok(())
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
                 create_stream, subjects, duplicate_window_secs"
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

    #[test]
    fn each_key_lands_in_its_type_and_foreign_keys_are_refused_where_they_stand() {
        let src = "[[sinks]]\ntype = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"a.{table}\"\n\
                   ack_timeout_ms = 7\n[sinks.jetstream]\nstream = \"S\"\n";
        let f: File = toml::from_str(src).unwrap();
        let c = f.sinks[0].get_ref();
        assert_eq!(c.kind, SinkType::Nats);
        assert_eq!(c.nats.subject.as_ref().unwrap().get_ref(), "a.{table}");
        assert_eq!(c.nats.jetstream.as_ref().unwrap().get_ref().stream, "S");
        assert_eq!(
            c.nats
                .jetstream
                .as_ref()
                .unwrap()
                .get_ref()
                .duplicate_window_secs,
            120
        );
        assert!(c.check().is_ok());
        let o = crate::nats::config::options(c).unwrap();
        assert_eq!(o.ack_timeout, std::time::Duration::from_millis(7));
        assert_eq!(o.max_in_flight, crate::nats::DEFAULT_MAX_IN_FLIGHT);

        let src = "[[sinks]]\ntype = \"http\"\nurl = \"http://h/\"\ntls = {}\nack_timeout_ms = 1\n";
        let f: File = toml::from_str(src).unwrap();
        let (span, key, message) = f.sinks[0].get_ref().check().unwrap_err();
        // Reported in the order of the checks, not of the file: ack_timeout_ms first.
        let span = span.unwrap();
        assert!(
            src[..span.start].ends_with("\nack_timeout_ms = "),
            "{span:?}"
        );
        assert_eq!(key, "ack_timeout_ms");
        assert_eq!(message, "does not apply to a http sink");
        let o = crate::http::config::options(f.sinks[0].get_ref());
        assert_eq!(o.unwrap().timeout, crate::http::DEFAULT_TIMEOUT);
    }
}
