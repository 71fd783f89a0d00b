//! Validated names: a value of these types is safe to pass to hermes, to use as a path component and to
//! write as a `.env` key, so nothing downstream re-checks.

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result};

/// The profile every user profile is cloned from.
pub const TEMPLATE_PROFILE: &str = "template-stock-research-pro";

/// Names hermes 0.19.0 refuses for a profile (`hermes_cli/profiles.py::_RESERVED_NAMES`).
const RESERVED: [&str; 6] = ["hermes", "default", "test", "tmp", "root", "sudo"];

/// A hermes profile name: `^[a-z0-9][a-z0-9_-]{0,63}$` and not reserved, exactly what
/// `hermes_cli.profiles.validate_profile_name` accepts, so hermes never rejects a name we built.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProfileName(String);

impl ProfileName {
    pub fn parse(name: &str) -> Result<ProfileName> {
        let invalid = |reason| Error::InvalidProfileName { name: name.to_owned(), reason };
        let bytes = name.as_bytes();
        match bytes.first() {
            None => return Err(invalid("empty")),
            Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
                return Err(invalid("must start with a lowercase letter or digit"))
            }
            Some(_) => {}
        }
        if bytes.len() > 64 {
            return Err(invalid("longer than 64 characters"));
        }
        if !bytes.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_') {
            return Err(invalid("only a-z, 0-9, '-' and '_' are allowed"));
        }
        if RESERVED.contains(&name) {
            return Err(invalid("reserved by hermes"));
        }
        Ok(ProfileName(name.to_owned()))
    }

    /// The profile of one user: `user-<uuid without hyphens>` (37 characters), stable for the user's life.
    pub fn for_user(user_id: Uuid) -> ProfileName {
        ProfileName(format!("user-{}", user_id.simple()))
    }

    /// [`TEMPLATE_PROFILE`].
    pub fn template() -> ProfileName {
        ProfileName(TEMPLATE_PROFILE.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProfileName({})", self.0)
    }
}

/// An environment variable name, `^[A-Z_][A-Z0-9_]*$`: safe as a `.env` key, a file name in a secret
/// store and a systemd credential name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvKey(String);

impl EnvKey {
    pub fn parse(key: &str) -> Result<EnvKey> {
        let mut chars = key.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            Ok(EnvKey(key.to_owned()))
        } else {
            Err(Error::InvalidEnvKey(key.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_follow_hermes_rules() {
        for ok in ["a", "0", "user-abc", "a_b-c", TEMPLATE_PROFILE, &"a".repeat(64)] {
            assert_eq!(ProfileName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "_a", "A", "user.x", "user/x", "../x", "a b", "é", &"a".repeat(65)] {
            assert!(ProfileName::parse(bad).is_err(), "{bad:?} accepted");
        }
        for reserved in RESERVED {
            assert!(ProfileName::parse(reserved).is_err(), "{reserved} accepted");
        }
    }

    #[test]
    fn user_profiles_are_valid_lowercase_and_fit() {
        let id = Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        let name = ProfileName::for_user(id);
        assert_eq!(name.as_str(), "user-6f9619ff8b86d011b42d00c04fc964ff");
        assert_eq!(ProfileName::parse(name.as_str()).unwrap(), name);
    }

    #[test]
    fn env_keys() {
        for ok in ["A", "_", "TWILIGHT_API_TOKEN", "K9"] {
            EnvKey::parse(ok).unwrap();
        }
        for bad in ["", "a", "9A", "A-B", "A B", "A=B", "Ä"] {
            assert!(EnvKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
