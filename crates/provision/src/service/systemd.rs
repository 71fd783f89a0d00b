//! systemd units for gateways, modelled on the unit `hermes gateway install` writes (same ExecStart, kill
//! mode, restart exit codes) but pointed at our venv, our HERMES_HOME and the profile's `.env`.
//!
//! A system unit runs its gateway as the profile's own OS user ([`super::GatewayUser`]) in a sandbox:
//! read-only system, no capabilities, a syscall allow list, only its own profile writable — and visible:
//! HERMES_HOME (the other profiles) and the paths given to [`SystemdManager::with_hidden_paths`] (our
//! data, secrets and configuration) are gone from its view. `systemd-analyze security` rates it 1.1
//! ("OK"; 0 is best, 10 worst) on systemd 252. A user unit (`systemctl --user`) gets only what works
//! without root: the umask, no new privileges, the syscall and socket filters and the memory cap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::identity::{GatewayUser, Isolation};
use super::{ServiceManager, ServiceStatus};
use crate::command;
use crate::error::{Error, Result};
use crate::hermes::HermesCli;
use crate::names::ProfileName;
use crate::secret_file;
use crate::secrets::SecretDelivery;

/// hermes exits 75 to ask for a restart (`/restart`) and 78 on a fatal config error
/// (`gateway/restart.py`): restart on the first, never loop on the second.
const RESTART_EXIT: u8 = 75;
const FATAL_CONFIG_EXIT: u8 = 78;

/// Exports every credential systemd decrypted into `$CREDENTIALS_DIRECTORY` (named after its key) and
/// execs hermes. Written for a unit file: `$$` is systemd's escape for a literal `$`.
const EXPORT_CREDENTIALS: &str =
    r#"/bin/sh -c 'for f in "$${CREDENTIALS_DIRECTORY}"/*; do [ -f "$$f" ] && export "$${f##*/}=$$(cat "$$f")"; done; exec "$$0" "$$@"'"#;

/// What `ProtectHome=` hides; a unit whose venv or profile lies below one of them gets empty tmpfs homes
/// with those bound in instead of no homes at all.
const HOME_ROOTS: [&str; 3] = ["/home", "/root", "/run/user"];

/// What any unit may carry, system or user: seccomp filters, no new privileges, a private umask.
/// Not `MemoryDenyWriteExecute=`: libffi closures (ctypes and cffi callbacks in CPython's C extensions)
/// need writable and executable memory, and the seccomp filter behind it would kill or fail the gateway
/// on the first such call; the exposure score it buys is 0.1.
const PORTABLE_SANDBOX: &str = "UMask=0077\n\
NoNewPrivileges=yes\n\
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
RestrictNamespaces=yes\n\
RestrictRealtime=yes\n\
RestrictSUIDSGID=yes\n\
LockPersonality=yes\n\
SystemCallArchitectures=native\n\
SystemCallFilter=@system-service\n\
SystemCallFilter=~@privileged @resources\n\
SystemCallErrorNumber=EPERM\n";

/// What only the system manager can do (mount namespaces, dropping capabilities). No `PrivateNetwork=`
/// or `IPAddressDeny=`: the gateway talks to WeChat and to our data plane and LLM relay.
const SYSTEM_SANDBOX: &str = "CapabilityBoundingSet=\n\
AmbientCapabilities=\n\
ProtectSystem=strict\n\
PrivateTmp=yes\n\
PrivateDevices=yes\n\
PrivateMounts=yes\n\
PrivateUsers=yes\n\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelLogs=yes\n\
ProtectControlGroups=yes\n\
ProtectClock=yes\n\
ProtectHostname=yes\n\
ProtectProc=invisible\n\
ProcSubset=pid\n\
RemoveIPC=yes\n\
KeyringMode=private\n\
DevicePolicy=closed\n";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemdScope {
    /// `systemctl --user`, units in `~/.config/systemd/user` (needs a user session or lingering); the
    /// gateways run as that user.
    User,
    /// The system manager, units in `/etc/systemd/system`; each gateway runs sandboxed as its profile's
    /// own OS user, which `install` creates and `uninstall` deletes (so it needs root).
    System,
}

