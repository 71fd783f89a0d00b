//! The contract every `Accounts` backend must meet, written once over `&dyn Accounts` and run as
//! `sqlite_<name>` and `postgres_<name>`. Postgres variants get a database of their own and print
//! a SKIP line when no server is reachable (in CI, `fresh_postgres` panics instead).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sqlx::error::ErrorKind;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use twilight_accounts::testing::{dump, fresh_postgres, fresh_sqlite};
use twilight_accounts::{
    Accounts, AccountsError, Citation, GatewayCensus, HermesProfile, JobKind, JobRun, JobState, JobUpdate, NewApiKey, NewOrder, NewUser,
    Payment, PaymentState, Plan, ProfileStatus, RefundNotice, ScheduledJob, SettleOutcome, Settlement, UsageDay, UsageRecord, User,
    UserStatus,
};
use twilight_core::token::hash_hex;
use uuid::Uuid;

/// Instantiates each contract test for both backends. Tests under `raw` also get the database
/// URL, to check what the schema itself rejects.
macro_rules! contract {
    (store: [$($name:ident),+ $(,)?], raw: [$($raw:ident),+ $(,)?] $(,)?) => {
        $(contract!(@both $name, |store, _url| $name(store));)+
        $(contract!(@both $raw, |store, url| $raw(store, url));)+
    };
    (@both $name:ident, |$store:ident, $url:ident| $call:expr) => {
        pastey::paste! {
            #[tokio::test]
            async fn [<sqlite_ $name>]() {
                let (accounts, dir) = fresh_sqlite().await;
                assert_eq!(accounts.backend(), "sqlite");
                // `fresh_sqlite` names its file accounts.db.
                let url = format!("sqlite:{}", dir.path().join("accounts.db").display());
                let ($store, $url): (&dyn Accounts, &str) = (&accounts, &url);
                $call.await;
            }

            #[tokio::test]
            async fn [<postgres_ $name>]() {
                let Some(db) = fresh_postgres().await else {
                    eprintln!(
                        "SKIP postgres_{}: Postgres unreachable (set TWILIGHT_TEST_PG_URL)",
                        stringify!($name)
                    );
                    return;
                };
                let accounts = db.accounts().await;
                assert_eq!(accounts.backend(), "postgres");
                let ($store, $url): (&dyn Accounts, &str) = (&accounts, db.url());
                $call.await;
                drop(accounts);
                db.cleanup().await;
            }
        }
    };
}

contract! {
    store: [
        ping,
        migrate_twice_is_a_noop,
        user_round_trip,
        unknown_user_is_none,
        api_key_round_trip,
        duplicate_key_hash_conflicts,
        key_for_unknown_user_is_not_found,
        revoke_user_keys_revokes_only_that_users_live_keys,
        revoke_api_key_once,
        admin_tokens_round_trip_and_revoke,
        record_usage_in_chunks_and_usage_by_day,
        record_usage_rejects_bad_status_without_writing,
        a_usage_row_written_twice_counts_once,
        usage_and_citations_are_pruned_by_when_they_were_served,
        last_used_at_follows_batch_max_and_never_goes_back,
        order_round_trip_and_duplicate_numbers_conflict,
        closed_unpaid_orders_are_pruned_after_their_retention,
        settling_creates_one_user_and_one_job_then_repeats_change_nothing,
        concurrent_settlements_of_one_order_make_one_user,
        renewal_extends_paid_until_from_the_later_of_then_and_now,
        close_only_pending_orders,
        code_url_is_kept_for_pending_orders_only,
        refund_ends_service_once,
        partial_refunds_end_nothing_until_the_whole_payment_is_refunded,
        renewal_enqueues_only_what_the_bot_needs,
        expiry_and_retirement_happen_once,
        jobs_are_leased_to_one_worker_at_a_time,
        a_users_jobs_never_run_at_once,
        new_users_go_to_the_live_host_with_the_most_room,
        concurrent_claims_never_share_a_job,
        onboarding_mailbox_and_profiles_round_trip,
        tallies_count_jobs_and_orders_by_state,
        a_scheduled_job_is_held_by_one_process_at_a_time,
        concurrent_leases_of_a_scheduled_job_go_to_one,
    ],
    raw: [
        check_constraints_reject_junk,
        rejected_settlements_write_nothing,
        rejected_refunds_write_nothing,
        citations_written_before_they_moved_into_usage_rows_are_still_traced,
    ],
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

async fn new_user(store: &dyn Accounts) -> User {
    let new = NewUser { email: None, display_name: None, plan: Plan::Pro, paid_until: None };
    store.create_user(new).await.unwrap()
}

fn new_key(user_id: Uuid, raw: &str) -> NewApiKey {
    NewApiKey { key_hash: hash_hex(raw), user_id, scope: "data:read".into(), rate_limit_per_min: 60 }
}

fn usage(user_id: Uuid, key_hash: &str, endpoint: &str, occurred_at: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        row_id: Uuid::new_v4(),
        user_id,
        key_hash: key_hash.into(),
        endpoint: endpoint.into(),
        occurred_at,
        upstream_cost_pts: 1,
        status: 200,
        citation: None,
    }
}

async fn ping(store: &dyn Accounts) {
    store.ping().await.unwrap();
}

async fn migrate_twice_is_a_noop(store: &dyn Accounts) {
    let user = new_user(store).await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.user(user.user_id).await.unwrap(), Some(user));
    assert_eq!(store.auth_epoch().await.unwrap(), 0);
}

async fn user_round_trip(store: &dyn Accounts) {
    let paid_until = at(2026, 6, 1, 8, 30, 15) + TimeDelta::nanoseconds(987_654_321);
    let before = Utc::now();
    let created = store
        .create_user(NewUser {
            email: Some("li@example.com".into()),
            display_name: Some("李雷".into()),
            plan: Plan::Lite,
            paid_until: Some(paid_until),
        })
        .await
        .unwrap();
    assert_eq!(created.status, UserStatus::Active);
    assert!(created.created_at >= before - TimeDelta::seconds(1));
    assert!(created.created_at <= Utc::now());

    let got = store.user(created.user_id).await.unwrap().expect("user just created");
    assert_eq!(got.user_id, created.user_id);
    assert_eq!(got.email.as_deref(), Some("li@example.com"));
    assert_eq!(got.display_name.as_deref(), Some("李雷"));
    assert_eq!(got.weixin_openid, None);
    assert_eq!(got.plan, Plan::Lite);
    assert_eq!(got.status, UserStatus::Active);
    assert_eq!(got.created_at.timestamp(), created.created_at.timestamp());
    assert_eq!(got.paid_until.map(|t| t.timestamp()), Some(paid_until.timestamp()));
}

async fn unknown_user_is_none(store: &dyn Accounts) {
    new_user(store).await;
    assert_eq!(store.user(Uuid::new_v4()).await.unwrap(), None);
}

async fn api_key_round_trip(store: &dyn Accounts) {
    let user = new_user(store).await;
    let key = store.insert_api_key(NewApiKey { rate_limit_per_min: 600, ..new_key(user.user_id, "tw_a") }).await.unwrap();
    let got = store.api_key(&hash_hex("tw_a")).await.unwrap().expect("key just inserted");
    assert_eq!(got, key);
    assert_eq!(got.rate_limit_per_min, 600);
    assert_eq!(got.scope, "data:read");
    assert!(!got.is_revoked());
    assert_eq!(got.last_used_at, None);
    assert_eq!(store.api_key(&hash_hex("tw_other")).await.unwrap(), None);
}

async fn duplicate_key_hash_conflicts(store: &dyn Accounts) {
    let user = new_user(store).await;
    store.insert_api_key(new_key(user.user_id, "tw_dup")).await.unwrap();
    let err = store.insert_api_key(new_key(user.user_id, "tw_dup")).await.unwrap_err();
    assert!(matches!(err, AccountsError::Conflict(_)), "{err:?}");
}

