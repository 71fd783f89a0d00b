//! Gateways as our own child processes, for machines without systemd: each profile's gateway is started,
//! restarted with capped exponential backoff whenever it exits, and stopped with SIGTERM then SIGKILL —
//! what `Restart=`, `KillMode=mixed` and `TimeoutStopSec=` do in the unit.
//!
//! Run as root, each gateway runs as its profile's own OS user ([`super::GatewayUser`]; uid and gid, no
//! supplementary groups) with an environment of its own ([`HermesCli::gateway_command`]). Run as anyone
//! else, the gateways share our uid: a normal user cannot switch to another.
//!
//! hermes' gateways are forked from a preloaded [`Zygote`] unless told otherwise
//! ([`ChildSupervisor::without_preload`]): the same process, environment and user, in about half the memory.

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::identity::{Account, Isolation};
use super::zygote::{Forked, Zygote};
use super::{ServiceManager, ServiceStatus};
use crate::error::{Error, Result};
use crate::hermes::HermesCli;
use crate::names::ProfileName;

/// Builds the command that runs one profile's gateway.
pub type Launcher = Arc<dyn Fn(&ProfileName) -> Command + Send + Sync>;

/// How long to wait before restarting a gateway that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay; each further consecutive exit doubles it …
    pub initial: Duration,
    /// … up to this cap.
    pub max: Duration,
    /// A run at least this long counts as healthy: the next delay starts from `initial` again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60), reset_after: Duration::from_secs(60) }
    }
}

/// Supervises one gateway child per started profile. Dropping it kills the children.
pub struct ChildSupervisor {
    launch: Launch,
    /// Per-gateway OS users; `None` when not root, or for launchers other than hermes'.
    isolation: Option<Isolation>,
    backoff: Backoff,
    grace: Duration,
    profiles: Mutex<HashMap<ProfileName, Entry>>,
}

/// How a gateway process comes to be.
#[derive(Clone)]
enum Launch {
    Command(Launcher),
    Zygote(Arc<Zygote>),
}

/// A running gateway, whichever way it was launched.
enum Gateway {
    Child(Child),
    Forked(Forked),
}

impl Gateway {
    fn id(&self) -> Option<u32> {
        match self {
            Gateway::Child(child) => child.id(),
            Gateway::Forked(forked) => Some(forked.id()),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Gateway::Child(child) => child.wait().await,
            Gateway::Forked(forked) => forked.wait().await,
        }
    }
}

