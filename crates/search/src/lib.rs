#![forbid(unsafe_code)]
//! Web search behind `/search` and the bot's `search` tool: providers (DashScope, Google
//! Programmable Search, Bocha) behind one trait, tried in order with transparent fallback, daily
//! budgets, a breaker per provider, a cache of identical queries, and results cleaned into one
//! shape. No HTTP server here: the API crate serves what [`Searcher::search`] finds.

mod bocha;
mod chain;
mod clean;
mod dashscope;
mod error;
mod google;
mod provider;
mod request;

pub use bocha::Bocha;
pub use chain::{Found, ProviderSettings, ProviderStatus, SearchConfig, Searcher, Served};
pub use clean::Hit;
pub use dashscope::{DashScope, DashScopeRoute};
pub use error::SearchError;
pub use google::GoogleCse;
pub use provider::{Endpoint, Page, Provider, ProviderError, RawHit};
pub use request::SearchRequest;

/// The table name the cites of search results carry.
pub const CITE_TABLE: &str = "web_search";
