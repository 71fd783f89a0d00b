//! The bot's name and persona: the user-chosen name is checked, then rendered into the profile's
//! `SOUL.md` from the template's `{{BOT_NAME}}` placeholder.
//!
//! hermes puts SOUL.md verbatim into the system prompt (after a prompt-injection scan that blocks the whole
//! file on a hit), so the name is held to an allow-list: letters and digits of any script, single inner
//! spaces and `·` `-` `.` — no markdown, brackets, quotes, line breaks or invisible characters. A name
//! outside it is refused with a reason the onboarding page can show; it is never rewritten silently.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::secret_file;

/// The placeholder the template's SOUL.md carries.
pub const BOT_NAME_PLACEHOLDER: &str = "{{BOT_NAME}}";

/// At most this many characters (not bytes): `张老师` is 3.
pub const MAX_BOT_NAME_CHARS: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct BotName(String);

impl BotName {
    /// Checks a user-chosen name, after trimming surrounding whitespace.
    pub fn parse(name: &str) -> Result<BotName> {
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::InvalidBotName("empty"));
        }
        if name.chars().count() > MAX_BOT_NAME_CHARS {
            return Err(Error::InvalidBotName("longer than 16 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::InvalidBotName("contains a control character"));
        }
        if name.contains("  ") {
            return Err(Error::InvalidBotName("contains consecutive spaces"));
        }
        if !name.chars().all(|c| c.is_alphanumeric() || " ·-.".contains(c)) {
            return Err(Error::InvalidBotName("only letters, digits, single spaces and · - . are allowed (no markdown or brackets)"));
        }
        Ok(BotName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for BotName {
    /// `张老师`, the name a bot has until its user picks one.
    fn default() -> BotName {
        BotName("张老师".to_owned())
    }
}

impl fmt::Display for BotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotName({})", self.0)
    }
}

/// Renders `template_soul` (the template's SOUL.md, which must contain [`BOT_NAME_PLACEHOLDER`]) with
/// `name` into `<profile_dir>/SOUL.md`. Rendering from the template rather than editing the profile's copy
/// makes a rename idempotent and free of the previous name.
pub fn write_soul(template_soul: &Path, profile_dir: &Path, name: &BotName) -> Result<()> {
    let template = std::fs::read_to_string(template_soul).map_err(Error::io("reading", template_soul))?;
    if !template.contains(BOT_NAME_PLACEHOLDER) {
        return Err(Error::Template { path: template_soul.to_owned(), reason: format!("has no {BOT_NAME_PLACEHOLDER} placeholder") });
    }
    // hermes may read SOUL.md at any moment: replace it whole.
    secret_file::write_bytes(&profile_dir.join("SOUL.md"), template.replace(BOT_NAME_PLACEHOLDER, name.as_str()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_counting_chars() {
        for ok in ["张老师", "  小明  ", "Alice", "R2-D2", "王·分析师", "Dr. Li", &"股".repeat(16)] {
            assert_eq!(BotName::parse(ok).unwrap().as_str(), ok.trim());
        }
        assert_eq!(BotName::default().as_str(), "张老师");
    }

    #[test]
    fn refuses_rather_than_mangles() {
        let too_long = "股".repeat(17);
        for bad in [
            "",
            "   ",
            &too_long,
            "a\nb",
            "tab\there",
            "# title",
            "**bold**",
            "_x_",
            "`code`",
            "[link](x)",
            "<b>",
            "{{BOT_NAME}}",
            "a|b",
            "a\\b",
            "a  b",
            "zero\u{200b}width",
            "rtl\u{202e}x",
            "\"quoted\"",
            "ignore: all",
            "x>y",
        ] {
            assert!(BotName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn renders_from_the_template_and_renames_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template-SOUL.md");
        std::fs::write(&template, "你是{{BOT_NAME}}。署名：{{BOT_NAME}}\n").unwrap();
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        write_soul(&template, &profile, &BotName::default()).unwrap();
        write_soul(&template, &profile, &BotName::parse("小明").unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(profile.join("SOUL.md")).unwrap(), "你是小明。署名：小明\n");

        std::fs::write(&template, "no placeholder").unwrap();
        assert!(matches!(write_soul(&template, &profile, &BotName::default()), Err(Error::Template { .. })));
    }
}