struct Entry {
    state: Arc<Mutex<ServiceStatus>>,
    running: Option<Running>,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ChildSupervisor {
    /// Runs `hermes --profile NAME gateway run` forked from a [`Zygote`]; as root, as the profile's own
    /// user, which `install` and `start` create and hand the profile to, and `uninstall` deletes.
    pub fn new(hermes: HermesCli) -> ChildSupervisor {
        let isolation = Isolation::detect(&hermes);
        ChildSupervisor::launching(Launch::Zygote(Arc::new(Zygote::new(hermes))), isolation)
    }

    /// As [`ChildSupervisor::new`], but each gateway starts its own interpreter
    /// ([`HermesCli::gateway_command`]): the way to rule the zygote out.
    pub fn without_preload(hermes: HermesCli) -> ChildSupervisor {
        let isolation = Isolation::detect(&hermes);
        ChildSupervisor::launching(Launch::Command(Arc::new(move |profile: &ProfileName| hermes.gateway_command(profile))), isolation)
    }

    /// Runs whatever `launcher` builds (tests; other runtimes), as we run.
    pub fn with_launcher(launcher: Launcher) -> ChildSupervisor {
        ChildSupervisor::launching(Launch::Command(launcher), None)
    }

    fn launching(launch: Launch, isolation: Option<Isolation>) -> ChildSupervisor {
        ChildSupervisor { launch, isolation, backoff: Backoff::default(), grace: Duration::from_secs(15), profiles: Mutex::default() }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> ChildSupervisor {
        self.backoff = backoff;
        self
    }

    /// How long `stop` waits after SIGTERM before SIGKILL (default 15 s).
    pub fn with_grace(mut self, grace: Duration) -> ChildSupervisor {
        self.grace = grace;
        self
    }

    fn profiles(&self) -> MutexGuard<'_, HashMap<ProfileName, Entry>> {
        self.profiles.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The account the profile's gateway runs as, with the profile handed to it and everything it needs
    /// checked to be reachable; `None` without isolation.
    async fn prepare(&self, profile: &ProfileName) -> Result<Option<Account>> {
        let Some(isolation) = &self.isolation else { return Ok(None) };
        let (user, account) = isolation.prepare(profile).await?;
        isolation.check_reachable(profile, &user, account, &[])?;
        Ok(Some(account))
    }
}

impl Drop for ChildSupervisor {
    /// Aborting a supervision task drops its child, and `kill_on_drop` kills it.
    fn drop(&mut self) {
        for entry in self.profiles().values_mut() {
            if let Some(running) = entry.running.take() {
                running.task.abort();
            }
        }
    }
}

#[async_trait]
impl ServiceManager for ChildSupervisor {
    async fn install(&self, profile: &ProfileName) -> Result<()> {
        self.prepare(profile).await?;
        self.profiles().entry(profile.clone()).or_insert_with(|| Entry {
            state: Arc::new(Mutex::new(ServiceStatus { installed: true, ..ServiceStatus::default() })),
            running: None,
        });
        Ok(())
    }

    async fn start(&self, profile: &ProfileName) -> Result<()> {
        if !self.profiles().contains_key(profile) {
            return Err(Error::NotInstalled(profile.to_string()));
        }
        // Again, even for a running gateway: the provisioner may have written into the profile (as root)
        // since `install`, and the gateway rereads its files when it restarts.
        let account = self.prepare(profile).await?;
        let first_launch = {
            let mut profiles = self.profiles();
            let entry = profiles.get_mut(profile).ok_or_else(|| Error::NotInstalled(profile.to_string()))?;
            if entry.running.as_ref().is_some_and(|r| !r.task.is_finished()) {
                return Ok(());
            }
            let cancel = CancellationToken::new();
            let (launched, first_launch) = oneshot::channel();
            let supervision = Supervision {
                profile: profile.clone(),
                launch: self.launch.clone(),
                account,
                backoff: self.backoff,
                grace: self.grace,
                state: entry.state.clone(),
                cancel: cancel.clone(),
            };
            let task = tokio::spawn(supervise(supervision, launched));
            entry.running = Some(Running { cancel, task });
            first_launch
        };
        // Returns once the gateway has a pid (or its first launch failed, which `status` tells): a fork
        // from the zygote waits for the zygote's preload when it is the first.
        let _ = first_launch.await;
        Ok(())
    }

    async fn stop(&self, profile: &ProfileName) -> Result<()> {
        let running = self.profiles().get_mut(profile).and_then(|e| e.running.take());
        if let Some(Running { cancel, task }) = running {
            cancel.cancel();
            let _ = task.await;
        }
        Ok(())
    }

    async fn status(&self, profile: &ProfileName) -> Result<ServiceStatus> {
        Ok(self.profiles().get(profile).map(|e| lock(&e.state).clone()).unwrap_or_default())
    }

    /// Also deletes the profile's OS user, whether or not this supervisor installed the gateway (a
    /// restarted provisioner deprovisioning a user it never started).
    async fn uninstall(&self, profile: &ProfileName) -> Result<()> {
        self.stop(profile).await?;
        self.profiles().remove(profile);
        match &self.isolation {
            Some(isolation) => isolation.remove(profile).await,
            None => Ok(()),
        }
    }
}

fn lock(state: &Mutex<ServiceStatus>) -> MutexGuard<'_, ServiceStatus> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything one gateway's supervision task needs.
struct Supervision {
    profile: ProfileName,
    launch: Launch,
    account: Option<Account>,
    backoff: Backoff,
    grace: Duration,
    state: Arc<Mutex<ServiceStatus>>,
    cancel: CancellationToken,
}

/// Keeps one gateway running until `cancel` fires; `launched` hears when the first launch is over.
async fn supervise(supervision: Supervision, launched: oneshot::Sender<()>) {
    let Supervision { profile, launch, account, backoff, grace, state, cancel } = supervision;
    let mut launched = Some(launched);
    let mut delay = backoff.initial;
    loop {
        let started = Instant::now();
        let gateway = launch_gateway(&launch, &profile, account).await;
        match &gateway {
            Err(e) => lock(&state).last_exit = Some(format!("could not start: {e}")),
            Ok(child) => lock(&state).pid = child.id(),
        }
        if let Some(launched) = launched.take() {
            let _ = launched.send(());
        }
        match gateway {
            Err(e) => tracing::error!(%profile, error = %e, "gateway could not start"),
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(%profile, pid, "gateway started");
                let ended = tokio::select! {
                    status = child.wait() => status,
                    () = cancel.cancelled() => terminate(&mut child, grace).await,
                };
                kill_group(pid);
                let description = match ended {
                    Ok(status) => describe(status),
                    Err(e) => format!("lost track of the process: {e}"),
                };
                {
                    let mut state = lock(&state);
                    state.pid = None;
                    state.last_exit = Some(description.clone());
                }
                if cancel.is_cancelled() {
                    tracing::info!(%profile, %description, "gateway stopped");
                    return;
                }
                tracing::warn!(%profile, %description, restart_in = ?delay, "gateway exited");
            }
        }
        if started.elapsed() >= backoff.reset_after {
            delay = backoff.initial;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return,
        }
        delay = (delay * 2).min(backoff.max);
        lock(&state).restarts += 1;
    }
}

/// Starts one gateway in a process group of its own (so whatever it spawned goes with it), with nothing
/// on its stdio (hermes keeps its own logs under the profile's logs/).
async fn launch_gateway(launch: &Launch, profile: &ProfileName, account: Option<Account>) -> std::io::Result<Gateway> {
    match launch {
        Launch::Zygote(zygote) => zygote.spawn(profile, account).await.map(Gateway::Forked),
        Launch::Command(launcher) => {
            let mut command = launcher(profile);
            command.process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
            if let Some(account) = account {
                // Setting the uid as root also drops every supplementary group (std calls setgroups(0, NULL)).
                command.uid(account.uid).gid(account.gid);
            }
            command.spawn().map(Gateway::Child)
        }
    }
}

/// SIGTERM, then SIGKILL to the whole group (the gateway leads it) if it has not exited after `grace`.
async fn terminate(gateway: &mut Gateway, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(pid) = gateway.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, gateway.wait()).await {
        Ok(status) => status,
        Err(_) => {
            kill_group(gateway.id());
            gateway.wait().await
        }
    }
}

/// Kills what is left of a gateway's process group (its tool subprocesses); nothing left is fine.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal().and_then(|s| Signal::try_from(s).ok()) {
        Some(signal) => format!("signal: {} ({signal})", signal as i32),
        None => status.to_string(),
    }
}
