//! `pipeline.toml`: the one file a user writes.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`), and every error names the
//! file, line, column and key, because a typo that is silently ignored is a pipeline
//! that silently does the wrong thing. `${VAR}` in the DSN is filled from the
//! environment after parsing, so secrets never appear in parse errors or logs.

//!
//! - [`source`] — `[source]`; [`pipeline`] — `[pipeline]`; [`admin`] — `[admin]`, `[log]`;
//!   [`raw`] — the file's shape as serde reads it; this module: loading, validation and the
//!   positioned [`ConfigError`]. `[[sinks]]` entries belong to the sinks (`cdc_sinks::config`),
//!   `[[transforms]]` entries to [`crate::transform`].

mod admin;
mod pipeline;
mod raw;
mod snapshot;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use crate::dsn::{ConnParams, DsnError};
pub use crate::transform::TransformConfig;
pub use admin::{AdminConfig, LogConfig, LogFormat};
pub use cdc_sinks::config::{interpolate, SinkConfig, SinkType};
pub use cdc_sinks::Format;
pub use pipeline::BatchConfig;
use raw::RawConfig;
pub use snapshot::{SnapshotConfig, SnapshotMode};
use source::{validate_publication_name, validate_slot_name};
pub use source::{OriginFilter, Publication, SourceConfig, Streaming};

/// The whole pipeline.
#[derive(Debug)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub pipeline: BatchConfig,
    pub sinks: Vec<Spanned<SinkConfig>>,
    /// `[admin]`: health, readiness and metrics endpoint (off when absent).
    pub admin: Option<AdminConfig>,
    /// `[log]`: log format.
    pub log: LogConfig,
    /// Wasm transforms, applied in this order.
    pub transforms: Vec<Spanned<TransformConfig>>,
}

