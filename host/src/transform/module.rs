//! One transform module: compiled once (or loaded from the on-disk cache), linked once
//! (`InstancePre`), instantiated with its limits, called once per batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::batch::Changes;
use super::cache::{compile_cached, CodeSource, ModuleCache};
use super::config::OnFailure;
use super::config::TransformConfig;
use super::convert::compat;
use super::limits::{LogLimiter, MemoryCap};
use super::runtime::{
    batch02, json02, v01, v02, wit, HostState, Runtime, BATCH_TRANSFORMER_EXPORT, EPOCH_TICK,
    JSON_TRANSFORMER_EXPORT, TRANSFORMER_EXPORT, TRANSFORMER_EXPORT_V01,
};
use wasmtime::component::Resource;

/// A linked module of either WIT version.
enum Pre {
    V02(v02::TransformPre<HostState>),
    V01(v01::TransformPre<HostState>),
    Json(json02::TransformJsonPre<HostState>),
    Batch(batch02::TransformBatchPre<HostState>),
}

/// An instance's exports, of its WIT version.
enum Bindings {
    V02(v02::Transform),
    V01(v01::Transform),
    Json(json02::TransformJson),
    Batch(batch02::TransformBatch),
}
use super::TransformError;

/// A module ready to instantiate, with everything of its config the chain needs.
pub struct Module {
    pub name: Arc<str>,
    /// What a batch this module fails on becomes.
    pub policy: OnFailure,
    pre: Pre,
    runtime: Arc<Runtime>,
    timeout: Duration,
    memory_bytes: usize,
    fuel: Option<u64>,
    config: Vec<(String, String)>,
    /// Shared by every instance: re-instantiating does not reset the budget.
    log: Arc<LogLimiter>,
    pub source: CodeSource,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("memory_bytes", &self.memory_bytes)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Module {
    /// Whether the module takes its batches as JSON (`wit/json.wit`).
    pub fn is_json(&self) -> bool {
        matches!(self.pre, Pre::Json(_))
    }

    /// Whether the module reads and edits its batches through the host (`wit/batch.wit`).
    pub fn is_batch(&self) -> bool {
        matches!(self.pre, Pre::Batch(_))
    }

    /// The module's memory cap in bytes.
    pub fn memory_cap(&self) -> usize {
        self.memory_bytes
    }

    /// Compiles (or loads from `cache`) and links the module of `cfg`.
    pub(crate) fn load(
        runtime: &Arc<Runtime>,
        cfg: &TransformConfig,
        cache: Option<&ModuleCache>,
    ) -> Result<Self, TransformError> {
        let name: Arc<str> = cfg.name.get_ref().as_str().into();
        let fail = |reason: String| TransformError::Load {
            module: name.to_string(),
            path: cfg.path.clone(),
            reason,
        };
        let policy = OnFailure::of(cfg).map_err(fail)?;
        let bytes = std::fs::read(&cfg.path).map_err(|e| fail(format!("cannot read: {e}")))?;
        check_is_component(&bytes).map_err(fail)?;
        let (component, source) = compile_cached(runtime, &bytes, cache).map_err(fail)?;
        let version = check_exports(runtime, &component).map_err(fail)?;
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(import_error(&e)))?;
        let pre = match version {
            WitVersion::V02 => v02::TransformPre::new(instance_pre).map(Pre::V02),
            WitVersion::V01 => v01::TransformPre::new(instance_pre).map(Pre::V01),
            WitVersion::Json02 => json02::TransformJsonPre::new(instance_pre).map(Pre::Json),
            WitVersion::Batch02 => batch02::TransformBatchPre::new(instance_pre).map(Pre::Batch),
        }
        .map_err(|e| fail(format!("{e:#}")))?;
        tracing::info!(module = %name, path = %cfg.path.display(), wit = version.as_str(), cache = match source { CodeSource::Cache => "hit", CodeSource::Compiled => "miss" }, "transform module ready");
        if version == WitVersion::V01 {
            tracing::info!(module = %name, "built against cdc:pipeline@0.1.0: reads reach it as inserts with a read id; rebuild it against wit/ (0.2.0) to see op read");
        }
        Ok(Module {
            log: Arc::new(LogLimiter::new(Arc::clone(&name))),
            name,
            policy,
            pre,
            runtime: Arc::clone(runtime),
            timeout: Duration::from_millis(*cfg.timeout_ms.get_ref()),
            memory_bytes: (*cfg.memory_mb.get_ref() as usize) << 20,
            fuel: cfg.fuel.as_ref().map(|f| *f.get_ref()),
            config: cfg.init_config(),
            source,
        })
    }

