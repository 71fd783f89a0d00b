//! Finding the project-made hermes venv (`scripts/install-hermes`) and homes hermes accepts.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

/// `TWILIGHT_HERMES_BIN`, else the default venv. Missing hermes fails the test when `CI` or
/// `TWILIGHT_REQUIRE_HERMES=1` is set (so CI cannot pass by skipping); otherwise it skips loudly.
pub fn hermes_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("TWILIGHT_HERMES_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let venv = std::env::var_os("TWILIGHT_HERMES_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache/twilight-hermes-venv"));
        venv.join("bin/hermes")
    });
    if bin.is_file() {
        return Some(bin);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let required = ci || std::env::var("TWILIGHT_REQUIRE_HERMES").as_deref() == Ok("1");
    assert!(!required, "hermes not found at {} (run scripts/install-hermes)", bin.display());
    skip(&format!("hermes not found at {}; run scripts/install-hermes (TWILIGHT_REQUIRE_HERMES=1 makes this fail)", bin.display()));
    None
}

/// Says a test did not run, on stderr itself: `eprintln!` is captured by the test harness and would hide it.
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED: {why} !!!!!\n");
}

/// A fresh directory outside /tmp (hermes refuses a HERMES_HOME under /tmp for services), removed on drop.
pub fn test_home() -> tempfile::TempDir {
    let root = home().join(".cache/twilight-test-homes");
    std::fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new().prefix("provision-").tempdir_in(root).unwrap()
}

/// The repository's `template/` directory.
pub fn template_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).expect("HOME is set")
}
