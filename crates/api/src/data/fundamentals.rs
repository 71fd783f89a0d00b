use axum::extract::State;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use twilight_core::{compact, Cite, TsCode};
use twilight_market::Fact;
use utoipa::{IntoParams, ToSchema};

use serde_json::json;

use super::{citation, cited_value, optional_date, required_code, row_key, tool_call_id, Answer};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiResult};

/// The inputs of `/fundamentals` and the MCP `fundamentals` tool (see [`super::price::PriceParams`]
/// on why every field is optional to serde).
#[derive(Deserialize, JsonSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FundamentalsParams {
    /// Stock code: `600519.SH`, `000001.SZ`, `830799.BJ`; a bare `600519` or `sh600519` is accepted too.
    #[schemars(required, with = "String")]
    #[param(required = true, value_type = String, example = "600519.SH")]
    code: Option<String>,
    /// Report period end as `YYYYMMDD`: `0331`, `0630`, `0930` or `1231` of a year (e.g. `20251231`).
    /// Leave it out for the latest reported period.
    #[schemars(pattern(r"^(\d{8}|\d{4}-\d{2}-\d{2})$"))]
    #[param(pattern = r"^(\d{8}|\d{4}-\d{2}-\d{2})$")]
    period: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ClaimBody {
    metric: &'static str,
    /// A number, or text for a line of the company's profile (`industry`, `main_business`).
    value: Option<Fact>,
    unit: &'static str,
    period: String,
    cite: Cite,
}

#[derive(Serialize, ToSchema)]
pub struct FundamentalsBody {
    #[schema(value_type = String, example = "600519.SH")]
    code: TsCode,
    name: String,
    as_of: String,
    announced: Option<String>,
    claims: Vec<ClaimBody>,
}

/// A report period's financial indicators, the latest valuation and the company's profile, each
/// value cited.
#[utoipa::path(get, path = "/fundamentals", tag = "data", params(FundamentalsParams), security(("user_key" = [])), responses(
    (status = 200, description = "The period's claims, each with its cite", body = FundamentalsBody),
    crate::openapi::DataErrors,
))]
pub async fn get(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<FundamentalsParams>) -> ApiResult<Answer<FundamentalsBody>> {
    fundamentals(&ctx, params).await
}

/// Financial indicators of a report period, the latest valuation and the company's profile, each
/// value with its own cite: the operation behind `/fundamentals` and the MCP `fundamentals` tool.
pub async fn fundamentals(ctx: &ApiContext, params: FundamentalsParams) -> ApiResult<Answer<FundamentalsBody>> {
    let code = required_code(params.code.as_deref())?;
    let period = optional_date("period", params.period.as_deref())?;
    let answer = ctx.market.fundamentals(code, period).await?;
    let now = Utc::now();
    let call_id = tool_call_id();
    let (claims, keys): (Vec<ClaimBody>, Vec<_>) = answer
        .claims
        .into_iter()
        .map(|c| {
            let cite = Cite::tool(&c.source, c.table, c.fetched_at, now, call_id.clone()).stale_if(answer.stale || c.stale);
            let key = row_key(c.table, answer.stock.code, c.period);
            (ClaimBody { metric: c.metric, value: c.value, unit: c.unit, period: compact(c.period), cite }, key)
        })
        .unzip();
    let cited: Vec<_> = claims.iter().zip(&keys).map(|(c, key)| cited_value(c.metric, c.value.clone(), c.unit, key, &c.cite)).collect();
    let citation = citation(call_id, &json!({ "code": code, "period": period.map(compact) }), &cited)?;
    Ok(Answer {
        body: FundamentalsBody {
            code: answer.stock.code,
            name: answer.stock.name,
            as_of: compact(answer.period),
            announced: answer.announced.map(compact),
            claims,
        },
        cost_pts: answer.cost_pts,
        citation,
    })
}
