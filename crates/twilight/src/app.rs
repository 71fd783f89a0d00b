//! Starting the whole service: accounts DB, warehouse, sandbox upstreams (if enabled), payments,
//! the in-process scheduler (embedded default), HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use twilight_accounts::{Accounts, SqlAccounts};
use twilight_api::auth::SubscriptionPolicy;
use twilight_api::llm::{Relay, RelayConfig};
use twilight_api::payments::{Payments, NOTIFY_PATH};
use twilight_api::{ApiContext, ApiParts, SandboxLinks};
use twilight_billing::{ApiV3Key, Billing, BillingConfig, MerchantKey, StaticPublicKey, WechatPayClient, WechatPayConfig};
use twilight_core::RawToken;
use twilight_market::replica::Replica;
use twilight_market::{Market, MarketConfig, TdxSource, TushareConfig, YahooConfig};
use twilight_provision::secret_file;
use twilight_sandbox::{
    AktoolsSim, IlinkSim, IlinkSimConfig, LlmSim, SandboxKeys, SearchKind, SearchSim, TdxSim, TushareSim, WechatPaySim, YahooSim,
};
use twilight_search::{Bocha, DashScope, DashScopeRoute, Endpoint, GoogleCse, Provider, SearchConfig, Searcher};
use twilight_tdx::TdxPool;

use crate::cfg::Config;
use crate::{provisioning, scheduler};

/// How often another process's revocation is looked for.
const REVOCATION_POLL: Duration = Duration::from_millis(200);
pub const SANDBOX_TUSHARE_TOKEN: &str = "sandbox-tushare-token";
/// The merchant the sandbox WeChat Pay serves.
pub const SANDBOX_MCHID: &str = "1900000109";
pub const SANDBOX_APPID: &str = "wxsandbox0000000001";
/// The backend's key for the sandbox LLM (which checks only that there is one).
pub const SANDBOX_LLM_KEY: &str = "sk-sandbox";
/// The key every sandbox search provider accepts, and the sandbox Google engine.
pub const SANDBOX_SEARCH_KEY: &str = "sandbox-search-key";
const SANDBOX_SEARCH_ENGINE: &str = "sandbox-engine";

/// The market-data simulators: Tushare and a TDX quote server over the same universe (the same
/// closes), Yahoo Finance and AKTools, for `serve` and `backfill` alike.
#[derive(Clone)]
pub struct MarketSims {
    pub tushare: TushareSim,
    pub tushare_url: String,
    pub tdx: TdxSim,
    /// `host:port` of the TDX server.
    pub tdx_addr: String,
    pub yahoo: YahooSim,
    pub yahoo_url: String,
    pub aktools: AktoolsSim,
    pub aktools_url: String,
}

impl MarketSims {
    pub async fn start() -> anyhow::Result<MarketSims> {
        let tushare = TushareSim::new(SANDBOX_TUSHARE_TOKEN);
        let (tushare_addr, _task) = twilight_sandbox::serve(tushare.router(), 0).await.context("starting the sandbox Tushare")?;
        let tdx = TdxSim::new();
        let (tdx_addr, _task) = tdx.start(0).await.context("starting the sandbox TDX server")?;
        let yahoo = YahooSim::new();
        let (yahoo_addr, _task) = twilight_sandbox::serve(yahoo.router(), 0).await.context("starting the sandbox Yahoo Finance")?;
        let aktools = AktoolsSim::new();
        let (aktools_addr, _task) = twilight_sandbox::serve(aktools.router(), 0).await.context("starting the sandbox AKTools")?;
        Ok(MarketSims {
            tushare,
            tushare_url: format!("http://{tushare_addr}"),
            tdx,
            tdx_addr: tdx_addr.to_string(),
            yahoo,
            yahoo_url: format!("http://{yahoo_addr}"),
            aktools,
            aktools_url: format!("http://{aktools_addr}"),
        })
    }
}

