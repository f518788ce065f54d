//! What to copy of a table: the columns pgoutput publishes (same order, same types), the
//! key to chunk by, the publication's row filter, and the size estimate.

use std::sync::Arc;

use crate::change::{Column, Table};
use crate::pgoutput::ReplicaIdentity;
use crate::source::control::Control;
use crate::source::error::SourceError;
use crate::source::types::TypeRegistry;
use crate::source::wire::{quote_ident, quote_literal};

/// Why a table cannot be copied.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("table {0} does not exist")]
    NotFound(String),
    #[error("table {table} is not in publication {publication:?}: add it (ALTER PUBLICATION … ADD TABLE {table}) or choose another table")]
    NotPublished { table: String, publication: String },
    #[error("table {0} has no primary key and no unique index on NOT NULL columns, so it cannot be copied in key-ordered chunks that stay consistent with the stream: add one (ALTER TABLE {0} ADD PRIMARY KEY (…)), or leave the table out of [source.snapshot] tables")]
    NoKey(String),
    #[error("table {table}: key column {column:?} is not published (publication column list); publish it or leave the table out of [source.snapshot] tables")]
    KeyNotPublished { table: String, column: String },
    #[error(transparent)]
    Source(#[from] SourceError),
}

fn db(e: tokio_postgres::Error) -> CatalogError {
    CatalogError::Source(SourceError::Control(
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    ))
}

