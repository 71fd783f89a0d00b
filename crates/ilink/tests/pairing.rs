//! The pairing client against the iLink simulator over real HTTP, through every status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use twilight_ilink::{IlinkClient, IlinkError, PairingStatus, QrCode};
use twilight_sandbox::{serve, Fault, IlinkSim, IlinkSimConfig};

const USER: &str = "o9cq8paying-user@im.wechat";

struct Harness {
    sim: IlinkSim,
    url: String,
    client: IlinkClient,
}

/// A simulator holding polls `hold` and expiring QR codes after `ttl`, and a client expecting it.
async fn harness(hold: Duration, ttl: Duration) -> Harness {
    let sim = IlinkSim::new(IlinkSimConfig { status_hold: hold, updates_hold: hold, qr_ttl: ttl, ..IlinkSimConfig::default() });
    let (addr, _) = serve(sim.router(), 0).await.unwrap();
    let url = format!("http://{addr}");
    let client = IlinkClient::new(&url).unwrap().with_long_poll_hold(hold);
    Harness { sim, url, client }
}

async fn quick() -> Harness {
    harness(Duration::from_millis(200), Duration::from_secs(60)).await
}

impl Harness {
    async fn qr(&self) -> QrCode {
        self.client.get_bot_qrcode().await.unwrap()
    }

    async fn poll(&self, qr: &mut QrCode, code: Option<&str>) -> PairingStatus {
        self.client.poll_status(qr, code).await.unwrap()
    }
}

#[tokio::test]
async fn a_plain_pairing_confirms_with_credentials_the_simulator_knows() {
    let h = quick().await;
    let mut qr = h.qr().await;
    assert_eq!(qr.img_content, format!("{}/sandbox/ilink/scan/{}", h.url, qr.poll_key));
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Wait));
    h.sim.scan(&qr.poll_key, USER).unwrap();
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Scanned));
    let view = h.sim.confirm(&qr.poll_key).unwrap();
    let status = h.poll(&mut qr, None).await;
    let debug = format!("{status:?}");
    let PairingStatus::Confirmed { bot_token, ilink_bot_id, base_url, ilink_user_id } = status else { panic!("{debug}") };
    assert_eq!(Some(ilink_bot_id.as_str()), view.ilink_bot_id.as_deref());
    assert!(ilink_bot_id.ends_with("@im.bot"));
    assert_eq!((base_url.as_str(), ilink_user_id.as_str()), (h.url.as_str(), USER));
    assert!(!debug.contains(bot_token.expose_secret()), "the token must not show in Debug: {debug}");

    // The token works: the bot can poll for messages with it.
    let updates: serde_json::Value = reqwest::Client::new()
        .post(format!("{base_url}/ilink/bot/getupdates"))
        .bearer_auth(bot_token.expose_secret())
        .json(&serde_json::json!({"get_updates_buf": ""}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updates["ret"], 0, "{updates}");

    // And our side can speak as the bot, as hermes sends a message nobody asked for.
    h.client.send_text(&base_url, &bot_token, &ilink_user_id, "我是张老师，可以开始问股票了").await.unwrap();
    let sent = h.sim.sent(&ilink_bot_id);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].to_user_id.as_str(), sent[0].text.as_str(), sent[0].context_token.as_deref()),
        (USER, "我是张老师，可以开始问股票了", None)
    );
    assert!(sent[0].client_id.as_deref().is_some_and(|id| id.starts_with("twilight-")));
    let forged = secrecy::SecretString::from("not-the-bot-token".to_string());
    let refused = h.client.send_text(&base_url, &forged, &ilink_user_id, "hi").await.unwrap_err();
    assert!(matches!(refused, IlinkError::Api { .. } | IlinkError::Http { .. }), "{refused:?}");
    assert!(!format!("{refused:?}").contains("not-the-bot-token"));
    assert_eq!(h.sim.sent(&ilink_bot_id).len(), 1);
}

#[tokio::test]
async fn a_poll_is_held_and_answered_as_soon_as_the_phone_acts() {
    let h = harness(Duration::from_secs(20), Duration::from_secs(60)).await;
    let mut qr = h.qr().await;
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Wait), "news for a first poll is answered at once");
    let (sim, key) = (h.sim.clone(), qr.poll_key.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.scan(&key, USER).unwrap();
    });
    let started = Instant::now();
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Scanned));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "held until the scan: {waited:?}");
}

#[tokio::test]
async fn the_verification_code_must_be_typed_correctly() {
    let h = quick().await;
    let mut qr = h.qr().await;
    h.sim.scan(&qr.poll_key, USER).unwrap();
    let code = h.sim.require_verify_code(&qr.poll_key).unwrap();
    assert_eq!(code.len(), 6);
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::NeedVerifyCode));
    assert!(h.sim.confirm(&qr.poll_key).is_err(), "no confirm before the code is entered");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert!(matches!(h.poll(&mut qr, Some(wrong)).await, PairingStatus::NeedVerifyCode));
    assert!(matches!(h.poll(&mut qr, Some(&code)).await, PairingStatus::Scanned));
    h.sim.confirm(&qr.poll_key).unwrap();
    assert!(matches!(h.poll(&mut qr, Some(&code)).await, PairingStatus::Confirmed { .. }));
}

