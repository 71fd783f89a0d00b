//! The provisioner against real parts: the accounts DB (SQLite and Postgres), the real hermes CLI
//! and gateway (supervised as a child), the file secret store, and our iLink client talking to the
//! sandbox iLink. Covers the whole walk to `active`, a crash (lost lease) and restart, a crash after
//! each step before the gateway converging to one profile, key and gateway, a key
//! planted by a crashed attempt, compensation after permanent failure, and deprovisioning.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use twilight_accounts::testing::dump;
use twilight_accounts::{Accounts, JobKind, JobState, JobUpdate, NewOrder, Plan, ProfileStatus, RefundNotice, Settlement, UserStatus};
use twilight_core::token::hash_hex;
use twilight_ilink::IlinkClient;
use twilight_provision::{
    Backoff, ChildSupervisor, DotEnv, EnvKey, FileStore, GatewayUser, HermesCli, Outcome, ProfileName, Provisioner, ProvisionerConfig,
    SecretStore, ServiceManager,
};
use twilight_sandbox::{serve, IlinkSim, IlinkSimConfig};
use uuid::Uuid;

const OWNER: &str = "wx-paying-user";

struct Harness {
    accounts: Arc<dyn Accounts>,
    hermes: HermesCli,
    secrets: Arc<FileStore>,
    services: Arc<ChildSupervisor>,
    ilink: IlinkSim,
    ilink_url: String,
    home: tempfile::TempDir,
}