/// The simulators started in-process by the embedded default.
#[derive(Clone)]
pub struct Sandbox {
    pub market: MarketSims,
    pub wechatpay: WechatPaySim,
    pub wechatpay_url: String,
    /// Both sides' WeChat Pay keys, fresh on every start (the simulator keeps no orders across
    /// restarts either).
    pub wechatpay_keys: Arc<SandboxKeys>,
    pub ilink: IlinkSim,
    pub ilink_url: String,
    /// The OpenAI-compatible LLM the users' agents talk to.
    pub llm: LlmSim,
    pub llm_url: String,
    /// The web search providers and their base URLs.
    pub search: Vec<(SearchKind, SearchSim, String)>,
}

impl Sandbox {
    pub async fn start() -> anyhow::Result<Sandbox> {
        let market = MarketSims::start().await?;
        let wechatpay_keys = Arc::new(tokio::task::spawn_blocking(SandboxKeys::generate).await?);
        let wechatpay = WechatPaySim::new(wechatpay_keys.sim_config(SANDBOX_MCHID, SANDBOX_APPID));
        let (wechatpay_addr, _task) = twilight_sandbox::serve(wechatpay.router(), 0).await.context("starting the sandbox WeChat Pay")?;
        let ilink = IlinkSim::new(IlinkSimConfig::default());
        let (ilink_addr, _task) = twilight_sandbox::serve(ilink.router(), 0).await.context("starting the sandbox iLink")?;
        let llm = LlmSim::new();
        let (llm_addr, _task) = twilight_sandbox::serve(llm.router(), 0).await.context("starting the sandbox LLM")?;
        let mut search = Vec::new();
        for kind in SearchKind::ALL {
            let sim = SearchSim::new(kind, SANDBOX_SEARCH_KEY);
            let (addr, _task) = twilight_sandbox::serve(sim.router(), 0).await.context("starting a sandbox search provider")?;
            search.push((kind, sim, format!("http://{addr}")));
        }
        Ok(Sandbox {
            market,
            wechatpay,
            wechatpay_url: format!("http://{wechatpay_addr}"),
            wechatpay_keys,
            ilink,
            ilink_url: format!("http://{ilink_addr}"),
            llm,
            llm_url: format!("http://{llm_addr}"),
            search,
        })
    }

    /// The simulator of one search provider, and its base URL.
    pub fn search_sim(&self, kind: SearchKind) -> (&SearchSim, &str) {
        let (_, sim, url) = self.search.iter().find(|(k, _, _)| *k == kind).expect("every search provider is simulated");
        (sim, url)
    }

    /// A merchant client of the sandbox WeChat Pay whose notifications go to `notify_url`.
    fn wechatpay_config(&self, notify_url: String) -> anyhow::Result<WechatPayConfig> {
        let keys = &self.wechatpay_keys;
        Ok(WechatPayConfig {
            mchid: SANDBOX_MCHID.into(),
            appid: SANDBOX_APPID.into(),
            merchant_serial: keys.merchant_serial.clone(),
            merchant_key: MerchantKey::from_key(keys.merchant_key.clone())?,
            api_v3_key: ApiV3Key::new(&keys.api_v3_key)?,
            platform_keys: Arc::new(StaticPublicKey::new(keys.platform_key_id.clone(), self.wechatpay.platform_public_key().clone())?),
            notify_url,
            base_url: self.wechatpay_url.clone(),
            timeout: twilight_billing::DEFAULT_TIMEOUT,
        })
    }
}

pub async fn connect_accounts(config: &Config) -> anyhow::Result<Arc<dyn Accounts>> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let accounts = SqlAccounts::connect(&config.accounts_url()).await.context("connecting to the accounts DB")?;
    accounts.migrate().await.context("migrating the accounts DB")?;
    Ok(Arc::new(accounts))
}

