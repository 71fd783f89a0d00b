//! Metering never drops a row: a real PostgreSQL of the test's own is stopped for a minute under
//! load, then started again; later it is stopped again and the server restarted meanwhile. Every
//! answered request ends up as exactly one usage row.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, TestApp};

/// How long the database stays down under load.
const OUTAGE: Duration = Duration::from_secs(60);

/// A PostgreSQL cluster of the test's own on a free port, which it may stop and start; as root its
/// processes run as `postgres` (which refuses to run as root).
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// `None` when no PostgreSQL server binaries are installed (outside CI; CI must have them).
    fn start() -> Option<OwnPostgres> {
        let Some(bin) = server_binaries() else {
            assert!(std::env::var_os("TWILIGHT_REQUIRE_POSTGRES").is_none(), "no PostgreSQL server binaries under /usr/lib/postgresql");
            eprintln!("SKIP: no PostgreSQL server binaries");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            let postgres = nix::unistd::User::from_name("postgres").unwrap().expect("a postgres user");
            nix::unistd::chown(dir.path(), Some(postgres.uid), Some(postgres.gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = OwnPostgres { dir, bin, port };
        cluster.run("initdb", &["-D", &cluster.data(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        cluster.up();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn up(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = match nix::unistd::geteuid().is_root() {
            true => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(&program);
                command
            }
            false => Command::new(&program),
        };
        let output = command.args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new(self.bin.join("pg_ctl")).args(["-D", &data, "-m", "immediate", "stop"]).output();
        if nix::unistd::geteuid().is_root() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// The newest installed server's `bin` directory.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|entry| entry.path().join("bin")).collect();
    versions.sort();
    versions.into_iter().rev().find(|bin| bin.join("pg_ctl").exists() && bin.join("initdb").exists())
}

/// Requests `/price` with `key` until `stop`, counting every answer (all must be 200).
fn load(app: &TestApp, key: &str, stop: Arc<AtomicBool>, answered: Arc<AtomicI64>) -> tokio::task::JoinHandle<()> {
    let request = app.http.get(app.url("/price?code=600519.SH&trade_date=20260430")).bearer_auth(key);
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let response = request.try_clone().unwrap().send().await.unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
            answered.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn usage_rows(accounts: &dyn twilight_accounts::Accounts, user: uuid::Uuid) -> i64 {
    accounts.usage_count(user).await.unwrap()
}

/// Bytes of usage rows waiting on disk: the spill file, and what a replay moved aside.
fn spilled_bytes(data_dir: &Path) -> u64 {
    ["usage-spill.jsonl", "usage-spill.replaying"]
        .iter()
        .map(|name| std::fs::metadata(data_dir.join(name)).map_or(0, |file| file.len()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_rows_equal_answered_requests_across_a_database_outage_and_a_restart() {
    let Some(postgres) = OwnPostgres::start() else { return };
    let url = postgres.url();
    let app = TestApp::start_with(Backend::Sqlite, |config| config.accounts_url = Some(url.clone().into())).await.unwrap();
    let (user_id, key) = app.user(1_000_000).await;
    let user: uuid::Uuid = user_id.parse().unwrap();
    let answered = Arc::new(AtomicI64::new(0));

    // A minute without the database, under load: every request is still answered.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&app, &key, stop.clone(), answered.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    postgres.down();
    let down_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let during = answered.load(Ordering::Relaxed);
    assert!(during > 1_000, "only {during} requests answered");
    assert!(spilled_bytes(&app.data_dir()) > 0, "nothing was spilled");
    postgres.up();
    eprintln!("database down for {:?} while {during} requests were answered", down_at.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();

    // Back: the spill is replayed and every answer is one row, no more.
    let total = answered.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while usage_rows(&*app.running.accounts, user).await != total {
        assert!(Instant::now() < deadline, "{} rows for {total} answers", usage_rows(&*app.running.accounts, user).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(spilled_bytes(&app.data_dir()), 0, "the spill is emptied once replayed");

    // Down again, and the server stops meanwhile: its last rows wait in the spill for the next one.
    postgres.down();
    for _ in 0..50 {
        assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    }
    let data_dir = app.data_dir();
    let stopped = app.stop_server().await;
    postgres.up();
    let restarted = TestApp::start_with(Backend::Sqlite, |config| {
        config.accounts_url = Some(url.clone().into());
        config.data_dir = data_dir.clone();
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while usage_rows(&*restarted.running.accounts, user).await != total + 50 {
        assert!(Instant::now() < deadline, "{} rows for {} answers", usage_rows(&*restarted.running.accounts, user).await, total + 50);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing is counted twice, even once everything is flushed.
    let finished = restarted.stop_server().await;
    assert_eq!(usage_rows(&*finished.accounts, user).await, total + 50);
    finished.cleanup().await;
    stopped.cleanup().await;
}
