//! Two `serve` processes on one Postgres, as a second host runs beside the first: each has its own
//! caches, rate-limit buckets, usage writer and warehouse, and shares only the accounts DB. A key
//! revoked through one is refused by both within a second, requests through both are metered
//! exactly, and an order paid through one is followed and onboarded through the other.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use twilight_accounts::testing::fresh_postgres;
use twilight_accounts::Accounts;

/// How soon every process must refuse a revoked key.
const REVOCATION_SEEN_WITHIN: Duration = Duration::from_secs(1);

/// One `twilight serve` process: the embedded default (sandbox upstreams, its own data dir and
/// warehouse) on the shared Postgres, without the in-process provisioner and fills.
struct Serve {
    child: Child,
    base: String,
    admin_token: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Serve {
    async fn start(accounts_url: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_twilight"))
            .arg("serve")
            .env_remove("TWILIGHT_CONFIG")
            .env("TWILIGHT_LISTEN", format!("127.0.0.1:{port}"))
            .env("TWILIGHT_DATA_DIR", dir.path())
            .env("TWILIGHT_ACCOUNTS_URL", accounts_url)
            .env("TWILIGHT_PROVISIONER__IN_PROCESS", "false")
            .env("TWILIGHT_SCHEDULER__WAREHOUSE_FILLS", "false")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut serve =
            Serve { child, base: format!("http://127.0.0.1:{port}"), admin_token: String::new(), http: reqwest::Client::new(), dir };
        let deadline = Instant::now() + Duration::from_secs(120);
        while serve.http.get(format!("{}/healthz", serve.base)).send().await.map_or(true, |r| !r.status().is_success()) {
            assert!(serve.child.try_wait().unwrap().is_none(), "serve exited: {}", serve.log());
            assert!(Instant::now() < deadline, "serve did not come up: {}", serve.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serve.admin_token = std::fs::read_to_string(serve.dir.path().join("admin-token")).unwrap().trim().to_string();
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// SIGTERM, as systemd stops it: requests drain and every usage row is written before exit.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve stopped with {status}: {}", self.log());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `serve` with `key` until it refuses it with 403: how long that took since `since`, and
/// how many answers it served meanwhile (metered like any other).
async fn refused_after(serve: &Serve, key: &str, since: Instant) -> (Duration, i64) {
    let mut served = 0;
    loop {
        let (status, body) = serve.get("/price?code=600519.SH&trade_date=20260430", Some(key)).await;
        if status == 403 {
            return (since.elapsed(), served);
        }
        served += 1;
        assert_eq!(status, 200, "{body}");
        assert!(since.elapsed() < 10 * REVOCATION_SEEN_WITHIN, "{} still accepts a revoked key", serve.base);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn path_of(url: &str) -> &str {
    url.find("/onboard/").map_or(url, |i| &url[i..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_revocations_metering_and_onboarding() {
    let Some(db) = fresh_postgres().await else {
        eprintln!("SKIP: Postgres unreachable");
        return;
    };
    let a = Serve::start(db.url()).await;
    let b = Serve::start(db.url()).await;

    // A user made through one process is served by both; every request through either is metered.
    let (status, created) = a.post("/admin/users", Some(&a.admin_token), json!({"plan": "alpha", "rate_limit_per_min": 1000})).await;
    assert_eq!(status, 201, "{created}");
    let (user_id, key) = (created["user"]["user_id"].as_str().unwrap().to_string(), created["api_key"].as_str().unwrap().to_string());
    let (through_a, through_b) = (7, 5);
    for (serve, n) in [(&a, through_a), (&b, through_b)] {
        for _ in 0..n {
            let (status, body) = serve.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await;
            assert_eq!(status, 200, "{body}");
        }
    }

    // An order placed and paid through one process is followed and onboarded through the other.
    let (status, order) = a.post("/checkout", None, json!({"plan": "pro"})).await;
    assert_eq!(status, 201, "{order}");
    let pay = reqwest::Client::new().post(order["sandbox_pay_url"].as_str().unwrap()).form(&[("openid", "")]).send().await.unwrap();
    assert_eq!(pay.status(), 200);
    let status_path = order["status_url"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, view) = b.get(status_path, None).await;
        assert_eq!(status, 200, "{view}");
        if view["stage"] != "pending" {
            break;
        }
        assert!(Instant::now() < deadline, "the order paid through one process stayed {view} through the other");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let onboarding = path_of(order["onboarding_url"].as_str().unwrap());
    let (status_a, step_a) = a.get(&format!("{onboarding}/status"), None).await;
    let (status_b, step_b) = b.get(&format!("{onboarding}/status"), None).await;
    assert_eq!((status_a, status_b), (200, 200), "{step_a} {step_b}");
    assert_eq!(step_a, step_b, "both processes tell the payer the same step");
    let page = reqwest::get(format!("{}{onboarding}", b.base)).await.unwrap();
    assert_eq!(page.status(), 200);

    // Revoked through one process: both refuse the key within a second.
    let (status, body) = b.post(&format!("/admin/users/{user_id}/keys/revoke"), Some(&b.admin_token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    let ((seen_by_b, served_b), (seen_by_a, served_a)) = (refused_after(&b, &key, revoked).await, refused_after(&a, &key, revoked).await);
    eprintln!("revocation refused by the process that revoked after {seen_by_b:?}, by the other after {seen_by_a:?}");
    assert!(seen_by_a < REVOCATION_SEEN_WITHIN && seen_by_b < REVOCATION_SEEN_WITHIN, "{seen_by_a:?} {seen_by_b:?}");

    // Stopped as systemd stops them, both wrote every answered request's usage row, exactly once
    // (a refused one is not metered).
    a.stop();
    b.stop();
    let accounts = db.accounts().await;
    let user = user_id.parse().unwrap();
    assert_eq!(accounts.usage_count(user).await.unwrap(), through_a + through_b + served_a + served_b);
    drop(accounts);
    db.cleanup().await;
}
