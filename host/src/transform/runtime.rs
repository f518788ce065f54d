//! The Wasm runtime: one wasmtime `Engine` and `Linker` per process.
//!
//! Compiling and linking are the expensive parts of running a component, and both are
//! independent of any particular instance, so they happen once here; every module then
//! gets an `InstancePre` (imports resolved, type-checked) from which instances are cheap
//! to make — also after a trap, when the trapped instance must be thrown away.
//!
//! Guests get WASI p2 with nothing in it (no preopened directories, environment,
//! arguments or network), because a transform has no business reaching outside the
//! batch it was given; their stdout and stderr become log lines tagged with the module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{LogLimiter, MemoryCap};

/// `cdc:pipeline@0.2.0` (`wit/`): what modules are built against today.
pub mod v02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
    });
}

/// `cdc:pipeline@0.2.0`, world `transform-json`: the batch as one JSON document
/// (`wit/json.wit`). Shares the `host` interface (and its implementation) with [`v02`].
pub mod json02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform-json",
        with: {
            "cdc:pipeline/host": super::v02::cdc::pipeline::host,
        },
    });
}

/// `cdc:pipeline@0.2.0`, world `transform-batch`: the batch as a host resource the guest
/// reads and edits through calls (`wit/batch.wit`, [`super::batch`]). Shares `host` and
/// `types` with [`v02`]. Its calls trap on an index out of range.
pub mod batch02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform-batch",
        imports: { "cdc:pipeline/batch": trappable },
        with: {
            "cdc:pipeline/host": super::v02::cdc::pipeline::host,
            "cdc:pipeline/types": super::v02::cdc::pipeline::types,
            "cdc:pipeline/batch.changes": crate::transform::batch::Changes,
        },
    });
}

/// `cdc:pipeline@0.1.0` (`transform/wit-0.1.0/`), kept so modules built against it
/// still load: they get 0.2 changes converted down (a read becomes an insert with a
/// read id) and their output converted back up ([`super::convert::compat`]).
pub mod v01 {
    wasmtime::component::bindgen!({
        path: "src/transform/wit-0.1.0",
        world: "transform",
    });
}

pub use v02::cdc::pipeline::host::Level;
pub use v02::cdc::pipeline::types as wit;
pub use v02::exports::cdc::pipeline::transformer::Guest as TransformerExports;

/// How often the epoch advances: the granularity of per-call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The WIT interface a module must export (the `transform` world's export).
pub const TRANSFORMER_EXPORT: &str = "cdc:pipeline/transformer@0.2.0";

/// The JSON world's export (`wit/json.wit`).
pub const JSON_TRANSFORMER_EXPORT: &str = "cdc:pipeline/json-transformer@0.2.0";

/// The batch world's export (`wit/batch.wit`).
pub const BATCH_TRANSFORMER_EXPORT: &str = "cdc:pipeline/batch-transformer@0.2.0";

/// The previous version's export, still accepted.
pub const TRANSFORMER_EXPORT_V01: &str = "cdc:pipeline/transformer@0.1.0";

/// One per process: the engine, the linker with WASI and the host interface, and the
/// thread that drives epoch deadlines.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    fuel: bool,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("fuel", &self.fuel).finish()
    }
}

impl Runtime {
    /// `fuel`: whether any module limits fuel (metering slows every module, so it is on
    /// only when asked for).
    pub fn new(fuel: bool) -> wasmtime::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        v02::Transform::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        v01::Transform::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        batch02::cdc::pipeline::batch::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = Arc::clone(&ticker_stop);
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| wasmtime::format_err!("starting the epoch thread: {e}"))?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            fuel,
            ticker_stop,
        }))
    }

    pub fn fuel_enabled(&self) -> bool {
        self.fuel
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Per-instance state: WASI (empty), the resource table, limits, and the module's name
/// and log budget for its log lines.
#[allow(missing_debug_implementations)] // WasiCtx has no Debug
pub struct HostState {
    pub(crate) module: Arc<str>,
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryCap,
    log: Arc<LogLimiter>,
    /// The origins of the batch being transformed (`host.origin`).
    pub(crate) origins: super::origins::Origins,
}

impl HostState {
    pub(crate) fn new(module: Arc<str>, limits: MemoryCap, log: Arc<LogLimiter>) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(LogPipe::new(
                Arc::clone(&module),
                "stdout",
                Arc::clone(&log),
            ))
            .stderr(LogPipe::new(
                Arc::clone(&module),
                "stderr",
                Arc::clone(&log),
            ))
            .build();
        HostState {
            module,
            wasi,
            table: ResourceTable::new(),
            limits,
            log,
            origins: Default::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl v02::cdc::pipeline::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.guest_log(level, message);
    }

    fn type_name(&mut self, oid: u32) -> Option<String> {
        super::type_names::type_name(oid).map(str::to_owned)
    }

    fn origin(&mut self, commit_lsn: u64) -> Option<String> {
        self.origins
            .get(crate::lsn::Lsn(commit_lsn))
            .map(|o| o.to_string())
    }
}

impl v01::cdc::pipeline::host::Host for HostState {
    fn log(&mut self, level: v01::cdc::pipeline::host::Level, message: String) {
        use v01::cdc::pipeline::host::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        self.guest_log(level, message);
    }
}

impl v02::cdc::pipeline::types::Host for HostState {}
impl v01::cdc::pipeline::types::Host for HostState {}

impl HostState {
    /// Lines the subscriber would not print do not count against the module's budget.
    fn guest_log(&mut self, level: Level, message: String) {
        let enabled = match level {
            Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(tracing::Level::INFO),
            Level::Warn => tracing::enabled!(tracing::Level::WARN),
            Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled || !self.log.admit() {
            return;
        }
        let module = &*self.module;
        match level {
            Level::Trace => tracing::trace!(module = %module, "{message}"),
            Level::Debug => tracing::debug!(module = %module, "{message}"),
            Level::Info => tracing::info!(module = %module, "{message}"),
            Level::Warn => tracing::warn!(module = %module, "{message}"),
            Level::Error => tracing::error!(module = %module, "{message}"),
        }
    }
}

/// A guest's stdout or stderr: complete lines become log events (`info` for stdout,
/// `warn` for stderr), tagged with the module, within the module's log budget. Lines are
/// capped so a guest printing without newlines cannot grow host memory.
#[derive(Clone)]
struct LogPipe {
    module: Arc<str>,
    stream: &'static str,
    buf: Arc<Mutex<Vec<u8>>>,
    limiter: Arc<LogLimiter>,
}

const MAX_LINE: usize = 8 << 10;

impl LogPipe {
    fn new(module: Arc<str>, stream: &'static str, limiter: Arc<LogLimiter>) -> Self {
        LogPipe {
            module,
            stream,
            buf: Arc::default(),
            limiter,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        for &b in bytes {
            if b == b'\n' {
                self.emit(&buf);
                buf.clear();
            } else if buf.len() < MAX_LINE {
                buf.push(b);
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        if !self.limiter.admit() {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let line = text.trim_end_matches('\r');
        let module = &*self.module;
        if self.stream == "stderr" {
            tracing::warn!(module = %module, stream = self.stream, "{line}");
        } else {
            tracing::info!(module = %module, stream = self.stream, "{line}");
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for LogPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
