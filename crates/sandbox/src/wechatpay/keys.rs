//! Fresh keys for both sides of a sandbox WeChat Pay merchant, so a local run or a test can wire a
//! merchant client to the simulator without any real credential.

use std::fmt;

use rand::distributions::{Alphanumeric, Uniform};
use rand::Rng;
use rsa::RsaPrivateKey;

use super::WechatPaySimConfig;

const KEY_BITS: usize = 2048;

pub struct SandboxKeys {
    /// The merchant API private key (the client signs with it; the simulator verifies).
    pub merchant_key: RsaPrivateKey,
    /// 40 hex digits, like a merchant certificate serial.
    pub merchant_serial: String,
    /// The simulator's platform key (it signs; the client verifies with its public half).
    pub platform_key: RsaPrivateKey,
    /// `PUB_KEY_ID_…`, as the public-key mode names the platform key.
    pub platform_key_id: String,
    /// 32 ASCII letters and digits, as the merchant platform lets one set it.
    pub api_v3_key: [u8; 32],
}

impl SandboxKeys {
    /// One set per process, generated on first use: RSA-2048 generation takes seconds in a debug build.
    pub fn shared() -> &'static SandboxKeys {
        static KEYS: std::sync::OnceLock<SandboxKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(SandboxKeys::generate)
    }

    /// Two RSA-2048 key pairs (made in parallel: each takes seconds in a debug build) and an
    /// APIv3 key.
    pub fn generate() -> Self {
        let platform = std::thread::spawn(new_key);
        let merchant_key = new_key();
        let platform_key = platform.join().expect("key generation does not panic");
        let mut rng = rand::thread_rng();
        let digits = Uniform::from(0..10u8);
        let mut api_v3_key = [0u8; 32];
        api_v3_key.iter_mut().zip((&mut rng).sample_iter(&Alphanumeric)).for_each(|(byte, c)| *byte = c);
        SandboxKeys {
            merchant_key,
            merchant_serial: (0..40)
                .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("a hex digit").to_ascii_uppercase())
                .collect(),
            platform_key,
            platform_key_id: format!(
                "PUB_KEY_ID_01{}",
                (&mut rng).sample_iter(digits).take(26).map(|d| char::from(b'0' + d)).collect::<String>()
            ),
            api_v3_key,
        }
    }

    /// A simulator for `mchid`/`appid` that trusts these merchant keys and signs with this platform key.
    pub fn sim_config(&self, mchid: &str, appid: &str) -> WechatPaySimConfig {
        WechatPaySimConfig {
            mchid: mchid.into(),
            appid: appid.into(),
            merchant_serial: self.merchant_serial.clone(),
            merchant_public_key: self.merchant_key.to_public_key(),
            platform_key: self.platform_key.clone(),
            platform_key_id: self.platform_key_id.clone(),
            api_v3_key: self.api_v3_key,
        }
    }
}

impl fmt::Debug for SandboxKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxKeys")
            .field("merchant_serial", &self.merchant_serial)
            .field("platform_key_id", &self.platform_key_id)
            .finish_non_exhaustive()
    }
}

fn new_key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS).expect("RSA-2048 generation succeeds")
}
