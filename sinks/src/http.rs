//! HTTP (webhook) sink: POSTs encoded changes to a URL.
//!
//! A batch goes out as one request (NDJSON or a JSON array, split above
//! [`HttpOptions::max_batch_bytes`]) or as one request per change. Requests of a batch are
//! sent in order, one at a time, and [`Sink::deliver`] returns `Ok` only once every one of
//! them was answered with a 2xx.
//!
//! Transient failures (connect errors, timeouts, 5xx, 408, 429) are retried inside
//! `deliver` with capped exponential backoff and full jitter, forever unless
//! [`HttpOptions::max_retries`] says otherwise, so the pipeline stalls rather than losing
//! data. A `Retry-After` (seconds or HTTP-date) on a retried answer replaces the backoff
//! delay, up to `max(retry_max, 5 min)`. Any other answer (other 4xx, a 3xx: redirects are
//! not followed) is [`SinkError::Rejected`], naming the request's `Idempotency-Key` as the
//! id (the change id, or `<first id>..<last id>` for a group); the host decides whether
//! that fails the pipeline or dead-letters the changes. Requests before it in the batch
//! were delivered; none after it was sent.
//!
//! Every request carries an `Idempotency-Key` that is the same on each retry and after a
//! crash and replay: the change id for a request holding one change, `<first id>..<last id>`
//! for a request holding several (ids are fixed-width and derived from WAL positions, and the
//! split of a batch depends only on its payloads and the options).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use rustls::{ClientConfig, RootCertStore};

use crate::tls::AcceptAnyCert;
use crate::{EncodedBatch, Message, Sink, SinkError, SinkObserver};

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default size above which a batch is split into several requests.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
/// Default first retry delay (the upper bound of the first jittered delay).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Default cap on the backoff delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);

/// `Cdc-Change-Ids` is sent only while it stays under this many bytes.
const CHANGE_IDS_HEADER_MAX: usize = 8 * 1024;
/// How much of a rejecting response's body goes into the error.
const REJECT_BODY_SHOWN: usize = 200;
/// How much of a response body is drained so that the connection can be reused.
const DRAIN_MAX: usize = 64 * 1024;
/// A `Retry-After` is honoured up to `max(retry_max, this)`.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

const NDJSON: &str = "application/x-ndjson";
const JSON: &str = "application/json";

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

