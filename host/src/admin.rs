//! The admin endpoint (`[admin] listen = "127.0.0.1:9187"`, off by default): liveness,
//! readiness and Prometheus metrics for an orchestrator.
//!
//! - `GET /healthz` — 200 while the process runs (liveness).
//! - `GET /readyz` — 200 when the replication stream runs and every sink is healthy;
//!   503 with the reason otherwise (before the stream starts, while reconnecting, while a
//!   sink is failing and retrying, while draining on shutdown).
//! - `GET /metrics` — Prometheus text format; every metric is named in [`crate::metrics`].
//!
//! A small HTTP/1.1 server (hyper) bound only where configured; nothing else listens.
//! Readiness comes from [`Health`], which the pipeline and the sinks' observers update.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;

use cdc_sinks::{EncodedBatch, Sink, SinkError, SinkObserver};

/// `[admin]`: the HTTP endpoint for probes and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, e.g. `127.0.0.1:9187` (`0.0.0.0:9187` in a pod, so the
    /// kubelet can probe it).
    pub listen: SocketAddr,
}

/// `[log]`: how logs are written on stderr (levels: `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`; `--log-format` overrides. Default: text (with colours on a TTY).
    pub format: Option<LogFormat>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Most concurrent admin connections; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histogram data is folded in for rendering.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Readiness state shared by the pipeline, the sinks' observers and the admin server.
#[derive(Debug)]
pub struct Health {
    stream: AtomicBool,
    /// Per sink (by name): healthy or not.
    sinks: Mutex<Vec<(String, bool)>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub const fn new() -> Health {
        Health {
            stream: AtomicBool::new(false),
            sinks: Mutex::new(Vec::new()),
        }
    }

    /// The process-wide instance (one pipeline per process).
    pub fn global() -> &'static Health {
        static GLOBAL: Health = Health::new();
        &GLOBAL
    }

    /// The replication stream started (`true`) or stopped (`false`).
    pub fn set_stream(&self, up: bool) {
        self.stream.store(up, Ordering::Relaxed);
        crate::metrics::stream_up(up);
    }

    /// Marks the sink `name` healthy or not; returns whether that changed its state.
    /// Unknown names are added (a rebuilt sink after a reconnect keeps its entry).
    pub fn set_sink(&self, name: &str, healthy: bool) -> bool {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match sinks.iter_mut().find(|(n, _)| n == name) {
            Some((_, h)) => std::mem::replace(h, healthy) != healthy,
            None => {
                sinks.push((name.to_owned(), healthy));
                true
            }
        };
        if changed {
            crate::metrics::sink_up(name, healthy);
        }
        changed
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.stream.load(Ordering::Relaxed) {
            return Err("replication stream not running".into());
        }
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let down: Vec<&str> = sinks
            .iter()
            .filter(|(_, h)| !h)
            .map(|(n, _)| n.as_str())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("sink(s) failing: {}", down.join(", ")))
        }
    }

    /// An observer for a sink: its retries mark it unhealthy and count in the metrics.
    pub fn observer(&'static self) -> Arc<dyn SinkObserver> {
        Arc::new(Observer { health: self })
    }
}

/// Marks the stream up for as long as it lives.
#[derive(Debug)]
pub struct StreamUp(&'static Health);

impl StreamUp {
    pub fn mark(health: &'static Health) -> StreamUp {
        health.set_stream(true);
        StreamUp(health)
    }
}

impl Drop for StreamUp {
    fn drop(&mut self) {
        self.0.set_stream(false);
    }
}

/// Wraps a sink for readiness and metrics: registers it healthy, attaches an observer (its
/// retries mark it failing), and after each acknowledged batch marks it healthy again and
/// counts the batch, its changes and bytes; counts rejected batches.
pub fn observed(sink: Box<dyn Sink>) -> Box<dyn Sink> {
    let health = Health::global();
    let mut inner = sink;
    health.set_sink(inner.name(), true);
    inner.observe(health.observer());
    Box::new(Observed { inner, health })
}

struct Observed {
    inner: Box<dyn Sink>,
    health: &'static Health,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("sink", &self.inner.name())
            .finish()
    }
}

