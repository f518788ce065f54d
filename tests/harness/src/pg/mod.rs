//! Throwaway Postgres servers and per-test databases.
//!
//! Lifecycle / cleanup design (no Postgres may outlive `cargo test`):
//!
//! * The shared server ([`server()`]) lives in a `static OnceLock`, which is
//!   never dropped. When it is first started, a `libc::atexit` handler is
//!   registered (the only `unsafe` in the harness, narrowly allowed on one fn)
//!   that SIGQUITs the postmaster (immediate shutdown), waits for it (bounded)
//!   and removes the temp dir. libtest leaves through `std::process::exit`
//!   (→ C `exit()` → atexit handlers) both when all tests pass and when some
//!   fail, so on every normal exit the server is gone *before* `cargo test`
//!   returns.
//! * Every server also gets a watchdog: `sh -c '...'` whose stdin is a pipe
//!   whose only write end is held by the test process (Rust opens it
//!   close-on-exec, so neither Postgres nor cdc-host inherit it). When the
//!   test process dies in any way — SIGKILL, abort, a panic in a panic —
//!   the kernel closes the pipe, the watchdog reads EOF, SIGQUITs the
//!   postmaster named in `postmaster.pid` (after checking `/proc/PID/comm`
//!   is `postgres`), waits for it, SIGKILLs whatever else still has its cwd
//!   in the temp dir (e.g. an `initdb` cut short) and `rm -rf`s the dir.
//!   The watchdog ignores INT/TERM/HUP/QUIT so a Ctrl-C on the process
//!   group does not kill it before it has cleaned up. On a normal exit it finds nothing left.
//! * A private server from [`PgServer::start`] is stopped on `Drop` the same
//!   way (and its watchdog covers crashes).
//!
//! Databases from [`PgServer::fresh_db`] are dropped best-effort when the
//! [`TestDb`] is dropped (replication slots of that database first: their
//! walsenders are terminated, then the slots dropped, then the database).
//! Anything left over disappears with the server's temp dir at exit. Set
//! `CDC_TEST_KEEP_DBS=1` to keep databases (useful with a debugger; the
//! server itself is still removed at exit).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::{Client, NoTls};

mod db;
mod process;
mod queries;
mod standby;

use db::unique_db_name;
pub use db::TestDb;
use process::{free_port, make_temp_dir, psql_command, spawn_watchdog, stop_child};
pub use queries::{
    confirmed_flush_lsn, current_wal_lsn, pg_err, try_connect, wait_confirmed_to_now,
    wait_for_confirmed_flush,
};

use super::util::{effective_uid, lookup_user, run_bounded, run_ok, send_signal, tail};
use super::{DEFAULT_PG_BIN, MD5_PASSWORD, MD5_USER, NOREPL_USER, SCRAM_PASSWORD, SCRAM_USER};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 10;

static SHARED: OnceLock<PgServer> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The Postgres shared by all tests of this test binary (started on first
/// use, stopped at process exit — see the module docs). Panics if it cannot
/// be started.
pub fn server() -> &'static PgServer {
    SHARED.get_or_init(|| {
        let s = PgServer::start().unwrap_or_else(|e| panic!("starting test Postgres: {e:#}"));
        register_atexit();
        s
    })
}

#[allow(unsafe_code)]
fn register_atexit() {
    extern "C" fn stop_shared_server() {
        // Never unwind across the C boundary.
        let _ = std::panic::catch_unwind(|| {
            if let Some(s) = SHARED.get() {
                s.shutdown();
            }
        });
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `atexit` only stores the function pointer. The handler is a
        // plain `extern "C" fn()` that takes no arguments, touches only the
        // `'static` SHARED server (through its Mutex) and catches every panic,
        // so nothing unwinds into C. If registration fails (returns non-zero)
        // the watchdog still cleans up once the process is gone.
        let rc = unsafe { libc::atexit(stop_shared_server) };
        if rc != 0 {
            eprintln!("harness: atexit registration failed; relying on the watchdog");
        }
    });
}

/// The folder with `initdb`, `postgres`, `psql`: `$CDC_TEST_PG_BIN` or the
/// Debian postgresql-15 one.
pub fn pg_bin_dir() -> PathBuf {
    match std::env::var_os("CDC_TEST_PG_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PG_BIN),
    }
}

#[derive(Debug)]
struct State {
    postmaster: Option<Child>,
    /// `sh` watchdog; its piped stdin is our end of the life-line.
    watchdog: Option<Child>,
    shut_down: bool,
}

/// A throwaway Postgres cluster in a temp dir, listening on 127.0.0.1 only.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// (uid, gid) Postgres runs as when we are root.
    run_as: Option<(u32, u32)>,
    major: u32,
    state: Mutex<State>,
}

