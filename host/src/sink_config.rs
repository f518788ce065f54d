//! `[[sinks]]` entries: one flat table per sink, checked per type.
//!
//! A flat struct with `deny_unknown_fields` (rather than an enum tagged by `type`) keeps
//! exact line/column spans for every key; keys that do not apply to the sink's type are
//! then rejected by [`SinkConfig::check`] with their own position.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use cdc_sinks::http::{HttpBatching, HttpOptions};
use cdc_sinks::nats::{JetStreamOptions, NatsAuth, NatsOptions, NatsTls};

use crate::config::{interpolate, Format};

/// The kinds of sink.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Stdout,
    Nats,
    Http,
}

impl SinkType {
    fn as_str(self) -> &'static str {
        match self {
            SinkType::Stdout => "stdout",
            SinkType::Nats => "nats",
            SinkType::Http => "http",
        }
    }
}

/// `batch` of an HTTP sink.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpBatch {
    Ndjson,
    Array,
    None,
}

/// What a sink does with changes its destination rejects for good (an HTTP 4xx, a subject
/// NATS refuses). Transient failures are always retried, whatever this says.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RejectPolicy {
    /// Stop the pipeline; nothing past the rejected batch is confirmed (default).
    #[default]
    Fail,
    /// Log and count the batch as delivered.
    Skip,
    /// Send the batch (as this sink encoded it) to `dead_letter_sink`, then count it delivered.
    DeadLetter,
}

/// `[sinks.jetstream]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a [sinks.jetstream] table with stream, create_stream, subjects, duplicate_window_secs"
)]
pub struct JetStreamConfig {
    pub stream: String,
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a created stream (default: the subject template with `{…}` as wildcards).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Duplicate-detection window of a created stream (default 120 s).
    #[serde(default = "two_minutes")]
    pub duplicate_window_secs: u64,
}

fn two_minutes() -> u64 {
    120
}

/// `[sinks.tls]` of a NATS sink.
#[derive(Debug, Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a [sinks.tls] table with ca_file, client_cert, client_key"
)]
pub struct NatsTlsConfig {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// One `[[sinks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[sinks]] table")]
pub struct SinkConfig {
    /// Unique name (default: the type, e.g. `stdout`).
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default)]
    pub format: Format,
    /// nats, http: where to send (`${ENV}` allowed).
    pub url: Option<Spanned<String>>,
    /// nats: subject template (`{schema}`, `{table}`, `{op}`), default `cdc.{schema}.{table}`.
    pub subject: Option<Spanned<String>>,
    /// nats: publish to JetStream and wait for each PubAck (absent = core NATS, acks on flush).
    pub jetstream: Option<Spanned<JetStreamConfig>>,
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub nkey_seed: Option<Spanned<String>>,
    pub creds_file: Option<Spanned<PathBuf>>,
    pub tls: Option<Spanned<NatsTlsConfig>>,
    pub ack_timeout_ms: Option<Spanned<u64>>,
    /// http: `ndjson` (default), `array`, or `none` (one request per change).
    pub batch: Option<Spanned<HttpBatch>>,
    /// http: extra request headers (`${ENV}` allowed in values; never logged).
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub max_batch_bytes: Option<Spanned<usize>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub max_retries: Option<Spanned<u32>>,
    /// nats, http: `fail` (default), `skip` or `dead-letter`.
    pub on_reject: Option<Spanned<RejectPolicy>>,
    /// With `on_reject = "dead-letter"`: the name of the sink that receives rejected batches.
    /// That sink then receives nothing else.
    pub dead_letter_sink: Option<Spanned<String>>,
    /// Only changes whose route (set by a transform) matches one of these patterns go to
    /// this sink: `.`-separated tokens, `*` matches one token, `>` (last) the rest. Absent:
    /// every change.
    pub routes: Option<Spanned<Vec<String>>>,
}

/// Route patterns of a sink (`routes = ["audit.*", "orders.>"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFilter(Vec<String>);

