//! What every simulator shares: the header that labels answers as simulator-backed, switchable
//! faults, per-route call counters at `GET /_sandbox/calls`, and the HTML escaping of the pages a
//! person clicks through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{from_fn, map_response, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::distributions::Alphanumeric;
use rand::Rng;

/// Every simulator answer carries this header, naming the simulator, so the product can label
/// answers as simulator-backed.
pub const SANDBOX_HEADER: &str = "x-twilight-sandbox";

/// Adds `X-Twilight-Sandbox: <name>` to every answer of `router` (errors and fallbacks included).
pub fn label<S: Clone + Send + Sync + 'static>(router: Router<S>, name: &'static str) -> Router<S> {
    router.layer(map_response(move |mut response: Response| async move {
        response.headers_mut().insert(HeaderName::from_static(SANDBOX_HEADER), HeaderValue::from_static(name));
        response
    }))
}

/// How a simulator's protocol routes misbehave (its `/_sandbox/…` control routes never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// HTTP 503 with an empty body, as a dead gateway answers.
    Down,
    /// Sleep this long, then answer normally.
    Slow(Duration),
}

/// The fault switch and call counters of one simulator; clones share them.
#[derive(Clone, Default)]
pub struct Switchboard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Default)]
struct Board {
    fault: Fault,
    /// Requests per `METHOD /route` as routed (`METHOD /raw/path` for unrouted ones).
    calls: BTreeMap<String, u64>,
}

impl Switchboard {
    pub fn set_fault(&self, fault: Fault) {
        self.board().fault = fault;
    }

    /// Requests received on `route`, written `METHOD /path/{param}` as routed, whatever their
    /// outcome (faults included). Paths no route serves are counted under their raw path, so a test
    /// sees what a client asked for that the simulator does not know.
    pub fn calls(&self, route: &str) -> u64 {
        self.board().calls.get(route).copied().unwrap_or(0)
    }

    /// Every counter.
    pub fn all_calls(&self) -> BTreeMap<String, u64> {
        self.board().calls.clone()
    }

    /// Wraps a simulator's protocol routes: every request (unrouted ones answered 404) is counted
    /// and subjected to the current [`Fault`]; adds `GET /_sandbox/calls` with the counters as JSON.
    pub fn instrument<S: Clone + Send + Sync + 'static>(&self, protocol: Router<S>) -> Router<S> {
        let board = self.clone();
        let counters = self.clone();
        protocol
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(from_fn(move |request: Request, next: Next| {
                let board = board.clone();
                async move { board.admit(request, next).await }
            }))
            .route("/_sandbox/calls", get(move || async move { Json(counters.all_calls()) }))
    }

    async fn admit(&self, request: Request, next: Next) -> Response {
        let route = request.extensions().get::<MatchedPath>().map_or_else(|| request.uri().path().to_string(), |p| p.as_str().to_string());
        let fault = {
            let mut board = self.board();
            *board.calls.entry(format!("{} {route}", request.method())).or_default() += 1;
            board.fault
        };
        match fault {
            Fault::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Fault::Slow(pause) => tokio::time::sleep(pause).await,
            Fault::None => {}
        }
        next.run(request).await
    }

    fn board(&self) -> MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `len` random ASCII letters and digits: nonces, ids and tokens that only need to be unguessable.
pub fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// `len` random lowercase hex digits.
pub fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("a hex digit")).collect()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page clearly marked as a sandbox, so nobody mistakes a simulator for the real service.
pub fn sandbox_page(title: &str, banner: &str, content: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>SANDBOX — {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}}
.banner{{background:#ffd400;padding:.6rem;font-weight:700;text-align:center}}.amount,.code{{font-size:2.2rem;margin:.5rem 0}}
button{{background:#07c160;color:#fff;border:0;padding:.7rem 1.4rem;font-size:1.1rem;border-radius:.3rem;margin:.2rem 0}}</style></head>
<body><p class="banner">{banner}</p>
{content}
</body></html>"#,
        title = escape_html(title),
        banner = escape_html(banner),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape_html(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
