use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use twilight_core::{compact, Cite, TsCode};
use twilight_market::Metric;

use super::{optional_date, required_code, tool_call_id, Answer};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceParams {
    code: Option<String>,
    trade_date: Option<String>,
    metric: Option<String>,
}

#[derive(Serialize)]
pub struct PriceBody {
    code: TsCode,
    name: String,
    metric: &'static str,
    value: Option<f64>,
    unit: &'static str,
    as_of: String,
    cite: Cite,
}

/// `GET /price?code=600519.SH[&trade_date=YYYYMMDD][&metric=close]`
pub async fn price(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<PriceParams>) -> ApiResult<Answer<PriceBody>> {
    let code = required_code(params.code.as_deref())?;
    let trade_date = optional_date("trade_date", params.trade_date.as_deref())?;
    let metric = match params.metric.as_deref() {
        Some(m) => m.parse::<Metric>().map_err(|e| ApiError::invalid("metric", e))?,
        None => Metric::Close,
    };
    let answer = ctx.market.price(code, trade_date, metric).await?;
    Ok(Answer {
        body: PriceBody {
            code: answer.stock.code,
            name: answer.stock.name,
            metric: metric.name(),
            value: answer.value,
            unit: metric.unit(),
            as_of: compact(answer.as_of),
            cite: Cite::tool(&answer.source, answer.table, answer.fetched_at, Utc::now(), tool_call_id()),
        },
        cost_pts: answer.cost_pts,
    })
}