    /// A fresh instance, `init` called with the module's config.
    pub fn instantiate(self: &Arc<Self>) -> Result<Instance, TransformError> {
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(
                Arc::clone(&self.name),
                MemoryCap::new(self.memory_bytes),
                Arc::clone(&self.log),
            ),
        );
        store.limiter(|s| &mut s.limits);
        let mut instance = Instance {
            module: Arc::clone(self),
            store,
            bindings: None,
        };
        instance.arm()?;
        let bindings = match &self.pre {
            Pre::V02(pre) => pre.instantiate(&mut instance.store).map(Bindings::V02),
            Pre::V01(pre) => pre.instantiate(&mut instance.store).map(Bindings::V01),
            Pre::Json(pre) => pre.instantiate(&mut instance.store).map(Bindings::Json),
            Pre::Batch(pre) => pre.instantiate(&mut instance.store).map(Bindings::Batch),
        }
        .map_err(|e| instance.call_error("instantiate", e))?;
        instance.arm()?;
        let result = match &bindings {
            Bindings::V02(b) => b
                .cdc_pipeline_transformer()
                .call_init(&mut instance.store, &self.config),
            Bindings::V01(b) => b
                .cdc_pipeline_transformer()
                .call_init(&mut instance.store, &self.config),
            Bindings::Json(b) => b
                .cdc_pipeline_json_transformer()
                .call_init(&mut instance.store, &self.config),
            Bindings::Batch(b) => b
                .cdc_pipeline_batch_transformer()
                .call_init(&mut instance.store, &self.config),
        }
        .map_err(|e| instance.call_error("init", e))?;
        result.map_err(|message| TransformError::InitRejected {
            module: self.name.to_string(),
            message,
        })?;
        instance.bindings = Some(bindings);
        Ok(instance)
    }
}

/// A live instance. After a trap it must not be called again (the module's state may
/// be half-updated); [`super::Chain`] drops it and instantiates afresh.
pub struct Instance {
    module: Arc<Module>,
    store: Store<HostState>,
    bindings: Option<Bindings>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("module", &self.module.name)
            .finish()
    }
}

impl Instance {
    /// Sets the deadline (and fuel) for the next call.
    fn arm(&mut self) -> Result<(), TransformError> {
        let ticks = self
            .module
            .timeout
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64;
        // +1: the tick in progress may be almost over.
        self.store.set_epoch_deadline(ticks + 1);
        self.store.epoch_deadline_trap();
        self.store.data_mut().limits.reset();
        if self.module.runtime.fuel_enabled() {
            let fuel = self.module.fuel.unwrap_or(u64::MAX);
            self.store
                .set_fuel(fuel)
                .map_err(|e| self.call_error("set fuel", e))?;
        }
        Ok(())
    }

