#![forbid(unsafe_code)]
//! Protocol-faithful simulators of the outside services Twilight Drive talks to, for tests and
//! for the offline embedded default. Each speaks its protocol on loopback exactly as documented in
//! `shared/protocols/`, with deterministic data and switchable fault modes.

pub mod aktools;
pub mod calendar;
mod common;
pub mod ilink;
pub mod llm;
pub mod search;
mod seed;
pub mod tdx;
pub mod tushare;
pub mod wechatpay;
pub mod yahoo;

use std::net::{Ipv4Addr, SocketAddr};

pub use aktools::AktoolsSim;
pub use common::{Fault, SANDBOX_HEADER};
pub use ilink::{IlinkSim, IlinkSimConfig, SentMessage};
pub use llm::{LlmSim, Turn};
pub use search::{SearchKind, SearchMode, SearchSim};
pub use tdx::{TdxMode, TdxSim};
pub use tushare::{TushareMode, TushareSim};
pub use wechatpay::{NotifyAttempt, NotifyFault, PayError, RecordingWebhook, SandboxKeys, WechatPaySim, WechatPaySimConfig};
pub use yahoo::{YahooMode, YahooSim};

/// Binds 127.0.0.1:`port` (0 = ephemeral), serves `router` in a task, and returns the bound
/// address and that task.
pub async fn serve(router: axum::Router, port: u16) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%addr, %error, "sandbox server stopped");
        }
    });
    Ok((addr, task))
}