impl RouteFilter {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("needs at least one pattern (omit it to receive every change)".into());
        }
        for p in patterns {
            let tokens: Vec<&str> = p.split('.').collect();
            if tokens.iter().any(|t| t.is_empty()) {
                return Err(format!("pattern {p:?} has an empty token"));
            }
            if let Some(i) = tokens.iter().position(|t| *t == ">") {
                if i + 1 != tokens.len() {
                    return Err(format!("pattern {p:?}: '>' must be the last token"));
                }
            }
        }
        Ok(RouteFilter(patterns.to_vec()))
    }

    /// Whether `route` matches any pattern.
    pub fn matches(&self, route: &str) -> bool {
        self.0.iter().any(|p| {
            let mut r = route.split('.');
            for t in p.split('.') {
                match (t, r.next()) {
                    (">", Some(_)) => return true,
                    ("*", Some(_)) => {}
                    (t, Some(x)) if t == x => {}
                    _ => return false,
                }
            }
            r.next().is_none()
        })
    }
}

/// A problem with one key of a sink entry: its span, dotted key and message.
pub type KeyError = (Option<std::ops::Range<usize>>, &'static str, String);

/// What to build, once the config is known to be valid.
#[derive(Debug)]
pub enum SinkSpec {
    Stdout { name: String },
    Nats(NatsOptions),
    Http(HttpOptions),
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

    /// Rejects keys that do not apply to this type, and missing required ones.
    pub fn check(&self) -> Result<(), KeyError> {
        let nats_only: [(&'static str, Option<std::ops::Range<usize>>); 8] = [
            ("subject", self.subject.as_ref().map(Spanned::span)),
            ("jetstream", self.jetstream.as_ref().map(Spanned::span)),
            ("user", self.user.as_ref().map(Spanned::span)),
            ("password", self.password.as_ref().map(Spanned::span)),
            ("token", self.token.as_ref().map(Spanned::span)),
            ("nkey_seed", self.nkey_seed.as_ref().map(Spanned::span)),
            ("creds_file", self.creds_file.as_ref().map(Spanned::span)),
            (
                "ack_timeout_ms",
                self.ack_timeout_ms.as_ref().map(Spanned::span),
            ),
        ];
        let tls = [("tls", self.tls.as_ref().map(Spanned::span))];
        let http_only: [(&'static str, Option<std::ops::Range<usize>>); 6] = [
            ("batch", self.batch.as_ref().map(Spanned::span)),
            ("headers", self.headers.as_ref().map(Spanned::span)),
            ("timeout_ms", self.timeout_ms.as_ref().map(Spanned::span)),
            (
                "max_batch_bytes",
                self.max_batch_bytes.as_ref().map(Spanned::span),
            ),
            ("ca_file", self.ca_file.as_ref().map(Spanned::span)),
            ("max_retries", self.max_retries.as_ref().map(Spanned::span)),
        ];
        // Keys every sink but stdout may have.
        let url = [
            ("url", self.url.as_ref().map(Spanned::span)),
            ("on_reject", self.on_reject.as_ref().map(Spanned::span)),
            (
                "dead_letter_sink",
                self.dead_letter_sink.as_ref().map(Spanned::span),
            ),
        ];
        let not_allowed: Vec<&(&'static str, Option<std::ops::Range<usize>>)> = match self.kind {
            SinkType::Stdout => nats_only
                .iter()
                .chain(&tls)
                .chain(&http_only)
                .chain(&url)
                .collect(),
            SinkType::Nats => http_only.iter().collect(),
            SinkType::Http => nats_only.iter().chain(&tls).collect(),
        };
        if let Some(r) = &self.routes {
            RouteFilter::new(r.get_ref()).map_err(|m| (Some(r.span()), "routes", m))?;
        }
        if let Some((key, span)) = not_allowed.into_iter().find(|(_, s)| s.is_some()) {
            return Err((
                span.clone(),
                key,
                format!("does not apply to a {} sink", self.kind.as_str()),
            ));
        }
        if self.kind != SinkType::Stdout && self.url.is_none() {
            return Err((
                None,
                "url",
                format!("a {} sink needs a url", self.kind.as_str()),
            ));
        }
        if let Some(s) = &self.subject {
            check_template(s.get_ref()).map_err(|m| (Some(s.span()), "subject", m))?;
        }
        if let (SinkType::Http, Some(u)) = (self.kind, &self.url) {
            let templated = ["{schema}", "{table}", "{op}"]
                .iter()
                .any(|p| u.get_ref().contains(p));
            let one_per_change = matches!(
                self.batch.as_ref().map(|b| *b.get_ref()),
                Some(HttpBatch::None)
            );
            if templated && !one_per_change {
                return Err((
                    Some(u.span()),
                    "url",
                    "{schema}, {table} and {op} in the url need batch = \"none\" (one request per change)"
                        .into(),
                ));
            }
        }
        let dead_letter = self.reject_policy() == RejectPolicy::DeadLetter;
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
        Ok(())
    }

    /// What to do with rejected batches.
    pub fn reject_policy(&self) -> RejectPolicy {
        self.on_reject
            .as_ref()
            .map(|p| *p.get_ref())
            .unwrap_or_default()
    }

    /// Resolves `${ENV}` and defaults into the options the sink takes.
    pub fn spec(&self) -> Result<SinkSpec, KeyError> {
        let name = self.display_name();
        let env = |v: &Spanned<String>, key: &'static str| {
            interpolate(v.get_ref()).map_err(|m| (Some(v.span()), key, m))
        };
        let url = match &self.url {
            Some(u) => {
                let url = env(u, "url")?;
                // Checked after ${ENV}, so the message must not quote the URL (secrets).
                let checked = match self.kind {
                    SinkType::Http => check_http_url(&url),
                    _ => check_nats_urls(&url),
                };
                checked.map_err(|m| (Some(u.span()), "url", m))?;
                url
            }
            None => String::new(),
        };
        Ok(match self.kind {
            SinkType::Stdout => SinkSpec::Stdout { name },
            SinkType::Nats => {
                let subject = self.subject.as_ref().map_or_else(
                    || "cdc.{schema}.{table}".to_owned(),
                    |s| s.get_ref().clone(),
                );
                let auth = match (&self.user, &self.password, &self.token, &self.nkey_seed, &self.creds_file) {
                    (Some(u), Some(p), None, None, None) => NatsAuth::UserPassword { user: env(u, "user")?, password: env(p, "password")? },
                    (None, None, Some(t), None, None) => NatsAuth::Token(env(t, "token")?),
                    (None, None, None, Some(s), None) => NatsAuth::NkeySeed(env(s, "nkey_seed")?),
                    (None, None, None, None, Some(f)) => NatsAuth::CredsFile(f.get_ref().clone()),
                    (None, None, None, None, None) => NatsAuth::None,
                    _ => {
                        return Err((
                            None,
                            "user",
                            "choose one NATS authentication: user + password, token, nkey_seed or creds_file".into(),
                        ))
                    }
                };
                let jetstream = self.jetstream.as_ref().map(|j| {
                    let j = j.get_ref();
                    JetStreamOptions {
                        stream: j.stream.clone(),
                        create_stream: j.create_stream,
                        subjects: j.subjects.clone(),
                        duplicate_window: Duration::from_secs(j.duplicate_window_secs),
                    }
                });
                if jetstream.is_none() {
                    tracing::warn!(sink = %name, "NATS sink without [sinks.jetstream]: core NATS acknowledges on flush only, so messages can be lost if the server fails");
                }
                SinkSpec::Nats(NatsOptions {
                    name,
                    url,
                    subject,
                    jetstream,
                    auth,
                    tls: self.tls.as_ref().map(|t| {
                        let t = t.get_ref();
                        NatsTls {
                            ca_file: t.ca_file.clone(),
                            client_cert: t.client_cert.clone(),
                            client_key: t.client_key.clone(),
                            required: true,
                        }
                    }),
                    ack_timeout: Duration::from_millis(
                        self.ack_timeout_ms.as_ref().map_or(5000, |v| *v.get_ref()),
                    ),
                    max_in_flight: 1024,
                })
            }
            SinkType::Http => {
                let mut headers = Vec::new();
                if let Some(h) = &self.headers {
                    for (k, v) in h.get_ref() {
                        let v = interpolate(v)
                            .map_err(|m| (Some(h.span()), "headers", format!("{k}: {m}")))?;
                        headers.push((k.clone(), v));
                    }
                }
                SinkSpec::Http(HttpOptions {
                    name,
                    url,
                    batching: match self.batch.as_ref().map(|b| *b.get_ref()) {
                        None | Some(HttpBatch::Ndjson) => HttpBatching::Ndjson,
                        Some(HttpBatch::Array) => HttpBatching::Array,
                        Some(HttpBatch::None) => HttpBatching::None,
                    },
                    headers,
                    timeout: Duration::from_millis(
                        self.timeout_ms.as_ref().map_or(10_000, |v| *v.get_ref()),
                    ),
                    max_batch_bytes: self
                        .max_batch_bytes
                        .as_ref()
                        .map_or(4 << 20, |v| *v.get_ref()),
                    retry_initial: Duration::from_millis(200),
                    retry_max: Duration::from_secs(30),
                    max_retries: self.max_retries.as_ref().map(|v| *v.get_ref()),
                    ca_file: self.ca_file.as_ref().map(|f| f.get_ref().clone()),
                    danger_accept_invalid_certs: false,
                })
            }
        })
    }
}

/// Subject templates: NATS tokens, with `{schema}`, `{table}` and `{op}` placeholders only.
fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        if rest[..i].contains('}') {
            return Err(format!("unmatched '}}' in {t:?}"));
        }
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
        let name = &rest[i + 1..i + end];
        if !matches!(name, "schema" | "table" | "op") {
            return Err(format!(
                "unknown placeholder {{{name}}} in {t:?}: use {{schema}}, {{table}} or {{op}}"
            ));
        }
        rest = &rest[i + end + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched '}}' in {t:?}"));
    }
    if t.is_empty()
        || t.contains(|c: char| c.is_whitespace() || c.is_control())
        || t.split('.').any(str::is_empty)
    {
        return Err(format!(
            "invalid subject {t:?}: no spaces and no empty tokens"
        ));
    }
    if t.split('.').any(|token| token == "*" || token == ">") {
        return Err(format!(
            "invalid subject {t:?}: wildcards ('*', '>') cannot be published to"
        ));
    }
    Ok(())
}

/// The shape of an `http://` / `https://` URL: what the HTTP sink would reject when it
/// starts, caught here with the key's position. Messages never quote the URL: it may hold
/// a secret from `${ENV}`.
fn check_http_url(url: &str) -> Result<(), String> {
    let probe = url
        .replace("{schema}", "s")
        .replace("{table}", "t")
        .replace("{op}", "o");
    let Some((scheme, rest)) = probe.split_once("://") else {
        return Err("not a URL: expected http://host[:port]/path or https://…".into());
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!(
            "unsupported scheme {:?}: use http:// or https://",
            safe_scheme(scheme)
        ));
    }
    check_authority(rest)
}