    /// One batch through the module.
    pub fn transform(
        &mut self,
        changes: Vec<wit::Change>,
    ) -> Result<Vec<wit::Change>, TransformError> {
        self.arm()?;
        let Some(bindings) = &self.bindings else {
            return Err(TransformError::Trap {
                module: self.module.name.to_string(),
                reason: "instance is not initialised".into(),
            });
        };
        let started = Instant::now();
        let n = changes.len();
        let out = match bindings {
            Bindings::V02(b) => b
                .cdc_pipeline_transformer()
                .call_transform(&mut self.store, &changes),
            Bindings::V01(b) => {
                let old: Vec<_> = changes.into_iter().map(compat::down).collect();
                b.cdc_pipeline_transformer()
                    .call_transform(&mut self.store, &old)
                    .map(|r| r.map(|out| out.into_iter().map(compat::up).collect()))
            }
            Bindings::Json(_) | Bindings::Batch(_) => {
                return Err(TransformError::Trap {
                    module: self.module.name.to_string(),
                    reason: "a JSON- or batch-world module called with records".into(),
                })
            }
        };
        self.module.log.flush();
        tracing::trace!(module = %self.module.name, changes = n, micros = started.elapsed().as_micros() as u64, memory_bytes = self.store.data().limits.size(), "transform call");
        match out {
            Ok(Ok(changes)) => Ok(changes),
            Ok(Err(message)) => Err(TransformError::Returned {
                module: self.module.name.to_string(),
                message,
            }),
            Err(e) => Err(self.call_error_batch("transform", e, n)),
        }
    }

    /// One batch, as a JSON document (`wit/json.wit`), through a `transform-json` module.
    pub fn transform_json(&mut self, batch: &[u8], n: usize) -> Result<Vec<u8>, TransformError> {
        self.arm()?;
        let Some(Bindings::Json(b)) = &self.bindings else {
            return Err(TransformError::Trap {
                module: self.module.name.to_string(),
                reason: "instance is not initialised (or not a JSON-world module)".into(),
            });
        };
        let started = Instant::now();
        let out = b
            .cdc_pipeline_json_transformer()
            .call_transform(&mut self.store, batch);
        self.module.log.flush();
        tracing::trace!(module = %self.module.name, changes = n, bytes = batch.len(), micros = started.elapsed().as_micros() as u64, memory_bytes = self.store.data().limits.size(), "transform call");
        match out {
            Ok(Ok(json)) => Ok(json),
            Ok(Err(message)) => Err(TransformError::Returned {
                module: self.module.name.to_string(),
                message,
            }),
            Err(e) => Err(self.call_error_batch("transform", e, n)),
        }
    }

    /// One batch through a `transform-batch` module: lent to the guest as a resource,
    /// taken back after the call. The batch comes back with the result: edited when
    /// the guest returned `ok` (see [`Changes::into_edited`]), as it went in otherwise.
    pub fn transform_batch(&mut self, batch: Changes) -> (Changes, Result<(), TransformError>) {
        let n = batch.len();
        let name = Arc::clone(&self.module.name);
        let trap = move |reason: String| TransformError::Trap {
            module: name.to_string(),
            reason,
        };
        if !matches!(self.bindings, Some(Bindings::Batch(_))) {
            let e = trap("instance is not initialised (or not a batch-world module)".into());
            return (batch, Err(e));
        }
        if let Err(e) = self.arm() {
            return (batch, Err(e));
        }
        let own = match self.store.data_mut().table.push(batch) {
            Ok(r) => r,
            // The table holds one batch at a time; it cannot be full.
            Err(e) => {
                return (
                    Changes::new(Vec::new()),
                    Err(trap(format!("resource table: {e}"))),
                )
            }
        };
        let started = Instant::now();
        let Some(Bindings::Batch(b)) = &self.bindings else {
            unreachable!("checked above")
        };
        let out = b
            .cdc_pipeline_batch_transformer()
            .call_transform(&mut self.store, Resource::new_borrow(own.rep()));
        self.module.log.flush();
        tracing::trace!(module = %self.module.name, changes = n, micros = started.elapsed().as_micros() as u64, memory_bytes = self.store.data().limits.size(), "transform call");
        let batch = match self.store.data_mut().table.delete(own) {
            Ok(b) => b,
            Err(e) => {
                return (
                    Changes::new(Vec::new()),
                    Err(trap(format!("resource table: {e}"))),
                )
            }
        };
        let result = match out {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(TransformError::Returned {
                module: self.module.name.to_string(),
                message,
            }),
            Err(e) => Err(self.call_error_batch("transform", e, n)),
        };
        (batch, result)
    }

    /// The origins `host.origin` answers from during the next calls.
    pub(crate) fn set_origins(&mut self, origins: super::origins::Origins) {
        self.store.data_mut().origins = origins;
    }

