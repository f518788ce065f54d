//! [`HttpSink`]: validation, the client, and delivery with retries.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::options::redact_url;
use super::request::{check_url, Request};
use super::response::{body_excerpt, error_chain, parse_retry_after, read_some};
use super::tls::tls_config;
use super::{HttpBatching, HttpOptions};
use crate::retry::Backoff;
use crate::{EncodedBatch, Sink, SinkError, SinkObserver};

/// How much of a response body is drained so that the connection can be reused.
const DRAIN_MAX: usize = 64 * 1024;

/// POSTs batches to an HTTP endpoint. See the module docs.
pub struct HttpSink {
    pub(super) opts: HttpOptions,
    pub(super) client: reqwest::Client,
    /// The URL parsed once, for the batch modes.
    pub(super) batch_url: Option<Url>,
    /// `opts.headers`, validated, plus the fixed ones.
    pub(super) base_headers: HeaderMap,
    /// `retry_initial` up to `retry_max`, full jitter.
    pub(super) retry: Backoff,
    pub(super) observer: Option<Arc<dyn SinkObserver>>,
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
    /// made here, but the system's CA certificates and `ca_file` are read: from async
    /// code, call it through `tokio::task::spawn_blocking` (as `SinkConfig::build` does).
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
            retry: Backoff::new(opts.retry_initial, opts.retry_max),
            observer: None,
            opts,
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
            let delay = self.retry.delay_or_hint(attempt, retry_after);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_the_options() {
        let mut opts = HttpOptions::new("h", "http://127.0.0.1:9/");
        opts.retry_initial = Duration::from_millis(300);
        opts.retry_max = Duration::from_secs(20);
        let sink = HttpSink::new(opts).unwrap();
        assert_eq!(
            sink.retry,
            Backoff::new(Duration::from_millis(300), Duration::from_secs(20))
        );
        for attempt in 1..40 {
            let d = sink.retry.delay_or_hint(attempt, None);
            assert!(d <= sink.retry.bound(attempt), "attempt {attempt}: {d:?}");
        }
        let hint = Some(Duration::from_secs(600));
        assert_eq!(sink.retry.delay_or_hint(1, hint), crate::retry::HINT_CAP);
    }
}
