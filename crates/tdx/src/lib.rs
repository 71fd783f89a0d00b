#![forbid(unsafe_code)]
//! A client for TDX (通达信) quote servers, the free source of bulk daily history: the binary wire
//! format ([`wire`]), one connection ([`Connection`]) and a pool over several servers ([`TdxPool`]).

mod connection;
mod error;
mod pool;
pub mod wire;

pub use connection::Connection;
pub use error::TdxError;
pub use pool::{PoolConfig, ServerHealth, TdxPool};
pub use wire::{Bar, BarsQuery, Market, Period, Security, XdxrDetail, XdxrEvent};