/// A table described for copying.
#[derive(Debug, Clone)]
pub struct Described {
    pub table: Arc<Table>,
    /// Column indexes of the chunk key, in key order.
    pub key: Vec<usize>,
    pub key_names: Arc<[Arc<str>]>,
    /// `format_type` of each key column, to cast the previous chunk's bound.
    pub key_types: Vec<String>,
    /// The publication's row filter for this table (Postgres ≥ 15), applied to copies too.
    pub row_filter: Option<String>,
    /// Rows according to `pg_class.reltuples` (0 when never analysed).
    pub estimate: i64,
    /// Whether chunks are copied in COPY's binary format: every column has a binary
    /// decoder (and so a send function), and `[source.snapshot] binary` allows it.
    pub binary: bool,
    /// A binary chunk also selects the key columns as text (`key::text`), for the next
    /// chunk's lower bound: some key column's type is not one cdc-host prints itself
    /// (`key::prints_key_text`).
    pub server_key_text: bool,
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The publication's tables, as pgoutput names them (leaf partitions, or the root with
/// `publish_via_partition_root`).
pub async fn published_tables(
    control: &Control,
    publication: &str,
) -> Result<Vec<(String, String)>, CatalogError> {
    let rows = control
        .client()
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname <> 'cdc_host' ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(db)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Describes `schema.table` as `publication` publishes it.
pub async fn describe(
    control: &Control,
    types: &mut TypeRegistry,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<Described, CatalogError> {
    let client = control.client();
    let name = qualified(schema, table);
    let Some(rel) = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, c.relkind::text,
                    CASE WHEN c.relkind = 'p' THEN
                        (SELECT COALESCE(sum(GREATEST(p.reltuples, 0)), 0) FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf)
                    ELSE GREATEST(c.reltuples, 0) END::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(db)?
    else {
        return Err(CatalogError::NotFound(name));
    };
    let oid: u32 = rel.get(0);
    let replident: String = rel.get(1);
    let mut estimate: i64 = rel.get(3);
    if estimate <= 0 {
        // Never analysed: the planner's estimate from the table's pages.
        estimate = planner_rows(client, &name, None).await.unwrap_or(0);
    }
    let major = control.server_major().await?;
    // Published? With which columns and row filter (Postgres ≥ 15)?
    let pub_sql = if major >= 15 {
        "SELECT attnames::text[], rowfilter FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3"
    } else {
        "SELECT NULL::text[], NULL::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3"
    };
    let Some(publ) = client
        .query_opt(pub_sql, &[&publication, &schema, &table])
        .await
        .map_err(db)?
    else {
        return Err(CatalogError::NotPublished {
            table: name,
            publication: publication.to_owned(),
        });
    };
    let published: Option<Vec<String>> = publ.get(0);
    let row_filter: Option<String> = publ.get(1);
    // Columns in attnum order, as pgoutput sends them: no dropped ones, and generated ones
    // only where Postgres ≥ 18 publishes them (then `attnames` lists them: filtered below).
    let generated_published = major >= 18;
    let cols = client
        .query(
            "SELECT a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod), a.attnum
               FROM pg_attribute a
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                AND (a.attgenerated = '' OR $2)
              ORDER BY a.attnum",
            &[&oid, &generated_published],
        )
        .await
        .map_err(db)?;
    // The replica identity's columns (pgoutput's key flag).
    let ident: Vec<i16> = match replident.as_str() {
        "d" | "i" => client
            .query(
                "SELECT unnest(indkey::int2[]) FROM pg_index WHERE indrelid = $1 AND (CASE WHEN $2 = 'd' THEN indisprimary ELSE indisreplident END)",
                &[&oid, &replident],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        _ => Vec::new(),
    };
    let mut columns = Vec::with_capacity(cols.len());
    for c in &cols {
        let col_name: String = c.get(0);
        if published.as_ref().is_some_and(|p| !p.contains(&col_name)) {
            continue;
        }
        let type_oid: u32 = c.get(1);
        let attnum: i16 = c.get(3);
        columns.push((
            Column {
                name: col_name.into(),
                type_oid,
                type_info: types.resolve(type_oid, control).await?,
                is_key: replident == "f" || ident.contains(&attnum),
            },
            c.get::<_, String>(2),
        ));
    }
    // The chunk key: the primary key, else the narrowest unique index on NOT NULL columns.
    let key_row = client
        .query_opt(
            "SELECT array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)
               FROM pg_index i
              WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indimmediate
                AND i.indpred IS NULL AND i.indexprs IS NULL
                AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey::int2[]) k(attnum)
                                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                                 WHERE NOT a.attnotnull)
              ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid
              LIMIT 1",
            &[&oid],
        )
        .await
        .map_err(db)?;
    let Some(key_row) = key_row else {
        return Err(CatalogError::NoKey(name));
    };
    let key_cols: Vec<String> = key_row.get(0);
    let mut key = Vec::with_capacity(key_cols.len());
    let mut key_types = Vec::with_capacity(key_cols.len());
    for k in &key_cols {
        let Some(i) = columns.iter().position(|(c, _)| &*c.name == k.as_str()) else {
            return Err(CatalogError::KeyNotPublished {
                table: name,
                column: k.clone(),
            });
        };
        key.push(i);
        key_types.push(columns[i].1.clone());
    }
    let key_names: Arc<[Arc<str>]> = key
        .iter()
        .map(|&i| Arc::clone(&columns[i].0.name))
        .collect();
    Ok(Described {
        table: Arc::new(Table {
            id: oid,
            schema: schema.into(),
            name: table.into(),
            replica_identity: ReplicaIdentity::from_byte(replident.as_bytes()[0])
                .unwrap_or(ReplicaIdentity::Default),
            columns: columns.into_iter().map(|(c, _)| c).collect(),
        }),
        key,
        key_names,
        key_types,
        row_filter,
        estimate,
        binary: false,
        server_key_text: true,
    })
}

/// The planner's row estimate for a scan of `name` (`EXPLAIN`, nothing runs), filtered by
/// `filter` when given.
pub async fn planner_rows(
    client: &tokio_postgres::Client,
    name: &str,
    filter: Option<&str>,
) -> Option<i64> {
    let filter = filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default();
    let messages = client
        .simple_query(&format!(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM {name}{filter}"
        ))
        .await
        .ok()?;
    let text = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })?;
    let plan: serde_json::Value = serde_json::from_str(&text).ok()?;
    plan.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|r| r as i64)
}

