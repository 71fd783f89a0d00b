use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use twilight_core::cite::SERVED_VERSION;
use twilight_market::SourceHealth;
use twilight_search::ProviderStatus;
use utoipa::ToSchema;

use crate::ApiContext;

/// What `/healthz` answers: `ok` is false (and the status 503) when the accounts DB or the
/// warehouse is down; every other check reports without failing the data plane.
#[derive(Serialize, ToSchema)]
pub struct Health {
    ok: bool,
    version: &'static str,
    checks: Checks,
}

#[derive(Serialize, ToSchema)]
struct Checks {
    accounts: AccountsCheck,
    warehouse: WarehouseCheck,
    /// Each upstream's last success and failure.
    upstreams: BTreeMap<&'static str, SourceHealth>,
    gateways: GatewaysCheck,
    search: SearchCheck,
    /// The scheduler's jobs by name.
    jobs: JobsCheck,
}

/// The words a failed check says, never the error itself (that is logged).
const UNREACHABLE: &str = "unreachable";
const UNREADABLE: &str = "unreadable";

#[derive(Serialize, ToSchema)]
struct AccountsCheck {
    ok: bool,
    /// `sqlite` or `postgres`.
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
struct WarehouseCheck {
    ok: bool,
    /// Rows per table.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<BTreeMap<&'static str, i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// Writes are failing (a full disk): answers still come, from upstream data nobody keeps.
    degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// On a serving host fed by a warehouse primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<ReplicaCheck>,
}

/// What a serving host's replica serves, and how far behind the primary's publication it is.
#[derive(Serialize, ToSchema)]
struct ReplicaCheck {
    /// The snapshot file served (null before the first swap).
    serving: Option<String>,
    published_at: Option<DateTime<Utc>>,
    swapped_at: Option<DateTime<Utc>>,
    swaps: u64,
    /// The age of the snapshot served (null before the first swap).
    lag_secs: Option<i64>,
    last_error: Option<String>,
}

/// Gateways running vs expected, per host, as each provisioner last counted them.
#[derive(Serialize, ToSchema)]
struct GatewaysCheck {
    ok: bool,
    hosts: Vec<HostGateways>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
struct HostGateways {
    host: String,
    expected: i32,
    running: i32,
    /// How many gateways the host can hold; new users go to the live host with the most room.
    gateway_slots: i32,
    observed_at: DateTime<Utc>,
    /// Its provisioner stopped counting (and the host gets no new users).
    stale: bool,
}

#[derive(Serialize, ToSchema)]
struct SearchCheck {
    /// Some provider is ready.
    ok: bool,
    providers: Vec<ProviderStatus>,
}

/// The scheduler's leased jobs (the warehouse fills) by name, or why they could not be read.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum JobsCheck {
    Jobs(BTreeMap<String, JobCheck>),
    Unreadable { ok: bool, error: &'static str },
}

#[derive(Serialize, ToSchema)]
struct JobCheck {
    ok: bool,
    last_success_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// Failed runs since the last success.
    failures: i32,
    /// A process holds its lease now.
    running: bool,
}

/// `GET /healthz`: shallow `ok` plus deep checks; 503 when a critical dependency (accounts DB,
/// warehouse) is down; a warehouse that reads but cannot write says `degraded`. Upstream outages
/// are reported but not critical: the warehouse still answers. So are the users' gateways, per
/// host, as each provisioner last counted them: down or stale counts say `ok: false` there
/// without failing the data plane.
#[utoipa::path(get, path = "/healthz", tag = "health", responses(
    (status = 200, description = "The accounts DB and the warehouse answer", body = Health),
    (status = 503, description = "The accounts DB or the warehouse is down", body = Health),
))]
pub async fn healthz(State(ctx): State<ApiContext>) -> (StatusCode, Json<Health>) {
    let backend = ctx.accounts.backend();
    let accounts = match ctx.accounts.ping().await {
        Ok(()) => AccountsCheck { ok: true, backend, error: None },
        Err(e) => {
            tracing::error!(error = %e, "health: accounts DB unreachable");
            AccountsCheck { ok: false, backend, error: Some(UNREACHABLE) }
        }
    };
    let (rows, error) = match ctx.market.row_counts().await {
        Ok(counts) => (Some(counts.into_iter().collect()), None),
        Err(e) => {
            tracing::error!(error = %e, "health: warehouse unreadable");
            (None, Some(UNREADABLE))
        }
    };
    let trouble = ctx.market.warehouse_health();
    let warehouse = WarehouseCheck {
        ok: rows.is_some(),
        rows,
        error,
        degraded: trouble.degraded_since.is_some(),
        last_error: trouble.degraded_since.and(trouble.last_error),
        degraded_since: trouble.degraded_since,
        replica: ctx.replica.as_ref().map(|replica| replica_check(&replica.status())),
    };
    // Not critical either: the market data answers without it.
    let providers = ctx.search.status();
    let search = SearchCheck { ok: providers.iter().any(|p| p.state == "ready"), providers };
    let ok = accounts.ok && warehouse.ok;
    let checks = Checks {
        accounts,
        warehouse,
        upstreams: ctx.market.health().into_iter().collect(),
        gateways: gateways(&ctx).await,
        search,
        jobs: scheduled_jobs(&ctx).await,
    };
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { ok, version: SERVED_VERSION, checks }))
}

