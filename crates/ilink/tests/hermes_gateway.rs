//! End to end against the real client: hermes-agent's gateway (the same `hermes` a user's bot
//! runs) paired through our client with the iLink simulator, thinking with the LLM simulator, and
//! calling a stub of our data plane from its `terminal` tool. A message from the paying user must
//! come back as a reply quoting the stub's value and cite; a stranger's must get nothing.
//!
//! hermes comes from `TWILIGHT_HERMES_BIN`, else `~/.cache/twilight-hermes-venv/bin/hermes`
//! (`scripts/install-hermes`). Without it the test is skipped loudly, unless `CI` or
//! `TWILIGHT_REQUIRE_HERMES=1` is set, when it fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use secrecy::ExposeSecret;
use serde_json::json;
use twilight_ilink::{IlinkClient, PairingStatus};
use twilight_sandbox::{serve, IlinkSim, IlinkSimConfig, LlmSim};

const PAYING_USER: &str = "o9cq8paying-e2e@im.wechat";
const STRANGER: &str = "o9cq8stranger-e2e@im.wechat";
const QUESTION: &str = "查 600519 的 P/E";
const PROFILE: &str = "user-e2e";
const API_TOKEN: &str = "tw_e2e_user_key_0123456789";
const PE_VALUE: &str = "27.93";

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The hermes executable, or `None` (after saying so) when this run may do without it.
fn hermes_bin() -> Option<PathBuf> {
    let path = std::env::var_os("TWILIGHT_HERMES_BIN").map(PathBuf::from).unwrap_or_else(|| home().join(".cache/twilight-hermes-venv/bin/hermes"));
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var_os("CI").is_some() || std::env::var("TWILIGHT_REQUIRE_HERMES").is_ok_and(|v| v == "1");
    assert!(!required, "hermes not found at {} (CI / TWILIGHT_REQUIRE_HERMES=1 require it; run scripts/install-hermes)", path.display());
    eprintln!("\n!!!!!!!! SKIPPED hermes end-to-end test: no hermes at {} (set TWILIGHT_HERMES_BIN or run scripts/install-hermes) !!!!!!!!\n", path.display());
    None
}

/// A stub of our data plane's `GET /price`: a fixed answer with a cite, and the bearer tokens it saw.
async fn data_plane_stub(tool_call_id: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let body = json!({"code": "600519.SH", "name": "贵州茅台", "metric": "pe_ttm", "value": PE_VALUE.parse::<f64>().unwrap(), "unit": "ratio", "as_of": "20260430",
        "cite": {"kind": "tool", "source": "sandbox:tushare", "served_by": "twilight-drive-backend", "served_version": "0.1.0", "table": "daily_basic",
            "fetched_at": "2026-04-30T11:00:00Z", "cache_age_seconds": 0, "tool_call_id": tool_call_id}});
    let app = axum::Router::new().route(
        "/price",
        get(move |headers: HeaderMap| {
            let (record, body) = (record.clone(), body.clone());
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let authorized = auth == format!("Bearer {API_TOKEN}");
                record.lock().unwrap().push(auth);
                if authorized {
                    (StatusCode::OK, axum::Json(body))
                } else {
                    (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"code": "unauthorized"}})))
                }
            }
        }),
    );
    let (addr, _) = serve(app, 0).await.unwrap();
    (format!("http://{addr}"), seen)
}

