//! Building the provisioner from configuration: hermes on this host, the chosen secret store and
//! service manager, iLink (or the sandbox's), and what every profile gets planted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use twilight_accounts::Accounts;
use twilight_ilink::IlinkClient;
use twilight_provision::{
    ChildSupervisor, FileStore, HermesCli, PassStore, ProfileName, Provisioner, ProvisionerConfig, SecretDelivery, SecretStore,
    ServiceManager, SystemdCredsStore, SystemdManager, SystemdScope,
};

use crate::app::Sandbox;
use crate::cfg::{Config, ProvisionerSection};

/// Where production keeps the configuration and the key files it names.
const CONFIG_DIR: &str = "/etc/twilight";

/// A provisioner for this host, with the profile template installed (or updated) in hermes.
/// `api_base` is the data plane's URL as the users' agents reach it.
pub async fn provisioner(
    config: &Config,
    accounts: Arc<dyn Accounts>,
    sandbox: Option<&Sandbox>,
    api_base: String,
) -> anyhow::Result<Provisioner> {
    let section = &config.provisioner;
    let bin = config.hermes_bin();
    if !bin.is_file() {
        bail!("hermes is not installed at {} (run scripts/install-hermes, or set provisioner.hermes_bin)", bin.display());
    }
    let hermes = HermesCli::new(bin, config.hermes_home()?);
    install_template(config, &hermes).await?;
    let secrets: Arc<dyn SecretStore> = match section.secret_store.as_str() {
        "file" => Arc::new(FileStore::new(config.secrets_dir()?)),
        "pass" => Arc::new(PassStore::new(config.secrets_dir()?)),
        "systemd-creds" => Arc::new(SystemdCredsStore::new(config.secrets_dir()?)),
        other => bail!("provisioner.secret_store {other:?}: expected file, pass or systemd-creds"),
    };
    let services: Arc<dyn ServiceManager> = match section.service_manager.as_str() {
        "supervisor" if section.preload_gateways => Arc::new(ChildSupervisor::new(hermes.clone())),
        "supervisor" => Arc::new(ChildSupervisor::without_preload(hermes.clone())),
        "systemd-user" => Arc::new(
            SystemdManager::new(hermes.clone(), SystemdScope::User, secrets.delivery())
                .with_memory_max(&section.gateway_memory_max)
                .context("provisioner.gateway_memory_max")?,
        ),
        // Each gateway as its own OS user, in a sandbox that hides our data, secrets and configuration.
        "systemd-system" => Arc::new(
            SystemdManager::new(hermes.clone(), SystemdScope::System, secrets.delivery())
                .with_hidden_paths(gateway_hidden_paths(config)?)
                .with_memory_max(&section.gateway_memory_max)
                .context("provisioner.gateway_memory_max")?,
        ),
        other => bail!("provisioner.service_manager {other:?}: expected supervisor, systemd-user or systemd-system"),
    };
    if matches!(secrets.delivery(), SecretDelivery::SystemdCredentials { .. }) && section.service_manager == "supervisor" {
        bail!("provisioner.secret_store systemd-creds needs a systemd service manager");
    }
    // The profiles' LLM is our relay at `<api_base>/llm/v1` (the user's own key); the upstream key
    // stays with `serve` (`[llm]`).
    let (ilink_url, cdn_url) = match sandbox {
        Some(sandbox) => (sandbox.ilink_url.clone(), format!("{}/c2c", sandbox.ilink_url)),
        None => (section.ilink_base_url.clone(), section.ilink_cdn_base_url.clone()),
    };
    let ilink = IlinkClient::new(&ilink_url).context("provisioner.ilink_base_url")?;
    // Links the bots show customers; in the embedded default the data plane's address is ours too.
    let public_url = config.public_url.clone().unwrap_or_else(|| api_base.clone());
    let provisioner_config = ProvisionerConfig {
        worker_id: format!("{}-{}-{:08x}", hostname(), std::process::id(), rand::random::<u32>()),
        host: hostname(),
        gateway_slots: section.gateway_slots.unwrap_or_else(|| default_gateway_slots(section)).max(0),
        api_base: section.api_base.clone().unwrap_or(api_base),
        template: ProfileName::template(),
        lease: Duration::from_secs(120),
        max_attempts: section.max_attempts.max(1),
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(600),
        idle_poll: Duration::from_millis(section.idle_poll_ms.max(50)),
        qr_rounds: section.qr_rounds.max(1),
        concurrency: section.concurrency,
        public_url,
        remind_before: chrono::Duration::days(3),
        park: Duration::from_secs(24 * 3600),
        weixin_cdn_base_url: cdn_url,
    };
    Ok(Provisioner::new(accounts, hermes, secrets, services, ilink, provisioner_config))
}

