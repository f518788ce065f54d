//! `[[sinks]]` entries: the keys every sink shares, and the dispatch by `type` to the
//! sink types' own `config` modules ([`crate::stdout::config`], [`crate::nats::config`],
//! [`crate::http::config`]), which hold their keys, checks, defaults and construction.
//!
//! The wire format is ONE flat struct with `deny_unknown_fields` rather than an enum
//! tagged by `type` (serde's tagged and flattened enums buffer the table and lose every
//! position): the flat struct keeps exact line/column spans for every key and for every
//! error inside a value. Keys that do not apply to the entry's type are then rejected by
//! [`SinkConfig::check`] with their own position, using each type's `KEYS`.
//!
//! Adding a sink type: a folder with its `config.rs` (`KEYS`, `check`, `build`), its keys
//! as fields here, and one arm in each `match self.kind`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::http::config::HttpBatch;
use crate::nats::config::{JetStreamConfig, NatsTlsConfig};
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

    /// The optional keys (beyond name, type, format and routes) this type accepts.
    fn keys(self) -> &'static [&'static str] {
        match self {
            SinkType::Stdout => stdout::config::KEYS,
            SinkType::Nats => nats::config::KEYS,
            SinkType::Http => http::config::KEYS,
        }
    }
}

/// One `[[sinks]]` entry, as written. See the module docs for why it is flat.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[sinks]] table")]
pub struct SinkConfig {
    /// Unique name (default: the type, e.g. `stdout`).
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default)]
    pub format: Format,
    // Fields in the order serde lists them in "expected one of" messages: keep it.
    /// nats, http: where to send (`${ENV}` allowed).
    pub url: Option<Spanned<String>>,
    // nats (see `nats::config`).
    /// Subject template (`{schema}`, `{table}`, `{op}`), default `cdc.{schema}.{table}`.
    pub subject: Option<Spanned<String>>,
    /// Publish to JetStream and wait for each PubAck (absent = core NATS, acks on flush).
    pub jetstream: Option<Spanned<JetStreamConfig>>,
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub nkey_seed: Option<Spanned<String>>,
    pub creds_file: Option<Spanned<PathBuf>>,
    pub tls: Option<Spanned<NatsTlsConfig>>,
    pub ack_timeout_ms: Option<Spanned<u64>>,
    // http (see `http::config`).
    /// `ndjson` (default), `array`, or `none` (one request per change).
    pub batch: Option<Spanned<HttpBatch>>,
    /// Extra request headers (`${ENV}` allowed in values; never logged).
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub max_batch_bytes: Option<Spanned<usize>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub max_retries: Option<Spanned<u32>>,
    // Every sink but stdout.
    /// `fail` (default), `skip` or `dead-letter`.
    pub on_reject: Option<Spanned<Policy>>,
    /// With `on_reject = "dead-letter"`: the name of the sink that receives rejected batches.
    /// That sink then receives nothing else.
    pub dead_letter_sink: Option<Spanned<String>>,
    /// Only changes whose route (set by a transform) matches one of these patterns go to
    /// this sink: `.`-separated tokens, `*` matches one token, `>` (last) the rest. Absent:
    /// every change.
    pub routes: Option<Spanned<Vec<String>>>,
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
        let allowed = self.kind.keys();
        if let Some((key, span)) = self
            .optional_keys()
            .into_iter()
            .find(|(key, span)| span.is_some() && !allowed.contains(key))
        {
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

    /// The optional keys that are present, with their spans, in the order a key that does
    /// not apply is reported.
    fn optional_keys(&self) -> [(&'static str, Option<Range<usize>>); 18] {
        fn at<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("subject", at(&self.subject)),
            ("jetstream", at(&self.jetstream)),
            ("user", at(&self.user)),
            ("password", at(&self.password)),
            ("token", at(&self.token)),
            ("nkey_seed", at(&self.nkey_seed)),
            ("creds_file", at(&self.creds_file)),
            ("ack_timeout_ms", at(&self.ack_timeout_ms)),
            ("tls", at(&self.tls)),
            ("batch", at(&self.batch)),
            ("headers", at(&self.headers)),
            ("timeout_ms", at(&self.timeout_ms)),
            ("max_batch_bytes", at(&self.max_batch_bytes)),
            ("ca_file", at(&self.ca_file)),
            ("max_retries", at(&self.max_retries)),
            ("url", at(&self.url)),
            ("on_reject", at(&self.on_reject)),
            ("dead_letter_sink", at(&self.dead_letter_sink)),
        ]
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
