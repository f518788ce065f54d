//! `type = "nats"`: its keys, checks and defaults, and building the sink from them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    Atomic, JetStreamOptions, NatsAuth, NatsOptions, NatsSink, NatsTls, DEFAULT_ATOMIC_MAX_BATCH,
    DEFAULT_DUPLICATE_WINDOW,
};
use crate::keys::{check_authority, env, safe_scheme, sink_keys, Entry, KeyError};
use crate::{Sink, SinkError};

/// The keys every sink may have that a NATS sink accepts.
pub(crate) const SHARED_KEYS: &[&str] = &["url", "on_reject", "dead_letter_sink"];

sink_keys! {
    /// The keys of a `[[sinks]]` entry that only a NATS sink has.
    pub struct NatsKeys {
        /// Subject template (`{schema}`, `{table}`, `{op}`), default `cdc.{schema}.{table}`.
        pub subject: String,
        /// Publish to JetStream and wait for each PubAck (absent = core NATS, acks on flush).
        pub jetstream: JetStreamConfig,
        pub user: String,
        pub password: String,
        pub token: String,
        pub nkey_seed: String,
        pub creds_file: PathBuf,
        pub tls: NatsTlsConfig,
        pub ack_timeout_ms: u64,
    }
    // A key that does not apply to the entry's type is reported in this order, as it was
    // before `sink_keys!` listed them (`ack_timeout_ms` before `tls`, unlike `KEYS`).
    report_order: [
        subject, jetstream, user, password, token, nkey_seed, creds_file, ack_timeout_ms, tls
    ]
}

/// `[sinks.jetstream]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a [sinks.jetstream] table with stream, create_stream, subjects, duplicate_window_secs, replicas, ordering_check, atomic, atomic_max_batch"
)]
pub struct JetStreamConfig {
    pub stream: String,
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a created stream (default: the subject template with `{…}` as wildcards).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Duplicate-detection window of a created stream (default 120 s).
    #[serde(default = "default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// Replicas of a created stream, 1 to 5 (3 on a 3-node cluster: it keeps every
    /// acknowledged message through the loss of one node). Default 1.
    #[serde(default = "one_replica")]
    pub replicas: serde_spanned::Spanned<usize>,
    /// Order across reconnects and leader changes (default true): ordered batches where the
    /// stream allows batched publishing (see `ordered`), else `Nats-Expected-Last-Msg-Id` on
    /// a single-replica stream (see `fence`; never on a replicated one, which is warned
    /// about once). Set false on a stream without batched publishing that several sidecars
    /// share.
    #[serde(default = "yes")]
    pub ordering_check: bool,
    /// `"transaction"`: each Postgres transaction is one JetStream atomic batch (default
    /// `"none"`).
    #[serde(default)]
    pub atomic: Atomic,
    /// Most messages in one atomic batch; larger transactions go out as ordered atomic
    /// chunks (default 1000, nats-server's own limit).
    #[serde(default = "default_atomic_max_batch")]
    pub atomic_max_batch: serde_spanned::Spanned<usize>,
}

fn default_atomic_max_batch() -> serde_spanned::Spanned<usize> {
    serde_spanned::Spanned::new(0..0, DEFAULT_ATOMIC_MAX_BATCH)
}

fn yes() -> bool {
    true
}

fn one_replica() -> serde_spanned::Spanned<usize> {
    serde_spanned::Spanned::new(0..0, 1)
}