/// hermes tools that read another profile's files when the model asks them to (`session_search`
/// takes a `profile` argument and opens that profile's `state.db`): harmless where each gateway is an
/// OS user of its own, a window into other customers' conversations where gateways share one.
const CROSS_PROFILE_TOOLS: &[&str] = &["session_search"];

/// Creates or updates the profile template every user is cloned from; where the gateways will share
/// one OS user, without the tools that can read other profiles.
pub async fn install_template(config: &Config, hermes: &HermesCli) -> anyhow::Result<()> {
    let dir = &config.provisioner.template_dir;
    let template = ProfileName::template();
    hermes.install_template(dir, &template).await.with_context(|| format!("installing the profile template from {}", dir.display()))?;
    if gateways_share_a_user(config) {
        hermes.withhold_tools(&template, CROSS_PROFILE_TOOLS).await.context("withholding cross-profile tools")?;
        tracing::warn!(tools = ?CROSS_PROFILE_TOOLS, "gateways share one OS user here: new profiles get no tools that read other profiles");
    }
    Ok(())
}

/// Whether the gateways run under one OS user: `systemd-user` always, the supervisor when this
/// process cannot switch users (not root). Only `systemd-system` and a root supervisor give each
/// gateway a user of its own.
fn gateways_share_a_user(config: &Config) -> bool {
    match config.provisioner.service_manager.as_str() {
        "systemd-system" => false,
        "supervisor" => !twilight_provision::GatewayUser::supported(),
        _ => true,
    }
}

/// What a system unit's gateway must not see: our data directory (accounts DB, warehouse, other
/// profiles), the warehouse and secret store wherever they are, and the configuration with its key files.
fn gateway_hidden_paths(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let absolute = |path: &Path| std::path::absolute(path).with_context(|| format!("resolving {}", path.display()));
    Ok(vec![absolute(&config.data_dir)?, absolute(&config.warehouse_path())?, config.secrets_dir()?, PathBuf::from(CONFIG_DIR)])
}

/// What one gateway is budgeted, in MiB: its private memory after a conversation (README, "Capacity":
/// `cargo bench --workspace --profile dev --bench gateways`) and room for longer ones. Starting its
/// own interpreter, 122 measured …
const GATEWAY_MIB: u64 = 140;
/// … forked from the supervisor's preloaded zygote, 74.
const FORKED_GATEWAY_MIB: u64 = 90;
/// Memory kept for everything on the host but the gateways (serve, the OS, the zygote).
const RESERVED_MIB: u64 = 1024;

/// This host's memory less [`RESERVED_MIB`], over what one of its gateways is budgeted; 0 where it
/// cannot be read.
fn default_gateway_slots(section: &ProvisionerSection) -> i32 {
    let per_gateway = match section.service_manager == "supervisor" && section.preload_gateways {
        true => FORKED_GATEWAY_MIB,
        false => GATEWAY_MIB,
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kib: u64 =
        meminfo.lines().find_map(|line| line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0);
    i32::try_from((total_kib / 1024).saturating_sub(RESERVED_MIB) / per_gateway).unwrap_or(i32::MAX)
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
