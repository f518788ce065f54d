//! `pipeline.toml`: the one file a user writes.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`), and every error names the
//! file, line, column and key, because a typo that is silently ignored is a pipeline
//! that silently does the wrong thing. `${VAR}` in the DSN is filled from the
//! environment after parsing, so secrets never appear in parse errors or logs.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

pub use crate::admin::{AdminConfig, LogConfig, LogFormat};
use crate::dsn::{ConnParams, DsnError};
pub use crate::transform::TransformConfig;
pub use cdc_sinks::config::{interpolate, SinkConfig, SinkType};
pub use cdc_sinks::Format;

/// `source.streaming`: how in-progress transactions are streamed (pgoutput `streaming`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Streaming {
    /// Only committed transactions are sent (the default).
    #[default]
    Off,
    /// Large in-progress transactions are streamed (proto ≥ 2, Postgres ≥ 14).
    On,
    /// As `On`, with parallel apply markers (proto 4, Postgres ≥ 16).
    Parallel,
}

/// `source.origin`: which changes pgoutput sends by replication origin (Postgres ≥ 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginFilter {
    /// Every change, whatever its origin.
    Any,
    /// Only changes made locally (not replicated in) — avoids loops in bidirectional setups.
    None,
}

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

/// `[source]`: where changes come from.
#[derive(Debug)]
pub struct SourceConfig {
    /// libpq URL or key=value string; `${VAR}` is replaced from the environment.
    pub dsn: Spanned<String>,
    /// Replication slot name (`[a-z0-9_]`, at most 63 bytes).
    pub slot: Spanned<String>,
    /// The publication: a name, or a table `{ name, create, tables }`.
    pub publication: Spanned<Publication>,
    /// Create the slot when it does not exist (default true).
    pub create_slot: bool,
    /// pgoutput protocol version, 1 to 4 (default 1).
    pub proto_version: Spanned<u32>,
    /// Ask pgoutput for binary values (not implemented yet: rejected by validation).
    pub binary: Spanned<bool>,
    /// Stream in-progress transactions (not implemented yet: rejected by validation).
    pub streaming: Spanned<Streaming>,
    /// Replication-origin filter (Postgres ≥ 16).
    pub origin: Option<OriginFilter>,
    /// Receive `pg_logical_emit_message` messages (default true).
    pub messages: bool,
    /// Seconds between standby status updates (default 10; Postgres's wal_sender_timeout is 60).
    pub status_interval_secs: u64,
    /// Emit a heartbeat (`pg_logical_emit_message`, never delivered to sinks) this often, so
    /// the slot advances even where keepalives alone do not move it (default: off).
    pub heartbeat_secs: Option<u64>,
    /// Warn when the slot retains more WAL than this (default 1024 MiB).
    pub max_retained_wal_mb: u64,
}