/// Configuration of an [`HttpSink`]. [`HttpOptions::new`] fills in the defaults.
#[derive(Clone)]
pub struct HttpOptions {
    /// The sink's name, for logs and errors.
    pub name: String,
    /// The target URL. With `batching = None` it may hold `{schema}`, `{table}` and `{op}`,
    /// and a route set by a transform replaces it entirely ([`Message::route_or`]); in the
    /// batch modes it is used as is.
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
fn redact_url(url: &str) -> String {
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

/// POSTs batches to an HTTP endpoint. See the module docs.
pub struct HttpSink {
    opts: HttpOptions,
    client: reqwest::Client,
    /// The URL parsed once, for the batch modes.
    batch_url: Option<Url>,
    /// `opts.headers`, validated, plus the fixed ones.
    base_headers: HeaderMap,
    rng: Jitter,
    observer: Option<Arc<dyn SinkObserver>>,
}

impl fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSink")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// Validates the options and builds the (pooled, keep-alive) client. No connection is
    /// made here.
    pub fn new(opts: HttpOptions) -> Result<HttpSink, SinkError> {
        let other = |message: String| SinkError::Other {
            sink: opts.name.clone(),
            message,
        };
        let has_template = ["{schema}", "{table}", "{op}"]
            .iter()
            .any(|p| opts.url.contains(p));
        let batch_url = match opts.batching {
            HttpBatching::None => {
                // Check the template's shape with placeholders filled in.
                let probe = opts
                    .url
                    .replace("{schema}", "s")
                    .replace("{table}", "t")
                    .replace("{op}", "o");
                check_url(&probe).map_err(|e| other(format!("url: {e}")))?;
                None
            }
            _ => {
                if has_template {
                    return Err(other(
                        "url: {schema}/{table}/{op} can only be used with batching = none"
                            .to_owned(),
                    ));
                }
                Some(check_url(&opts.url).map_err(|e| other(format!("url: {e}")))?)
            }
        };
        if opts.retry_initial.is_zero() || opts.retry_max < opts.retry_initial {
            return Err(other(
                "retry delays: need 0 < retry_initial <= retry_max".to_owned(),
            ));
        }
        if opts.timeout.is_zero() {
            return Err(other("timeout must be above zero".to_owned()));
        }

        let mut base_headers = HeaderMap::new();
        for (k, v) in &opts.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| other(format!("header {k:?}: not a valid header name")))?;
            // Never echo the value: it is often a secret.
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| other(format!("header {k}: value is not valid in a header")))?;
            value.set_sensitive(true);
            base_headers.append(name, value);
        }

        let tls = tls_config(&opts).map_err(other)?;
        let https = opts.url.starts_with("https:") || opts.batching == HttpBatching::None;
        if tls.roots_empty && https && !opts.danger_accept_invalid_certs {
            let msg = "no system CA certificates found; set ca_file";
            if opts.url.starts_with("https:") {
                return Err(other(msg.to_owned()));
            }
            tracing::warn!(sink = %opts.name, "{msg}: https routes will fail");
        }
        if opts.danger_accept_invalid_certs {
            tracing::warn!(
                sink = %opts.name,
                "TLS certificate verification is OFF (danger_accept_invalid_certs)"
            );
        }

        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.config)
            .http1_only()
            .user_agent(concat!("cdc-host/", env!("CARGO_PKG_VERSION")))
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // A POST redirected to a GET elsewhere would be "delivered" nowhere: a 3xx is
            // an answer to act on, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| other(format!("cannot build HTTP client: {}", error_chain(e))))?;

        Ok(HttpSink {
            batch_url,
            base_headers,
            client,
            rng: Jitter::new(),
            observer: None,
            opts,
        })
    }

    /// The requests for `batch`, in order. Deterministic: the same batch and options give
    /// the same requests (bodies, URLs, keys).
    fn plan(&self, batch: &EncodedBatch) -> Result<Vec<Request>, SinkError> {
        let msgs = &batch.messages;
        match self.opts.batching {
            HttpBatching::None => msgs.iter().map(|m| self.single(m)).collect(),
            HttpBatching::Ndjson | HttpBatching::Array => {
                let array = self.opts.batching == HttpBatching::Array;
                let url = self.batch_url.clone().expect("checked in new");
                let mut out = Vec::new();
                let mut start = 0;
                while start < msgs.len() {
                    // Greedily take changes while the body stays under the limit (always at
                    // least one).
                    let mut size = if array { 2 } else { 0 };
                    let mut end = start;
                    while end < msgs.len() {
                        let add = msgs[end].payload.len() + usize::from(!array || end > start);
                        if end > start && size + add > self.opts.max_batch_bytes {
                            break;
                        }
                        size += add;
                        end += 1;
                    }
                    out.push(self.group(&msgs[start..end], url.clone(), array, size)?);
                    start = end;
                }
                Ok(out)
            }
        }
    }

    fn group(
        &self,
        msgs: &[Message],
        url: Url,
        array: bool,
        size: usize,
    ) -> Result<Request, SinkError> {
        let mut body = BytesMut::with_capacity(size);
        if array {
            body.put_u8(b'[');
        }
        for (i, m) in msgs.iter().enumerate() {
            if array && i > 0 {
                body.put_u8(b',');
            }
            body.put_slice(&m.payload);
            if !array {
                body.put_u8(b'\n');
            }
        }
        if array {
            body.put_u8(b']');
        }
        let first = &msgs[0].id;
        let last = &msgs[msgs.len() - 1].id;
        let key = if msgs.len() == 1 {
            first.clone()
        } else {
            format!("{first}..{last}")
        };
        let mut headers = self.base_headers.clone();
        let ctype = if array { JSON } else { NDJSON };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        let bad = |what: &str| SinkError::Rejected {
            sink: self.opts.name.clone(),
            id: key.clone(),
            message: format!("{what} is not valid in an HTTP header"),
        };
        put(&mut headers, "idempotency-key", &key).map_err(|_| bad("a change id"))?;
        let ids_len: usize = msgs.iter().map(|m| m.id.len() + 1).sum();
        if ids_len <= CHANGE_IDS_HEADER_MAX {
            let ids = msgs.iter().map(|m| m.id.as_str()).collect::<Vec<_>>();
            put(&mut headers, "cdc-change-ids", &ids.join(",")).map_err(|_| bad("a change id"))?;
        }
        put(&mut headers, "cdc-first-id", first).map_err(|_| bad("a change id"))?;
        put(&mut headers, "cdc-last-id", last).map_err(|_| bad("a change id"))?;
        put(&mut headers, "cdc-count", &msgs.len().to_string()).expect("digits");
        Ok(Request {
            url,
            body: body.freeze(),
            headers,
            key,
        })
    }

    fn single(&self, m: &Message) -> Result<Request, SinkError> {
        let rejected = |message: String| SinkError::Rejected {
            sink: self.opts.name.clone(),
            id: m.id.clone(),
            message,
        };
        let url = m.route_or(&self.opts.url);
        let url = check_url(&url).map_err(|e| {
            rejected(format!(
                "the change's URL {} is not usable: {e}",
                redact_url(&url)
            ))
        })?;
        let mut headers = self.base_headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        // Transform headers replace the configured ones and Content-Type (repeats of a name
        // are all sent); they come before the Cdc-* ones, which they cannot replace.
        let mut seen: Vec<HeaderName> = Vec::new();
        for (k, v) in &m.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| rejected(format!("header {k:?}: not a valid header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| rejected(format!("header {k}: value is not valid in a header")))?;
            if seen.contains(&name) {
                headers.append(name, value);
            } else {
                seen.push(name.clone());
                headers.insert(name, value);
            }
        }
        let bad = |what: &str| rejected(format!("{what} is not valid in an HTTP header"));
        put(&mut headers, "idempotency-key", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-change-ids", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-first-id", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-last-id", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-count", "1").expect("digits");
        put(&mut headers, "cdc-op", m.op).map_err(|_| bad("the op"))?;
        let table = match (&m.schema, &m.table) {
            (Some(s), Some(t)) => Some(format!("{s}.{t}")),
            (None, Some(t)) => Some(t.to_string()),
            _ => None,
        };
        if let Some(table) = table {
            put(&mut headers, "cdc-table", &table).map_err(|_| bad("the table name"))?;
        }
        put(&mut headers, "cdc-lsn", &m.lsn).map_err(|_| bad("the LSN"))?;
        Ok(Request {
            url,
            body: m.payload.clone(),
            headers,
            key: m.id.clone(),
        })
    }

    /// Sends one request until it is answered with a 2xx, retrying transient failures.
    async fn send(&mut self, req: &Request, index: usize, total: usize) -> Result<(), SinkError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(req).await;
            let (failure, retry_after) = match outcome {
                Outcome::Delivered => return Ok(()),
                Outcome::Rejected(message) => {
                    return Err(SinkError::Rejected {
                        sink: self.opts.name.clone(),
                        id: req.key.clone(),
                        message: if total > 1 {
                            format!("{message} (request {} of {total})", index + 1)
                        } else {
                            message
                        },
                    });
                }
                Outcome::Retry {
                    failure,
                    retry_after,
                } => (failure, retry_after),
            };
            let retries_done = attempt - 1;
            if self.opts.max_retries.is_some_and(|max| retries_done >= max) {
                let message = format!(
                    "gave up on {} after {attempt} attempt(s): {failure}",
                    req.key
                );
                return Err(match failure {
                    Failure::Transport(_) => SinkError::Connect {
                        sink: self.opts.name.clone(),
                        message,
                    },
                    Failure::Status(..) => SinkError::Other {
                        sink: self.opts.name.clone(),
                        message,
                    },
                });
            }
            let delay = match retry_after {
                Some(d) => d.min(self.opts.retry_max.max(RETRY_AFTER_CAP)),
                None => self.backoff(attempt),
            };
            tracing::warn!(
                sink = %self.opts.name,
                attempt,
                key = %req.key,
                error = %failure,
                retry_in_ms = delay.as_millis() as u64,
                "HTTP delivery failed; retrying"
            );
            if let Some(o) = &self.observer {
                o.retrying(&self.opts.name, attempt);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Full jitter: uniform in `[0, min(retry_max, retry_initial · 2^(attempt-1))]`.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let bound = self
            .opts
            .retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.opts.retry_max);
        bound.mul_f64(self.rng.unit())
    }

    async fn attempt(&self, req: &Request) -> Outcome {
        let sent = self
            .client
            .post(req.url.clone())
            .headers(req.headers.clone())
            .body(req.body.clone())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Outcome::Rejected(format!("cannot build request: {}", error_chain(e)))
            }
            Err(e) => {
                return Outcome::Retry {
                    failure: Failure::Transport(error_chain(e)),
                    retry_after: None,
                }
            }
        };
        let status = resp.status();
        if status.is_success() {
            // The destination has it; read what little body there is so that the
            // connection goes back to the pool.
            let _ = read_some(&mut resp, DRAIN_MAX).await;
            return Outcome::Delivered;
        }
        let retryable = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(redact_url);
        let body = read_some(&mut resp, DRAIN_MAX).await;
        let shown = body_excerpt(&body);
        if retryable {
            Outcome::Retry {
                failure: Failure::Status(status, shown),
                retry_after,
            }
        } else {
            let mut message = format!("HTTP {status}");
            if let Some(loc) = location.filter(|_| status.is_redirection()) {
                message.push_str(&format!(" (redirect to {loc} not followed)"));
            }
            if !shown.is_empty() {
                message.push_str(": ");
                message.push_str(&shown);
            }
            Outcome::Rejected(message)
        }
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.opts.name
    }

    fn observe(&mut self, observer: Arc<dyn SinkObserver>) {
        self.observer = Some(observer);
    }

    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
        let requests = self.plan(&batch)?;
        let total = requests.len();
        for (i, req) in requests.iter().enumerate() {
            self.send(req, i, total).await?;
        }
        Ok(())
    }
}

