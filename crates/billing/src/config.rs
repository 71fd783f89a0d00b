//! Everything a WeChat Pay merchant client needs, secrets included.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::credentials::{ApiV3Key, MerchantKey};
use crate::platform::PlatformKeys;

pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WechatPayConfig {
    /// Our merchant number (`mchid`).
    pub mchid: String,
    /// The app (official account or website app) the orders are placed for.
    pub appid: String,
    /// Serial number of the merchant API certificate whose private key is `merchant_key`.
    pub merchant_serial: String,
    pub merchant_key: MerchantKey,
    pub api_v3_key: ApiV3Key,
    /// The WeChat Pay keys we trust for responses and notifications.
    pub platform_keys: Arc<dyn PlatformKeys>,
    /// Where WeChat Pay posts notifications: https, no query string.
    pub notify_url: String,
    /// [`DEFAULT_BASE_URL`], or a simulator's address.
    pub base_url: String,
    /// For each whole request, connection included.
    pub timeout: Duration,
}

impl fmt::Debug for WechatPayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatPayConfig")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial", &self.merchant_serial)
            .field("merchant_key", &"[redacted]")
            .field("api_v3_key", &"[redacted]")
            .field("notify_url", &self.notify_url)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
