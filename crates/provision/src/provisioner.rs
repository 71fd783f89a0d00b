//! The provisioner: a persisted state machine per job, leased from the accounts DB so several
//! provisioners can run, each step idempotent so a step retried after a crash is harmless.
//!
//! A `provision` job walks the [`JobState`]s from `created` to `active`; a step that fails is
//! retried with exponential backoff, and after [`ProvisionerConfig::max_attempts`] failures the job
//! is compensated and ends `failed`. Compensation removes only what the job created: a profile that
//! was already active (an operator re-pairing a working bot) is left as it was. Every step first
//! checks that the user is still active; one refunded or expired meanwhile ends the job
//! `cancelled`, compensated the same way. Waiting for the user (to scan, to type a code, to name
//! the bot) is not failure: the job is parked and woken by the onboarding page.
//!
//! The other kinds are one step each and end `done`: `deprovision` removes everything the user had
//! (unless they are active again), `suspend` stops an expired user's gateway and keeps the rest,
//! `resume` starts a renewed user's gateway again. At start, [`Provisioner::run`] starts the
//! gateway of every active profile on this host, which a restart of this process took down.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use twilight_accounts::{
    Accounts, GatewayCensus, HermesProfile, JobKind, JobState, JobUpdate, NewApiKey, ProfileStatus, ProvisioningJob, UserStatus,
    DEFAULT_RATE_LIMIT_PER_MIN,
};
use twilight_core::token::{hash_hex, RawToken};
use twilight_ilink::{IlinkClient, PairingStatus};

use crate::dotenv::DotEnv;
use crate::error::{Error, Result};
use crate::hermes::HermesCli;
use crate::names::{EnvKey, ProfileName};
use crate::pairing::{self, PairedBot};
use crate::secrets::{plant_secrets, SecretStore};
use crate::service::ServiceManager;
use crate::soul::BotName;

/// The user's key, as the agent's skill reads it.
pub const API_TOKEN: &str = "TWILIGHT_API_TOKEN";
/// Where the skill calls the data plane.
pub const API_BASE: &str = "TWILIGHT_API_BASE";
/// The LLM (hermes' `alibaba` provider), which is our relay: the user's own key (the same as
/// [`API_TOKEN`]) and `<api_base>/llm/v1`. No upstream LLM key is ever planted.
pub const DASHSCOPE_API_KEY: &str = "DASHSCOPE_API_KEY";
pub const DASHSCOPE_BASE_URL: &str = "DASHSCOPE_BASE_URL";
/// The paired bot's token, planted for the gateway's WeChat adapter.
pub const WEIXIN_TOKEN: &str = "WEIXIN_TOKEN";

/// Everything a provisioner needs to know about its host and the product.
#[derive(Clone)]
pub struct ProvisionerConfig {
    /// Names this provisioner in job leases; unique per process.
    pub worker_id: String,
    /// Recorded as the profile's host; jobs are claimed for it (see `Accounts::claim_job`).
    pub host: String,
    /// How many gateways the host can hold, recorded with its census.
    pub gateway_slots: i32,
    /// The data plane the user's agent calls (`TWILIGHT_API_BASE`); its LLM relay is under `/llm/v1`.
    pub api_base: String,
    /// The template profile users are cloned from.
    pub template: ProfileName,
    /// How long a claimed job stays ours without a word from us.
    pub lease: Duration,
    /// Failed attempts of one job before it is compensated.
    pub max_attempts: i32,
    /// First retry delay; doubles per failed attempt, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often an idle provisioner looks for due jobs, and a pairing for the code the user typed.
    pub idle_poll: Duration,
    /// QR codes shown per pairing round before waiting for the user to ask for another.
    pub qr_rounds: u32,
    /// Jobs worked on at once. Pairing (waiting for a phone) does not count: a buyer who never
    /// scans cannot hold up the next one.
    pub concurrency: usize,
    /// How long a job waiting for the user (to name the bot, to ask for a new QR code) sleeps
    /// unless the onboarding page wakes it first.
    pub park: Duration,
    /// Our pages as customers reach them, for the renewal link in reminders.
    pub public_url: String,
    /// How long before a paid period ends the bot reminds its owner to renew.
    pub remind_before: chrono::Duration,
    /// iLink's media CDN, for the weixin adapter.
    pub weixin_cdn_base_url: String,
}

