//! The Postgres source: connection, slot and publication management, and the stream.
//!
//! - [`tls`], [`wire`]: our own replication transport (tokio + postgres-protocol + rustls),
//!   connecting with the [`crate::dsn::ConnParams`] the config parsed.
//! - [`control`]: an ordinary SQL session (tokio-postgres) for checks and catalog look-ups.
//! - [`options`]: `START_REPLICATION` options for pgoutput protocols 1–4.
//! - [`mapping`], [`types`]: decoded tuples → typed rows.
//! - [`assemble`]: decoded messages → batches of whole transactions (pure, no socket).
//! - [`stream`]: the loop that reads the socket, feeds the assembler, hands batches over
//!   and reports acknowledged positions.
//! - [`snapshot`]: existing rows (initial snapshot, backfills), copied in chunks on their
//!   own connections and reconciled with the stream by watermarks.

pub mod assemble;
pub mod control;
pub mod error;
pub mod mapping;
pub mod options;
pub mod snapshot;
pub mod spool;
pub mod stream;
pub mod tls;
pub mod types;
pub mod wire;

use tokio::time::Instant;

/// Re-exported for the pipeline, which produces it (defined in a leaf both import).
pub use crate::progress::Progress;
pub use assemble::Batch;
pub use error::SourceError;
pub use options::StartOptions;
pub use stream::{Replicator, StreamSettings};

use crate::config::{Publication, SnapshotMode, SourceConfig};
use crate::dsn::ConnParams;
use crate::lsn::Lsn;
use assemble::Assembler;
use control::Control;
use error::Context;
use wire::{quote_ident, WireConn};

