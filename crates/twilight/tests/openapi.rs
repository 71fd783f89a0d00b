//! `/openapi.json`: the document every route is registered from, and schemathesis checking every
//! endpoint's answers against it with a real user key and admin token.

mod common;

use std::path::PathBuf;

use common::{Backend, TestApp};
use serde_json::Value;

/// The schemathesis CLI (scripts/install-oracles); its absence fails the test in CI.
fn schemathesis() -> Option<PathBuf> {
    if let Some(cli) = std::env::var_os("TWILIGHT_SCHEMATHESIS") {
        return Some(cli.into());
    }
    let required = std::env::var_os("CI").is_some() || std::env::var("TWILIGHT_REQUIRE_HERMES").as_deref() == Ok("1");
    assert!(!required, "TWILIGHT_SCHEMATHESIS is not set (scripts/test sets it from scripts/install-oracles)");
    eprintln!("\n!!!!! SKIPPED: TWILIGHT_SCHEMATHESIS is not set; run scripts/install-oracles !!!!!\n");
    None
}

async fn document(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_with_its_errors_and_credentials() {
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["user_key"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");

    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let what = format!("{method} {path}");
            // Described where it is served: the route answers, not the fallback or a wrong method.
            let url = app.url(&path.replace("{", "x").replace("}", ""));
            let response = app.http.request(method.to_uppercase().parse().unwrap(), url).send().await.unwrap();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(body["error"]["message"], "no such endpoint", "{what} is described but not routed");
            assert_ne!(body["error"]["code"], "method_not_allowed", "{what} is described but not routed");

            let security: Vec<&str> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|requirement| requirement.as_object().unwrap().keys().map(String::as_str))
                .collect();
            let scheme = match path.as_str() {
                "/metrics" => Some("admin_token"),
                p if p.starts_with("/admin/") && p != "/admin/payments/webhook" => Some("admin_token"),
                "/price" | "/fundamentals" | "/search" | "/chart" | "/reports/search" | "/mcp" => Some("user_key"),
                p if p.starts_with("/llm/") => Some("user_key"),
                _ => None,
            };
            assert_eq!(security, scheme.into_iter().collect::<Vec<_>>(), "{what}");
            // A credentialed endpoint documents its refusals in the error shape.
            if scheme.is_some() {
                for status in ["401", "403"] {
                    let schema = &operation["responses"][status]["content"]["application/json"]["schema"];
                    assert_eq!(schema["$ref"], "#/components/schemas/ErrorBody", "{what} {status}");
                }
            }
        }
    }
    assert!(operations >= 40, "{operations} operations");
    // Typed bodies: the answers are schemas, not free-form objects.
    for schema in
        ["PriceBody", "FundamentalsBody", "SearchBody", "Health", "CreatedUser", "UserOverview", "Checkout", "LinkStatus", "Trace"]
    {
        assert!(
            doc["components"]["schemas"][schema]["properties"].is_object() || doc["components"]["schemas"][schema]["allOf"].is_array(),
            "{schema}"
        );
    }
    // Every reference resolves (responses described by an enum register no schemas of their own).
    let mut references = Vec::new();
    collect_references(&doc, &mut references);
    assert!(references.len() > 100, "{} references", references.len());
    for reference in references {
        let name = reference.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{reference}"));
        assert!(doc["components"]["schemas"][name].is_object(), "{reference} does not resolve");
    }
    let error = &doc["components"]["schemas"]["ErrorDetail"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]));
    // A path nobody serves is not described and answers the fallback.
    assert!(!paths.contains_key("/nope"));
    assert_eq!(app.get("/nope", None).await.0, 404);
    app.stop().await;
}

fn collect_references(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("$ref") {
                into.push(reference.clone());
            }
            object.values().for_each(|value| collect_references(value, into));
        }
        Value::Array(items) => items.iter().for_each(|value| collect_references(value, into)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let Some(cli) = schemathesis() else { return };
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    // A real key, with room for every generated request.
    let (user_id, key) = app.user(1_000_000).await;
    // Identifiers for the operations that take them: an order and its onboarding link, the user's
    // renewal code, and a cited answer.
    let (status, order) = app.post("/checkout", None, serde_json::json!({"plan": "pro"})).await;
    assert_eq!(status, 201, "{order}");
    let token = order["onboarding_url"].as_str().unwrap().strip_prefix("/onboard/").unwrap().to_string();
    let (status, _, overview) = app.get(&format!("/admin/users/{user_id}"), Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{overview}");
    let (status, _, price) = app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await;
    assert_eq!(status, 200, "{price}");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    // Whatever it writes lands in a directory of its own, not in the tree.
    let workdir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&cli)
        .current_dir(workdir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection",
        ])
        .env("TWILIGHT_ST_USER_KEY", &key)
        .env("TWILIGHT_ST_ADMIN_TOKEN", &app.admin_token)
        .env("TWILIGHT_ST_ORDER_ID", order["order_id"].as_str().unwrap())
        .env("TWILIGHT_ST_ONBOARDING_TOKEN", &token)
        .env("TWILIGHT_ST_RENEWAL_CODE", overview["user"]["renewal_code"].as_str().unwrap())
        .env("TWILIGHT_ST_TOOL_CALL_ID", price["cite"]["tool_call_id"].as_str().unwrap())
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.rsplit_once("SUMMARY").map_or(stdout.as_ref(), |(_, summary)| summary);
    println!("schemathesis SUMMARY{summary}");
    assert!(output.status.success(), "schemathesis failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // It really ran: every operation was tested, and the key still works afterwards.
    assert!(summary.contains("passed"), "{summary}");
    assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    app.stop().await;
}
