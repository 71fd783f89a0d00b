//! Gateways forked from one preloaded Python process instead of each starting its own interpreter.
//!
//! A gateway that starts on its own imports about 2,700 modules, most of them hermes' libraries (openai,
//! pydantic, mcp, aiohttp, rich, …), and that module code is most of its private memory. The zygote
//! (`zygote.py`, run with the venv's interpreter) imports those libraries once, then forks one gateway per
//! request; the forks share the libraries' pages copy-on-write. hermes itself is imported only in each
//! fork, after it has become its profile's OS user with its profile's environment, because hermes caches
//! `HERMES_HOME` at import. README, "Capacity", has the figures.
//!
//! The forks are the zygote's children, not ours: the zygote reports each one's pid and, later, its exit
//! status; we signal them by pid as we would our own. They die with the zygote (`PR_SET_PDEATHSIG`), and
//! the zygote stops them all and exits when we close its stdin, which dropping [`Zygote`] does.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

use super::identity::Account;
use crate::hermes::HermesCli;
use crate::names::ProfileName;

const SCRIPT: &str = include_str!("zygote.py");
/// A variable of the zygote's own environment whose only job is room: each fork rewrites the process's
/// environment block to show its own variables, and it cannot grow that block.
const RESERVE_VARIABLE: &str = "TWILIGHT_ZYGOTE_RESERVE";
const RESERVE: usize = 4096;
/// How long a fork may take to be reported (it queues behind the zygote's preload when it just started).
const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// One zygote per supervisor, started with the first gateway and again after it ended.
pub struct Zygote {
    hermes: HermesCli,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    /// Killed on drop; the forks then die too.
    _process: Child,
    stdin: ChildStdin,
    next_id: u64,
    shared: Arc<Mutex<Shared>>,
}

/// What the reader of the zygote's stdout resolves.
#[derive(Default)]
struct Shared {
    replies: HashMap<u64, oneshot::Sender<io::Result<Forked>>>,
    exits: HashMap<u32, oneshot::Sender<ExitStatus>>,
    ended: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Message {
    Ready { ready: u32, preloaded: usize, failed: Vec<String> },
    Forked { id: u64, pid: u32 },
    Refused { id: Option<u64>, error: String },
    Exited { exited: u32, status: i32 },
}

/// A gateway the zygote forked. Dropping it before it exited kills its process group, as `kill_on_drop`
/// does for a child of ours.
pub struct Forked {
    pid: u32,
    exit: oneshot::Receiver<ExitStatus>,
    exited: bool,
}

impl Forked {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status, as the zygote reaped it; an error if the zygote ended first (taking it along).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = (&mut self.exit).await;
        self.exited = true;
        status.map_err(|_| io::Error::other("the gateway zygote ended"))
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if !self.exited {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

impl Zygote {
    pub fn new(hermes: HermesCli) -> Zygote {
        Zygote { hermes, running: tokio::sync::Mutex::new(None) }
    }

    /// Forks `profile`'s gateway (`hermes --profile NAME gateway run` in its profile directory, with
    /// [`HermesCli::gateway_environment`]), as `account` when given.
    pub async fn spawn(&self, profile: &ProfileName, account: Option<Account>) -> io::Result<Forked> {
        let environment = self.hermes.gateway_environment(profile);
        let env: HashMap<&str, &str> = environment
            .iter()
            .map(|(key, value)| Some((*key, value.to_str()?)))
            .collect::<Option<_>>()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a gateway variable is not UTF-8"))?;
        let cwd = self.hermes.profile_dir(profile);
        let reply = {
            let mut running = self.running.lock().await;
            if running.as_ref().is_none_or(|r| lock(&r.shared).ended) {
                *running = Some(self.start()?);
            }
            let running = running.as_mut().expect("started above");
            let id = running.next_id;
            running.next_id += 1;
            let request = serde_json::json!({
                "id": id,
                "argv": HermesCli::gateway_args(profile),
                "env": env,
                "cwd": cwd.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the profile path is not UTF-8"))?,
                "uid": account.map(|a| a.uid),
                "gid": account.map(|a| a.gid),
            });
            let (sender, reply) = oneshot::channel();
            lock(&running.shared).replies.insert(id, sender);
            running.stdin.write_all(format!("{request}\n").as_bytes()).await?;
            reply
        };
        match tokio::time::timeout(SPAWN_TIMEOUT, reply).await {
            Ok(Ok(forked)) => forked,
            Ok(Err(_)) => Err(io::Error::other("the gateway zygote ended before forking")),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the gateway zygote did not fork in time")),
        }
    }

    fn start(&self) -> io::Result<Running> {
        let mut command = Command::new(self.hermes.python());
        command.arg("-c").arg(SCRIPT).env_clear();
        // What every fork sees before it takes its profile's environment: the venv, and no home of anyone's.
        for (key, value) in self.hermes.gateway_environment(&ProfileName::template()) {
            if !matches!(key, "HERMES_HOME" | "HERMES_KANBAN_HOME" | "HOME") {
                command.env(key, value);
            }
        }
        // MALLOC_ARENA_MAX among them: glibc reads it once, here, and the forks inherit its effect.
        command.env("HOME", "/nonexistent").env(RESERVE_VARIABLE, " ".repeat(RESERVE)).current_dir("/");
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut process = command.spawn()?;
        let stdin = process.stdin.take().expect("piped");
        let stdout = process.stdout.take().expect("piped");
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(read(stdout, shared.clone()));
        Ok(Running { _process: process, stdin, next_id: 0, shared })
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resolves replies and exits until the zygote's stdout closes; then every waiter learns it ended.
async fn read(stdout: ChildStdout, shared: Arc<Mutex<Shared>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::Ready { ready, preloaded, failed }) => {
                tracing::info!(pid = ready, preloaded, ?failed, "gateway zygote ready");
            }
            Ok(Message::Forked { id, pid }) => {
                let (sender, exit) = oneshot::channel();
                let mut shared = lock(&shared);
                shared.exits.insert(pid, sender);
                // A requester that gave up drops the gateway, which kills it.
                if let Some(reply) = shared.replies.remove(&id) {
                    let _ = reply.send(Ok(Forked { pid, exit, exited: false }));
                }
            }
            Ok(Message::Refused { id, error }) => {
                tracing::error!(%error, "the gateway zygote refused a request");
                if let Some(reply) = id.and_then(|id| lock(&shared).replies.remove(&id)) {
                    let _ = reply.send(Err(io::Error::other(error)));
                }
            }
            Ok(Message::Exited { exited, status }) => {
                if let Some(exit) = lock(&shared).exits.remove(&exited) {
                    let _ = exit.send(ExitStatus::from_raw(status));
                }
            }
            Err(e) => tracing::error!(error = %e, "unreadable line from the gateway zygote"),
        }
    }
    let mut shared = lock(&shared);
    shared.ended = true;
    shared.replies.clear();
    shared.exits.clear();
    tracing::warn!("the gateway zygote ended");
}
