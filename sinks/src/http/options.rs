//! [`HttpOptions`]: what an [`HttpSink`](super::HttpSink) is built from, and its defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default size above which a batch is split into several requests.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
/// Default first retry delay (the upper bound of the first jittered delay).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Default cap on the backoff delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);

/// How changes are grouped into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpBatching {
    /// One POST per batch (split above `max_batch_bytes`): one payload per line, each line
    /// ending in `\n`; `Content-Type: application/x-ndjson`.
    #[default]
    Ndjson,
    /// One POST per batch (split above `max_batch_bytes`): `[` + payloads joined by `,` +
    /// `]`; `Content-Type: application/json`.
    Array,
    /// One POST per change, the payload as the body; `Content-Type: application/json`.
    None,
}

/// Configuration of an [`HttpSink`](super::HttpSink). [`HttpOptions::new`] fills in the defaults.
#[derive(Clone)]
pub struct HttpOptions {
    /// The sink's name, for logs and errors.
    pub name: String,
    /// The target URL. With `batching = None` it may hold `{schema}`, `{table}` and `{op}`,
    /// and a route set by a transform replaces it entirely ([`Message::route_or`]); in the
    /// batch modes it is used as is.
    ///
    /// [`Message::route_or`]: crate::Message::route_or
    pub url: String,
    pub batching: HttpBatching,
    /// Extra headers sent on every request (already `${ENV}`-interpolated). Their values are
    /// never logged nor shown by `Debug`.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout, from connecting to the end of the response; also the connect
    /// timeout.
    pub timeout: Duration,
    /// A batch whose body would exceed this is split into several requests, each with its
    /// own `Idempotency-Key`. A single change larger than this still goes alone.
    pub max_batch_bytes: usize,
    /// Backoff: the first retry waits up to `retry_initial`, doubling per attempt up to
    /// `retry_max` (full jitter: a uniformly random delay below the bound).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Retries per request after the first attempt; `None` retries forever.
    pub max_retries: Option<u32>,
    /// An extra trusted CA (PEM, one or more certificates), on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// Trust any server certificate. For tests only; off by default.
    pub danger_accept_invalid_certs: bool,
}

impl HttpOptions {
    /// Options with every default: NDJSON, 10 s timeout, 4 MiB requests, 200 ms → 30 s
    /// backoff, retrying forever, system CAs only.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        HttpOptions {
            name: name.into(),
            url: url.into(),
            batching: HttpBatching::default(),
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            max_retries: None,
            ca_file: None,
            danger_accept_invalid_certs: false,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpOptions")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("batching", &self.batching)
            .field("headers", &header_names)
            .field("timeout", &self.timeout)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("max_retries", &self.max_retries)
            .field("ca_file", &self.ca_file)
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish()
    }
}

/// Webhook URLs often carry a secret in their path or query: show scheme, host and port.
pub(super) fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            }
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let mut opts = HttpOptions::new("h", "https://hooks.example/T0/secret-path?token=abc");
        opts.headers
            .push(("Authorization".into(), "Bearer hunter2".into()));
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("secret-path"), "{shown}");
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