/// One HTTP request of a batch.
#[derive(Debug)]
struct Request {
    url: Url,
    body: Bytes,
    headers: HeaderMap,
    /// The `Idempotency-Key`, also the id named in a rejection.
    key: String,
}

enum Outcome {
    Delivered,
    Retry {
        failure: Failure,
        retry_after: Option<Duration>,
    },
    Rejected(String),
}

enum Failure {
    Transport(String),
    Status(StatusCode, String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(e) => f.write_str(e),
            Failure::Status(s, body) if body.is_empty() => write!(f, "HTTP {s}"),
            Failure::Status(s, body) => write!(f, "HTTP {s}: {body}"),
        }
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), ()> {
    let value = HeaderValue::from_str(value).map_err(|_| ())?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" | "https" => {}
        s => return Err(format!("scheme {s:?} is not http or https")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(parsed)
}

/// Up to `max` bytes of the body; errors end the read quietly.
async fn read_some(resp: &mut reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out
}

/// The first [`REJECT_BODY_SHOWN`] bytes of a body, as text, trimmed.
fn body_excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(REJECT_BODY_SHOWN)];
    let text = String::from_utf8_lossy(cut);
    let text = text.trim();
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > REJECT_BODY_SHOWN {
        s.push('…');
    }
    s
}

