//! Service managers: the child supervisor with real processes (a script, and the real hermes gateway),
//! and the systemd manager's unit file and systemctl command lines (systemd does not run here, so a
//! stand-in `systemctl` records its arguments), with the system unit checked by `systemd-analyze`.
//! Run as root, the gateways run as OS users of their own, and the tests check that they do.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use twilight_provision::{
    Backoff, ChildSupervisor, Error, GatewayUser, HermesCli, ProfileName, SecretDelivery, ServiceManager, SystemdManager, SystemdScope,
};

/// A variable of the backend's own that must never reach a gateway.
const CANARY: &str = "TWILIGHT_CANARY_SECRET";

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

/// `/proc/<pid>/status`'s value for `key` (e.g. `Uid`, `Groups`).
/// One line of `/proc/<pid>/smaps_rollup`, in KiB.
fn memory_kib(pid: u32, key: &str) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let line = rollup.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).unwrap();
    line.trim().trim_end_matches(" kB").parse().unwrap()
}

fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).unwrap().trim().to_owned()
}

/// `cat path` as `uid:gid` with no supplementary groups: what a gateway of that user could read.
fn cat_as(uid: u32, gid: u32, path: &Path) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into(), "cat".into()])
        .arg(path)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_real_hermes_gateway_forked_from_the_zygote_is_supervised_restarted_and_stopped() {
    the_real_hermes_gateway_is_supervised_restarted_and_stopped(ChildSupervisor::new, true).await;
}

#[tokio::test]
async fn the_real_hermes_gateway_started_on_its_own_is_supervised_restarted_and_stopped() {
    the_real_hermes_gateway_is_supervised_restarted_and_stopped(ChildSupervisor::without_preload, false).await;
}

