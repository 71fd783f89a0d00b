//! The iLink simulator's messaging and control surface over real HTTP, with request bodies and
//! headers exactly as hermes-agent 0.19.0's weixin adapter sends them.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use twilight_sandbox::ilink::{BotCredentials, Stage};
use twilight_sandbox::{serve, Fault, IlinkSim, IlinkSimConfig};

const OWNER: &str = "o9cq8owner@im.wechat";

struct Harness {
    sim: IlinkSim,
    url: String,
    http: reqwest::Client,
}

async fn harness() -> Harness {
    let hold = Duration::from_millis(300);
    let sim = IlinkSim::new(IlinkSimConfig { status_hold: hold, updates_hold: hold, ..IlinkSimConfig::default() });
    let (addr, _) = serve(sim.router(), 0).await.unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Harness { sim, url: format!("http://{addr}"), http }
}

impl Harness {
    /// A POST as hermes' `_api_post` makes it: `base_info` added, its five headers, the bearer token.
    async fn call(&self, endpoint: &str, token: Option<&str>, payload: Value) -> (StatusCode, Value) {
        let mut body = payload;
        body["base_info"] = json!({"channel_version": "2.2.0"});
        let mut request = self
            .http
            .post(format!("{}/ilink/bot/{endpoint}", self.url))
            .header("Content-Type", "application/json")
            .header("AuthorizationType", "ilink_bot_token")
            .header("X-WECHAT-UIN", "MzQ1Njc4OTA=")
            .header("iLink-App-Id", "bot")
            .header("iLink-App-ClientVersion", "131584")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["x-twilight-sandbox"], "ilink");
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn updates(&self, bot: &BotCredentials, cursor: &str) -> Value {
        let (status, body) = self.call("getupdates", Some(&bot.bot_token), json!({"get_updates_buf": cursor})).await;
        assert_eq!(status, StatusCode::OK);
        body
    }
}

#[tokio::test]
async fn unknown_or_missing_tokens_get_session_timeout() {
    let h = harness().await;
    for token in [None, Some("nope")] {
        for endpoint in ["getupdates", "sendmessage", "getconfig", "sendtyping"] {
            let (status, body) = h.call(endpoint, token, json!({})).await;
            assert_eq!((status, &body["ret"], &body["errcode"]), (StatusCode::OK, &json!(-14), &json!(-14)), "{endpoint}: {body}");
        }
    }
}

#[tokio::test]
async fn getupdates_hands_out_messages_once_and_follows_the_cursor() {
    let h = harness().await;
    let bot = h.sim.add_bot(OWNER);
    let inbound = h.sim.deliver(&bot.ilink_bot_id, OWNER, "查 600519 的 P/E").unwrap();

    let first = h.updates(&bot, "").await;
    assert_eq!(first["ret"], 0);
    let msgs = first["msgs"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    let msg = &msgs[0];
    assert_eq!((&msg["from_user_id"], &msg["to_user_id"]), (&json!(OWNER), &json!(bot.ilink_bot_id)));
    assert_eq!((&msg["message_type"], &msg["context_token"]), (&json!(1), &json!(inbound.context_token)));
    assert_eq!(msg["message_id"], inbound.message_id);
    assert_eq!(msg["item_list"], json!([{"type": 1, "text_item": {"text": "查 600519 的 P/E"}}]));
    let cursor = first["get_updates_buf"].as_str().unwrap().to_string();
    assert!(!cursor.is_empty());

    let started = Instant::now();
    let idle = h.updates(&bot, &cursor).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "an empty poll is held");
    assert_eq!((idle["msgs"].as_array().unwrap().len(), idle["get_updates_buf"].as_str().unwrap()), (0, cursor.as_str()));

    let (sim, id) = (h.sim.clone(), bot.ilink_bot_id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sim.deliver(&id, "o9cq8stranger@im.wechat", "hello").unwrap();
    });
    let started = Instant::now();
    let next = h.updates(&bot, &cursor).await;
    assert!(started.elapsed() < Duration::from_millis(250), "a held poll answers on arrival, not at the end of the hold");
    assert_eq!(next["msgs"][0]["item_list"][0]["text_item"]["text"], "hello");
    assert_eq!(h.updates(&bot, "").await["msgs"].as_array().unwrap().len(), 2, "an empty cursor starts over");
}

