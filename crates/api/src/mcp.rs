//! The data operations as MCP tools at `POST /mcp` (Streamable HTTP, stateless), so a user's bot
//! reaches our data with its own key and no shell.
//!
//! The HTTP request is authenticated before any MCP handling (401/403 as on every data endpoint);
//! each tool call is then rate limited from the same bucket as the HTTP endpoints, runs the same
//! operation as its HTTP twin, and is metered as one usage row (`mcp:<tool>`). Bad input, a
//! spent bucket or an upstream failure is a tool error carrying the HTTP error's JSON, so the
//! model reads which field was wrong or how long to wait.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::prelude::{Engine, BASE64_STANDARD};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, InitializeResult, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use twilight_core::cite::SERVED_VERSION;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::UserKey;
use crate::data::{chart, fundamentals, price, search, Answer};
use crate::{ApiContext, ApiError, ApiResult};
use twilight_accounts::Citation;

/// Tool calls in one POST are bounded by the body limit; a tool's arguments are a few fields.
const MAX_BODY_BYTES: usize = 64 * 1024;

const INSTRUCTIONS: &str = "Market data for Chinese A-shares and web search from Twilight Drive. Every answer carries a \
`cite` (source, table, fetched_at, tool_call_id; a search result's cite also has its page's url): quote the value \
with its as_of date and the cite. On an error, tell the user what was wrong (the error names the field); never \
guess a number instead. `chart` draws a price or valuation chart as an image: send it when the user asks how a stock \
moved (走势, 对比, 图), with one line of interpretation and its cite.";

/// The data operations the bot may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataTool {
    Price,
    Fundamentals,
    Search,
    Chart,
}

impl DataTool {
    const ALL: [DataTool; 4] = [DataTool::Price, DataTool::Fundamentals, DataTool::Search, DataTool::Chart];

    fn name(self) -> &'static str {
        match self {
            DataTool::Price => "price",
            DataTool::Fundamentals => "fundamentals",
            DataTool::Search => "search",
            DataTool::Chart => "chart",
        }
    }

    /// The usage_log endpoint of one call.
    fn endpoint(self) -> &'static str {
        match self {
            DataTool::Price => "mcp:price",
            DataTool::Fundamentals => "mcp:fundamentals",
            DataTool::Search => "mcp:search",
            DataTool::Chart => "mcp:chart",
        }
    }

    fn description(self) -> &'static str {
        match self {
            DataTool::Price => {
                "One number of one stock on one trading day, with its cite: close/open/high/low price, \
daily change (pct_chg), volume, turnover, or a valuation (pe_ttm, pe, pb, ps, total_mv 市值, circ_mv). Use it for any \
price or valuation question (股价, 收盘价, 市盈率 P/E, 市净率 P/B, 市值, 涨跌幅). Answers {code, name, metric, value, unit, \
as_of, cite}."
            }
            DataTool::Fundamentals => {
                "Financial indicators of one report period (ROE, gross margin, EPS, revenue and profit \
growth, debt ratio, …), the latest valuation, and what the company is (industry 行业, CSRC industry, registered \
name, market, main business 主营业务: text values), each value with its own cite. Use it for 财务, 基本面, 业绩, \
盈利能力 and 公司是做什么的 questions. Answers {code, name, as_of, announced, claims:[{metric, value, unit, period, cite}]}."
            }
            DataTool::Search => {
                "Searches the web for news, announcements (公告), reports and events, and finds a company's \
code from its name. Use it for 新闻, 公告, 研报, 最近发生了什么, and whenever the user names a company without a code. \
Answers {query, since, results:[{title, url, snippet, published_at, cite}]}; quote a result with its title, date and \
url. Prices and financial numbers come from price and fundamentals, never from search snippets."
            }
            DataTool::Chart => {
                "Draws a chart of one stock over a range (1m 3m 6m 1y 3y 5y; default 1y): close price by \
default, or pct_chg, pe_ttm, pb, total_mv; with up to 3 comparison codes every line is % change from its first day. \
Use it for 走势, 对比, 图, 'how has it moved'. Answers a PNG image (put the MEDIA: line it arrives as into your reply, \
unchanged, to send it) and its cite {code, name, metric, \
range, from, through, lines:[{code, name, last, unit, as_of}], notes, cite}; add one line of interpretation quoting the \
last value, the range and the cite."
            }
        }
    }

    fn input_schema(self) -> JsonObject {
        let schema = match self {
            DataTool::Price => schemars::schema_for!(price::PriceParams),
            DataTool::Fundamentals => schemars::schema_for!(fundamentals::FundamentalsParams),
            DataTool::Search => schemars::schema_for!(search::SearchParams),
            DataTool::Chart => schemars::schema_for!(chart::ChartParams),
        };
        let mut object = schema.as_object().cloned().unwrap_or_default();
        // The draft marker and the Rust type's title and doc are noise to a model; the tool's
        // description says what it does.
        for noise in ["$schema", "title", "description"] {
            object.remove(noise);
        }
        object
    }

    fn tool(self) -> Tool {
        // Search reaches the open web; the market tools read our warehouse.
        let open_world = self == DataTool::Search;
        let annotations = ToolAnnotations::new().read_only(true).destructive(false).idempotent(true).open_world(open_world);
        Tool::new(self.name(), self.description(), self.input_schema()).annotate(annotations)
    }

    fn named(name: &str) -> Option<DataTool> {
        DataTool::ALL.into_iter().find(|tool| tool.name() == name)
    }

    /// Runs the operation behind the tool: the same function its HTTP endpoint calls.
    async fn run(self, ctx: &ApiContext, arguments: JsonObject) -> ApiResult<(CallToolResult, i32, Citation)> {
        match self {
            DataTool::Price => answered(price::price(ctx, arguments_as(arguments)?).await?),
            DataTool::Fundamentals => answered(fundamentals::fundamentals(ctx, arguments_as(arguments)?).await?),
            DataTool::Search => answered(search::search(ctx, arguments_as(arguments)?).await?),
            DataTool::Chart => {
                let (charted, cost, citation) = chart::chart(ctx, arguments_as(arguments)?).await?;
                let cite = serde_json::to_string(&charted.cite).map_err(|e| ApiError::Internal(format!("serialising a cite: {e}")))?;
                // hermes keeps an image block as a file and sends it to the chat as a picture.
                let image = ContentBlock::image(BASE64_STANDARD.encode(&charted.png), "image/png");
                Ok((CallToolResult::success(vec![image, ContentBlock::text(cite)]), cost, citation))
            }
        }
    }
}