/// A NATS server list: `nats://host:port`, `tls://…`, `ws://…`, `wss://…` or `host:port`,
/// comma-separated.
fn check_nats_urls(urls: &str) -> Result<(), String> {
    let mut any = false;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        any = true;
        let rest = match url.split_once("://") {
            Some((scheme, rest)) => {
                if !matches!(
                    scheme.to_ascii_lowercase().as_str(),
                    "nats" | "tls" | "ws" | "wss"
                ) {
                    return Err(format!(
                        "unsupported scheme {:?} for a NATS server: use nats://, tls://, ws:// or wss://",
                        safe_scheme(scheme)
                    ));
                }
                rest
            }
            None => url,
        };
        check_authority(rest)?;
    }
    if !any {
        return Err("is empty: name a NATS server, e.g. nats://127.0.0.1:4222".into());
    }
    Ok(())
}

/// The scheme as typed, if it looks like one (it is quoted in messages).
fn safe_scheme(scheme: &str) -> &str {
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
fn check_authority(rest: &str) -> Result<(), String> {
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

    #[test]
    fn route_patterns_match_like_nats_subjects() {
        let f =
            RouteFilter::new(&["audit.*".into(), "orders.>".into(), "exact.one".into()]).unwrap();
        for yes in ["audit.users", "orders.eu", "orders.eu.created", "exact.one"] {
            assert!(f.matches(yes), "{yes}");
        }
        for no in [
            "audit",
            "audit.users.x",
            "orders",
            "exact.one.two",
            "exact",
            "other",
        ] {
            assert!(!f.matches(no), "{no}");
        }
        assert!(RouteFilter::new(&[]).is_err());
        assert!(RouteFilter::new(&["a.>.b".into()]).is_err());
        assert!(RouteFilter::new(&["a..b".into()]).is_err());
    }
}