#[tokio::test]
async fn too_many_wrong_codes_block_the_pairing() {
    let h = quick().await;
    let mut qr = h.qr().await;
    h.sim.scan(&qr.poll_key, USER).unwrap();
    let code = h.sim.require_verify_code(&qr.poll_key).unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert!(matches!(h.poll(&mut qr, Some(wrong)).await, PairingStatus::NeedVerifyCode));
    assert!(matches!(h.poll(&mut qr, Some(wrong)).await, PairingStatus::NeedVerifyCode));
    assert!(matches!(h.poll(&mut qr, Some(wrong)).await, PairingStatus::VerifyCodeBlocked));
    assert!(matches!(h.poll(&mut qr, Some(&code)).await, PairingStatus::VerifyCodeBlocked), "blocked for good");
}

#[tokio::test]
async fn qr_codes_expire_after_their_ttl_or_on_demand() {
    let h = harness(Duration::from_secs(10), Duration::from_millis(400)).await;
    let mut qr = h.qr().await;
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Wait));
    let started = Instant::now();
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Expired), "the hold ends at the TTL");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(h.sim.scan(&qr.poll_key, USER).is_err());

    let h = quick().await;
    let mut qr = h.qr().await;
    h.sim.scan(&qr.poll_key, USER).unwrap();
    h.sim.expire(&qr.poll_key).unwrap();
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Expired));
    qr.poll_key = "0".repeat(32);
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::Expired), "an unknown key reads as expired");
}

#[tokio::test]
async fn an_already_bound_user_gets_binded_redirect_and_no_credentials() {
    let h = quick().await;
    h.sim.mark_bound(USER);
    let mut qr = h.qr().await;
    h.sim.scan(&qr.poll_key, USER).unwrap();
    let view = h.sim.confirm(&qr.poll_key).unwrap();
    assert_eq!(view.ilink_bot_id, None);
    assert!(matches!(h.poll(&mut qr, None).await, PairingStatus::BindedRedirect));
}

#[tokio::test]
async fn a_redirect_moves_the_next_polls_to_the_named_host() {
    let h = quick().await;
    let (other, _) = serve(h.sim.router(), 0).await.unwrap();
    let mut qr = h.qr().await;
    h.sim.scan(&qr.poll_key, USER).unwrap();
    h.sim.redirect(&qr.poll_key, &other.to_string()).unwrap();
    let PairingStatus::ScannedButRedirect { host } = h.poll(&mut qr, None).await else { panic!("expected a redirect") };
    assert_eq!(host, other.to_string());
    assert_eq!(qr.poll_base.as_str(), format!("http://{other}/"));
    h.sim.confirm(&qr.poll_key).unwrap();
    let PairingStatus::Confirmed { base_url, .. } = h.poll(&mut qr, None).await else { panic!("expected confirmed on the new host") };
    assert_eq!(base_url, format!("http://{other}"));
}

#[tokio::test]
async fn a_poll_outliving_its_timeout_reads_as_wait() {
    let sim = IlinkSim::new(IlinkSimConfig { status_hold: Duration::from_secs(30), ..IlinkSimConfig::default() });
    let (addr, _) = serve(sim.router(), 0).await.unwrap();
    let client = IlinkClient::new(&format!("http://{addr}")).unwrap().with_long_poll_hold(Duration::ZERO);
    let mut qr = client.get_bot_qrcode().await.unwrap();
    assert!(matches!(client.poll_status(&mut qr, None).await.unwrap(), PairingStatus::Wait));
    let started = Instant::now();
    assert!(matches!(client.poll_status(&mut qr, None).await.unwrap(), PairingStatus::Wait), "held past the client's timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_down_ilink_is_an_http_error() {
    let h = quick().await;
    h.sim.set_fault(Fault::Down);
    let error = h.client.get_bot_qrcode().await.unwrap_err();
    assert!(matches!(error, IlinkError::Http { status: 503, .. }), "{error}");
    assert_eq!(h.sim.calls("GET /ilink/bot/get_bot_qrcode"), 1);
}

/// The requests themselves, as a stub sees them: hermes' method, path, query and headers.
#[tokio::test]
async fn requests_carry_hermes_headers_and_api_errors_surface() {
    let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    let record = seen.clone();
    let stub = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push((uri.to_string(), headers));
            if uri.path().ends_with("get_bot_qrcode") {
                axum::Json(serde_json::json!({"qrcode": "abc", "qrcode_img_content": "https://liteapp.weixin.qq.com/q/x"}))
            } else {
                axum::Json(serde_json::json!({"ret": -1, "errcode": -1, "errmsg": "system error"}))
            }
        }
    });
    let (addr, _) = serve(stub, 0).await.unwrap();
    let client = IlinkClient::new(&format!("http://{addr}")).unwrap();
    let mut qr = client.get_bot_qrcode().await.unwrap();
    let error = client.poll_status(&mut qr, Some("123456")).await.unwrap_err();
    assert!(matches!(&error, IlinkError::Api { ret: -1, errmsg, .. } if errmsg == "system error"), "{error}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "/ilink/bot/get_bot_qrcode?bot_type=3");
    assert_eq!(seen[1].0, "/ilink/bot/get_qrcode_status?qrcode=abc&verify_code=123456");
    for (_, headers) in seen.iter() {
        assert_eq!(headers["ilink-app-id"], "bot");
        assert_eq!(headers["ilink-app-clientversion"], "131584");
        assert!(headers.get("authorization").is_none() && headers.get("x-wechat-uin").is_none());
    }
}
