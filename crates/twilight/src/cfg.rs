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
const CONFIG_KEYS: [&str; 9] = ["listen", "data_dir", "accounts_url", "warehouse_path", "tushare", "sandbox", "payments", "scheduler", "provisioner"];

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
    pub provisioner: ProvisionerSection,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionerSection {
    /// Run the provisioner inside `serve` (the embedded default); production runs
    /// `twilight provisioner` as its own service.
    pub in_process: bool,
    /// The venv's `hermes`; default `$TWILIGHT_HERMES_BIN`, else `~/.cache/twilight-hermes-venv/bin/hermes`
    /// (what `scripts/install-hermes` makes).
    pub hermes_bin: Option<PathBuf>,
    /// `HERMES_HOME` of the users' profiles; default `<data_dir>/hermes` (never under /tmp: hermes
    /// refuses to run services from there).
    pub hermes_home: Option<PathBuf>,
    /// The shipped profile template.
    pub template_dir: PathBuf,
    /// Where per-user secrets live: `file` (0600 files under `secrets_dir`), `pass`, or `systemd-creds`.
    pub secret_store: String,
    /// Default `<data_dir>/secrets`.
    pub secrets_dir: Option<PathBuf>,
    /// How gateways run: `supervisor` (child processes of the provisioner) or `systemd-user` / `systemd-system`.
    pub service_manager: String,
    /// The data plane URL planted into profiles; default `http://<listen>`.
    pub api_base: Option<String>,
    pub ilink_base_url: String,
    pub ilink_cdn_base_url: String,
    /// An OpenAI-compatible LLM endpoint instead of DashScope's (the sandbox sets its own).
    pub dashscope_base_url: Option<String>,
    /// A file holding the DashScope key planted into profiles; the alternative is `TWILIGHT_DASHSCOPE_API_KEY`.
    pub dashscope_api_key_file: Option<PathBuf>,
    pub max_attempts: i32,
    /// Milliseconds between looks for due jobs (and at parked jobs waiting for the user).
    pub idle_poll_ms: u64,
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
            provisioner: ProvisionerSection {
                in_process: true,
                hermes_bin: None,
                hermes_home: None,
                template_dir: PathBuf::from("./template"),
                secret_store: "file".into(),
                secrets_dir: None,
                service_manager: "supervisor".into(),
                api_base: None,
                ilink_base_url: twilight_ilink::DEFAULT_BASE_URL.into(),
                ilink_cdn_base_url: "https://novac2c.cdn.weixin.qq.com/c2c".into(),
                dashscope_base_url: None,
                dashscope_api_key_file: None,
                max_attempts: 8,
                idle_poll_ms: 1000,
            },
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
            defaults.provisioner.in_process = false;
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

    /// The venv's hermes: configured, else `$TWILIGHT_HERMES_BIN`, else the default venv.
    pub fn hermes_bin(&self) -> PathBuf {
        if let Some(bin) = &self.provisioner.hermes_bin {
            return bin.clone();
        }
        if let Some(bin) = std::env::var_os("TWILIGHT_HERMES_BIN") {
            return bin.into();
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".cache/twilight-hermes-venv/bin/hermes")
    }

    /// Absolute (hermes resolves profiles against it from other working directories).
    pub fn hermes_home(&self) -> anyhow::Result<PathBuf> {
        absolute(self.provisioner.hermes_home.clone().unwrap_or_else(|| self.data_dir.join("hermes")))
    }

    pub fn secrets_dir(&self) -> anyhow::Result<PathBuf> {
        absolute(self.provisioner.secrets_dir.clone().unwrap_or_else(|| self.data_dir.join("secrets")))
    }

    /// The DashScope key planted into profiles, from `TWILIGHT_DASHSCOPE_API_KEY` or
    /// `provisioner.dashscope_api_key_file`.
    pub fn dashscope_api_key(&self) -> anyhow::Result<SecretString> {
        if let Ok(key) = std::env::var("TWILIGHT_DASHSCOPE_API_KEY") {
            return Ok(key.into());
        }
        let Some(file) = &self.provisioner.dashscope_api_key_file else {
            bail!("no DashScope key: set TWILIGHT_DASHSCOPE_API_KEY or provisioner.dashscope_api_key_file (or run the sandbox)");
        };
        let key = std::fs::read_to_string(file).with_context(|| format!("reading provisioner.dashscope_api_key_file {}", file.display()))?;
        Ok(key.trim().to_string().into())
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

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir().context("reading the working directory")?.join(path))
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
