//! One contract for every secret store, run against the real backends: plain files always, `pass` with a
//! throwaway gpg key, `systemd-creds` with this host's key.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use secrecy::{ExposeSecret, SecretString};
use twilight_provision::{
    plant_secrets, DotEnv, EnvKey, Error, FileStore, PassStore, ProfileName, SecretDelivery, SecretStore, SystemdCredsStore,
};

const VALUE: &str = "tok_Zx9 \"quoted\" $HOME # 张 \\ end";

fn key(k: &str) -> EnvKey {
    EnvKey::parse(k).unwrap()
}

/// What every store must do: round trip exactly, overwrite, keep users apart, report a missing key,
/// forget a user idempotently, and never show a value in `Debug` or an error.
async fn contract(store: &dyn SecretStore) {
    let alice = ProfileName::for_user(uuid::Uuid::new_v4());
    let bob = ProfileName::for_user(uuid::Uuid::new_v4());
    let token = key("TWILIGHT_API_TOKEN");

    store.put(&alice, &token, &SecretString::from("first")).await.unwrap();
    store.put(&alice, &token, &SecretString::from(VALUE)).await.unwrap();
    store.put(&bob, &token, &SecretString::from("bob's")).await.unwrap();
    assert_eq!(store.get(&alice, &token).await.unwrap().expose_secret(), VALUE);
    assert_eq!(store.get(&bob, &token).await.unwrap().expose_secret(), "bob's");

    let missing = store.get(&alice, &key("DASHSCOPE_API_KEY")).await.unwrap_err();
    assert!(matches!(missing, Error::SecretNotFound { .. }), "{missing}");

    store.remove_all(&alice).await.unwrap();
    store.remove_all(&alice).await.unwrap();
    assert!(matches!(store.get(&alice, &token).await, Err(Error::SecretNotFound { .. })));
    assert_eq!(store.get(&bob, &token).await.unwrap().expose_secret(), "bob's", "another user's secrets stay");
    assert!(!format!("{store:?}").contains("bob's"));
    store.remove_all(&bob).await.unwrap();
}

#[tokio::test]
async fn file_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("secrets");
    let store = FileStore::new(&root);
    contract(&store).await;

    let user = ProfileName::for_user(uuid::Uuid::new_v4());
    store.put(&user, &key("K"), &SecretString::from("v")).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join(user.as_str())), 0o700);
    assert_eq!(mode(&root.join(user.as_str()).join("K")), 0o600);
    assert_eq!(std::fs::read(root.join(user.as_str()).join("K")).unwrap(), b"v", "stored exactly, no newline");
}

#[tokio::test]
async fn file_store_secrets_reach_the_profile_env() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("secrets"));
    let user = ProfileName::for_user(uuid::Uuid::new_v4());
    let env_file = dir.path().join("profile/.env");
    std::fs::create_dir_all(env_file.parent().unwrap()).unwrap();
    std::fs::write(&env_file, "# seeded by hermes\nWEIXIN_DM_POLICY=allowlist\n").unwrap();
    store.put(&user, &key("TWILIGHT_API_TOKEN"), &SecretString::from(VALUE)).await.unwrap();

    let keys = [key("TWILIGHT_API_TOKEN")];
    plant_secrets(&store, &user, &keys, &env_file).await.unwrap();
    plant_secrets(&store, &user, &keys, &env_file).await.unwrap();
    let text = std::fs::read_to_string(&env_file).unwrap();
    assert_eq!(text.matches("TWILIGHT_API_TOKEN=").count(), 1, "{text}");
    assert!(text.starts_with("# seeded by hermes\nWEIXIN_DM_POLICY=allowlist\n"));
    assert_eq!(std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777, 0o600);

    let missing = plant_secrets(&store, &user, &[key("DASHSCOPE_API_KEY")], &env_file).await.unwrap_err();
    assert!(matches!(missing, Error::SecretNotFound { .. }));
}

fn have(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn pass_store_with_a_throwaway_gpg_key() {
    if !have("pass") || !have("gpg") {
        common::skip("pass_store: `pass`/`gpg` not installed (scripts/install-deps installs them)");
        return;
    }
    // gpg-agent's socket path must stay short, so GNUPGHOME lives under /tmp.
    let gnupg = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
    std::fs::set_permissions(gnupg.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = "twilight-test@provision.invalid";
    let generated = Command::new("gpg")
        .env("GNUPGHOME", gnupg.path())
        .args(["--batch", "--passphrase", "", "--quick-gen-key", id, "default", "default", "never"])
        .output()
        .unwrap();
    assert!(generated.status.success(), "gpg: {}", String::from_utf8_lossy(&generated.stderr));

    let store_dir = tempfile::tempdir().unwrap();
    let store = PassStore::new(store_dir.path()).with_gnupg_home(gnupg.path());
    store.init(id).await.unwrap();
    contract(&store).await;
    assert_eq!(store.delivery(), SecretDelivery::ProfileEnv);

    let user = ProfileName::for_user(uuid::Uuid::new_v4());
    store.put(&user, &key("K"), &SecretString::from("plaintext-canary")).await.unwrap();
    let file = store_dir.path().join(format!("twilight/{user}/K.gpg"));
    assert!(!std::fs::read(&file).unwrap().windows(16).any(|w| w == b"plaintext-canary"), "encrypted at rest");

    let _ = Command::new("gpgconf").env("GNUPGHOME", gnupg.path()).args(["--kill", "gpg-agent"]).status();
}

#[tokio::test]
async fn systemd_creds_store_with_the_host_key() {
    let probe = Command::new("sh").args(["-c", "printf x | systemd-creds encrypt --name=PROBE - - >/dev/null"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        common::skip("systemd_creds_store: `systemd-creds encrypt` does not work here (needs systemd ≥ 250 and root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SystemdCredsStore::new(dir.path());
    contract(&store).await;
    assert_eq!(store.delivery(), SecretDelivery::SystemdCredentials { dir: dir.path().to_owned() });

    let user = ProfileName::for_user(uuid::Uuid::new_v4());
    let token = key("TWILIGHT_API_TOKEN");
    store.put(&user, &token, &SecretString::from("plaintext-canary")).await.unwrap();
    let path = store.credential_path(&user, &token);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read(&path).unwrap().windows(16).any(|w| w == b"plaintext-canary"), "encrypted at rest");

    // The ciphertext is bound to its name: the same file under another key does not decrypt.
    let other = key("DASHSCOPE_API_KEY");
    std::fs::copy(&path, store.credential_path(&user, &other)).unwrap();
    let err = store.get(&user, &other).await.unwrap_err().to_string();
    assert!(!err.contains("plaintext-canary"), "{err}");

    // Delivered by systemd, so planting takes the key out of the profile's .env.
    let env_file = dir.path().join("profile.env");
    std::fs::write(&env_file, "TWILIGHT_API_TOKEN=stale\nKEEP=1\n").unwrap();
    plant_secrets(&store, &user, &[token], &env_file).await.unwrap();
    assert_eq!(DotEnv::load(&env_file).unwrap().keys(), ["KEEP"]);
}
