//! `[[sinks]]` entries: the keys every sink shares, and the dispatch by `type` to the
//! sink types' own `config` modules ([`crate::stdout::config`], [`crate::nats::config`],
//! [`crate::http::config`]), which hold their keys, checks, defaults and construction.
//!
//! An entry is one flat table (`[[sinks]]` with `type = "…"` and the type's keys beside
//! the shared ones), read by a hand-written [`Deserialize`] rather than serde's tagged
//! enums, which buffer the table and lose every position: each key is read where it
//! stands, so every error keeps its exact line and column, and unknown keys are refused
//! with the full list of keys (`deny_unknown_fields`). Each sink type declares its own
//! keys (`sink_keys!`: `StdoutKeys`, `NatsKeys`, `HttpKeys`) in its `config.rs`; a key
//! of another type is then rejected by [`SinkConfig::check`] at its own position.
//!
//! This is the one module that knows every sink type, and it names them once: in the
//! `sink_types!` list below, which writes everything that differs by type ([`SinkType`],
//! [`TypeKeys`], their reading and the dispatch of `check` and `build`; see `types.rs`).
//! A type's `config.rs` never sees a [`SinkConfig`]: it gets an [`Entry`] (the sink's
//! name, type and `url`, and its own keys) and builds on the leaf `keys` module (`${ENV}`,
//! URL checks, `sink_keys!`, [`KeyError`]), so dependencies run one way: `config` → each
//! type's `config` → `keys`.
//!
//! Adding a sink type:
//! 1. a folder `src/<type>/` (declared in `lib.rs`) with the sink and a `config.rs` that
//!    declares its keys with `sink_keys!` and provides `SHARED_KEYS`, `check`,
//!    `check_resolved` and `async fn build`, each taking an [`Entry`] of its keys (see
//!    `types.rs` for their signatures; `stdout/config.rs` is the smallest example);
//! 2. one line in `sink_types!` below: `"<type>" => <Variant>(<folder>, <keys type>),`.
//!
//! Its keys are then listed in "expected one of" after those of the types above it; a key
//! name may belong to one type only (`read` tests that).

mod read;
mod types;

use serde::Deserialize;
use serde_spanned::Spanned;

pub use crate::keys::{interpolate, interpolate_with, Entry, KeyError};

use crate::keys::at;
use crate::{Policy, RouteFilter, Sink, SinkError};
use types::sink_types;

sink_types! {
    // `type = "…"` => `SinkType` variant(its folder, its keys declared by `sink_keys!`)
    "stdout" => Stdout(stdout, StdoutKeys),
    "nats" => Nats(nats, NatsKeys),
    "http" => Http(http, HttpKeys),
}

/// Output encodings.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One native JSON object per change.
    #[default]
    Json,
    /// The Debezium envelope (`before`, `after`, `source`, `op`, `ts_ms`).
    Debezium,
    /// Native JSON plus each change's column types (`"types"`) and key columns
    /// (`"key"`): a recording `cdc-host transform` replays with the exact types a module
    /// sees live.
    #[serde(rename = "json-typed")]
    JsonTyped,
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
    /// The keys of each sink type (`keys.nats.subject`, …).
    pub keys: TypeKeys,
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
        let accepted = self.kind.shared_keys();
        let shared = shared
            .into_iter()
            .find_map(|(k, s)| Some((k, s.filter(|_| !accepted.contains(&k))?)));
        if let Some((key, span)) = self.keys.foreign(self.kind).or(shared) {
            return Err((
                Some(span),
                key,
                format!("does not apply to a {} sink", self.kind.as_str()),
            ));
        }
        self.check_type()?;
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
        self.check_type_resolved()
    }

    /// Builds (for NATS: connects) the sink. `${ENV}` is read again here, so a secret is
    /// never kept in the config.
    pub async fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
        self.build_type().await
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
        assert_eq!(c.keys.nats.subject.as_ref().unwrap().get_ref(), "a.{table}");
        assert_eq!(
            c.keys.nats.jetstream.as_ref().unwrap().get_ref().stream,
            "S"
        );
        assert_eq!(
            c.keys
                .nats
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

    #[test]
    fn jetstream_replicas_default_to_one_and_stay_within_1_to_5() {
        let file = |extra: &str| {
            let src = format!(
                "[[sinks]]\ntype = \"nats\"\nurl = \"nats://h:4222\"\n[sinks.jetstream]\nstream = \"S\"\n{extra}"
            );
            let f: File = toml::from_str(&src).unwrap();
            (src, f)
        };
        for (extra, want) in [("", 1), ("replicas = 3\n", 3)] {
            let (_, f) = file(extra);
            let c = f.sinks[0].get_ref();
            assert!(c.check().is_ok());
            let o = crate::nats::config::options(c).unwrap();
            assert_eq!(o.jetstream.unwrap().replicas, want);
        }
        for bad in [0, 6] {
            let (src, f) = file(&format!("replicas = {bad}\n"));
            let (span, key, message) = f.sinks[0].get_ref().check().unwrap_err();
            assert_eq!(key, "jetstream.replicas");
            assert_eq!(&src[span.unwrap()], bad.to_string());
            assert!(message.contains("1 to 5"), "{message}");
        }
    }
}