/// Connects, checks the server, ensures publication and slot, and starts streaming from
/// the slot's confirmed position.
///
/// `src` is `[source]`, `publication` its validated publication, `conn` the parsed DSN
/// (after `${VAR}` interpolation) and `settings` the loop's tunables
/// ([`StreamSettings::new`] from `[source]` and `[pipeline]`). The source reads the config;
/// the config knows nothing of the source.
pub async fn open(
    src: &SourceConfig,
    publication: &Publication,
    conn: &ConnParams,
    settings: StreamSettings,
    snapshot: Option<snapshot::Link>,
) -> Result<Replicator, SourceError> {
    let create_publication = publication.create;
    let tables = publication.tables.as_deref();
    let generated = publication.publish_generated_columns;
    let slot = src.slot.get_ref().as_str();
    let publication = publication.name.as_str();
    let ctx = Context {
        user: &conn.user,
        slot,
        publication,
    };

    let mut control = Control::connect(conn, &ctx).await?;
    control.check_wal_level().await?;
    control.check_encoding().await?;
    let major = control.server_major().await?;
    let opts = StartOptions::from_config(src, publication);
    opts.validate(major)
        .map_err(|e| SourceError::Setup(e.to_string()))?;
    if opts.binary && control.publication_exists(publication).await? {
        check_binary_columns(&control, publication, major).await?;
    }
    // Before the slot is touched: a spool directory we cannot use stops the start here.
    let spool = match &settings.spool {
        Some((dir, mem)) => Some(spool::Spool::open(dir, slot, *mem)?),
        None => None,
    };

    if src.failover && major < 17 {
        return Err(SourceError::Setup(format!(
            "[source] failover = true needs PostgreSQL 17 or later, and this server is {major}: remove the setting. Before 17 a logical slot does not survive a failover: after a promotion, create a new slot and re-snapshot (see README, Failover)"
        )));
    }
    if generated && major < 18 {
        return Err(SourceError::Setup(format!(
            "[source.publication] publish_generated_columns = true needs PostgreSQL 18 or later, and this server is {major}: remove the setting (generated columns are then not published), or upgrade the server"
        )));
    }
    let exists = control.publication_exists(publication).await?;
    if exists && generated && !control.publishes_generated_columns(publication).await? {
        return Err(SourceError::Setup(format!(
            "publication {publication:?} does not publish generated columns, but [source.publication] publish_generated_columns = true: run `ALTER PUBLICATION {} SET (publish_generated_columns = stored);`, or remove the setting",
            quote_ident(publication)
        )));
    }
    if !exists {
        if create_publication {
            control
                .create_publication(publication, tables, generated)
                .await?;
            tracing::info!(publication, "created publication");
        } else {
            return Err(SourceError::Setup(format!(
                "publication {publication:?} does not exist in database {:?}: run `CREATE PUBLICATION {} FOR ALL TABLES;` (or FOR TABLE …), or set [source.publication] create = true",
                conn.dbname,
                quote_ident(publication)
            )));
        }
    }

    let mut wire = WireConn::connect(conn, &ctx).await?;
    wire.simple_query("IDENTIFY_SYSTEM", &ctx).await?;

    let start_lsn = match control.slot(slot).await? {
        Some(info) => {
            if info.slot_type != "logical" || info.plugin.as_deref() != Some("pgoutput") {
                return Err(SourceError::Setup(format!(
                    "slot {slot:?} exists but is a {} slot with plugin {:?}; cdc-host needs a logical pgoutput slot",
                    info.slot_type, info.plugin
                )));
            }
            if info.database.as_deref() != Some(conn.dbname.as_str()) {
                return Err(SourceError::Setup(format!(
                    "slot {slot:?} belongs to database {:?}, not {:?}",
                    info.database, conn.dbname
                )));
            }
            if info.wal_status.as_deref() == Some("lost") {
                return Err(SourceError::Setup(format!(
                    "slot {slot:?} is invalidated (wal_status = lost): the WAL it needed was removed (max_slot_wal_keep_size?). Changes were lost; re-snapshot the tables, then drop the slot with SELECT pg_drop_replication_slot('{slot}') and start again. cdc-host never recreates a slot silently."
                )));
            }
            if info.two_phase && !*src.two_phase.get_ref() {
                return Err(SourceError::Setup(format!(
                    "slot {slot:?} decodes prepared transactions (two_phase, which stays on once enabled) but source.two_phase = false: set two_phase = true (and proto_version = 3 or higher), or drop the slot and start again"
                )));
            }
            if src.failover && !control.slot_failover(slot).await? {
                wire.simple_query(
                    &format!("ALTER_REPLICATION_SLOT {} (FAILOVER)", quote_ident(slot)),
                    &ctx,
                )
                .await?;
                tracing::info!(slot, "made the slot a failover slot");
            }
            info.confirmed_flush_lsn.unwrap_or(Lsn::ZERO)
        }
        None if src.create_slot => {
            if src.snapshot.mode == SnapshotMode::Initial {
                request_initial_snapshot(&mut control, src, publication, conn).await?;
            } else {
                // Requests recorded for an earlier slot of this name are not this slot's.
                snapshot::state::forget_slot(control.client(), slot)
                    .await
                    .map_err(|e| SourceError::Setup(e.to_string()))?;
            }
            // FAILOVER exists only in the option-list syntax (Postgres ≥ 15); the plain
            // one works on every version.
            let options = if src.failover {
                "(SNAPSHOT 'nothing', FAILOVER)"
            } else {
                "NOEXPORT_SNAPSHOT"
            };
            let rows = wire
                .simple_query(
                    &format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {options}",
                        quote_ident(slot)
                    ),
                    &ctx,
                )
                .await?;
            let lsn = rows
                .first()
                .and_then(|r| r.get(1).cloned().flatten())
                .and_then(|s| s.parse().ok())
                .unwrap_or(Lsn::ZERO);
            tracing::info!(slot, consistent_point = %lsn, "created replication slot");
            lsn
        }
        None => {
            return Err(SourceError::Setup(format!(
                "replication slot {slot:?} does not exist and source.create_slot = false: create it with SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
            )))
        }
    };

    if src.failover {
        warn_unless_a_standby_waits(&control, slot).await?;
    }
    wire.start_copy_both(&opts.command(slot, start_lsn), &ctx)
        .await?;
    tracing::info!(%conn, slot, publication, start_lsn = %start_lsn, proto_version = opts.proto_version, "replication started");

    let assembler = Assembler::new(start_lsn, settings.max_changes, settings.max_batch_bytes);
    Ok(Replicator {
        conn: wire,
        control,
        slot: slot.to_owned(),
        user: conn.user.clone(),
        publication: publication.to_owned(),
        settings,
        types: Default::default(),
        assembler,
        received: start_lsn,
        idle_flush: Lsn::ZERO,
        reported: start_lsn,
        last_report: Instant::now(),
        snapshot,
        chunks_open: Default::default(),
        chunks_copied: Default::default(),
        ranges_finished: Default::default(),
        spool,
        in_stream: None,
        replay: None,
        in_prepare: None,
        prepared: std::collections::HashMap::new(),
    })
}

