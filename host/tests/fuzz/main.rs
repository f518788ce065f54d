//! Fuzz targets, written as property tests (proptest): everything that reads bytes from the
//! server must turn any input into a value or a typed error, never a panic.
//!
//! - [`pgoutput`]: `parse_copy_data` and `decode` on arbitrary bytes, on valid encodings of
//!   every message kind (round trip, every prefix), and on those encodings mutated
//!   (truncated, bytes flipped, counts and lengths set to extremes).
//! - [`value`]: `parse_text` for every type it knows, on arbitrary bytes, on valid texts
//!   (round trip through `write_json`) and on mutated ones; array literals; the JSON validator
//!   against serde_json.
//! - [`mapping`]: tuples against their relation (widths that do not match, values that do not
//!   parse, binary values).
//!
//! Each target runs `CDC_FUZZ_CASES` cases (default [`DEFAULT_CASES`], sized so the whole
//! set stays far below a minute in a debug `cargo test` on two busy cores). `scripts/fuzz`
//! runs this test binary (`cargo test -p cdc-host --test fuzz`) in release mode with many
//! more cases. A failure is shrunk by proptest, its seed saved under
//! `host/tests/proptest-regressions/` (replayed first on every later run), and the shrunk
//! input should become a plain regression test next to the code it broke.
//!
//! The targets drive the library through its public API (`cdc_host::pgoutput`,
//! `cdc_host::value`, `cdc_host::source::mapping`), as any other consumer would.

mod mapping;
mod pgoutput;
mod value;

use std::cell::Cell;
use std::fmt::Debug;
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// Cases per target when `CDC_FUZZ_CASES` is not set.
pub(crate) const DEFAULT_CASES: u32 = 5_000;

/// `CDC_FUZZ_CASES`, or [`DEFAULT_CASES`].
fn cases() -> u32 {
    match std::env::var("CDC_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("CDC_FUZZ_CASES={v:?} is not a case count")),
        Err(_) => DEFAULT_CASES,
    }
}

/// Runs one fuzz target: `cases()` inputs from `strategy` through `test`. A panic inside
/// `test` is caught by proptest, shrunk to a minimal input and reported as a failure.
/// Prints `fuzz target NAME: N cases passed in Ts` (shown with `--nocapture`; `scripts/fuzz`
/// collects these lines).
fn fuzz<S>(
    name: &str,
    source_file: &'static str,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    let config = Config {
        cases: cases(),
        // Regressions are stored per source file (proptest's usual layout).
        source_file: Some(source_file),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0u64);
    let start = Instant::now();
    let result = runner.run(&strategy, |input| {
        ran.set(ran.get() + 1);
        test(input)
    });
    if let Err(e) = result {
        panic!("fuzz target {name} failed after {} cases: {e}", ran.get());
    }
    println!(
        "fuzz target {name}: {} cases passed in {:.2}s",
        ran.get(),
        start.elapsed().as_secs_f64()
    );
}
