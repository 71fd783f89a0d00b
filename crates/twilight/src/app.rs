//! Starting the whole service: accounts DB, warehouse, sandbox upstreams (if enabled), HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use twilight_accounts::{Accounts, SqlAccounts};
use twilight_api::ApiContext;
use twilight_core::RawToken;
use twilight_market::{Market, MarketConfig, TushareConfig};
use twilight_provision::secret_file;
use twilight_sandbox::TushareSim;

use crate::cfg::Config;

/// How often another process's revocation is looked for.
const REVOCATION_POLL: Duration = Duration::from_millis(200);
pub const SANDBOX_TUSHARE_TOKEN: &str = "sandbox-tushare-token";

/// The simulators started in-process by the embedded default.
#[derive(Clone)]
pub struct Sandbox {
    pub tushare: TushareSim,
    pub tushare_url: String,
}

impl Sandbox {
    pub async fn start() -> anyhow::Result<Sandbox> {
        let tushare = TushareSim::new(SANDBOX_TUSHARE_TOKEN);
        let (addr, _task) = twilight_sandbox::serve(tushare.router(), 0).await.context("starting the sandbox Tushare")?;
        Ok(Sandbox { tushare, tushare_url: format!("http://{addr}") })
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
    pub sandbox: Option<Sandbox>,
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
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Starts everything `config` asks for and begins serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let accounts = connect_accounts(config).await?;
    let sandbox = if config.sandbox.enabled { Some(Sandbox::start().await?) } else { None };
    let tushare = match &sandbox {
        Some(sandbox) => TushareConfig {
            base_url: sandbox.tushare_url.clone(),
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
    let market = Market::open(MarketConfig { warehouse_path: config.warehouse_path(), tushare }).context("opening the warehouse")?;
    let admin_token_file = config.data_dir.join("admin-token");
    ensure_admin_token(&*accounts, &admin_token_file).await?;

    let ctx = ApiContext::new(accounts.clone(), Arc::new(market));
    let shutdown = CancellationToken::new();
    tokio::spawn(ctx.auth.clone().watch_revocations(REVOCATION_POLL, shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let usage = ctx.usage.clone();
            axum::serve(listener, twilight_api::router(ctx)).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
            usage.flush().await;
            Ok(())
        }
    });
    Ok(Running { addr, admin_token_file, accounts, sandbox, shutdown, server })
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