#[derive(Clone, Debug)]
pub struct SystemdManager {
    hermes: HermesCli,
    scope: SystemdScope,
    unit_dir: PathBuf,
    secrets: SecretDelivery,
    systemctl: PathBuf,
    timeout: Duration,
    hidden: Vec<PathBuf>,
    memory_max: Option<String>,
    isolation: Option<Isolation>,
}

/// How a system unit shapes its gateway's view of the file system.
#[derive(Debug, Default, PartialEq, Eq)]
struct Confinement {
    /// `ProtectHome=`: `yes`, or `tmpfs` when something the gateway needs lies in a home directory.
    protect_home: &'static str,
    /// Replaced by an empty read-only tmpfs (`TemporaryFileSystem=`): HERMES_HOME, and hidden paths
    /// something the gateway needs lies below.
    emptied: Vec<PathBuf>,
    /// `InaccessiblePaths=`: the other hidden paths.
    inaccessible: Vec<PathBuf>,
    /// `BindReadOnlyPaths=`: the venv and the interpreter's installation, when below an emptied path or a home.
    read_only: Vec<PathBuf>,
    /// Every path the gateway sees replaced (emptied paths, and the homes when `protect_home` is tmpfs).
    masked: Vec<PathBuf>,
}

impl SystemdManager {
    /// Units for the gateways of `hermes`'s profiles, receiving secrets as `secrets` says.
    pub fn new(hermes: HermesCli, scope: SystemdScope, secrets: SecretDelivery) -> SystemdManager {
        let (unit_dir, isolation) = match scope {
            SystemdScope::User => (std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".config/systemd/user"), None),
            SystemdScope::System => (PathBuf::from("/etc/systemd/system"), Isolation::detect(&hermes)),
        };
        SystemdManager {
            hermes,
            scope,
            unit_dir,
            secrets,
            systemctl: "systemctl".into(),
            timeout: Duration::from_secs(90),
            hidden: Vec::new(),
            memory_max: None,
            isolation,
        }
    }

    /// Paths a system unit's gateway must not see at all: our data directory, secrets and configuration.
    /// Each becomes inaccessible, or an empty read-only tmpfs when the gateway needs something below it
    /// (production keeps HERMES_HOME inside the data directory; its profile is bound back in).
    pub fn with_hidden_paths<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> SystemdManager {
        self.hidden = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The most memory a gateway may use (`MemoryMax=`: bytes with an optional K, M, G or T suffix, a
    /// percentage of RAM, or `infinity`); beyond it the kernel reclaims and then OOM-kills it. Anything
    /// else is refused ([`Error::UnitValue`]).
    pub fn with_memory_max(mut self, limit: impl Into<String>) -> Result<SystemdManager> {
        let limit = limit.into();
        memory_limit(&limit)?;
        self.memory_max = Some(limit);
        Ok(self)
    }

    /// Writes units to `dir` instead of the scope's default.
    pub fn with_unit_dir(mut self, dir: impl Into<PathBuf>) -> SystemdManager {
        self.unit_dir = dir.into();
        self
    }

    /// Runs `program` instead of `systemctl` from `PATH`.
    pub fn with_systemctl(mut self, program: impl Into<PathBuf>) -> SystemdManager {
        self.systemctl = program.into();
        self
    }

    pub fn unit_name(profile: &ProfileName) -> String {
        format!("hermes-gateway-{profile}.service")
    }

    pub fn unit_path(&self, profile: &ProfileName) -> PathBuf {
        self.unit_dir.join(Self::unit_name(profile))
    }

    /// The unit file for `profile`'s gateway. With [`SecretDelivery::SystemdCredentials`] it loads every
    /// credential stored for the profile at the time of the call, so install after putting the secrets.
    pub fn unit_text(&self, profile: &ProfileName) -> Result<String> {
        let python = unit_path(&self.hermes.python())?;
        let profile_dir = unit_path(&self.hermes.profile_dir(profile))?;
        let gateway = format!("{python} -m hermes_cli.main --profile {profile} gateway run");
        let mut environment = String::new();
        for (key, value) in self.hermes.gateway_env(profile) {
            environment.push_str(&format!("Environment=\"{key}={}\"\n", unit_path(Path::new(&value))?));
        }

        let mut credentials = String::new();
        let exec_start = match &self.secrets {
            SecretDelivery::ProfileEnv => gateway,
            SecretDelivery::SystemdCredentials { dir } => {
                for (key, path) in stored_credentials(&dir.join(profile.as_str()))? {
                    credentials.push_str(&format!("LoadCredentialEncrypted={key}:{}\n", unit_path(&path)?));
                }
                format!("{EXPORT_CREDENTIALS} {gateway}")
            }
        };
        let (identity, wanted_by) = match &self.scope {
            SystemdScope::User => (String::new(), "default.target"),
            SystemdScope::System => {
                let user = GatewayUser::for_profile(profile);
                (format!("User={user}\nGroup={user}\n"), "multi-user.target")
            }
        };
        let mut sandbox = String::from(PORTABLE_SANDBOX);
        if self.scope == SystemdScope::System {
            let confinement = self.confinement(profile);
            sandbox.push_str(SYSTEM_SANDBOX);
            sandbox.push_str(&format!("ProtectHome={}\n", confinement.protect_home));
            for path in &confinement.emptied {
                sandbox.push_str(&format!("TemporaryFileSystem={}:ro\n", unit_path(path)?));
            }
            for path in &confinement.inaccessible {
                sandbox.push_str(&format!("InaccessiblePaths=-{}\n", unit_path(path)?));
            }
            for path in &confinement.read_only {
                sandbox.push_str(&format!("BindReadOnlyPaths={}\n", unit_path(path)?));
            }
            // A bind mount rather than ReadWritePaths=: the profile lies below an emptied HERMES_HOME.
            sandbox.push_str(&format!("BindPaths={profile_dir}\n"));
        }
        if let Some(limit) = &self.memory_max {
            sandbox.push_str(&format!("MemoryMax={limit}\n"));
        }
        Ok(format!(
            "# Written by twilight-provision; reinstalling the profile's gateway rewrites it.\n\
             [Unit]\n\
             Description=Hermes gateway for Twilight Drive profile {profile}\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             StartLimitIntervalSec=0\n\
             \n\
             [Service]\n\
             Type=simple\n\
             {identity}\
             ExecStart={exec_start}\n\
             WorkingDirectory={profile_dir}\n\
             {environment}\
             EnvironmentFile=-{profile_dir}/.env\n\
             {credentials}\
             Restart=on-failure\n\
             RestartSec=5\n\
             RestartForceExitStatus={RESTART_EXIT}\n\
             RestartPreventExitStatus={FATAL_CONFIG_EXIT}\n\
             KillMode=mixed\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=60\n\
             {sandbox}\
             \n\
             [Install]\n\
             WantedBy={wanted_by}\n"
        ))
    }

    /// Hides HERMES_HOME and the hidden paths, binding back the profile (writable) and, when they lie
    /// below something hidden, the venv and the interpreter's installation (read-only). Paths inside
    /// another masked path are left to it.
    fn confinement(&self, profile: &ProfileName) -> Confinement {
        let profile_dir = self.hermes.profile_dir(profile);
        let python = self.hermes.python();
        let mut needed: Vec<PathBuf> = python.parent().and_then(Path::parent).map(Path::to_owned).into_iter().collect();
        if let Some(prefix) = std::fs::canonicalize(&python).ok().and_then(|p| Some(p.parent()?.parent()?.to_owned())) {
            if !needed.iter().any(|n| prefix.starts_with(n)) {
                needed.push(prefix);
            }
        }
        let in_home = |path: &Path| HOME_ROOTS.iter().any(|home| path.starts_with(home));
        let protect_home = if in_home(&profile_dir) || needed.iter().any(|n| in_home(n)) { "tmpfs" } else { "yes" };

        let mut hidden: Vec<PathBuf> = self.hidden.iter().chain([&self.hermes.home().to_owned()]).cloned().collect();
        hidden.sort();
        hidden.dedup();
        let outermost: Vec<PathBuf> = hidden.iter().filter(|h| !hidden.iter().any(|o| o != *h && h.starts_with(o))).cloned().collect();
        let mut confinement = Confinement { protect_home, ..Confinement::default() };
        for path in outermost {
            let needed_below = profile_dir.starts_with(&path) || needed.iter().any(|n| n.starts_with(&path));
            if needed_below {
                confinement.emptied.push(path);
            } else {
                confinement.inaccessible.push(path);
            }
        }
        confinement.masked = confinement.emptied.clone();
        if protect_home == "tmpfs" {
            confinement.masked.extend(HOME_ROOTS.iter().map(PathBuf::from));
        }
        confinement.read_only = needed.into_iter().filter(|n| confinement.masked.iter().any(|m| n.starts_with(m))).collect();
        confinement
    }

    fn systemctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.systemctl);
        if self.scope == SystemdScope::User {
            command.arg("--user");
        }
        command.args(args);
        command
    }

    async fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        command::run(self.systemctl(args), None, self.timeout).await
    }
}

