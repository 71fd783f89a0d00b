//! Service managers: the child supervisor with real processes (a script, and the real hermes gateway),
//! and the systemd manager's unit file and systemctl command lines (systemd does not run here, so a
//! stand-in `systemctl` records its arguments).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use twilight_provision::{
    Backoff, ChildSupervisor, Error, HermesCli, ProfileName, SecretDelivery, ServiceManager, SystemdManager, SystemdScope,
};

fn profile() -> ProfileName {
    ProfileName::for_user(uuid::Uuid::new_v4())
}

fn fast_backoff() -> Backoff {
    Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(200), reset_after: Duration::from_secs(60) }
}

/// Polls `check` every 50 ms for up to 30 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn alive(pid: u32) -> bool {
    // A reaped child has no /proc entry; a zombie would still show "Z".
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

fn script_launcher(script: &'static str) -> twilight_provision::Launcher {
    Arc::new(move |_profile: &ProfileName| {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    })
}

#[tokio::test]
async fn a_crashing_gateway_is_restarted_with_capped_backoff() {
    let supervisor = ChildSupervisor::with_launcher(script_launcher("sleep 0.05; exit 3")).with_backoff(fast_backoff());
    let p = profile();
    assert!(matches!(supervisor.start(&p).await, Err(Error::NotInstalled(_))));
    supervisor.install(&p).await.unwrap();
    supervisor.install(&p).await.unwrap();
    supervisor.start(&p).await.unwrap();
    supervisor.start(&p).await.unwrap();

    let started = std::time::Instant::now();
    eventually("eight restarts", || async { supervisor.status(&p).await.unwrap().restarts >= 8 }).await;
    // Delays 50+100+6×200 ms = 1.35 s: doubling, capped at 200 ms (uncapped they would add up to 12.75 s).
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1350) && elapsed < Duration::from_secs(6), "{elapsed:?}");
    let status = supervisor.status(&p).await.unwrap();
    assert!(status.installed);
    assert_eq!(status.last_exit.as_deref(), Some("exit status: 3"));

    supervisor.stop(&p).await.unwrap();
    let restarts = supervisor.status(&p).await.unwrap().restarts;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(supervisor.status(&p).await.unwrap().restarts, restarts, "no restarts after stop");
    supervisor.uninstall(&p).await.unwrap();
    assert_eq!(supervisor.status(&p).await.unwrap(), Default::default());
}

#[tokio::test]
async fn stop_escalates_to_sigkill_for_a_gateway_ignoring_sigterm() {
    // The child and its grandchild both ignore SIGTERM; the grandchild must not outlive the stop.
    let dir = tempfile::tempdir().unwrap();
    let grandchild_pid = dir.path().join("grandchild.pid");
    let script: &'static str = Box::leak(
        format!("trap '' TERM; sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 60' & wait", grandchild_pid.display()).into_boxed_str(),
    );
    let supervisor =
        ChildSupervisor::with_launcher(script_launcher(script)).with_backoff(fast_backoff()).with_grace(Duration::from_millis(300));
    let p = profile();
    supervisor.install(&p).await.unwrap();
    supervisor.start(&p).await.unwrap();
    eventually("the grandchild runs", || async { std::fs::read_to_string(&grandchild_pid).is_ok_and(|s| !s.trim().is_empty()) }).await;
    let pid = supervisor.status(&p).await.unwrap().pid.unwrap();
    let grandchild: u32 = std::fs::read_to_string(&grandchild_pid).unwrap().trim().parse().unwrap();

    let stopping = std::time::Instant::now();
    supervisor.stop(&p).await.unwrap();
    assert!(stopping.elapsed() >= Duration::from_millis(300), "waited the grace period first");
    let status = supervisor.status(&p).await.unwrap();
    assert_eq!(status.pid, None);
    assert_eq!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    assert!(!alive(pid));
    eventually("the grandchild is gone", || async { !alive(grandchild) }).await;
}

