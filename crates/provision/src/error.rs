//! The crate's one error type.
//!
//! No variant ever holds a secret value or an environment value: commands are described by program and
//! arguments only (secrets reach child processes through stdin, never argv), and a value that cannot be
//! written is reported by its key alone.

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A profile name hermes would refuse (pattern `^[a-z0-9][a-z0-9_-]{0,63}$`, or a reserved name).
    #[error("invalid profile name {name:?}: {reason}")]
    InvalidProfileName { name: String, reason: &'static str },

    /// An environment key outside `^[A-Z_][A-Z0-9_]*$`.
    #[error("invalid environment key {0:?}: must match ^[A-Z_][A-Z0-9_]*$")]
    InvalidEnvKey(String),

    /// A value hermes' dotenv loader would not read back unchanged (the value itself is not shown).
    #[error("the value for {key} cannot be stored in a .env file: {reason}")]
    UnrepresentableValue { key: String, reason: &'static str },

    /// A bot name the user chose that we refuse rather than silently rewrite.
    #[error("invalid bot name: {0}")]
    InvalidBotName(&'static str),

    /// The shipped template directory is incomplete or carries values it must not.
    #[error("template {path}: {reason}")]
    Template { path: PathBuf, reason: String },

    /// A secret the store does not hold.
    #[error("no secret {key} stored for {scope}")]
    SecretNotFound { scope: String, key: String },

    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },

    /// A command exited unsuccessfully; `output` is its trimmed stderr (its stdout when stderr is empty,
    /// since hermes prints its own `Error: …` lines to stdout).
    #[error("`{command}` failed ({status}): {output}")]
    Command { command: String, status: String, output: String },

    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },

    /// A hermes command reported success but left the profile directory in the wrong state.
    #[error("hermes profile {profile}: {reason}")]
    Hermes { profile: String, reason: &'static str },

    /// A path a systemd unit cannot name without quoting (whitespace, quotes, backslashes).
    #[error("path {0} cannot be written into a systemd unit")]
    UnitPath(PathBuf),

    /// An OS user lookup failed (not: the user does not exist).
    #[error("looking up OS user {user}: {source}")]
    UserLookup { user: String, source: std::io::Error },

    /// useradd succeeded but the user cannot be found.
    #[error("OS user {0} is missing right after useradd")]
    NoSuchUser(String),

    /// A gateway's own user could not reach what it runs or where it lives.
    #[error(
        "gateway user {user} cannot reach {path}: {blocked} is not searchable by it. Keep the hermes venv (and the \
         interpreter it was made from) and HERMES_HOME outside private home directories, e.g. /opt/twilight/hermes-venv \
         and /var/lib/twilight/hermes, or allow others to search {blocked} (chmod o+x)"
    )]
    Unreachable { user: String, path: PathBuf, blocked: PathBuf },

    /// A configured value that would not be one line of a systemd unit's setting.
    #[error("{value:?} is not a valid {key}= for a systemd unit")]
    UnitValue { key: &'static str, value: String },

    /// Something only root may do, asked of a process that is not root.
    #[error("creating {0} needs root")]
    NeedsRoot(&'static str),

    /// The service manager does not know the profile (never installed, or already uninstalled).
    #[error("no gateway service installed for profile {0}")]
    NotInstalled(String),

    #[error(transparent)]
    Accounts(#[from] twilight_accounts::AccountsError),

    #[error(transparent)]
    Ilink(#[from] twilight_ilink::IlinkError),

    /// Another provisioner took the job over: ours ran past its lease.
    #[error("lost the job's lease to another provisioner")]
    LostLease,

    /// A job in a state this provisioner does not know (a newer release's job, or a bug).
    #[error("unknown job state {0:?}")]
    UnknownJobState(String),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