impl PgServer {
    /// Starts a new private server (initdb + postgres + roles). It is stopped
    /// and its directory removed when the value is dropped.
    pub fn start() -> Result<PgServer> {
        let mut server = Self::empty()?;
        // From here on, an early return drops `server`, which cleans up.
        server.initdb()?;
        server.write_config()?;
        server.start_on_free_port()?;
        server.create_roles()?;
        Ok(server)
    }

    /// A server with its temp dir and watchdog, no cluster yet, not running.
    fn empty() -> Result<PgServer> {
        let bin = pg_bin_dir();
        for tool in ["initdb", "postgres", "psql"] {
            if !bin.join(tool).is_file() {
                bail!(
                    "{} not found (set CDC_TEST_PG_BIN)",
                    bin.join(tool).display()
                );
            }
        }
        let run_as = if effective_uid()? == 0 {
            Some(
                lookup_user("postgres")
                    .or_else(|| lookup_user("nobody"))
                    .ok_or_else(|| anyhow!("running as root but no 'postgres' or 'nobody' user"))?,
            )
        } else {
            None
        };
        let dir = make_temp_dir()?;
        let setup = || -> Result<Child> {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            if let Some((uid, gid)) = run_as {
                chown(&dir, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dir.display()))?;
            }
            spawn_watchdog(&dir)
        };
        let watchdog = match setup() {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(PgServer {
            bin,
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            dir,
            port: 0,
            run_as,
            major: 0,
            state: Mutex::new(State {
                postmaster: None,
                watchdog: Some(watchdog),
                shut_down: false,
            }),
        })
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Major version (from `PG_VERSION`), e.g. 15.
    pub fn major(&self) -> u32 {
        self.major
    }
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    /// Also the `unix_socket_directories` of the server.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Postgres' stderr (server log).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
    /// Postmaster pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.lock().postmaster.as_ref().map(|c| c.id())
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB?sslmode=disable`
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Superuser client on database `db` (panics on failure).
    pub async fn client(&self, db: &str) -> Client {
        let dsn = self.dsn(db);
        try_connect(&dsn)
            .await
            .unwrap_or_else(|e| panic!("connect {dsn}: {}", pg_err(&e)))
    }

    /// Runs SQL (may be several statements, each its own transaction unless
    /// the script says otherwise) through `psql` as superuser; returns
    /// stdout (unaligned, tuples only). Blocking; bounded to 60 s.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let cmd = psql_command(&self.bin.join("psql"), self.port, db);
        let out = run_ok(cmd, Some(sql.as_bytes().to_vec()), PSQL_TIMEOUT)
            .with_context(|| format!("psql on {db}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a uniquely named database (`<hint>_<n>`) and returns it.
    /// Panics on failure.
    pub async fn fresh_db(&self, name_hint: &str) -> TestDb {
        let name = unique_db_name(name_hint);
        let admin = self.client("postgres").await;
        let sql = format!("CREATE DATABASE \"{name}\"");
        let mut attempt = 0;
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                // 55006 object_in_use: "source database template1 is being
                // accessed by other users" — transient with parallel tests.
                Err(e) if attempt < 10 && e.code().map(|c| c.code()) == Some("55006") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => panic!("{sql}: {}", pg_err(&e)),
            }
        }
        TestDb {
            name,
            port: self.port,
            psql: self.bin.join("psql"),
            exec_client: tokio::sync::OnceCell::new(),
        }
    }

    /// Fast shutdown (SIGINT, waits for clients to be disconnected) or
    /// immediate shutdown (SIGQUIT) of the postmaster. Meant for private
    /// servers ([`PgServer::start`]); don't do this to the shared one.
    pub fn stop_postgres(&self, immediate: bool) -> Result<()> {
        let mut st = self.lock();
        if let Some(child) = st.postmaster.take() {
            stop_child(child, if immediate { "QUIT" } else { "INT" }, STOP_TIMEOUT)?;
        }
        Ok(())
    }

    /// Starts the postmaster again on the same port after [`Self::stop_postgres`].
    pub fn start_postgres(&self) -> Result<()> {
        let mut st = self.lock();
        if st.shut_down {
            bail!("server was shut down");
        }
        if st.postmaster.is_some() {
            return Ok(());
        }
        match self.spawn_postmaster(self.port)? {
            Ok(child) => {
                st.postmaster = Some(child);
                Ok(())
            }
            Err(log) => bail!("postgres did not restart on port {}:\n{log}", self.port),
        }
    }

    /// Fast shutdown + start on the same port.
    pub fn restart(&self) -> Result<()> {
        self.stop_postgres(false)?;
        self.start_postgres()
    }

    /// Stops Postgres (immediate) and removes the temp dir. Idempotent.
    /// Turns TLS on (`ssl = on` with this certificate and key, then a config reload).
    /// The key file is written owner-only and owned by the server's user, as Postgres
    /// insists.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        fs::write(&cert, cert_pem)?;
        fs::write(&key, key_pem)?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&cert, Some(uid), Some(gid))?;
            chown(&key, Some(uid), Some(gid))?;
        }
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET ssl_cert_file = '{}'; ALTER SYSTEM SET ssl_key_file = '{}'; ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();",
                cert.display(),
                key.display()
            ),
        )?;
        Ok(())
    }

    pub fn shutdown(&self) {
        let mut st = self.lock();
        if st.shut_down {
            return;
        }
        st.shut_down = true;
        if let Some(child) = st.postmaster.take() {
            if let Err(e) = stop_child(child, "QUIT", STOP_TIMEOUT) {
                eprintln!("harness: stopping postgres: {e:#}");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("harness: removing {}: {e}", self.dir.display());
            }
        }
        if let Some(mut w) = st.watchdog.take() {
            drop(w.stdin.take()); // EOF: the watchdog finds nothing left and exits
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(w.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if matches!(w.try_wait(), Ok(None)) {
                let _ = w.kill();
                let _ = w.wait();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn as_pg_user(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
    }

    fn initdb(&mut self) -> Result<()> {
        let mut cmd = Command::new(self.bin.join("initdb"));
        cmd.arg("-D").arg(&self.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-N",
        ]);
        self.as_pg_user(&mut cmd);
        run_ok(cmd, None, INITDB_TIMEOUT).context("initdb")?;
        let v = fs::read_to_string(self.data.join("PG_VERSION")).context("reading PG_VERSION")?;
        self.major = v
            .trim()
            .split('.')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        Ok(())
    }

    fn write_config(&self) -> Result<()> {
        // Files exist (created by initdb as the Postgres user); appending /
        // truncating keeps their owner.
        let conf = format!(
            "\n# --- cdc-host test harness ---\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{dir}'\n\
             wal_level = logical\n\
             max_connections = 300\n\
             max_replication_slots = 100\n\
             max_wal_senders = 100\n\
             max_prepared_transactions = 20\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n\
             logging_collector = off\n",
            dir = self.dir.display()
        );
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .context("opening postgresql.conf")?;
        f.write_all(conf.as_bytes())?;

        let mut hba = String::from("# written by the cdc-host test harness\n");
        hba.push_str("local all postgres trust\n");
        for kind in ["all", "replication"] {
            hba.push_str(&format!("host {kind} postgres 127.0.0.1/32 trust\n"));
            hba.push_str(&format!(
                "host {kind} {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n"
            ));
            hba.push_str(&format!("host {kind} {MD5_USER} 127.0.0.1/32 md5\n"));
            hba.push_str(&format!("host {kind} {NOREPL_USER} 127.0.0.1/32 trust\n"));
        }
        // Roles a test creates itself log in with a (scram) password.
        hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n");
        hba.push_str("host replication all 127.0.0.1/32 scram-sha-256\n");
        fs::write(self.data.join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
        Ok(())
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match self.spawn_postmaster(port)? {
                Ok(child) => {
                    self.port = port;
                    self.lock().postmaster = Some(child);
                    return Ok(());
                }
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => bail!("postgres failed to start:\n{log}"),
            }
        }
        bail!("postgres failed to find a free port in {PORT_ATTEMPTS} attempts:\n{last}")
    }

    /// Outer error: harness failure; inner `Err(log)`: postgres exited
    /// during startup (log text since the spawn).
    fn spawn_postmaster(&self, port: u16) -> Result<std::result::Result<Child, String>> {
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("opening postgres.log")?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.as_pg_user(&mut cmd);
        let mut child = cmd.spawn().context("spawning postgres")?;
        let pid_file = self.data.join("postmaster.pid");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let text = fs::read(&self.log).unwrap_or_default();
                let since = String::from_utf8_lossy(&text[(log_start as usize).min(text.len())..])
                    .into_owned();
                return Ok(Err(format!("postgres exited ({status}):\n{since}")));
            }
            // postmaster.pid: line 1 = pid, line 8 = status ("ready" once
            // it accepts connections).
            if let Ok(s) = fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = s.lines().collect();
                // A hot standby says "standby" once it accepts (read-only) connections.
                if lines.first().map(|l| l.trim()) == Some(&*child.id().to_string())
                    && matches!(lines.get(7).map(|l| l.trim()), Some("ready" | "standby"))
                {
                    return Ok(Ok(child));
                }
            }
            if Instant::now() > deadline {
                let _ = stop_child(child, "QUIT", STOP_TIMEOUT);
                bail!(
                    "postgres not ready within {STARTUP_TIMEOUT:?}:\n{}",
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create_roles(&self) -> Result<()> {
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {SCRAM_USER} LOGIN REPLICATION PASSWORD '{SCRAM_PASSWORD}';\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {MD5_USER} LOGIN REPLICATION PASSWORD '{MD5_PASSWORD}';\n\
             CREATE ROLE {NOREPL_USER} LOGIN;\n"
        );
        self.psql("postgres", &sql).context("creating roles")?;
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
