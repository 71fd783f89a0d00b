//! What `deploy/` ships, checked by the tools that will read it: the example config loads, the units
//! pass `systemd-analyze verify` (and `security` keeps the unprivileged one tight), Caddy accepts
//! the Caddyfile, and `deploy.sh --dry-run` prints every step in order and runs none.

use std::path::{Path, PathBuf};
use std::process::Command;

use twilight::cfg::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `tool` at one of `paths`; a missing tool fails the test in CI and with
/// `TWILIGHT_REQUIRE_HERMES=1` (scripts/install-deps installs them), else skips it, saying so.
fn tool(name: &str, paths: &[&str]) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.is_file());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if found.is_none() {
        assert!(!ci && std::env::var("TWILIGHT_REQUIRE_HERMES").as_deref() != Ok("1"), "{name} not found (run scripts/install-deps)");
        eprintln!("SKIP: {name} not found; run scripts/install-deps");
    }
    found
}

#[test]
fn the_example_config_is_a_valid_production_config() {
    let config = Config::load(Some(&repo().join("deploy/twilight.example.toml"))).unwrap();
    assert!(!config.sandbox.enabled && !config.scheduler.in_process && !config.provisioner.in_process);
    assert_eq!(config.provisioner.service_manager, "systemd-system");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080", "where the Caddyfile and deploy.sh's health check reach serve");
    assert!(config.aktools(None).unwrap().is_some());
}

#[test]
fn the_units_pass_systemd_analyze() {
    let Some(analyze) = tool("systemd-analyze", &["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    // The binary the units start is this build's (verify wants an executable there).
    for unit in ["twilight@.service", "twilight-provisioner.service", "twilight-replica-fetch.service", "twilight-replica-fetch.timer"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
        let text = text.replace("/opt/twilight/current/twilight", env!("CARGO_BIN_EXE_twilight"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let instances = [
        "twilight@serve.service",
        "twilight@scheduler.service",
        "twilight-provisioner.service",
        "twilight-replica-fetch.service",
        "twilight-replica-fetch.timer",
    ];
    let verify = Command::new(&analyze).arg("verify").args(instances.map(|unit| dir.path().join(unit))).output().unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{complaints}");
    assert!(!complaints.contains("twilight"), "systemd-analyze verify complained:\n{complaints}");

    // Exposure, 0 best and 10 worst: the unprivileged services stay under 2; the provisioner (root,
    // to create gateway users and units) under 5.
    for (unit, most) in [("twilight@serve.service", 2.0), ("twilight-replica-fetch.service", 2.0), ("twilight-provisioner.service", 5.0)] {
        let security = Command::new(&analyze).args(["security", "--offline=yes"]).arg(dir.path().join(unit)).output().unwrap();
        let report = String::from_utf8_lossy(&security.stdout);
        let score: f64 = report
            .lines()
            .find_map(|l| l.split_once(&format!("Overall exposure level for {unit}: ")))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
        eprintln!("systemd-analyze security {unit}: {score}");
        assert!(score <= most, "{unit}: exposure {score} above {most}:\n{report}");
    }
}

#[test]
fn caddy_accepts_the_caddyfile() {
    let Some(caddy) = tool("caddy", &["/usr/bin/caddy"]) else { return };
    let caddyfile = repo().join("deploy/Caddyfile");
    let validate = Command::new(&caddy).args(["validate", "--adapter", "caddyfile", "--config"]).arg(&caddyfile).output().unwrap();
    assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
    let text = std::fs::read_to_string(&caddyfile).unwrap();
    for needed in ["handle /payments/wechat/notify", "handle /admin/*", "Strict-Transport-Security", "reverse_proxy 127.0.0.1:8080"] {
        assert!(text.contains(needed), "the Caddyfile lacks {needed}");
    }
}

#[test]
fn a_dry_run_prints_every_step_in_order_and_runs_none() {
    let scratch = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(repo().join("deploy/deploy.sh"))
            .args(args)
            // A build directory of its own: a dry run must leave it empty.
            .env("CARGO_TARGET_DIR", scratch.path())
            .output()
            .unwrap()
    };
    let dry = run(&["root@twilight.example.com", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{out}{}", String::from_utf8_lossy(&dry.stderr));
    let steps = [
        "cargo build --release --locked -p twilight",
        "useradd --system",
        "ssh 'root@twilight.example.com'",
        "install -m 0644",
        "twilight migrate",
        "mv -T /opt/twilight/current.next /opt/twilight/current",
        "systemctl restart twilight@serve.service twilight@scheduler.service twilight-provisioner.service",
        "http://127.0.0.1:8080/healthz",
        "when the check fails",
        "keep the newest 5 releases",
    ];
    let mut from = 0;
    for step in steps {
        let at = out[from..].find(step).unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{out}"));
        from += at + step.len();
    }
    assert_eq!(out.matches("==> ").count(), 10, "{out}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "a dry run builds and stages nothing");

    for wrong in [&[][..], &["a", "b"], &["host", "--force"]] {
        assert_eq!(run(wrong).status.code(), Some(2), "{wrong:?}");
    }
}
