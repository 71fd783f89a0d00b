//! systemd units for gateways, modelled on the unit `hermes gateway install` writes (same ExecStart, kill
//! mode, restart exit codes) but pointed at our venv, our HERMES_HOME and the profile's `.env`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

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
const EXPORT_CREDENTIALS: &str = r#"/bin/sh -c 'for f in "$${CREDENTIALS_DIRECTORY}"/*; do [ -f "$$f" ] && export "$${f##*/}=$$(cat "$$f")"; done; exec "$$0" "$$@"'"#;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemdScope {
    /// `systemctl --user`, units in `~/.config/systemd/user` (needs a user session or lingering).
    User,
    /// The system manager, units in `/etc/systemd/system`, running as `run_as` (root when `None`).
    System { run_as: Option<String> },
}

#[derive(Clone, Debug)]
pub struct SystemdManager {
    hermes: HermesCli,
    scope: SystemdScope,
    unit_dir: PathBuf,
    secrets: SecretDelivery,
    systemctl: PathBuf,
    timeout: Duration,
}

impl SystemdManager {
    /// Units for the gateways of `hermes`'s profiles, receiving secrets as `secrets` says.
    pub fn new(hermes: HermesCli, scope: SystemdScope, secrets: SecretDelivery) -> SystemdManager {
        let unit_dir = match scope {
            SystemdScope::User => {
                std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".config/systemd/user")
            }
            SystemdScope::System { .. } => PathBuf::from("/etc/systemd/system"),
        };
        SystemdManager { hermes, scope, unit_dir, secrets, systemctl: "systemctl".into(), timeout: Duration::from_secs(90) }
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
        let home = unit_path(self.hermes.home())?;
        let profile_dir = unit_path(&self.hermes.profile_dir(profile))?;
        let venv_bin = unit_path(self.hermes.python().parent().unwrap_or(Path::new("/")))?;
        let venv = unit_path(self.hermes.python().parent().and_then(Path::parent).unwrap_or(Path::new("/")))?;
        let gateway = format!("{python} -m hermes_cli.main --profile {profile} gateway run");

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
            SystemdScope::System { run_as: Some(user) } => (format!("User={user}\n"), "multi-user.target"),
            SystemdScope::System { run_as: None } => (String::new(), "multi-user.target"),
        };
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
             Environment=\"HERMES_HOME={home}\"\n\
             Environment=\"HERMES_DISABLE_LAZY_INSTALLS=1\"\n\
             Environment=\"VIRTUAL_ENV={venv}\"\n\
             Environment=\"PATH={venv_bin}:/usr/local/bin:/usr/bin:/bin\"\n\
             EnvironmentFile=-{profile_dir}/.env\n\
             {credentials}\
             Restart=on-failure\n\
             RestartSec=5\n\
             RestartForceExitStatus={RESTART_EXIT}\n\
             RestartPreventExitStatus={FATAL_CONFIG_EXIT}\n\
             KillMode=mixed\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=60\n\
             \n\
             [Install]\n\
             WantedBy={wanted_by}\n"
        ))
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
    async fn install(&self, profile: &ProfileName) -> Result<()> {
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

    async fn uninstall(&self, profile: &ProfileName) -> Result<()> {
        let path = self.unit_path(profile);
        if !path.exists() {
            return Ok(());
        }
        self.run(&["disable", "--now", &Self::unit_name(profile)]).await?;
        tokio::fs::remove_file(&path).await.map_err(Error::io("removing", &path))?;
        self.run(&["daemon-reload"]).await.map(drop)
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
            "Environment=\"HERMES_DISABLE_LAZY_INSTALLS=1\"",
            "Environment=\"VIRTUAL_ENV=/opt/venv\"",
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
        assert_eq!(SystemdManager::unit_name(&profile), "hermes-gateway-user-abc.service");

        let system = manager(SecretDelivery::ProfileEnv, SystemdScope::System { run_as: Some("twilight".into()) });
        let text = system.unit_text(&profile).unwrap();
        assert!(text.contains("\nUser=twilight\n") && text.contains("WantedBy=multi-user.target"));
        assert_eq!(system.unit_path(&profile), Path::new("/etc/systemd/system/hermes-gateway-user-abc.service"));
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
