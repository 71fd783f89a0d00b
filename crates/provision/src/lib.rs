#![forbid(unsafe_code)]
//! The host side of provisioning a user's bot: everything the provisioner's state machine does to a
//! machine, each step idempotent so a retried step is harmless.
//!
//! - [`HermesCli`] creates, clones and deletes hermes profiles, installs the shipped template, and renders
//!   the persona ([`BotName`] → SOUL.md).
//! - [`DotEnv`] edits a profile's `.env` so hermes reads back exactly what was written.
//! - [`SecretStore`] keeps per-user secrets ([`FileStore`], [`PassStore`], [`SystemdCredsStore`]) and
//!   [`plant_secrets`] makes them visible to the gateway the way the store requires ([`SecretDelivery`]).
//! - [`ServiceManager`] keeps one gateway per profile running: [`SystemdManager`] in production,
//!   [`ChildSupervisor`] where there is no systemd (the embedded default, CI). Run as root, both give
//!   every gateway an OS user of its own ([`GatewayUser`]) that alone owns its profile.
//!
//! Secret values are [`secrecy::SecretString`]s: no type here prints one in `Debug`, no error carries one,
//! and they reach child processes on stdin, never in argv.

mod command;
pub mod dotenv;
mod error;
pub mod hermes;
mod names;
pub mod pairing;
pub mod provisioner;
pub mod secret_file;
pub mod secrets;
pub mod service;
pub mod soul;

pub use dotenv::DotEnv;
pub use error::{Error, Result};
pub use hermes::HermesCli;
pub use names::{EnvKey, ProfileName, TEMPLATE_PROFILE};
pub use provisioner::{Outcome, Provisioner, ProvisionerConfig};
pub use secrets::{plant_secrets, FileStore, PassStore, SecretDelivery, SecretStore, SystemdCredsStore};
pub use service::{Account, Backoff, ChildSupervisor, GatewayUser, Launcher, ServiceManager, ServiceStatus, SystemdManager, SystemdScope};
pub use soul::BotName;
