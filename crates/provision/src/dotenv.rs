//! Editing a profile's `.env` in place: unrelated lines and comments stay as they are, a key is set or
//! removed, and the file is rewritten atomically with mode 0600.
//!
//! The reader that matters is hermes 0.19.0's `hermes_cli.env_loader.load_hermes_dotenv`: it first runs
//! hermes' own line sanitiser, then python-dotenv 1.2 (`load_dotenv(override=True)`, interpolation on).
//! Values are written the way hermes' own `_quote_env_value` writes them: bare when made of plain
//! characters, otherwise in double quotes with `\` and `"` escaped, which python-dotenv decodes back exactly.
//! Three things python-dotenv cannot read back, so they are refused instead of silently changed:
//! `${…}` (expanded at load time in every quoting style, with no escape), a trailing backslash (its
//! quoted-value pattern then swallows the closing quote) and control characters (line breaks would split
//! the entry for hermes' line-based sanitiser).

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::names::EnvKey;
use crate::secret_file;

/// The lines of one `.env` file. Lines may hold secrets: the type zeroizes them on drop and its `Debug`
/// shows only the path and the keys.
pub struct DotEnv {
    path: PathBuf,
    lines: Vec<Zeroizing<String>>,
}

impl DotEnv {
    /// Reads `path`; a missing file is an empty `.env` (hermes creates one lazily too).
    pub fn load(path: impl Into<PathBuf>) -> Result<DotEnv> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(String::new()),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        let lines = text.lines().map(|l| Zeroizing::new(l.to_owned())).collect();
        Ok(DotEnv { path, lines })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys assigned in the file, in order of first appearance.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for key in self.lines.iter().filter_map(|l| line_key(l)) {
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        }
        keys
    }

    /// Sets `key` to `value`: the first line assigning it is replaced in place, later duplicates are
    /// dropped (python-dotenv lets the last one win), and a new key is appended.
    pub fn set(&mut self, key: &EnvKey, value: &str) -> Result<()> {
        let mut new_line = Some(Zeroizing::new(format!("{key}={}", *quote(key, value)?)));
        for line in std::mem::take(&mut self.lines) {
            if line_key(&line) != Some(key.as_str()) {
                self.lines.push(line);
            } else if let Some(replacement) = new_line.take() {
                self.lines.push(replacement);
            }
        }
        self.lines.extend(new_line);
        Ok(())
    }

    /// Removes every line assigning `key`; returns whether there was one.
    pub fn remove(&mut self, key: &EnvKey) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| line_key(l) != Some(key.as_str()));
        before != self.lines.len()
    }

    /// Writes the file back atomically, mode 0600.
    pub fn save(&self) -> Result<()> {
        let mut text = Zeroizing::new(String::new());
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        secret_file::write_bytes(&self.path, text.as_bytes())
    }
}

impl fmt::Debug for DotEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DotEnv").field("path", &self.path).field("keys", &self.keys()).finish_non_exhaustive()
    }
}

/// The key a line assigns, recognising `KEY=…` and `export KEY=…` like hermes' `_env_line_defines_key`.
fn line_key(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
    let (key, _) = line.split_once('=')?;
    Some(key.trim_end())
}

/// The value as it must appear after `KEY=`.
fn quote(key: &EnvKey, value: &str) -> Result<Zeroizing<String>> {
    let refuse = |reason| Error::UnrepresentableValue { key: key.to_string(), reason };
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(refuse("it contains a control character (line break, NUL, …)"));
    }
    if value.contains("${") {
        return Err(refuse("python-dotenv expands `${…}` in every quoting style"));
    }
    if value.ends_with('\\') {
        // `"…\\"`: python-dotenv's quoted-value pattern takes the final `\"` as an escaped quote.
        return Err(refuse("python-dotenv misreads a value that ends in a backslash"));
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@+,=%".contains(c);
    if value.chars().all(plain) {
        return Ok(Zeroizing::new(value.to_owned()));
    }
    let mut quoted = Zeroizing::new(String::with_capacity(value.len() + 2));
    quoted.push('"');
    for c in value.chars() {
        if c == '\\' || c == '"' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> EnvKey {
        EnvKey::parse(k).unwrap()
    }

    #[test]
    fn quoting_matches_hermes_writer() {
        let q = |v: &str| quote(&key("K"), v).unwrap().to_string();
        assert_eq!(q(""), "");
        assert_eq!(q("sk-abc_DEF.1/2:3@x+y,z=%"), "sk-abc_DEF.1/2:3@x+y,z=%");
        assert_eq!(q("a b"), "\"a b\"");
        assert_eq!(q("a#b"), "\"a#b\"");
        assert_eq!(q(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(q("it's $HOME"), "\"it's $HOME\"");
        assert_eq!(q("张老师"), "\"张老师\"");
    }

    #[test]
    fn unreadable_values_are_refused_without_echoing_them() {
        for bad in ["line\nbreak", "cr\r", "nul\0", "${HOME}", "a${B:-c}", "ends in \\"] {
            let err = quote(&key("SECRET"), bad).unwrap_err().to_string();
            assert!(err.contains("SECRET"), "{err}");
            assert!(!err.contains(bad), "{err} echoes the value");
        }
    }

    #[test]
    fn set_and_remove_keep_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "# Per-profile secrets\nA=1\n\n# keep me\nexport B = old\nC=3 # trailing comment\nB=older\n").unwrap();
        let mut env = DotEnv::load(&path).unwrap();
        assert_eq!(env.keys(), ["A", "B", "C"]);
        env.set(&key("B"), "new value").unwrap();
        env.set(&key("D"), "4").unwrap();
        assert!(env.remove(&key("A")));
        assert!(!env.remove(&key("NOPE")));
        env.save().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# Per-profile secrets\n\n# keep me\nB=\"new value\"\nC=3 # trailing comment\nD=4\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_missing_file_is_empty_and_debug_hides_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = DotEnv::load(dir.path().join("profile/.env")).unwrap();
        assert!(env.keys().is_empty());
        env.set(&key("TWILIGHT_API_TOKEN"), "tok-secret-value").unwrap();
        let debug = format!("{env:?}");
        assert!(debug.contains("TWILIGHT_API_TOKEN") && !debug.contains("tok-secret-value"), "{debug}");
        env.save().unwrap();
        assert_eq!(std::fs::read_to_string(env.path()).unwrap(), "TWILIGHT_API_TOKEN=tok-secret-value\n");
    }
}