    /// The size of the instance's linear memory (it never shrinks).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.size()
    }

    /// Names a failed call: deadline, fuel, memory cap (the store's limiter refused a
    /// growth during this call), or another trap.
    fn call_error(&self, what: &str, e: wasmtime::Error) -> TransformError {
        self.call_error_batch(what, e, 0)
    }

    /// [`Instance::call_error`] for a call with `batch` changes.
    fn call_error_batch(&self, what: &str, e: wasmtime::Error, batch: usize) -> TransformError {
        let module = self.module.name.to_string();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => TransformError::Deadline {
                module,
                timeout_ms: self.module.timeout.as_millis() as u64,
                batch,
            },
            Some(Trap::OutOfFuel) => TransformError::Trap {
                module,
                reason: format!("{what}: out of fuel"),
            },
            _ if self.store.data().limits.refused() => TransformError::MemoryCap {
                module,
                limit_mb: self.module.memory_bytes >> 20,
                batch,
            },
            _ => TransformError::Trap {
                module,
                reason: format!("{what}: {e:#}"),
            },
        }
    }
}

/// A core module or random bytes get a sentence a user can act on, not a parser error.
fn check_is_component(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(0..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => Err(
            "is a core Wasm module, not a component: build it for wasm32-wasip2 (Rust), or \
             turn it into a component with `wasm-tools component new` and the WASI adapter"
                .into(),
        ),
        _ => Err("is not a Wasm component (no \\0asm header)".into()),
    }
}

/// The WIT version a module was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WitVersion {
    V02,
    V01,
    /// 0.2.0's `transform-json` world.
    Json02,
    /// 0.2.0's `transform-batch` world.
    Batch02,
}

impl WitVersion {
    fn as_str(self) -> &'static str {
        match self {
            WitVersion::V02 => "0.2.0",
            WitVersion::V01 => "0.1.0",
            WitVersion::Json02 => "0.2.0 (json)",
            WitVersion::Batch02 => "0.2.0 (batch)",
        }
    }
}

/// The module must export the transformer interface of a WIT version we implement.
fn check_exports(runtime: &Runtime, component: &Component) -> Result<WitVersion, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|e| e == TRANSFORMER_EXPORT) {
        return Ok(WitVersion::V02);
    }
    if exports.iter().any(|e| e == JSON_TRANSFORMER_EXPORT) {
        return Ok(WitVersion::Json02);
    }
    if exports.iter().any(|e| e == BATCH_TRANSFORMER_EXPORT) {
        return Ok(WitVersion::Batch02);
    }
    if exports.iter().any(|e| e == TRANSFORMER_EXPORT_V01) {
        return Ok(WitVersion::V01);
    }
    let hint = match exports
        .iter()
        .find(|e| {
            e.starts_with("cdc:pipeline/transformer@")
                || e.starts_with("cdc:pipeline/json-transformer@")
                || e.starts_with("cdc:pipeline/batch-transformer@")
        })
    {
        Some(other) => format!(
            "it was built against {other}, which this cdc-host does not implement (it implements {TRANSFORMER_EXPORT}, {BATCH_TRANSFORMER_EXPORT}, {JSON_TRANSFORMER_EXPORT} and {TRANSFORMER_EXPORT_V01}): rebuild it against wit/ of this release (cdc:pipeline@0.2.0)"
        ),
        None if exports.is_empty() => "it exports nothing".into(),
        None => format!("it exports {}", exports.join(", ")),
    };
    Err(format!(
        "does not implement the transform world (no export {TRANSFORMER_EXPORT}): {hint}"
    ))
}

/// Import mismatches name the interface the module wants that we do not provide.
fn import_error(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("cdc:pipeline/") {
        format!("imports a cdc:pipeline interface this host does not provide (built against another WIT version?): {text}")
    } else if text.contains("wasi:") {
        format!("imports WASI functions the host does not offer (only wasi:cli stdio, clocks and random are useful here; no filesystem, network or environment): {text}")
    } else {
        format!("cannot be linked: {text}")
    }
}