impl Harness {
    async fn new(accounts: Arc<dyn Accounts>) -> Option<Harness> {
        let bin = common::hermes_bin()?;
        let home = common::test_home();
        let hermes = HermesCli::new(bin, home.path().join("hermes"));
        hermes.install_template(&common::template_dir(), &ProfileName::template()).await.unwrap();
        let secrets = Arc::new(FileStore::new(home.path().join("secrets")));
        let backoff = Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(2), reset_after: Duration::from_secs(60) };
        let services = Arc::new(ChildSupervisor::new(hermes.clone()).with_backoff(backoff).with_grace(Duration::from_secs(5)));
        let ilink = IlinkSim::new(IlinkSimConfig { status_hold: Duration::from_millis(500), ..IlinkSimConfig::default() });
        let (addr, _) = serve(ilink.router(), 0).await.unwrap();
        Some(Harness { accounts, hermes, secrets, services, ilink, ilink_url: format!("http://{addr}"), home })
    }

    fn provisioner(&self, worker: &str, configure: impl FnOnce(&mut ProvisionerConfig)) -> Provisioner {
        let mut config = provisioner_config(self, worker);
        configure(&mut config);
        let ilink = IlinkClient::new(&self.ilink_url).unwrap().with_long_poll_hold(Duration::from_millis(500));
        Provisioner::new(self.accounts.clone(), self.hermes.clone(), self.secrets.clone(), self.services.clone(), ilink, config)
    }

    /// A paid order: a user and their `created` provisioning job.
    async fn paid_user(&self) -> (Uuid, Uuid) {
        let settled = self.pay(None).await;
        (settled.user.user_id, settled.job.unwrap().job_id)
    }

    /// Pays an order: a first purchase, or a renewal of `renews`.
    async fn pay(&self, renews: Option<Uuid>) -> twilight_accounts::Settled {
        let no = format!("TD{}", &Uuid::new_v4().simple().to_string()[..20]);
        let order = NewOrder {
            out_trade_no: no.clone(),
            plan: Plan::Pro,
            amount_cents: 19_800,
            currency: "CNY".into(),
            processor: "wechatpay".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(30),
            renews,
            onboarding_token_hash: hash_hex(&no),
        };
        self.accounts.create_order(order).await.unwrap();
        let settlement = Settlement {
            out_trade_no: no.clone(),
            processor_ref: format!("tx-{no}"),
            amount_cents: 19_800,
            currency: "CNY".into(),
            paid_at: Utc::now(),
        };
        self.accounts.settle_payment(&settlement).await.unwrap()
    }

    /// Refunds the whole first payment of the job's user.
    async fn refund(&self, job_id: Uuid) -> Uuid {
        let payment_id = self.accounts.job(job_id).await.unwrap().unwrap().payment_id.unwrap();
        let no = self.accounts.payment(payment_id).await.unwrap().unwrap().out_trade_no;
        let notice = RefundNotice { out_refund_no: format!("R{no}"), out_trade_no: no, amount_cents: 19_800, refunded_at: Utc::now() };
        self.accounts.refund_payment(&notice).await.unwrap().job.expect("a deprovisioning job").job_id
    }

    /// QR codes iLink handed out so far.
    fn qr_codes_issued(&self) -> u64 {
        self.ilink.calls("GET /ilink/bot/get_bot_qrcode") + self.ilink.calls("POST /ilink/bot/get_bot_qrcode")
    }

    /// A paid user walked all the way to a running, named bot.
    async fn active_user(&self, provisioner: &Arc<Provisioner>) -> (Uuid, ProfileName) {
        let (user_id, job_id) = self.paid_user().await;
        let walk = tokio::spawn({
            let provisioner = provisioner.clone();
            async move { run_until_parked(&provisioner, job_id).await }
        });
        self.pair(job_id, None).await;
        assert_eq!(walk.await.unwrap(), Outcome::Waiting(JobState::Paired));
        self.accounts.set_bot_name(job_id, "张老师").await.unwrap();
        self.accounts.wake_job(job_id).await.unwrap();
        assert_eq!(run_until_parked(provisioner, job_id).await, Outcome::Finished(JobState::Active));
        (user_id, ProfileName::for_user(user_id))
    }

    /// The QR code key the job shows (the last path segment of the scan URL).
    async fn shown_qr(&self, job_id: Uuid) -> String {
        for _ in 0..400 {
            let job = self.accounts.job(job_id).await.unwrap().unwrap();
            if let Some(url) = job.pairing_qr {
                return url.rsplit('/').next().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no QR code shown");
    }

    async fn pairing_status(&self, job_id: Uuid, want: &str) {
        for _ in 0..400 {
            if self.accounts.job(job_id).await.unwrap().unwrap().pairing_status.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pairing never reached {want}");
    }

    /// Takes the parked job over and puts it back to `state`, due now: what a provisioner that
    /// crashed right after reaching `state` leaves behind.
    async fn rewind(&self, job_id: Uuid, state: JobState) {
        // Past the harness's `park`, so a job waiting for the user is due too.
        let later = Utc::now() + chrono::Duration::hours(2);
        let held = self.accounts.claim_job("rewinder", "test-host", later, later + chrono::Duration::seconds(5)).await.unwrap();
        assert_eq!(held.map(|job| job.job_id), Some(job_id));
        let update = JobUpdate { state, attempts: 0, last_error: None, next_attempt_at: Utc::now() };
        assert!(self.accounts.update_job(job_id, "rewinder", &update, None).await.unwrap());
    }

    async fn planted_token(&self, profile: &ProfileName) -> SecretString {
        self.secrets.get(profile, &EnvKey::parse("TWILIGHT_API_TOKEN").unwrap()).await.unwrap()
    }

    /// Scans and confirms the next QR code the job shows other than `previous`.
    async fn pair(&self, job_id: Uuid, previous: Option<&str>) -> String {
        let qrcode = loop {
            let shown = self.shown_qr(job_id).await;
            if Some(shown.as_str()) != previous {
                break shown;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        self.ilink.scan(&qrcode, OWNER).unwrap();
        self.ilink.confirm(&qrcode).unwrap();
        qrcode
    }
}

fn provisioner_config(h: &Harness, worker: &str) -> ProvisionerConfig {
    ProvisionerConfig {
        worker_id: worker.into(),
        host: "test-host".into(),
        gateway_slots: 8,
        api_base: "http://127.0.0.1:9/".into(),
        template: ProfileName::template(),
        lease: Duration::from_secs(30),
        max_attempts: 3,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        idle_poll: Duration::from_millis(50),
        qr_rounds: 3,
        concurrency: 4,
        park: Duration::from_secs(3600),
        public_url: "https://twilight.example".into(),
        remind_before: chrono::Duration::days(3),
        weixin_cdn_base_url: format!("{}/c2c", h.ilink_url),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs jobs until `job_id` is no longer due now (waiting, retrying later, or finished).
async fn run_until_parked(provisioner: &Provisioner, job_id: Uuid) -> Outcome {
    loop {
        let (job, outcome) = provisioner.run_once().await.unwrap().expect("a due job");
        assert_eq!(job.job_id, job_id);
        if !matches!(outcome, Outcome::Retrying { .. }) {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (accounts, dir) = twilight_accounts::testing::fresh_sqlite().await;
                let url = format!("sqlite:{}", dir.path().join("accounts.db").display());
                if let Some(harness) = super::Harness::new(std::sync::Arc::new(accounts)).await {
                    super::$name(harness, &url).await;
                }
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(db) = twilight_accounts::testing::fresh_postgres().await else { return };
                let accounts = db.accounts().await;
                if let Some(harness) = super::Harness::new(std::sync::Arc::new(accounts)).await {
                    super::$name(harness, db.url()).await;
                }
                db.cleanup().await;
            })+
        }
    };
}

on_both_backends!(
    a_paid_user_gets_a_paired_named_running_bot_with_one_planted_key,
    a_crashed_provisioner_is_replaced_and_a_stray_planted_key_is_replaced,
    a_crash_after_any_step_converges_to_one_profile_key_and_gateway,
    permanent_failure_is_compensated_completely,
    an_expired_bot_stops_and_its_renewal_brings_the_same_bot_back,
    a_buyer_who_never_scans_holds_up_nobody_and_rests_after_its_rounds,
    a_refund_during_provisioning_leaves_no_key_and_no_profile,
);

async fn a_paid_user_gets_a_paired_named_running_bot_with_one_planted_key(h: Harness, url: &str) {
    let (user_id, job_id) = h.paid_user().await;
    let provisioner = Arc::new(h.provisioner("worker-1", |_| {}));
    let profile = ProfileName::for_user(user_id);

    // Everything up to pairing happens at once; pairing waits for the phone.
    let running = tokio::spawn({
        let provisioner = provisioner.clone();
        async move { run_until_parked(&provisioner, job_id).await }
    });
    let qrcode = h.shown_qr(job_id).await;
    let job = h.accounts.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::AwaitingScan);
    assert!(h.hermes.profile_exists(&profile).await.unwrap());

    // The phone scans; WeChat wants the code it shows typed into our page.
    h.ilink.scan(&qrcode, OWNER).unwrap();
    let code = h.ilink.require_verify_code(&qrcode).unwrap();
    h.pairing_status(job_id, "need_verifycode").await;
    h.accounts.set_verify_code(job_id, Some("000000")).await.unwrap();
    h.pairing_status(job_id, "verify_code_wrong").await;
    h.accounts.set_verify_code(job_id, Some(&code)).await.unwrap();
    h.pairing_status(job_id, "scaned").await;
    h.ilink.confirm(&qrcode).unwrap();
    assert_eq!(running.await.unwrap(), Outcome::Waiting(JobState::Paired));

    // Paired: the account file, the token and an allowlist of the payer only.
    let profile_dir = h.hermes.profile_dir(&profile);
    let env_file = h.hermes.env_file(&profile);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert_eq!(mode(&env_file), 0o600);
    for line in [
        "WEIXIN_DM_POLICY=allowlist",
        &format!("WEIXIN_ALLOWED_USERS={OWNER}"),
        "WEIXIN_GROUP_POLICY=disabled",
        "WEIXIN_ALLOW_ALL_USERS=false",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from .env keys {:?}", DotEnv::load(&env_file).unwrap());
    }
    let stored = h.accounts.profile_for_user(user_id).await.unwrap().unwrap();
    let bot_id = stored.weixin_bot_id.clone().expect("the bot id is stored");
    assert_eq!(mode(&profile_dir.join("weixin/accounts").join(format!("{bot_id}.json"))), 0o600);
    assert_eq!(h.accounts.job(job_id).await.unwrap().unwrap().verify_code, None, "a used code is not kept");

    // Exactly one live key, planted and stored only as its hash.
    let raw =
        env.lines().find_map(|l| l.strip_prefix("TWILIGHT_API_TOKEN=")).expect("planted").trim_matches('\'').trim_matches('"').to_string();
    let key = h.accounts.api_key(&hash_hex(&raw)).await.unwrap().expect("the planted key is the user's");
    assert_eq!((key.user_id, key.is_revoked()), (user_id, false));
    let db = dump(url).await;
    assert!(!db.contains(&raw), "the raw key is in the database");
    // The profile's LLM is our relay, reached with that same key: no upstream LLM key is planted.
    let planted = |key: &str| {
        env.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(|v| v.trim_matches('\'').trim_matches('"').to_string())
    };
    assert_eq!(planted("DASHSCOPE_API_KEY").as_deref(), Some(raw.as_str()), "the LLM key is the user's own key");
    assert_eq!(planted("DASHSCOPE_BASE_URL").as_deref(), Some("http://127.0.0.1:9/llm/v1"));

    // The job sleeps until the user names the bot (the page wakes it); then the gateway comes up.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(provisioner.run_once().await.unwrap().is_none(), "a job waiting for its name is not polled");
    h.accounts.set_bot_name(job_id, "小明").await.unwrap();
    h.accounts.wake_job(job_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(run_until_parked(&provisioner, job_id).await, Outcome::Finished(JobState::Active));
    assert!(std::fs::read_to_string(profile_dir.join("SOUL.md")).unwrap().contains("小明"));
    let status = h.services.status(&profile).await.unwrap();
    assert!(status.pid.is_some(), "{status:?}");
    let stored = h.accounts.profile_for_user(user_id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.weixin_bot_id.as_deref()), (ProfileStatus::Active, Some(bot_id.as_str())));
    // The bot has greeted its owner in WeChat, in the name they chose, and recorded it (so no
    // later run greets again; see the contract test of claim_welcome).
    let greetings = h.ilink.sent(&bot_id);
    assert_eq!(
        greetings.iter().map(|m| (m.to_user_id.as_str(), m.text.as_str())).collect::<Vec<_>>(),
        [(OWNER, "我是小明，可以开始问股票了")]
    );
    assert!(stored.welcomed_at.is_some());
    assert!(!h.accounts.claim_welcome(user_id, Utc::now()).await.unwrap(), "a second greeting could be claimed");
    // The gateway talks to iLink with the bot's token.
    for _ in 0..600 {
        if h.ilink.calls("POST /ilink/bot/getupdates") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.ilink.calls("POST /ilink/bot/getupdates") > 0, "the gateway never polled iLink");
    let gateway_user = GatewayUser::for_profile(&profile);
    if common::is_root() {
        // As root the gateway runs as the profile's own user, which owns the profile.
        let account = gateway_user.lookup().unwrap().expect("the gateway's OS user exists");
        let status = std::fs::read_to_string(format!("/proc/{}/status", status.pid.unwrap())).unwrap();
        assert!(status.lines().any(|l| l == format!("Uid:\t{0}\t{0}\t{0}\t{0}", account.uid)), "{status}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&profile_dir).unwrap().uid(), account.uid);
        assert_eq!(mode(&profile_dir), 0o700);
    }

    // A refund's deprovisioning takes it all down.
    let deprovision = h.refund(job_id).await;
    assert_eq!(run_until_parked(&provisioner, deprovision).await, Outcome::Finished(JobState::Done));
    assert!(!h.hermes.profile_exists(&profile).await.unwrap());
    assert!(!h.services.status(&profile).await.unwrap().installed);
    assert!(h.secrets.get(&profile, &EnvKey::parse("TWILIGHT_API_TOKEN").unwrap()).await.is_err());
    assert!(h.accounts.api_key(&hash_hex(&raw)).await.unwrap().unwrap().is_revoked());
    assert_eq!(h.accounts.profile_for_user(user_id).await.unwrap().unwrap().status, ProfileStatus::Deprovisioned);
    assert_eq!(gateway_user.lookup().unwrap(), None, "the gateway's OS user is deleted");
    drop(h.home);
}

async fn a_crashed_provisioner_is_replaced_and_a_stray_planted_key_is_replaced(h: Harness, _url: &str) {
    let (user_id, job_id) = h.paid_user().await;
    let profile = ProfileName::for_user(user_id);
    // The first provisioner dies while pairing: its task is dropped mid-poll, its lease runs out.
    let first = Arc::new(h.provisioner("worker-crashed", |config| config.lease = Duration::from_millis(300)));
    let crashed = tokio::spawn({
        let first = first.clone();
        async move { first.run_once().await }
    });
    let abandoned = h.shown_qr(job_id).await;
    crashed.abort();
    let _ = crashed.await;
    let planted = h.planted_token(&profile).await;
    let second = Arc::new(h.provisioner("worker-2", |_| {}));
    assert!(second.run_once().await.unwrap().is_none(), "the dead worker's lease still holds");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Another provisioner resumes with a fresh QR code and the same planted key.
    let resumed = tokio::spawn({
        let second = second.clone();
        async move { run_until_parked(&second, job_id).await }
    });
    let qrcode = h.pair(job_id, Some(&abandoned)).await;
    assert_eq!(resumed.await.unwrap(), Outcome::Waiting(JobState::Paired));
    assert_eq!(h.planted_token(&profile).await.expose_secret(), planted.expose_secret());

    // Planting again (a crash right after it) keeps a key that is still the user's live key…
    h.rewind(job_id, JobState::ProfileCreated).await;
    let rerun = tokio::spawn({
        let second = second.clone();
        async move { run_until_parked(&second, job_id).await }
    });
    let qrcode = h.pair(job_id, Some(&qrcode)).await;
    assert_eq!(rerun.await.unwrap(), Outcome::Waiting(JobState::Paired));
    assert_eq!(h.planted_token(&profile).await.expose_secret(), planted.expose_secret());

    // …and replaces one that matches nothing (a crash between planting a new key and storing its
    // hash), revoking the old: exactly one live key remains, the planted one.
    let stray = twilight_core::RawToken::generate();
    h.secrets.put(&profile, &EnvKey::parse("TWILIGHT_API_TOKEN").unwrap(), &stray.expose().to_string().into()).await.unwrap();
    h.rewind(job_id, JobState::ProfileCreated).await;
    let rerun = tokio::spawn({
        let second = second.clone();
        async move { run_until_parked(&second, job_id).await }
    });
    h.pair(job_id, Some(&qrcode)).await;
    assert_eq!(rerun.await.unwrap(), Outcome::Waiting(JobState::Paired));
    let replaced = h.planted_token(&profile).await;
    assert_ne!(replaced.expose_secret(), stray.expose());
    assert_ne!(replaced.expose_secret(), planted.expose_secret());
    assert!(h.accounts.api_key(&hash_hex(planted.expose_secret())).await.unwrap().unwrap().is_revoked());
    assert!(h.accounts.api_key(&hash_hex(stray.expose())).await.unwrap().is_none());
    assert!(!h.accounts.api_key(&hash_hex(replaced.expose_secret())).await.unwrap().unwrap().is_revoked());
    assert!(h.hermes.env_file(&profile).exists());
    let env = std::fs::read_to_string(h.hermes.env_file(&profile)).unwrap();
    assert!(env.contains(replaced.expose_secret()), "the gateway's .env carries the live key");
    drop(h.home);
}

/// Waits until the supervisor has launched the profile's gateway (it spawns it from a task).
async fn gateway_up(services: &ChildSupervisor, profile: &ProfileName) {
    for _ in 0..200 {
        if services.status(profile).await.unwrap().pid.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the gateway of {profile} never started");
}

/// Gateway processes running for `profile`, counted from /proc.
fn gateways(profile: &ProfileName) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(profile.as_str()) && cmdline.contains("gateway") && cmdline.contains("run"))
        .count()
}

async fn a_crash_after_any_step_converges_to_one_profile_key_and_gateway(h: Harness, _url: &str) {
    let (user_id, job_id) = h.paid_user().await;
    let profile = ProfileName::for_user(user_id);
    let provisioner = Arc::new(h.provisioner("worker-1", |_| {}));
    let run = |provisioner: &Arc<Provisioner>| {
        let provisioner = provisioner.clone();
        tokio::spawn(async move { run_until_parked(&provisioner, job_id).await })
    };
    let walk = run(&provisioner);
    let mut qrcode = h.pair(job_id, None).await;
    assert_eq!(walk.await.unwrap(), Outcome::Waiting(JobState::Paired));

    // A provisioner that died right after reaching each step before naming leaves the job there;
    // the next one redoes what follows (pairing again from any step before it) and ends up with
    // the same profile, one planted key that is the user's live key, and the payer's allowlist.
    for state in [JobState::Created, JobState::ProfileCreated, JobState::SecretsPlanted, JobState::AwaitingScan, JobState::Paired] {
        h.rewind(job_id, state).await;
        let rerun = run(&provisioner);
        if state != JobState::Paired {
            qrcode = h.pair(job_id, Some(&qrcode)).await;
        }
        assert_eq!(rerun.await.unwrap(), Outcome::Waiting(JobState::Paired), "after a crash at {state}");
        assert!(h.hermes.profile_exists(&profile).await.unwrap());
        let planted = h.planted_token(&profile).await;
        let key = h.accounts.api_key(&hash_hex(planted.expose_secret())).await.unwrap().expect("the planted key is stored");
        assert!(!key.is_revoked(), "after a crash at {state}");
        let env = std::fs::read_to_string(h.hermes.env_file(&profile)).unwrap();
        assert!(
            env.contains(planted.expose_secret()) && env.contains(&format!("WEIXIN_ALLOWED_USERS={OWNER}")),
            "after a crash at {state}"
        );
        assert_eq!(gateways(&profile), 0, "no gateway before the bot is named");
    }

    // Named, then a crash right after `bot_named`: one gateway comes up, once.
    h.accounts.set_bot_name(job_id, "小明").await.unwrap();
    h.rewind(job_id, JobState::BotNamed).await;
    assert_eq!(run(&provisioner).await.unwrap(), Outcome::Finished(JobState::Active));
    assert!(h.services.status(&profile).await.unwrap().pid.is_some());
    assert_eq!(gateways(&profile), 1);
    // Exactly one live key in all: revoking the user's keys revokes one.
    assert_eq!(h.accounts.revoke_user_keys(user_id).await.unwrap(), 1);
    h.services.uninstall(&profile).await.unwrap();
    drop(h.home);
}

async fn permanent_failure_is_compensated_completely(h: Harness, _url: &str) {
    let (user_id, job_id) = h.paid_user().await;
    let profile = ProfileName::for_user(user_id);
    // iLink is unreachable: every pairing attempt fails after the profile and key exist.
    let provisioner = h.provisioner("worker-1", |_| {});
    h.ilink.set_fault(twilight_sandbox::Fault::Down);
    let outcome = run_until_parked(&provisioner, job_id).await;
    let Outcome::Failed(error) = outcome else { panic!("expected failure, got {outcome:?}") };
    assert!(error.contains("iLink"), "{error}");
    let job = h.accounts.job(job_id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 3));
    assert!(!h.hermes.profile_exists(&profile).await.unwrap(), "the profile is deleted");
    assert!(h.secrets.get(&profile, &EnvKey::parse("TWILIGHT_API_TOKEN").unwrap()).await.is_err(), "secrets are removed");
    assert!(!h.services.status(&profile).await.unwrap().installed);
    assert_eq!(GatewayUser::for_profile(&profile).lookup().unwrap(), None, "no OS user is left behind");
    let stored = h.accounts.profile_for_user(user_id).await.unwrap().unwrap();
    assert_eq!(stored.status, ProfileStatus::Error);
    assert!(provisioner.run_once().await.unwrap().is_none(), "a failed job is not run again");
    drop(h.home);
}

async fn an_expired_bot_stops_and_its_renewal_brings_the_same_bot_back(h: Harness, _url: &str) {
    let provisioner = Arc::new(h.provisioner("worker-1", |_| {}));
    let (user_id, profile) = h.active_user(&provisioner).await;
    let bot_id = h.accounts.profile_for_user(user_id).await.unwrap().unwrap().weixin_bot_id;
    let planted = h.planted_token(&profile).await;
    let qr_codes = h.qr_codes_issued();

    // Three days before the paid period ends (a simulated clock) the bot reminds its owner, once,
    // with the renewal link; a restarted provisioner's pass does not remind again.
    let user = h.accounts.user(user_id).await.unwrap().unwrap();
    let paid_until = user.paid_until.unwrap();
    assert_eq!(provisioner.send_reminders(paid_until - chrono::Duration::days(4)).await.unwrap(), 0, "too early");
    assert_eq!(provisioner.send_reminders(paid_until - chrono::Duration::days(2)).await.unwrap(), 1);
    assert_eq!(provisioner.send_reminders(paid_until - chrono::Duration::days(1)).await.unwrap(), 0, "reminded twice");
    let bot = bot_id.clone().unwrap();
    let reminder = h.ilink.sent(&bot).pop().unwrap();
    assert_eq!(reminder.to_user_id, OWNER);
    assert!(reminder.text.contains(&format!("https://twilight.example/renew/{}", user.renewal_code)), "{}", reminder.text);
    assert!(reminder.text.contains(&twilight_core::china_minute(paid_until)), "{}", reminder.text);
    let reminders = |sent: Vec<twilight_sandbox::SentMessage>| sent.iter().filter(|m| m.text.contains("/renew/")).count();
    assert_eq!(reminders(h.ilink.sent(&bot)), 1);

    // The provisioner process restarts: its supervised gateways died with it; the new one brings
    // back every active profile's gateway before anything else.
    h.services.stop(&profile).await.unwrap();
    assert_eq!(gateways(&profile), 0);
    let census = provisioner.take_census().await.unwrap();
    assert_eq!((census.host.as_str(), census.expected, census.running), ("test-host", 1, 0), "the census sees the gateway down");
    let services = Arc::new(ChildSupervisor::new(h.hermes.clone()));
    let ilink = IlinkClient::new(&h.ilink_url).unwrap();
    let restarted = Provisioner::new(
        h.accounts.clone(),
        h.hermes.clone(),
        h.secrets.clone(),
        services.clone(),
        ilink,
        provisioner_config(&h, "worker-2"),
    );
    assert_eq!(restarted.restore_gateways().await.unwrap(), 1);
    gateway_up(services.as_ref(), &profile).await;
    let census = restarted.take_census().await.unwrap();
    assert_eq!((census.expected, census.running), (1, 1));
    let stored: Vec<_> = h.accounts.gateway_census().await.unwrap().into_iter().map(|c| (c.host, c.expected, c.running)).collect();
    assert_eq!(stored, [(census.host, 1, 1)]);
    assert_eq!(gateways(&profile), 1);
    services.stop(&profile).await.unwrap();
    h.services.start(&profile).await.unwrap();

    // The paid period and its grace end: the user expires, the gateway stops, nothing is deleted.
    let paid_until = h.accounts.user(user_id).await.unwrap().unwrap().paid_until.unwrap();
    assert_eq!(h.accounts.expire_users(paid_until + chrono::Duration::seconds(1)).await.unwrap().len(), 1);
    let suspend = h.accounts.jobs_for_user(user_id).await.unwrap().into_iter().find(|j| j.kind == JobKind::Suspend).unwrap();
    assert_eq!(run_until_parked(&provisioner, suspend.job_id).await, Outcome::Finished(JobState::Done));
    assert_eq!(h.services.status(&profile).await.unwrap().pid, None);
    assert_eq!(gateways(&profile), 0);
    assert!(h.hermes.profile_exists(&profile).await.unwrap());
    assert_eq!(h.accounts.profile_for_user(user_id).await.unwrap().unwrap().status, ProfileStatus::Suspended);
    let key = h.accounts.api_key(&hash_hex(planted.expose_secret())).await.unwrap().unwrap();
    assert!(!key.is_revoked(), "the key is kept: it answers 402 until a renewal");

    // Renewed: the same profile, pairing and key run again, without a new QR code.
    let renewed = h.pay(Some(user_id)).await;
    assert_eq!(renewed.user.status, UserStatus::Active);
    let resume = renewed.job.expect("a resume job");
    assert_eq!(resume.kind, JobKind::Resume);
    assert_eq!(run_until_parked(&provisioner, resume.job_id).await, Outcome::Finished(JobState::Done));
    gateway_up(h.services.as_ref(), &profile).await;
    let row = h.accounts.profile_for_user(user_id).await.unwrap().unwrap();
    assert_eq!((row.status, row.weixin_bot_id), (ProfileStatus::Active, bot_id));
    assert_eq!(h.planted_token(&profile).await.expose_secret(), planted.expose_secret());
    assert_eq!(h.qr_codes_issued(), qr_codes, "no new pairing");

    // Renewing a running bot enqueues nothing at all; its new period gets its own reminder.
    assert_eq!(h.pay(Some(user_id)).await.job, None);
    let paid_until = h.accounts.user(user_id).await.unwrap().unwrap().paid_until.unwrap();
    assert_eq!(provisioner.send_reminders(paid_until - chrono::Duration::days(2)).await.unwrap(), 1);
    assert_eq!(reminders(h.ilink.sent(&bot)), 2);

    // An operator re-pairs the working bot and iLink is down until the job gives up: the
    // compensation leaves the profile that was active before the job, with its live key.
    let repair = h.accounts.enqueue_provisioning(user_id, &hash_hex("repair-link")).await.unwrap();
    h.ilink.set_fault(twilight_sandbox::Fault::Down);
    let outcome = run_until_parked(&provisioner, repair.job_id).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    h.ilink.set_fault(twilight_sandbox::Fault::None);
    assert!(h.hermes.profile_exists(&profile).await.unwrap(), "a failed re-pairing deleted the bot");
    assert_eq!(h.accounts.profile_for_user(user_id).await.unwrap().unwrap().status, ProfileStatus::Active);
    let live = h.planted_token(&profile).await;
    assert!(!h.accounts.api_key(&hash_hex(live.expose_secret())).await.unwrap().unwrap().is_revoked());
    h.services.uninstall(&profile).await.unwrap();
    drop(h.home);
}

async fn a_refund_during_provisioning_leaves_no_key_and_no_profile(h: Harness, _url: &str) {
    let (user_id, job_id) = h.paid_user().await;
    let profile = ProfileName::for_user(user_id);
    let provisioner = Arc::new(h.provisioner("worker-1", |_| {}));
    // The provisioner is pairing (it made the profile and planted a key) when the refund lands.
    let running = tokio::spawn({
        let provisioner = provisioner.clone();
        async move { provisioner.run_once().await.unwrap().unwrap().1 }
    });
    h.shown_qr(job_id).await;
    assert!(h.hermes.profile_exists(&profile).await.unwrap());
    let deprovision = h.refund(job_id).await;
    assert_eq!(running.await.unwrap(), Outcome::LostLease, "the pairing worker notices the cancellation");
    assert_eq!(h.accounts.job(job_id).await.unwrap().unwrap().state, JobState::Cancelled);

    assert_eq!(run_until_parked(&provisioner, deprovision).await, Outcome::Finished(JobState::Done));
    assert!(!h.hermes.profile_exists(&profile).await.unwrap());
    assert!(h.secrets.get(&profile, &EnvKey::parse("TWILIGHT_API_TOKEN").unwrap()).await.is_err());
    assert_eq!(h.accounts.revoke_user_keys(user_id).await.unwrap(), 0, "no key of the user is live");
    assert!(provisioner.run_once().await.unwrap().is_none(), "the cancelled job never runs again");
    assert!(!h.hermes.profile_exists(&profile).await.unwrap());
    drop(h.home);
}

async fn a_buyer_who_never_scans_holds_up_nobody_and_rests_after_its_rounds(h: Harness, _url: &str) {
    // One worker only: pairing, which waits for a phone, must not hold it.
    let provisioner = Arc::new(h.provisioner("worker-1", |config| {
        config.concurrency = 1;
        config.qr_rounds = 2;
    }));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(provisioner.clone().run(shutdown.clone()));
    let (_, first) = h.paid_user().await;
    let first_qr = h.shown_qr(first).await;
    let (_, second) = h.paid_user().await;
    let started = std::time::Instant::now();
    let second_qr = h.shown_qr(second).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the second buyer waited {:?}", started.elapsed());

    // The first buyer's QR codes run out: after its rounds the job rests, asking iLink for nothing.
    h.ilink.expire(&first_qr).unwrap();
    let next = loop {
        let shown = h.shown_qr(first).await;
        if shown != first_qr {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    h.ilink.expire(&next).unwrap();
    h.pairing_status(first, "expired").await;
    let rested = h.accounts.job(first).await.unwrap().unwrap();
    assert_eq!((rested.state, rested.pairing_qr), (JobState::AwaitingUser, None));
    let issued = h.qr_codes_issued();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.qr_codes_issued(), issued, "a resting job asks for no QR code");

    // The page's "new QR code" wakes it, and the second buyer is still pairing meanwhile.
    assert!(h.accounts.wake_job(first).await.unwrap());
    h.pair(first, Some(&next)).await;
    h.pairing_status(first, "confirmed").await;
    h.ilink.scan(&second_qr, "wx-second-buyer").unwrap();
    h.ilink.confirm(&second_qr).unwrap();
    h.pairing_status(second, "confirmed").await;
    shutdown.cancel();
    running.await.unwrap();
    drop(h.home);
}
