//! All configuration: built-in defaults, then a TOML file, then `TWILIGHT_*` environment overrides
//! (`TWILIGHT_TUSHARE__BASE_URL` sets `tushare.base_url`). Secrets never come from the TOML file:
//! only from the environment or from files named in it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use twilight_api::edge::EdgePolicy;
use twilight_api::limit::IpQuotas;
use twilight_billing::{ApiV3Key, MerchantKey, StaticPublicKey, WechatPayConfig};
use twilight_market::AktoolsConfig;

/// Top-level config keys the environment may set; other `TWILIGHT_*` variables (secrets such as
/// `TWILIGHT_TUSHARE_TOKEN`, `TWILIGHT_LOG`, test switches) are not configuration.
const CONFIG_KEYS: [&str; 19] = [
    "listen",
    "public_url",
    "data_dir",
    "accounts_url",
    "warehouse_path",
    "chart_font",
    "edge",
    "tushare",
    "tdx",
    "yahoo",
    "aktools",
    "replication",
    "sandbox",
    "payments",
    "subscription",
    "scheduler",
    "provisioner",
    "llm",
    "search",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where customers reach our pages (`https://twilight.example`), for the links the bots show
    /// them (renewal); default `http://<listen>`.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    /// `sqlite:<path>` or `postgres://…`; default: SQLite under `data_dir`.
    pub accounts_url: Option<DbUrl>,
    /// Default: `<data_dir>/warehouse.duckdb`.
    pub warehouse_path: Option<PathBuf>,
    /// The CJK font charts are drawn with; default: the first of the usual ones installed
    /// (Debian's `fonts-noto-cjk`).
    pub chart_font: Option<PathBuf>,
    pub edge: EdgeSection,
    pub tushare: TushareSection,
    pub tdx: TdxSection,
    pub yahoo: YahooSection,
    pub aktools: AktoolsSection,
    pub replication: ReplicationSection,
    pub sandbox: SandboxSection,
    pub payments: PaymentsSection,
    pub subscription: SubscriptionSection,
    pub scheduler: SchedulerSection,
    pub provisioner: ProvisionerSection,
    pub llm: LlmSection,
    pub search: SearchSection,
}

/// A database URL whose password never reaches a log line or a panic message: `Debug` masks it
/// (in the userinfo and in a `password=` query parameter).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DbUrl(String);

impl DbUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DbUrl {
    fn from(url: String) -> Self {
        DbUrl(url)
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (base, query) = self.0.split_once('?').map_or((self.0.as_str(), None), |(base, query)| (base, Some(query)));
        let base = match base.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) if userinfo.contains(':') => {
                        format!("{scheme}://{}:***@{host}{path}", userinfo.split(':').next().unwrap_or_default())
                    }
                    _ => base.to_string(),
                }
            }
            None => base.to_string(),
        };
        let query = query.map(|query| {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("?{}", pairs.join("&"))
        });
        write!(f, "{:?}", format!("{base}{}", query.unwrap_or_default()))
    }
}

/// What the HTTP server allows one client and one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// Reverse proxies whose `X-Forwarded-For` is believed (`["127.0.0.1", "::1"]` behind a Caddy on
    /// the same host); empty: the TCP peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Orders one client IP (an IPv6 /64) may place per hour (landing page, `/checkout`, renewals).
    pub orders_per_ip_per_hour: u32,
    /// Answers one client IP may post on onboarding pages per minute.
    pub onboarding_posts_per_ip_per_min: u32,
    /// Unknown bearer tokens, onboarding and renewal links one client IP may try per minute before
    /// it is refused without a lookup.
    pub failed_lookups_per_ip_per_min: u32,
    /// The longest a request may take before it is answered 504.
    pub request_deadline_secs: u64,
    /// The same for the LLM relay.
    pub llm_deadline_secs: u64,
    /// The largest request body read, in bytes (the LLM relay allows 2 MiB).
    pub body_limit_bytes: usize,
    /// After a stop signal, how long requests in flight may finish; usage rows are flushed after
    /// either way (keep it under systemd's `TimeoutStopSec`).
    pub shutdown_drain_secs: u64,
    /// How long an onboarding link still opens its page once the bot runs.
    pub onboarding_link_secs_after_ready: u64,
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
    /// After Tushare fails, seconds it is left alone (answers come from the warehouse, marked stale).
    pub breaker_secs: u64,
}