/// A path as it may appear in a unit: `%` and `$` are escaped; whitespace, quotes and backslashes
/// (which would need unit-file quoting) are refused.
fn unit_path(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| Error::UnitPath(path.to_owned()))?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'\\".contains(c)) {
        return Err(Error::UnitPath(path.to_owned()));
    }
    Ok(text.replace('%', "%%").replace('$', "$$"))
}

/// `limit` if systemd reads it as a memory limit: digits with an optional K/M/G/T suffix, a percentage, or
/// `infinity` (checked so configuration cannot smuggle lines into a unit).
fn memory_limit(limit: &str) -> Result<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = limit == "infinity"
        || limit.strip_suffix('%').is_some_and(digits)
        || digits(limit.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(limit));
    if valid {
        Ok(limit)
    } else {
        Err(Error::UnitValue { key: "MemoryMax", value: limit.to_owned() })
    }
}

/// `(KEY, path)` for every `<KEY>.cred` in `dir`, sorted; none when the directory does not exist.
fn stored_credentials(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(Error::io("listing", dir))?.path();
        let key = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".cred"));
        if let Some(key) = key.and_then(|k| crate::names::EnvKey::parse(k).ok()) {
            found.push((key.to_string(), path));
        }
    }
    found.sort();
    Ok(found)
}

