//! Wasm transforms: user components that filter, modify, split and route changes.
//!
//! - [`runtime`] — the one `Engine`/`Linker` per process, WASI without capabilities,
//!   the epoch ticker that enforces per-call deadlines.
//! - [`module`] — compile (or load from the on-disk cache), link once (`InstancePre`),
//!   instantiate with memory/fuel limits, call.
//! - [`cache`] — the on-disk cache of compiled code, and the rules that keep foreign
//!   code out of it.
//! - [`convert`] — host changes ⇄ the WIT record.
//! - [`chain`] — modules in config order with their `on_error` policies.
//! - [`origins`] — each transaction's replication origin, asked for by modules
//!   (`host.origin`) and kept on what they return.
//! - [`config`] — `[[transforms]]`.

pub mod batch;
pub mod cache;
pub mod chain;
pub mod config;
pub mod convert;
mod limits;
pub mod module;
pub mod origins;
pub mod replay;
pub mod runtime;
#[cfg(test)]
mod testlog;
mod type_names;

use std::path::PathBuf;
use std::sync::Arc;

pub use cache::CodeSource;
pub use cache::{CacheDir, CacheOrigin};
pub use chain::{Chain, Outcome};
pub use config::{OnFailure, TransformConfig};
pub use limits::GUEST_LOG_LINES_PER_SEC;
pub use module::Module;
pub use runtime::Runtime;

/// Why a module could not be loaded or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("transform {module} ({}): {reason}", path.display())]
    Load {
        module: String,
        path: PathBuf,
        reason: String,
    },
    #[error("transform {module}: init rejected the config: {message}")]
    InitRejected { module: String, message: String },
    #[error("transform {module}: returned an error: {message}")]
    Returned { module: String, message: String },
    #[error("transform {module}: deadline of {timeout_ms} ms exceeded{} (the call was interrupted): raise `timeout_ms` in its [[transforms]] entry, or send smaller batches with `[pipeline] max_changes`", on_batch(*batch))]
    Deadline {
        module: String,
        timeout_ms: u64,
        batch: usize,
    },
    #[error("transform {module}: memory cap of {limit_mb} MiB exceeded{}: raise `memory_mb` in its [[transforms]] entry, or send smaller batches with `[pipeline] max_changes`", on_batch(*batch))]
    MemoryCap {
        module: String,
        limit_mb: usize,
        batch: usize,
    },
    #[error("transform {module}: trapped: {reason}")]
    Trap { module: String, reason: String },
    #[error("transform {module}: returned an invalid change: {source}")]
    BadOutput {
        module: String,
        source: convert::ConvertError,
    },
    #[error("module cache {} {reason}", dir.display())]
    Cache { dir: PathBuf, reason: String },
    #[error("wasm runtime: {0}")]
    Runtime(String),
}

/// Where a call ran out: " on a batch of N changes", or nothing outside `transform`.
fn on_batch(batch: usize) -> String {
    match batch {
        0 => String::new(),
        1 => " on a batch of 1 change".into(),
        n => format!(" on a batch of {n} changes"),
    }
}

impl TransformError {
    /// The module ran out of memory or time: a smaller batch may pass.
    pub fn is_exhaustion(&self) -> bool {
        matches!(
            self,
            TransformError::Deadline { .. } | TransformError::MemoryCap { .. }
        )
    }

    /// The instance may be half-updated and must be replaced (a trap of any kind).
    pub fn poisons_instance(&self) -> bool {
        matches!(
            self,
            TransformError::Deadline { .. }
                | TransformError::MemoryCap { .. }
                | TransformError::Trap { .. }
        )
    }
}

/// Where compiled modules are cached: `CDC_HOST_MODULE_CACHE`, else the config's
/// `[pipeline] module_cache`, else `$XDG_CACHE_HOME/cdc-host/modules` or
/// `$HOME/.cache/cdc-host/modules`; `"off"` disables the cache. The origin decides what
/// an unsafe directory means (see [`cache`]): an error when named, no cache by default.
pub fn cache_dir(configured: Option<&str>) -> Option<CacheDir> {
    let (chosen, origin) = match std::env::var("CDC_HOST_MODULE_CACHE") {
        Ok(dir) => (Some(dir), CacheOrigin::Env),
        Err(_) => (configured.map(str::to_owned), CacheOrigin::Config),
    };
    match chosen.as_deref() {
        Some("off") | Some("") => None,
        Some(dir) => Some(CacheDir {
            path: PathBuf::from(dir),
            origin,
        }),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| CacheDir {
                path: d.join("cdc-host").join("modules"),
                origin: CacheOrigin::Default,
            }),
    }
}

/// Compiles and links every configured module (in config order). The cache directory
/// is opened and checked once, and only when there is a module to load.
pub fn load_all(
    transforms: &[&TransformConfig],
    cache: Option<&CacheDir>,
) -> Result<Vec<Arc<Module>>, TransformError> {
    if transforms.is_empty() {
        return Ok(Vec::new());
    }
    let cache = match cache {
        Some(dir) => cache::ModuleCache::open(dir)?,
        None => None,
    };
    let fuel = transforms.iter().any(|t| t.fuel.is_some());
    let runtime = Runtime::new(fuel).map_err(|e| TransformError::Runtime(format!("{e:#}")))?;
    transforms
        .iter()
        .map(|t| Module::load(&runtime, t, cache.as_ref()).map(Arc::new))
        .collect()
}