/// Tool arguments into an operation's parameters; a field of the wrong type or one the tool does
/// not take is invalid input, like a bad query string.
fn arguments_as<T: DeserializeOwned>(arguments: JsonObject) -> ApiResult<T> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| ApiError::InvalidInput { field: None, message: format!("invalid arguments: {e}") })
}

fn answered<T: Serialize>(answer: Answer<T>) -> ApiResult<(CallToolResult, i32, Citation)> {
    let body = serde_json::to_value(&answer.body).map_err(|e| ApiError::Internal(format!("serialising an answer: {e}")))?;
    Ok((CallToolResult::structured(body), answer.cost_pts, answer.citation))
}

/// One MCP server per request (the transport is stateless); cheap, it is the shared context.
#[derive(Clone)]
struct DataTools {
    ctx: ApiContext,
}

impl DataTools {
    /// A tool call by `key`: charged to its bucket, run, metered; every failure is a tool error.
    async fn call(&self, key: &UserKey, tool: DataTool, arguments: JsonObject) -> CallToolResult {
        // Refused calls are not metered, as over HTTP: only calls that passed the limiter count.
        if let Err(limited) = self.ctx.limits.check(key) {
            return CallToolResult::structured_error(limited.body().to_value());
        }
        let (result, status, cost, citation) = match tool.run(&self.ctx, arguments).await {
            Ok((result, cost, citation)) => (result, StatusCode::OK, cost, Some(citation)),
            Err(error) => (CallToolResult::structured_error(error.body().to_value()), error.status_code(), 0, None),
        };
        self.ctx.usage.record_call(key, tool.endpoint(), status.as_u16(), cost, citation);
        result
    }
}

impl ServerHandler for DataTools {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("twilight-drive", SERVED_VERSION))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(DataTool::ALL.into_iter().map(DataTool::tool).collect()))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = DataTool::named(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("no tool named {:?}; tools: price, fundamentals, search, chart", request.name),
                None,
            ));
        };
        // Put there by `authenticate`; the transport hands the HTTP request's parts to every call.
        let key = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<UserKey>>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("tool call without an authenticated key", None))?;
        Ok(self.call(&key, tool, request.arguments.unwrap_or_default()).await.into())
    }
}

/// The MCP tools (`price`, `fundamentals`, `search`, `chart`) over Streamable HTTP, stateless:
/// one JSON-RPC message per POST (`initialize`, `tools/list`, `tools/call`), answered in JSON. The
/// request must accept both `application/json` and `text/event-stream`. Served by rmcp's service;
/// this is its description.
#[utoipa::path(post, path = "/mcp", tag = "agent", security(("user_key" = [])),
    request_body(content = Object, description = "A JSON-RPC 2.0 request or notification"),
    responses(
        (status = 200, description = "The JSON-RPC answer (a tool's failure is a result with `isError`)", body = Object),
        (status = 202, description = "A notification, taken"),
        (status = 400, description = "Not a JSON-RPC message", body = crate::error::ErrorBody),
        (status = 401, description = "No API key, or one nobody issued", body = crate::error::ErrorBody),
        (status = 402, description = "The key's subscription has expired", body = crate::error::ErrorBody),
        (status = 403, description = "The key has been revoked", body = crate::error::ErrorBody),
        (status = 406, description = "The request does not accept JSON and event streams", body = crate::error::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::error::ErrorBody),
        (status = 422, description = "A JSON-RPC message the transport cannot take", body = crate::error::ErrorBody),
        (status = 429, description = "Too many failed keys from this client", body = crate::error::ErrorBody),
    ),
)]
#[allow(dead_code)] // Only described: the route is rmcp's service.
pub(crate) fn transport() {}

pub fn router(ctx: ApiContext) -> OpenApiRouter<ApiContext> {
    let server = DataTools { ctx: ctx.clone() };
    // Stateless (no session affinity between our instances) and JSON answers (no stream is needed
    // for a request-response tool). No Host allowlist: the endpoint is public behind our proxy and
    // is reached with a bearer key, never with ambient credentials a rebinding page could borrow.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(move || Ok(server.clone()), Arc::new(NeverSessionManager::default()), config);
    OpenApiRouter::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(ctx, authenticate))
}

/// Only a live user key reaches the MCP handling.
async fn authenticate(State(ctx): State<ApiContext>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let key = ctx.auth.user(request.headers(), ctx.client_of(&request)).await?;
    request.extensions_mut().insert(key);
    Ok(next.run(request).await)
}

/// The transport refuses a wrong method, media type or size with plain text; answer those in our
/// JSON error shape like every other endpoint. JSON-RPC answers pass through untouched.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let message = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(text) if !text.is_empty() => String::from_utf8_lossy(&text).into_owned(),
        _ => status.canonical_reason().unwrap_or("bad request").to_string(),
    };
    let mut response = ApiError::Protocol { status, message }.into_response();
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
