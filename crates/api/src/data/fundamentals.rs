use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use twilight_core::{compact, Cite, TsCode};

use super::{optional_date, required_code, tool_call_id, Answer};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundamentalsParams {
    code: Option<String>,
    period: Option<String>,
}

#[derive(Serialize)]
pub struct ClaimBody {
    metric: &'static str,
    value: Option<f64>,
    unit: &'static str,
    period: String,
    cite: Cite,
}

#[derive(Serialize)]
pub struct FundamentalsBody {
    code: TsCode,
    name: String,
    as_of: String,
    announced: Option<String>,
    claims: Vec<ClaimBody>,
}

/// `GET /fundamentals?code=600519.SH[&period=YYYYMMDD]` — financial indicators of a report period plus
/// the latest valuation, each number with its own cite.
pub async fn fundamentals(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<FundamentalsParams>) -> ApiResult<Answer<FundamentalsBody>> {
    let code = required_code(params.code.as_deref())?;
    let period = optional_date("period", params.period.as_deref())?;
    let answer = ctx.market.fundamentals(code, period).await?;
    let now = Utc::now();
    let call_id = tool_call_id();
    let claims = answer
        .claims
        .into_iter()
        .map(|c| ClaimBody {
            metric: c.metric,
            value: c.value,
            unit: c.unit,
            period: compact(c.period),
            cite: Cite::tool(&c.source, c.table, c.fetched_at, now, call_id.clone()),
        })
        .collect();
    Ok(Answer {
        body: FundamentalsBody {
            code: answer.stock.code,
            name: answer.stock.name,
            as_of: compact(answer.period),
            announced: answer.announced.map(compact),
            claims,
        },
        cost_pts: answer.cost_pts,
    })
}