async fn key_for_unknown_user_is_not_found(store: &dyn Accounts) {
    let err = store.insert_api_key(new_key(Uuid::new_v4(), "tw_orphan")).await.unwrap_err();
    assert!(matches!(err, AccountsError::NotFound("user")), "{err:?}");
    assert_eq!(store.api_key(&hash_hex("tw_orphan")).await.unwrap(), None);
}

async fn revoke_user_keys_revokes_only_that_users_live_keys(store: &dyn Accounts) {
    let (alice, bob) = (new_user(store).await, new_user(store).await);
    for raw in ["a1", "a2", "a3"] {
        store.insert_api_key(new_key(alice.user_id, raw)).await.unwrap();
    }
    store.insert_api_key(new_key(bob.user_id, "b1")).await.unwrap();
    assert!(store.revoke_api_key(&hash_hex("a3")).await.unwrap());
    let a3_revoked_at = store.api_key(&hash_hex("a3")).await.unwrap().unwrap().revoked_at;
    let epoch = store.auth_epoch().await.unwrap();

    assert_eq!(store.revoke_user_keys(alice.user_id).await.unwrap(), 2);
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
    for raw in ["a1", "a2"] {
        assert!(store.api_key(&hash_hex(raw)).await.unwrap().unwrap().is_revoked(), "{raw}");
    }
    let a3 = store.api_key(&hash_hex("a3")).await.unwrap().unwrap();
    assert_eq!(a3.revoked_at, a3_revoked_at, "an earlier revocation keeps its time");
    assert!(!store.api_key(&hash_hex("b1")).await.unwrap().unwrap().is_revoked());

    assert_eq!(store.revoke_user_keys(alice.user_id).await.unwrap(), 0);
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
    let err = store.revoke_user_keys(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, AccountsError::NotFound("user")), "{err:?}");
}

async fn revoke_api_key_once(store: &dyn Accounts) {
    let user = new_user(store).await;
    store.insert_api_key(new_key(user.user_id, "tw_r")).await.unwrap();
    store.insert_api_key(new_key(user.user_id, "tw_keep")).await.unwrap();
    assert_eq!(store.auth_epoch().await.unwrap(), 0);

    assert!(store.revoke_api_key(&hash_hex("tw_r")).await.unwrap());
    assert_eq!(store.auth_epoch().await.unwrap(), 1);
    assert!(!store.revoke_api_key(&hash_hex("tw_r")).await.unwrap());
    assert!(!store.revoke_api_key(&hash_hex("tw_unknown")).await.unwrap());
    assert_eq!(store.auth_epoch().await.unwrap(), 1);

    assert!(store.api_key(&hash_hex("tw_r")).await.unwrap().unwrap().is_revoked());
    assert!(!store.api_key(&hash_hex("tw_keep")).await.unwrap().unwrap().is_revoked());
}

async fn admin_tokens_round_trip_and_revoke(store: &dyn Accounts) {
    let hash = hash_hex("adm_1");
    let token = store.insert_admin_token(&hash, "ops laptop").await.unwrap();
    assert_eq!(token.label, "ops laptop");
    assert_eq!(store.admin_token(&hash).await.unwrap(), Some(token));
    assert_eq!(store.admin_token(&hash_hex("adm_2")).await.unwrap(), None);
    let err = store.insert_admin_token(&hash, "again").await.unwrap_err();
    assert!(matches!(err, AccountsError::Conflict(_)), "{err:?}");

    let epoch = store.auth_epoch().await.unwrap();
    assert!(store.revoke_admin_token(&hash).await.unwrap());
    assert!(store.admin_token(&hash).await.unwrap().unwrap().is_revoked());
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
    assert!(!store.revoke_admin_token(&hash).await.unwrap());
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
}

async fn record_usage_in_chunks_and_usage_by_day(store: &dyn Accounts) {
    let (alice, bob) = (new_user(store).await, new_user(store).await);
    // 1,200 rows from 23:50 UTC on 29 April over 20 minutes: both days, both endpoints, and more
    // rows than one INSERT statement carries.
    let start = at(2026, 4, 29, 23, 50, 0) + TimeDelta::microseconds(250);
    let records: Vec<UsageRecord> = (0..1200)
        .map(|i| UsageRecord {
            upstream_cost_pts: i % 7,
            ..usage(alice.user_id, "k", if i % 3 == 0 { "/search" } else { "/price" }, start + TimeDelta::seconds(i.into()))
        })
        .collect();
    store.record_usage(&records).await.unwrap();
    store.record_usage(&[usage(bob.user_id, "k", "/price", start)]).await.unwrap();

    assert_eq!(store.usage_count(alice.user_id).await.unwrap(), 1200);
    assert_eq!(store.usage_count(bob.user_id).await.unwrap(), 1);

    let mut expected = BTreeMap::<(String, String), (i64, i64)>::new();
    for r in &records {
        let group = expected.entry((r.occurred_at.format("%Y-%m-%d").to_string(), r.endpoint.clone())).or_default();
        group.0 += 1;
        group.1 += i64::from(r.upstream_cost_pts);
    }
    let mut expected: Vec<UsageDay> = expected
        .into_iter()
        .map(|((day, endpoint), (requests, upstream_cost_pts))| UsageDay { day, endpoint, requests, upstream_cost_pts })
        .collect();
    expected.sort_by(|a, b| b.day.cmp(&a.day).then(a.endpoint.cmp(&b.endpoint)));
    assert_eq!(expected.len(), 4);
    assert_eq!(expected[0].day, "2026-04-30");
    assert_eq!(expected[0].requests + expected[1].requests, 600);

    let all = store.usage_by_day(alice.user_id, at(2026, 4, 1, 0, 0, 0)).await.unwrap();
    assert_eq!(all, expected);
    let second_day = store.usage_by_day(alice.user_id, at(2026, 4, 30, 0, 0, 0)).await.unwrap();
    assert_eq!(second_day, expected[..2]);
}

async fn a_usage_row_written_twice_counts_once(store: &dyn Accounts) {
    let user = new_user(store).await;
    let now = Utc::now();
    let first = [usage(user.user_id, "k", "/price", now), usage(user.user_id, "k", "/price", now)];
    store.record_usage(&first).await.unwrap();
    // A replay of the same rows with a new one: only the new one is added.
    let replay = [first[0].clone(), first[1].clone(), usage(user.user_id, "k", "/fundamentals", now)];
    store.record_usage(&replay).await.unwrap();
    assert_eq!(store.usage_count(user.user_id).await.unwrap(), 3);
}

async fn record_usage_rejects_bad_status_without_writing(store: &dyn Accounts) {
    let user = new_user(store).await;
    let now = Utc::now();
    let batch = [usage(user.user_id, "k", "/price", now), UsageRecord { status: 40_000, ..usage(user.user_id, "k", "/price", now) }];
    assert!(store.record_usage(&batch).await.is_err());
    assert_eq!(store.usage_count(user.user_id).await.unwrap(), 0);
    store.record_usage(&[]).await.unwrap();
}

