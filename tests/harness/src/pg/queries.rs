//! Small queries the tests wait on: slot positions, the WAL position, connecting.

use super::*;

/// Connects without TLS and spawns the connection task on the current
/// runtime.
pub async fn try_connect(dsn: &str) -> std::result::Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Readable text for a tokio-postgres error (its Display is terse).
pub fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => format!("{e} ({e:?})"),
    }
}

/// `confirmed_flush_lsn` of a slot as text (`X/Y`); `None` if the slot does
/// not exist or has none. Panics on query errors.
pub async fn confirmed_flush_lsn(client: &Client, slot: &str) -> Option<String> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("reading pg_replication_slots: {}", pg_err(&e)))?;
    row.get::<_, Option<String>>(0)
}

/// `pg_current_wal_insert_lsn()` as text: every commit made so far ends at
/// or before it. (The server runs with `synchronous_commit = off`, so
/// `pg_current_wal_lsn()` — the *write* position — can lag behind commits
/// for up to `wal_writer_delay`.) Read right after the last commit of a
/// workload it is that commit's end LSN, unless a background record
/// (e.g. a running-xacts record, every 15 s) lands in between.
pub async fn current_wal_lsn(client: &Client) -> String {
    client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("pg_current_wal_insert_lsn: {}", pg_err(&e)))
        .get(0)
}

/// Waits until the slot is confirmed up to [`current_wal_lsn`] read now, i.e.
/// past every commit made so far (see [`wait_for_confirmed_flush`]).
pub async fn wait_confirmed_to_now(
    client: &Client,
    slot: &str,
    timeout: Duration,
) -> Result<String> {
    let end = current_wal_lsn(client).await;
    wait_for_confirmed_flush(client, slot, &end, timeout).await
}

/// Waits (polling every 50 ms, bounded by `timeout`) until the slot's
/// `confirmed_flush_lsn >= target` (compared as `pg_lsn`). Returns the
/// confirmed LSN reached.
pub async fn wait_for_confirmed_flush(
    client: &Client,
    slot: &str,
    target: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= $2::text::pg_lsn \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &target],
            )
            .await
            .map_err(|e| anyhow!("reading pg_replication_slots: {}", pg_err(&e)))?;
        if let Some(row) = row {
            last = row.get::<_, Option<String>>(0);
            if row.get::<_, Option<bool>>(1) == Some(true) {
                return Ok(last.unwrap_or_default());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("slot {slot}: confirmed_flush_lsn {last:?} did not reach {target} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
