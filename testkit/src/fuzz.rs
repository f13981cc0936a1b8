//! The fuzz harness shared by the property tests of every crate: proptest
//! runs with a case count from `EFA_FUZZ_CASES`, and a one-line report of executions and
//! wall time.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseResult, TestRunner};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Cases per property: `EFA_FUZZ_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("EFA_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Runs `test` on `cases(default_cases)` values of `strategy`, reports the executions
/// (including shrinking) and wall time on stderr, and panics with the shrunk input on
/// failure. Regressions are saved next to `source_file` (pass `file!()`).
pub fn fuzz<S>(
    source_file: &'static str,
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    let mut config = ProptestConfig::with_cases(cases(default_cases));
    config.source_file = Some(source_file);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions")));
    let mut runner = TestRunner::new(config);
    let executions = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} executions in {:.2?}{}",
        executions.load(Ordering::Relaxed),
        started.elapsed(),
        if result.is_ok() { "" } else { " (FAILED)" }
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}
