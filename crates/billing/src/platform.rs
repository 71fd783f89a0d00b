//! Which WeChat Pay key verifies a signature, by the `Wechatpay-Serial` it names. Merchants on the
//! newer "WeChat Pay public key" mode have one static key with an id `PUB_KEY_ID_…`; older ones have
//! platform certificates, several at a time around a rotation. The lookup is a trait so a
//! certificate downloader (`GET /v3/certificates`) can be added without touching verification.

use std::collections::HashMap;

use rsa::RsaPublicKey;

use crate::credentials::{check_size, public_key_from_pem, KeyError};

/// The public key WeChat Pay signs with under `serial` (a certificate serial or a `PUB_KEY_ID_…`),
/// or `None` when we do not trust that serial.
pub trait PlatformKeys: Send + Sync {
    fn key(&self, serial: &str) -> Option<RsaPublicKey>;
}

/// The "WeChat Pay public key" mode: one key, downloaded once from the merchant platform.
#[derive(Debug, Clone)]
pub struct StaticPublicKey {
    id: String,
    key: RsaPublicKey,
}

impl StaticPublicKey {
    pub const ID_PREFIX: &'static str = "PUB_KEY_ID_";

    pub fn new(id: impl Into<String>, key: RsaPublicKey) -> Result<Self, KeyError> {
        let id = id.into();
        if !id.starts_with(Self::ID_PREFIX) {
            return Err(KeyError::PublicKeyId(id));
        }
        check_size("WeChat Pay public key", &key)?;
        Ok(StaticPublicKey { id, key })
    }

    /// From the `pub_key.pem` the merchant platform hands out.
    pub fn from_pem(id: impl Into<String>, pem: &str) -> Result<Self, KeyError> {
        Self::new(id, public_key_from_pem(pem)?)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl PlatformKeys for StaticPublicKey {
    fn key(&self, serial: &str) -> Option<RsaPublicKey> {
        (serial == self.id).then(|| self.key.clone())
    }
}

/// Several trusted keys by serial: platform certificates during a rotation, or a certificate and a
/// public key id side by side while a merchant migrates between the two modes.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, RsaPublicKey>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, serial: impl Into<String>, key: RsaPublicKey) -> Result<Self, KeyError> {
        check_size("WeChat Pay platform key", &key)?;
        self.keys.insert(serial.into(), key);
        Ok(self)
    }
}

impl PlatformKeys for KeyRing {
    fn key(&self, serial: &str) -> Option<RsaPublicKey> {
        self.keys.get(serial).cloned()
    }
}
