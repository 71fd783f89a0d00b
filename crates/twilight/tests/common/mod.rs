//! A running app on a fresh accounts DB (SQLite or Postgres), a fresh warehouse and the sandbox.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use twilight::app::{self, Running};
use twilight::cfg::Config;
use twilight_accounts::testing::{fresh_postgres, TestDb};

pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub running: Running,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub config: Config,
    _dir: tempfile::TempDir,
    pg: Option<TestDb>,
}

impl TestApp {
    /// None when the backend is Postgres and it is unreachable outside CI (the helper panics in CI).
    /// The in-process scheduler is off, so tests reconcile payments when they choose.
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestApp::start`], with `configure` applied to the config last.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("data");
        config.scheduler.in_process = false;
        // Fills call Tushare on their own; a test that wants them drives them (`fills.rs`).
        config.scheduler.warehouse_fills = false;
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let Some(db) = fresh_postgres().await else {
                    eprintln!("SKIP: Postgres unreachable");
                    return None;
                };
                config.accounts_url = Some(db.url().to_string().into());
                Some(db)
            }
        };
        configure(&mut config);
        let running = app::start(&config).await.unwrap();
        let admin_token = std::fs::read_to_string(&running.admin_token_file).unwrap().trim().to_string();
        Some(TestApp { running, http: reqwest::Client::new(), admin_token, config, _dir: dir, pg })
    }

    /// Like [`TestApp::start`] with the provisioner running in-process against the real hermes, its
    /// profiles under the returned HERMES_HOME (outside /tmp: hermes refuses to run services from
    /// there; removed on drop). `None` when hermes is not installed outside CI (CI must have it).
    pub async fn start_provisioning(backend: Backend, prefix: &str) -> Option<(TestApp, ProvisioningHome)> {
        hermes_bin()?;
        // As root each gateway runs as its own OS user, which must reach HERMES_HOME: not under /root (0700).
        use std::os::unix::fs::PermissionsExt;
        let root = match nix::unistd::geteuid().is_root() {
            true => PathBuf::from("/var/cache/twilight-test-homes"),
            false => PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/twilight-test-homes"),
        };
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir_in(root).unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let app = TestApp::start_with(backend, |config| {
            config.provisioner.in_process = true;
            config.provisioner.idle_poll_ms = 100;
            config.provisioner.hermes_home = Some(home.path().join("hermes"));
            config.provisioner.template_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template");
        })
        .await?;
        Some((app, ProvisioningHome(home)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// A new user via the admin API; returns (user_id, raw key).
    pub async fn user(&self, rate_limit_per_min: i32) -> (String, String) {
        let (status, body) = self
            .post("/admin/users", Some(&self.admin_token), serde_json::json!({"plan": "alpha", "rate_limit_per_min": rate_limit_per_min}))
            .await;
        assert_eq!(status, 201, "{body}");
        (body["user"]["user_id"].as_str().unwrap().to_string(), body["api_key"].as_str().unwrap().to_string())
    }

    /// Every row of the accounts tables that hold state, as text (see `testing::dump`).
    pub async fn dump(&self) -> String {
        twilight_accounts::testing::dump(&self.config.accounts_url()).await
    }

    /// The admin API's trace of `tool_call_id`, once the metering writer has stored it.
    pub async fn citation(&self, tool_call_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, _, body) = self.get(&format!("/admin/citations/{tool_call_id}"), Some(&self.admin_token)).await;
            if status == 200 {
                return body;
            }
            assert!(status == 404 && std::time::Instant::now() < deadline, "{status}: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The sandbox WeChat Pay this app sells through.
    pub fn wechatpay(&self) -> &twilight_sandbox::WechatPaySim {
        &self.running.sandbox.as_ref().expect("the sandbox runs").wechatpay
    }

    /// The sandbox's simulator of one web search provider.
    pub fn search_sim(&self, kind: twilight_sandbox::SearchKind) -> &twilight_sandbox::SearchSim {
        self.running.sandbox.as_ref().expect("the sandbox runs").search_sim(kind).0
    }

    pub fn tushare_calls(&self, api: &str) -> u64 {
        self.running.sandbox.as_ref().unwrap().market.tushare.calls_for(api)
    }

    /// Drops the Postgres database under the running server (its connections are terminated).
    pub async fn drop_postgres(&self) {
        self.pg.as_ref().expect("a Postgres app").drop_now().await;
    }

    pub async fn stop(self) {
        self.stop_server().await.cleanup().await;
    }

    /// Shuts the server down gracefully but keeps its databases for inspection.
    pub async fn stop_server(self) -> Stopped {
        let accounts = self.running.accounts.clone();
        self.running.shutdown().await.unwrap();
        Stopped { accounts, pg: self.pg, _dir: self._dir }
    }
}

/// A test's HERMES_HOME. Dropped, it removes the directory and, as root, the OS users its gateways
/// ran as (a refund's deprovisioning would delete them; a test ends before any), so test runs on one
/// machine do not pile up `tw-` users.
pub struct ProvisioningHome(tempfile::TempDir);

impl ProvisioningHome {
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for ProvisioningHome {
    fn drop(&mut self) {
        twilight_provision::GatewayUser::remove_all_under(&self.path().join("hermes/profiles"));
    }
}

pub struct Stopped {
    pub accounts: std::sync::Arc<dyn twilight_accounts::Accounts>,
    pg: Option<TestDb>,
    _dir: tempfile::TempDir,
}

impl Stopped {
    pub async fn cleanup(self) {
        if let Some(db) = self.pg {
            db.cleanup().await;
        }
    }
}

/// Rows of `table` in a `testing::dump`.
pub fn rows(dump: &str, table: &str) -> usize {
    let section = dump.split(&format!("{table}:\n")).nth(1).expect("table in dump");
    section.lines().take_while(|line| !line.ends_with(':')).count()
}

/// Everything the app logs in this test binary, at debug level, as JSON lines (installed as the
/// global subscriber on first use).
pub fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = logs.clone();
        tracing_subscriber::fmt().with_env_filter("debug").json().with_writer(move || LogWriter(sink.clone())).init();
        logs
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The hermes CLI the embedded default would run; `None` (said loudly) when it is not installed
/// outside CI (CI must have it).
pub fn hermes_bin() -> Option<PathBuf> {
    let bin = Config::load(None).unwrap().hermes_bin();
    if !bin.is_file() {
        let required = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
            || std::env::var("TWILIGHT_REQUIRE_HERMES").as_deref() == Ok("1");
        assert!(!required, "hermes not found at {} (run scripts/install-hermes)", bin.display());
        eprintln!("\n!!!!! SKIPPED: no hermes at {} !!!!!\n", bin.display());
        return None;
    }
    Some(bin)
}

/// Runs the Python MCP client (the `mcp` package hermes itself uses, from the hermes venv) against
/// the app with `key` through `steps` (see mcp_client.py); `None` when hermes is not installed
/// outside CI.
pub async fn mcp_client(app: &TestApp, key: &str, steps: Value) -> Option<Value> {
    let python = hermes_bin()?.with_file_name("python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args([app.url("/mcp"), key.to_string(), steps.to_string()])
        .env("HERMES_DISABLE_LAZY_INSTALLS", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&output.stderr)));
    Some(serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}

/// Generates one test per backend from an `async fn(TestApp)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::common::TestApp::start($crate::common::Backend::Sqlite).await.unwrap();
                super::$name(app).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(app) = $crate::common::TestApp::start($crate::common::Backend::Postgres).await {
                    super::$name(app).await;
                }
            })*
        }
    };
}

/// A pending order for the Pro plan, placed as checkout would, numbered `out_trade_no`.
pub fn pro_order(out_trade_no: &str) -> twilight_accounts::NewOrder {
    twilight_accounts::NewOrder {
        out_trade_no: out_trade_no.into(),
        plan: twilight_accounts::Plan::Pro,
        amount_cents: 19_800,
        currency: "CNY".into(),
        processor: "wechatpay".into(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        renews: None,
        onboarding_token_hash: twilight_core::token::hash_hex(&format!("onboarding-{out_trade_no}")),
    }
}