impl Described {
    /// Key values (COPY text) as typed SQL literals: `'42'::integer, 'a'::text`.
    fn key_literal(&self, key: &[String]) -> String {
        key.iter()
            .zip(&self.key_types)
            .map(|(v, ty)| format!("{}::{ty}", quote_literal(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key columns, quoted, comma-separated.
    pub fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|&i| quote_ident(&self.table.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Up to `n - 1` keys (COPY text) that cut the table into `n` ranges of about equal
    /// size, from a sample of about `200 n` rows (`TABLESAMPLE SYSTEM`: whole pages, cheap).
    pub async fn split_points(
        &self,
        client: &tokio_postgres::Client,
        estimate: i64,
        n: usize,
    ) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
        use futures_util::TryStreamExt;
        let want = (200 * n) as f64;
        let percent = (want * 100.0 / estimate.max(1) as f64).clamp(0.01, 100.0);
        let keys = self.key_list();
        let sql = format!(
            "COPY (SELECT {keys} FROM {} TABLESAMPLE SYSTEM ({percent:.4}) ORDER BY {keys}) TO STDOUT",
            qualified(&self.table.schema, &self.table.name)
        );
        let stream = client.copy_out(sql.as_str()).await?;
        futures_util::pin_mut!(stream);
        let mut sample = Vec::new();
        while let Some(line) = stream.try_next().await? {
            sample.push(line);
        }
        let mut out: Vec<Vec<String>> = Vec::new();
        for i in 1..n {
            let Some(line) = sample.get(sample.len() * i / n) else {
                break;
            };
            let key: Vec<String> = super::copy::fields(line)
                .into_iter()
                .map(|f| {
                    f.map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                })
                .collect();
            if out.last() != Some(&key) {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// The COPY of the next chunk: rows after `after` (the previous chunk's upper key),
    /// matching `filter` and the publication's row filter, in key order, `limit` rows.
    pub fn chunk_sql(
        &self,
        after: Option<&[String]>,
        upto: Option<&[String]>,
        filter: Option<&str>,
        limit: usize,
    ) -> String {
        let t = &self.table;
        let cols = t
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = self
            .key
            .iter()
            .map(|&i| quote_ident(&t.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conds = Vec::new();
        if let Some(after) = after {
            conds.push(format!("({keys}) > ({})", self.key_literal(after)));
        }
        if let Some(upto) = upto {
            conds.push(format!("({keys}) <= ({})", self.key_literal(upto)));
        }
        if let Some(f) = filter {
            conds.push(format!("({f})"));
        }
        if let Some(f) = &self.row_filter {
            conds.push(format!("({f})"));
        }
        let cond = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        if self.binary && !self.server_key_text {
            // The next chunk's bound is printed from the last row's key values.
            return format!(
                "COPY (SELECT {cols} FROM {} {cond} ORDER BY {keys} LIMIT {limit}) TO STDOUT (FORMAT binary)",
                qualified(&t.schema, &t.name)
            );
        }
        if self.binary {
            // The key again as text: the next chunk's bound is written as text literals.
            let key_text = self
                .key
                .iter()
                .map(|&i| format!("{}::text", quote_ident(&t.columns[i].name)))
                .collect::<Vec<_>>()
                .join(", ");
            // Ordered by position: the output has two columns of each key column's name.
            let positions = self
                .key
                .iter()
                .map(|&i| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return format!(
                "COPY (SELECT {cols}, {key_text} FROM {} {cond} ORDER BY {positions} LIMIT {limit}) TO STDOUT (FORMAT binary)",
                qualified(&t.schema, &t.name)
            );
        }
        format!(
            "COPY (SELECT {cols} FROM {} {cond} ORDER BY {keys} LIMIT {limit}) TO STDOUT",
            qualified(&t.schema, &t.name)
        )
    }
}
