#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use twilight::app::{self, Sandbox};
use twilight::backfill::{self, Codes};
use twilight::backup;
use twilight::cfg::Config;
use twilight_accounts::{NewUser, Plan, UserStatus};
use uuid::Uuid;

/// Twilight Drive: a stock-research analyst on WeChat — backend, provisioner and operations in one binary.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML config file; without one, the embedded default runs (SQLite, DuckDB and sandbox upstreams under ./data).
    #[arg(long, global = true, env = "TWILIGHT_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the data plane and admin API.
    Serve,
    /// Apply the accounts DB migrations.
    Migrate,
    /// Accounts administration from the shell.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run the recurring jobs (reconciliation of pending payments) until interrupted.
    Scheduler,
    /// Provision paid users' bots (hermes profiles, secrets, WeChat pairing, gateways) until interrupted.
    Provisioner,
    /// Run the upstream simulators on loopback ports until interrupted.
    Sandbox,
    /// Fill the warehouse with years of daily bars from TDX: resumable (a second run fetches only
    /// what is new) and no Tushare points spent on bars.
    Backfill {
        /// Codes to fill, comma-separated (600519.SH,000001.SZ); default: the largest by market value.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        codes: Vec<twilight_core::TsCode>,
        /// Every listed Shanghai and Shenzhen stock.
        #[arg(long)]
        all: bool,
        /// How many of the largest by total market value, without --codes or --all.
        #[arg(long, default_value_t = 300)]
        top: usize,
        /// Years of history back from the last closed session.
        #[arg(long, default_value_t = 5)]
        years: u32,
    },
    /// Compare Tushare's closes with every other source's in the warehouse (TDX's, from a backfill)
    /// and report, as JSON lines, each (code, day) where they differ by more than 0.01 %.
    CheckSources {
        /// From this day on (`YYYY-MM-DD`); default: everything held.
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
    },
    /// Back up the accounts DB and the warehouse into a new directory, with a manifest of checksums
    /// (while `serve` runs, it takes the warehouse snapshot).
    Backup {
        /// The directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the accounts DB and the warehouse with a backup, after checking it against its
    /// manifest. Stop serve, the scheduler and the provisioner first.
    Restore {
        /// A directory `twilight backup` wrote.
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin token and print it once.
    CreateAdminToken {
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Create a user with one API key and print the key once (the manual alpha path).
    CreateUser {
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value = "alpha")]
        plan: Plan,
        #[arg(long, default_value_t = twilight_accounts::DEFAULT_RATE_LIMIT_PER_MIN)]
        rate_limit: i32,
    },
    /// Revoke every live key of a user (running servers notice within a fraction of a second).
    RevokeKey {
        #[arg(long)]
        user: Uuid,
    },
    /// Start (or resume) provisioning a user's bot and print the onboarding link to hand them.
    Provision {
        #[arg(long)]
        user: Uuid,
    },
    /// Create or update the hermes profile template users are cloned from.
    InstallTemplate,
    /// Users newest first, as JSON lines (`--status expired` for one status).
    Users {
        #[arg(long)]
        status: Option<UserStatus>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// One user: plan, status, paid_until, profile, open jobs and last payment, as JSON.
    User { user: Uuid },
    /// What the answer with this tool_call_id cited, for whom and when, as JSON (the server's
    /// `GET /admin/citations/{id}` adds what the warehouse holds for each row now).
    Trace { tool_call_id: String },
    /// Every admin token by its hash (never the token), label and revocation.
    Tokens,
    /// Revoke an admin token by the hash `tokens` lists.
    RevokeToken { token_hash: String },
    /// Requests and upstream points by endpoint by day.
    Usage {
        #[arg(long)]
        user: Uuid,
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Delete usage rows and the citations of answers served before a date (`YYYY-MM-DD`, UTC).
    Prune {
        #[arg(long)]
        before: chrono::NaiveDate,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    app::own_files_only();
    init_logging(cli.log_format);
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(&config).await,
        Command::Migrate => {
            app::connect_accounts(&config).await?;
            println!("accounts DB migrated");
            Ok(())
        }
        Command::Admin(command) => admin(&config, command).await,
        Command::Scheduler => scheduler(&config).await,
        Command::Provisioner => provisioner(&config).await,
        Command::Backfill { codes, all, top, years } => {
            let codes = match (codes.is_empty(), all) {
                (false, _) => Codes::Listed(codes),
                (true, true) => Codes::All,
                (true, false) => Codes::Largest(top),
            };
            let summary = backfill::run(&config, codes, years).await?;
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} of {} codes failed (see the progress lines); run backfill again to retry them",
                    summary.failed,
                    summary.codes
                );
            }
            Ok(())
        }
        Command::CheckSources { since } => backfill::check_sources(&config, since),
        Command::Backup { out } => {
            let manifest = backup::backup(&config, &out).await?;
            println!("{}", serde_json::to_string(&manifest)?);
            Ok(())
        }
        Command::Restore { from } => {
            let manifest = backup::restore(&config, &from).await?;
            println!("{}", serde_json::to_string(&manifest)?);
            Ok(())
        }
        Command::Sandbox => {
            let sandbox = Sandbox::start().await?;
            println!("sandbox Tushare: {} (token: {})", sandbox.market.tushare_url, app::SANDBOX_TUSHARE_TOKEN);
            println!("sandbox TDX quote server: {}", sandbox.market.tdx_addr);
            println!("sandbox Yahoo Finance: {}", sandbox.market.yahoo_url);
            println!("sandbox AKTools: {}", sandbox.market.aktools_url);
            println!("sandbox WeChat Pay: {} (mchid {}; its keys are fresh on every start)", sandbox.wechatpay_url, app::SANDBOX_MCHID);
            for (kind, _, url) in &sandbox.search {
                println!("sandbox search {}: {url} (key: {})", kind.name(), app::SANDBOX_SEARCH_KEY);
            }
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
    }
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let running = app::start(config).await?;
    println!("Twilight Drive is up at {}", running.url());
    println!("  admin token: {} (send it as 'Authorization: Bearer <token>' to /admin/*)", running.admin_token_file.display());
    if let Some(sandbox) = &running.sandbox {
        println!(
            "  sandbox mode: upstreams are simulators (Tushare at {}, TDX at {}); answers are labelled sandbox:*",
            sandbox.market.tushare_url, sandbox.market.tdx_addr
        );
        println!("  sandbox WeChat Pay at {}: pay an order on its page /sandbox/pay/<order number>", sandbox.wechatpay_url);
        println!("  sandbox iLink at {} (scan a pairing QR on its page), sandbox LLM at {}", sandbox.ilink_url, sandbox.llm_url);
        let search: Vec<String> = sandbox.search.iter().map(|(kind, _, url)| format!("{} at {url}", kind.name())).collect();
        println!("  sandbox web search: {}", search.join(", "));
    }
    running.until_signal().await
}

