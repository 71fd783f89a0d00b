//! Media as hermes' weixin adapter sends it (`_send_file` in `gateway/platforms/weixin.py`):
//! `getuploadurl` announces an upload (file key, media type, plaintext size and MD5, padded size, the
//! AES-128 key in hex) and answers an `upload_param`; the CDN (`POST /c2c/upload?
//! encrypted_query_param=<upload_param>&filekey=…`) takes the AES-128-ECB ciphertext and answers the
//! download parameter in the `x-encrypted-param` header; `sendmessage` then carries an item naming
//! that parameter with the key (base64 of its hex). A sent item is decrypted with the key the
//! message carries, as the receiving phone would: one that does not decrypt to the announced bytes
//! is refused.

use std::collections::HashMap;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, KeyInit};
use aes::Aes128;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::messaging::{authorize, failure};
use super::IlinkSim;
use crate::common;

/// iLink's item types that carry media, and the `*_item` key each is under.
const MEDIA_ITEMS: [(i64, &str); 4] = [(2, "image_item"), (3, "voice_item"), (4, "file_item"), (5, "video_item")];

pub fn api_router() -> Router<IlinkSim> {
    Router::new().route("/ilink/bot/getuploadurl", post(get_upload_url))
}

/// The CDN, at `<ilink base>/c2c` (what the provisioner sets as `WEIXIN_CDN_BASE_URL` in sandbox mode).
pub fn cdn_router() -> Router<IlinkSim> {
    Router::new().route("/c2c/upload", post(upload))
}

/// A media item a bot sent, decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMedia {
    /// iLink's item type: 2 image, 3 voice, 4 file, 5 video.
    pub item_type: i64,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub size: usize,
}

#[derive(Default)]
pub(super) struct Uploads {
    /// By `upload_param`: announced, not yet uploaded.
    announced: HashMap<String, Upload>,
    /// By download parameter (`encrypt_query_param`): the ciphertext the CDN holds.
    stored: HashMap<String, Vec<u8>>,
}

struct Upload {
    filekey: String,
    rawsize: usize,
    rawfilemd5: String,
    filesize: usize,
    aeskey: [u8; 16],
}

#[derive(Deserialize)]
struct GetUploadUrl {
    #[serde(default)]
    filekey: String,
    media_type: i64,
    #[serde(default)]
    to_user_id: String,
    rawsize: usize,
    #[serde(default)]
    rawfilemd5: String,
    filesize: usize,
    #[serde(default)]
    aeskey: String,
}

async fn get_upload_url(State(sim): State<IlinkSim>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let (_bot, request): (String, GetUploadUrl) = match authorize(&sim, &headers, &body) {
        Ok(call) => call,
        Err(refusal) => return refusal,
    };
    let problem = if request.filekey.is_empty() || request.to_user_id.is_empty() {
        Some("filekey and to_user_id are required".to_string())
    } else if !(1..=4).contains(&request.media_type) {
        Some(format!("unknown media_type {}", request.media_type))
    } else if from_hex(&request.aeskey).is_none() {
        Some("aeskey must be 16 bytes in hex".to_string())
    } else if request.filesize != padded_size(request.rawsize) {
        Some(format!("filesize {} is not rawsize {} padded to AES blocks", request.filesize, request.rawsize))
    } else {
        None
    };
    if let Some(problem) = problem {
        return failure(-1, &problem);
    }
    let upload_param = BASE64.encode(common::random_alphanumeric(48));
    let upload = Upload {
        aeskey: from_hex(&request.aeskey).expect("checked above"),
        filekey: request.filekey,
        rawsize: request.rawsize,
        rawfilemd5: request.rawfilemd5.to_ascii_lowercase(),
        filesize: request.filesize,
    };
    sim.state().uploads.announced.insert(upload_param.clone(), upload);
    Json(json!({"ret": 0, "upload_param": upload_param}))
}

#[derive(Deserialize)]
struct UploadQuery {
    encrypted_query_param: String,
    filekey: String,
}

async fn upload(State(sim): State<IlinkSim>, Query(query): Query<UploadQuery>, body: Bytes) -> Response {
    let mut state = sim.state();
    let refuse = |status: StatusCode, why: &str| (status, why.to_string()).into_response();
    let Some(upload) = state.uploads.announced.get(&query.encrypted_query_param) else {
        return refuse(StatusCode::NOT_FOUND, "unknown upload");
    };
    if upload.filekey != query.filekey {
        return refuse(StatusCode::BAD_REQUEST, "filekey does not match the announced upload");
    }
    if body.len() != upload.filesize {
        return refuse(StatusCode::BAD_REQUEST, &format!("{} bytes uploaded, {} announced", body.len(), upload.filesize));
    }
    // The CDN holds the key from getuploadurl: what was uploaded must be what was announced.
    match decrypt(&body, &upload.aeskey) {
        Some(plain)
            if plain.len() == upload.rawsize && (upload.rawfilemd5.is_empty() || hex_of(&Md5::digest(&plain)) == upload.rawfilemd5) => {}
        _ => return refuse(StatusCode::BAD_REQUEST, "the upload does not decrypt to the announced size and MD5"),
    }
    state.uploads.announced.remove(&query.encrypted_query_param);
    let download = BASE64.encode(common::random_alphanumeric(64));
    state.uploads.stored.insert(download.clone(), body.to_vec());
    ([("x-encrypted-param", download)], "").into_response()
}

