//! What `cdc-host backfill` does: record a request (or a cancellation) in the state table
//! and wake the running instance through the WAL, or read the progress back.

use super::catalog::{self, CatalogError};
use super::state::{self, StateError, Status};
use crate::config::Loaded;
use crate::source::control::Control;
use crate::source::error::{Context, SourceError};
use crate::source::types::TypeRegistry;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("--table {0:?}: write it as schema.table (e.g. public.orders)")]
    TableName(String),
    #[error("--where {filter:?} is not a valid condition on {table}: {message}")]
    Filter {
        filter: String,
        table: String,
        message: String,
    },
}

async fn connect(loaded: &Loaded) -> Result<Control, SourceError> {
    let ctx = Context {
        user: &loaded.conn.user,
        slot: loaded.config.source.slot.get_ref(),
        publication: &loaded.publication.name,
    };
    // The host the pipeline streams from (target_session_attrs), not a standby.
    let conn = crate::source::select_host(&loaded.conn, &ctx).await?;
    Control::connect(&conn, &ctx).await
}

/// Records a backfill of `table` (`schema.table`), optionally filtered; returns its
/// snapshot number. The table is checked first (published, has a key; the filter parses).
pub async fn backfill(
    loaded: &Loaded,
    table: &str,
    filter: Option<&str>,
) -> Result<i64, RequestError> {
    let (schema, name) = table
        .split_once('.')
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
        .ok_or_else(|| RequestError::TableName(table.to_owned()))?;
    let mut control = connect(loaded).await?;
    let mut types = TypeRegistry::default();
    let desc =
        catalog::describe(&control, &mut types, &loaded.publication.name, schema, name).await?;
    if let Some(f) = filter {
        let sql = format!(
            "EXPLAIN SELECT 1 FROM {} WHERE ({f})",
            catalog::qualified(schema, name)
        );
        if let Err(e) = control.client().batch_execute(&sql).await {
            return Err(RequestError::Filter {
                filter: f.to_owned(),
                table: table.to_owned(),
                message: e
                    .as_db_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_else(|| e.to_string()),
            });
        }
    }
    let estimate = match filter {
        Some(f) => {
            catalog::planner_rows(control.client(), &catalog::qualified(schema, name), Some(f))
                .await
                .unwrap_or(desc.estimate)
        }
        None => desc.estimate,
    };
    state::ensure_schema(control.client(), &loaded.conn.user, &loaded.conn.dbname).await?;
    let number = state::request(
        control.client_mut(),
        loaded.config.source.slot.get_ref(),
        "backfill",
        &[state::Request {
            schema: schema.to_owned(),
            table: name.to_owned(),
            rows_estimated: estimate,
        }],
        filter,
        false,
    )
    .await?;
    Ok(number)
}

/// Every snapshot and backfill of the slot, oldest first.
pub async fn status(loaded: &Loaded) -> Result<Vec<Status>, RequestError> {
    let control = connect(loaded).await?;
    Ok(state::status(control.client(), loaded.config.source.slot.get_ref()).await?)
}

/// Cancels one snapshot number's pending and running tables, or all of the slot's.
pub async fn cancel(loaded: &Loaded, snapshot: Option<i64>) -> Result<u64, RequestError> {
    let mut control = connect(loaded).await?;
    if !state::exists(control.client()).await? {
        return Ok(0);
    }
    Ok(state::cancel(
        control.client_mut(),
        loaded.config.source.slot.get_ref(),
        snapshot,
    )
    .await?)
}
