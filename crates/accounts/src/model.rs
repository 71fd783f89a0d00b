//! Rows and inputs of the accounts database, shared by every backend.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A text column held a value this build does not know (e.g. a plan added by a newer release).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
}

/// Declares an enum stored as lowercase text, with `as_str`, `FromStr`, `Display`, serde, and
/// `TryFrom<String>` (which `#[sqlx(try_from = "String")]` uses to decode it on every backend).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The text stored in the database and shown by the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(s: String) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// What a user paid for; decides limits and features elsewhere.
    Plan { Pro = "pro", Lite = "lite", Alpha = "alpha" }
}

text_enum! {
    /// Whether a user's keys may be used at all; anything but `Active` means no service.
    UserStatus {
        Active = "active",
        Suspended = "suspended",
        Refunded = "refunded",
        Cancelled = "cancelled",
    }
}

/// A paying (or trial) customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub weixin_openid: Option<String>,
    pub display_name: Option<String>,
    #[sqlx(try_from = "String")]
    pub plan: Plan,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    pub paid_until: Option<DateTime<Utc>>,
}

/// Input of [`crate::Accounts::create_user`]; the id, status (`Active`) and `created_at` are
/// assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewUser {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub plan: Plan,
    pub paid_until: Option<DateTime<Utc>>,
}

/// A user's API key, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub key_hash: String,
    pub user_id: Uuid,
    pub scope: String,
    pub rate_limit_per_min: i32,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// A revoked key must be refused even if its user is still active.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Input of [`crate::Accounts::insert_api_key`]; `key_hash` is `twilight_core::token::hash_hex` of the raw key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub key_hash: String,
    pub user_id: Uuid,
    pub scope: String,
    pub rate_limit_per_min: i32,
}

/// An operator credential for `/admin/*`; a separate class from user keys so neither can act as
/// the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AdminToken {
    pub token_hash: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl AdminToken {
    /// A revoked token must be refused.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// One served request, as buffered by the metering layer and written by
/// [`crate::Accounts::record_usage`]. `key_hash` only advances the key's `last_used_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub user_id: Uuid,
    pub key_hash: String,
    pub endpoint: String,
    pub occurred_at: DateTime<Utc>,
    pub upstream_cost_pts: i32,
    /// HTTP status served.
    pub status: u16,
}

/// Requests and upstream cost of one user on one endpoint during one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub endpoint: String,
    pub requests: i64,
    pub upstream_cost_pts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip_and_reject_junk() {
        for plan in [Plan::Pro, Plan::Lite, Plan::Alpha] {
            assert_eq!(plan.as_str().parse::<Plan>(), Ok(plan));
        }
        assert_eq!("suspended".parse::<UserStatus>(), Ok(UserStatus::Suspended));
        let err = "gold".parse::<Plan>().unwrap_err();
        assert_eq!(err.to_string(), "unknown Plan `gold`");
        assert_eq!(UserStatus::Cancelled.to_string(), "cancelled");
    }
}