#[tokio::test]
async fn sendmessage_records_what_the_bot_sent() {
    let h = harness().await;
    let bot = h.sim.add_bot(OWNER);
    let inbound = h.sim.deliver(&bot.ilink_bot_id, OWNER, "hi").unwrap();
    let msg = json!({"msg": {
        "from_user_id": "", "to_user_id": OWNER, "client_id": "hermes-weixin-1", "message_type": 2, "message_state": 2,
        "item_list": [{"type": 1, "text_item": {"text": "贵州茅台 P/E 28.5"}}], "context_token": inbound.context_token,
    }});
    let (sim, id) = (h.sim.clone(), bot.ilink_bot_id.clone());
    let waiting = tokio::spawn(async move { sim.wait_for_sent(&id, 1, Duration::from_secs(5)).await });
    let (_, answer) = h.call("sendmessage", Some(&bot.bot_token), msg).await;
    assert_eq!(answer["ret"], 0);
    let sent = waiting.await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to_user_id.as_str(), sent[0].text.as_str()), (OWNER, "贵州茅台 P/E 28.5"));
    assert_eq!(sent[0].context_token.as_deref(), Some(inbound.context_token.as_str()));
    assert_eq!(sent[0].client_id.as_deref(), Some("hermes-weixin-1"));

    let (_, refused) = h.call("sendmessage", Some(&bot.bot_token), json!({"msg": {"to_user_id": OWNER, "item_list": []}})).await;
    assert_ne!(refused["ret"], 0);
    assert_eq!(h.sim.sent(&bot.ilink_bot_id).len(), 1);
}

