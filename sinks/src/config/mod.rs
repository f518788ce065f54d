//! `[[sinks]]` entries: the keys every sink shares, and the dispatch by `type` to the
//! sink types' own `config` modules ([`crate::stdout::config`], [`crate::nats::config`],
//! [`crate::http::config`]), which hold their keys, checks, defaults and construction.
//!
//! An entry is one flat table (`[[sinks]]` with `type = "…"` and the type's keys beside
//! the shared ones), read by a hand-written [`Deserialize`] rather than serde's tagged
//! enums, which buffer the table and lose every position: each key is read where it
//! stands, so every error keeps its exact line and column, and unknown keys are refused
//! with the full list of keys (`deny_unknown_fields`). Each sink type declares its own
//! keys (`sink_keys!`: `NatsKeys`, `HttpKeys`) in its `config.rs`; a key of another type
//! is then rejected by [`SinkConfig::check`] at its own position.
//!
//! This is the one module that knows every sink type. A type's `config.rs` never sees a
//! [`SinkConfig`]: it gets an [`Entry`] (the sink's name, type and `url`, and its own keys)
//! and builds on the leaf `keys` module (`${ENV}`, URL checks, `sink_keys!`, [`KeyError`]),
//! so dependencies run one way: `config` → each type's `config` → `keys`.
//!
//! Adding a sink type: a folder with its `config.rs` (its keys, `SHARED_KEYS`, `check`,
//! `build`, each taking an [`Entry`] of its keys), a field for its keys in [`SinkConfig`],
//! its `From<&SinkConfig> for Entry<…>`, and its arm in each `match self.kind`.

mod read;

use serde::Deserialize;
use serde_spanned::Spanned;

pub use crate::keys::{interpolate, interpolate_with, Entry, KeyError};

use crate::http::config::HttpKeys;
use crate::keys::at;
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
            SinkType::Stdout => stdout::config::check(&self.into())?,
            SinkType::Nats => nats::config::check(&self.into())?,
            SinkType::Http => http::config::check(&self.into())?,
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
            SinkType::Stdout => stdout::config::build(self.into()),
            SinkType::Nats => nats::config::build(self.into()).await,
            SinkType::Http => http::config::build(self.into()).await,
        }
    }

    /// What a sink type's `config` sees of the entry: its name, type and `url`, and `keys`.
    fn entry<'a, K>(&'a self, keys: &'a K) -> Entry<'a, K> {
        Entry {
            name: self.display_name(),
            kind: self.kind.as_str(),
            url: self.url.as_ref(),
            keys,
        }
    }
}

impl<'a> From<&'a SinkConfig> for Entry<'a, ()> {
    fn from(c: &'a SinkConfig) -> Self {
        c.entry(&())
    }
}

impl<'a> From<&'a SinkConfig> for Entry<'a, NatsKeys> {
    fn from(c: &'a SinkConfig) -> Self {
        c.entry(&c.nats)
    }
}

impl<'a> From<&'a SinkConfig> for Entry<'a, HttpKeys> {
    fn from(c: &'a SinkConfig) -> Self {
        c.entry(&c.http)
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
