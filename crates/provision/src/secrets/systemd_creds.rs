//! `systemd-creds`: each secret encrypted with the host key (and the TPM when there is one) into
//! `<dir>/<profile>/<KEY>.cred`, 0600. The ciphertext is bound to the credential name, so a file renamed
//! to another key does not decrypt. systemd decrypts them for the gateway unit at start.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;
use zeroize::Zeroizing;

use super::{secret_from_bytes, SecretDelivery, SecretStore};
use crate::command;
use crate::error::{Error, Result};
use crate::names::{EnvKey, ProfileName};
use crate::secret_file;

#[derive(Clone, Debug)]
pub struct SystemdCredsStore {
    program: PathBuf,
    dir: PathBuf,
    timeout: Duration,
}

impl SystemdCredsStore {
    /// Credentials under `dir` (e.g. `/etc/credstore.encrypted/twilight`); encrypting needs root, for
    /// the host key in `/var/lib/systemd/credential.secret`.
    pub fn new(dir: impl Into<PathBuf>) -> SystemdCredsStore {
        SystemdCredsStore { program: "systemd-creds".into(), dir: dir.into(), timeout: Duration::from_secs(30) }
    }

    /// Where the credential for `key` of `scope` lives; the systemd unit loads it from here.
    pub fn credential_path(&self, scope: &ProfileName, key: &EnvKey) -> PathBuf {
        self.dir.join(scope.as_str()).join(format!("{key}.cred"))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.env_clear().args(args);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
    }
}

#[async_trait]
impl SecretStore for SystemdCredsStore {
    async fn put(&self, scope: &ProfileName, key: &EnvKey, value: &SecretString) -> Result<()> {
        let name = format!("--name={key}");
        let command = self.command(&["encrypt", &name, "-", "-"]);
        let output = command::run(command, Some(value.expose_secret().as_bytes()), self.timeout).await?;
        let path = self.credential_path(scope, key);
        tokio::task::spawn_blocking(move || secret_file::write_bytes(&path, &output.stdout)).await.expect("credential write panicked")
    }

    async fn get(&self, scope: &ProfileName, key: &EnvKey) -> Result<SecretString> {
        let path = self.credential_path(scope, key);
        if !tokio::fs::try_exists(&path).await.map_err(Error::io("inspecting", &path))? {
            return Err(Error::SecretNotFound { scope: scope.to_string(), key: key.to_string() });
        }
        let name = format!("--name={key}");
        let command = self.command(&["decrypt", &name, &path.to_string_lossy(), "-"]);
        let output = command::run(command, None, self.timeout).await?;
        secret_from_bytes(Zeroizing::new(output.stdout), scope, key)
    }

    async fn remove_all(&self, scope: &ProfileName) -> Result<()> {
        let dir = self.dir.join(scope.as_str());
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", dir)(e)),
            _ => Ok(()),
        }
    }

    fn delivery(&self) -> SecretDelivery {
        SecretDelivery::SystemdCredentials { dir: self.dir.clone() }
    }
}
