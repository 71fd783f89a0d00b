/// Everything an accounts operation can fail with.
///
/// `NotFound`, `Conflict` and `Rejected` are outcomes a caller answers (404, 409, 422); the others are internal
/// failures to log. No variant carries a database password.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The named entity ("user", …) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A row with the same unique key already exists.
    #[error("{0}")]
    Conflict(String),
    /// The request contradicts what is stored (a payment for another amount, a refund of an
    /// unpaid order); nothing was changed.
    #[error("{0}")]
    Rejected(String),
    /// The database URL has an unsupported scheme or does not parse.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A backup or restore could not be made (the tool failed, a file is missing or damaged).
    #[error("{0}")]
    Backup(String),
}

/// Shorthand used by every accounts operation.
pub type Result<T, E = AccountsError> = std::result::Result<T, E>;

/// Turns the constraint violations a caller can act on into outcomes, by error kind (never by
/// message text). Every foreign key in this schema points at `users`, hence `NotFound("user")`.
pub(crate) fn classify(err: sqlx::Error, what: &str) -> AccountsError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => AccountsError::Conflict(format!("{what} already exists")),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => AccountsError::NotFound("user"),
        _ => err.into(),
    }
}