#[async_trait]
impl ServiceManager for SystemdManager {
    /// For a system unit, first creates the profile's user, hands it the profile and checks it can reach
    /// the venv and the profile from inside the sandbox.
    async fn install(&self, profile: &ProfileName) -> Result<()> {
        if self.scope == SystemdScope::System {
            let isolation = self.isolation.as_ref().ok_or(Error::NeedsRoot("a system unit's gateway user"))?;
            let (user, account) = isolation.prepare(profile).await?;
            isolation.check_reachable(profile, &user, account, &self.confinement(profile).masked)?;
        }
        let text = self.unit_text(profile)?;
        let path = self.unit_path(profile);
        tokio::task::spawn_blocking(move || secret_file::write_bytes(&path, text.as_bytes())).await.expect("unit write panicked")?;
        self.run(&["daemon-reload"]).await?;
        self.run(&["enable", &Self::unit_name(profile)]).await.map(drop)
    }

    async fn start(&self, profile: &ProfileName) -> Result<()> {
        if !self.unit_path(profile).exists() {
            return Err(Error::NotInstalled(profile.to_string()));
        }
        if let Some(isolation) = &self.isolation {
            // The provisioner may have written into the profile since `install`.
            isolation.prepare(profile).await?;
        }
        self.run(&["enable", "--now", &Self::unit_name(profile)]).await.map(drop)
    }