/// TDX quote servers: the free source of bulk daily history (`twilight backfill`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxSection {
    /// `host:port` of each server, the healthiest asked first; the sandbox's own in the embedded
    /// default.
    pub servers: Vec<String>,
    /// Per connect and per request.
    pub timeout_secs: u64,
    /// Concurrent connections per server: public servers drop clients that open many.
    pub connections_per_server: usize,
}

/// Yahoo Finance's chart API: prices of what Tushare does not list (US, Hong Kong, FX).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YahooSection {
    pub base_url: String,
    pub timeout_secs: u64,
}

/// AKShare through AKTools: company profiles for `/fundamentals`. AKTools runs any Python it is
/// sent, so it must listen on loopback beside `serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AktoolsSection {
    pub enabled: bool,
    pub base_url: String,
    pub timeout_secs: u64,
}

/// Warehouse replication: a primary publishes snapshots, a serving host swaps them in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    /// On the primary: where `serve` publishes a snapshot of its warehouse (with `manifest.json`)
    /// every `publish_interval_secs`.
    pub publish_dir: Option<PathBuf>,
    pub publish_interval_secs: u64,
    /// On a serving host: its copy of the primary's publication directory (rsync keeps it), polled
    /// every `poll_secs`; a newer snapshot is checked and swapped in.
    pub source_dir: Option<PathBuf>,
    pub poll_secs: u64,
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
    /// Days a closed, never-paid order is kept before reconciliation deletes it.
    pub closed_retention_days: u64,
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

/// A subscription's life after its paid period: service goes on for `grace_days`; then the user
/// is expired (keys answer 402, the gateway stops) and the profile is kept `retention_days` more
/// before it is deprovisioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSection {
    pub grace_days: u32,
    pub retention_days: u32,
    /// Seconds between the scheduler's looks for users to expire and profiles to retire.
    pub check_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    /// Run the scheduler's jobs inside `serve` (the embedded default); production runs
    /// `twilight scheduler` as its own service instead.
    pub in_process: bool,
    /// Seconds between reconciliations of pending payments.
    pub reconcile_interval_secs: u64,
    /// Fill the warehouse with each session's whole market after the close. Runs in `serve`, the
    /// process that holds the warehouse (DuckDB admits one writing process), under a lease in the
    /// accounts DB so that one of several primaries runs it; off on a serving host that reads a
    /// replica (`replication.source_dir`).
    pub warehouse_fills: bool,
    /// Beijing time (`HH:MM`) from which a session is filled: Tushare's `daily_basic` lands last.
    pub fill_after: String,
    /// Seconds between looks for sessions to fill.
    pub fill_check_secs: u64,
    /// Missed sessions one pass fills at most (the newest); older gaps are `twilight backfill`'s.
    pub fill_catch_up_sessions: usize,
    /// After a failed fill, seconds before the next attempt: the first, doubling up to the second.
    pub retry_backoff_secs: [u64; 2],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionerSection {
    /// Run the provisioner inside `serve` (the embedded default); production runs
    /// `twilight provisioner` as its own service.
    pub in_process: bool,
    /// The venv's `hermes`; default `$TWILIGHT_HERMES_BIN`, else `~/.cache/twilight-hermes-venv/bin/hermes`,
    /// or for root `/opt/twilight/hermes-venv/bin/hermes` (what `scripts/install-hermes` makes).
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
    /// With `supervisor`: fork the gateways from one process that has already imported hermes'
    /// libraries, so they share that memory (README, "Capacity"); `false` starts each on its own.
    pub preload_gateways: bool,
    /// The most memory one gateway may use (systemd's `MemoryMax=`: `512M`, `1G`, `10%`, `infinity`);
    /// applies to systemd units, not to the supervisor's children.
    pub gateway_memory_max: String,
    /// The data plane URL planted into profiles; default `http://<listen>`.
    pub api_base: Option<String>,
    pub ilink_base_url: String,
    pub ilink_cdn_base_url: String,
    pub max_attempts: i32,
    /// Milliseconds between looks for due jobs (and, while pairing, for the code the user typed).
    pub idle_poll_ms: u64,
    /// Jobs worked on at once; pairings waiting for a phone do not count.
    pub concurrency: usize,
    /// QR codes shown (each ~5 minutes at iLink) before a pairing rests until the user asks again.
    pub qr_rounds: u32,
    /// How many users' gateways this host can hold. New users go to the live host with the most
    /// room (slots less its bots). Default: the host's memory less 1 GiB for everything else, over
    /// what one gateway takes (README, "Capacity").
    pub gateway_slots: Option<i32>,
}

