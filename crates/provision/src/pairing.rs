//! What pairing with WeChat leaves in a profile: the account file hermes' weixin adapter reads and
//! the `.env` keys that point it at the bot and let only the paying user talk to it.

use std::path::Path;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use twilight_ilink::PairingStatus;

use crate::error::Result;

/// A bot iLink confirmed for a user.
pub struct PairedBot {
    pub bot_token: SecretString,
    /// `<hex>@im.bot`.
    pub bot_id: String,
    /// Where the bot's API lives.
    pub base_url: String,
    /// The WeChat user who scanned: the only one allowed to talk to the bot.
    pub owner: String,
}

impl std::fmt::Debug for PairedBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairedBot")
            .field("bot_id", &self.bot_id)
            .field("base_url", &self.base_url)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// The status word the onboarding page shows for a pairing state (iLink's own words).
pub fn status_word(status: &PairingStatus) -> &'static str {
    match status {
        PairingStatus::Wait => "wait",
        PairingStatus::Scanned => "scaned",
        PairingStatus::NeedVerifyCode => "need_verifycode",
        PairingStatus::VerifyCodeBlocked => "verify_code_blocked",
        PairingStatus::ScannedButRedirect { .. } => "scaned_but_redirect",
        PairingStatus::Expired => "expired",
        PairingStatus::BindedRedirect => "binded_redirect",
        PairingStatus::Confirmed { .. } => "confirmed",
    }
}

/// `<profile>/weixin/accounts/<bot_id>.json` (mode 0600), as hermes' `qr_login` saves it.
pub fn write_account_file(profile_dir: &Path, bot: &PairedBot) -> Result<()> {
    let account = serde_json::json!({
        "token": bot.bot_token.expose_secret(),
        "base_url": bot.base_url,
        "user_id": bot.owner,
        "saved_at": Utc::now().to_rfc3339(),
    });
    let path = profile_dir.join("weixin").join("accounts").join(format!("{}.json", bot.bot_id));
    crate::secret_file::write(&path, &account.to_string())
}

/// The paired bot as [`write_account_file`] saved it into the profile, for our side to speak as it.
pub fn read_account_file(profile_dir: &Path, bot_id: &str) -> Result<PairedBot> {
    let path = profile_dir.join("weixin").join("accounts").join(format!("{bot_id}.json"));
    let text = std::fs::read_to_string(&path).map_err(crate::Error::io("reading", &path))?;
    let saved: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| crate::Error::Hermes { profile: bot_id.to_string(), reason: "the bot's account file is not JSON" })?;
    let field = |name: &str| saved[name].as_str().unwrap_or_default().to_string();
    Ok(PairedBot { bot_token: field("token").into(), bot_id: bot_id.to_string(), base_url: field("base_url"), owner: field("user_id") })
}

/// The `.env` keys (besides the planted `WEIXIN_TOKEN`) that enable the weixin adapter for this
/// bot and allow only its owner: direct messages by allowlist, no groups, replies at home.
pub fn allowlist_env(bot: &PairedBot, cdn_base_url: &str) -> [(&'static str, String); 8] {
    [
        ("WEIXIN_ACCOUNT_ID", bot.bot_id.clone()),
        ("WEIXIN_BASE_URL", bot.base_url.clone()),
        ("WEIXIN_CDN_BASE_URL", cdn_base_url.to_string()),
        ("WEIXIN_DM_POLICY", "allowlist".into()),
        ("WEIXIN_ALLOW_ALL_USERS", "false".into()),
        ("WEIXIN_ALLOWED_USERS", bot.owner.clone()),
        ("WEIXIN_GROUP_POLICY", "disabled".into()),
        // Without a home channel hermes answers a new chat with a "/sethome" notice first.
        ("WEIXIN_HOME_CHANNEL", bot.owner.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_file_is_private_and_the_allowlist_names_only_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let bot = PairedBot {
            bot_token: "tok-secret".to_string().into(),
            bot_id: "abc@im.bot".into(),
            base_url: "https://ilink".into(),
            owner: "wx-owner".into(),
        };
        write_account_file(dir.path(), &bot).unwrap();
        let path = dir.path().join("weixin/accounts/abc@im.bot.json");
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!((saved["token"].as_str(), saved["user_id"].as_str()), (Some("tok-secret"), Some("wx-owner")));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let env = allowlist_env(&bot, "https://cdn");
        let allowed: Vec<_> = env.iter().filter(|(_, value)| value == "wx-owner").map(|(key, _)| *key).collect();
        assert_eq!(allowed, ["WEIXIN_ALLOWED_USERS", "WEIXIN_HOME_CHANNEL"]);
        assert!(!format!("{bot:?}").contains("tok-secret"));
    }
}
