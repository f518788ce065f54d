//! cdc-sinks' integration tests: one test binary, one module per sink, against real servers
//! from `cdc-test-harness` (a `nats-server` per test, a scriptable HTTP receiver).
//!
//! The NATS tests install a process-wide `tracing` subscriber (`try_init`, first one wins)
//! that writes the sinks' logs into the captured test output; HTTP tests running after one
//! of them capture their sink's logs too.

mod atomic;
mod http;
mod nats;