async fn last_used_at_follows_batch_max_and_never_goes_back(store: &dyn Accounts) {
    let user = new_user(store).await;
    let (k1, k2) = (hash_hex("k1"), hash_hex("k2"));
    store.insert_api_key(new_key(user.user_id, "k1")).await.unwrap();
    store.insert_api_key(new_key(user.user_id, "k2")).await.unwrap();
    let t0 = at(2026, 4, 30, 10, 0, 0) + TimeDelta::microseconds(123_456);
    let secs = |s: i64| t0 + TimeDelta::seconds(s);
    let last_used = |hash: String| async move { store.api_key(&hash).await.unwrap().unwrap().last_used_at };

    let batch = [10, 30, 20].map(|s| usage(user.user_id, &k1, "/price", secs(s)));
    store.record_usage(&batch).await.unwrap();
    store.record_usage(&[usage(user.user_id, &k2, "/price", secs(5))]).await.unwrap();
    assert_eq!(last_used(k1.clone()).await, Some(secs(30)));
    assert_eq!(last_used(k2.clone()).await, Some(secs(5)));

    let older_and_newer = [usage(user.user_id, &k1, "/price", secs(15)), usage(user.user_id, &k2, "/price", secs(50))];
    store.record_usage(&older_and_newer).await.unwrap();
    assert_eq!(last_used(k1).await, Some(secs(30)), "an older batch must not move it back");
    assert_eq!(last_used(k2).await, Some(secs(50)));
}

/// Runs SQL around the trait, as a buggy tool or a hand-typed query would.
async fn raw_execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    if url.starts_with("sqlite:") {
        SqliteConnection::connect(url).await?.execute(sql).await?;
    } else {
        PgConnection::connect(url).await?.execute(sql).await?;
    }
    Ok(())
}

async fn check_constraints_reject_junk(store: &dyn Accounts, url: &str) {
    let user = new_user(store).await;
    store.insert_api_key(new_key(user.user_id, "tw_c")).await.unwrap();
    for sql in [
        "UPDATE users SET plan = 'gold'",
        "UPDATE users SET status = 'deleted'",
        "UPDATE api_keys SET rate_limit_per_min = 0",
        "UPDATE api_keys SET key_hash = 'not-a-sha256-hex'",
        "UPDATE users SET renewal_code = 'not-32-hex'",
    ] {
        let err = raw_execute(url, sql).await.expect_err(sql);
        let kind = err.as_database_error().map(|db| db.kind());
        assert!(matches!(kind, Some(ErrorKind::CheckViolation)), "{sql}: {err}");
    }
    raw_execute(url, "UPDATE users SET status = 'expired'").await.unwrap();
    raw_execute(url, "UPDATE users SET plan = 'alpha'").await.unwrap();
    assert_eq!(store.user(user.user_id).await.unwrap().unwrap().plan, Plan::Alpha);
}

async fn citations_written_before_they_moved_into_usage_rows_are_still_traced(store: &dyn Accounts, url: &str) {
    let user = new_user(store).await;
    // Served at 2026-04-30T11:00:00Z, cited in the citations table as migration 0007 left it.
    let id = "tc_019dde0bab8070008000000000000001";
    raw_execute(
        url,
        &format!(
            "INSERT INTO citations (tool_call_id, user_id, endpoint, served_at, request, cited) \
             SELECT '{id}', user_id, '/price', '2026-04-30T11:00:00+00:00', '{{\"code\":\"600519.SH\"}}', '[]' FROM users"
        ),
    )
    .await
    .unwrap();
    let traced = store.citation(id).await.unwrap().expect("an earlier citation is found");
    assert_eq!((traced.user_id, traced.endpoint.as_str(), traced.served_at), (user.user_id, "/price", at(2026, 4, 30, 11, 0, 0)));
    assert_eq!(traced.request, serde_json::json!({"code": "600519.SH"}));
    assert_eq!(store.prune_usage(at(2026, 5, 1, 0, 0, 0)).await.unwrap().citations, 1);
    assert!(store.citation(id).await.unwrap().is_none());
}

// ---- orders, payments and provisioning jobs ----

async fn tallies_count_jobs_and_orders_by_state(store: &dyn Accounts) {
    assert_eq!(store.tallies().await.unwrap(), twilight_accounts::Tallies::default());
    for no in ["TD-tally-1", "TD-tally-2", "TD-tally-3"] {
        store.create_order(order(no, None)).await.unwrap();
    }
    assert!(store.close_payment("TD-tally-3").await.unwrap());
    let user = new_user(store).await;
    store.enqueue_provisioning(user.user_id, &hash_hex("tally-onboarding")).await.unwrap();
    let tallies = store.tallies().await.unwrap();
    assert_eq!(tallies.payments, [(PaymentState::Closed, 1), (PaymentState::Pending, 2)]);
    assert_eq!(tallies.jobs, [(JobState::Created, 1)]);
}

fn order(no: &str, renews: Option<Uuid>) -> NewOrder {
    NewOrder {
        out_trade_no: no.into(),
        plan: Plan::Pro,
        amount_cents: 19_800,
        currency: "CNY".into(),
        processor: "wechatpay".into(),
        expires_at: Utc::now() + TimeDelta::minutes(30),
        renews,
        onboarding_token_hash: hash_hex(&format!("onboarding-{no}")),
    }
}

fn settlement(no: &str, transaction_id: &str, paid_at: DateTime<Utc>) -> Settlement {
    Settlement { out_trade_no: no.into(), processor_ref: transaction_id.into(), amount_cents: 19_800, currency: "CNY".into(), paid_at }
}

async fn order_round_trip_and_duplicate_numbers_conflict(store: &dyn Accounts) {
    let created = store.create_order(order("TD20261125A", None)).await.unwrap();
    assert_eq!(created.status, PaymentState::Pending);
    assert_eq!((created.amount_cents, created.currency.as_str()), (19_800, "CNY"));
    assert_eq!(store.payment(created.payment_id).await.unwrap().as_ref(), Some(&created));
    assert_eq!(store.payment_by_out_trade_no("TD20261125A").await.unwrap().as_ref(), Some(&created));
    let token = hash_hex("onboarding-TD20261125A");
    assert_eq!(store.payment_by_onboarding_token(&token).await.unwrap().as_ref(), Some(&created));
    assert_eq!(store.payment_by_out_trade_no("TD-none").await.unwrap(), None);

    let err = store.create_order(order("TD20261125A", None)).await.unwrap_err();
    assert!(matches!(err, AccountsError::Conflict(_)), "{err:?}");
    let err = store.create_order(order("TD20261125B", Some(Uuid::new_v4()))).await.unwrap_err();
    assert!(matches!(err, AccountsError::NotFound("user")), "{err:?}");

    let later = store.create_order(order("TD20261125C", None)).await.unwrap();
    let pending: Vec<Uuid> = store.pending_payments(None, 10).await.unwrap().iter().map(|p| p.payment_id).collect();
    assert_eq!(pending, [created.payment_id, later.payment_id]);
    let first_page = store.pending_payments(None, 1).await.unwrap();
    assert_eq!(first_page.len(), 1);
    let next_page = store.pending_payments(Some((first_page[0].created_at, first_page[0].payment_id)), 10).await.unwrap();
    assert_eq!(next_page.iter().map(|p| p.payment_id).collect::<Vec<_>>(), [later.payment_id]);
    assert!(store.pending_payments(Some((later.created_at, later.payment_id)), 10).await.unwrap().is_empty());
}

async fn closed_unpaid_orders_are_pruned_after_their_retention(store: &dyn Accounts) {
    let closed = store.create_order(order("TD-prune-closed", None)).await.unwrap();
    let open = store.create_order(order("TD-prune-open", None)).await.unwrap();
    let paid = store.create_order(order("TD-prune-paid", None)).await.unwrap();
    assert!(store.close_payment("TD-prune-closed").await.unwrap());
    store.settle_payment(&settlement("TD-prune-paid", "4200000777", Utc::now())).await.unwrap();
    // Not yet past the retention: nothing goes.
    assert_eq!(store.prune_closed_payments(closed.created_at).await.unwrap(), 0);
    assert_eq!(store.prune_closed_payments(Utc::now() + TimeDelta::seconds(1)).await.unwrap(), 1);
    assert_eq!(store.payment(closed.payment_id).await.unwrap(), None);
    assert!(store.payment(open.payment_id).await.unwrap().is_some());
    assert!(store.payment(paid.payment_id).await.unwrap().is_some());
}

