//! What every request meets before its handler: who the client is (its IP, believed from
//! `X-Forwarded-For` only when a trusted proxy says so), how long it may take, how big it may be.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use crate::limit::IpQuotas;
use crate::{ApiContext, ApiError};

/// The edge's settings.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    /// Peers whose `X-Forwarded-For` is believed (the reverse proxy in front of us); anyone else's
    /// is ignored, or a client could pick the IP its limits are counted against.
    pub trusted_proxies: Vec<IpAddr>,
    pub ip_quotas: IpQuotas,
    /// The longest any request may take before it is answered 504; upstream calls made for it are
    /// dropped with it.
    pub request_deadline: Duration,
    /// The same for the LLM relay, whose upstream takes its time before a (non-streamed) answer.
    pub llm_deadline: Duration,
    /// The largest request body read (the LLM relay has a larger limit of its own).
    pub body_limit: usize,
    /// Cookies only over TLS (the public URL is `https://`).
    pub secure_cookies: bool,
    /// How long an onboarding link still opens its page once the bot runs (the renewal link
    /// is the owner's way back).
    pub onboarding_link_after_ready: chrono::Duration,
}

impl Default for EdgePolicy {
    fn default() -> Self {
        EdgePolicy {
            trusted_proxies: Vec::new(),
            ip_quotas: IpQuotas::default(),
            request_deadline: Duration::from_secs(10),
            llm_deadline: Duration::from_secs(300),
            body_limit: 64 * 1024,
            secure_cookies: false,
            onboarding_link_after_ready: chrono::Duration::hours(1),
        }
    }
}

/// The address a request came from, as far as we can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<ApiContext> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, Infallible> {
        Ok(ctx.edge.client_ip(&parts.extensions, &parts.headers))
    }
}

impl EdgePolicy {
    /// The TCP peer; when that is a trusted proxy, the nearest `X-Forwarded-For` hop that is not
    /// one (hops further left were written by the client and prove nothing).
    pub fn client_ip(&self, extensions: &Extensions, headers: &HeaderMap) -> ClientIp {
        let peer = extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip().to_canonical());
        let mut client = peer;
        if self.trusted_proxies.contains(&peer) {
            let hops: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .collect();
            for hop in hops.iter().rev() {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
                client = ip.to_canonical();
                if !self.trusted_proxies.contains(&client) {
                    break;
                }
            }
        }
        ClientIp(client)
    }
}

impl ClientIp {
    /// What limits are counted against: the address, or for IPv6 its /64, which one subscriber
    /// usually holds whole.
    pub fn bucket(self) -> IpAddr {
        match self.0 {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        }
    }
}

/// Answers 504 once a request has run past its deadline; dropping the handler drops whatever
/// upstream call it was waiting on.
pub(crate) async fn deadline(State(ctx): State<ApiContext>, request: Request, next: Next) -> Result<Response, ApiError> {
    let limit = if request.uri().path().starts_with("/llm/") { ctx.edge.llm_deadline } else { ctx.edge.request_deadline };
    tokio::time::timeout(limit, next.run(request)).await.map_err(|_| ApiError::DeadlineExceeded(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str, forwarded: &[&str], trusted: &[&str]) -> IpAddr {
        let policy = EdgePolicy { trusted_proxies: trusted.iter().map(|ip| ip.parse().unwrap()).collect(), ..EdgePolicy::default() };
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        policy.client_ip(&extensions, &headers).0
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(from("198.51.100.7:5000", &["203.0.113.9"], &[]), ip("198.51.100.7"));
        assert_eq!(from("198.51.100.7:5000", &["203.0.113.9"], &["127.0.0.1"]), ip("198.51.100.7"));
        assert_eq!(from("127.0.0.1:5000", &["203.0.113.9"], &["127.0.0.1"]), ip("203.0.113.9"));
        // The client wrote the left part; the proxy appended what it saw.
        assert_eq!(from("127.0.0.1:5000", &["6.6.6.6, 203.0.113.9"], &["127.0.0.1"]), ip("203.0.113.9"));
        assert_eq!(from("127.0.0.1:5000", &["6.6.6.6", "203.0.113.9, 10.0.0.2"], &["127.0.0.1", "10.0.0.2"]), ip("203.0.113.9"));
        assert_eq!(from("127.0.0.1:5000", &["not-an-ip"], &["127.0.0.1"]), ip("127.0.0.1"));
        assert_eq!(from("127.0.0.1:5000", &[], &["127.0.0.1"]), ip("127.0.0.1"));
        assert_eq!(from("[::ffff:203.0.113.9]:5000", &[], &[]), ip("203.0.113.9"));
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let a = ClientIp("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientIp("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a.bucket(), b.bucket());
        assert_ne!(a.bucket(), ClientIp("2001:db8:1:3::1".parse().unwrap()).bucket());
        assert_eq!(ClientIp("192.0.2.1".parse().unwrap()).bucket(), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