impl std::fmt::Debug for ProvisionerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionerConfig")
            .field("worker_id", &self.worker_id)
            .field("host", &self.host)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl ProvisionerConfig {
    /// The LLM relay as hermes' `alibaba` provider reaches it (`DASHSCOPE_BASE_URL`; hermes appends
    /// `/chat/completions`).
    pub fn llm_base_url(&self) -> String {
        format!("{}/llm/v1", self.api_base.trim_end_matches('/'))
    }
}

/// What running a job for a while came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reached a final state (`active`, `done`, `cancelled`).
    Finished(JobState),
    /// Waiting for the user; the job is parked in `state`.
    Waiting(JobState),
    /// A step failed; retried later from `state`.
    Retrying { state: JobState, error: String },
    /// Failed for good and compensated.
    Failed(String),
    /// Another provisioner took the job over (our lease ran out), or a refund cancelled it.
    LostLease,
}

/// Drives provisioning jobs on one host.
pub struct Provisioner {
    accounts: Arc<dyn Accounts>,
    hermes: HermesCli,
    secrets: Arc<dyn SecretStore>,
    services: Arc<dyn ServiceManager>,
    ilink: IlinkClient,
    config: ProvisionerConfig,
}

/// Where a step leaves the job.
enum Step {
    /// Go on with this state.
    Next(JobState),
    /// Park in this state until the user acts (or the next look).
    Wait(JobState),
}

impl Provisioner {
    pub fn new(
        accounts: Arc<dyn Accounts>,
        hermes: HermesCli,
        secrets: Arc<dyn SecretStore>,
        services: Arc<dyn ServiceManager>,
        ilink: IlinkClient,
        config: ProvisionerConfig,
    ) -> Provisioner {
        Provisioner { accounts, hermes, secrets, services, ilink, config }
    }