/// An error and its causes, without the request URL (it may hold a secret).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = src {
        let part = s.to_string();
        // hyper and friends often repeat their cause in their own message.
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        src = s.source();
    }
    text
}

/// `Retry-After` as a delay: delta-seconds or an HTTP-date (a past date means now).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The TLS configuration: ring, system roots plus `ca_file`, HTTP/1.1 ALPN.
struct Tls {
    config: ClientConfig,
    roots_empty: bool,
}

fn tls_config(opts: &HttpOptions) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = &opts.ca_file {
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {shown}: {e}"))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {shown}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("ca_file {shown} holds no certificate"));
        }
    }
    let roots_empty = roots.is_empty();
    let mut config = if opts.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config,
        roots_empty,
    })
}

/// A small PRNG for backoff jitter (xorshift64*, seeded per sink from std's random hasher
/// keys): no cryptographic needs, no extra dependency.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Jitter(h.finish() | 1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let mut opts = HttpOptions::new("h", "http://127.0.0.1:9/");
        opts.retry_initial = Duration::from_millis(200);
        opts.retry_max = Duration::from_secs(30);
        let mut sink = HttpSink::new(opts).unwrap();
        for attempt in 1..200 {
            let bound = Duration::from_millis(200)
                .saturating_mul(1 << (attempt - 1).min(31))
                .min(Duration::from_secs(30));
            let d = sink.backoff(attempt);
            assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
        }
        // Jitter really varies.
        let ds: Vec<_> = (0..20).map(|_| sink.backoff(10)).collect();
        assert!(ds.iter().any(|d| *d != ds[0]));
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = vec![b'x'; 1000];
        let e = body_excerpt(&long);
        assert_eq!(e.chars().count(), REJECT_BODY_SHOWN + 1);
        assert_eq!(body_excerpt(b" bad\nfield "), "bad field");
    }

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
