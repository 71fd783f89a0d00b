//! Memory per paying user: each user's bot is one hermes gateway process, so what one more user
//! costs a host is that process's private memory. Onboards users one after another on the embedded
//! default (the in-process provisioner and the real hermes, the sandbox iLink and LLM), has each bot
//! answer its owner one question through our MCP tools and LLM relay, and at 1, 5 and 10 users
//! reads every gateway's memory from `/proc/<pid>/smaps_rollup` (its children included): USS
//! (private pages: what the process alone costs), PSS (its share of pages it shares) and RSS.
//!
//! It does so twice, each time on a fresh app: with the gateways forked from the preloaded zygote
//! (the default; the zygote's own USS, paid once per host, is counted in the totals) and with each
//! gateway starting its own interpreter (`provisioner.preload_gateways = false`), the baseline.
//!
//! `cargo bench --workspace --profile dev --bench gateways` (the gateways are Python: our build
//! profile does not change them, and a release build would compile DuckDB once more).
//! `BENCH_USERS=1,5,10` sets the steps; `BENCH_MODES=preloaded,own` the runs. With
//! `BENCH_MULTIPLEX=1`, each step then also serves the same bots from one hermes process with
//! `gateway.multiplex_profiles` and reads its memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use twilight::app;
use twilight::cfg::Config;

const STEP_WAIT: Duration = Duration::from_secs(180);

/// Memory of a process tree, in KiB, from `smaps_rollup`.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss: u64,
    pss: u64,
    uss: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, other: Memory) {
        self.rss += other.rss;
        self.pss += other.pss;
        self.uss += other.uss;
    }
}

fn memory_of(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines().find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    Memory { rss: field("Rss:"), pss: field("Pss:"), uss: field("Private_Clean:") + field("Private_Dirty:") }
}

/// Every process: pid → (parent pid, command line).
fn processes() -> BTreeMap<u32, (u32, String)> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: the command may hold spaces, so read after its closing paren.
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        all.insert(pid, (ppid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
    }
    all
}

/// The memory of `pid` and all its descendants.
fn tree_memory(all: &BTreeMap<u32, (u32, String)>, pid: u32) -> Memory {
    let mut tree = memory_of(pid);
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (&child, _) in all.iter().filter(|(_, (ppid, _))| *ppid == parent) {
            tree += memory_of(child);
            frontier.push(child);
        }
    }
    tree
}

/// The gateway zygotes running: pid → their own memory (not their children's, the gateways).
fn zygotes() -> BTreeMap<u32, Memory> {
    let all = processes();
    let forked_gateways = gateways().into_values().map(|(pid, _)| all[&pid].0);
    forked_gateways
        .filter(|ppid| all.get(ppid).is_some_and(|(_, cmdline)| cmdline.contains(" -c ")))
        .map(|pid| (pid, memory_of(pid)))
        .collect()
}

/// Each running per-user gateway: its profile, its pid and the memory of its process tree.
fn gateways() -> BTreeMap<String, (u32, Memory)> {
    let all = processes();
    let mut found = BTreeMap::new();
    for (&pid, (_, cmdline)) in &all {
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        let Some(profile) = words.windows(2).find(|w| w[0] == "--profile").map(|w| w[1]) else { continue };
        if !words.windows(2).any(|w| w == ["gateway", "run"]) {
            continue;
        }
        found.insert(profile.to_string(), (pid, tree_memory(&all, pid)));
    }
    found
}

struct Bench {
    running: app::Running,
    http: reqwest::Client,
    admin_token: String,
}