fn default_duplicate_window_secs() -> u64 {
    DEFAULT_DUPLICATE_WINDOW.as_secs()
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

/// What can be checked without the environment: a url, and the subject template.
pub(crate) fn check(c: &Entry<'_, NatsKeys>) -> Result<(), KeyError> {
    c.require_url()?;
    if let Some(s) = &c.keys.subject {
        check_template(s.get_ref()).map_err(|m| (Some(s.span()), "subject", m))?;
    }
    if let Some(j) = &c.keys.jetstream {
        let r = &j.get_ref().replicas;
        if !(1..=5).contains(r.get_ref()) {
            return Err((
                Some(r.span()),
                "jetstream.replicas",
                format!(
                    "{} replicas: JetStream keeps 1 to 5 (3 on a 3-node cluster)",
                    r.get_ref()
                ),
            ));
        }
        let m = &j.get_ref().atomic_max_batch;
        if *m.get_ref() == 0 {
            return Err((
                Some(m.span()),
                "jetstream.atomic_max_batch",
                format!(
                    "must be at least 1 (nats-server's own limit is {DEFAULT_ATOMIC_MAX_BATCH} \
                     messages per atomic batch)"
                ),
            ));
        }
    }
    Ok(())
}

/// What [`build`] resolves, checked: `${ENV}`, the server list, one way to authenticate.
pub(crate) fn check_resolved(c: &Entry<'_, NatsKeys>) -> Result<(), KeyError> {
    resolve(c).map(drop)
}

/// The entry's options (`c`: a `&SinkConfig`, or its [`Entry`]): `${ENV}` filled in,
/// defaults from [`NatsOptions::new`].
pub fn options<'a>(c: impl Into<Entry<'a, NatsKeys>>) -> Result<NatsOptions, KeyError> {
    resolve(&c.into())
}

fn resolve(c: &Entry<'_, NatsKeys>) -> Result<NatsOptions, KeyError> {
    let url = c.resolved_url(check_nats_urls)?;
    let mut o = NatsOptions::new(c.name.clone(), url);
    if let Some(s) = &c.keys.subject {
        o.subject = s.get_ref().clone();
    }
    o.auth = auth(c.keys)?;
    o.jetstream = c.keys.jetstream.as_ref().map(|j| {
        let j = j.get_ref();
        JetStreamOptions {
            stream: j.stream.clone(),
            create_stream: j.create_stream,
            subjects: j.subjects.clone(),
            duplicate_window: Duration::from_secs(j.duplicate_window_secs),
            replicas: *j.replicas.get_ref(),
            ordering_check: j.ordering_check,
            atomic: j.atomic,
            atomic_max_batch: *j.atomic_max_batch.get_ref(),
        }
    });
    o.tls = c.keys.tls.as_ref().map(|t| {
        let t = t.get_ref();
        NatsTls {
            ca_file: t.ca_file.clone(),
            client_cert: t.client_cert.clone(),
            client_key: t.client_key.clone(),
            required: true,
        }
    });
    if let Some(t) = &c.keys.ack_timeout_ms {
        o.ack_timeout = Duration::from_millis(*t.get_ref());
    }
    Ok(o)
}

/// At most one way to authenticate.
fn auth(k: &NatsKeys) -> Result<NatsAuth, KeyError> {
    Ok(
        match (&k.user, &k.password, &k.token, &k.nkey_seed, &k.creds_file) {
            (Some(u), Some(p), None, None, None) => NatsAuth::UserPassword {
                user: env(u, "user")?,
                password: env(p, "password")?,
            },
            (None, None, Some(t), None, None) => NatsAuth::Token(env(t, "token")?),
            (None, None, None, Some(s), None) => NatsAuth::NkeySeed(env(s, "nkey_seed")?),
            (None, None, None, None, Some(f)) => NatsAuth::CredsFile(f.get_ref().clone()),
            (None, None, None, None, None) => NatsAuth::None,
            _ => return Err((
                None,
                "user",
                "choose one NATS authentication: user + password, token, nkey_seed or creds_file"
                    .into(),
            )),
        },
    )
}

/// Connects the sink. The files it reads (credentials, certificates) are read by the
/// client off the async workers (`tokio::fs`, `spawn_blocking`).
pub(crate) async fn build(c: Entry<'_, NatsKeys>) -> Result<Box<dyn Sink>, SinkError> {
    let opts = resolve(&c).map_err(|e| c.build_error(e))?;
    Ok(Box::new(NatsSink::connect(opts).await?))
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
