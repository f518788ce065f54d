//! The control plane: an ordinary SQL session (tokio-postgres) for checks, publication
//! and slot inspection, and catalog look-ups the replication stream cannot answer.

use tokio_postgres::{Client, NoTls};

use super::error::{Context, PgError, SourceError};
use super::tls;
use super::wire::quote_ident;
use crate::dsn::{ConnParams, SslMode, TargetSessionAttrs};
use crate::lsn::Lsn;

/// A connected control-plane client; the connection task runs in the background.
#[derive(Debug)]
pub struct Control {
    client: Client,
}

/// A row of `pg_replication_slots`.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub slot_type: String,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (Postgres ≥ 13).
    pub wal_status: Option<String>,
    /// Whether the slot decodes prepared transactions at PREPARE (Postgres ≥ 14): once on
    /// (at creation or by a start with `two_phase 'on'`) it stays on.
    pub two_phase: bool,
}

/// A row of `pg_type`, for types pgoutput names only by oid.
#[derive(Debug, Clone)]
pub struct TypeRow {
    pub oid: u32,
    pub name: String,
    /// `b` base, `d` domain, `e` enum, `c` composite, `r` range, `m` multirange, `p` pseudo.
    pub typtype: u8,
    /// `A` for arrays.
    pub category: u8,
    pub base_type: u32,
    pub element: u32,
    /// A composite type's relation (`typrelid`): its attributes are the fields.
    pub relation: u32,
    /// The input function's name (`typinput`), which tells an extension's type such as
    /// `hstore` apart whatever its oid and schema.
    pub input: String,
}

fn ctl(e: tokio_postgres::Error) -> SourceError {
    // A control connection lost mid-query (server restart) is as transient as the stream's.
    if e.is_closed() || e.as_db_error().is_none() {
        return SourceError::Io {
            target: "control connection".into(),
            cause: std::io::Error::other(error_chain(&e)),
        };
    }
    let detail = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string());
    SourceError::Control(detail)
}