    /// Brings back the gateways of this host's active profiles, then works on due jobs, up to
    /// [`ProvisionerConfig::concurrency`] at once, until `shutdown` (which drops the jobs in flight:
    /// their leases run out and they resume where they stopped).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if let Err(error) = self.restore_gateways().await {
            tracing::error!(%error, "could not bring back the gateways of active profiles");
        }
        let workers = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut jobs = JoinSet::new();
        // The first pass waits a little: the gateways just started are still being launched.
        let mut next_pass = tokio::time::Instant::now() + FIRST_PASS_AFTER;
        loop {
            while jobs.try_join_next().is_some() {}
            if tokio::time::Instant::now() >= next_pass {
                next_pass += PERIODIC_PASS_EVERY;
                self.periodic_pass().await;
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = workers.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            match self.claim().await {
                Ok(Some(job)) => {
                    let this = self.clone();
                    jobs.spawn(async move { this.run_claimed(job, Some(permit)).await });
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "provisioner could not reach the accounts DB"),
            }
            drop(permit);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
        jobs.shutdown().await;
    }

    /// Claims one due job and runs it as far as it goes now; `None` when nothing is due.
    pub async fn run_once(&self) -> Result<Option<(ProvisioningJob, Outcome)>> {
        let Some(job) = self.claim().await? else { return Ok(None) };
        let outcome = self.run_claimed(job.clone(), None).await?;
        Ok(Some((job, outcome)))
    }

    async fn claim(&self) -> Result<Option<ProvisioningJob>> {
        let now = Utc::now();
        Ok(self.accounts.claim_job(&self.config.worker_id, &self.config.host, now, self.lease_from(now)).await?)
    }

    /// Works a claimed job; `permit` (a worker of [`Provisioner::run`]'s pool) is given back when
    /// the job only waits for a phone.
    async fn run_claimed(&self, job: ProvisioningJob, permit: Option<OwnedSemaphorePermit>) -> Result<Outcome> {
        let outcome = self.work(&job, permit).await;
        match &outcome {
            Ok(outcome) => tracing::info!(job_id = %job.job_id, user_id = %job.user_id, kind = %job.kind, ?outcome, "provisioning job ran"),
            Err(error) => tracing::warn!(job_id = %job.job_id, %error, "provisioning job could not record its progress"),
        }
        outcome
    }

    fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.config.lease
    }

    /// Starts the gateway of every active profile on this host: after a restart of this process
    /// (supervised gateways died with it) or of the machine. Returns how many were started.
    pub async fn restore_gateways(&self) -> Result<usize> {
        let profiles = self.accounts.profiles_on_host(&self.config.host, ProfileStatus::Active).await?;
        let mut started = 0;
        for row in &profiles {
            let Ok(profile) = ProfileName::parse(&row.profile_name) else {
                tracing::warn!(profile = %row.profile_name, "not a profile name of ours; left alone");
                continue;
            };
            // One broken profile must not keep the others down.
            match self.start_gateway(&profile).await {
                Ok(()) => started += 1,
                Err(error) => tracing::error!(%profile, %error, "could not start the gateway of an active profile"),
            }
        }
        tracing::info!(started, expected = profiles.len(), "gateways of active profiles started");
        Ok(started)
    }

    async fn start_gateway(&self, profile: &ProfileName) -> Result<()> {
        self.services.install(profile).await?;
        self.services.start(profile).await
    }

    async fn work(&self, job: &ProvisioningJob, mut permit: Option<OwnedSemaphorePermit>) -> Result<Outcome> {
        let profile = ProfileName::for_user(job.user_id);
        let mut state = job.state;
        loop {
            if pairing(state) {
                permit.take();
            }
            let step = match job.kind {
                JobKind::Provision => self.provision_step(job, &profile, state).await,
                JobKind::Deprovision => self.deprovision_job(job, &profile).await,
                JobKind::Suspend => self.suspend(job, &profile).await,
                JobKind::Resume => self.resume(job, &profile).await,
            };
            match step {
                Ok(Step::Next(next)) => {
                    let finished = next.is_final();
                    if !self.record(job, next, 0, None, Utc::now(), !finished).await? {
                        return self.lost(job).await;
                    }
                    if finished {
                        return Ok(Outcome::Finished(next));
                    }
                    state = next;
                }
                Ok(Step::Wait(waiting)) => {
                    let wake = Utc::now() + self.config.park;
                    if !self.record(job, waiting, 0, None, wake, false).await? {
                        return self.lost(job).await;
                    }
                    // The page may have named the bot (and woken the job) while we decided to wait.
                    if waiting == JobState::Paired && self.accounts.job(job.job_id).await?.is_some_and(|latest| latest.bot_name.is_some()) {
                        self.accounts.wake_job(job.job_id).await?;
                    }
                    return Ok(Outcome::Waiting(waiting));
                }
                Err(error) => return self.failed(job, state, error).await,
            }
        }
    }

    /// Our write was refused: another provisioner holds the job, or a refund cancelled it. In the
    /// second case our lease still blocks the user's `deprovision`; give it up.
    async fn lost(&self, job: &ProvisioningJob) -> Result<Outcome> {
        self.accounts.release_job(job.job_id, &self.config.worker_id).await?;
        Ok(Outcome::LostLease)
    }

    /// A failed step: retried with backoff, or compensated once attempts run out.
    async fn failed(&self, job: &ProvisioningJob, state: JobState, error: Error) -> Result<Outcome> {
        let attempts = job.attempts + 1;
        let message = error.to_string();
        if attempts < self.config.max_attempts {
            let backoff = self.config.retry_base.saturating_mul(1 << (attempts - 1).clamp(0, 16) as u32).min(self.config.retry_max);
            tracing::warn!(job_id = %job.job_id, attempts, error = %message, "provisioning step failed; will retry");
            return match self.record(job, state, attempts, Some(&message), Utc::now() + backoff, false).await? {
                true => Ok(Outcome::Retrying { state, error: message }),
                false => self.lost(job).await,
            };
        }
        tracing::error!(job_id = %job.job_id, attempts, error = %message, "provisioning failed for good; compensating");
        if job.kind != JobKind::Provision {
            // Nothing to undo: these jobs change a running bot, and the next expiry check or
            // renewal enqueues them again.
            self.record(job, JobState::Failed, attempts, Some(&message), Utc::now(), false).await?;
            return Ok(Outcome::Failed(message));
        }
        let profile = ProfileName::for_user(job.user_id);
        if let Err(compensation) = self.compensate(job, &profile).await {
            // Try again later: a half-compensated job must not be called failed.
            let message = format!("{message}; compensation failed: {compensation}");
            self.record(job, state, attempts, Some(&message), Utc::now() + self.config.retry_max, false).await?;
            return Ok(Outcome::Retrying { state, error: message });
        }
        self.record(job, JobState::Failed, attempts, Some(&message), Utc::now(), false).await?;
        Ok(Outcome::Failed(message))
    }

    /// Undoes a provision job that will not finish: everything it set up goes, unless the profile
    /// was already active before it (an operator re-pairing a working bot), which is kept as it is.
    async fn compensate(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<()> {
        if self.profile_predates_job(job).await? {
            tracing::warn!(job_id = %job.job_id, %profile, "the profile was active before this job; kept");
            return Ok(());
        }
        self.remove_everything(job, profile).await?;
        self.set_profile_status(job, profile, ProfileStatus::Error, None).await
    }

    /// Whether the user's profile was active (or suspended) before this job: the only job that
    /// marks a profile active is the one that finishes, so a profile marked so now was not made by
    /// a job still running.
    async fn profile_predates_job(&self, job: &ProvisioningJob) -> Result<bool> {
        let row = self.accounts.profile_for_user(job.user_id).await?;
        Ok(row.is_some_and(|row| matches!(row.status, ProfileStatus::Active | ProfileStatus::Suspended)))
    }

    /// Writes the job's progress; `keep_lease` extends our lease instead of releasing it.
    async fn record(
        &self,
        job: &ProvisioningJob,
        state: JobState,
        attempts: i32,
        error: Option<&str>,
        next: DateTime<Utc>,
        keep_lease: bool,
    ) -> Result<bool> {
        let update = JobUpdate { state, attempts, last_error: error.map(str::to_string), next_attempt_at: next };
        let lease = keep_lease.then(|| self.lease_from(Utc::now()));
        Ok(self.accounts.update_job(job.job_id, &self.config.worker_id, &update, lease).await?)
    }

    /// The user's status now (not as the job was claimed: a refund may have come in since).
    async fn user_status(&self, job: &ProvisioningJob) -> Result<Option<UserStatus>> {
        Ok(self.accounts.user(job.user_id).await?.map(|user| user.status))
    }

    async fn provision_step(&self, job: &ProvisioningJob, profile: &ProfileName, state: JobState) -> Result<Step> {
        if self.user_status(job).await? != Some(UserStatus::Active) {
            tracing::info!(job_id = %job.job_id, "the user is no longer active; provisioning cancelled");
            self.compensate(job, profile).await?;
            return Ok(Step::Next(JobState::Cancelled));
        }
        match state {
            JobState::Created => {
                self.hermes.create_profile(profile, &self.config.template).await?;
                if !self.profile_predates_job(job).await? {
                    self.set_profile_status(job, profile, ProfileStatus::Provisioning, None).await?;
                }
                Ok(Step::Next(JobState::ProfileCreated))
            }
            JobState::ProfileCreated => {
                self.plant_key_and_secrets(job, profile).await?;
                Ok(Step::Next(JobState::SecretsPlanted))
            }
            JobState::SecretsPlanted | JobState::AwaitingScan | JobState::AwaitingUser => self.pair(job, profile).await,
            JobState::Paired => {
                let latest = self.accounts.job(job.job_id).await?.unwrap_or_else(|| job.clone());
                let Some(name) = latest.bot_name else { return Ok(Step::Wait(JobState::Paired)) };
                // The page validated it; a name that no longer parses gets the default, not a failure.
                let name = BotName::parse(&name).unwrap_or_default();
                self.hermes.write_soul(profile, &self.config.template, &name).await?;
                Ok(Step::Next(JobState::BotNamed))
            }
            JobState::BotNamed => {
                self.start_gateway(profile).await?;
                Ok(Step::Next(JobState::GatewayRunning))
            }
            JobState::GatewayRunning => {
                let status = self.services.status(profile).await?;
                if status.pid.is_none() {
                    return Err(Error::Hermes { profile: profile.to_string(), reason: "the gateway is not running" });
                }
                let bot = self.accounts.profile_for_user(job.user_id).await?.and_then(|p| p.weixin_bot_id);
                self.set_profile_status(job, profile, ProfileStatus::Active, bot.clone()).await?;
                if let Some(bot) = bot {
                    self.welcome(job, profile, &bot).await?;
                }
                Ok(Step::Next(JobState::Active))
            }
            finished @ (JobState::Active | JobState::Done | JobState::Failed | JobState::Cancelled) => {
                Err(Error::UnknownJobState(finished.to_string()))
            }
        }
    }

    /// The bot greets its owner in WeChat in the name they chose, once per profile: claimed in the
    /// accounts DB first, so a restart never greets twice. A greeting that cannot be sent is given
    /// up (and its claim released) rather than failing a bot that works.
    async fn welcome(&self, job: &ProvisioningJob, profile: &ProfileName, bot_id: &str) -> Result<()> {
        if !self.accounts.claim_welcome(job.user_id, Utc::now()).await? {
            return Ok(());
        }
        let latest = self.accounts.job(job.job_id).await?.unwrap_or_else(|| job.clone());
        let name = latest.bot_name.as_deref().and_then(|name| BotName::parse(name).ok()).unwrap_or_default();
        if let Err(error) = self.say(profile, bot_id, &welcome_text(&name)).await {
            tracing::warn!(job_id = %job.job_id, %error, "the bot could not greet its owner");
            self.accounts.release_welcome(job.user_id).await?;
        }
        Ok(())
    }

    /// What runs every [`PERIODIC_PASS_EVERY`]: the renewal reminders and the gateway census.
    async fn periodic_pass(&self) {
        if let Err(error) = self.send_reminders(Utc::now()).await {
            tracing::warn!(%error, "the renewal reminder pass failed");
        }
        match self.take_census().await {
            Ok(census) if census.running < census.expected => {
                tracing::warn!(expected = census.expected, running = census.running, "gateways of active profiles are down")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "the gateway census failed"),
        }
    }

    /// Counts this host's active profiles and their gateways that run, and records it for /healthz.
    pub async fn take_census(&self) -> Result<GatewayCensus> {
        let profiles = self.accounts.profiles_on_host(&self.config.host, ProfileStatus::Active).await?;
        let mut running = 0;
        for row in &profiles {
            if let Ok(profile) = ProfileName::parse(&row.profile_name) {
                running += i32::from(self.services.status(&profile).await?.pid.is_some());
            }
        }
        let expected = i32::try_from(profiles.len()).unwrap_or(i32::MAX);
        let census = GatewayCensus {
            host: self.config.host.clone(),
            expected,
            running,
            gateway_slots: self.config.gateway_slots,
            observed_at: Utc::now(),
        };
        self.accounts.record_gateway_census(&census).await?;
        Ok(census)
    }

    /// Reminds the owner of every running bot on this host whose paid period ends within
    /// [`ProvisionerConfig::remind_before`] of `now`, through that bot, with their renewal link:
    /// once per period (claimed in the accounts DB before sending). Returns how many were sent.
    pub async fn send_reminders(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut sent = 0;
        for user in self.accounts.reminders_due(&self.config.host, now + self.config.remind_before).await? {
            let Some(paid_until) = user.paid_until else { continue };
            let Some(bot_id) = self.accounts.profile_for_user(user.user_id).await?.and_then(|row| row.weixin_bot_id) else { continue };
            if !self.accounts.claim_reminder(user.user_id, paid_until).await? {
                continue;
            }
            let text = reminder_text(paid_until, &twilight_accounts::renew_url(&self.config.public_url, &user.renewal_code));
            match self.say(&ProfileName::for_user(user.user_id), &bot_id, &text).await {
                Ok(()) => sent += 1,
                Err(error) => {
                    tracing::warn!(user_id = %user.user_id, %error, "the bot could not remind its owner to renew");
                    self.accounts.release_reminder(user.user_id, paid_until).await?;
                }
            }
        }
        Ok(sent)
    }

    /// Says `text` to the bot's owner in WeChat, as the bot (with the credentials pairing saved).
    async fn say(&self, profile: &ProfileName, bot_id: &str, text: &str) -> Result<()> {
        let bot = pairing::read_account_file(&self.hermes.profile_dir(profile), bot_id)?;
        Ok(self.ilink.send_text(&bot.base_url, &bot.bot_token, &bot.owner, text).await?)
    }

    /// `deprovision`: everything goes, unless the user is active again (renewed after the
    /// retention's deprovisioning was enqueued).
    async fn deprovision_job(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<Step> {
        if self.user_status(job).await? == Some(UserStatus::Active) {
            return Ok(Step::Next(JobState::Cancelled));
        }
        self.remove_everything(job, profile).await?;
        self.set_profile_status(job, profile, ProfileStatus::Deprovisioned, None).await?;
        Ok(Step::Next(JobState::Done))
    }

    /// `suspend`: an expired user's gateway stops; profile, pairing, memories and secrets stay.
    async fn suspend(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<Step> {
        let row = self.accounts.profile_for_user(job.user_id).await?;
        if self.user_status(job).await? != Some(UserStatus::Expired) || !row.is_some_and(|row| row.status == ProfileStatus::Active) {
            return Ok(Step::Next(JobState::Cancelled));
        }
        self.services.stop(profile).await?;
        self.set_profile_status(job, profile, ProfileStatus::Suspended, None).await?;
        Ok(Step::Next(JobState::Done))
    }

    /// `resume`: a renewed user's suspended gateway starts again, with the same profile and pairing.
    async fn resume(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<Step> {
        let row = self.accounts.profile_for_user(job.user_id).await?;
        if self.user_status(job).await? != Some(UserStatus::Active) || !row.is_some_and(|row| row.status == ProfileStatus::Suspended) {
            return Ok(Step::Next(JobState::Cancelled));
        }
        self.start_gateway(profile).await?;
        self.set_profile_status(job, profile, ProfileStatus::Active, None).await?;
        Ok(Step::Next(JobState::Done))
    }

    /// Makes sure the profile holds exactly one live key of the user and the other secrets. A key
    /// planted by an earlier attempt is kept if it is still the user's live key; otherwise every
    /// key of the user is revoked and a new one is made, planted, then stored by hash — so a crash
    /// anywhere in between leaves at most a planted key that matches nothing and is replaced. The
    /// same key is the profile's LLM key (our relay's); the raw key is held only in memory here.
    async fn plant_key_and_secrets(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<()> {
        let token_key = env_key(API_TOKEN);
        let planted = match self.secrets.get(profile, &token_key).await {
            Ok(raw) => {
                let live = self
                    .accounts
                    .api_key(&hash_hex(raw.expose_secret()))
                    .await?
                    .is_some_and(|key| key.user_id == job.user_id && !key.is_revoked());
                live.then_some(raw)
            }
            Err(Error::SecretNotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        let raw = match planted {
            Some(raw) => raw,
            None => {
                self.accounts.revoke_user_keys(job.user_id).await?;
                let raw = RawToken::generate();
                let secret = SecretString::from(raw.expose());
                self.secrets.put(profile, &token_key, &secret).await?;
                self.accounts.insert_api_key(NewApiKey::data_key(job.user_id, &raw, DEFAULT_RATE_LIMIT_PER_MIN)).await?;
                secret
            }
        };
        self.secrets.put(profile, &env_key(API_BASE), &SecretString::from(self.config.api_base.clone())).await?;
        self.secrets.put(profile, &env_key(DASHSCOPE_API_KEY), &raw).await?;
        self.secrets.put(profile, &env_key(DASHSCOPE_BASE_URL), &SecretString::from(self.config.llm_base_url())).await?;
        let keys = [token_key, env_key(API_BASE), env_key(DASHSCOPE_API_KEY), env_key(DASHSCOPE_BASE_URL)];
        plant_secrets(self.secrets.as_ref(), profile, &keys, &self.hermes.env_file(profile)).await
    }

    /// One pairing round: show QR codes until the user scans and confirms (typing a verify code
    /// if WeChat asks), or until `qr_rounds` codes expired unscanned; then park until the user
    /// asks for another. Runs while holding the job's lease, renewing it after every poll.
    async fn pair(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<Step> {
        for _round in 0..self.config.qr_rounds {
            let mut qr = self.ilink.get_bot_qrcode().await?;
            self.renew_while_pairing(job).await?;
            self.accounts.set_pairing(job.job_id, Some(&qr.img_content), "wait").await?;
            loop {
                self.renew_while_pairing(job).await?;
                let code = self.accounts.job(job.job_id).await?.and_then(|latest| latest.verify_code);
                // A long poll holds for half a minute; a code the user types meanwhile cuts it short.
                let status = tokio::select! {
                    status = self.ilink.poll_status(&mut qr, code.as_deref()) => status?,
                    () = self.verify_code_typed(job), if code.is_none() => continue,
                };
                let word = pairing::status_word(&status);
                match status {
                    PairingStatus::Confirmed { bot_token, ilink_bot_id, base_url, ilink_user_id } => {
                        self.accounts.set_verify_code(job.job_id, None).await?;
                        let bot = PairedBot { bot_token, bot_id: ilink_bot_id, base_url, owner: ilink_user_id };
                        self.install_bot(job, profile, &bot).await?;
                        self.accounts.set_pairing(job.job_id, None, word).await?;
                        return Ok(Step::Next(JobState::Paired));
                    }
                    PairingStatus::Expired => break,
                    PairingStatus::VerifyCodeBlocked | PairingStatus::BindedRedirect => {
                        self.accounts.set_pairing(job.job_id, None, word).await?;
                        return Ok(Step::Wait(JobState::AwaitingUser));
                    }
                    PairingStatus::NeedVerifyCode if code.is_some() => {
                        // Asked again right after a code: it was wrong. The page asks for another.
                        self.accounts.set_verify_code(job.job_id, None).await?;
                        self.accounts.set_pairing(job.job_id, Some(&qr.img_content), "verify_code_wrong").await?;
                    }
                    PairingStatus::NeedVerifyCode => {
                        self.accounts.set_pairing(job.job_id, Some(&qr.img_content), word).await?;
                        // Do not ask iLink again before the user had a chance to type the code.
                        tokio::time::sleep(self.config.idle_poll).await;
                    }
                    PairingStatus::Wait | PairingStatus::Scanned | PairingStatus::ScannedButRedirect { .. } => {
                        self.accounts.set_pairing(job.job_id, Some(&qr.img_content), word).await?;
                    }
                }
            }
        }
        self.accounts.set_pairing(job.job_id, None, "expired").await?;
        Ok(Step::Wait(JobState::AwaitingUser))
    }

    /// Records that the job waits for a scan, extending our lease.
    async fn renew_while_pairing(&self, job: &ProvisioningJob) -> Result<()> {
        match self.record(job, JobState::AwaitingScan, job.attempts, None, Utc::now(), true).await? {
            true => Ok(()),
            false => Err(Error::LostLease),
        }
    }

    /// Returns once the user has typed a verify code (checked every `idle_poll`) or after a
    /// minute, whichever is first.
    async fn verify_code_typed(&self, job: &ProvisioningJob) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(self.config.idle_poll).await;
            if matches!(self.accounts.job(job.job_id).await, Ok(Some(latest)) if latest.verify_code.is_some()) {
                return;
            }
        }
    }

    /// Gives the profile its WeChat account: the token in the secret store and `.env`, the
    /// account file hermes' adapter reads, and an allowlist holding only the paying user.
    async fn install_bot(&self, job: &ProvisioningJob, profile: &ProfileName, bot: &PairedBot) -> Result<()> {
        self.secrets.put(profile, &env_key(WEIXIN_TOKEN), &bot.bot_token).await?;
        plant_secrets(self.secrets.as_ref(), profile, &[env_key(WEIXIN_TOKEN)], &self.hermes.env_file(profile)).await?;
        pairing::write_account_file(&self.hermes.profile_dir(profile), bot)?;
        let mut env = DotEnv::load(self.hermes.env_file(profile))?;
        for (key, value) in pairing::allowlist_env(bot, &self.config.weixin_cdn_base_url) {
            env.set(&env_key(key), &value)?;
        }
        env.save()?;
        self.set_profile_status(job, profile, ProfileStatus::Provisioning, Some(bot.bot_id.clone())).await
    }

    /// Stops and removes the user's gateway, profile and secrets, and revokes their keys. Each part
    /// is idempotent, so a retry after a crash halfway is harmless.
    async fn remove_everything(&self, job: &ProvisioningJob, profile: &ProfileName) -> Result<()> {
        self.services.uninstall(profile).await?;
        self.hermes.delete_profile(profile).await?;
        self.secrets.remove_all(profile).await?;
        self.accounts.revoke_user_keys(job.user_id).await?;
        Ok(())
    }

    async fn set_profile_status(
        &self,
        job: &ProvisioningJob,
        profile: &ProfileName,
        status: ProfileStatus,
        bot: Option<String>,
    ) -> Result<()> {
        let existing = self.accounts.profile_for_user(job.user_id).await?;
        let row = HermesProfile {
            profile_name: profile.to_string(),
            user_id: job.user_id,
            host: self.config.host.clone(),
            weixin_bot_id: bot.or_else(|| existing.as_ref().and_then(|p| p.weixin_bot_id.clone())),
            status,
            created_at: existing.as_ref().map_or_else(Utc::now, |p| p.created_at),
            welcomed_at: existing.and_then(|p| p.welcomed_at),
        };
        Ok(self.accounts.upsert_profile(&row).await?)
    }
}

/// How often a running provisioner looks for owners to remind and counts its gateways.
const PERIODIC_PASS_EVERY: Duration = Duration::from_secs(60);
const FIRST_PASS_AFTER: Duration = Duration::from_secs(5);

/// The renewal reminder: when the paid period ends (China time) and where to renew.
pub fn reminder_text(paid_until: DateTime<Utc>, renew_url: &str) -> String {
    format!(
        "提醒：你的股票研究助理服务将于 {} 到期。续费请打开 {renew_url} ，续费后我照常工作，无需重新扫码。",
        twilight_core::china_minute(paid_until)
    )
}

/// What a new bot first says to its owner, in the name they gave it.
pub fn welcome_text(name: &BotName) -> String {
    format!("我是{}，可以开始问股票了", name.as_str())
}

/// Whether a provision job in `state` is (about to be) waiting for the user's phone.
fn pairing(state: JobState) -> bool {
    matches!(state, JobState::SecretsPlanted | JobState::AwaitingScan | JobState::AwaitingUser)
}

fn env_key(key: &'static str) -> EnvKey {
    EnvKey::parse(key).expect("the provisioner's keys are valid names")
}