impl Bench {
    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.running.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn wait_for_step(&self, link: &str, step: &str) -> Value {
        let deadline = Instant::now() + STEP_WAIT;
        loop {
            let status = self.call(reqwest::Method::GET, &format!("{link}/status"), None, None).await;
            if status["step"] == step {
                return status;
            }
            assert!(status["step"] != "failed", "provisioning failed: {status}");
            assert!(Instant::now() < deadline, "stuck at {status}, wanted {step}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One more paying user, from the admin API to a bot that has answered its owner once; its
    /// bot's id and its owner.
    async fn onboard(&self, n: usize) -> (String, String) {
        let sandbox = self.running.sandbox.as_ref().unwrap();
        let admin = Some(self.admin_token.as_str());
        let created = self.call(reqwest::Method::POST, "/admin/users", admin, Some(json!({"plan": "alpha"}))).await;
        let user_id = created["user"]["user_id"].as_str().unwrap().to_string();
        let started = self.call(reqwest::Method::POST, &format!("/admin/provision/{user_id}"), admin, None).await;
        let link = started["onboarding_url"].as_str().unwrap().to_string();
        let scan = self.wait_for_step(&link, "scan").await;
        let qrcode = scan["qr_content"].as_str().unwrap().rsplit(['/', '=']).next().unwrap().to_string();
        let owner = format!("wx-bench-owner-{n:04}");
        sandbox.ilink.scan(&qrcode, &owner).unwrap();
        sandbox.ilink.confirm(&qrcode).unwrap();
        self.wait_for_step(&link, "name_bot").await;
        self.call(reqwest::Method::POST, &format!("{link}/bot-name"), None, Some(json!({"name": format!("助手{n}")}))).await;
        self.wait_for_step(&link, "ready").await;
        let user_id = user_id.parse().unwrap();
        let profile = self.running.accounts.profile_for_user(user_id).await.unwrap().unwrap();
        let bot_id = profile.weixin_bot_id.unwrap();
        sandbox.ilink.deliver(&bot_id, &owner, "查 600519 的 P/E").unwrap();
        // The greeting, then the answer.
        let sent = sandbox.ilink.wait_for_sent(&bot_id, 2, STEP_WAIT).await;
        assert!(sent.len() >= 2, "bot {n} never answered");
        (bot_id, owner)
    }
}

impl Bench {
    /// The same bots served by one hermes process (`GATEWAY_MULTIPLEX_PROFILES=1`, run as the
    /// bench's user on the profiles' HERMES_HOME) while the per-user gateways are stopped
    /// (SIGSTOP: their memory stays, they stop polling iLink, the supervisor does not restart
    /// them): each owner asks once more, and the one process's memory is read.
    async fn multiplexed(&self, hermes: &Path, hermes_home: &Path, bots: &[(String, String)]) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let sandbox = self.running.sandbox.as_ref().unwrap();
        let stopped: Vec<u32> = gateways().values().map(|(pid, _)| *pid).collect();
        for pid in &stopped {
            kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP).unwrap();
        }
        let venv_bin = hermes.parent().unwrap();
        let log = std::fs::File::create(hermes_home.join("multiplexer.log")).unwrap();
        let mut multiplexer = tokio::process::Command::new(hermes)
            .env_clear()
            .env("HERMES_HOME", hermes_home)
            .env("HOME", hermes_home)
            .env("GATEWAY_MULTIPLEX_PROFILES", "1")
            .env("HERMES_DISABLE_LAZY_INSTALLS", "1")
            .env("VIRTUAL_ENV", venv_bin.parent().unwrap())
            .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", venv_bin.display()))
            .args(["gateway", "run"])
            .current_dir(hermes_home)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = multiplexer.id().unwrap();
        let started = Instant::now();
        // Whether each answer quotes a cite: the bot reached our data through its MCP tools.
        let mut cited = 0;
        for (bot_id, owner) in bots {
            let before = sandbox.ilink.sent(bot_id).len();
            sandbox.ilink.deliver(bot_id, owner, "查 600519 的 P/E").unwrap();
            let sent = sandbox.ilink.wait_for_sent(bot_id, before + 1, STEP_WAIT).await;
            assert!(sent.len() > before, "the multiplexer never answered {bot_id}; see {}", hermes_home.join("multiplexer.log").display());
            cited += usize::from(sent[before].text.contains("tc_"));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let memory = tree_memory(&processes(), pid);
        println!(
            "| {} (one multiplexing process) | 1 | {:.0} MiB | — | {:.0} MiB per profile | {:.0} MiB | {:.0} MiB | |",
            bots.len(),
            mib(memory.uss),
            mib(memory.uss) / bots.len() as f64,
            mib(memory.pss),
            mib(memory.rss),
        );
        eprintln!(
            "  (the multiplexer answered {} owners in {:.0?}; {cited} of the answers quote a cite, i.e. reached our MCP tools)",
            bots.len(),
            started.elapsed()
        );
        multiplexer.kill().await.unwrap();
        for pid in &stopped {
            kill(Pid::from_raw(*pid as i32), Signal::SIGCONT).unwrap();
        }
    }
}

/// Where the profiles live: not under /tmp (hermes refuses to run services from there) and, as
/// root, where each gateway's own OS user can reach it.
fn hermes_root() -> PathBuf {
    match nix::unistd::geteuid().is_root() {
        true => PathBuf::from("/var/cache/twilight-bench-homes"),
        false => PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/twilight-bench-homes"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let steps: Vec<usize> = std::env::var("BENCH_USERS")
        .unwrap_or_else(|_| "1,5,10".into())
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_USERS is a list of numbers"))
        .collect();
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "preloaded,own".into());
    for mode in modes.split(',') {
        let preload = match mode.trim() {
            "preloaded" => true,
            "own" => false,
            other => panic!("BENCH_MODES lists preloaded and own, not {other:?}"),
        };
        run(&steps, preload);
    }
}

/// Onboards users up to each of `steps` on a fresh app and prints a row per step.
fn run(steps: &[usize], preload: bool) {
    let mut config = Config::load(None).unwrap();
    let hermes = config.hermes_bin();
    assert!(hermes.is_file(), "no hermes at {} (scripts/install-hermes)", hermes.display());
    let data = tempfile::tempdir().unwrap();
    let root = hermes_root();
    std::fs::create_dir_all(&root).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = tempfile::Builder::new().prefix("gateways-").tempdir_in(&root).unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data.path().join("data");
    config.scheduler.in_process = false;
    config.scheduler.warehouse_fills = false;
    config.provisioner.in_process = true;
    config.provisioner.preload_gateways = preload;
    config.provisioner.idle_poll_ms = 100;
    config.provisioner.hermes_home = Some(home.path().join("hermes"));
    config.provisioner.template_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let running = app::start(&config).await.unwrap();
        let admin_token = std::fs::read_to_string(&running.admin_token_file).unwrap().trim().to_string();
        let bench = Bench { running, http: reqwest::Client::new(), admin_token };
        let how = if preload { "forked from the preloaded zygote" } else { "each starting its own interpreter" };
        println!("\nhermes {}; one gateway per user, {how}, run by the in-process provisioner", hermes.display());
        println!("| users | gateways | USS total | USS per gateway (min–max) | zygote USS | marginal USS per added user | PSS total | RSS per gateway | serve RSS |");
        println!("|---|---|---|---|---|---|---|---|---|");
        // Each bot's id and owner; the users and total USS of the step before.
        let mut bots: Vec<(String, String)> = Vec::new();
        let mut previous: Option<(usize, u64)> = None;
        for &users in steps {
            let started = Instant::now();
            while bots.len() < users {
                bots.push(bench.onboard(bots.len() + 1).await);
            }
            // Let the last answers' allocations settle before reading.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let found = gateways();
            assert_eq!(found.len(), users, "gateways running: {:?}", found.keys());
            let zygotes = zygotes();
            assert_eq!(zygotes.len(), usize::from(preload), "zygotes running: {zygotes:?}");
            let mut total = Memory::default();
            found.values().for_each(|(_, memory)| total += *memory);
            let per_gateway = total.uss;
            let zygote_uss: u64 = zygotes.values().map(|memory| memory.uss).sum();
            zygotes.values().for_each(|memory| total += *memory);
            let (least, most) = found.values().fold((u64::MAX, 0), |(lo, hi), (_, m)| (lo.min(m.uss), hi.max(m.uss)));
            let marginal = match previous {
                Some((before, uss)) => format!("{:.0} MiB", mib(total.uss.saturating_sub(uss)) / (users - before) as f64),
                None => format!("{:.0} MiB", mib(total.uss) / users as f64),
            };
            println!(
                "| {users} | {} | {:.0} MiB | {:.0} MiB ({:.0}–{:.0}) | {:.0} MiB | {marginal} | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
                found.len(),
                mib(total.uss),
                mib(per_gateway) / users as f64,
                mib(least),
                mib(most),
                mib(zygote_uss),
                mib(total.pss),
                mib(total.rss) / users as f64,
                mib(memory_of(std::process::id()).rss),
            );
            eprintln!("  ({users} users onboarded and answered in {:.0?} for this step)", started.elapsed());
            previous = Some((users, total.uss));
            if std::env::var("BENCH_MULTIPLEX").is_ok_and(|v| v == "1") {
                bench.multiplexed(&hermes, &home.path().join("hermes"), &bots).await;
            }
        }
        bench.running.shutdown().await.unwrap();
    });
    twilight_provision::GatewayUser::remove_all_under(&home.path().join("hermes/profiles"));
}
