//! Finding the project-made hermes venv (`scripts/install-hermes`), homes hermes accepts, and
//! `systemd-analyze`.
//!
//! Run as root, gateways run as users of their own, who must be able to reach the venv and the test
//! homes: root's defaults live outside /root (0700), in /opt/twilight/hermes-venv and
//! /var/cache/twilight-test-homes.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

/// `TWILIGHT_HERMES_BIN`, else the default venv (as `scripts/install-hermes` picks it). Missing hermes
/// fails the test when `CI` or `TWILIGHT_REQUIRE_HERMES=1` is set (so CI cannot pass by skipping);
/// otherwise it skips loudly.
pub fn hermes_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("TWILIGHT_HERMES_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let venv = std::env::var_os("TWILIGHT_HERMES_VENV").map(PathBuf::from).unwrap_or_else(|| match is_root() {
            true => PathBuf::from("/opt/twilight/hermes-venv"),
            false => home().join(".cache/twilight-hermes-venv"),
        });
        venv.join("bin/hermes")
    });
    if bin.is_file() {
        return Some(bin);
    }
    assert!(!required(), "hermes not found at {} (run scripts/install-hermes)", bin.display());
    skip(&format!("hermes not found at {}; run scripts/install-hermes (TWILIGHT_REQUIRE_HERMES=1 makes this fail)", bin.display()));
    None
}

/// `systemd-analyze` (Debian package `systemd`; `scripts/install-deps`), required like hermes.
pub fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        assert!(!required(), "systemd-analyze not found (run scripts/install-deps)");
        skip("systemd-analyze not found; run scripts/install-deps (TWILIGHT_REQUIRE_HERMES=1 makes this fail)");
    }
    found
}

/// Whether a missing tool fails the test instead of skipping it: in CI and with `TWILIGHT_REQUIRE_HERMES=1`.
fn required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    ci || std::env::var("TWILIGHT_REQUIRE_HERMES").as_deref() == Ok("1")
}

/// Root gets per-gateway OS users (and the tests that check them).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Says a test did not run, on stderr itself: `eprintln!` is captured by the test harness and would hide it.
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED: {why} !!!!!\n");
}

/// A fresh directory outside /tmp (hermes refuses a HERMES_HOME under /tmp for services), removed on drop;
/// searchable by other users (0711), so a gateway user can reach a HERMES_HOME inside it.
pub fn test_home() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = if is_root() { PathBuf::from("/var/cache/twilight-test-homes") } else { home().join(".cache/twilight-test-homes") };
    std::fs::create_dir_all(&root).unwrap();
    if is_root() {
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let home = tempfile::Builder::new().prefix("provision-").tempdir_in(root).unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    home
}

/// The repository's `template/` directory.
pub fn template_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).expect("HOME is set")
}
