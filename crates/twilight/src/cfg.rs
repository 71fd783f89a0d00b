//! All configuration: built-in defaults, then a TOML file, then `TWILIGHT_*` environment overrides
//! (`TWILIGHT_TUSHARE__BASE_URL` sets `tushare.base_url`). Secrets never come from the TOML file:
//! only from the environment or from files named in it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use std::sync::Arc;
use twilight_billing::{ApiV3Key, MerchantKey, StaticPublicKey, WechatPayConfig};
use serde::{Deserialize, Serialize};

/// Top-level config keys the environment may set; other `TWILIGHT_*` variables (secrets such as
/// `TWILIGHT_TUSHARE_TOKEN`, `TWILIGHT_LOG`, test switches) are not configuration.
const CONFIG_KEYS: [&str; 8] = ["listen", "data_dir", "accounts_url", "warehouse_path", "tushare", "sandbox", "payments", "scheduler"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite:<path>` or `postgres://…`; default: SQLite under `data_dir`.
    pub accounts_url: Option<String>,
    /// Default: `<data_dir>/warehouse.duckdb`.
    pub warehouse_path: Option<PathBuf>,
    pub tushare: TushareSection,
    pub sandbox: SandboxSection,
    pub payments: PaymentsSection,
    pub scheduler: SchedulerSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TushareSection {
    pub base_url: String,
    pub timeout_secs: u64,
    /// A file holding the token; the alternative is `TWILIGHT_TUSHARE_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Seconds to wait before each retry of a per-minute throttle.
    pub throttle_backoff_secs: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Start the upstream simulators in-process and point every upstream at them.
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSection {
    /// How long a checkout QR can be paid.
    pub order_ttl_minutes: u64,
    /// Reconciliation leaves orders younger than this to their notification.
    pub reconcile_grace_secs: u64,
    /// WeChat Pay merchant settings; without them (and outside the sandbox) checkout answers 503.
    pub wechatpay: Option<WechatPaySection>,
}

/// A WeChat Pay v3 merchant. The keys are read from files (mode 0600), never from this config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatPaySection {
    pub mchid: String,
    pub appid: String,
    /// Serial number of the merchant API certificate.
    pub merchant_serial: String,
    /// `apiclient_key.pem`.
    pub merchant_key_file: PathBuf,
    /// A file holding the 32-character APIv3 key.
    pub api_v3_key_file: PathBuf,
    /// `PUB_KEY_ID_…` of the WeChat Pay public key (public-key mode).
    pub platform_public_key_id: String,
    pub platform_public_key_file: PathBuf,
    /// Where WeChat Pay posts notifications: `https://<host>/payments/wechat/notify`.
    pub notify_url: String,
    #[serde(default = "default_wechatpay_base_url")]
    pub base_url: String,
    #[serde(default = "default_wechatpay_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_wechatpay_base_url() -> String {
    twilight_billing::DEFAULT_BASE_URL.into()
}

fn default_wechatpay_timeout_secs() -> u64 {
    twilight_billing::DEFAULT_TIMEOUT.as_secs()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    /// Run the scheduler's jobs inside `serve` (the embedded default); production runs
    /// `twilight scheduler` as its own service instead.
    pub in_process: bool,
    /// Seconds between reconciliations of pending payments.
    pub reconcile_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            accounts_url: None,
            warehouse_path: None,
            tushare: TushareSection {
                base_url: "http://api.waditu.com".into(),
                timeout_secs: 20,
                token_file: None,
                throttle_backoff_secs: vec![2, 10],
            },
            sandbox: SandboxSection { enabled: true },
            payments: PaymentsSection { order_ttl_minutes: 30, reconcile_grace_secs: 60, wechatpay: None },
            scheduler: SchedulerSection { in_process: true, reconcile_interval_secs: 60 },
        }
    }
}

