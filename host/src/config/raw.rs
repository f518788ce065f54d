//! The file as serde reads it: the shape of every table, with the small deserializers that
//! turn serde's type names into messages a user understands ("expected a table").

use std::fmt;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::source::{OriginFilter, PublicationField, SourceConfig, Streaming};
use super::{AdminConfig, BatchConfig, LogConfig, PipelineConfig, SinkConfig, TransformConfig};

/// Mirrors `PipelineConfig` with the publication's two spellings; converted after parsing.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a pipeline file ([source], [[sinks]], …)"
)]
pub(super) struct RawConfig {
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
    #[serde(default)]
    failover: bool,
    #[serde(default = "one")]
    proto_version: Spanned<u32>,
    #[serde(default = "spanned_default")]
    binary: Spanned<bool>,
    #[serde(default = "spanned_default")]
    streaming: Spanned<Streaming>,
    #[serde(default = "spanned_default")]
    two_phase: Spanned<bool>,
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
    #[serde(default, deserialize_with = "table")]
    snapshot: super::SnapshotConfig,
}

impl RawConfig {
    /// `None` when there is no `[source]`.
    pub(super) fn into_config(self) -> Option<PipelineConfig> {
        let s = self.source?;
        let span = s.publication.span();
        Some(PipelineConfig {
            source: SourceConfig {
                dsn: s.dsn,
                slot: s.slot,
                publication: Spanned::new(span, s.publication.into_inner().0),
                create_slot: s.create_slot,
                failover: s.failover,
                proto_version: s.proto_version,
                binary: s.binary,
                streaming: s.streaming,
                two_phase: s.two_phase,
                origin: s.origin,
                messages: s.messages,
                status_interval_secs: s.status_interval_secs,
                heartbeat_secs: s.heartbeat_secs,
                max_retained_wal_mb: s.max_retained_wal_mb,
                snapshot: s.snapshot,
            },
            pipeline: self.pipeline,
            sinks: self.sinks,
            admin: self.admin,
            log: self.log,
            transforms: self.transforms,
        })
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