pub struct Running {
    pub addr: SocketAddr,
    pub admin_token_file: PathBuf,
    pub accounts: Arc<dyn Accounts>,
    /// The warehouse and its read path (one process may open a DuckDB file once).
    pub market: Arc<Market>,
    pub sandbox: Option<Sandbox>,
    /// Checkout and payment notifications; `None` when no processor is configured.
    pub payments: Option<Arc<Payments>>,
    /// The warehouse replica, on a serving host fed by a primary.
    pub replica: Option<Arc<Replica>>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets in-flight ones finish, and flushes usage rows.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await.context("server task")?
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn until_signal(self) -> anyhow::Result<()> {
        signal().await?;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// The market read path's settings: the sandbox's upstreams, or the configured ones.
pub fn market_config(config: &Config, sims: Option<&MarketSims>) -> anyhow::Result<MarketConfig> {
    let tushare = match sims {
        Some(sims) => TushareConfig {
            base_url: sims.tushare_url.clone(),
            token: SANDBOX_TUSHARE_TOKEN.to_string().into(),
            timeout: config.tushare_timeout(),
            throttle_backoff: Vec::new(),
        },
        None => TushareConfig {
            base_url: config.tushare.base_url.clone(),
            token: config.tushare_token()?,
            timeout: config.tushare_timeout(),
            throttle_backoff: config.tushare.throttle_backoff_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
        },
    };
    let breaker_window = Duration::from_secs(config.tushare.breaker_secs.max(1));
    let (servers, source) = match sims {
        Some(sims) => (vec![sims.tdx_addr.clone()], "sandbox:tdx"),
        None => (config.tdx.servers.clone(), "tdx"),
    };
    let tdx = (!servers.is_empty()).then(|| TdxSource { pool: TdxPool::new(config.tdx_pool(servers)), source: source.into() });
    let yahoo = YahooConfig {
        base_url: sims.map_or_else(|| config.yahoo.base_url.clone(), |sims| sims.yahoo_url.clone()),
        timeout: Duration::from_secs(config.yahoo.timeout_secs.max(1)),
    };
    let aktools = config.aktools(sims.map(|sims| sims.aktools_url.as_str()))?;
    Ok(MarketConfig { warehouse_path: config.warehouse_path(), tushare, breaker_window, tdx, yahoo, aktools })
}

/// Makes everything this process writes from now on (accounts DB, warehouse, secrets, profiles)
/// readable by its own uid alone: the gateways run as users of their own and are handed their
/// profile explicitly. Every subcommand calls it first; so does [`start`], for tests that run the
/// app in-process.
pub fn own_files_only() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Starts everything `config` asks for and begins serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    own_files_only();
    let accounts = connect_accounts(config).await?;
    let sandbox = if config.sandbox.enabled { Some(Sandbox::start().await?) } else { None };
    let market = Arc::new(Market::open(market_config(config, sandbox.as_ref().map(|s| &s.market))?).context("opening the warehouse")?);
    let admin_token_file = config.data_dir.join("admin-token");
    ensure_admin_token(&*accounts, &admin_token_file).await?;

    // Bound before the payment client is made: in the sandbox, notifications come back to it.
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let payments = payments(config, &accounts, sandbox.as_ref(), addr)?;

    let llm = llm_relay(config, sandbox.as_ref());
    let replica = config.replication.source_dir.clone().map(|source| Arc::new(Replica::new(source, config.data_dir.join("replica"))));
    let sandbox_links = sandbox.as_ref().map(|s| SandboxLinks { wechatpay: s.wechatpay_url.clone(), ilink: s.ilink_url.clone() });
    let subscriptions = SubscriptionPolicy {
        grace: config.lifecycle().grace,
        public_url: config.public_url.clone().unwrap_or_else(|| format!("http://{}", loopback(addr))),
    };
    let ctx = ApiContext::new(ApiParts {
        accounts: accounts.clone(),
        market: market.clone(),
        search: Arc::new(searcher(config, sandbox.as_ref())?),
        payments: payments.clone(),
        llm,
        sandbox_links,
        subscriptions,
        edge: config.edge(),
        usage_spill: config.data_dir.join("usage-spill.jsonl"),
        replica: replica.clone(),
        chart_fonts: Arc::new(twilight_chart::Fonts::new(config.chart_font.clone())),
    });
    let shutdown = CancellationToken::new();
    replicate(config, &market, replica.as_ref(), &shutdown);
    if let Some(fills) = config.warehouse_fills()? {
        tokio::spawn(fills.run(market.clone(), accounts.clone(), shutdown.clone()));
    }
    tokio::spawn(ctx.auth.clone().watch_revocations(REVOCATION_POLL, shutdown.clone()));
    if config.scheduler.in_process {
        if let Some(payments) = &payments {
            tokio::spawn(scheduler::reconcile_payments(payments.clone(), config.reconcile_interval(), shutdown.clone()));
        }
        tokio::spawn(config.lifecycle().run(accounts.clone(), config.lifecycle_interval(), shutdown.clone()));
    }
    if config.provisioner.in_process {
        let api_base = format!("http://{}", loopback(addr));
        match provisioning::provisioner(config, accounts.clone(), sandbox.as_ref(), api_base).await {
            Ok(provisioner) => {
                tokio::spawn(Arc::new(provisioner).run(shutdown.clone()));
            }
            // The data plane and checkout still work; paid users wait until it is fixed.
            Err(error) => tracing::error!(error = %format!("{error:#}"), "the in-process provisioner is not running"),
        }
    }
    let server = tokio::spawn(serve(listener, ctx, shutdown.clone(), config.shutdown_drain()));
    Ok(Running { addr, admin_token_file, accounts, market, sandbox, payments, replica, shutdown, server })
}

/// The replication loops `config` asks for: publishing snapshots (a primary), polling for newer
/// ones (a serving host).
fn replicate(config: &Config, market: &Arc<Market>, replica: Option<&Arc<Replica>>, shutdown: &CancellationToken) {
    let section = &config.replication;
    if let Some(dir) = section.publish_dir.clone() {
        let market = market.clone();
        let interval = Duration::from_secs(section.publish_interval_secs.max(1));
        tokio::spawn(scheduler::every("warehouse_publish", interval, shutdown.clone(), move || {
            let (market, dir) = (market.clone(), dir.clone());
            async move {
                match twilight_market::replica::publish(&market, &dir).await {
                    Ok(manifest) => {
                        tracing::info!(file = %manifest.file, bytes = manifest.bytes, "published a warehouse snapshot");
                        true
                    }
                    Err(error) => {
                        tracing::error!(%error, "publishing a warehouse snapshot failed");
                        false
                    }
                }
            }
        }));
    }
    if let Some(replica) = replica.cloned() {
        let market = market.clone();
        let interval = Duration::from_secs(section.poll_secs.max(1));
        tokio::spawn(scheduler::every("warehouse_replica", interval, shutdown.clone(), move || {
            let (market, replica) = (market.clone(), replica.clone());
            async move {
                let outcome = replica.poll(&market).await;
                if let Err(error) = &outcome {
                    tracing::warn!(%error, "the warehouse replica could not take the newest snapshot");
                }
                outcome.is_ok()
            }
        }));
    }
}

/// Serves until `shutdown`, then lets requests in flight finish for at most `drain` (a client that
/// holds a connection open cannot stall the stop past systemd's patience) and writes out every
/// usage row recorded, whether or not the drain finished.
async fn serve(listener: tokio::net::TcpListener, ctx: ApiContext, shutdown: CancellationToken, drain: Duration) -> anyhow::Result<()> {
    let usage = ctx.usage.clone();
    let app = twilight_api::router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let served = tokio::select! {
        served = server => served.context("serving HTTP"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(drain_secs = drain.as_secs(), "requests still in flight after the drain deadline; cutting them off");
            Ok(())
        }
    };
    usage.flush().await;
    served
}

/// Selling through the sandbox WeChat Pay (notifications to this server at `addr`) or the
/// configured merchant; `None` when neither is there.
pub fn payments(
    config: &Config,
    accounts: &Arc<dyn Accounts>,
    sandbox: Option<&Sandbox>,
    addr: SocketAddr,
) -> anyhow::Result<Option<Arc<Payments>>> {
    let wechatpay = match sandbox {
        Some(sandbox) => Some(sandbox.wechatpay_config(format!("http://{}{NOTIFY_PATH}", loopback(addr)))?),
        None => config.wechatpay()?,
    };
    let Some(wechatpay) = wechatpay else { return Ok(None) };
    let processor = Arc::new(WechatPayClient::new(wechatpay)?);
    let billing_config = BillingConfig {
        order_ttl: config.order_ttl(),
        reconcile_grace: Duration::from_secs(config.payments.reconcile_grace_secs),
        closed_retention: Duration::from_secs(config.payments.closed_retention_days * 24 * 3600),
        ..BillingConfig::default()
    };
    Ok(Some(Arc::new(Payments { billing: Billing::new(accounts.clone(), processor, billing_config) })))
}

/// The LLM relay to the sandbox LLM or the configured upstream. Without an upstream key the rest
/// of the server still works and `/llm/v1/*` answers 503 (logged as an error at start).
pub fn llm_relay(config: &Config, sandbox: Option<&Sandbox>) -> Option<Arc<Relay>> {
    let upstream = match sandbox {
        Some(sandbox) => Ok((format!("{}/compatible-mode/v1", sandbox.llm_url), SANDBOX_LLM_KEY.to_string().into())),
        None => config.llm_api_key().map(|key| (config.llm.base_url.clone(), key)),
    };
    let relay = upstream.and_then(|(base_url, api_key)| {
        let relay = Relay::new(RelayConfig {
            base_url,
            api_key,
            timeout: config.llm_timeout(),
            daily_token_budget: config.llm.daily_token_budget,
            allowed_models: config.llm.allowed_models.clone(),
            rate_limit_per_min: config.llm.rate_limit_per_min.max(1),
        })?;
        Ok(relay)
    });
    match relay {
        Ok(relay) => Some(Arc::new(relay)),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the LLM relay is off: the users' bots cannot reach their model");
            None
        }
    }
}

