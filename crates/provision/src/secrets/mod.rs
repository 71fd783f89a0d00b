//! Per-user secrets at rest, behind one trait, and how a gateway gets to see them.
//!
//! A store keeps values per profile (one profile per user) and key. hermes reads secrets only from its
//! environment, which it builds from the profile's `.env` at start; [`plant_secrets`] bridges the two the
//! way the store's [`SecretDelivery`] says.

mod file;
mod pass;
mod systemd_creds;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::dotenv::DotEnv;
use crate::error::Result;
use crate::names::{EnvKey, ProfileName};

pub use file::FileStore;
pub use pass::PassStore;
pub use systemd_creds::SystemdCredsStore;

/// Where per-user secrets live on a host. Every method is idempotent.
#[async_trait]
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// Stores (or replaces) one secret of `scope`.
    async fn put(&self, scope: &ProfileName, key: &EnvKey, value: &SecretString) -> Result<()>;

    /// Reads one secret back; [`crate::Error::SecretNotFound`] when there is none.
    async fn get(&self, scope: &ProfileName, key: &EnvKey) -> Result<SecretString>;

    /// Forgets every secret of `scope` (deprovisioning); nothing stored is not an error.
    async fn remove_all(&self, scope: &ProfileName) -> Result<()>;

    /// How the gateway service receives these secrets.
    fn delivery(&self) -> SecretDelivery;
}

/// How a gateway started by a [`crate::ServiceManager`] receives a store's secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretDelivery {
    /// Copied into the profile's `.env` (0600), which hermes loads itself and which the systemd unit names
    /// as its `EnvironmentFile`. For stores whose values the service cannot fetch on its own: plain files
    /// (hermes would read them anyway) and `pass` (needs the operator's gpg agent).
    ProfileEnv,
    /// Left encrypted under `dir/<profile>/<KEY>.cred`: systemd decrypts them at service start
    /// (`LoadCredentialEncrypted=`) and the unit exports them before hermes starts. The keys must then
    /// be absent from the profile's `.env`, whose values would override them.
    SystemdCredentials { dir: PathBuf },
}

/// Makes `keys` of `scope` visible to the profile's gateway as `store` requires, editing the profile's
/// `.env` at `env_file`: for [`SecretDelivery::ProfileEnv`] each value is written there, for
/// [`SecretDelivery::SystemdCredentials`] each is checked to decrypt and removed from there. Call it after
/// the secrets are put and before the gateway (re)starts; calling it again is harmless.
pub async fn plant_secrets(store: &dyn SecretStore, scope: &ProfileName, keys: &[EnvKey], env_file: &Path) -> Result<()> {
    let mut env = DotEnv::load(env_file)?;
    for key in keys {
        let value = store.get(scope, key).await?;
        match store.delivery() {
            SecretDelivery::ProfileEnv => env.set(key, value.expose_secret())?,
            SecretDelivery::SystemdCredentials { .. } => {
                env.remove(key);
            }
        }
    }
    env.save()
}

/// A secret read back from a file or a command's output; invalid UTF-8 is reported without the bytes.
fn secret_from_bytes(bytes: zeroize::Zeroizing<Vec<u8>>, scope: &ProfileName, key: &EnvKey) -> Result<SecretString> {
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(SecretString::from(text)),
        Err(_) => Err(crate::Error::UnrepresentableValue { key: format!("{scope}/{key}"), reason: "stored value is not UTF-8" }),
    }
}