/// PKCS#7 pads to whole 16-byte blocks, a full block when already whole.
fn padded_size(size: usize) -> usize {
    (size / 16 + 1) * 16
}

impl Uploads {
    /// The media items of a sent `item_list`, decrypted with the keys they carry; the reason
    /// when one names no upload or does not decrypt.
    pub(super) fn resolve(&self, items: &[Value]) -> Result<Vec<SentMedia>, String> {
        let mut media = Vec::new();
        for item in items {
            let Some((item_type, key)) = MEDIA_ITEMS.iter().find(|(t, _)| item["type"].as_i64() == Some(*t)) else { continue };
            let reference = &item[key]["media"];
            let param = reference["encrypt_query_param"].as_str().ok_or_else(|| format!("{key} has no media.encrypt_query_param"))?;
            let ciphertext = self.stored.get(param).ok_or_else(|| format!("{key} names no uploaded file"))?;
            let aes_key =
                reference["aes_key"].as_str().and_then(aes_key).ok_or_else(|| format!("{key}.media.aes_key is not base64 of a hex key"))?;
            let bytes = decrypt(ciphertext, &aes_key).ok_or_else(|| format!("{key} does not decrypt with its aes_key"))?;
            media.push(SentMedia { item_type: *item_type, size: bytes.len(), bytes });
        }
        Ok(media)
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `aes_key` as hermes sends it in a message: base64 of the key's 32 hex digits.
fn aes_key(encoded: &str) -> Option<[u8; 16]> {
    from_hex(&String::from_utf8(BASE64.decode(encoded).ok()?).ok()?)
}

/// A 16-byte key from its 32 hex digits.
fn from_hex(hex: &str) -> Option<[u8; 16]> {
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (hex.len() == 32).then_some(key)
}

/// AES-128-ECB with PKCS#7 padding; `None` when the padding is wrong (a wrong key).
fn decrypt(ciphertext: &[u8], key: &[u8; 16]) -> Option<Vec<u8>> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return None;
    }
    let cipher = Aes128::new(GenericArray::from_slice(key));
    let mut plain = ciphertext.to_vec();
    for block in plain.chunks_exact_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
    }
    let pad = usize::from(*plain.last()?);
    if !(1..=16).contains(&pad) || !plain[plain.len() - pad..].iter().all(|b| usize::from(*b) == pad) {
        return None;
    }
    plain.truncate(plain.len() - pad);
    Some(plain)
}

#[cfg(test)]
mod tests {
    use aes::cipher::BlockEncrypt;

    use super::*;

    /// What hermes' `_aes128_ecb_encrypt` does: PKCS#7 pad, then AES-128-ECB.
    fn encrypt(plain: &[u8], key: &[u8; 16]) -> Vec<u8> {
        let pad = 16 - plain.len() % 16;
        let mut out = plain.to_vec();
        out.extend(std::iter::repeat_n(pad as u8, pad));
        let cipher = Aes128::new(GenericArray::from_slice(key));
        for block in out.chunks_exact_mut(16) {
            cipher.encrypt_block(GenericArray::from_mut_slice(block));
        }
        out
    }

    #[test]
    fn ciphertext_round_trips_and_a_wrong_key_is_caught() {
        let key = *b"0123456789abcdef";
        for plain in [&b""[..], b"sixteen bytes!!!", b"\x89PNG\r\n\x1a\n a picture"] {
            let ciphertext = encrypt(plain, &key);
            assert_eq!(ciphertext.len(), padded_size(plain.len()));
            assert_eq!(decrypt(&ciphertext, &key).as_deref(), Some(plain));
        }
        let ciphertext = encrypt(b"\x89PNG\r\n\x1a\n a picture", &key);
        assert_eq!(decrypt(&ciphertext, b"fedcba9876543210"), None, "a wrong key leaves no valid padding");
        assert_eq!(aes_key(&BASE64.encode(hex_of(&key))), Some(key), "hermes sends base64 of the hex");
        assert_eq!(aes_key(&BASE64.encode(key)), None, "base64 of the raw key is what makes grey boxes");
    }
}