/// The search providers of `search.order`, pointed at the sandbox's simulators or at the real
/// services with their keys; a real one without a key is left out and reported.
pub fn searcher(config: &Config, sandbox: Option<&Sandbox>) -> anyhow::Result<Searcher> {
    let section = &config.search;
    let mut providers: Vec<(Arc<dyn Provider>, twilight_search::ProviderSettings)> = Vec::new();
    let mut skipped = Vec::new();
    for name in &section.order {
        let (settings, kind, env) = match name.as_str() {
            "dashscope" => (&section.dashscope, SearchKind::DashScope, "TWILIGHT_DASHSCOPE_API_KEY"),
            "google_cse" => (&section.google_cse, SearchKind::Google, "TWILIGHT_GOOGLE_CSE_KEY"),
            "bocha" => (&section.bocha, SearchKind::Bocha, "TWILIGHT_BOCHA_API_KEY"),
            other => anyhow::bail!("search.order: unknown provider {other:?}; use dashscope, google_cse or bocha"),
        };
        let setting = format!("search.{name}.key_file");
        let (base_url, key, engine_id) = match sandbox {
            Some(sandbox) => {
                let url = sandbox.search_sim(kind).1.to_string();
                (url, Some(SANDBOX_SEARCH_KEY.to_string().into()), Some(SANDBOX_SEARCH_ENGINE.to_string()))
            }
            None => (settings.base_url.clone(), settings.key(env, &setting)?, settings.engine_id.clone()),
        };
        let Some(key) = key else {
            skipped.push((kind.name(), format!("no key: set {env} or {setting}")));
            continue;
        };
        let endpoint = Endpoint { base_url, key, timeout: config.search_timeout() };
        let provider: Arc<dyn Provider> = match kind {
            SearchKind::DashScope => Arc::new(DashScope::new(endpoint, settings.route.unwrap_or(DashScopeRoute::Plugin))),
            SearchKind::Google => match engine_id {
                Some(engine_id) => Arc::new(GoogleCse::new(endpoint, engine_id)),
                None => {
                    skipped.push((kind.name(), "no engine: set search.google_cse.engine_id".to_string()));
                    continue;
                }
            },
            SearchKind::Bocha => Arc::new(Bocha::new(endpoint)),
        };
        providers.push((provider, settings.settings()));
    }
    let search_config = SearchConfig {
        cache_ttl: Duration::from_secs(section.cache_secs),
        breaker_window: Duration::from_secs(section.breaker_secs.max(1)),
    };
    Ok(Searcher::new(search_config, providers, skipped))
}

/// `addr`, or the loopback address on its port when it listens on all interfaces.
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Makes sure `path` holds a live admin token, creating one (mode 0600) on first run.
async fn ensure_admin_token(accounts: &dyn Accounts, path: &std::path::Path) -> anyhow::Result<()> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        if let Some(token) = accounts.admin_token(&twilight_core::token::hash_hex(existing.trim())).await? {
            if token.revoked_at.is_none() {
                return Ok(());
            }
        }
    }
    let token = RawToken::generate();
    accounts.insert_admin_token(&token.hash(), "bootstrap").await?;
    Ok(secret_file::write(path, token.expose())?)
}
