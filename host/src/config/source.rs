//! `[source]`: where changes come from, and the names Postgres will accept.

use std::fmt;

use serde::Deserialize;
use serde_spanned::Spanned;

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

impl Streaming {
    /// As the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Streaming::Off => "off",
            Streaming::On => "on",
            Streaming::Parallel => "parallel",
        }
    }
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
    /// A failover slot (Postgres ≥ 17): synchronised to standbys with
    /// `sync_replication_slots`, so it survives a promotion (default false).
    pub failover: bool,
    /// pgoutput protocol version, 1 to 4 (default 1).
    pub proto_version: Spanned<u32>,
    /// Ask pgoutput for binary values (not implemented yet: rejected by validation).
    pub binary: Spanned<bool>,
    /// Stream in-progress transactions (proto_version ≥ 2): held until their commit,
    /// spilled to `[pipeline] spool_dir` beyond their memory share.
    pub streaming: Spanned<Streaming>,
    /// Decode prepared transactions at PREPARE (proto_version ≥ 3, Postgres ≥ 15): they are
    /// held (spooled like streamed ones) and delivered at COMMIT PREPARED, never at
    /// PREPARE; ROLLBACK PREPARED delivers nothing. The slot never confirms past an
    /// unresolved PREPARE, so a crash in between loses nothing.
    pub two_phase: Spanned<bool>,
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
    /// `[source.snapshot]`: the initial snapshot and backfills.
    pub snapshot: super::SnapshotConfig,
}

/// The publication to read, and whether cdc-host may create it.
#[derive(Debug, Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with name, create, tables and publish_generated_columns"
)]
pub struct Publication {
    pub name: String,
    /// Create the publication when missing (default false).
    #[serde(default)]
    pub create: bool,
    /// Tables for a created publication (`schema.table`); absent = all tables.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Publish stored generated columns (Postgres ≥ 18: the publication option
    /// `publish_generated_columns = stored`); default false, as Postgres.
    #[serde(default)]
    pub publish_generated_columns: bool,
}

/// `publication = "name"` or a `[source.publication]` table: both spellings land here.
#[derive(Debug)]
pub(super) struct PublicationField(pub(super) Publication);

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
                    publish_generated_columns: false,
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

pub(super) fn validate_slot_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_publication_name(name: &str) -> Result<(), String> {
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
