//! `[[transforms]]`: the modules a pipeline runs, in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_spanned::Spanned;

use cdc_sinks::Policy;

/// One `[[transforms]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[transforms]] table")]
pub struct TransformConfig {
    /// Unique; tags the module's log lines and metrics.
    pub name: Spanned<String>,
    /// Path to the component (`.wasm`), relative to the pipeline file's directory.
    pub module: Spanned<PathBuf>,
    /// Wall-clock limit per call (init, or one batch), milliseconds (default 1000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    /// Linear memory cap, MiB (default 64).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: Spanned<u64>,
    /// Optional instruction budget per call (wasmtime fuel); unset = unmetered.
    #[serde(default)]
    pub fuel: Option<Spanned<u64>>,
    /// What happens to a batch the module fails on (trap, deadline, memory cap, returned
    /// error): `fail` (default), `skip` (drop its changes, counted and logged) or
    /// `dead-letter` (send its original changes to `dead_letter_sink`).
    #[serde(default)]
    pub on_error: Policy,
    /// The `[[sinks]]` entry that receives failed batches with `on_error = "dead-letter"`.
    #[serde(default)]
    pub dead_letter_sink: Option<Spanned<String>>,
    /// Handed to the module's `init` as key/value strings.
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<toml::Value>>,
    /// `module` resolved against the pipeline file's directory (set by validation).
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}
fn default_memory_mb() -> Spanned<u64> {
    Spanned::new(0..0, 64)
}

/// A config error: span, key (under `transforms.`), message.
pub type KeyError = (std::ops::Range<usize>, String, String);

impl TransformConfig {
    /// An entry built in code rather than read from a file (the `transform` command,
    /// benchmarks): `on_error = "fail"`, no fuel.
    pub fn ad_hoc(
        name: &str,
        module: &Path,
        timeout_ms: u64,
        memory_mb: u64,
        config: Vec<(String, String)>,
    ) -> Self {
        let at = |v| Spanned::new(0..0, v);
        TransformConfig {
            name: at(name.to_owned()),
            module: Spanned::new(0..0, module.to_owned()),
            timeout_ms: Spanned::new(0..0, timeout_ms),
            memory_mb: Spanned::new(0..0, memory_mb),
            fuel: None,
            on_error: Policy::Fail,
            dead_letter_sink: None,
            config: config
                .into_iter()
                .map(|(k, v)| (k, Spanned::new(0..0, toml::Value::String(v))))
                .collect(),
            path: module.to_owned(),
        }
    }

    /// Checks one entry and resolves its module path. `sinks`: the configured sink names.
    pub fn validate(&mut self, base: &Path, sinks: &[String]) -> Result<(), KeyError> {
        let name = self.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err((
                self.name.span(),
                "name".into(),
                format!("invalid name {name:?} (use letters, digits, '-', '_', '.')"),
            ));
        }
        let module = self.module.get_ref();
        self.path = if module.is_absolute() {
            module.clone()
        } else {
            base.join(module)
        };
        if !self.path.is_file() {
            return Err((
                self.module.span(),
                "module".into(),
                format!("no such file: {}", self.path.display()),
            ));
        }
        if *self.timeout_ms.get_ref() == 0 {
            return Err((
                self.timeout_ms.span(),
                "timeout_ms".into(),
                "must be at least 1".into(),
            ));
        }
        let mb = *self.memory_mb.get_ref();
        if mb == 0 || mb > 4096 {
            return Err((
                self.memory_mb.span(),
                "memory_mb".into(),
                "must be between 1 and 4096".into(),
            ));
        }
        if let Some(f) = &self.fuel {
            if *f.get_ref() == 0 {
                return Err((f.span(), "fuel".into(), "must be at least 1".into()));
            }
        }
        match (&self.on_error, &self.dead_letter_sink) {
            (Policy::DeadLetter, None) => {
                return Err((
                    self.name.span(),
                    "dead_letter_sink".into(),
                    "on_error = \"dead-letter\" needs dead_letter_sink = \"<sink name>\"".into(),
                ))
            }
            (Policy::DeadLetter, Some(d)) if !sinks.contains(d.get_ref()) => {
                return Err((
                    d.span(),
                    "dead_letter_sink".into(),
                    format!("no sink is named {:?}", d.get_ref()),
                ))
            }
            (Policy::Fail | Policy::Skip, Some(d)) => {
                return Err((
                    d.span(),
                    "dead_letter_sink".into(),
                    "only used with on_error = \"dead-letter\"".into(),
                ))
            }
            _ => {}
        }
        for (k, v) in &self.config {
            config_value(v.get_ref())
                .map_err(|m| (v.span(), format!("config.{k}"), m.to_string()))?;
        }
        Ok(())
    }

    /// The `config` table as the strings `init` receives (arrays joined with commas).
    pub fn init_config(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), config_value(v.get_ref()).unwrap_or_default()))
            .collect()
    }
}

fn config_value(v: &toml::Value) -> Result<String, &'static str> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    Err("arrays may hold strings, numbers and booleans only")
                }
                other => config_value(other),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        toml::Value::Table(_) => {
            return Err(
                "nested tables are not supported: use strings (modules get key/value strings)",
            )
        }
    })
}

/// What a batch a module fails on becomes: the configured [`Policy`] (`on_error`, shared
/// with the sinks' `on_reject`) resolved with its `dead_letter_sink`, so a dead-letter
/// action without a sink cannot exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    Fail,
    Skip,
    DeadLetter(Arc<str>),
}

impl OnFailure {
    /// `on_error` and `dead_letter_sink` of an entry (validation already paired them;
    /// an entry built in code that did not gets an error, not a made-up sink name).
    pub fn of(cfg: &TransformConfig) -> Result<Self, String> {
        match (cfg.on_error, &cfg.dead_letter_sink) {
            (Policy::Fail, _) => Ok(OnFailure::Fail),
            (Policy::Skip, _) => Ok(OnFailure::Skip),
            (Policy::DeadLetter, Some(sink)) => {
                Ok(OnFailure::DeadLetter(sink.get_ref().as_str().into()))
            }
            (Policy::DeadLetter, None) => {
                Err("on_error = \"dead-letter\" needs dead_letter_sink = \"<sink name>\"".into())
            }
        }
    }
}
