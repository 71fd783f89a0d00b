//! The `twilight` binary's admin commands, run as a separate process like an operator would.

use std::process::Command;

fn twilight(data_dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_twilight"))
        .env("TWILIGHT_DATA_DIR", data_dir)
        .env_remove("TWILIGHT_CONFIG")
        .args(args)
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn admin_commands_create_revoke_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = twilight(dir.path(), &["migrate"]);
    assert!(ok, "{err}");
    assert!(out.contains("migrated"));

    let (ok, token, err) = twilight(dir.path(), &["admin", "create-admin-token", "--label", "ops"]);
    assert!(ok, "{err}");
    assert_eq!(token.trim().len(), 43, "one url-safe token on stdout: {token}");

    let (ok, out, err) = twilight(dir.path(), &["admin", "create-user", "--email", "a@example.com", "--rate-limit", "120"]);
    assert!(ok, "{err}");
    let field = |name: &str| {
        out.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_else(|| panic!("no {name} in {out}")).to_string()
    };
    let (user_id, key) = (field("user_id:"), field("api_key:"));
    assert_eq!(key.len(), 43);
    assert!(!err.contains(&key), "the key is printed once, on stdout, never logged");

    let (ok, out, err) = twilight(dir.path(), &["admin", "revoke-key", "--user", &user_id]);
    assert!(ok, "{err}");
    assert!(out.contains("revoked 1 key"), "{out}");
    let (ok, out, _) = twilight(dir.path(), &["admin", "revoke-key", "--user", &user_id]);
    assert!(ok && out.contains("revoked 0 key"), "{out}");

    let (ok, out, err) = twilight(dir.path(), &["admin", "usage", "--user", &user_id]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), serde_json::json!([]));

    let (ok, _, err) = twilight(dir.path(), &["admin", "revoke-key", "--user", "not-a-uuid"]);
    assert!(!ok && err.contains("invalid value"), "{err}");
    let (ok, _, err) = twilight(dir.path(), &["admin", "create-user", "--plan", "gold"]);
    assert!(!ok && err.contains("gold"), "{err}");
}