/// What hermes' `_aes128_ecb_encrypt` does: PKCS#7 pad, then AES-128-ECB.
fn encrypt(plain: &[u8], key: &[u8; 16]) -> Vec<u8> {
    use aes::cipher::generic_array::GenericArray;
    use aes::cipher::{BlockEncrypt, KeyInit};
    let pad = 16 - plain.len() % 16;
    let mut out = plain.to_vec();
    out.extend(std::iter::repeat_n(pad as u8, pad));
    let cipher = aes::Aes128::new(GenericArray::from_slice(key));
    for block in out.chunks_exact_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_bot_sends_an_image_through_the_cdn_as_hermes_does() {
    use base64::Engine;
    use md5::Digest;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let h = harness().await;
    let bot = h.sim.add_bot(OWNER);
    let picture = b"\x89PNG\r\n\x1a\n not really a chart, but bytes all the same".to_vec();
    let key = *b"0123456789abcdef";
    let ciphertext = encrypt(&picture, &key);
    let announce = |filesize: usize| {
        json!({"filekey": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "media_type": 1, "to_user_id": OWNER, "rawsize": picture.len(),
               "rawfilemd5": hex(&md5::Md5::digest(&picture)), "filesize": filesize, "no_need_thumb": true, "aeskey": hex(&key)})
    };
    let (_, refused) = h.call("getuploadurl", Some(&bot.bot_token), announce(picture.len())).await;
    assert_ne!(refused["ret"], 0, "a filesize that is not the padded size: {refused}");
    let (_, answer) = h.call("getuploadurl", Some(&bot.bot_token), announce(ciphertext.len())).await;
    assert_eq!(answer["ret"], 0, "{answer}");
    let upload_param = answer["upload_param"].as_str().unwrap();

    let upload = |body: Vec<u8>, param: &str| {
        h.http
            .post(format!("{}/c2c/upload", h.url))
            .query(&[("encrypted_query_param", param), ("filekey", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")])
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
    };
    assert_eq!(upload(ciphertext.clone(), "unknown").await.unwrap().status(), StatusCode::NOT_FOUND);
    let wrong_key = upload(encrypt(&picture, b"fedcba9876543210"), upload_param).await.unwrap();
    assert_eq!(wrong_key.status(), StatusCode::BAD_REQUEST, "ciphertext under another key than announced");
    let uploaded = upload(ciphertext.clone(), upload_param).await.unwrap();
    assert_eq!(uploaded.status(), StatusCode::OK);
    let download = uploaded.headers()["x-encrypted-param"].to_str().unwrap().to_string();

    let image = |aes_key: String| {
        json!({"msg": {"from_user_id": "", "to_user_id": OWNER, "client_id": "hermes-weixin-2", "message_type": 2, "message_state": 2,
            "item_list": [{"type": 2, "image_item": {"media": {"encrypt_query_param": download, "aes_key": aes_key, "encrypt_type": 1},
                                                      "mid_size": ciphertext.len()}}]}})
    };
    // Base64 of the raw key (not of its hex) is what shows as a grey box on a phone: refused here.
    let (_, refused) = h.call("sendmessage", Some(&bot.bot_token), image(b64(&key))).await;
    assert_ne!(refused["ret"], 0, "{refused}");
    assert!(h.sim.sent(&bot.ilink_bot_id).is_empty());
    let (_, answer) = h.call("sendmessage", Some(&bot.bot_token), image(b64(hex(&key).as_bytes()))).await;
    assert_eq!(answer["ret"], 0, "{answer}");
    let sent = h.sim.sent(&bot.ilink_bot_id);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].media.len(), sent[0].media[0].item_type), (1, 2));
    assert_eq!(sent[0].media[0].bytes, picture, "the phone decrypts what was sent");
}

#[tokio::test]
async fn typing_needs_the_ticket_from_getconfig() {
    let h = harness().await;
    let bot = h.sim.add_bot(OWNER);
    let (_, config) = h.call("getconfig", Some(&bot.bot_token), json!({"ilink_user_id": OWNER, "context_token": "ctx"})).await;
    let ticket = config["typing_ticket"].as_str().unwrap();
    assert_eq!(config["ret"], 0);
    let (_, typing) =
        h.call("sendtyping", Some(&bot.bot_token), json!({"ilink_user_id": OWNER, "typing_ticket": ticket, "status": 1})).await;
    assert_eq!(typing["ret"], 0);
    let (_, wrong) = h.call("sendtyping", Some(&bot.bot_token), json!({"ilink_user_id": OWNER, "typing_ticket": "x", "status": 2})).await;
    assert_ne!(wrong["ret"], 0);
}

#[tokio::test]
async fn faults_and_counters_cover_the_api_but_not_the_controls() {
    let h = harness().await;
    let bot = h.sim.add_bot(OWNER);
    h.sim.set_fault(Fault::Down);
    let (status, _) = h.call("getupdates", Some(&bot.bot_token), json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = h.call("getuploadurl", Some(&bot.bot_token), json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let control = h
        .http
        .post(format!("{}/_sandbox/ilink/bots/{}/messages", h.url, bot.ilink_bot_id))
        .json(&json!({"from_user_id": OWNER, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(control.status(), StatusCode::OK);

    h.sim.set_fault(Fault::Slow(Duration::from_millis(200)));
    let started = Instant::now();
    let (status, _) = h.call("getconfig", Some(&bot.bot_token), json!({"ilink_user_id": OWNER})).await;
    assert!(status == StatusCode::OK && started.elapsed() >= Duration::from_millis(200));

    h.sim.set_fault(Fault::None);
    let (status, body) = h.call("getuploadurl", Some(&bot.bot_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body["ret"], 0, "an upload names its file: {body}");
    let calls: Value = h.http.get(format!("{}/_sandbox/calls", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(calls["POST /ilink/bot/getupdates"], 1);
    assert_eq!(calls["POST /ilink/bot/getuploadurl"], 2);
    assert_eq!(h.sim.calls("POST /ilink/bot/getconfig"), 1);
}

#[tokio::test]
async fn a_person_pairs_through_the_scan_page_and_the_json_controls() {
    let h = harness().await;
    let qr: Value = h.http.get(format!("{}/ilink/bot/get_bot_qrcode?bot_type=3", h.url)).send().await.unwrap().json().await.unwrap();
    let page_url = qr["qrcode_img_content"].as_str().unwrap().to_string();
    let key = qr["qrcode"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 32);

    let page = h.http.get(&page_url).send().await.unwrap();
    assert_eq!(page.headers()["x-twilight-sandbox"], "ilink");
    let html = page.text().await.unwrap();
    assert!(html.contains("SANDBOX") && html.contains(r#"id="status">wait<"#) && html.contains(r#"value="scan""#), "{html}");

    let scanned = h.http.post(&page_url).form(&[("action", "scan"), ("wechat_user", OWNER)]).send().await.unwrap();
    assert_eq!(scanned.status(), StatusCode::SEE_OTHER);
    let html = h.http.get(&page_url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(r#"id="status">scaned<"#) && html.contains(OWNER) && html.contains(r#"value="confirm""#));

    let view: Value =
        h.http.post(format!("{}/_sandbox/ilink/qrcodes/{key}/verify_code", h.url)).send().await.unwrap().json().await.unwrap();
    let code = view["verify_code"].as_str().unwrap().to_string();
    assert_eq!(view["stage"], "need_verifycode");
    let html = h.http.get(&page_url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(&format!(r#"id="code">{code}<"#)), "{html}");

    let refused = h.http.post(format!("{}/_sandbox/ilink/qrcodes/{key}/confirm", h.url)).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT, "the code comes first");
    let status: Value = h
        .http
        .get(format!("{}/ilink/bot/get_qrcode_status?qrcode={key}&verify_code={code}", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "scaned");
    let confirmed = h.http.post(&page_url).form(&[("action", "confirm")]).send().await.unwrap();
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    let view = h.sim.pairing(&key).unwrap();
    assert_eq!(view.stage, Stage::Confirmed);
    let status: Value =
        h.http.get(format!("{}/ilink/bot/get_qrcode_status?qrcode={key}", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&status["status"], &status["ilink_bot_id"], &status["ilink_user_id"]),
        (&json!("confirmed"), &json!(view.ilink_bot_id.unwrap()), &json!(OWNER))
    );

    let unknown = h.http.post(format!("{}/_sandbox/ilink/qrcodes/nope/scan", h.url)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