async fn settling_creates_one_user_and_one_job_then_repeats_change_nothing(store: &dyn Accounts) {
    let placed = store.create_order(order("TD-first-1", None)).await.unwrap();
    let paid_at = at(2026, 1, 31, 10, 0, 0);
    let settled = store.settle_payment(&settlement("TD-first-1", "4200000001", paid_at)).await.unwrap();
    assert_eq!(settled.outcome, SettleOutcome::NewUser);
    assert_eq!(settled.payment.status, PaymentState::Paid);
    assert_eq!(settled.payment.paid_at, Some(paid_at));
    assert_eq!(settled.payment.processor_ref.as_deref(), Some("4200000001"));
    assert_eq!(settled.payment.user_id, Some(settled.user.user_id));
    assert_eq!(settled.user.plan, Plan::Pro);
    assert_eq!(settled.user.status, UserStatus::Active);
    // One calendar month, clamped to the end of a shorter month.
    assert_eq!(settled.user.paid_until, Some(at(2026, 2, 28, 10, 0, 0)));
    let job = settled.job.clone().expect("a provisioning job");
    assert_eq!((job.kind, job.state, job.user_id), (JobKind::Provision, JobState::Created, settled.user.user_id));
    assert_eq!(job.payment_id, Some(placed.payment_id));
    assert_eq!(store.user(settled.user.user_id).await.unwrap().as_ref(), Some(&settled.user));
    assert_eq!(store.payment(placed.payment_id).await.unwrap().as_ref(), Some(&settled.payment));
    assert_eq!(store.jobs_for_user(settled.user.user_id).await.unwrap(), std::slice::from_ref(&job));
    assert!(store.pending_payments(None, 10).await.unwrap().is_empty());

    let again = store.settle_payment(&settlement("TD-first-1", "4200000001", paid_at)).await.unwrap();
    assert_eq!(again.outcome, SettleOutcome::AlreadyPaid);
    assert_eq!((again.payment, again.user, again.job), (settled.payment, settled.user.clone(), Some(job.clone())));
    assert_eq!(store.jobs_for_user(settled.user.user_id).await.unwrap(), [job]);
}

async fn concurrent_settlements_of_one_order_make_one_user(store: &dyn Accounts) {
    store.create_order(order("TD-race-1", None)).await.unwrap();
    let paid_at = at(2026, 3, 1, 9, 0, 0);
    let paid = settlement("TD-race-1", "4200000002", paid_at);
    let results = futures::future::join_all((0..24).map(|_| store.settle_payment(&paid))).await;
    let outcomes: Vec<SettleOutcome> = results.iter().map(|r| r.as_ref().expect("every delivery succeeds").outcome).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == SettleOutcome::NewUser).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == SettleOutcome::AlreadyPaid).count(), 23);
    let users: std::collections::BTreeSet<Uuid> = results.iter().map(|r| r.as_ref().unwrap().user.user_id).collect();
    assert_eq!(users.len(), 1);
    let user_id = *users.first().unwrap();
    assert_eq!(store.jobs_for_user(user_id).await.unwrap().len(), 1);
}

async fn renewal_extends_paid_until_from_the_later_of_then_and_now(store: &dyn Accounts) {
    store.create_order(order("TD-renew-0", None)).await.unwrap();
    let first = store.settle_payment(&settlement("TD-renew-0", "4200000010", at(2026, 4, 10, 0, 0, 0))).await.unwrap();
    let user_id = first.user.user_id;
    assert_eq!(first.user.paid_until, Some(at(2026, 5, 10, 0, 0, 0)));

    // Renewed early: the new month starts when the paid one ends.
    store.create_order(order("TD-renew-1", Some(user_id))).await.unwrap();
    let early = store.settle_payment(&settlement("TD-renew-1", "4200000011", at(2026, 5, 1, 0, 0, 0))).await.unwrap();
    assert_eq!(early.outcome, SettleOutcome::Renewed);
    assert_eq!(early.user.user_id, user_id);
    assert_eq!(early.user.paid_until, Some(at(2026, 6, 10, 0, 0, 0)));

    // Renewed after a lapse: the new month starts at payment.
    store.create_order(order("TD-renew-2", Some(user_id))).await.unwrap();
    let late = store.settle_payment(&settlement("TD-renew-2", "4200000012", at(2026, 8, 20, 0, 0, 0))).await.unwrap();
    assert_eq!(late.user.paid_until, Some(at(2026, 9, 20, 0, 0, 0)));
    assert_eq!(store.user(user_id).await.unwrap().unwrap().paid_until, Some(at(2026, 9, 20, 0, 0, 0)));
    // The bot is still being set up by the first payment's job: renewals add none.
    assert_eq!((early.job, late.job), (None, None));
    assert_eq!(store.jobs_for_user(user_id).await.unwrap().len(), 1);
}

async fn code_url_is_kept_for_pending_orders_only(store: &dyn Accounts) {
    store.create_order(order("TD-qr-1", None)).await.unwrap();
    assert_eq!(store.payment_by_out_trade_no("TD-qr-1").await.unwrap().unwrap().code_url, None);
    store.record_code_url("TD-qr-1", "weixin://wxpay/bizpayurl?pr=abc").await.unwrap();
    let pending = store.payment_by_out_trade_no("TD-qr-1").await.unwrap().unwrap();
    assert_eq!(pending.code_url.as_deref(), Some("weixin://wxpay/bizpayurl?pr=abc"));
    assert!(store.close_payment("TD-qr-1").await.unwrap());
    let err = store.record_code_url("TD-qr-1", "weixin://wxpay/bizpayurl?pr=def").await.unwrap_err();
    assert!(matches!(err, AccountsError::Rejected(_)), "{err:?}");
    assert!(store.record_code_url("TD-qr-none", "weixin://x").await.is_err());
    let closed = store.payment_by_out_trade_no("TD-qr-1").await.unwrap().unwrap();
    assert_eq!(closed.code_url.as_deref(), Some("weixin://wxpay/bizpayurl?pr=abc"));
}

async fn close_only_pending_orders(store: &dyn Accounts) {
    store.create_order(order("TD-close-1", None)).await.unwrap();
    assert!(store.close_payment("TD-close-1").await.unwrap());
    assert!(!store.close_payment("TD-close-1").await.unwrap());
    assert!(!store.close_payment("TD-close-none").await.unwrap());
    let closed = store.payment_by_out_trade_no("TD-close-1").await.unwrap().unwrap();
    assert_eq!(closed.status, PaymentState::Closed);
    assert!(store.pending_payments(None, 10).await.unwrap().is_empty());
    // Money taken for a closed order still buys the service.
    let late = store.settle_payment(&settlement("TD-close-1", "4200000020", Utc::now())).await.unwrap();
    assert_eq!(late.outcome, SettleOutcome::NewUser);
    assert!(!store.close_payment("TD-close-1").await.unwrap());
}

