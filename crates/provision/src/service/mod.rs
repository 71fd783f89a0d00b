//! Keeping one hermes gateway per profile running, behind one trait.
//!
//! [`SystemdManager`] writes and drives `hermes-gateway-<profile>.service` units (production);
//! [`ChildSupervisor`] runs the gateways as child processes of ours where there is no systemd (the
//! embedded default, containers, CI). Every method is idempotent: installing twice, starting a running
//! gateway, stopping a stopped one and uninstalling a missing one all succeed.

mod identity;
mod supervisor;
mod systemd;
mod zygote;

use async_trait::async_trait;

use crate::error::Result;
use crate::names::ProfileName;

pub use identity::{Account, GatewayUser};
pub use supervisor::{Backoff, ChildSupervisor, Launcher};
pub use systemd::{SystemdManager, SystemdScope};

#[async_trait]
pub trait ServiceManager: Send + Sync {
    /// Registers the profile's gateway (writes the unit); does not start it.
    async fn install(&self, profile: &ProfileName) -> Result<()>;
    /// Starts the gateway and keeps it running (restarts it when it exits).
    async fn start(&self, profile: &ProfileName) -> Result<()>;
    /// Stops the gateway: SIGTERM, then SIGKILL after a grace period.
    async fn stop(&self, profile: &ProfileName) -> Result<()>;
    async fn status(&self, profile: &ProfileName) -> Result<ServiceStatus>;
    /// Stops the gateway and removes what [`ServiceManager::install`] registered.
    async fn uninstall(&self, profile: &ProfileName) -> Result<()>;
}

/// What a service manager knows about one gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    pub installed: bool,
    /// The gateway's process id while it runs.
    pub pid: Option<u32>,
    /// How often it was restarted after exiting on its own.
    pub restarts: u64,
    /// How it last ended, e.g. `exit status: 1` or `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
}
