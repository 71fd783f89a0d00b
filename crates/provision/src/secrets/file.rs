//! The default store: one 0600 file per secret under `<root>/<profile>/<KEY>`, directories 0700.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{secret_from_bytes, SecretDelivery, SecretStore};
use crate::error::{Error, Result};
use crate::names::{EnvKey, ProfileName};
use crate::secret_file;

/// Plain files readable only by the service user. Values are stored exactly (no trailing newline).
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Production uses `/var/lib/twilight/secrets`; the embedded default a directory under `./data`.
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore { root: root.into() }
    }

    fn scope_dir(&self, scope: &ProfileName) -> PathBuf {
        self.root.join(scope.as_str())
    }
}

fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(Error::io("creating", dir))?;
    // An existing directory keeps its mode under create(); tighten it explicitly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(Error::io("securing", dir))
}

#[async_trait]
impl SecretStore for FileStore {
    async fn put(&self, scope: &ProfileName, key: &EnvKey, value: &SecretString) -> Result<()> {
        let (root, dir) = (self.root.clone(), self.scope_dir(scope));
        let path = dir.join(key.as_str());
        let bytes = Zeroizing::new(value.expose_secret().as_bytes().to_vec());
        tokio::task::spawn_blocking(move || {
            private_dir(&root)?;
            private_dir(&dir)?;
            secret_file::write_bytes(&path, &bytes)
        })
        .await
        .expect("secret write panicked")
    }

    async fn get(&self, scope: &ProfileName, key: &EnvKey) -> Result<SecretString> {
        let path = self.scope_dir(scope).join(key.as_str());
        match tokio::fs::read(&path).await {
            Ok(bytes) => secret_from_bytes(Zeroizing::new(bytes), scope, key),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::SecretNotFound { scope: scope.to_string(), key: key.to_string() })
            }
            Err(e) => Err(Error::io("reading", path)(e)),
        }
    }

    async fn remove_all(&self, scope: &ProfileName) -> Result<()> {
        let dir = self.scope_dir(scope);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", dir)(e)),
            _ => Ok(()),
        }
    }

    fn delivery(&self) -> SecretDelivery {
        SecretDelivery::ProfileEnv
    }
}