async fn refund_ends_service_once(store: &dyn Accounts) {
    store.create_order(order("TD-refund-1", None)).await.unwrap();
    let settled = store.settle_payment(&settlement("TD-refund-1", "4200000030", Utc::now())).await.unwrap();
    let user_id = settled.user.user_id;
    store.insert_api_key(new_key(user_id, "refund-key")).await.unwrap();
    let epoch = store.auth_epoch().await.unwrap();

    let refunded_at = at(2026, 11, 2, 3, 4, 5);
    let refund = store.refund_payment(&refund_of("TD-refund-1", "RTD-refund-1", 19_800, refunded_at)).await.unwrap();
    assert!(refund.newly_recorded);
    assert_eq!(refund.refunded_cents, 19_800);
    assert_eq!(refund.payment.status, PaymentState::Refunded);
    assert_eq!(refund.payment.refunded_at, Some(refunded_at));
    let deprovision = refund.job.clone().expect("a deprovisioning job");
    assert_eq!((deprovision.kind, deprovision.user_id), (JobKind::Deprovision, user_id));
    assert_eq!(store.user(user_id).await.unwrap().unwrap().status, UserStatus::Refunded);
    assert!(store.api_key(&hash_hex("refund-key")).await.unwrap().unwrap().is_revoked());
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
    // The provisioning job that had not finished is cancelled, so it plants nothing afterwards.
    let provision = store.job(settled.job.unwrap().job_id).await.unwrap().unwrap();
    assert_eq!(provision.state, JobState::Cancelled);

    let again = store.refund_payment(&refund_of("TD-refund-1", "RTD-refund-1", 19_800, Utc::now())).await.unwrap();
    assert!(!again.newly_recorded);
    assert_eq!((again.payment, again.job), (refund.payment, refund.job));
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
    assert_eq!(store.jobs_for_user(user_id).await.unwrap().len(), 2);
    // A refunded order cannot be paid again by a replayed notification of another transaction.
    let err = store.settle_payment(&settlement("TD-refund-1", "4200000031", Utc::now())).await.unwrap_err();
    assert!(matches!(err, AccountsError::Rejected(_)), "{err:?}");
}

fn refund_of(out_trade_no: &str, out_refund_no: &str, amount_cents: i64, refunded_at: DateTime<Utc>) -> RefundNotice {
    RefundNotice { out_trade_no: out_trade_no.into(), out_refund_no: out_refund_no.into(), amount_cents, refunded_at }
}

async fn partial_refunds_end_nothing_until_the_whole_payment_is_refunded(store: &dyn Accounts) {
    store.create_order(order("TD-part-1", None)).await.unwrap();
    let settled = store.settle_payment(&settlement("TD-part-1", "4200000032", Utc::now())).await.unwrap();
    let user_id = settled.user.user_id;
    store.insert_api_key(new_key(user_id, "part-key")).await.unwrap();
    let epoch = store.auth_epoch().await.unwrap();

    let part = store.refund_payment(&refund_of("TD-part-1", "R1", 5_000, Utc::now())).await.unwrap();
    assert!(part.newly_recorded);
    assert_eq!((part.refunded_cents, part.payment.status, part.job), (5_000, PaymentState::Paid, None));
    // The same refund notified again counts once.
    let repeat = store.refund_payment(&refund_of("TD-part-1", "R1", 5_000, Utc::now())).await.unwrap();
    assert_eq!((repeat.newly_recorded, repeat.refunded_cents), (false, 5_000));
    assert_eq!(store.user(user_id).await.unwrap().unwrap().status, UserStatus::Active);
    assert!(!store.api_key(&hash_hex("part-key")).await.unwrap().unwrap().is_revoked());
    assert_eq!(store.auth_epoch().await.unwrap(), epoch);
    assert_eq!(store.jobs_for_user(user_id).await.unwrap().len(), 1);

    // The rest refunded: now the service ends.
    let rest = store.refund_payment(&refund_of("TD-part-1", "R2", 14_800, Utc::now())).await.unwrap();
    assert_eq!((rest.refunded_cents, rest.payment.status), (19_800, PaymentState::Refunded));
    assert_eq!(rest.job.map(|job| job.kind), Some(JobKind::Deprovision));
    assert_eq!(store.user(user_id).await.unwrap().unwrap().status, UserStatus::Refunded);
    assert!(store.api_key(&hash_hex("part-key")).await.unwrap().unwrap().is_revoked());
}

/// Marks the user's provision job finished and their profile `status`, as a provisioner would.
async fn provisioned(store: &dyn Accounts, job_id: Uuid, status: ProfileStatus) -> Uuid {
    let soon = Utc::now() + TimeDelta::seconds(1);
    let held = store.claim_job("w", "host-a", soon, soon + TimeDelta::seconds(5)).await.unwrap().expect("the job is due");
    assert_eq!(held.job_id, job_id);
    assert!(store.update_job(job_id, "w", &progress(JobState::Active, 0, soon), None).await.unwrap());
    store.upsert_profile(&profile_row(held.user_id, status)).await.unwrap();
    held.user_id
}

fn profile_row(user_id: Uuid, status: ProfileStatus) -> HermesProfile {
    HermesProfile {
        profile_name: format!("user-{}", user_id.simple()),
        user_id,
        host: "test-host".into(),
        weixin_bot_id: Some("bot@im.bot".into()),
        status,
        created_at: at(2026, 11, 1, 0, 0, 0),
        welcomed_at: None,
    }
}

async fn renewal_enqueues_only_what_the_bot_needs(store: &dyn Accounts) {
    let user_id = provisioned(store, paid_job(store, "TD-life-0").await, ProfileStatus::Active).await;
    let renew = |no: &'static str| async move {
        store.create_order(order(no, Some(user_id))).await.unwrap();
        store.settle_payment(&settlement(no, &format!("tx-{no}"), Utc::now())).await.unwrap()
    };

    // A running bot: nothing to do, and its key is looked up again (the new paid_until).
    let epoch = store.auth_epoch().await.unwrap();
    let running = renew("TD-life-1").await;
    assert_eq!((running.outcome, running.job), (SettleOutcome::Renewed, None));
    assert!(store.auth_epoch().await.unwrap() > epoch);
    assert_eq!(store.jobs_for_user(user_id).await.unwrap().len(), 1);

    // Expired, its gateway stopped: renewing starts that gateway again, no new pairing.
    let lapsed = store.user(user_id).await.unwrap().unwrap().paid_until.unwrap() + TimeDelta::seconds(1);
    assert_eq!(store.expire_users(lapsed).await.unwrap().len(), 1);
    store.upsert_profile(&profile_row(user_id, ProfileStatus::Suspended)).await.unwrap();
    let revived = renew("TD-life-2").await;
    assert_eq!(revived.user.status, UserStatus::Active);
    assert_eq!(revived.job.map(|job| (job.kind, job.state)), Some((JobKind::Resume, JobState::Created)));

    // Deprovisioned after the retention: a new bot is set up.
    store.upsert_profile(&profile_row(user_id, ProfileStatus::Deprovisioned)).await.unwrap();
    let anew = renew("TD-life-3").await;
    assert_eq!(anew.job.map(|job| job.kind), Some(JobKind::Provision));
}

async fn expiry_and_retirement_happen_once(store: &dyn Accounts) {
    let paying = |until: Option<DateTime<Utc>>| async move {
        store.create_user(NewUser { email: None, display_name: None, plan: Plan::Pro, paid_until: until }).await.unwrap()
    };
    let lapsed = paying(Some(at(2026, 10, 1, 0, 0, 0))).await;
    let current = paying(Some(at(2026, 12, 1, 0, 0, 0))).await;
    let unmetered = paying(None).await;
    let epoch = store.auth_epoch().await.unwrap();

    let cutoff = at(2026, 11, 1, 0, 0, 0);
    let expired = store.expire_users(cutoff).await.unwrap();
    assert_eq!(expired.iter().map(|u| u.user_id).collect::<Vec<_>>(), [lapsed.user_id]);
    assert_eq!(expired[0].status, UserStatus::Expired);
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);
    let jobs = store.jobs_for_user(lapsed.user_id).await.unwrap();
    assert_eq!(jobs.iter().map(|j| (j.kind, j.state)).collect::<Vec<_>>(), [(JobKind::Suspend, JobState::Created)]);
    for user in [&current, &unmetered] {
        assert_eq!(store.user(user.user_id).await.unwrap().unwrap().status, UserStatus::Active);
        assert!(store.jobs_for_user(user.user_id).await.unwrap().is_empty());
    }
    // A second pass finds nobody new.
    assert!(store.expire_users(cutoff).await.unwrap().is_empty());
    assert_eq!(store.auth_epoch().await.unwrap(), epoch + 1);

    // Retirement: only past the retention, only with a profile left, once.
    store.upsert_profile(&profile_row(lapsed.user_id, ProfileStatus::Suspended)).await.unwrap();
    assert!(store.retire_expired(at(2026, 9, 1, 0, 0, 0)).await.unwrap().is_empty());
    let retired = store.retire_expired(cutoff).await.unwrap();
    assert_eq!(retired.iter().map(|j| (j.user_id, j.kind)).collect::<Vec<_>>(), [(lapsed.user_id, JobKind::Deprovision)]);
    assert!(store.retire_expired(cutoff).await.unwrap().is_empty(), "one open deprovisioning is enough");
    store.upsert_profile(&profile_row(lapsed.user_id, ProfileStatus::Deprovisioned)).await.unwrap();
    assert!(store.retire_expired(cutoff).await.unwrap().is_empty());
}

