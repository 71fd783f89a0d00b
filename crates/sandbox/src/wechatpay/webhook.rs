//! A stand-in for the merchant's notify endpoint, for tests: it records every delivery and answers
//! each with the status a caller-supplied function picks (a real webhook's verify-then-store).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// One POST the webhook received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct RecordingWebhook {
    url: String,
    shared: Arc<Shared>,
}

struct Shared {
    received: Mutex<Vec<Delivery>>,
    answer: Box<dyn Fn(&Delivery) -> StatusCode + Send + Sync>,
}

impl Shared {
    fn received(&self) -> std::sync::MutexGuard<'_, Vec<Delivery>> {
        self.received.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RecordingWebhook {
    /// Serves `POST /notify` on an ephemeral loopback port until the runtime ends.
    pub async fn start(answer: impl Fn(&Delivery) -> StatusCode + Send + Sync + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { received: Mutex::new(Vec::new()), answer: Box::new(answer) });
        let router = Router::new().route("/notify", post(receive)).with_state(shared.clone());
        let (addr, _task) = crate::serve(router, 0).await?;
        Ok(RecordingWebhook { url: format!("http://{addr}/notify"), shared })
    }

    /// What to configure as `notify_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every delivery so far, in arrival order.
    pub fn received(&self) -> Vec<Delivery> {
        self.shared.received().clone()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delivery = Delivery { headers, body };
    let status = (shared.answer)(&delivery);
    shared.received().push(delivery);
    status
}
