//! The pages in a real headless Chromium (Debian's `chromium` + `chromedriver`, installed by
//! scripts/install-deps), on the embedded default: the landing page in Chinese and English with Lite
//! disabled, the landing page without JavaScript, and the whole click-through — landing → pay in the
//! sandbox → pairing QR → verify code → name → done — on a desktop and on a phone-sized screen, with
//! the real hermes behind the provisioner. Screenshots of every step go to `$TWILIGHT_SCREENSHOTS`
//! (default `target/screenshots` under the build directory).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use common::{Backend, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const STEP_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
enum Screen {
    Desktop,
    Phone,
}

impl Screen {
    fn name(self) -> &'static str {
        match self {
            Screen::Desktop => "desktop",
            Screen::Phone => "phone",
        }
    }
}

/// A chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and chromedriver, or `None` outside CI when they are not installed (CI must have them).
fn driver() -> Option<Driver> {
    if !(std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists()) {
        let required = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
            || std::env::var("TWILIGHT_REQUIRE_BROWSER").as_deref() == Ok("1");
        assert!(!required, "chromium/chromedriver missing (scripts/install-deps installs them)");
        eprintln!("\n!!!!! SKIPPED browser tests: no {CHROMIUM} or {CHROMEDRIVER} !!!!!\n");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(driver);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver: &Driver, screen: Screen) -> Client {
    let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=zh-CN"];
    let mut options = json!({ "binary": CHROMIUM, "args": args, "prefs": { "intl.accept_languages": "zh-CN,zh" } });
    if let Screen::Phone = screen {
        options["mobileEmulation"] = json!({ "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 2.0, "touch": true } });
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url).await.expect("a chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("TWILIGHT_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        target.join("screenshots")
    });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snap(client: &Client, screen: Screen, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshot_dir().join(format!("{}-{name}.png", screen.name())), png).unwrap();
}

async fn find(client: &Client, css: &str) -> Element {
    client.wait().at_most(STEP_WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"))
}

async fn text(client: &Client, css: &str) -> String {
    find(client, css).await.text().await.unwrap()
}

/// Waits until the (next) page's `css` element reads `expected`: a click's navigation has landed.
async fn wait_for_text(client: &Client, css: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + STEP_WAIT;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if element.text().await.is_ok_and(|t| t == expected) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{css} never read {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the onboarding page shows `step` (its own script reloads it as the step changes).
async fn wait_for_step(client: &Client, step: &str) {
    let deadline = tokio::time::Instant::now() + STEP_WAIT;
    loop {
        let shown = match client.find(Locator::Css("#onboard")).await {
            Ok(root) => root.attr("data-step").await.ok().flatten(),
            Err(_) => None,
        };
        if shown.as_deref() == Some(step) {
            return;
        }
        assert!(shown.as_deref() != Some("failed"), "provisioning failed");
        if tokio::time::Instant::now() >= deadline {
            let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let source = client.source().await.unwrap_or_default();
            panic!("the page at {url} shows {shown:?}, not {step}:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The security headers of the page shown, as the browser received them (read again by the page
/// itself with `fetch`, the only way a WebDriver client sees response headers).
async fn assert_security_headers(client: &Client) {
    let script = "const done = arguments[arguments.length - 1];
        fetch(location.href, { credentials: 'same-origin' }).then(r => done(
          ['content-security-policy', 'x-frame-options', 'x-content-type-options', 'referrer-policy', 'cache-control']
            .map(h => r.headers.get(h))));";
    let headers = client.execute_async(script, vec![]).await.unwrap();
    let url = client.current_url().await.unwrap();
    let headers: Vec<Option<String>> = serde_json::from_value(headers).unwrap();
    let csp = headers[0].as_deref().unwrap_or_else(|| panic!("no CSP on {url}"));
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
    assert_eq!(
        headers[1..].iter().map(Option::as_deref).collect::<Vec<_>>(),
        [Some("DENY"), Some("nosniff"), Some("no-referrer"), Some("no-store")],
        "{url}"
    );
}

/// Follows a sandbox link in the same tab (the page opens it in a new one for people).
async fn follow(client: &Client, css: &str) -> String {
    let href = find(client, css).await.attr("href").await.unwrap().expect("an href");
    let back = client.current_url().await.unwrap().to_string();
    client.goto(&href).await.unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_in_both_languages_with_lite_disabled_and_without_javascript() {
    let Some(driver) = driver() else { return };
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    for screen in [Screen::Desktop, Screen::Phone] {
        let client = browser(&driver, screen).await;
        // The browser asks for Chinese; the page answers in Chinese by itself.
        client.goto(&app.url("/")).await.unwrap();
        assert_eq!(find(&client, "html").await.attr("lang").await.unwrap().as_deref(), Some("zh-CN"));
        assert!(text(&client, ".card-pro").await.contains("¥198"));
        assert_eq!(text(&client, "#buy-pro").await, "购买专业版");
        let lite = find(&client, "#buy-lite").await;
        assert!(lite.text().await.unwrap().contains("即将推出"));
        assert!(!lite.is_enabled().await.unwrap(), "Lite must not be buyable");
        assert!(text(&client, ".card-lite").await.contains("$49"));
        assert_security_headers(&client).await;
        snap(&client, screen, "01-landing-zh").await;
        client.execute("document.getElementById('pricing').scrollIntoView()", vec![]).await.unwrap();
        snap(&client, screen, "01-landing-zh-pricing").await;

        find(&client, "a.lang").await.click().await.unwrap();
        assert_eq!(find(&client, "html").await.attr("lang").await.unwrap().as_deref(), Some("en"));
        assert_eq!(text(&client, "#buy-pro").await, "Buy Pro");
        assert!(!find(&client, "#buy-lite").await.is_enabled().await.unwrap());
        assert!(text(&client, "#buy-lite").await.contains("Coming soon"));
        snap(&client, screen, "02-landing-en").await;
        client.execute("document.getElementById('pricing').scrollIntoView()", vec![]).await.unwrap();
        snap(&client, screen, "02-landing-en-pricing").await;
        // Nothing is fetched from another host: the page works offline.
        let source = client.source().await.unwrap();
        assert!(!source.contains("https://") && !source.contains("//cdn"), "an external asset: {source}");

        // An onboarding link, as the checkout API hands it out, opened in the browser: its token
        // moves into the cookie and the page the browser ends on has none in its address.
        let (status, order) = app.post("/checkout", None, json!({"plan": "pro"})).await;
        assert_eq!(status, 201, "{order}");
        client.goto(&app.url(&format!("{}?lang=en", order["onboarding_url"].as_str().unwrap()))).await.unwrap();
        wait_for_step(&client, "awaiting_payment").await;
        let landed = client.current_url().await.unwrap();
        assert_eq!((landed.path(), landed.query()), ("/onboard", Some("lang=en")), "the token stays off the address bar");
        assert_security_headers(&client).await;
        client.close().await.unwrap();
    }

    // Without JavaScript: everything on the pages is rendered by the server and the Buy button is a
    // plain form, so the HTML alone must sell and show the payment QR. (Chromium with page scripts
    // off cannot be driven by chromedriver, whose own commands run as scripts; so this is checked
    // on the HTML the server sends, and the pages' script only reloads, counts down and disables a
    // submitted button.)
    let landing = app.http.get(app.url("/?lang=en")).send().await.unwrap().text().await.unwrap();
    assert!(landing.contains(r#"<form method="post" action="/buy">"#), "{landing}");
    assert!(landing.contains(r#"id="buy-lite" disabled"#), "{landing}");
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let bought = no_redirects.post(app.url("/buy")).form(&[("plan", "pro"), ("lang", "en")]).send().await.unwrap();
    assert_eq!(bought.status(), 303);
    // The order's token travels in a cookie only script cannot read, never in the page's URL.
    let page = bought.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(page, "/onboard?lang=en");
    let cookie = bought.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["twilight_onboard=", "HttpOnly", "SameSite=Strict", "Path=/onboard"] {
        assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
    }
    let token = cookie.split(';').next().unwrap().to_string();
    let pay = app.http.get(app.url(&page)).header("cookie", &token).send().await.unwrap().text().await.unwrap();
    assert!(pay.contains(r#"id="pay-qr""#) && pay.contains(r#"alt="WeChat Pay QR code"#), "{pay}");
    assert!(pay.contains("reloads every 5 seconds") && pay.contains(r#"http-equiv="refresh""#), "{pay}");
    assert!(pay.contains("¥198.00"), "{pay}");
    // A broken form is a page saying so, not a stack trace; Lite cannot be bought by hand either.
    for (form, status) in [(&[("plan", "lite"), ("lang", "en")][..], 422), (&[("lang", "en")][..], 400), (&[("plan", "gold")][..], 400)] {
        let answer = no_redirects.post(app.url("/buy")).form(form).send().await.unwrap();
        assert_eq!(answer.status(), status, "{form:?}");
        let body = answer.text().await.unwrap();
        assert!(body.contains("<!doctype html>") && body.contains(r#"role="alert""#), "{body}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_through_on_a_desktop() {
    click_through(Screen::Desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_through_on_a_phone() {
    click_through(Screen::Phone).await;
}

async fn click_through(screen: Screen) {
    let Some(driver) = driver() else { return };
    let Some((app, home)) = TestApp::start_provisioning(Backend::Sqlite, "browser").await else {
        return;
    };
    let client = browser(&driver, screen).await;

    // Landing → Buy → the payment QR with amount, order number and a countdown.
    client.goto(&app.url("/")).await.unwrap();
    assert!(text(&client, ".sandbox-banner").await.contains("沙盒"), "sandbox mode is labelled");
    find(&client, "#buy-pro").await.click().await.unwrap();
    wait_for_step(&client, "awaiting_payment").await;
    assert_eq!(text(&client, ".amount").await, "¥198.00");
    let out_trade_no = text(&client, "#out-trade-no").await;
    assert!(!out_trade_no.is_empty());
    let alt = find(&client, "#pay-qr").await.attr("alt").await.unwrap().unwrap();
    assert!(alt.contains("微信支付二维码"), "{alt}");
    let countdown = text(&client, "#countdown").await;
    assert!(countdown.contains(':'), "{countdown}");
    // Every label and value of the order fits the screen (a 390 px phone included).
    let overflowing = client
        .execute(
            "const width = document.documentElement.clientWidth;
             return [...document.querySelectorAll('.order > *')]
               .filter(e => { const r = e.getBoundingClientRect(); return r.left < 0 || r.right > width; })
               .map(e => e.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflowing, json!([]), "cut off on the {} screen", screen.name());
    snap(&client, screen, "10-pay").await;

    // Paid — on the desktop through the sandbox payer's page, on the phone from "another device"
    // while the page stays open — and the onboarding page moves on by itself to the pairing QR.
    let onboarding = client.current_url().await.unwrap();
    assert_eq!((onboarding.path(), onboarding.query()), ("/onboard", Some("lang=zh")), "the token stays off the address bar");
    assert_security_headers(&client).await;
    let onboarding = onboarding.to_string();
    match screen {
        Screen::Desktop => {
            follow(&client, "#sandbox-pay").await;
            assert!(text(&client, "body").await.contains("SANDBOX"));
            find(&client, "button[type=submit]").await.click().await.unwrap();
            wait_for_text(&client, "h1", "Paid").await;
            client.goto(&onboarding).await.unwrap();
        }
        Screen::Phone => {
            app.running.sandbox.as_ref().unwrap().wechatpay.pay(&out_trade_no, None).await.unwrap();
        }
    }
    wait_for_step(&client, "scan").await;
    let alt = find(&client, "#pair-qr").await.attr("alt").await.unwrap().unwrap();
    assert!(alt.contains("绑定"), "{alt}");
    snap(&client, screen, "11-scan").await;

    // The sandbox phone scans and WeChat asks for a code, which the user types into our page.
    follow(&client, "#sandbox-scan").await;
    find(&client, "#scan").await.click().await.unwrap();
    find(&client, "#verify_code").await.click().await.unwrap();
    let code = text(&client, "#code").await;
    assert_eq!(code.len(), 6, "{code}");
    let phone = client.current_url().await.unwrap().to_string();
    client.goto(&onboarding).await.unwrap();
    wait_for_step(&client, "verify_code").await;
    let input = find(&client, "#verify-code").await;
    assert_eq!(find(&client, "label[for=verify-code]").await.text().await.unwrap(), "6 位验证码");
    snap(&client, screen, "12-verify-code").await;
    // A wrong shape is explained on the page, nothing is sent on.
    // (The browser's own check would stop it first: take it away to reach the server's.)
    client.execute("document.getElementById('verify-code').removeAttribute('pattern')", vec![]).await.unwrap();
    input.send_keys("12ab56").await.unwrap();
    find(&client, "button[type=submit]").await.click().await.unwrap();
    assert!(text(&client, ".error").await.contains("6 位数字"));
    find(&client, "#verify-code").await.send_keys(&code).await.unwrap();
    find(&client, "button[type=submit]").await.click().await.unwrap();
    wait_for_step(&client, "scan").await;
    client.goto(&phone).await.unwrap();
    find(&client, "#confirm").await.click().await.unwrap();
    find(&client, "#bot").await;
    client.goto(&onboarding).await.unwrap();

    // Name the bot (the default is offered), then it starts and the page says so.
    wait_for_step(&client, "name_bot").await;
    let name = find(&client, "#bot-name").await;
    assert_eq!(name.prop("value").await.unwrap().as_deref(), Some("张老师"));
    snap(&client, screen, "13-name").await;
    name.clear().await.unwrap();
    name.send_keys("小明").await.unwrap();
    find(&client, "button[type=submit]").await.click().await.unwrap();
    wait_for_step(&client, "ready").await;
    assert_eq!(text(&client, ".bot-name").await, "小明");
    let welcomed = text(&client, "#welcomed").await;
    assert!(welcomed.contains("问好") || welcomed.contains("said hello"), "{welcomed}");
    snap(&client, screen, "14-done").await;

    // The key planted in the profile never reached the page.
    let payment = app.running.accounts.payment_by_out_trade_no(&out_trade_no).await.unwrap().unwrap();
    let profile = app.running.accounts.profile_for_user(payment.user_id.unwrap()).await.unwrap().unwrap();
    let env = std::fs::read_to_string(home.path().join("hermes/profiles").join(&profile.profile_name).join(".env")).unwrap();
    let raw_key = env.lines().find_map(|l| l.strip_prefix("TWILIGHT_API_TOKEN=")).unwrap().trim_matches(['\'', '"']).to_string();
    assert!(raw_key.len() >= 43);
    assert!(!client.source().await.unwrap().contains(&raw_key), "the page shows the key");
    client.close().await.unwrap();
    app.stop().await;
}
