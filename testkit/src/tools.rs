//! Tests that need a tool from outside Rust (Chromium, Python grpcio, PostgreSQL, an S3
//! server). `scripts/test` installs them and sets `EFA_REQUIRE_TOOLS=1`; so does CI. With
//! it (or `CI` set), a missing tool fails the test. Without it, the test is skipped and says
//! so on the terminal, not only in captured output.

use std::io::Write;

/// True if tools must be present (`EFA_REQUIRE_TOOLS=1` or `CI` set).
pub fn required() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
    set("EFA_REQUIRE_TOOLS") || set("CI")
}

/// Decides whether `test` can run with a tool whose check gave `available`. Returns true to
/// run; false after announcing the skip on the terminal; panics when tools are required.
pub fn check(test: &str, available: Result<(), String>, install: &str) -> bool {
    match available {
        Ok(()) => true,
        Err(why) if required() => panic!("{test}: {why}; scripts/test installs it ({install})"),
        Err(why) => {
            // Straight to the terminal: the test harness captures `eprintln!` of passing tests.
            let line = format!("\nSKIPPED {test}: {why}. Install it ({install}) or run scripts/test.\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            false
        }
    }
}