/// A failover slot is only as good as the standby that keeps up with it: unless the
/// primary's `synchronized_standby_slots` names the standby's physical slot, the walsender
/// may send cdc-host changes the standby has not received, which a promotion loses.
async fn warn_unless_a_standby_waits(control: &Control, slot: &str) -> Result<(), SourceError> {
    let (setting, missing) = control.standby_slots().await?;
    let fix = "on the primary: ALTER SYSTEM SET synchronized_standby_slots = '<physical slot of each standby>'; SELECT pg_reload_conf(); on each standby: sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name set, and dbname in primary_conninfo";
    if setting.trim().is_empty() {
        tracing::warn!(
            slot,
            "failover slot, but no standby is set to wait for it (synchronized_standby_slots is empty): cdc-host may receive changes a promoted standby never had. Fix: {fix}"
        );
    } else if !missing.is_empty() {
        tracing::warn!(
            slot,
            synchronized_standby_slots = %setting,
            missing = ?missing,
            "failover slot: synchronized_standby_slots names slots that are not physical slots on this server. Fix: {fix}"
        );
    } else {
        tracing::info!(slot, synchronized_standby_slots = %setting, "failover slot: the primary waits for these standbys before sending changes");
    }
    Ok(())
}

/// The host of `conn` to stream from: the first, in order, that accepts a connection and
/// fits `target_session_attrs` — libpq's rule, applied on every (re)connect, so after a
/// promotion the new primary is found. The result names that one host, so the replication,
/// control and snapshot connections all reach the same server. None fitting is transient:
/// during a promotion no host is a primary for a moment.
pub async fn select_host(conn: &ConnParams, ctx: &Context<'_>) -> Result<ConnParams, SourceError> {
    use crate::dsn::TargetSessionAttrs;
    if conn.hosts.len() == 1 && conn.target_session_attrs == TargetSessionAttrs::Any {
        return Ok(conn.clone());
    }
    let mut tried = Vec::with_capacity(conn.hosts.len());
    for i in 0..conn.hosts.len() {
        let one = conn.for_host(i);
        match Control::connect(&one, ctx).await {
            // One host cannot be reached: the next may be (libpq does the same).
            Err(e) if e.is_transient() && conn.hosts.len() > 1 => {
                tried.push(format!("{}:{}: {e}", one.host, one.port));
            }
            Err(e) => return Err(e),
            Ok(control) => match control.session_mismatch(conn.target_session_attrs).await? {
                None => {
                    if conn.hosts.len() > 1 {
                        tracing::info!(host = %one.host, port = one.port, target_session_attrs = %conn.target_session_attrs, "chose host");
                    }
                    return Ok(one);
                }
                Some(why) => tried.push(format!("{}:{} is {why}", one.host, one.port)),
            },
        }
    }
    let target = conn
        .hosts
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    Err(SourceError::Connect {
        target,
        cause: std::io::Error::other(format!(
            "no host fits target_session_attrs={} ({})",
            conn.target_session_attrs,
            tried.join("; ")
        )),
    })
}