    async fn stop(&self, profile: &ProfileName) -> Result<()> {
        if !self.unit_path(profile).exists() {
            return Ok(());
        }
        self.run(&["stop", &Self::unit_name(profile)]).await.map(drop)
    }

    async fn status(&self, profile: &ProfileName) -> Result<ServiceStatus> {
        if !self.unit_path(profile).exists() {
            return Ok(ServiceStatus::default());
        }
        let unit = Self::unit_name(profile);
        let output = self.run(&["show", &unit, "--property=ActiveState,MainPID,NRestarts,ExecMainCode,ExecMainStatus"]).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let props: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let pid = props.get("MainPID").and_then(|p| p.parse().ok()).filter(|&p: &u32| p != 0);
        let last_exit = match (props.get("ExecMainCode").copied(), props.get("ExecMainStatus").copied()) {
            // ExecMainCode follows siginfo's si_code: 1 exited, 2 killed, 3 dumped core.
            (Some("1"), Some(status)) => Some(format!("exit status: {status}")),
            (Some("2" | "3"), Some(signal)) => Some(format!("signal: {signal}")),
            _ => None,
        };
        Ok(ServiceStatus {
            installed: true,
            pid: if props.get("ActiveState") == Some(&"active") { pid } else { None },
            restarts: props.get("NRestarts").and_then(|n| n.parse().ok()).unwrap_or(0),
            last_exit,
        })
    }

