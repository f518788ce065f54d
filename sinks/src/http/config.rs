//! `type = "http"`: its keys, checks and defaults, and building the sink from them.

use std::time::Duration;

use serde::Deserialize;

use super::{HttpBatching, HttpOptions, HttpSink};
use crate::config::{check_authority, interpolate, safe_scheme, KeyError, SinkConfig};
use crate::{Sink, SinkError};

/// Optional keys an HTTP sink accepts (besides name, type, format and routes).
pub(crate) const KEYS: &[&str] = &[
    "url",
    "on_reject",
    "dead_letter_sink",
    "batch",
    "headers",
    "timeout_ms",
    "max_batch_bytes",
    "ca_file",
    "max_retries",
];

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
pub(crate) fn check(c: &SinkConfig) -> Result<(), KeyError> {
    c.require_url()?;
    if let Some(u) = &c.url {
        let templated = ["{schema}", "{table}", "{op}"]
            .iter()
            .any(|p| u.get_ref().contains(p));
        let one_per_change = matches!(
            c.batch.as_ref().map(|b| *b.get_ref()),
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

/// The entry's options: `${ENV}` filled in, defaults from [`HttpOptions::new`].
pub fn options(c: &SinkConfig) -> Result<HttpOptions, KeyError> {
    let url = c.resolved_url(check_http_url)?;
    let mut headers = Vec::new();
    if let Some(h) = &c.headers {
        for (k, v) in h.get_ref() {
            let v = interpolate(v).map_err(|m| (Some(h.span()), "headers", format!("{k}: {m}")))?;
            headers.push((k.clone(), v));
        }
    }
    let mut o = HttpOptions::new(c.display_name(), url);
    o.headers = headers;
    if let Some(b) = &c.batch {
        o.batching = (*b.get_ref()).into();
    }
    if let Some(t) = &c.timeout_ms {
        o.timeout = Duration::from_millis(*t.get_ref());
    }
    if let Some(m) = &c.max_batch_bytes {
        o.max_batch_bytes = *m.get_ref();
    }
    o.max_retries = c.max_retries.as_ref().map(|v| *v.get_ref());
    o.ca_file = c.ca_file.as_ref().map(|f| f.get_ref().clone());
    Ok(o)
}

/// Builds the sink off the async workers: it reads CA certificates from disk.
pub(crate) async fn build(c: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    let opts = options(c).map_err(|e| c.build_error(e))?;
    let sink = tokio::task::spawn_blocking(move || HttpSink::new(opts))
        .await
        .map_err(|e| SinkError::Other {
            sink: c.display_name(),
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