/// `binary = true`: every published column must have a binary decoder (see
/// `value::parse_binary`), or the start stops with one line listing those that do not.
/// Types without a send function are sent as text by the server and need none. A table
/// added to the publication later is checked by its first value instead.
async fn check_binary_columns(
    control: &Control,
    publication: &str,
    major: u32,
) -> Result<(), SourceError> {
    // Column lists (Postgres 15+): only the published columns are sent.
    let listed = if major >= 15 {
        "AND (pt.attnames IS NULL OR a.attname = ANY (pt.attnames))"
    } else {
        ""
    };
    let sql = format!("SELECT n.nspname::text, c.relname::text, a.attname::text, a.atttypid::oid, format_type(a.atttypid, a.atttypmod) \
               FROM pg_publication_tables pt \
               JOIN pg_namespace n ON n.nspname = pt.schemaname \
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
               JOIN pg_type t ON t.oid = a.atttypid \
               WHERE pt.pubname = $1 AND t.typsend::oid <> 0 {listed} \
               ORDER BY 1, 2, a.attnum");
    let rows = control
        .client()
        .query(&sql, &[&publication])
        .await
        .map_err(|e| SourceError::Control(format!("listing published columns: {e}")))?;
    let mut types = types::TypeRegistry::default();
    let mut refused = Vec::new();
    for r in rows {
        let oid: u32 = r.get(3);
        let info = types.resolve(oid, control).await?;
        if !crate::value::has_binary_decoder(&info) {
            let (schema, table, column, ty): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(4));
            refused.push(format!("{schema}.{table}.{column} ({ty})"));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(SourceError::Setup(format!(
        "source.binary = true: cdc-host has no binary decoder for {}; set binary = false (text values give the same output) or leave these columns out of the publication",
        refused.join(", ")
    )))
}

/// Records the initial snapshot of a slot about to be created: every table of the
/// publication (or `[source.snapshot] tables`). Checked first, so a table that cannot be
/// copied stops the start with its reason rather than halfway through. Recorded before
/// the slot exists: a crash in between simply records it again on the next start.
async fn request_initial_snapshot(
    control: &mut Control,
    src: &SourceConfig,
    publication: &str,
    conn: &ConnParams,
) -> Result<(), SourceError> {
    use snapshot::{catalog, state};
    let setup = |e: catalog::CatalogError| match e {
        catalog::CatalogError::Source(s) => s,
        other => SourceError::Setup(format!("initial snapshot: {other}")),
    };
    let tables = match &src.snapshot.tables {
        Some(t) => t
            .get_ref()
            .iter()
            .filter_map(|n| n.split_once('.'))
            .map(|(s, t)| (s.to_owned(), t.to_owned()))
            .collect(),
        None => catalog::published_tables(control, publication)
            .await
            .map_err(setup)?,
    };
    let mut types = types::TypeRegistry::default();
    let mut requests = Vec::with_capacity(tables.len());
    for (schema, table) in tables {
        let d = catalog::describe(control, &mut types, publication, &schema, &table)
            .await
            .map_err(setup)?;
        requests.push(state::Request {
            schema,
            table,
            rows_estimated: d.estimate,
        });
    }
    let state_err = |e: state::StateError| SourceError::Setup(e.to_string());
    state::ensure_schema(control.client(), &conn.user, &conn.dbname)
        .await
        .map_err(state_err)?;
    let number = state::request(
        control.client_mut(),
        src.slot.get_ref(),
        "initial",
        &requests,
        None,
        true,
    )
    .await
    .map_err(state_err)?;
    tracing::info!(
        snapshot = number,
        tables = requests.len(),
        "initial snapshot requested: existing rows are delivered as reads while the stream runs"
    );
    Ok(())
}
