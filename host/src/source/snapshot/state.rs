//! Where snapshot requests and their acknowledged progress live: `cdc_host.snapshots`,
//! one row per table to copy, in the source database itself.
//!
//! Why a table (and not the slot or the WAL): a backfill is asked for by another process
//! (`cdc-host backfill`) without a network port to the running instance, progress must
//! survive `kill -9` and be readable by `--status`, and a row is the smallest thing
//! Postgres keeps durably that both can reach with the credentials they already have.
//! Privileges: `CREATE` on the database the first time (or an administrator runs
//! `CREATE SCHEMA cdc_host AUTHORIZATION <role>`), then ordinary DML on the schema.

use tokio_postgres::Client;

use super::STATE_SCHEMA;

/// A state-table operation that failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Privilege(String),
    #[error("snapshot state ({what}): {message}")]
    Sql { what: &'static str, message: String },
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StateError {
    move |e| StateError::Sql {
        what,
        message: e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    }
}

const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS cdc_host;
CREATE SEQUENCE IF NOT EXISTS cdc_host.snapshot_numbers;
CREATE TABLE IF NOT EXISTS cdc_host.snapshots (
    id             bigserial PRIMARY KEY,
    snapshot       bigint NOT NULL,
    slot           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('initial', 'backfill')),
    schema_name    text NOT NULL,
    table_name     text NOT NULL,
    filter         text,
    last_key       text[],
    range_hi       text[],
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'running', 'done', 'cancelled', 'failed')),
    rows_done      bigint NOT NULL DEFAULT 0,
    chunks_done    bigint NOT NULL DEFAULT 0,
    rows_estimated bigint,
    error          text,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX IF NOT EXISTS snapshots_slot_state ON cdc_host.snapshots (slot, state);
";

/// Creates the schema, sequence and table when missing.
pub async fn ensure_schema(client: &Client, role: &str, database: &str) -> Result<(), StateError> {
    if exists(client).await? {
        return Ok(());
    }
    client.batch_execute(SCHEMA_SQL).await.map_err(|e| {
        match e.as_db_error() {
            Some(d) if d.code().code() == "42501" => StateError::Privilege(format!(
                "cannot create the schema {STATE_SCHEMA} where snapshot progress is kept ({}): grant the role CREATE on the database (GRANT CREATE ON DATABASE {database} TO {role}), or create it once as an administrator (CREATE SCHEMA {STATE_SCHEMA} AUTHORIZATION {role}); or set [source.snapshot] mode = \"never\"",
                d.message()
            )),
            _ => sql("create schema")(e),
        }
    })
}

/// Whether `cdc_host.snapshots` exists.
pub async fn exists(client: &Client) -> Result<bool, StateError> {
    let row = client
        .query_one("SELECT to_regclass('cdc_host.snapshots') IS NOT NULL", &[])
        .await
        .map_err(sql("look up"))?;
    Ok(row.get(0))
}

/// A table to copy, as requested.
#[derive(Debug, Clone)]
pub struct Request {
    pub schema: String,
    pub table: String,
    pub rows_estimated: i64,
}

/// Records a request for `tables` (one snapshot number for all); returns the number.
/// `replace` (the initial snapshot of a newly created slot) first forgets every earlier
/// request of this slot: they belonged to a slot of the same name that no longer exists.
pub async fn request(
    client: &mut Client,
    slot: &str,
    kind: &str,
    tables: &[Request],
    filter: Option<&str>,
    replace: bool,
) -> Result<i64, StateError> {
    let tx = client.transaction().await.map_err(sql("request"))?;
    if replace {
        tx.execute("DELETE FROM cdc_host.snapshots WHERE slot = $1", &[&slot])
            .await
            .map_err(sql("request"))?;
    }
    let number: i64 = tx
        .query_one("SELECT nextval('cdc_host.snapshot_numbers')", &[])
        .await
        .map_err(sql("request"))?
        .get(0);
    for t in tables {
        tx.execute(
            "INSERT INTO cdc_host.snapshots (snapshot, slot, kind, schema_name, table_name, filter, rows_estimated)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&number, &slot, &kind, &t.schema, &t.table, &filter, &t.rows_estimated],
        )
        .await
        .map_err(sql("request"))?;
    }
    // Wakes the running instance through its own stream (no port needed).
    tx.execute(
        "SELECT pg_logical_emit_message(true, 'cdc-host.signal', $1::text)",
        &[&slot],
    )
    .await
    .map_err(sql("request"))?;
    tx.commit().await.map_err(sql("request"))?;
    Ok(number)
}

