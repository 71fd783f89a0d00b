//! `twilight backup` while serve runs (the warehouse snapshot comes from serve), then changes, then
//! `twilight restore` with everything stopped: users, keys, payments, usage and citations are back
//! exactly as backed up, on SQLite and on Postgres, the warehouse too; a damaged backup restores
//! nothing.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, TestApp};

on_both_backends!(a_restore_brings_back_what_was_backed_up);

/// Runs `twilight <args>` with the app's data directory, databases and address in a config file.
fn twilight(config: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_twilight")).arg("--config").arg(config).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn usage_rows(app: &TestApp, user_id: uuid::Uuid, at_least: i64) {
    for _ in 0..200 {
        if app.running.accounts.usage_count(user_id).await.unwrap() >= at_least {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("usage was not written");
}

async fn a_restore_brings_back_what_was_backed_up(app: TestApp) {
    let (user_id, key) = app.user(1_000).await;
    let user_id: uuid::Uuid = user_id.parse().unwrap();
    for path in ["/price?code=600519.SH", "/price?code=000001.SZ&trade_date=20260430"] {
        assert_eq!(app.get(path, Some(&key)).await.0, 200);
    }
    usage_rows(&app, user_id, 2).await;
    app.running.accounts.create_order(common::pro_order("TWBACKUP0001")).await.unwrap();
    let backed_up = app.dump().await;
    let warehouse_rows = app.running.market.row_counts().await.unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("twilight.toml");
    let backend = if app.config.accounts_url().starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\ndata_dir = \"{}\"\naccounts_url = \"{}\"\nwarehouse_path = \"{}\"\n",
            app.running.addr,
            app.data_dir().display(),
            app.config.accounts_url(),
            app.config.warehouse_path().display()
        ),
    )
    .unwrap();
    let out = scratch.path().join("backup");
    let (ok, said) = twilight(&config, &["backup", "--out", out.to_str().unwrap()]);
    assert!(ok, "{said}");
    let manifest: serde_json::Value = serde_json::from_str(said.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let parts: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["part"].as_str().unwrap()).collect();
    assert_eq!(parts, ["accounts", "warehouse"], "{manifest}");
    let snapshots = app.config.warehouse_path().parent().unwrap().join("snapshots");
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 0, "serve's snapshot was moved into the backup");
    assert!(!twilight(&config, &["backup", "--out", out.to_str().unwrap()]).0, "never over an earlier backup");

    // Life goes on after the backup: the key is revoked, another user arrives, more is fetched.
    let (status, body) = app.post(&format!("/admin/users/{user_id}/keys/revoke"), Some(&app.admin_token), serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    app.user(60).await;
    assert_eq!(app.get("/fundamentals?code=600519.SH", Some(&key)).await.0, 403, "revoked");
    assert_ne!(app.dump().await, backed_up);
    let data_dir = app.data_dir();
    let (accounts_url, warehouse_path) = (app.config.accounts_url(), app.config.warehouse_path());
    let stopped = app.stop_server().await;

    // A damaged copy is refused before anything is replaced.
    let damaged = scratch.path().join("damaged");
    copy_dir(&out, &damaged);
    let accounts_file = manifest["files"][0]["file"].as_str().unwrap();
    let mut bytes = std::fs::read(damaged.join(accounts_file)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(damaged.join(accounts_file), bytes).unwrap();
    let (ok, said) = twilight(&config, &["restore", "--from", damaged.to_str().unwrap()]);
    assert!(!ok && said.contains("does not match the manifest"), "{said}");

    let (ok, said) = twilight(&config, &["restore", "--from", out.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert_eq!(twilight_accounts::testing::dump(&accounts_url).await, backed_up, "users, keys, payments, usage as backed up");

    // A server on the restored state: the key works again, the warehouse has what it had.
    let Some(app) = TestApp::start_with(backend, |config| {
        config.data_dir = data_dir.clone();
        config.accounts_url = Some(accounts_url.clone().into());
        config.warehouse_path = Some(warehouse_path.clone());
    })
    .await
    else {
        return;
    };
    assert_eq!(app.running.market.row_counts().await.unwrap(), warehouse_rows);
    let (status, _, body) = app.get("/price?code=600519.SH", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
    stopped.cleanup().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