async fn rejected_settlements_write_nothing(store: &dyn Accounts, url: &str) {
    let placed: Payment = store.create_order(order("TD-reject-1", None)).await.unwrap();
    store.create_order(order("TD-reject-2", None)).await.unwrap();
    store.settle_payment(&settlement("TD-reject-2", "4200000040", Utc::now())).await.unwrap();
    let before = dump(url).await;

    let unknown = store.settle_payment(&settlement("TD-nope", "4200000041", Utc::now())).await.unwrap_err();
    assert!(matches!(unknown, AccountsError::NotFound("order")), "{unknown:?}");
    let mut cheap = settlement("TD-reject-1", "4200000042", Utc::now());
    cheap.amount_cents = 1;
    let err = store.settle_payment(&cheap).await.unwrap_err();
    assert!(matches!(&err, AccountsError::Rejected(m) if m.contains("charges 19800 CNY")), "{err:?}");
    let mut dollars = settlement("TD-reject-1", "4200000043", Utc::now());
    dollars.currency = "USD".into();
    assert!(matches!(store.settle_payment(&dollars).await, Err(AccountsError::Rejected(_))));
    // Another order's transaction id cannot be reused.
    let reused = store.settle_payment(&settlement("TD-reject-1", "4200000040", Utc::now())).await.unwrap_err();
    assert!(matches!(reused, AccountsError::Conflict(_)), "{reused:?}");
    // A second, different transaction for a paid order.
    let double = store.settle_payment(&settlement("TD-reject-2", "4200000044", Utc::now())).await.unwrap_err();
    assert!(matches!(double, AccountsError::Rejected(_)), "{double:?}");

    assert_eq!(dump(url).await, before);
    assert_eq!(store.payment(placed.payment_id).await.unwrap().unwrap().status, PaymentState::Pending);
}

async fn rejected_refunds_write_nothing(store: &dyn Accounts, url: &str) {
    store.create_order(order("TD-refund-x", None)).await.unwrap();
    let before = dump(url).await;
    let unpaid = store.refund_payment(&refund_of("TD-refund-x", "R-x", 19_800, Utc::now())).await.unwrap_err();
    assert!(matches!(unpaid, AccountsError::Rejected(_)), "{unpaid:?}");
    let unknown = store.refund_payment(&refund_of("TD-refund-none", "R-none", 19_800, Utc::now())).await.unwrap_err();
    assert!(matches!(unknown, AccountsError::NotFound("order")), "{unknown:?}");
    assert_eq!(dump(url).await, before);

    // More than was paid, or nothing at all.
    store.settle_payment(&settlement("TD-refund-x", "4200000050", Utc::now())).await.unwrap();
    let before = dump(url).await;
    let excess = store.refund_payment(&refund_of("TD-refund-x", "R-excess", 19_801, Utc::now())).await.unwrap_err();
    assert!(matches!(&excess, AccountsError::Rejected(m) if m.contains("19801")), "{excess:?}");
    let zero = store.refund_payment(&refund_of("TD-refund-x", "R-zero", 0, Utc::now())).await.unwrap_err();
    assert!(matches!(zero, AccountsError::Rejected(_)), "{zero:?}");
    assert_eq!(dump(url).await, before);
}

// ---- provisioning jobs ----

/// A paid order, hence a user with one `created` provisioning job; returns the job's id.
async fn paid_job(store: &dyn Accounts, no: &str) -> Uuid {
    store.create_order(order(no, None)).await.unwrap();
    let settled = store.settle_payment(&settlement(no, &format!("tx-{no}"), Utc::now())).await.unwrap();
    settled.job.unwrap().job_id
}

fn progress(state: JobState, attempts: i32, next: DateTime<Utc>) -> JobUpdate {
    JobUpdate { state, attempts, last_error: None, next_attempt_at: next }
}

async fn jobs_are_leased_to_one_worker_at_a_time(store: &dyn Accounts) {
    let job_id = paid_job(store, "TD-job-1").await;
    let now = Utc::now();
    let lease = now + TimeDelta::seconds(30);

    let claimed = store.claim_job("worker-a", "host-a", now, lease).await.unwrap().expect("a due job");
    assert_eq!(claimed.job_id, job_id);
    assert_eq!(claimed.locked_by.as_deref(), Some("worker-a"));
    assert_eq!(store.claim_job("worker-b", "host-a", now, lease).await.unwrap(), None, "leased to a");
    // Only the holder records progress.
    assert!(!store.update_job(job_id, "worker-b", &progress(JobState::ProfileCreated, 0, now), Some(lease)).await.unwrap());
    assert!(store.update_job(job_id, "worker-a", &progress(JobState::ProfileCreated, 0, now), Some(lease)).await.unwrap());
    assert_eq!(store.job(job_id).await.unwrap().unwrap().state, JobState::ProfileCreated);

    // A crashed worker's lease runs out and another takes over where it stopped.
    let later = lease + TimeDelta::seconds(1);
    let taken = store.claim_job("worker-b", "host-a", later, later + TimeDelta::seconds(30)).await.unwrap().unwrap();
    assert_eq!((taken.job_id, taken.state, taken.locked_by.as_deref()), (job_id, JobState::ProfileCreated, Some("worker-b")));
    assert!(!store.update_job(job_id, "worker-a", &progress(JobState::Paired, 0, now), None).await.unwrap());

    // A failed attempt released until later is not due before then.
    let retry_at = later + TimeDelta::seconds(60);
    let mut failed = progress(JobState::ProfileCreated, 1, retry_at);
    failed.last_error = Some("hermes timed out".into());
    assert!(store.update_job(job_id, "worker-b", &failed, None).await.unwrap());
    let stored = store.job(job_id).await.unwrap().unwrap();
    assert_eq!((stored.attempts, stored.last_error.as_deref(), stored.locked_by), (1, Some("hermes timed out"), None));
    assert_eq!(store.claim_job("worker-a", "host-a", later, later + TimeDelta::seconds(30)).await.unwrap(), None);
    assert!(store.claim_job("worker-a", "host-a", retry_at, retry_at + TimeDelta::seconds(30)).await.unwrap().is_some());

    // Finished jobs are never claimed again.
    assert!(store.update_job(job_id, "worker-a", &progress(JobState::Active, 0, retry_at), None).await.unwrap());
    assert!(store.job(job_id).await.unwrap().unwrap().is_finished());
    let far = retry_at + TimeDelta::days(1);
    assert_eq!(store.claim_job("worker-a", "host-a", far, far + TimeDelta::seconds(30)).await.unwrap(), None);
}

