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
//! It only serves: readiness is read from the [`HealthHandle`] it is given (the pipeline
//! and the sinks' observers update it, see [`crate::health`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::config::AdminConfig;
use crate::health::HealthHandle;

/// Most concurrent admin connections; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histogram data is folded in for rendering.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Binds `cfg.listen`, installs the metrics recorder and serves in the background.
/// Fails only when the address cannot be bound.
pub async fn start(cfg: &AdminConfig, health: HealthHandle) -> std::io::Result<SocketAddr> {
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
        health,
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
    health: HealthHandle,
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