fn replica_check(status: &twilight_market::replica::ReplicaStatus) -> ReplicaCheck {
    ReplicaCheck {
        serving: status.serving.as_ref().map(|m| m.file.clone()),
        published_at: status.serving.as_ref().map(|m| m.created_at),
        swapped_at: status.swapped_at,
        swaps: status.swaps,
        lag_secs: status.serving.as_ref().map(|m| (Utc::now() - m.created_at).num_seconds()),
        last_error: status.last_error.clone(),
    }
}

/// Not critical: the warehouse answers what it holds, and misses are fetched.
async fn scheduled_jobs(ctx: &ApiContext) -> JobsCheck {
    match ctx.accounts.scheduled_jobs().await {
        Ok(jobs) => {
            let now = Utc::now();
            let check = |job: twilight_accounts::ScheduledJob| {
                let running = job.holder.is_some() && job.lease_until.is_some_and(|until| until > now);
                let state = JobCheck {
                    ok: job.failures == 0,
                    last_success_at: job.last_success_at,
                    last_failure_at: job.last_failure_at,
                    last_error: job.last_error,
                    failures: job.failures,
                    running,
                };
                (job.job, state)
            };
            JobsCheck::Jobs(jobs.into_iter().map(check).collect())
        }
        Err(e) => {
            tracing::error!(error = %e, "health: scheduled jobs unreadable");
            JobsCheck::Unreadable { ok: false, error: UNREADABLE }
        }
    }
}

async fn gateways(ctx: &ApiContext) -> GatewaysCheck {
    match ctx.accounts.gateway_census().await {
        Ok(census) => {
            let now = Utc::now();
            let hosts: Vec<HostGateways> = census
                .into_iter()
                .map(|host| HostGateways {
                    stale: now - host.observed_at > twilight_accounts::GatewayCensus::SILENT_AFTER,
                    host: host.host,
                    expected: host.expected,
                    running: host.running,
                    gateway_slots: host.gateway_slots,
                    observed_at: host.observed_at,
                })
                .collect();
            let ok = hosts.iter().all(|host| host.running >= host.expected && !host.stale);
            GatewaysCheck { ok, hosts, error: None }
        }
        Err(e) => {
            tracing::error!(error = %e, "health: gateway census unreadable");
            GatewaysCheck { ok: false, hosts: Vec::new(), error: Some(UNREADABLE) }
        }
    }
}