/// Forgets every request of `slot` (a new slot of that name is being created).
pub async fn forget_slot(client: &Client, slot: &str) -> Result<(), StateError> {
    if exists(client).await? {
        client
            .execute("DELETE FROM cdc_host.snapshots WHERE slot = $1", &[&slot])
            .await
            .map_err(sql("forget"))?;
    }
    Ok(())
}

/// One table of a snapshot, as the workers see it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub snapshot: i64,
    pub kind: String,
    pub schema: String,
    pub table: String,
    pub filter: Option<String>,
    /// The upper key of the last chunk every sink acknowledged (or, for a key range of a
    /// split table, the range's exclusive lower bound until then).
    pub last_key: Option<Vec<String>>,
    /// The range's inclusive upper key; `None`: to the table's end.
    pub range_hi: Option<Vec<String>>,
    pub rows_done: i64,
    pub chunks_done: i64,
    pub rows_estimated: Option<i64>,
    /// Never started (may still be split into key ranges).
    pub pending: bool,
}

/// Splits a pending job into key ranges at `bounds` (ascending key texts): the job keeps
/// the first range, new jobs take the others, each with its share of the estimate. Only
/// once: `false` when the job was started or split meanwhile.
pub async fn split(
    client: &mut Client,
    job: &Job,
    bounds: &[Vec<String>],
) -> Result<bool, StateError> {
    let tx = client.transaction().await.map_err(sql("split"))?;
    let share = job.rows_estimated.unwrap_or(0) / (bounds.len() as i64 + 1);
    let n = tx
        .execute(
            "UPDATE cdc_host.snapshots SET range_hi = $2, rows_estimated = $3, updated_at = now()
              WHERE id = $1 AND state = 'pending' AND last_key IS NULL AND range_hi IS NULL",
            &[&job.id, &bounds[0], &share],
        )
        .await
        .map_err(sql("split"))?;
    if n == 0 {
        return Ok(false);
    }
    for (i, lo) in bounds.iter().enumerate() {
        let hi = bounds.get(i + 1);
        tx.execute(
            "INSERT INTO cdc_host.snapshots (snapshot, slot, kind, schema_name, table_name, filter, last_key, range_hi, rows_estimated, requested_at)
             SELECT snapshot, slot, kind, schema_name, table_name, filter, $2, $3, $4, requested_at FROM cdc_host.snapshots WHERE id = $1",
            &[&job.id, lo, &hi, &share],
        )
        .await
        .map_err(sql("split"))?;
    }
    tx.commit().await.map_err(sql("split"))?;
    Ok(true)
}

/// Pending and running jobs of `slot`, oldest first.
pub async fn runnable(client: &Client, slot: &str) -> Result<Vec<Job>, StateError> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT id, snapshot, kind, schema_name, table_name, filter, last_key, rows_done, chunks_done, rows_estimated, range_hi, state
               FROM cdc_host.snapshots WHERE slot = $1 AND state IN ('pending', 'running') ORDER BY id",
            &[&slot],
        )
        .await
        .map_err(sql("list"))?;
    Ok(rows
        .iter()
        .map(|r| Job {
            id: r.get(0),
            snapshot: r.get(1),
            kind: r.get(2),
            schema: r.get(3),
            table: r.get(4),
            filter: r.get(5),
            last_key: r.get(6),
            rows_done: r.get(7),
            chunks_done: r.get(8),
            rows_estimated: r.get(9),
            range_hi: r.get(10),
            pending: r.get::<_, String>(11) == "pending",
        })
        .collect())
}

/// Ranges of `job`'s table in its snapshot not finished yet (itself included).
pub async fn open_ranges(client: &Client, job: &Job) -> Result<i64, StateError> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM cdc_host.snapshots
              WHERE snapshot = $1 AND slot = (SELECT slot FROM cdc_host.snapshots WHERE id = $2)
                AND schema_name = $3 AND table_name = $4 AND state IN ('pending', 'running')",
            &[&job.snapshot, &job.id, &job.schema, &job.table],
        )
        .await
        .map_err(sql("count ranges"))?
        .get(0))
}