/// The LLM relay (`serve`'s `/llm/v1`): the upstream the users' bots reach through it. The profiles
/// hold no upstream key; this section's key never leaves the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    /// An OpenAI-compatible base URL (`/chat/completions` and `/models` are appended); default
    /// DashScope's compatible mode on the mainland.
    pub base_url: String,
    /// A file holding the upstream key; the alternative is `TWILIGHT_LLM_API_KEY`.
    pub api_key_file: Option<PathBuf>,
    /// The longest wait to connect, for an answer to begin, and between two pieces of a streamed one.
    pub timeout_secs: u64,
    /// Tokens per user per UTC day before a warning is logged (soft: nothing is refused; 0 = no warning).
    pub daily_token_budget: u64,
    /// Models the bots may ask for (the template's `model.default`; hermes' auxiliary calls use the
    /// same model for the `alibaba` provider). Empty allows any model.
    pub allowed_models: Vec<String>,
    /// Relayed requests per minute per user key, a bucket separate from the data plane's.
    pub rate_limit_per_min: u32,
}

/// Web search behind `/search` and the `search` tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// Providers in order of preference (`dashscope`, `google_cse`, `bocha`); one left out is never
    /// asked (Google's API ends on 2027-01-01: drop `google_cse` then). One listed without a key is
    /// skipped, and `/healthz` says so.
    pub order: Vec<String>,
    /// How long an answer serves identical searches (query, since and count), at no cost.
    pub cache_secs: u64,
    /// How long a failing provider is left alone when its failure does not say.
    pub breaker_secs: u64,
    /// The longest one provider call may take before the next provider is tried (all of them
    /// together must fit in `edge.request_deadline_secs`).
    pub timeout_secs: u64,
    pub dashscope: SearchProvider,
    pub google_cse: SearchProvider,
    pub bocha: SearchProvider,
}

/// What every provider has: where it is, its key's file (or environment variable), its budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchProvider {
    pub base_url: String,
    pub key_file: Option<PathBuf>,
    /// Calls per Beijing day before it is passed over; 0 = no limit.
    pub daily_budget: u32,
    /// Calls per day that cost nothing.
    pub free_per_day: u32,
    /// Points (usage_log `upstream_cost_pts`) one answered call costs beyond the free ones.
    pub cost_pts: i32,
    /// DashScope only: `plugin` (its web search endpoint) or `generation` (the documented
    /// `enable_search` route, which also costs tokens).
    pub route: Option<twilight_search::DashScopeRoute>,
    /// Google only: the Programmable Search Engine ID (`cx`).
    pub engine_id: Option<String>,
}

