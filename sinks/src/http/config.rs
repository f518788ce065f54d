//! `type = "http"`: its keys, checks and defaults, and building the sink from them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{HttpBatching, HttpOptions, HttpSink};
use crate::keys::{check_authority, interpolate, safe_scheme, sink_keys, Entry, KeyError};
use crate::{Sink, SinkError};

/// The keys every sink may have that an HTTP sink accepts.
pub(crate) const SHARED_KEYS: &[&str] = &["url", "on_reject", "dead_letter_sink"];

sink_keys! {
    /// The keys of a `[[sinks]]` entry that only an HTTP sink has.
    pub struct HttpKeys {
        /// `ndjson` (default), `array`, or `none` (one request per change).
        pub batch: HttpBatch,
        /// Extra request headers (`${ENV}` allowed in values; never logged).
        pub headers: BTreeMap<String, String>,
        pub timeout_ms: u64,
        pub max_batch_bytes: usize,
        pub ca_file: PathBuf,
        pub max_retries: u32,
    }
}

/// `batch` of an HTTP sink, as written.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpBatch {
    Ndjson,
    Array,
    None,
}

impl From<HttpBatch> for HttpBatching {
    fn from(b: HttpBatch) -> Self {
        match b {
            HttpBatch::Ndjson => HttpBatching::Ndjson,
            HttpBatch::Array => HttpBatching::Array,
            HttpBatch::None => HttpBatching::None,
        }
    }
}

/// What can be checked without the environment: a url, and placeholders in it only with
/// one request per change.
pub(crate) fn check(c: &Entry<'_, HttpKeys>) -> Result<(), KeyError> {
    c.require_url()?;
    if let Some(u) = c.url {
        let templated = ["{schema}", "{table}", "{op}"]
            .iter()
            .any(|p| u.get_ref().contains(p));
        let one_per_change = matches!(
            c.keys.batch.as_ref().map(|b| *b.get_ref()),
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
    Ok(())
}

/// What [`build`] resolves, checked: `${ENV}` in the url and headers, the url's shape.
pub(crate) fn check_resolved(c: &Entry<'_, HttpKeys>) -> Result<(), KeyError> {
    resolve(c).map(drop)
}

/// The entry's options (`c`: a `&SinkConfig`, or its [`Entry`]): `${ENV}` filled in,
/// defaults from [`HttpOptions::new`].
pub fn options<'a>(c: impl Into<Entry<'a, HttpKeys>>) -> Result<HttpOptions, KeyError> {
    resolve(&c.into())
}

fn resolve(c: &Entry<'_, HttpKeys>) -> Result<HttpOptions, KeyError> {
    let url = c.resolved_url(check_http_url)?;
    let mut headers = Vec::new();
    if let Some(h) = &c.keys.headers {
        for (k, v) in h.get_ref() {
            let v = interpolate(v).map_err(|m| (Some(h.span()), "headers", format!("{k}: {m}")))?;
            headers.push((k.clone(), v));
        }
    }
    let mut o = HttpOptions::new(c.name.clone(), url);
    o.headers = headers;
    if let Some(b) = &c.keys.batch {
        o.batching = (*b.get_ref()).into();
    }
    if let Some(t) = &c.keys.timeout_ms {
        o.timeout = Duration::from_millis(*t.get_ref());
    }
    if let Some(m) = &c.keys.max_batch_bytes {
        o.max_batch_bytes = *m.get_ref();
    }
    o.max_retries = c.keys.max_retries.as_ref().map(|v| *v.get_ref());
    o.ca_file = c.keys.ca_file.as_ref().map(|f| f.get_ref().clone());
    Ok(o)
}

/// Builds the sink off the async workers: it reads CA certificates from disk.
pub(crate) async fn build(c: Entry<'_, HttpKeys>) -> Result<Box<dyn Sink>, SinkError> {
    let opts = resolve(&c).map_err(|e| c.build_error(e))?;
    let sink = tokio::task::spawn_blocking(move || HttpSink::new(opts))
        .await
        .map_err(|e| SinkError::Other {
            sink: c.name.clone(),
            message: format!("building the sink failed: {e}"),
        })??;
    Ok(Box::new(sink))
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