pub async fn mark_running(client: &Client, id: i64, estimate: i64) -> Result<(), StateError> {
    client
        .execute(
            "UPDATE cdc_host.snapshots SET state = 'running', rows_estimated = $2, updated_at = now()
              WHERE id = $1 AND state IN ('pending', 'running')",
            &[&id, &estimate],
        )
        .await
        .map_err(sql("mark running"))?;
    Ok(())
}

/// A chunk every sink acknowledged: the next start resumes after `last_key`.
pub async fn record_chunk(
    client: &Client,
    id: i64,
    last_key: Option<&[String]>,
    rows: i64,
) -> Result<(), StateError> {
    client
        .execute(
            "UPDATE cdc_host.snapshots
                SET last_key = COALESCE($2, last_key), rows_done = rows_done + $3,
                    chunks_done = chunks_done + 1, updated_at = now()
              WHERE id = $1",
            &[&id, &last_key, &rows],
        )
        .await
        .map_err(sql("record progress"))?;
    Ok(())
}

/// Ends a job: `done`, or `failed` with the error.
pub async fn finish(
    client: &Client,
    id: i64,
    state: &str,
    error: Option<&str>,
) -> Result<(), StateError> {
    client
        .execute(
            "UPDATE cdc_host.snapshots SET state = $2, error = $3, updated_at = now(), finished_at = now()
              WHERE id = $1 AND state IN ('pending', 'running')",
            &[&id, &state, &error],
        )
        .await
        .map_err(sql("finish"))?;
    Ok(())
}

/// Cancels the pending/running jobs of `slot` (of one snapshot number, or all); returns
/// how many tables they copied.
pub async fn cancel(
    client: &mut Client,
    slot: &str,
    snapshot: Option<i64>,
) -> Result<u64, StateError> {
    let tx = client.transaction().await.map_err(sql("cancel"))?;
    let n: i64 = tx
        .query_one(
            "WITH c AS (
                UPDATE cdc_host.snapshots SET state = 'cancelled', updated_at = now(), finished_at = now()
                 WHERE slot = $1 AND state IN ('pending', 'running') AND ($2::bigint IS NULL OR snapshot = $2)
                RETURNING snapshot, schema_name, table_name)
             SELECT count(DISTINCT (snapshot, schema_name, table_name)) FROM c",
            &[&slot, &snapshot],
        )
        .await
        .map_err(sql("cancel"))?
        .get(0);
    tx.execute(
        "SELECT pg_logical_emit_message(true, 'cdc-host.signal', $1::text)",
        &[&slot],
    )
    .await
    .map_err(sql("cancel"))?;
    tx.commit().await.map_err(sql("cancel"))?;
    Ok(n as u64)
}

/// One line of `--status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub snapshot: i64,
    pub kind: String,
    pub table: String,
    pub state: String,
    pub rows_done: i64,
    pub rows_estimated: Option<i64>,
    pub chunks_done: i64,
    pub rows_per_sec: Option<f64>,
    pub error: Option<String>,
    pub filter: Option<String>,
}

pub async fn status(client: &Client, slot: &str) -> Result<Vec<Status>, StateError> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT snapshot, min(kind), format('%I.%I', schema_name, table_name),
                    CASE WHEN bool_or(state = 'failed') THEN 'failed'
                         WHEN bool_or(state = 'cancelled') THEN 'cancelled'
                         WHEN bool_or(state = 'running') THEN 'running'
                         WHEN bool_or(state = 'pending') THEN 'pending'
                         ELSE 'done' END,
                    sum(rows_done)::bigint, sum(rows_estimated)::bigint, sum(chunks_done)::bigint,
                    sum(rows_done) / NULLIF(extract(epoch FROM (max(COALESCE(finished_at, updated_at)) - min(requested_at))), 0)::float8,
                    string_agg(error, '; '), min(filter)
               FROM cdc_host.snapshots WHERE slot = $1
              GROUP BY snapshot, schema_name, table_name ORDER BY min(id)",
            &[&slot],
        )
        .await
        .map_err(sql("status"))?;
    Ok(rows
        .iter()
        .map(|r| Status {
            snapshot: r.get(0),
            kind: r.get(1),
            table: r.get(2),
            state: r.get(3),
            rows_done: r.get(4),
            rows_estimated: r.get(5),
            chunks_done: r.get(6),
            rows_per_sec: r.get(7),
            error: r.get(8),
            filter: r.get(9),
        })
        .collect())
}