fn write_secret(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// The gateway child, killed when dropped (`kill_on_drop`): its agent's tool commands run in
/// sessions of their own and are done by then.
struct Gateway {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Gateway {
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hermes_gateway_answers_the_paying_user_through_the_simulators() {
    let Some(hermes) = hermes_bin() else { return };
    let ilink = IlinkSim::new(IlinkSimConfig::default());
    let (ilink_addr, _) = serve(ilink.router(), 0).await.unwrap();
    let llm = LlmSim::new();
    let (llm_addr, _) = serve(llm.router(), 0).await.unwrap();
    let tool_call_id = format!("tc_e2e_{:016x}", rand::random::<u64>());
    let (data_plane, data_plane_auth) = data_plane_stub(&tool_call_id).await;

    // Pairing, as the onboarding page drives it: our client polls, the "phone" scans and confirms.
    let client = IlinkClient::new(&format!("http://{ilink_addr}")).unwrap();
    let mut qr = client.get_bot_qrcode().await.unwrap();
    ilink.scan(&qr.poll_key, PAYING_USER).unwrap();
    ilink.confirm(&qr.poll_key).unwrap();
    let status = client.poll_status(&mut qr, None).await.unwrap();
    let PairingStatus::Confirmed { bot_token, ilink_bot_id, base_url, ilink_user_id } = status else { panic!("pairing ended {status:?}") };
    assert_eq!(ilink_user_id, PAYING_USER);

    // A fresh HERMES_HOME outside /tmp, a profile, and what the provisioner writes into it.
    let hermes_home = home().join(format!(".cache/twilight-test-homes/{:016x}", rand::random::<u64>()));
    fs::create_dir_all(&hermes_home).unwrap();
    let created = std::process::Command::new(&hermes).args(["profile", "create", PROFILE, "--no-alias"]).env("HERMES_HOME", &hermes_home).env("HERMES_DISABLE_LAZY_INSTALLS", "1").output().unwrap();
    assert!(created.status.success(), "hermes profile create: {}", String::from_utf8_lossy(&created.stderr));
    let profile = hermes_home.join("profiles").join(PROFILE);
    fs::write(profile.join("config.yaml"), "model:\n  provider: alibaba\n  default: qwen-plus\n").unwrap();
    let env = [
        ("DASHSCOPE_API_KEY", "sk-sandbox-anything".to_string()),
        ("DASHSCOPE_BASE_URL", format!("http://{llm_addr}/compatible-mode/v1")),
        ("WEIXIN_ACCOUNT_ID", ilink_bot_id.clone()),
        ("WEIXIN_TOKEN", bot_token.expose_secret().to_string()),
        ("WEIXIN_BASE_URL", base_url.clone()),
        ("WEIXIN_CDN_BASE_URL", format!("{base_url}/c2c")),
        ("WEIXIN_DM_POLICY", "allowlist".into()),
        ("WEIXIN_ALLOW_ALL_USERS", "false".into()),
        ("WEIXIN_ALLOWED_USERS", ilink_user_id.clone()),
        ("WEIXIN_GROUP_POLICY", "disabled".into()),
        // Without a home channel hermes opens every first conversation with a "/sethome" notice.
        ("WEIXIN_HOME_CHANNEL", ilink_user_id.clone()),
        ("TWILIGHT_API_BASE", data_plane),
        ("TWILIGHT_API_TOKEN", API_TOKEN.into()),
    ];
    let dotenv: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    write_secret(&profile.join(".env"), &dotenv);
    let account = json!({"token": bot_token.expose_secret(), "base_url": base_url, "user_id": ilink_user_id, "saved_at": "2026-04-30T11:00:00Z"});
    write_secret(&profile.join("weixin/accounts").join(format!("{ilink_bot_id}.json")), &account.to_string());

    let log = hermes_home.join("gateway.log");
    let out = fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(&hermes)
        .args(["--profile", PROFILE, "gateway", "run"])
        .env("HERMES_HOME", &hermes_home)
        .env("HERMES_DISABLE_LAZY_INSTALLS", "1")
        // Test-only: keeps hermes from downloading its `tirith` command scanner at startup.
        .env("TIRITH_ENABLED", "false")
        .current_dir(&hermes_home)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut gateway = Gateway { child, log };
    let started = Instant::now();

    // Up when it long-polls iLink with the bot's token.
    while ilink.calls("POST /ilink/bot/getupdates") == 0 {
        assert!(!gateway.exited(), "the gateway exited:\n{}", gateway.log_tail());
        assert!(started.elapsed() < Duration::from_secs(120), "no getupdates within 120 s:\n{}", gateway.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let startup = started.elapsed();

    let asked = Instant::now();
    ilink.deliver(&ilink_bot_id, STRANGER, "查 000001 的 P/E").unwrap();
    let inbound = ilink.deliver(&ilink_bot_id, PAYING_USER, QUESTION).unwrap();
    let sent = ilink.wait_for_sent(&ilink_bot_id, 1, Duration::from_secs(180)).await;
    let round_trip = asked.elapsed();
    let diagnosis = || format!("sent {sent:?}\nilink calls {:?}\nllm requests {}\ngateway log:\n{}", ilink.calls("POST /ilink/bot/sendmessage"), llm.requests().len(), gateway.log_tail());
    assert!(!sent.is_empty(), "no reply within 180 s\n{}", diagnosis());

    let reply = &sent[0];
    assert_eq!(reply.to_user_id, PAYING_USER, "{}", diagnosis());
    assert_eq!(reply.context_token.as_deref(), Some(inbound.context_token.as_str()), "the reply echoes the message's context_token");
    for part in [PE_VALUE, tool_call_id.as_str(), "sandbox:tushare", "daily_basic"] {
        assert!(reply.text.contains(part), "reply lacks {part}: {:?}\n{}", reply.text, diagnosis());
    }
    assert_eq!(data_plane_auth.lock().unwrap().as_slice(), [format!("Bearer {API_TOKEN}")], "the tool called the data plane once with the user's key");

    let requests = llm.requests();
    let transcript = serde_json::to_string(&requests).unwrap();
    assert!(transcript.contains(QUESTION), "the LLM saw the question");
    assert!(!transcript.contains("000001"), "the stranger's message never reached the LLM");
    assert!(requests.iter().all(|r| r["stream"] == json!(true) || r.get("tools").is_none()), "agent turns stream");

    // A stranger gets nothing, even after the paying user's turn is done.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = ilink.sent(&ilink_bot_id);
    assert!(sent.iter().all(|m| m.to_user_id == PAYING_USER), "only the paying user hears back: {sent:?}");

    eprintln!(
        "hermes e2e: gateway up (first getupdates) after {startup:.1?}; question → reply {round_trip:.1?}; {} LLM requests ({} agent turns offering tools); reply: {}",
        requests.len(),
        requests.iter().filter(|r| r.get("tools").is_some()).count(),
        sent[0].text
    );
    drop(gateway);
    let _ = fs::remove_dir_all(&hermes_home);
}
