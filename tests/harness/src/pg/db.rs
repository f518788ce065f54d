//! A fresh database per test, dropped (with its slots) when the test is done.

use super::*;

/// A database created for one test. See [`PgServer::fresh_db`].
///
/// Dropping it (unless `CDC_TEST_KEEP_DBS` is set) terminates the walsenders
/// of its logical slots, drops those slots, terminates its sessions and
/// drops the database — best effort, blocking, bounded (psql, 60 s); errors
/// are only printed. Leftovers vanish with the server at exit anyway.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub(super) port: u16,
    pub(super) psql: PathBuf,
    pub(super) exec_client: tokio::sync::OnceCell<Client>,
}

impl TestDb {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/NAME?sslmode=disable`
    pub fn dsn(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
            self.port, self.name
        )
    }

    /// Same database, another user/password (percent-encoded).
    pub fn dsn_for(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}?sslmode=disable",
            pct(user),
            pct(password),
            self.port,
            self.name
        )
    }

    /// New superuser connection (its connection task is spawned on the
    /// current runtime). Panics on failure.
    pub async fn client(&self) -> Client {
        let dsn = self.dsn();
        try_connect(&dsn)
            .await
            .unwrap_or_else(|e| panic!("connect {dsn}: {}", pg_err(&e)))
    }

    /// `batch_execute` on a cached superuser connection; panics with the
    /// server's message on error.
    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.try_exec(sql).await {
            panic!("exec on {} failed: {}\nSQL: {sql}", self.name, pg_err(&e));
        }
    }

    /// Like [`Self::exec`] but returns the error.
    pub async fn try_exec(&self, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
        let c = self.exec_client.get_or_init(|| self.client()).await;
        c.batch_execute(sql).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("CDC_TEST_KEEP_DBS").is_some() {
            return;
        }
        let n = &self.name;
        let sql = format!(
            "DO $$\n\
             DECLARE deadline timestamptz := clock_timestamp() + interval '10 s';\n\
             BEGIN\n\
               LOOP\n\
                 PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots\n\
                   WHERE database = '{n}' AND active_pid IS NOT NULL;\n\
                 BEGIN\n\
                   PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots\n\
                     WHERE database = '{n}' AND NOT active;\n\
                 EXCEPTION WHEN others THEN NULL; -- raced with a walsender; retry\n\
                 END;\n\
                 EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE database = '{n}')\n\
                   OR clock_timestamp() > deadline;\n\
                 PERFORM pg_sleep(0.02);\n\
               END LOOP;\n\
             END $$;\n\
             SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{n}';\n\
             DROP DATABASE IF EXISTS \"{n}\";\n"
        );
        let cmd = psql_command(&self.psql, self.port, "postgres");
        match run_bounded(cmd, Some(sql.into_bytes()), PSQL_TIMEOUT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "harness: dropping database {n} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("harness: dropping database {n}: {e:#}"),
        }
    }
}

pub(super) fn unique_db_name(hint: &str) -> String {
    let mut base: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
        base.insert_str(0, "db_");
    }
    format!("{base}_{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