async fn new_users_go_to_the_live_host_with_the_most_room(store: &dyn Accounts) {
    // After the jobs made below become due.
    let now = Utc::now() + TimeDelta::seconds(1);
    let lease = now + TimeDelta::seconds(30);
    let host =
        |host: &str, gateway_slots, observed_at| GatewayCensus { host: host.into(), expected: 0, running: 0, gateway_slots, observed_at };
    store.record_gateway_census(&host("big", 3, now)).await.unwrap();
    store.record_gateway_census(&host("small", 2, now)).await.unwrap();
    // The roomiest of all has not been heard from for ten minutes: it is taken for down.
    store.record_gateway_census(&host("silent", 100, now - TimeDelta::minutes(10))).await.unwrap();
    let stored: Vec<_> = store.gateway_census().await.unwrap().into_iter().map(|h| (h.host, h.gateway_slots)).collect();
    assert_eq!(stored, [("big".to_string(), 3), ("silent".into(), 100), ("small".into(), 2)]);

    // Four new users, each claimed by the host with the most free slots (ties by name): big 3 of 3
    // free, then big 2 = small 2, then small 2 > big 1, then big 1 = small 1.
    let mut claimed = Vec::new();
    for (n, (roomiest, other)) in [("big", "small"), ("big", "small"), ("small", "big"), ("big", "small")].into_iter().enumerate() {
        let job_id = paid_job(store, &format!("TD-host-{n}")).await;
        assert_eq!(store.claim_job("w-silent", "silent", now, lease).await.unwrap(), None, "a silent host gets nobody");
        assert_eq!(store.claim_job(&format!("w-{other}"), other, now, lease).await.unwrap(), None, "user {n} is not {other}'s");
        let job = store.claim_job(&format!("w-{roomiest}"), roomiest, now, lease).await.unwrap().expect("the roomiest host's");
        assert_eq!((job.job_id, job.host.as_deref()), (job_id, Some(roomiest)));
        claimed.push(job);
    }

    // A job stays with the host it was first claimed on, room or not.
    let on_small = &claimed[2];
    assert!(store.update_job(on_small.job_id, "w-small", &progress(JobState::ProfileCreated, 0, now), None).await.unwrap());
    assert_eq!(store.claim_job("w-big", "big", now, lease).await.unwrap(), None);
    assert_eq!(store.claim_job("w-small", "small", now, lease).await.unwrap().map(|job| job.job_id), Some(on_small.job_id));

    // So do the jobs of a user whose bot runs on a host (here a full one: big has 0 free).
    let job_id = paid_job(store, "TD-host-bot").await;
    let user_id = store.job(job_id).await.unwrap().unwrap().user_id;
    store.upsert_profile(&HermesProfile { host: "big".into(), ..profile_row(user_id, ProfileStatus::Active) }).await.unwrap();
    assert_eq!(store.claim_job("w-small", "small", now, lease).await.unwrap(), None);
    assert_eq!(store.claim_job("w-big", "big", now, lease).await.unwrap().map(|job| job.job_id), Some(job_id));
}

async fn a_users_jobs_never_run_at_once(store: &dyn Accounts) {
    let job_id = paid_job(store, "TD-serial-1").await;
    let now = Utc::now() + TimeDelta::seconds(1);
    let lease = now + TimeDelta::seconds(30);
    let provision = store.claim_job("worker-a", "host-a", now, lease).await.unwrap().unwrap();
    assert_eq!(provision.job_id, job_id);

    // A refund arrives while worker-a is mid-step: its job is cancelled, but the deprovisioning
    // waits until worker-a lets go, so it cannot run before the step in flight has ended.
    let refund = store.refund_payment(&refund_of("TD-serial-1", "R-serial", 19_800, Utc::now())).await.unwrap();
    let deprovision = refund.job.unwrap();
    assert_eq!(store.claim_job("worker-b", "host-a", now, lease).await.unwrap(), None);
    // worker-a's next write is refused (the job was finished under it); it lets go.
    assert!(!store.update_job(job_id, "worker-a", &progress(JobState::ProfileCreated, 0, now), Some(lease)).await.unwrap());
    assert_eq!(store.job(job_id).await.unwrap().unwrap().state, JobState::Cancelled);
    store.release_job(job_id, "worker-b").await.unwrap();
    assert_eq!(store.claim_job("worker-b", "host-a", now, lease).await.unwrap(), None, "only the holder releases");
    store.release_job(job_id, "worker-a").await.unwrap();
    assert_eq!(store.claim_job("worker-b", "host-a", now, lease).await.unwrap().map(|job| job.job_id), Some(deprovision.job_id));
}

async fn concurrent_claims_never_share_a_job(store: &dyn Accounts) {
    for n in 0..6 {
        paid_job(store, &format!("TD-claim-{n}")).await;
    }
    let now = Utc::now() + TimeDelta::seconds(1);
    let lease = now + TimeDelta::seconds(30);
    let workers: Vec<String> = (0..12).map(|n| format!("worker-{n}")).collect();
    let claims = futures::future::join_all(workers.iter().map(|w| store.claim_job(w, "host-a", now, lease))).await;
    let mut claimed: Vec<Uuid> = claims.into_iter().filter_map(|c| c.unwrap()).map(|job| job.job_id).collect();
    assert_eq!(claimed.len(), 6, "six jobs, twelve workers");
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 6, "a job was claimed twice");
}

