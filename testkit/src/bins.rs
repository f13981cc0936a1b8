//! The workspace's binaries for tests that run them as processes (the fault suite, the
//! README walkthrough), built with the profile of the running test binary: `cargo` does
//! nothing when they are up to date, and always building means a test never runs stale code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Builds the binaries of `packages` and returns the directory they are in
/// (`target/<profile>/`). Panics with cargo's output if the build fails.
pub fn build(packages: &[&str]) -> PathBuf {
    // This test runs from target/<profile>/deps/; the binaries land in target/<profile>/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps layout").to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // Drop what cargo set for this test process: build scripts that watch such variables
    // (ring watches CARGO_MANIFEST_DIR) would otherwise rebuild on every switch between
    // this build and a plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.current_dir(&workspace).arg("build");
    for p in packages {
        cmd.args(["-p", p]);
    }
    cmd.args(["--bins", "--target-dir"]).arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    if !out.status.success() {
        panic!("building {} failed ({}):\n{}", packages.join(", "), out.status, String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("binaries of {} ready in {} ({:.1?})", packages.join(", "), profile_dir.display(), started.elapsed());
    profile_dir
}
