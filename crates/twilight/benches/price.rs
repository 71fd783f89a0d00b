//! Cached `/price` under load (auth + rate limit + metering on) next to a bare axum hello handler, both
//! driven by `wrk -t1 -c32 -d10s` in the same run; prints req/s, p50, p99 and the ratios.
//! Run with `scripts/bench` (installs wrk if missing), which runs it twice: with the server and wrk
//! sharing every core, and with `BENCH_ISOLATE=1`, where the server (all its threads) runs on CPU 0
//! and wrk on CPU 1, so the load generator does not preempt the server it measures.

use std::process::Command;

use axum::routing::get;
use twilight::app;
use twilight::cfg::Config;

struct Figures {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
}

/// The core wrk runs on when the server is isolated on CPU 0.
const CLIENT_CPU: &str = "1";

fn wrk(url: &str, header: Option<&str>, seconds: u32, isolate: bool) -> Figures {
    let mut command = if isolate {
        let mut taskset = Command::new("taskset");
        taskset.args(["--cpu-list", CLIENT_CPU, "wrk"]);
        taskset
    } else {
        Command::new("wrk")
    };
    command.args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().expect("wrk runs (scripts/bench installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' in:\n{text}"))
            .trim()
            .to_string()
    };
    let micros = |s: String| {
        let (number, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).expect("unit"));
        let n: f64 = number.parse().expect("number");
        n * match unit {
            "us" => 1.0,
            "ms" => 1_000.0,
            "s" => 1_000_000.0,
            other => panic!("unit {other}"),
        }
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("request count");
    Figures {
        requests_per_sec: field("Requests/sec:").parse().expect("req/s"),
        p50_us: micros(field("50%")),
        p99_us: micros(field("99%")),
        requests,
    }
}

fn main() {
    let seconds: u32 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let isolate = std::env::var("BENCH_ISOLATE").is_ok_and(|v| v == "1");
    if isolate {
        // Before the runtime exists, so every worker and blocking thread inherits the mask (and tokio
        // sizes its worker pool to the one core).
        let mut server_cpus = nix::sched::CpuSet::new();
        server_cpus.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &server_cpus).expect("pinning the server to CPU 0");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hello_url, price_url, key, user_id, running) = runtime.block_on(async {
        let hello = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hello_url = format!("http://{}/hello", hello.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(hello, axum::Router::new().route("/hello", get(|| async { "hello" }))).await });

        let mut config = Config::load(None).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("data");
        // Only the request path is measured: no background work of the embedded default competes
        // for the cores (the provisioner's hermes, the scheduler, the whole-market fill).
        config.provisioner.in_process = false;
        config.scheduler.in_process = false;
        config.scheduler.warehouse_fills = false;
        let running = app::start(&config).await.unwrap();
        let admin = std::fs::read_to_string(&running.admin_token_file).unwrap();
        let http = reqwest::Client::new();
        let created: serde_json::Value = http
            .post(format!("{}/admin/users", running.url()))
            .bearer_auth(admin.trim())
            .json(&serde_json::json!({"plan": "alpha", "rate_limit_per_min": 1_000_000}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = created["api_key"].as_str().unwrap().to_string();
        let user_id: uuid::Uuid = created["user"]["user_id"].as_str().unwrap().parse().unwrap();
        let price_url = format!("{}/price?code=600519.SH&trade_date=20260430&metric=pe_ttm", running.url());
        let warm = http.get(&price_url).bearer_auth(&key).send().await.unwrap();
        assert!(warm.status().is_success(), "warm-up failed: {}", warm.text().await.unwrap());
        (hello_url, price_url, key, user_id, running)
    });
    let auth = format!("Authorization: Bearer {key}");
    wrk(&hello_url, None, 2, isolate);
    let warm = wrk(&price_url, Some(&auth), 2, isolate);
    let hello = wrk(&hello_url, None, seconds, isolate);
    let price = wrk(&price_url, Some(&auth), seconds, isolate);
    let accounts = running.accounts.clone();
    runtime.block_on(running.shutdown()).unwrap();

    let cores = if isolate { format!("server on CPU 0, wrk on CPU {CLIENT_CPU}") } else { "server and wrk share all cores".to_string() };
    println!("wrk -t1 -c32 -d{seconds}s, same machine, same run; {cores}");
    println!("{:<28} {:>12} {:>10} {:>10}", "", "req/s", "p50 µs", "p99 µs");
    println!("{:<28} {:>12.0} {:>10.0} {:>10.0}", "bare axum hello", hello.requests_per_sec, hello.p50_us, hello.p99_us);
    println!("{:<28} {:>12.0} {:>10.0} {:>10.0}", "cached /price (auth+rl+meter)", price.requests_per_sec, price.p50_us, price.p99_us);
    println!(
        "ratio: throughput {:.1}% of hello (target ≥ 50%), p99 {:.2}× hello's (target ≤ 1.5×)",
        100.0 * price.requests_per_sec / hello.requests_per_sec,
        price.p99_us / hello.p99_us
    );
    println!("absolute: /price p99 {:.0} µs (target < 1000 µs; hello's own p99 here is {:.0} µs)", price.p99_us, hello.p99_us);
    let metered = runtime.block_on(accounts.usage_count(user_id)).unwrap();
    let served = 1 + warm.requests + price.requests;
    println!("usage_log rows {metered} for at least {served} requests counted by wrk (wrk omits replies still in flight at its deadline)");
}