/// The publication to read, and whether cdc-host may create it.
#[derive(Debug, Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with name, create and tables"
)]
pub struct Publication {
    pub name: String,
    /// Create the publication when missing (default false).
    #[serde(default)]
    pub create: bool,
    /// Tables for a created publication (`schema.table`); absent = all tables.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

/// `publication = "name"` or a `[source.publication]` table: both spellings land here.
#[derive(Debug)]
struct PublicationField(Publication);

impl<'de> Deserialize<'de> for PublicationField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PublicationField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a publication name, or a table with name, create and tables")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(PublicationField(Publication {
                    name: s.to_owned(),
                    create: false,
                    tables: None,
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                Publication::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(PublicationField)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[pipeline]`: batching and flow control.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [pipeline] table")]
pub struct BatchConfig {
    /// A batch closes at a transaction boundary once it holds this many changes; a
    /// larger transaction is split (default 4096).
    #[serde(deserialize_with = "at_least_one")]
    pub max_changes: usize,
    /// Batches in flight (sent, not yet acked) before the source stops reading (default 8).
    #[serde(deserialize_with = "at_least_one")]
    pub max_inflight: usize,
    /// Peak memory cdc-host should stay under, in MiB (default 256, at least 64). 32 MiB
    /// are set aside for the process itself (runtime, connections, code); of the rest, a
    /// quarter goes to encoded changes awaiting acknowledgement and a quarter to decoded
    /// batches queued between the stages (the defaults of the two byte limits below), and
    /// half is slack (allocator, encoding buffers). Memory of transform modules (their
    /// `memory_mb`) comes on top.
    #[serde(deserialize_with = "memory_budget")]
    pub memory_budget_mb: usize,
    /// Encoded bytes in flight before the source stops reading (default: a quarter of the
    /// memory budget's share for changes, 56 MiB).
    #[serde(default, deserialize_with = "some_at_least_one")]
    pub max_inflight_bytes: Option<usize>,
    /// A batch closes (or a transaction is split) once its decoded changes take about this
    /// much memory (default: a quarter of the memory budget's share for changes over the
    /// batches that can be queued, `max_inflight + 3`: 5.1 MiB). Bounds memory when rows
    /// are wide.
    #[serde(default, deserialize_with = "some_at_least_one")]
    pub max_batch_bytes: Option<usize>,
    /// On SIGTERM, how long to wait for in-flight batches to be acked (default 30 s).
    pub shutdown_grace_secs: u64,
    /// Where compiled transform modules are cached (default `~/.cache/cdc-host/modules`;
    /// `"off"` disables; `CDC_HOST_MODULE_CACHE` overrides).
    pub module_cache: Option<String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_changes: 4096,
            max_inflight: 8,
            memory_budget_mb: 256,
            max_inflight_bytes: None,
            max_batch_bytes: None,
            shutdown_grace_secs: 30,
            module_cache: None,
        }
    }
}

impl BatchConfig {
    /// Encoded bytes in flight before the source stops reading.
    pub fn max_inflight_bytes(&self) -> usize {
        self.max_inflight_bytes.unwrap_or(self.budget_bytes() / 4)
    }

    /// Decoded bytes at which a batch closes.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes.unwrap_or_else(|| {
            // Queued decoded batches: the source→pipeline channel, the one being built, the
            // one in the transform stage and the one being encoded.
            let queued = self.max_inflight.saturating_add(3);
            (self.budget_bytes() / 4 / queued).max(1)
        })
    }

    /// The budget's share for changes in flight: all of it but what the process itself needs.
    fn budget_bytes(&self) -> usize {
        self.memory_budget_mb
            .saturating_sub(PROCESS_BASE_MB)
            .saturating_mul(1 << 20)
    }
}

/// A table (`[admin]`, `[log]`): "expected a table" rather than the Rust type's name when
/// something else is given. Errors inside the table keep their own positions.
fn table<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

fn some_table<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    table(d).map(Some)
}

/// An array of tables: "expected [[sinks]] …" rather than serde's "a sequence" when, say,
/// `[sinks]` (one bracket) is written. Errors inside the entries keep their positions.
fn array<'de, D, T>(d: D, expecting: &'static str) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_seq(V(expecting, std::marker::PhantomData))
}

fn sinks_array<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Spanned<SinkConfig>>, D::Error> {
    array(
        d,
        "an array of tables: write [[sinks]] (double brackets) for each sink",
    )
}

fn transforms_array<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Spanned<TransformConfig>>, D::Error> {
    array(
        d,
        "an array of tables: write [[transforms]] (double brackets) for each transform",
    )
}

/// A count that must be at least 1; a 0 is reported at the value itself.
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Unsigned(0),
            &"at least 1",
        ));
    }
    Ok(n)
}

/// What the process needs besides changes in flight, in MiB: measured idle and draining
/// with tiny limits at 25–30 MiB resident (`bench/memory.sh`).
const PROCESS_BASE_MB: usize = 32;

/// The memory budget in MiB: at least 64 (the process itself needs about 30).
fn memory_budget<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n < 64 {
        return Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Unsigned(n as u64),
            &"at least 64 (MiB)",
        ));
    }
    Ok(n)
}

/// An optional byte count that, when given, is at least 1.
fn some_at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    at_least_one(d).map(Some)
}

fn yes() -> bool {
    true
}
fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn spanned_default<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}
fn gibibyte_in_mb() -> u64 {
    1024
}
fn ten() -> u64 {
    10
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
        if *s.proto_version.get_ref() != 1
            || *s.binary.get_ref()
            || *s.streaming.get_ref() != Streaming::Off
        {
            let span = if *s.binary.get_ref() {
                s.binary.span()
            } else if *s.streaming.get_ref() != Streaming::Off {
                s.streaming.span()
            } else {
                s.proto_version.span()
            };
            return Err(at(
                span,
                Some("source".into()),
                "only proto_version = 1 with text values and streaming = \"off\" is implemented so far".into(),
            ));
        }
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
        let b = &config.pipeline;
        if b.max_changes == 0 || b.max_inflight == 0 {
            return Err(at(
                0..0,
                Some("pipeline".into()),
                "max_changes and max_inflight must be at least 1".into(),
            ));
        }
        Ok(Loaded {
            config,
            conn,
            publication,
        })
    }
}

/// Mirrors `PipelineConfig` with the publication's two spellings; converted after parsing.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a pipeline file ([source], [[sinks]], …)"
)]
struct RawConfig {
    /// Optional here only so that its absence gets a clearer message than serde's.
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    pipeline: BatchConfig,
    #[serde(default, deserialize_with = "sinks_array")]
    sinks: Vec<Spanned<SinkConfig>>,
    #[serde(default, deserialize_with = "some_table")]
    admin: Option<AdminConfig>,
    #[serde(default, deserialize_with = "table")]
    log: LogConfig,
    #[serde(default, deserialize_with = "transforms_array")]
    transforms: Vec<Spanned<TransformConfig>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [source] table with dsn, slot and publication"
)]
struct RawSource {
    dsn: Spanned<String>,
    slot: Spanned<String>,
    publication: Spanned<PublicationField>,
    #[serde(default = "yes")]
    create_slot: bool,
    #[serde(default = "one")]
    proto_version: Spanned<u32>,
    #[serde(default = "spanned_default")]
    binary: Spanned<bool>,
    #[serde(default = "spanned_default")]
    streaming: Spanned<Streaming>,
    #[serde(default)]
    origin: Option<OriginFilter>,
    #[serde(default = "yes")]
    messages: bool,
    #[serde(default = "ten")]
    status_interval_secs: u64,
    #[serde(default)]
    heartbeat_secs: Option<u64>,
    #[serde(default = "gibibyte_in_mb")]
    max_retained_wal_mb: u64,
}

impl RawConfig {
    /// `None` when there is no `[source]`.
    fn into_config(self) -> Option<PipelineConfig> {
        let s = self.source?;
        let span = s.publication.span();
        Some(PipelineConfig {
            source: SourceConfig {
                dsn: s.dsn,
                slot: s.slot,
                publication: Spanned::new(span, s.publication.into_inner().0),
                create_slot: s.create_slot,
                proto_version: s.proto_version,
                binary: s.binary,
                streaming: s.streaming,
                origin: s.origin,
                messages: s.messages,
                status_interval_secs: s.status_interval_secs,
                heartbeat_secs: s.heartbeat_secs,
                max_retained_wal_mb: s.max_retained_wal_mb,
            },
            pipeline: self.pipeline,
            sinks: self.sinks,
            admin: self.admin,
            log: self.log,
            transforms: self.transforms,
        })
    }
}

fn validate_slot_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "invalid slot name {name:?}: use 1 to 63 lower-case letters, digits and underscores"
        ));
    }
    Ok(())
}

/// Publications are SQL identifiers (cdc-host quotes them, so any characters work), but
/// Postgres truncates names longer than 63 bytes and cannot store control characters.
fn validate_publication_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "publication name is {} bytes long: Postgres names are at most 63 bytes (longer ones are truncated)",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "invalid publication name {name:?}: control characters are not allowed"
        ));
    }
    Ok(())
}

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
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Loaded, ConfigError> {
        PipelineConfig::parse(Path::new("p.toml"), src)
    }

    const GOOD: &str = r#"
[source]
dsn = "postgres://cdc@127.0.0.1:5432/app?sslmode=prefer"
slot = "cdc_host"
publication = "cdc_pub"
[[sinks]]
type = "stdout"
format = "json"
"#;

    #[test]
    fn minimal_contract_parses() {
        let l = parse(GOOD).unwrap();
        assert_eq!(l.config.source.slot.get_ref(), "cdc_host");
        assert_eq!(l.publication.name, "cdc_pub");
        assert!(!l.publication.create);
        assert!(l.config.source.create_slot);
        assert_eq!(l.conn.dbname, "app");
        assert_eq!(l.config.sinks.len(), 1);
    }

    #[test]
    fn the_memory_budget_sets_the_byte_limits() {
        let b = parse(GOOD).unwrap().config.pipeline;
        assert_eq!(b.memory_budget_mb, 256);
        assert_eq!(b.max_inflight_bytes(), 56 << 20);
        assert_eq!(b.max_batch_bytes(), (56 << 20) / 11);
        let b = parse(&format!(
            "{GOOD}[pipeline]\nmemory_budget_mb = 96\nmax_inflight = 1\n"
        ))
        .unwrap()
        .config
        .pipeline;
        assert_eq!(b.max_inflight_bytes(), 16 << 20);
        assert_eq!(b.max_batch_bytes(), (16 << 20) / 4);
        let b = parse(&format!(
            "{GOOD}[pipeline]\nmax_inflight_bytes = 1000\nmax_batch_bytes = 100\n"
        ))
        .unwrap()
        .config
        .pipeline;
        assert_eq!((b.max_inflight_bytes(), b.max_batch_bytes()), (1000, 100));
        let e = err(&format!("{GOOD}[pipeline]\nmemory_budget_mb = 48\n"));
        assert!(
            e.contains("p.toml:10:20: pipeline.memory_budget_mb:") && e.contains("at least 64"),
            "{e}"
        );
        let e = err(&format!("{GOOD}[pipeline]\nmax_batch_bytes = 0\n"));
        assert!(
            e.contains("p.toml:10:19:") && e.contains("at least 1"),
            "{e}"
        );
    }

    #[test]
    fn publication_table_form() {
        let src = GOOD.replace(
            "publication = \"cdc_pub\"",
            "[source.publication]\nname = \"p\"\ncreate = true\ntables = [\"public.orders\"]",
        );
        let l = parse(&src).unwrap();
        assert!(l.publication.create);
        assert_eq!(
            l.publication.tables.as_deref(),
            Some(&["public.orders".to_owned()][..])
        );
    }

    fn err(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let e = err(&GOOD.replace("slot = \"cdc_host\"", "slot = \"cdc_host\"\nslott = 1"));
        assert!(
            e.starts_with("p.toml:5:1: source.slott: unknown field `slott`"),
            "{e}"
        );
        let e = err(&GOOD.replace("format = \"json\"", "format = \"json\"\ncolour = 1"));
        assert!(
            e.contains("p.toml:9:1: sinks.colour: unknown field `colour`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_values() {
        let e = err(&GOOD.replace("format = \"json\"", "format = \"xml\""));
        assert!(
            e.contains("p.toml:8:10: sinks.format:") && e.contains("unknown variant `xml`"),
            "{e}"
        );
        let e = err(&GOOD.replace("slot = \"cdc_host\"", "slot = \"Bad-Slot\""));
        assert!(
            e.starts_with("p.toml:4:8: source.slot: invalid slot name"),
            "{e}"
        );
        let e = err(&GOOD.replace("?sslmode=prefer", "?sslmode=sometimes"));
        assert!(
            e.starts_with("p.toml:3:7: source.dsn: invalid sslmode"),
            "{e}"
        );
        let e = err(&GOOD.replace("slot = \"cdc_host\"\n", ""));
        assert!(
            e.starts_with("p.toml:2:1: source: missing field `slot`"),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[[sinks]]\ntype = \"stdout\"\n"));
        assert!(e.contains("duplicate sink name \"stdout\""), "{e}");
    }

    #[test]
    fn env_interpolation() {
        std::env::set_var("CDC_TEST_PW_1", "s3cret");
        assert_eq!(
            interpolate("a:${CDC_TEST_PW_1}@b $$ $x").unwrap(),
            "a:s3cret@b $ $x"
        );
        let e = err(&GOOD.replace("cdc@", "cdc:${CDC_TEST_MISSING_VAR}@"));
        assert!(
            e.contains("source.dsn: environment variable CDC_TEST_MISSING_VAR is not set"),
            "{e}"
        );
    }
}