/// A config problem, located in the file.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.path.display())?;
        } else {
            write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded, validated config, with the resolved connection parameters.
#[derive(Debug)]
pub struct Loaded {
    pub config: PipelineConfig,
    pub conn: ConnParams,
    pub publication: Publication,
}

impl Loaded {
    /// The `[[transforms]]` entries, in order.
    pub fn transform_configs(&self) -> Vec<&TransformConfig> {
        self.config.transforms.iter().map(|t| t.get_ref()).collect()
    }
}

impl PipelineConfig {
    /// The sinks named by a `dead_letter_sink` (of a sink or a transform): they receive
    /// failed batches only.
    pub fn dead_letter_targets(&self) -> std::collections::HashSet<&str> {
        let of_sinks = self.sinks.iter().map(|s| &s.get_ref().dead_letter_sink);
        let of_transforms = self
            .transforms
            .iter()
            .map(|t| &t.get_ref().dead_letter_sink);
        of_sinks
            .chain(of_transforms)
            .filter_map(|d| d.as_ref().map(|d| d.get_ref().as_str()))
            .collect()
    }

    /// Reads, parses and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let error = |line, column, message| ConfigError {
            path: path.to_owned(),
            line,
            column,
            key: None,
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| error(0, 0, format!("cannot read: {e}")))?;
        let src = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
            let (line, column) = line_col(prefix, valid);
            error(
                line,
                column,
                "not valid UTF-8: a pipeline file must be UTF-8 text".into(),
            )
        })?;
        Self::parse(path, &src)
    }

    /// Parses and validates config text (`path` is only used in messages).
    pub fn parse(path: &Path, src: &str) -> Result<Loaded, ConfigError> {
        let at = |span: std::ops::Range<usize>, key: Option<String>, message: String| {
            let (line, column) = line_col(src, span.start);
            ConfigError {
                path: path.to_owned(),
                line,
                column,
                key,
                message,
            }
        };
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = key_path_at(src, span.start);
            at(span, key, e.message().trim().to_owned())
        })?;
        let mut config = raw.into_config().ok_or_else(|| {
            at(
                0..0,
                None,
                "no [source] table: a pipeline needs [source] (dsn, slot, publication) and at least one [[sinks]]"
                    .into(),
            )
        })?;
        let s = &config.source;
        let dsn = interpolate(s.dsn.get_ref())
            .map_err(|m| at(s.dsn.span(), Some("source.dsn".into()), m))?;
        let conn: ConnParams = dsn
            .parse()
            .map_err(|e: DsnError| at(s.dsn.span(), Some("source.dsn".into()), e.to_string()))?;
        validate_slot_name(s.slot.get_ref())
            .map_err(|m| at(s.slot.span(), Some("source.slot".into()), m))?;
        let publication = s.publication.get_ref().clone();
        validate_publication_name(&publication.name)
            .map_err(|m| at(s.publication.span(), Some("source.publication".into()), m))?;
        if !(1..=4).contains(s.proto_version.get_ref()) {
            return Err(at(
                s.proto_version.span(),
                Some("source.proto_version".into()),
                "must be 1, 2, 3 or 4".into(),
            ));
        }
        let needs = match s.streaming.get_ref() {
            Streaming::Off => 1,
            Streaming::On => 2,
            Streaming::Parallel => 4,
        };
        if *s.proto_version.get_ref() < needs {
            return Err(at(
                s.streaming.span(),
                Some("source.streaming".into()),
                format!(
                    "streaming = \"{}\" needs proto_version = {needs} or higher (proto_version is {})",
                    s.streaming.get_ref().as_str(),
                    s.proto_version.get_ref()
                ),
            ));
        }
        if *s.two_phase.get_ref() && *s.proto_version.get_ref() < 3 {
            return Err(at(
                s.two_phase.span(),
                Some("source.two_phase".into()),
                format!(
                    "two_phase = true needs proto_version = 3 or higher (proto_version is {})",
                    s.proto_version.get_ref()
                ),
            ));
        }
        s.snapshot
            .validate()
            .map_err(|(span, key, m)| at(span, Some(key.into()), m))?;
        if config.sinks.is_empty() {
            return Err(at(
                0..0,
                Some("sinks".into()),
                "at least one [[sinks]] entry is required".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for sink in &config.sinks {
            let key_err = |(span, key, m): cdc_sinks::config::KeyError| {
                at(
                    span.unwrap_or_else(|| sink.span()),
                    Some(format!("sinks.{key}")),
                    m,
                )
            };
            sink.get_ref().check().map_err(key_err)?;
            let name = sink.get_ref().display_name();
            if !names.insert(name.clone()) {
                let defaulted = if sink.get_ref().name.is_none() {
                    " (a sink without a name is named after its type)"
                } else {
                    ""
                };
                return Err(at(
                    sink.span(),
                    Some("sinks.name".into()),
                    format!(
                        "duplicate sink name {name:?}{defaulted}: give each sink a unique name"
                    ),
                ));
            }
        }
        for sink in &config.sinks {
            if let Some(target) = &sink.get_ref().dead_letter_sink {
                let t = target.get_ref();
                let found = config
                    .sinks
                    .iter()
                    .find(|s| &s.get_ref().display_name() == t);
                let Some(found) = found else {
                    return Err(at(
                        target.span(),
                        Some("sinks.dead_letter_sink".into()),
                        format!("no sink is named {t:?}"),
                    ));
                };
                if std::ptr::eq(found, sink) {
                    return Err(at(
                        target.span(),
                        Some("sinks.dead_letter_sink".into()),
                        "a sink cannot be its own dead-letter sink".into(),
                    ));
                }
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let sink_names: Vec<String> = config
            .sinks
            .iter()
            .map(|s| s.get_ref().display_name())
            .collect();
        let mut transform_names = std::collections::HashSet::new();
        for t in &mut config.transforms {
            let span = t.span();
            let t = t.get_mut();
            t.validate(base, &sink_names).map_err(|(s, key, m)| {
                let s = if s == (0..0) { span.clone() } else { s };
                at(s, Some(format!("transforms.{key}")), m)
            })?;
            if !transform_names.insert(t.name.get_ref().clone()) {
                return Err(at(
                    t.name.span(),
                    Some("transforms.name".into()),
                    format!(
                        "duplicate transform name {:?}: give each transform a unique name",
                        t.name.get_ref()
                    ),
                ));
            }
        }
        // A dead-letter sink receives failed batches only: with nothing else left, every
        // change would count as delivered without going anywhere.
        let targets = config.dead_letter_targets();
        if let Some(first) = config.sinks.first() {
            if sink_names.iter().all(|n| targets.contains(n.as_str())) {
                return Err(at(
                    first.span(),
                    Some("sinks".into()),
                    "every sink is a dead-letter sink (named by a dead_letter_sink), and those \
                     receive failed batches only: add a sink that receives the stream"
                        .into(),
                ));
            }
        }
        // A dead-letter sink gets failed batches as they are, from its lane alone: routes and
        // a rejection policy of its own would be silently ignored.
        for sink in &config.sinks {
            let c = sink.get_ref();
            if !targets.contains(c.display_name().as_str()) {
                continue;
            }
            let own = [
                ("routes", c.routes.as_ref().map(|r| r.span())),
                ("on_reject", c.on_reject.as_ref().map(|r| r.span())),
                (
                    "dead_letter_sink",
                    c.dead_letter_sink.as_ref().map(|r| r.span()),
                ),
            ];
            if let Some((key, Some(span))) = own.into_iter().find(|(_, s)| s.is_some()) {
                return Err(at(
                    span,
                    Some(format!("sinks.{key}")),
                    format!(
                        "does not apply to {:?}: it is a dead-letter sink, which receives failed batches as they are",
                        c.display_name()
                    ),
                ));
            }
        }
        let b = &config.pipeline;
        if b.max_changes == 0 || b.max_inflight == 0 {
            return Err(at(
                0..0,
                Some("pipeline".into()),
                "max_changes and max_inflight must be at least 1".into(),
            ));
        }
        if b.max_inflight > MAX_INFLIGHT {
            return Err(at(
                0..0,
                Some("pipeline.max_inflight".into()),
                format!("at most {MAX_INFLIGHT} batches can be in flight"),
            ));
        }
        Ok(Loaded {
            config,
            conn,
            publication,
        })
    }
}

/// The most batches `[pipeline] max_inflight` may allow: queues are sized from it (one
/// verdict per batch per sink), and more than this buys nothing but memory.
pub const MAX_INFLIGHT: usize = 65_536;

/// 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The dotted key at `offset`: the enclosing `[table]` header plus the key on that line.
fn key_path_at(src: &str, offset: usize) -> Option<String> {
    let before = &src[..offset.min(src.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[line_start..]
        .find('\n')
        .map_or(src.len(), |i| line_start + i);
    let line = &src[line_start..line_end];
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    // The span may point at a table header itself (e.g. a missing field of that table).
    let header = src[..line_end].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(h), None) => Some(h),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests;