#[tokio::test]
async fn the_real_hermes_gateway_is_supervised_restarted_and_stopped() {
    let Some(bin) = common::hermes_bin() else { return };
    let home = common::test_home();
    let cli = HermesCli::new(bin, home.path());
    let template = ProfileName::template();
    cli.install_template(&common::template_dir(), &template).await.unwrap();
    let p = profile();
    let dir = cli.create_profile(&p, &template).await.unwrap();

    let supervisor = ChildSupervisor::new(cli.clone()).with_backoff(fast_backoff()).with_grace(Duration::from_secs(20));
    supervisor.install(&p).await.unwrap();
    supervisor.start(&p).await.unwrap();
    // With no messaging platform configured hermes still runs (cron scheduler only) and writes its pid file.
    let gateway_pid = dir.join("gateway.pid");
    eventually("hermes wrote gateway.pid", || async { std::fs::read_to_string(&gateway_pid).is_ok() }).await;
    let first = supervisor.status(&p).await.unwrap().pid.unwrap();
    assert!(std::fs::read_to_string(&gateway_pid).unwrap().contains(&format!("\"pid\": {first}")));
    let environ = std::fs::read(format!("/proc/{first}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains(&format!("HERMES_HOME={}", home.path().display())), "{environ}");
    assert!(environ.contains("HERMES_DISABLE_LAZY_INSTALLS=1"));
    assert!(!environ.contains("CARGO"), "the backend's environment does not reach the gateway");

    // A crash (SIGKILL leaves a stale pid file behind) is followed by a restart that hermes accepts.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    eventually("the gateway was restarted", || async {
        let status = supervisor.status(&p).await.unwrap();
        status.restarts == 1 && status.pid.is_some_and(|pid| pid != first)
    })
    .await;
    let second = supervisor.status(&p).await.unwrap().pid.unwrap();
    assert_eq!(supervisor.status(&p).await.unwrap().last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    eventually("the new gateway wrote its pid file", || async {
        std::fs::read_to_string(&gateway_pid).is_ok_and(|s| s.contains(&format!("\"pid\": {second}")))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(second), "hermes kept running after taking over the stale pid file");

    supervisor.stop(&p).await.unwrap();
    let status = supervisor.status(&p).await.unwrap();
    assert_eq!(status.pid, None);
    assert_ne!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"), "hermes honoured SIGTERM within the grace period");
    assert!(!alive(second));
    cli.delete_profile(&p).await.unwrap();
}

/// A stand-in `systemctl` that records its arguments and answers `show` like systemd.
fn fake_systemctl(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("systemctl");
    let log = dir.join("systemctl.log");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in *show*) printf 'ActiveState=active\\nMainPID=4242\\nNRestarts=3\\nExecMainCode=1\\nExecMainStatus=0\\n';; esac\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn systemd_manager_writes_the_unit_and_drives_systemctl() {
    let dir = tempfile::tempdir().unwrap();
    let systemctl = fake_systemctl(dir.path());
    let units = dir.path().join("units");
    let cli = HermesCli::new("/opt/venv/bin/hermes", "/var/lib/twilight/hermes");
    let manager = SystemdManager::new(cli, SystemdScope::User, SecretDelivery::ProfileEnv)
        .with_unit_dir(&units)
        .with_systemctl(&systemctl);
    let p = ProfileName::parse("user-abc").unwrap();

    assert_eq!(manager.status(&p).await.unwrap(), Default::default());
    assert!(matches!(manager.start(&p).await, Err(Error::NotInstalled(_))));
    manager.stop(&p).await.unwrap();
    manager.uninstall(&p).await.unwrap();

    manager.install(&p).await.unwrap();
    let unit = std::fs::read_to_string(units.join("hermes-gateway-user-abc.service")).unwrap();
    assert_eq!(unit, manager.unit_text(&p).unwrap());
    manager.start(&p).await.unwrap();
    let status = manager.status(&p).await.unwrap();
    assert_eq!((status.installed, status.pid, status.restarts), (true, Some(4242), 3));
    assert_eq!(status.last_exit.as_deref(), Some("exit status: 0"));
    manager.stop(&p).await.unwrap();
    manager.uninstall(&p).await.unwrap();
    assert!(!units.join("hermes-gateway-user-abc.service").exists());

    let unit = "hermes-gateway-user-abc.service";
    let expected = [
        "--user daemon-reload".to_owned(),
        format!("--user enable {unit}"),
        format!("--user enable --now {unit}"),
        format!("--user show {unit} --property=ActiveState,MainPID,NRestarts,ExecMainCode,ExecMainStatus"),
        format!("--user stop {unit}"),
        format!("--user disable --now {unit}"),
        "--user daemon-reload".to_owned(),
    ];
    let log = std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);
}