impl Control {
    /// Opens the control connection with the same TLS rules as the replication one.
    pub async fn connect(params: &ConnParams, ctx: &Context<'_>) -> Result<Control, SourceError> {
        let connect_err = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => SourceError::server(
                PgError {
                    severity: db.severity().to_owned(),
                    code: db.code().code().to_owned(),
                    message: db.message().to_owned(),
                    detail: db.detail().map(str::to_owned),
                    hint: db.hint().map(str::to_owned),
                },
                ctx,
            ),
            None => {
                let target = format!("{}:{}", params.host, params.port);
                let chain = error_chain(&e);
                if chain.contains("server does not support TLS") {
                    SourceError::TlsUnsupported(target)
                } else if chain.contains("TLS handshake") {
                    SourceError::TlsHandshake {
                        target,
                        cause: std::io::Error::other(chain),
                    }
                } else {
                    SourceError::Connect {
                        target,
                        cause: std::io::Error::other(chain),
                    }
                }
            }
        };
        let mut cfg = params.pg_config.clone();
        cfg.application_name(format!("{} (control)", params.application_name));
        cfg.options("-c TimeZone=UTC -c DateStyle=ISO");
        cfg.ssl_mode(match params.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let client = match tls::client_config(params.ssl_mode, params.ssl_root_cert.as_deref())? {
            None => {
                let (client, conn) = cfg.connect(NoTls).await.map_err(connect_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "control connection closed");
                    }
                });
                client
            }
            Some(tls_config) => {
                let connector =
                    tokio_postgres_rustls::MakeRustlsConnect::new((*tls_config).clone());
                let (client, conn) = cfg.connect(connector).await.map_err(connect_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "control connection closed");
                    }
                });
                client
            }
        };
        Ok(Control { client })
    }

    /// The raw client, for callers with their own queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The raw client, for transactions.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// `server_version_num` divided down to the major version (e.g. 15).
    pub async fn server_major(&self) -> Result<u32, SourceError> {
        let row = self
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(ctl)?;
        let num: i32 = row.get(0);
        Ok((num / 10000) as u32)
    }

    /// Fails with instructions unless `wal_level = logical`.
    pub async fn check_wal_level(&self) -> Result<(), SourceError> {
        let row = self
            .client
            .query_one("SELECT current_setting('wal_level')", &[])
            .await
            .map_err(ctl)?;
        let level: String = row.get(0);
        if level != "logical" {
            return Err(SourceError::Setup(format!(
                "wal_level is {level:?}, but logical decoding needs wal_level = logical: run `ALTER SYSTEM SET wal_level = logical;` and restart Postgres"
            )));
        }
        Ok(())
    }

    /// The server encoding must be UTF8: pgoutput sends text in the database encoding.
    pub async fn check_encoding(&self) -> Result<(), SourceError> {
        let row = self
            .client
            .query_one("SELECT current_setting('server_encoding')", &[])
            .await
            .map_err(ctl)?;
        let enc: String = row.get(0);
        if enc != "UTF8" {
            return Err(SourceError::Setup(format!(
                "the database encoding is {enc}; cdc-host needs a UTF8 database (pgoutput sends text in the database encoding)"
            )));
        }
        Ok(())
    }

    pub async fn publication_exists(&self, name: &str) -> Result<bool, SourceError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(ctl)?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Whether the publication publishes stored generated columns (`pubgencols`, Postgres
    /// ≥ 18; the caller checks the version).
    pub async fn publishes_generated_columns(&self, name: &str) -> Result<bool, SourceError> {
        let row = self
            .client
            .query_one(
                "SELECT pubgencols::text FROM pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(ctl)?;
        Ok(row.get::<_, String>(0) == "s")
    }

    /// `CREATE PUBLICATION name FOR ALL TABLES` or `FOR TABLE a, b`, `WITH
    /// (publish_generated_columns = stored)` when `generated`.
    pub async fn create_publication(
        &self,
        name: &str,
        tables: Option<&[String]>,
        generated: bool,
    ) -> Result<(), SourceError> {
        let target = match tables {
            None => "FOR ALL TABLES".to_owned(),
            Some(t) => format!(
                "FOR TABLE {}",
                t.iter()
                    .map(|t| quote_qualified(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut sql = format!("CREATE PUBLICATION {} {target}", quote_ident(name));
        if generated {
            sql.push_str(" WITH (publish_generated_columns = stored)");
        }
        self.client.batch_execute(&sql).await.map_err(|e| {
            SourceError::Setup(format!(
                "could not create publication {name:?} ({sql}): {}; create it yourself or grant the role the right to",
                e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string())
            ))
        })
    }

    pub async fn slot(&self, slot: &str) -> Result<Option<SlotInfo>, SourceError> {
        let rows = self
            .client
            .query(
                "SELECT plugin::text, slot_type, database::text, active_pid, confirmed_flush_lsn::text,
                        (to_jsonb(s) ->> 'wal_status'),
                        COALESCE((to_jsonb(s) ->> 'two_phase')::bool, false)
                   FROM pg_replication_slots s WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(ctl)?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let lsn: Option<String> = r.get(4);
        Ok(Some(SlotInfo {
            plugin: r.get(0),
            slot_type: r.get(1),
            database: r.get(2),
            active_pid: r.get(3),
            confirmed_flush_lsn: lsn.and_then(|l| l.parse().ok()),
            wal_status: r.get(5),
            two_phase: r.get(6),
        }))
    }

    /// Why this server does not fit `target_session_attrs`, or `None` when it does.
    pub async fn session_mismatch(
        &self,
        attrs: TargetSessionAttrs,
    ) -> Result<Option<&'static str>, SourceError> {
        let sql = match attrs {
            TargetSessionAttrs::Any => return Ok(None),
            TargetSessionAttrs::ReadWrite => {
                "SELECT current_setting('transaction_read_only') = 'on'"
            }
            TargetSessionAttrs::Primary => "SELECT pg_is_in_recovery()",
        };
        let row = self.client.query_one(sql, &[]).await.map_err(ctl)?;
        Ok(row.get::<_, bool>(0).then_some(match attrs {
            TargetSessionAttrs::ReadWrite => "read-only",
            _ => "a standby (in recovery)",
        }))
    }

    /// Whether the slot is a failover slot (`pg_replication_slots.failover`, Postgres ≥ 17).
    pub async fn slot_failover(&self, slot: &str) -> Result<bool, SourceError> {
        let row = self
            .client
            .query_opt(
                "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(ctl)?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// `synchronized_standby_slots` (Postgres ≥ 17), and those of its entries that are not
    /// physical slots on this server (a standby cannot wait for a slot that is not there).
    pub async fn standby_slots(&self) -> Result<(String, Vec<String>), SourceError> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('synchronized_standby_slots'),
                        array(SELECT s FROM unnest(string_to_array(replace(current_setting('synchronized_standby_slots'), ' ', ''), ',')) s
                               WHERE s <> '' AND NOT EXISTS (SELECT 1 FROM pg_replication_slots r
                                                             WHERE r.slot_name = s AND r.slot_type = 'physical'))",
                &[],
            )
            .await
            .map_err(ctl)?;
        Ok((row.get(0), row.get(1)))
    }

    /// Looks a type up by oid; `None` if it does not exist.
    pub async fn type_row(&self, oid: u32) -> Result<Option<TypeRow>, SourceError> {
        let rows = self
            .client
            .query(
                "SELECT t.typname::text, t.typtype::text, t.typcategory::text, t.typbasetype,
                        t.typelem, t.typrelid, p.proname::text
                   FROM pg_type t JOIN pg_proc p ON p.oid = t.typinput WHERE t.oid = $1",
                &[&oid],
            )
            .await
            .map_err(ctl)?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let byte = |s: String| s.bytes().next().unwrap_or(b'?');
        Ok(Some(TypeRow {
            oid,
            name: r.get(0),
            typtype: byte(r.get(1)),
            category: byte(r.get(2)),
            base_type: r.get(3),
            element: r.get(4),
            relation: r.get(5),
            input: r.get(6),
        }))
    }

    /// A composite type's fields: `(name, type oid)` of its relation's live attributes in
    /// order (dropped ones are left out, as `record_out` leaves them out).
    pub async fn composite_fields(&self, relation: u32) -> Result<Vec<(String, u32)>, SourceError> {
        let rows = self
            .client
            .query(
                "SELECT attname::text, atttypid FROM pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&relation],
            )
            .await
            .map_err(ctl)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// `schema.table` → `"schema"."table"`; a bare name stays unqualified.
fn quote_qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((s, t)) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        None => quote_ident(name),
    }
}

/// `a: b: c` from an error and its sources, skipping repeats (tokio-postgres nests the
/// same text at several levels).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        match parts.last_mut() {
            Some(last) if last.contains(&text) => {}
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
        cur = err.source();
    }
    parts.join(": ")
}