impl Config {
    /// Loads `path` (if given) over the embedded default, then the environment. Without a file the
    /// embedded default runs the sandbox; a file turns it off unless it says otherwise.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut defaults = Config::default();
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            defaults.sandbox.enabled = false;
            defaults.scheduler.in_process = false;
            figment = figment.merge(Serialized::defaults(defaults)).merge(Toml::file(path));
            if figment.find_value("tushare.token").is_ok() {
                bail!("{}: secrets do not belong in the config file; set TWILIGHT_TUSHARE_TOKEN or tushare.token_file", path.display());
            }
        } else {
            figment = figment.merge(Serialized::defaults(defaults));
        }
        let env = Env::prefixed("TWILIGHT_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                CONFIG_KEYS.iter().any(|k| key == *k || key.strip_prefix(k).is_some_and(|rest| rest.starts_with("__")))
            })
            .split("__");
        figment.merge(env).extract().context("invalid configuration")
    }

    pub fn accounts_url(&self) -> String {
        self.accounts_url.clone().unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("accounts.sqlite").display()))
    }

    pub fn warehouse_path(&self) -> PathBuf {
        self.warehouse_path.clone().unwrap_or_else(|| self.data_dir.join("warehouse.duckdb"))
    }

    /// The WeChat Pay merchant client's settings with its keys read from their files, or `None`
    /// when no merchant is configured.
    pub fn wechatpay(&self) -> anyhow::Result<Option<WechatPayConfig>> {
        let Some(section) = &self.payments.wechatpay else { return Ok(None) };
        let read = |what: &str, path: &Path| std::fs::read_to_string(path).with_context(|| format!("reading payments.wechatpay.{what} {}", path.display()));
        let platform_pem = read("platform_public_key_file", &section.platform_public_key_file)?;
        Ok(Some(WechatPayConfig {
            mchid: section.mchid.clone(),
            appid: section.appid.clone(),
            merchant_serial: section.merchant_serial.clone(),
            merchant_key: MerchantKey::from_pem_file(&section.merchant_key_file).context("payments.wechatpay.merchant_key_file")?,
            api_v3_key: ApiV3Key::from_file(&section.api_v3_key_file).context("payments.wechatpay.api_v3_key_file")?,
            platform_keys: Arc::new(StaticPublicKey::from_pem(section.platform_public_key_id.clone(), &platform_pem).context("payments.wechatpay.platform_public_key_file")?),
            notify_url: section.notify_url.clone(),
            base_url: section.base_url.clone(),
            timeout: Duration::from_secs(section.timeout_secs),
        }))
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.scheduler.reconcile_interval_secs.max(1))
    }

    pub fn order_ttl(&self) -> Duration {
        Duration::from_secs(self.payments.order_ttl_minutes * 60)
    }

    pub fn tushare_timeout(&self) -> Duration {
        Duration::from_secs(self.tushare.timeout_secs)
    }

    /// The Tushare token, from `TWILIGHT_TUSHARE_TOKEN` or `tushare.token_file`.
    pub fn tushare_token(&self) -> anyhow::Result<SecretString> {
        if let Ok(token) = std::env::var("TWILIGHT_TUSHARE_TOKEN") {
            return Ok(token.into());
        }
        let Some(file) = &self.tushare.token_file else {
            bail!("no Tushare token: set TWILIGHT_TUSHARE_TOKEN or tushare.token_file (or run the sandbox)");
        };
        let token = std::fs::read_to_string(file).with_context(|| format!("reading tushare.token_file {}", file.display()))?;
        Ok(token.trim().to_string().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_runs_the_sandbox_on_sqlite() {
        let config = Config::load(None).unwrap();
        assert!(config.sandbox.enabled);
        assert_eq!(config.accounts_url(), "sqlite:./data/accounts.sqlite");
    }

    #[test]
    fn a_config_file_turns_the_sandbox_off_and_refuses_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "listen = \"127.0.0.1:9999\"\n[tushare]\nbase_url = \"http://example.invalid\"\n").unwrap();
        let config = Config::load(Some(&ok)).unwrap();
        assert!(!config.sandbox.enabled);
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.tushare.timeout_secs, 20);

        let secret = dir.path().join("secret.toml");
        std::fs::write(&secret, "[tushare]\ntoken = \"abc\"\n").unwrap();
        let err = Config::load(Some(&secret)).unwrap_err().to_string();
        assert!(err.contains("secrets do not belong"), "{err}");
        assert!(!err.contains("abc"));

        figment::Jail::expect_with(|jail| {
            jail.set_env("TWILIGHT_TUSHARE__TIMEOUT_SECS", "7");
            jail.set_env("TWILIGHT_TUSHARE_TOKEN", "not-config");
            jail.set_env("TWILIGHT_LOG", "debug");
            let config = Config::load(None).unwrap();
            assert_eq!(config.tushare.timeout_secs, 7);
            assert_eq!(secrecy::ExposeSecret::expose_secret(&config.tushare_token().unwrap()), "not-config");
            Ok(())
        });

        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "lisen = \"x\"\n").unwrap();
        assert!(Config::load(Some(&typo)).is_err());
    }
}