async fn onboarding_mailbox_and_profiles_round_trip(store: &dyn Accounts) {
    let job_id = paid_job(store, "TD-onboard-1").await;
    let token_hash = hash_hex("onboarding-TD-onboard-1");
    assert_eq!(store.job_by_onboarding_token(&token_hash).await.unwrap().unwrap().job_id, job_id);
    assert_eq!(store.job_by_onboarding_token(&hash_hex("other")).await.unwrap(), None);

    store.set_pairing(job_id, Some("https://ilink.example/qr/abc"), "wait").await.unwrap();
    store.set_verify_code(job_id, Some("123456")).await.unwrap();
    store.set_bot_name(job_id, "张老师").await.unwrap();
    let job = store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.pairing_qr.as_deref(), Some("https://ilink.example/qr/abc"));
    assert_eq!(job.pairing_status.as_deref(), Some("wait"));
    assert_eq!(job.verify_code.as_deref(), Some("123456"));
    assert_eq!(job.bot_name.as_deref(), Some("张老师"));
    for bad in ["12345", "1234567", "12a456", ""] {
        assert!(matches!(store.set_verify_code(job_id, Some(bad)).await, Err(AccountsError::Rejected(_))), "{bad}");
    }
    store.set_verify_code(job_id, None).await.unwrap();
    store.set_pairing(job_id, None, "confirmed").await.unwrap();
    let job = store.job(job_id).await.unwrap().unwrap();
    assert_eq!((job.verify_code, job.pairing_qr, job.pairing_status.as_deref()), (None, None, Some("confirmed")));
    assert!(matches!(store.set_bot_name(Uuid::new_v4(), "x").await, Err(AccountsError::NotFound("job"))));

    // Waking makes a parked job due now; a finished one stays asleep.
    let later = Utc::now() + TimeDelta::hours(1);
    let parked = JobUpdate { state: JobState::Paired, attempts: 0, last_error: None, next_attempt_at: later };
    let held =
        store.claim_job("w", "host-a", Utc::now() + TimeDelta::seconds(1), Utc::now() + TimeDelta::seconds(5)).await.unwrap().unwrap();
    assert!(store.update_job(held.job_id, "w", &parked, None).await.unwrap());
    assert_eq!(store.claim_job("w", "host-a", Utc::now() + TimeDelta::seconds(1), Utc::now() + TimeDelta::seconds(5)).await.unwrap(), None);
    assert!(store.wake_job(job_id).await.unwrap());
    assert!(store
        .claim_job("w", "host-a", Utc::now() + TimeDelta::seconds(1), Utc::now() + TimeDelta::seconds(5))
        .await
        .unwrap()
        .is_some());
    assert!(!store.wake_job(Uuid::new_v4()).await.unwrap());

    // The admin's manual path: a job with its own onboarding link, for an existing user only.
    let alpha = new_user(store).await;
    let manual = store.enqueue_provisioning(alpha.user_id, &hash_hex("manual-link")).await.unwrap();
    assert_eq!((manual.kind, manual.state, manual.payment_id), (JobKind::Provision, JobState::Created, None));
    assert_eq!(store.job_by_onboarding_token(&hash_hex("manual-link")).await.unwrap().unwrap().job_id, manual.job_id);
    // Asked again while unfinished: the same job, under a new link; the old link is dead.
    let again = store.enqueue_provisioning(alpha.user_id, &hash_hex("manual-link-2")).await.unwrap();
    assert_eq!(again.job_id, manual.job_id);
    assert_eq!(store.job_by_onboarding_token(&hash_hex("manual-link")).await.unwrap(), None);
    assert_eq!(store.jobs_for_user(alpha.user_id).await.unwrap().len(), 1);
    // The paid user's unfinished job is resumed the same way rather than doubled.
    assert_eq!(store.enqueue_provisioning(job.user_id, &hash_hex("paid-link-2")).await.unwrap().job_id, job_id);
    assert!(matches!(store.enqueue_provisioning(Uuid::new_v4(), &hash_hex("x")).await, Err(AccountsError::NotFound("user"))));

    let user_id = job.user_id;
    assert_eq!(store.profile_for_user(user_id).await.unwrap(), None);
    let mut profile = HermesProfile {
        profile_name: format!("user-{}", user_id.simple()),
        user_id,
        host: "localhost".into(),
        weixin_bot_id: None,
        status: ProfileStatus::Provisioning,
        created_at: at(2026, 11, 25, 10, 0, 0),
        welcomed_at: None,
    };
    store.upsert_profile(&profile).await.unwrap();
    profile.weixin_bot_id = Some("abc123@im.bot".into());
    profile.status = ProfileStatus::Active;
    store.upsert_profile(&profile).await.unwrap();
    assert_eq!(store.profile_for_user(user_id).await.unwrap(), Some(profile.clone()));
    // The bot greets its owner once: claimed before sending, released if it could not be sent.
    assert!(store.claim_welcome(user_id, at(2026, 11, 25, 11, 0, 0)).await.unwrap());
    assert!(!store.claim_welcome(user_id, at(2026, 11, 25, 12, 0, 0)).await.unwrap());
    assert_eq!(store.profile_for_user(user_id).await.unwrap().unwrap().welcomed_at, Some(at(2026, 11, 25, 11, 0, 0)));
    store.upsert_profile(&profile).await.unwrap();
    assert!(store.profile_for_user(user_id).await.unwrap().unwrap().welcomed_at.is_some(), "an upsert keeps the greeting");
    store.release_welcome(user_id).await.unwrap();
    assert!(store.claim_welcome(user_id, at(2026, 11, 25, 13, 0, 0)).await.unwrap());
    assert!(!store.claim_welcome(Uuid::new_v4(), Utc::now()).await.unwrap(), "no profile, no greeting");
    // One profile per user.
    profile.profile_name = "user-other".into();
    assert!(matches!(store.upsert_profile(&profile).await, Err(AccountsError::Conflict(_))));
}

async fn a_scheduled_job_is_held_by_one_process_at_a_time(store: &dyn Accounts) {
    let now = at(2026, 4, 28, 10, 0, 0);
    let lease = now + TimeDelta::minutes(30);
    assert!(store.lease_scheduled_job("warehouse_fill", "a", now, lease).await.unwrap());
    assert!(!store.lease_scheduled_job("warehouse_fill", "b", now, lease).await.unwrap(), "a holds it");
    assert!(store.lease_scheduled_job("other_job", "b", now, lease).await.unwrap(), "leases are per job");
    assert!(store.lease_scheduled_job("warehouse_fill", "a", now, lease).await.unwrap(), "its holder may renew");
    // b's run of a job it does not hold writes nothing.
    let failed = JobRun::Failed { at: now, error: "Tushare down".into() };
    assert!(!store.finish_scheduled_job("warehouse_fill", "b", &failed).await.unwrap());
    assert!(store.finish_scheduled_job("warehouse_fill", "a", &failed).await.unwrap());
    let job = |jobs: Vec<ScheduledJob>| jobs.into_iter().find(|j| j.job == "warehouse_fill").unwrap();
    let fill = job(store.scheduled_jobs().await.unwrap());
    assert_eq!((fill.holder, fill.failures, fill.last_failure_at, fill.last_error.as_deref()), (None, 1, Some(now), Some("Tushare down")));
    assert_eq!(fill.last_success_at, None);

    // Released: b takes it, crashes; a takes it over once b's lease ran out, not before.
    assert!(store.lease_scheduled_job("warehouse_fill", "b", now, lease).await.unwrap());
    assert!(!store
        .lease_scheduled_job("warehouse_fill", "a", lease - TimeDelta::seconds(1), lease + TimeDelta::minutes(30))
        .await
        .unwrap());
    let later = lease + TimeDelta::seconds(1);
    assert!(store.lease_scheduled_job("warehouse_fill", "a", later, later + TimeDelta::minutes(30)).await.unwrap());
    assert!(!store.finish_scheduled_job("warehouse_fill", "b", &JobRun::Succeeded { at: later }).await.unwrap(), "b's lease is gone");
    assert!(store.finish_scheduled_job("warehouse_fill", "a", &JobRun::Succeeded { at: later }).await.unwrap());
    let fill = job(store.scheduled_jobs().await.unwrap());
    assert_eq!((fill.failures, fill.last_success_at, fill.holder), (0, Some(later), None), "a success clears the failures");
    assert_eq!(fill.last_error.as_deref(), Some("Tushare down"), "the last error stays for the record");
}

async fn concurrent_leases_of_a_scheduled_job_go_to_one(store: &dyn Accounts) {
    let now = Utc::now();
    let lease = now + TimeDelta::minutes(5);
    let holders: Vec<String> = (0..8).map(|n| format!("scheduler-{n}")).collect();
    let taken = futures::future::join_all(holders.iter().map(|h| store.lease_scheduled_job("warehouse_fill", h, now, lease))).await;
    assert_eq!(taken.into_iter().filter(|t| *t.as_ref().unwrap()).count(), 1, "one of eight schedulers runs the job");
}

async fn usage_and_citations_are_pruned_by_when_they_were_served(store: &dyn Accounts) {
    let user = new_user(store).await;
    let key = store.insert_api_key(new_key(user.user_id, "prune-key")).await.unwrap();
    let cutoff = at(2026, 4, 30, 12, 0, 0);
    // Answers a millisecond either side of the cutoff, cited by `tc_` and a UUIDv7 of that time.
    let answered = |served_at: DateTime<Utc>| {
        let minted = uuid::Builder::from_unix_timestamp_millis(served_at.timestamp_millis() as u64, &[0xab; 10]).into_uuid();
        let id = format!("tc_{}", minted.simple());
        let citation = Citation::new(id.clone(), &serde_json::json!({"code": "600519.SH"}), &serde_json::json!([])).unwrap();
        (id, UsageRecord { citation: Some(citation), ..usage(user.user_id, &key.key_hash, "/price", served_at) })
    };
    let (before, early) = answered(cutoff - TimeDelta::milliseconds(1));
    let (after, late) = answered(cutoff);
    store.record_usage(&[early, late]).await.unwrap();
    assert!(store.citation(&before).await.unwrap().is_some());
    let pruned = store.prune_usage(cutoff).await.unwrap();
    assert_eq!((pruned.usage_rows, pruned.citations), (1, 1));
    assert!(store.citation(&before).await.unwrap().is_none());
    assert_eq!(store.citation(&after).await.unwrap().unwrap().endpoint, "/price");
    assert_eq!(store.usage_count(user.user_id).await.unwrap(), 1);
}