/// Provisions bots on this host until SIGINT/SIGTERM; the embedded default runs it in `serve`.
async fn provisioner(config: &Config) -> anyhow::Result<()> {
    let accounts = app::connect_accounts(config).await?;
    let api_base = format!("http://{}", config.listen);
    let provisioner = std::sync::Arc::new(twilight::provisioning::provisioner(config, accounts, None, api_base).await?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(provisioner.run(shutdown.clone()));
    tracing::info!("provisioner running");
    app::signal().await?;
    shutdown.cancel();
    worker.await?;
    Ok(())
}

/// The recurring jobs against the configured merchant; the embedded default runs them in `serve`.
async fn scheduler(config: &Config) -> anyhow::Result<()> {
    let accounts = app::connect_accounts(config).await?;
    // The scheduler takes no notifications, so the address only matters to a sandbox (not run here).
    let payments = app::payments(config, &accounts, None, config.listen)?
        .context("no payment processor configured: set [payments.wechatpay] in the config file")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reconcile = tokio::spawn(twilight::scheduler::reconcile_payments(payments, config.reconcile_interval(), shutdown.clone()));
    let lifecycle = tokio::spawn(config.lifecycle().run(accounts, config.lifecycle_interval(), shutdown.clone()));
    tracing::info!(interval_secs = config.reconcile_interval().as_secs(), "scheduler running");
    app::signal().await?;
    shutdown.cancel();
    reconcile.await?;
    lifecycle.await?;
    Ok(())
}

async fn admin(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let accounts = app::connect_accounts(config).await?;
    match command {
        AdminCommand::CreateAdminToken { label } => {
            let token = twilight_core::RawToken::generate();
            accounts.insert_admin_token(&token.hash(), &label).await?;
            println!("{}", token.expose());
        }
        AdminCommand::CreateUser { email, plan, rate_limit } => {
            let (user, key) = twilight_accounts::create_user_with_key(
                &*accounts,
                NewUser { email, display_name: None, plan, paid_until: None },
                rate_limit,
            )
            .await?;
            println!("user_id: {}\napi_key: {}\n(the key is shown once; only its sha256 is stored)", user.user_id, key.expose());
        }
        AdminCommand::RevokeKey { user } => {
            let revoked = accounts.revoke_user_keys(user).await.with_context(|| format!("revoking keys of {user}"))?;
            println!("revoked {revoked} key(s) of {user}");
        }
        AdminCommand::Provision { user } => {
            let (job, link) =
                twilight_api::admin::provision_user(&*accounts, user).await.with_context(|| format!("provisioning {user}"))?;
            println!(
                "job {} ({})
onboarding link: {link}
(shown once; an earlier link of this user stops working)",
                job.job_id, job.state
            );
        }
        AdminCommand::InstallTemplate => {
            let hermes = twilight_provision::HermesCli::new(config.hermes_bin(), config.hermes_home()?);
            twilight::provisioning::install_template(config, &hermes).await?;
            println!("template {} installed under {}", twilight_provision::TEMPLATE_PROFILE, hermes.home().display());
        }
        AdminCommand::Users { status, limit, offset } => {
            for user in accounts.list_users(status, limit, offset).await? {
                println!("{}", serde_json::to_string(&user)?);
            }
        }
        AdminCommand::User { user } => {
            let overview = twilight_accounts::user_overview(&*accounts, user).await?.with_context(|| format!("no user {user}"))?;
            println!("{}", serde_json::to_string_pretty(&overview)?);
        }
        AdminCommand::Trace { tool_call_id } => {
            let citation = accounts.citation(&tool_call_id).await?.with_context(|| format!("no answer cited {tool_call_id}"))?;
            println!("{}", serde_json::to_string_pretty(&citation)?);
        }
        AdminCommand::Tokens => {
            for token in accounts.admin_tokens().await? {
                println!("{}", serde_json::to_string(&token)?);
            }
        }
        AdminCommand::RevokeToken { token_hash } => {
            anyhow::ensure!(accounts.revoke_admin_token(&token_hash).await?, "no live admin token with hash {token_hash}");
            println!("revoked; running servers notice within a fraction of a second");
        }
        AdminCommand::Usage { user, days } => {
            let since = chrono::Utc::now() - chrono::Duration::days(days);
            let rows = accounts.usage_by_day(user, since).await?;
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        AdminCommand::Prune { before } => {
            let pruned = accounts.prune_usage(before.and_time(chrono::NaiveTime::MIN).and_utc()).await?;
            println!("{}", serde_json::json!({ "usage_rows": pruned.usage_rows, "citations": pruned.citations }));
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    // rmcp logs three info lines per stateless MCP request (one server per request); ours say more.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWILIGHT_LOG").unwrap_or_else(|_| "info,rmcp=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}
