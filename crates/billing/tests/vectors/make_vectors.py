#!/usr/bin/env python3
"""Writes wechatpay_vectors.json: WeChat Pay v3 signatures and an encrypted notification made by an
independent implementation (Python's `cryptography`), for tests/vectors.rs to cross-check the Rust
client against. The JSON is committed; tests never run Python.

    python3 -m venv /tmp/vecenv && /tmp/vecenv/bin/pip install cryptography
    /tmp/vecenv/bin/python crates/billing/tests/vectors/make_vectors.py

Each run makes fresh keys, so the committed file changes only when this script is re-run on purpose.
"""

import base64
import json
import os
import secrets
import string

import cryptography
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092024050100000000"
TIMESTAMP = "1714546800"  # 2024-05-01T15:00:00+08:00
ALPHANUM = string.ascii_letters + string.digits


def random_text(n):
    return "".join(secrets.choice(ALPHANUM) for _ in range(n))


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_private(key, fmt):
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key, message):
    """base64(RSA-SHA256, PKCS#1 v1.5): WECHATPAY2-SHA256-RSA2048."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def lines(*parts):
    """Every signed message is its fields, each followed by a newline."""
    return b"".join(p + b"\n" for p in parts)


def request_vector(key, method, path, body):
    nonce = random_text(32)
    message = lines(method.encode(), path.encode(), TIMESTAMP.encode(), nonce.encode(), body.encode())
    return {"method": method, "path": path, "timestamp": int(TIMESTAMP), "nonce": nonce, "body": body,
            "message": message.decode(), "signature": sign(key, message)}


def main():
    merchant = new_key()
    platform = new_key()
    api_v3_key = random_text(32)

    transaction = {
        "appid": APPID, "mchid": MCHID, "out_trade_no": "TD20240501150000ab12",
        "transaction_id": "4200002216202405011234567890", "trade_type": "NATIVE", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
        "success_time": "2024-05-01T14:59:58+08:00", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 19800, "payer_total": 19800, "currency": "CNY", "payer_currency": "CNY"},
    }
    plaintext = json.dumps(transaction, ensure_ascii=False, separators=(",", ":"))
    resource_nonce = random_text(12)
    ciphertext = AESGCM(api_v3_key.encode()).encrypt(resource_nonce.encode(), plaintext.encode(), b"transaction")
    notification = {
        "id": "EV-2018022511223320873", "create_time": "2024-05-01T15:00:00+08:00",
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": base64.b64encode(ciphertext).decode(), "associated_data": "transaction",
                     "nonce": resource_nonce},
    }
    # Spaces and non-ASCII on purpose: verification must use the raw bytes as received.
    body = json.dumps(notification, ensure_ascii=False, indent=1)
    notify_nonce = random_text(32)
    notify_message = lines(TIMESTAMP.encode(), notify_nonce.encode(), body.encode())

    order = {"appid": APPID, "mchid": MCHID, "description": "Twilight Drive 月度订阅", "out_trade_no": "TD20240501150000ab12",
             "notify_url": "https://example.com/wechatpay/notify", "amount": {"total": 19800, "currency": "CNY"}}
    vectors = {
        "generator": f"make_vectors.py with Python cryptography {cryptography.__version__}",
        "mchid": MCHID,
        "appid": APPID,
        "merchant": {
            "serial_no": MERCHANT_SERIAL,
            "private_key_pkcs8_pem": pem_private(merchant, serialization.PrivateFormat.PKCS8),
            "private_key_pkcs1_pem": pem_private(merchant, serialization.PrivateFormat.TraditionalOpenSSL),
            "public_key_pem": pem_public(merchant),
        },
        "platform": {
            "public_key_id": PUBLIC_KEY_ID,
            "private_key_pkcs8_pem": pem_private(platform, serialization.PrivateFormat.PKCS8),
            "public_key_pem": pem_public(platform),
        },
        "api_v3_key": api_v3_key,
        "requests": [
            request_vector(merchant, "POST", "/v3/pay/transactions/native", json.dumps(order, ensure_ascii=False)),
            request_vector(merchant, "GET", f"/v3/pay/transactions/out-trade-no/TD20240501150000ab12?mchid={MCHID}", ""),
        ],
        "notification": {
            "headers": {
                "Wechatpay-Timestamp": TIMESTAMP,
                "Wechatpay-Nonce": notify_nonce,
                "Wechatpay-Signature": sign(platform, notify_message),
                "Wechatpay-Serial": PUBLIC_KEY_ID,
                "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            },
            "body": body,
            "message": notify_message.decode(),
        },
        "resource": {
            "nonce": resource_nonce,
            "associated_data": "transaction",
            "ciphertext": notification["resource"]["ciphertext"],
            "plaintext": plaintext,
        },
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wechatpay_vectors.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(vectors, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