async fn the_real_hermes_gateway_is_supervised_restarted_and_stopped(supervisor: fn(HermesCli) -> ChildSupervisor, preloaded: bool) {
    let Some(bin) = common::hermes_bin() else { return };
    // Set before any gateway starts; nothing else in this binary reads it.
    std::env::set_var(CANARY, "hunter2-backend-only");
    let home = common::test_home();
    let cli = HermesCli::new(bin, home.path());
    let template = ProfileName::template();
    cli.install_template(&common::template_dir(), &template).await.unwrap();
    let p = profile();
    let dir = cli.create_profile(&p, &template).await.unwrap();

    let supervisor = supervisor(cli.clone()).with_backoff(fast_backoff()).with_grace(Duration::from_secs(20));
    supervisor.install(&p).await.unwrap();
    supervisor.start(&p).await.unwrap();
    // With no messaging platform configured hermes still runs (cron scheduler only) and writes its pid file.
    let gateway_pid = dir.join("gateway.pid");
    eventually("hermes wrote gateway.pid", || async { std::fs::read_to_string(&gateway_pid).is_ok() }).await;
    let first = supervisor.status(&p).await.unwrap().pid.unwrap();
    assert!(std::fs::read_to_string(&gateway_pid).unwrap().contains(&format!("\"pid\": {first}")));
    let environ = std::fs::read(format!("/proc/{first}/environ")).unwrap();
    let environ: Vec<String> =
        environ.split(|&b| b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    for expected in [
        format!("HERMES_HOME={}", home.path().display()),
        format!("HOME={}", dir.display()),
        format!("HERMES_KANBAN_HOME={}", dir.display()),
        "HERMES_DISABLE_LAZY_INSTALLS=1".to_owned(),
        "MALLOC_ARENA_MAX=2".to_owned(),
    ] {
        assert!(environ.contains(&expected), "{expected} missing from {environ:?}");
    }
    let allowed = [
        "HERMES_HOME",
        "HOME",
        "HERMES_KANBAN_HOME",
        "HERMES_DISABLE_LAZY_INSTALLS",
        "VIRTUAL_ENV",
        "PATH",
        "MALLOC_ARENA_MAX",
        "LANG",
        "LC_ALL",
        "TZ",
    ];
    for variable in &environ {
        let key = variable.split('=').next().unwrap();
        assert!(allowed.contains(&key), "the backend's {key} reached the gateway");
    }
    assert!(!environ.iter().any(|v| v.contains(CANARY) || v.contains("hunter2") || v.starts_with("CARGO")), "{environ:?}");
    let cmdline = std::fs::read(format!("/proc/{first}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
    assert_eq!(args[args.len() - 4..], [b"--profile", p.as_str().as_bytes(), b"gateway", b"run"], "ps shows which gateway it is");
    let parent: u32 = proc_status(first, "PPid").parse().unwrap();
    if preloaded {
        assert_ne!(parent, std::process::id(), "the zygote forked it");
        let zygote_environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{parent}/environ")).unwrap()).into_owned();
        assert!(!zygote_environ.contains(CANARY) && !zygote_environ.contains("CARGO"), "{zygote_environ}");
        let (rss, private) = (memory_kib(first, "Rss"), memory_kib(first, "Private_Clean") + memory_kib(first, "Private_Dirty"));
        assert!(rss - private >= 40 * 1024, "the gateway shares the zygote's libraries: {rss} KiB resident, {private} KiB its own");
    } else {
        assert_eq!(parent, std::process::id(), "a child of ours");
    }

    let user = GatewayUser::for_profile(&p);
    if common::is_root() {
        let account = user.lookup().unwrap().expect("install created the gateway's user");
        assert_eq!(proc_status(first, "Uid"), format!("{0}\t{0}\t{0}\t{0}", account.uid), "the gateway runs as its own user");
        assert_eq!(proc_status(first, "Gid"), format!("{0}\t{0}\t{0}\t{0}", account.gid));
        assert_eq!(proc_status(first, "Groups"), "", "no supplementary groups");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (account.uid, account.gid, 0o700), "the profile is the user's alone");
        let env_file = std::fs::metadata(dir.join(".env")).unwrap();
        assert_eq!((env_file.uid(), env_file.mode() & 0o777), (account.uid, 0o600));
        assert!(std::fs::metadata(dir.join("state.db")).unwrap().uid() == account.uid, "hermes' own files are the user's");
    } else {
        common::skip("not root: gateways share the test's uid, so their OS users are not checked");
    }

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

    let mut last = second;
    if preloaded {
        // The zygote's death takes its gateways along (they would otherwise run on, unsupervised); the next
        // start brings up a new zygote.
        let zygote: u32 = proc_status(second, "PPid").parse().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(zygote as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        eventually("the gateway died with its zygote", || async { !alive(second) }).await;
        eventually("a new zygote forked a new gateway", || async {
            let pid = supervisor.status(&p).await.unwrap().pid;
            pid.is_some_and(|pid| pid != second && alive(pid) && proc_status(pid, "PPid").parse::<u32>().unwrap() != zygote)
        })
        .await;
        last = supervisor.status(&p).await.unwrap().pid.unwrap();
        eventually("the new gateway wrote its pid file", || async {
            std::fs::read_to_string(&gateway_pid).is_ok_and(|s| s.contains(&format!("\"pid\": {last}")))
        })
        .await;
    }

    supervisor.stop(&p).await.unwrap();
    let status = supervisor.status(&p).await.unwrap();
    assert_eq!(status.pid, None);
    assert_ne!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"), "hermes honoured SIGTERM within the grace period");
    assert!(!alive(last));
    supervisor.uninstall(&p).await.unwrap();
    assert_eq!(user.lookup().unwrap(), None, "uninstall deleted the gateway's user");
    supervisor.uninstall(&p).await.unwrap();
    cli.delete_profile(&p).await.unwrap();
}

/// Two profiles as root: each gateway user reads its own `.env` and neither the other's nor the list of
/// profiles; a HERMES_HOME the users cannot reach is refused by name.
#[tokio::test]
async fn gateway_users_cannot_read_each_other() {
    let Some(bin) = common::hermes_bin() else { return };
    if !common::is_root() {
        common::skip("not root: no OS user per gateway to check");
        return;
    }
    let home = common::test_home();
    let cli = HermesCli::new(bin.clone(), home.path().join("hermes"));
    let template = ProfileName::template();
    cli.install_template(&common::template_dir(), &template).await.unwrap();
    let supervisor = ChildSupervisor::new(cli.clone());
    let (a, b) = (profile(), profile());
    for p in [&a, &b] {
        cli.create_profile(p, &template).await.unwrap();
        std::fs::write(cli.env_file(p), format!("TWILIGHT_API_TOKEN=secret-of-{p}\n")).unwrap();
        supervisor.install(p).await.unwrap();
    }
    let account_a = GatewayUser::for_profile(&a).lookup().unwrap().unwrap();
    let account_b = GatewayUser::for_profile(&b).lookup().unwrap().unwrap();
    assert_ne!(account_a, account_b);

    let own = cat_as(account_a.uid, account_a.gid, &cli.env_file(&a));
    assert!(own.status.success(), "{}", String::from_utf8_lossy(&own.stderr));
    assert_eq!(String::from_utf8_lossy(&own.stdout), format!("TWILIGHT_API_TOKEN=secret-of-{a}\n"));
    let other = cat_as(account_a.uid, account_a.gid, &cli.env_file(&b));
    assert!(!other.status.success() && String::from_utf8_lossy(&other.stderr).contains("Permission denied"), "{other:?}");
    assert!(other.stdout.is_empty());
    let logs = cli.home().join("logs");
    if logs.is_dir() {
        assert_eq!(std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o700, "our own hermes logs are ours");
    }
    let listing = std::process::Command::new("setpriv")
        .args([format!("--reuid={}", account_b.uid), format!("--regid={}", account_b.gid), "--clear-groups".into(), "ls".into()])
        .arg(cli.home().join("profiles"))
        .output()
        .unwrap();
    assert!(!listing.status.success(), "the profiles cannot be listed: {}", String::from_utf8_lossy(&listing.stdout));

    for p in [&a, &b] {
        supervisor.uninstall(p).await.unwrap();
        assert_eq!(GatewayUser::for_profile(p).lookup().unwrap(), None);
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(cli.profile_dir(p)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "a profile outliving its user goes back to root, not to a later user with the same uid"
        );
        cli.delete_profile(p).await.unwrap();
    }

    // A HERMES_HOME inside a directory only root may enter.
    let private = common::test_home();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = HermesCli::new(bin, private.path().join("hermes"));
    hidden.install_template(&common::template_dir(), &template).await.unwrap();
    let c = profile();
    hidden.create_profile(&c, &template).await.unwrap();
    let supervisor = ChildSupervisor::new(hidden.clone());
    let err = supervisor.install(&c).await.unwrap_err();
    assert!(matches!(&err, Error::Unreachable { blocked, .. } if blocked == private.path()), "{err}");
    assert!(err.to_string().contains(&private.path().display().to_string()), "{err}");
    supervisor.uninstall(&c).await.unwrap();
    assert_eq!(GatewayUser::for_profile(&c).lookup().unwrap(), None);
}

/// A system unit as root, with a stand-in `systemctl`: install creates the profile's user and hands it the
/// profile before writing a unit that runs as it; uninstall deletes the user.
#[tokio::test]
async fn systemd_system_units_get_a_user_of_their_own() {
    let Some(bin) = common::hermes_bin() else { return };
    if !common::is_root() {
        common::skip("not root: a system unit's gateway user cannot be created");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let systemctl = fake_systemctl(dir.path());
    let home = common::test_home();
    let cli = HermesCli::new(bin, home.path().join("hermes"));
    let template = ProfileName::template();
    cli.install_template(&common::template_dir(), &template).await.unwrap();
    let p = profile();
    let profile_dir = cli.create_profile(&p, &template).await.unwrap();
    let manager = SystemdManager::new(cli.clone(), SystemdScope::System, SecretDelivery::ProfileEnv)
        .with_unit_dir(dir.path().join("units"))
        .with_systemctl(&systemctl)
        .with_hidden_paths([home.path().to_owned()])
        .with_memory_max("256M")
        .unwrap();
    manager.install(&p).await.unwrap();
    let user = GatewayUser::for_profile(&p);
    let account = user.lookup().unwrap().expect("install created the user");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&profile_dir).unwrap().uid(), account.uid);
    let unit = std::fs::read_to_string(manager.unit_path(&p)).unwrap();
    for line in [
        format!("User={user}"),
        format!("Group={user}"),
        format!("TemporaryFileSystem={}:ro", home.path().display()),
        format!("BindPaths={}", profile_dir.display()),
        "MemoryMax=256M".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?} in\n{unit}");
    }
    manager.start(&p).await.unwrap();
    manager.uninstall(&p).await.unwrap();
    assert_eq!(user.lookup().unwrap(), None, "uninstall deleted the user");
    assert!(!manager.unit_path(&p).exists());
    manager.uninstall(&p).await.unwrap();
    cli.delete_profile(&p).await.unwrap();
}

/// The system unit for the real venv as `systemd-analyze` sees it: `verify` accepts it, and `security`
/// rates its exposure at most 2.0 (0 best, 10 worst).
#[tokio::test]
async fn the_system_unit_passes_systemd_analyze() {
    let Some(bin) = common::hermes_bin() else { return };
    let Some(analyze) = common::systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cli = HermesCli::new(bin, "/var/lib/twilight/hermes");
    let manager = SystemdManager::new(cli, SystemdScope::System, SecretDelivery::ProfileEnv)
        .with_unit_dir(dir.path())
        .with_hidden_paths(["/var/lib/twilight", "/var/lib/twilight/secrets", "/etc/twilight"])
        .with_memory_max("512M")
        .unwrap();
    let p = profile();
    let unit = manager.unit_path(&p);
    std::fs::write(&unit, manager.unit_text(&p).unwrap()).unwrap();

    let verify = std::process::Command::new(&analyze).arg("verify").arg(&unit).output().unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{complaints}");
    let (unit_name, user) = (SystemdManager::unit_name(&p), GatewayUser::for_profile(&p));
    assert!(
        !complaints.lines().any(|l| l.contains(&unit_name) || l.contains(user.as_str())),
        "systemd-analyze verify complained:\n{complaints}"
    );

    let security = std::process::Command::new(&analyze).args(["security", "--offline=yes", "--threshold=20"]).arg(&unit).output().unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let overall =
        report.lines().find_map(|l| l.split_once(&format!("Overall exposure level for {unit_name}: "))).map(|(_, rest)| rest.to_owned());
    let overall = overall.unwrap_or_else(|| panic!("no overall exposure in:\n{report}\n{}", String::from_utf8_lossy(&security.stderr)));
    let score: f64 = overall.split_whitespace().next().unwrap().parse().unwrap();
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "systemd-analyze security: {overall}");
    }
    assert!(score <= 2.0 && security.status.success(), "exposure {overall} above 2.0:\n{report}");
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
    let manager = SystemdManager::new(cli, SystemdScope::User, SecretDelivery::ProfileEnv).with_unit_dir(&units).with_systemctl(&systemctl);
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
