//! `pass` (the standard unix password manager): each secret gpg-encrypted at
//! `$PASSWORD_STORE_DIR/twilight/<profile>/<KEY>.gpg`. Values go in on stdin (`pass insert -m -f`) and
//! come back on stdout, never through argv.

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

/// Entries live under this folder of the password store, so the store can be shared with other uses.
const FOLDER: &str = "twilight";

#[derive(Clone, Debug)]
pub struct PassStore {
    program: PathBuf,
    store_dir: PathBuf,
    gnupg_home: Option<PathBuf>,
    timeout: Duration,
}

impl PassStore {
    /// A store at `store_dir` (`PASSWORD_STORE_DIR`), using `pass` from `PATH` and the default
    /// `GNUPGHOME`. The store must be initialised once for the host's gpg key ([`PassStore::init`]).
    pub fn new(store_dir: impl Into<PathBuf>) -> PassStore {
        PassStore { program: "pass".into(), store_dir: store_dir.into(), gnupg_home: None, timeout: Duration::from_secs(30) }
    }

    /// Uses the keyring in `dir` (`GNUPGHOME`) instead of `~/.gnupg`.
    pub fn with_gnupg_home(mut self, dir: impl Into<PathBuf>) -> PassStore {
        self.gnupg_home = Some(dir.into());
        self
    }

    /// `pass init GPG_ID`: encrypt for this key from now on (re-encrypting what is there).
    pub async fn init(&self, gpg_id: &str) -> Result<()> {
        command::run(self.pass(["init", gpg_id]), None, self.timeout).await.map(drop)
    }

    fn entry(scope: &ProfileName, key: Option<&EnvKey>) -> String {
        match key {
            Some(key) => format!("{FOLDER}/{scope}/{key}"),
            None => format!("{FOLDER}/{scope}"),
        }
    }

    fn pass<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut command = Command::new(&self.program);
        command.env_clear().args(args).env("PASSWORD_STORE_DIR", &self.store_dir);
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        if let Some(dir) = &self.gnupg_home {
            command.env("GNUPGHOME", dir);
        }
        command
    }
}

#[async_trait]
impl SecretStore for PassStore {
    async fn put(&self, scope: &ProfileName, key: &EnvKey, value: &SecretString) -> Result<()> {
        let entry = Self::entry(scope, Some(key));
        let command = self.pass(["insert", "--multiline", "--force", &entry]);
        command::run(command, Some(value.expose_secret().as_bytes()), self.timeout).await.map(drop)
    }

    async fn get(&self, scope: &ProfileName, key: &EnvKey) -> Result<SecretString> {
        let entry = Self::entry(scope, Some(key));
        let file = self.store_dir.join(format!("{entry}.gpg"));
        if !tokio::fs::try_exists(&file).await.map_err(Error::io("inspecting", &file))? {
            return Err(Error::SecretNotFound { scope: scope.to_string(), key: key.to_string() });
        }
        let output = command::run(self.pass(["show", &entry]), None, self.timeout).await?;
        secret_from_bytes(Zeroizing::new(output.stdout), scope, key)
    }

    async fn remove_all(&self, scope: &ProfileName) -> Result<()> {
        let entry = Self::entry(scope, None);
        let dir = self.store_dir.join(&entry);
        if !tokio::fs::try_exists(&dir).await.map_err(Error::io("inspecting", &dir))? {
            return Ok(());
        }
        command::run(self.pass(["rm", "--recursive", "--force", &entry]), None, self.timeout).await.map(drop)
    }

    fn delivery(&self) -> SecretDelivery {
        SecretDelivery::ProfileEnv
    }
}
