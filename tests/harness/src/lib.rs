//! Integration-test harness for `cdc-host` and `cdc-sinks` (crate `cdc-test-harness`, a
//! dev-dependency of both; not published).
//!
//! What it gives:
//!
//! * [`server()`] — one throwaway Postgres per test binary (lazily started,
//!   shared by all tests of that binary: every module of `host/tests/it`).
//!   [`PgServer::start()`] gives a private one (e.g. for restart tests) that
//!   is stopped when dropped.
//! * [`PgServer::fresh_db`] — a uniquely named database per test ([`TestDb`]).
//! * [`HostProcess`] — the `cdc-host` binary running `run <config>` with its
//!   stdout/stderr captured to files.
//! * [`write_config`], [`confirmed_flush_lsn`], [`current_wal_lsn`],
//!   [`wait_for_confirmed_flush`], [`wait_confirmed_to_now`].
//! * [`heavy()`] — a lock that keeps the long, machine-loading tests from
//!   running at the same time as each other.
//! * [`http_receiver`], [`nats_server`], [`proxy`] — the servers sink and
//!   fault tests talk to.
//!
//! Which Postgres: `/usr/lib/postgresql/15/bin`, or the folder named by the
//! env var `CDC_TEST_PG_BIN` (it must hold `initdb`, `postgres`, `psql`).
//!
//! How no Postgres is left behind (see `pg.rs` for details):
//! 1. the shared server is stopped by a `libc::atexit` handler, which runs
//!    when the test binary exits normally — also when tests failed (libtest
//!    exits through `std::process::exit`);
//! 2. for every server a small watchdog `sh` is started whose stdin is a
//!    pipe held open only by the test process. When the test process dies
//!    in any way (SIGKILL, abort, Ctrl-C) the kernel closes the pipe, the
//!    watchdog reads EOF, SIGQUITs the postmaster and removes the temp dir.
//! 3. a private [`PgServer`] is stopped on `Drop`.

mod heavy;
mod host;
pub mod http_receiver;
pub mod nats_server;
mod pg;
pub mod proxy;
mod util;

pub use heavy::heavy;
pub use host::{host_command, write_config, HostProcess};
pub use pg::{
    confirmed_flush_lsn, current_wal_lsn, pg_err, server, try_connect, wait_confirmed_to_now,
    wait_for_confirmed_flush, PgServer, TestDb,
};
pub use util::process_alive;

/// Superuser; `trust` on 127.0.0.1 for normal and replication connections.
pub const SUPERUSER: &str = "postgres";
/// REPLICATION LOGIN role authenticated with scram-sha-256.
pub const SCRAM_USER: &str = "cdc_scram";
pub const SCRAM_PASSWORD: &str = "scram-secret";
/// REPLICATION LOGIN role authenticated with md5 (password stored as md5).
pub const MD5_USER: &str = "cdc_md5";
pub const MD5_PASSWORD: &str = "md5-secret";
/// LOGIN role *without* REPLICATION; `trust` auth (no password).
pub const NOREPL_USER: &str = "cdc_norepl";

/// Default folder of the Postgres binaries when `CDC_TEST_PG_BIN` is unset.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
