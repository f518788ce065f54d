//! cdc-host's integration tests: one test binary, one module per area, all against real
//! servers started by `cdc-test-harness` (`tests/harness/`) and the real `cdc-host` binary
//! as a child process.
//!
//! One binary rather than one per file: the crate and the harness are linked once, and the
//! throwaway Postgres of [`cdc_test_harness::server()`] is started once and shared by every
//! module (each test has its own database and slot; slot names are unique across modules).
//! Tests that load the machine for a long time take [`cdc_test_harness::heavy()`] so that
//! no two of them share the cores.
//!
//! Run one area with a module filter, e.g.
//! `cargo test -p cdc-host --test it config_errors::`.

mod common;
mod fixtures;

mod admin;
mod binary_values;
mod config_errors;
mod crash_loop;
mod failover;
mod faults;
mod guarantees;
mod harness_smoke;
mod replication;
mod schema;
mod sinks;
mod snapshot;
mod streaming;
mod tls;
mod transforms;
mod transforms_batch;
mod transforms_langs;
mod transforms_wit;
mod two_phase;
mod windows;