/// DashScope's OpenAI-compatible endpoint (Beijing region).
pub const DEFAULT_LLM_BASE_URL: &str = "https://dashscope.aliyuncs.com/compatible-mode/v1";

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./data"),
            accounts_url: None,
            warehouse_path: None,
            chart_font: None,
            edge: EdgeSection {
                trusted_proxies: Vec::new(),
                orders_per_ip_per_hour: 10,
                onboarding_posts_per_ip_per_min: 30,
                failed_lookups_per_ip_per_min: 20,
                request_deadline_secs: 10,
                llm_deadline_secs: 300,
                body_limit_bytes: 64 * 1024,
                shutdown_drain_secs: 20,
                onboarding_link_secs_after_ready: 3600,
            },
            tushare: TushareSection {
                base_url: "http://api.waditu.com".into(),
                timeout_secs: 20,
                token_file: None,
                throttle_backoff_secs: vec![2, 10],
                breaker_secs: 30,
            },
            tdx: TdxSection { servers: Vec::new(), timeout_secs: 5, connections_per_server: 2 },
            yahoo: YahooSection { base_url: "https://query1.finance.yahoo.com".into(), timeout_secs: 10 },
            aktools: AktoolsSection { enabled: true, base_url: "http://127.0.0.1:8081".into(), timeout_secs: 15 },
            replication: ReplicationSection { publish_dir: None, publish_interval_secs: 3600, source_dir: None, poll_secs: 30 },
            sandbox: SandboxSection { enabled: true },
            payments: PaymentsSection { order_ttl_minutes: 30, reconcile_grace_secs: 60, closed_retention_days: 30, wechatpay: None },
            subscription: SubscriptionSection { grace_days: 3, retention_days: 30, check_interval_secs: 60 },
            scheduler: SchedulerSection {
                in_process: true,
                reconcile_interval_secs: 60,
                warehouse_fills: true,
                fill_after: "18:00".into(),
                fill_check_secs: 300,
                fill_catch_up_sessions: 30,
                retry_backoff_secs: [60, 3600],
            },
            provisioner: ProvisionerSection {
                in_process: true,
                hermes_bin: None,
                hermes_home: None,
                template_dir: PathBuf::from("./template"),
                secret_store: "file".into(),
                secrets_dir: None,
                service_manager: "supervisor".into(),
                preload_gateways: true,
                gateway_memory_max: "512M".into(),
                api_base: None,
                ilink_base_url: twilight_ilink::DEFAULT_BASE_URL.into(),
                ilink_cdn_base_url: "https://novac2c.cdn.weixin.qq.com/c2c".into(),
                max_attempts: 8,
                idle_poll_ms: 1000,
                concurrency: 4,
                qr_rounds: 3,
                gateway_slots: None,
            },
            llm: LlmSection {
                base_url: DEFAULT_LLM_BASE_URL.into(),
                api_key_file: None,
                timeout_secs: 120,
                daily_token_budget: 200_000,
                allowed_models: vec!["qwen3.7-plus".into()],
                rate_limit_per_min: 60,
            },
            search: SearchSection {
                order: vec!["dashscope".into(), "google_cse".into(), "bocha".into()],
                cache_secs: 600,
                breaker_secs: 60,
                timeout_secs: 3,
                dashscope: SearchProvider::new("https://dashscope.aliyuncs.com", 1000, 0, 1),
                google_cse: SearchProvider::new("https://www.googleapis.com", 200, 100, 4),
                bocha: SearchProvider::new("https://api.bochaai.com", 1000, 0, 4),
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
            if figment.find_value("llm.api_key").is_ok() {
                bail!("{}: secrets do not belong in the config file; set TWILIGHT_LLM_API_KEY or llm.api_key_file", path.display());
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

    pub fn edge(&self) -> EdgePolicy {
        let edge = &self.edge;
        EdgePolicy {
            trusted_proxies: edge.trusted_proxies.clone(),
            ip_quotas: IpQuotas {
                orders_per_hour: edge.orders_per_ip_per_hour,
                onboarding_posts_per_min: edge.onboarding_posts_per_ip_per_min,
                failed_lookups_per_min: edge.failed_lookups_per_ip_per_min,
            },
            request_deadline: Duration::from_secs(edge.request_deadline_secs.max(1)),
            llm_deadline: Duration::from_secs(edge.llm_deadline_secs.max(1)),
            body_limit: edge.body_limit_bytes,
            secure_cookies: self.public_url.as_deref().is_some_and(|url| url.starts_with("https://")),
            onboarding_link_after_ready: i64::try_from(edge.onboarding_link_secs_after_ready)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_secs(self.edge.shutdown_drain_secs)
    }

    pub fn lifecycle(&self) -> crate::scheduler::Lifecycle {
        crate::scheduler::Lifecycle {
            grace: chrono::Duration::days(self.subscription.grace_days.into()),
            retention: chrono::Duration::days(self.subscription.retention_days.into()),
        }
    }

    pub fn lifecycle_interval(&self) -> Duration {
        Duration::from_secs(self.subscription.check_interval_secs.max(1))
    }

    pub fn accounts_url(&self) -> String {
        self.accounts_url
            .as_ref()
            .map_or_else(|| format!("sqlite:{}", self.data_dir.join("accounts.sqlite").display()), |url| url.expose().to_string())
    }

    pub fn warehouse_path(&self) -> PathBuf {
        self.warehouse_path.clone().unwrap_or_else(|| self.data_dir.join("warehouse.duckdb"))
    }

    /// The WeChat Pay merchant client's settings with its keys read from their files, or `None`
    /// when no merchant is configured.
    pub fn wechatpay(&self) -> anyhow::Result<Option<WechatPayConfig>> {
        let Some(section) = &self.payments.wechatpay else { return Ok(None) };
        let read = |what: &str, path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading payments.wechatpay.{what} {}", path.display()))
        };
        let platform_pem = read("platform_public_key_file", &section.platform_public_key_file)?;
        Ok(Some(WechatPayConfig {
            mchid: section.mchid.clone(),
            appid: section.appid.clone(),
            merchant_serial: section.merchant_serial.clone(),
            merchant_key: MerchantKey::from_pem_file(&section.merchant_key_file).context("payments.wechatpay.merchant_key_file")?,
            api_v3_key: ApiV3Key::from_file(&section.api_v3_key_file).context("payments.wechatpay.api_v3_key_file")?,
            platform_keys: Arc::new(
                StaticPublicKey::from_pem(section.platform_public_key_id.clone(), &platform_pem)
                    .context("payments.wechatpay.platform_public_key_file")?,
            ),
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
        // Root's gateways run as users of their own, who cannot enter /root.
        if twilight_provision::GatewayUser::supported() {
            return PathBuf::from("/opt/twilight/hermes-venv/bin/hermes");
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

    /// The LLM relay's upstream key (DashScope), from `TWILIGHT_LLM_API_KEY` or `llm.api_key_file`.
    /// Only `serve` reads it; no profile ever holds it.
    pub fn llm_api_key(&self) -> anyhow::Result<SecretString> {
        secret("TWILIGHT_LLM_API_KEY", "llm.api_key_file", self.llm.api_key_file.as_deref())?
            .context("no LLM key: set TWILIGHT_LLM_API_KEY or llm.api_key_file (or run the sandbox)")
    }

    pub fn llm_timeout(&self) -> Duration {
        Duration::from_secs(self.llm.timeout_secs.max(1))
    }

    /// The scheduled warehouse fills, when this process runs them: `None` when they are off.
    pub fn warehouse_fills(&self) -> anyhow::Result<Option<crate::scheduler::WarehouseFills>> {
        let section = &self.scheduler;
        if !section.warehouse_fills {
            return Ok(None);
        }
        if self.replication.source_dir.is_some() {
            bail!("scheduler.warehouse_fills is on while replication.source_dir makes this a replica: fill on the primary, or set warehouse_fills = false");
        }
        let after = chrono::NaiveTime::parse_from_str(&section.fill_after, "%H:%M")
            .with_context(|| format!("scheduler.fill_after {:?} is not a Beijing time like \"18:00\"", section.fill_after))?;
        let [first, most] = section.retry_backoff_secs;
        Ok(Some(crate::scheduler::WarehouseFills {
            schedule: twilight_market::FillSchedule { after, catch_up_sessions: section.fill_catch_up_sessions.max(1) },
            check_every: Duration::from_secs(section.fill_check_secs.max(1)),
            backoff: crate::scheduler::Backoff {
                first: Duration::from_secs(first.max(1)),
                most: Duration::from_secs(most.max(first).max(1)),
            },
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
    /// The TDX client's settings, over `servers`.
    pub fn tdx_pool(&self, servers: Vec<String>) -> twilight_tdx::PoolConfig {
        twilight_tdx::PoolConfig {
            servers,
            timeout: Duration::from_secs(self.tdx.timeout_secs.max(1)),
            connections_per_server: self.tdx.connections_per_server.max(1),
            ..twilight_tdx::PoolConfig::default()
        }
    }

    /// AKTools at `sandbox_url` (the simulator's) or as configured; `None` when disabled. A
    /// configured address that is not loopback is refused: AKTools evaluates what it is sent.
    pub fn aktools(&self, sandbox_url: Option<&str>) -> anyhow::Result<Option<AktoolsConfig>> {
        if !self.aktools.enabled {
            return Ok(None);
        }
        let base_url = sandbox_url.unwrap_or(&self.aktools.base_url).to_string();
        let url = reqwest::Url::parse(&base_url).with_context(|| format!("aktools.base_url {base_url:?} is not a URL"))?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("aktools.base_url {base_url} is not on loopback: AKTools runs whatever code it is sent, so it must listen on 127.0.0.1 beside serve");
        }
        Ok(Some(AktoolsConfig { base_url, timeout: Duration::from_secs(self.aktools.timeout_secs.max(1)) }))
    }

    pub fn tushare_token(&self) -> anyhow::Result<SecretString> {
        secret("TWILIGHT_TUSHARE_TOKEN", "tushare.token_file", self.tushare.token_file.as_deref())?
            .context("no Tushare token: set TWILIGHT_TUSHARE_TOKEN or tushare.token_file (or run the sandbox)")
    }

    pub fn search_timeout(&self) -> Duration {
        Duration::from_secs(self.search.timeout_secs.max(1))
    }
}

impl SearchProvider {
    fn new(base_url: &str, daily_budget: u32, free_per_day: u32, cost_pts: i32) -> Self {
        SearchProvider { base_url: base_url.into(), key_file: None, daily_budget, free_per_day, cost_pts, route: None, engine_id: None }
    }

    pub fn settings(&self) -> twilight_search::ProviderSettings {
        twilight_search::ProviderSettings { daily_budget: self.daily_budget, free_per_day: self.free_per_day, cost_pts: self.cost_pts }
    }

    /// This provider's key from `env` or its `key_file` (named `setting` in errors); `None` when
    /// neither is set.
    pub fn key(&self, env: &str, setting: &str) -> anyhow::Result<Option<SecretString>> {
        secret(env, setting, self.key_file.as_deref())
    }
}

/// A secret from the environment variable `env`, else from the file the setting `setting` names;
/// `None` when neither is there. Surrounding whitespace (a file's newline) is not part of it.
fn secret(env: &str, setting: &str, file: Option<&Path>) -> anyhow::Result<Option<SecretString>> {
    if let Ok(value) = std::env::var(env) {
        return Ok(Some(value.trim().to_string().into()));
    }
    let Some(file) = file else { return Ok(None) };
    let value = std::fs::read_to_string(file).with_context(|| format!("reading {setting} {}", file.display()))?;
    Ok(Some(value.trim().to_string().into()))
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir().context("reading the working directory")?.join(path))
}

// figment::Jail's closures must return figment::Error, which is large; that signature is figment's.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_stay_out_of_debug_output() {
        let debug = |url: &str| format!("{:?}", DbUrl::from(url.to_string()));
        assert_eq!(debug("postgres://twilight:s3cret@db.internal:5432/twilight"), r#""postgres://twilight:***@db.internal:5432/twilight""#);
        assert_eq!(
            debug("postgres://twilight@127.0.0.1/twilight?sslmode=require&password=s3cret"),
            r#""postgres://twilight@127.0.0.1/twilight?sslmode=require&password=***""#
        );
        assert_eq!(debug("sqlite:./data/accounts.sqlite"), r#""sqlite:./data/accounts.sqlite""#);
        let config = Config { accounts_url: Some(DbUrl::from("postgres://u:hunter2@h/d".to_string())), ..Config::default() };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.accounts_url(), "postgres://u:hunter2@h/d");
    }

    #[test]
    fn aktools_is_reached_on_loopback_only() {
        let with = |base_url: &str| {
            let mut config = Config::default();
            config.aktools.base_url = base_url.into();
            config.aktools(None)
        };
        for loopback in ["http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:8080"] {
            assert_eq!(with(loopback).unwrap().unwrap().base_url, loopback);
        }
        for remote in ["http://10.0.0.5:8080", "http://aktools.example.com", "not a url"] {
            assert!(with(remote).is_err(), "{remote}");
        }
        let sandbox = Config::default().aktools(Some("http://127.0.0.1:41234")).unwrap().unwrap();
        assert_eq!(sandbox.base_url, "http://127.0.0.1:41234");
        let mut off = Config::default();
        off.aktools.enabled = false;
        assert!(off.aktools(None).unwrap().is_none());
    }

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

    #[test]
    fn the_llm_section_keeps_its_key_out_of_the_file() {
        let config = Config::load(None).unwrap();
        assert_eq!((config.llm.base_url.as_str(), config.llm.daily_token_budget), (DEFAULT_LLM_BASE_URL, 200_000));
        assert_eq!(config.llm.allowed_models, ["qwen3.7-plus"]);

        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "[llm]\nbase_url = \"http://llm.invalid/v1\"\ndaily_token_budget = 5\nallowed_models = []\n").unwrap();
        let config = Config::load(Some(&ok)).unwrap();
        assert_eq!(
            (config.llm.base_url.as_str(), config.llm.daily_token_budget, config.llm.timeout_secs),
            ("http://llm.invalid/v1", 5, 120)
        );
        assert!(config.llm.allowed_models.is_empty());

        let secret = dir.path().join("secret.toml");
        std::fs::write(&secret, "[llm]\napi_key = \"sk-in-the-file\"\n").unwrap();
        let err = Config::load(Some(&secret)).unwrap_err().to_string();
        assert!(err.contains("secrets do not belong") && !err.contains("sk-in-the-file"), "{err}");
        // The key moved from the provisioner to [llm]: the old setting is refused, not ignored.
        let old = dir.path().join("old.toml");
        std::fs::write(&old, "[provisioner]\ndashscope_api_key_file = \"/etc/twilight/dashscope-key\"\n").unwrap();
        assert!(Config::load(Some(&old)).is_err());

        let key_file = dir.path().join("llm-key");
        std::fs::write(&key_file, "sk-from-file\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWILIGHT_LLM__DAILY_TOKEN_BUDGET", "7");
            let mut config = Config::load(None).unwrap();
            assert_eq!(config.llm.daily_token_budget, 7);
            assert!(config.llm_api_key().is_err(), "no key anywhere");
            config.llm.api_key_file = Some(key_file.clone());
            assert_eq!(secrecy::ExposeSecret::expose_secret(&config.llm_api_key().unwrap()), "sk-from-file");
            jail.set_env("TWILIGHT_LLM_API_KEY", "sk-from-env");
            assert_eq!(secrecy::ExposeSecret::expose_secret(&config.llm_api_key().unwrap()), "sk-from-env");
            Ok(())
        });
    }
}