#[async_trait::async_trait]
impl Sink for Observed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn observe(&mut self, observer: Arc<dyn SinkObserver>) {
        self.inner.observe(observer);
    }

    async fn deliver(&mut self, batch: Arc<EncodedBatch>) -> Result<(), SinkError> {
        let result = self.inner.deliver(Arc::clone(&batch)).await;
        let name = self.inner.name();
        match &result {
            Ok(()) => {
                if self.health.set_sink(name, true) {
                    tracing::info!(sink = name, "sink delivering again");
                }
                let bytes: usize = batch.messages.iter().map(|m| m.payload.len()).sum();
                crate::metrics::sink_batch(name, batch.messages.len() as u64, bytes as u64);
            }
            Err(SinkError::Rejected { .. }) => crate::metrics::sink_rejected(name),
            Err(_) => {}
        }
        result
    }
}

#[derive(Debug)]
struct Observer {
    health: &'static Health,
}

impl SinkObserver for Observer {
    fn retrying(&self, sink: &str, _attempt: u32) {
        crate::metrics::sink_retry(sink);
        if self.health.set_sink(sink, false) {
            tracing::warn!(sink, "sink failing: not ready until it delivers again");
        }
    }

    fn connection(&self, sink: &str, up: bool) {
        // Reconnected counts as healthy (an idle sink has no delivery to prove it); if a
        // delivery is still failing, its next retry marks the sink failing again.
        if self.health.set_sink(sink, up) {
            if up {
                tracing::info!(sink, "sink reconnected");
            } else {
                tracing::warn!(sink, "sink disconnected: not ready until it reconnects");
            }
        }
    }
}

/// Binds `cfg.listen`, installs the metrics recorder and serves in the background.
/// Fails only when the address cannot be bound.
pub async fn start(cfg: &AdminConfig) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin.listen {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr()?;
    let handle = crate::metrics::install();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let state = Arc::new(State {
        health: Health::global(),
        metrics: handle,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(route(&state, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
                drop(permit);
            });
        }
    });
    tracing::info!(%addr, "admin endpoint listening (/healthz, /readyz, /metrics)");
    Ok(addr)
}

struct State {
    health: &'static Health,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

fn route(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match state.health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let mut resp = text(StatusCode::OK, state.metrics.render());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<crate::config::Loaded, String> {
        let src = format!(
            "[source]\ndsn = \"postgres://cdc@127.0.0.1/app\"\nslot = \"s\"\npublication = \"p\"\n[[sinks]]\ntype = \"stdout\"\n{extra}"
        );
        crate::config::PipelineConfig::parse(std::path::Path::new("p.toml"), &src)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn admin_and_log_config() {
        let l = parse("").unwrap();
        assert!(l.config.admin.is_none(), "off by default");
        assert_eq!(l.config.log.format, None);
        let l = parse("[admin]\nlisten = \"127.0.0.1:9187\"\n[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(
            l.config.admin.unwrap().listen,
            "127.0.0.1:9187".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(l.config.log.format, Some(LogFormat::Json));
        let e = parse("[admin]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:8:10: admin.listen: invalid socket address"),
            "{e}"
        );
        let e = parse("[admin]\nlisten = \"127.0.0.1:1\"\nport = 2\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:9:1: admin.port: unknown field `port`"),
            "{e}"
        );
        let e = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:8:10: log.format: unknown variant `xml`"),
            "{e}"
        );
    }

    #[test]
    fn ready_needs_the_stream_and_every_sink() {
        let h = Health::new();
        assert!(h.readiness().unwrap_err().contains("stream"));
        h.set_stream(true);
        assert!(h.readiness().is_ok());
        assert!(h.set_sink("a", true));
        assert!(h.set_sink("b", true));
        assert!(h.readiness().is_ok());
        assert!(h.set_sink("b", false));
        assert!(!h.set_sink("b", false));
        assert_eq!(h.readiness().unwrap_err(), "sink(s) failing: b");
        h.set_sink("b", true);
        assert!(h.readiness().is_ok());
        h.set_stream(false);
        assert!(h.readiness().is_err());
    }
}