    /// Also deletes a system unit's gateway user, once its gateway is stopped.
    async fn uninstall(&self, profile: &ProfileName) -> Result<()> {
        let path = self.unit_path(profile);
        if path.exists() {
            self.run(&["disable", "--now", &Self::unit_name(profile)]).await?;
            tokio::fs::remove_file(&path).await.map_err(Error::io("removing", &path))?;
            self.run(&["daemon-reload"]).await?;
        }
        match &self.isolation {
            Some(isolation) => isolation.remove(profile).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(secrets: SecretDelivery, scope: SystemdScope) -> SystemdManager {
        SystemdManager::new(HermesCli::new("/opt/venv/bin/hermes", "/var/lib/twilight/hermes"), scope, secrets)
    }

    #[test]
    fn unit_runs_the_profile_gateway_with_its_env_file() {
        let profile = ProfileName::parse("user-abc").unwrap();
        let text = manager(SecretDelivery::ProfileEnv, SystemdScope::User).unit_text(&profile).unwrap();
        for line in [
            "ExecStart=/opt/venv/bin/python -m hermes_cli.main --profile user-abc gateway run",
            "WorkingDirectory=/var/lib/twilight/hermes/profiles/user-abc",
            "Environment=\"HERMES_HOME=/var/lib/twilight/hermes\"",
            "Environment=\"HERMES_KANBAN_HOME=/var/lib/twilight/hermes/profiles/user-abc\"",
            "Environment=\"HOME=/var/lib/twilight/hermes/profiles/user-abc\"",
            "Environment=\"HERMES_DISABLE_LAZY_INSTALLS=1\"",
            "Environment=\"VIRTUAL_ENV=/opt/venv\"",
            "Environment=\"PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin\"",
            "Environment=\"MALLOC_ARENA_MAX=2\"",
            "EnvironmentFile=-/var/lib/twilight/hermes/profiles/user-abc/.env",
            "Restart=on-failure",
            "RestartForceExitStatus=75",
            "RestartPreventExitStatus=78",
            "KillMode=mixed",
            "WantedBy=default.target",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("User=") && !text.contains("LoadCredential"));
        // A user manager gets the filters that need no privileges, not the mount namespace.
        for line in PORTABLE_SANDBOX.lines() {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for absent in ["ProtectSystem=", "BindPaths=", "PrivateUsers=", "CapabilityBoundingSet=", "MemoryMax="] {
            assert!(!text.contains(absent), "{absent} in a user unit\n{text}");
        }
        assert_eq!(SystemdManager::unit_name(&profile), "hermes-gateway-user-abc.service");
    }

    #[test]
    fn system_units_run_as_the_profile_user_in_a_sandbox() {
        let profile = ProfileName::for_user(uuid::Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap());
        let system = manager(SecretDelivery::ProfileEnv, SystemdScope::System)
            .with_hidden_paths(["/var/lib/twilight", "/var/lib/twilight/secrets", "/etc/twilight"])
            .with_memory_max("512M")
            .unwrap();
        let text = system.unit_text(&profile).unwrap();
        let dir = "/var/lib/twilight/hermes/profiles/user-6f9619ff8b86d011b42d00c04fc964ff";
        let user = GatewayUser::for_profile(&profile);
        assert_eq!(user.as_str(), "tw-6f9619ff8b86d011b42d00c04fc9");
        let expected = [
            "User=tw-6f9619ff8b86d011b42d00c04fc9".to_owned(),
            "Group=tw-6f9619ff8b86d011b42d00c04fc9".to_owned(),
            "WantedBy=multi-user.target".to_owned(),
            "UMask=0077".to_owned(),
            "NoNewPrivileges=yes".to_owned(),
            "CapabilityBoundingSet=".to_owned(),
            "AmbientCapabilities=".to_owned(),
            "ProtectSystem=strict".to_owned(),
            "ProtectHome=yes".to_owned(),
            // The data directory holds HERMES_HOME: emptied, with only this profile bound back in.
            "TemporaryFileSystem=/var/lib/twilight:ro".to_owned(),
            "InaccessiblePaths=-/etc/twilight".to_owned(),
            format!("BindPaths={dir}"),
            "PrivateTmp=yes".to_owned(),
            "PrivateDevices=yes".to_owned(),
            "PrivateMounts=yes".to_owned(),
            "PrivateUsers=yes".to_owned(),
            "ProtectKernelTunables=yes".to_owned(),
            "ProtectKernelModules=yes".to_owned(),
            "ProtectKernelLogs=yes".to_owned(),
            "ProtectControlGroups=yes".to_owned(),
            "ProtectClock=yes".to_owned(),
            "ProtectHostname=yes".to_owned(),
            "ProtectProc=invisible".to_owned(),
            "ProcSubset=pid".to_owned(),
            "RestrictNamespaces=yes".to_owned(),
            "RestrictRealtime=yes".to_owned(),
            "RestrictSUIDSGID=yes".to_owned(),
            "LockPersonality=yes".to_owned(),
            "RemoveIPC=yes".to_owned(),
            "KeyringMode=private".to_owned(),
            "DevicePolicy=closed".to_owned(),
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX".to_owned(),
            "SystemCallArchitectures=native".to_owned(),
            "SystemCallFilter=@system-service".to_owned(),
            "SystemCallFilter=~@privileged @resources".to_owned(),
            "SystemCallErrorNumber=EPERM".to_owned(),
            "MemoryMax=512M".to_owned(),
        ];
        for line in &expected {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for absent in ["/var/lib/twilight/secrets", "BindReadOnlyPaths=", "ReadWritePaths=", "MemoryDenyWriteExecute="] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        assert_eq!(
            system.unit_path(&profile),
            Path::new("/etc/systemd/system/hermes-gateway-user-6f9619ff8b86d011b42d00c04fc964ff.service")
        );
    }

    #[test]
    fn a_venv_or_hermes_home_in_a_home_directory_is_bound_into_empty_homes() {
        let profile = ProfileName::parse("user-abc").unwrap();
        let cli = HermesCli::new("/root/.cache/venv/bin/hermes", "/home/dev/hermes");
        let system = SystemdManager::new(cli, SystemdScope::System, SecretDelivery::ProfileEnv).with_hidden_paths(["/home/dev/data"]);
        let text = system.unit_text(&profile).unwrap();
        for line in [
            "ProtectHome=tmpfs",
            "TemporaryFileSystem=/home/dev/hermes:ro",
            "InaccessiblePaths=-/home/dev/data",
            "BindReadOnlyPaths=/root/.cache/venv",
            "BindPaths=/home/dev/hermes/profiles/user-abc",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let masked = system.confinement(&profile).masked;
        assert!(masked.contains(&PathBuf::from("/root")) && masked.contains(&PathBuf::from("/home/dev/hermes")), "{masked:?}");
    }

    #[test]
    fn memory_limits_are_checked() {
        for ok in ["512M", "2G", "1073741824", "50%", "infinity"] {
            assert_eq!(memory_limit(ok).unwrap(), ok);
        }
        for bad in ["", "M", "512MB", "-1", "512M\nExecStartPre=/bin/sh", "1.5G"] {
            assert!(matches!(memory_limit(bad), Err(Error::UnitValue { .. })), "{bad:?}");
        }
        assert!(matches!(manager(SecretDelivery::ProfileEnv, SystemdScope::User).with_memory_max("lots"), Err(Error::UnitValue { .. })));
    }

    #[test]
    fn unusual_paths_are_escaped_or_refused() {
        assert_eq!(unit_path(Path::new("/srv/100%/$x")).unwrap(), "/srv/100%%/$$x");
        for bad in ["/srv/my home", "/srv/\"q\"", "/srv/a\\b"] {
            assert!(matches!(unit_path(Path::new(bad)), Err(Error::UnitPath(_))), "{bad}");
        }
    }

    /// The unit's credential export, run by sh as systemd would after unescaping `$$`, with a fake
    /// `$CREDENTIALS_DIRECTORY` holding what systemd would have decrypted.
    #[test]
    fn systemd_credentials_are_loaded_and_exported() {
        let dir = tempfile::tempdir().unwrap();
        let profile = ProfileName::parse("user-abc").unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir_all(creds.join("user-abc")).unwrap();
        for name in ["TWILIGHT_API_TOKEN.cred", "DASHSCOPE_API_KEY.cred", "not a key.cred", "README"] {
            std::fs::write(creds.join("user-abc").join(name), "ciphertext").unwrap();
        }
        let manager = manager(SecretDelivery::SystemdCredentials { dir: creds.clone() }, SystemdScope::User);
        let text = manager.unit_text(&profile).unwrap();
        let loads: Vec<&str> = text.lines().filter(|l| l.starts_with("LoadCredentialEncrypted=")).collect();
        let base = creds.join("user-abc");
        assert_eq!(
            loads,
            [
                format!("LoadCredentialEncrypted=DASHSCOPE_API_KEY:{}/DASHSCOPE_API_KEY.cred", base.display()),
                format!("LoadCredentialEncrypted=TWILIGHT_API_TOKEN:{}/TWILIGHT_API_TOKEN.cred", base.display()),
            ]
        );
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        assert!(exec.ends_with("/opt/venv/bin/python -m hermes_cli.main --profile user-abc gateway run"), "{exec}");

        let decrypted = dir.path().join("decrypted");
        std::fs::create_dir(&decrypted).unwrap();
        std::fs::write(decrypted.join("TWILIGHT_API_TOKEN"), "tok \"q\" $x").unwrap();
        let script = EXPORT_CREDENTIALS.replace("$$", "$");
        let script = script.strip_prefix("/bin/sh -c '").unwrap().strip_suffix('\'').unwrap();
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", script, "printenv", "TWILIGHT_API_TOKEN"])
            .env("CREDENTIALS_DIRECTORY", &decrypted)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8(output.stdout).unwrap(), "tok \"q\" $x\n");
    }
}
