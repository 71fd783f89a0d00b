//! Driving the `hermes` CLI (hermes-agent 0.19.0) on this host: profiles, the template, the persona.
//!
//! Every step is idempotent so the provisioner can retry it blindly: creating a profile that exists, or
//! deleting one that does not, succeeds. hermes runs with a clean environment (see [`HermesCli::command`])
//! so nothing of the backend's own environment — database URLs, upstream tokens — reaches a user's agent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::command;
use crate::dotenv::DotEnv;
use crate::error::{Error, Result};
use crate::names::ProfileName;
use crate::soul::{self, BotName};

/// Variables a hermes process inherits from ours; everything else is dropped.
const INHERITED_ENV: [&str; 7] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];
/// All a gateway inherits from ours (the rest is [`HermesCli::gateway_env`]).
const GATEWAY_INHERITED_ENV: [&str; 3] = ["LANG", "LC_ALL", "TZ"];

/// Written by `hermes profile create --no-skills`; keeps `hermes update` from seeding ~100 bundled skills.
/// `--clone-from` does not copy it, so [`HermesCli::create_profile`] does.
const NO_BUNDLED_SKILLS: &str = ".no-bundled-skills";

/// Files a template must ship; SOUL.md must also carry [`soul::BOT_NAME_PLACEHOLDER`].
const TEMPLATE_FILES: [&str; 2] = ["config.yaml", "SOUL.md"];

/// One hermes installation and one hermes root (`HERMES_HOME`).
///
/// `home` must be a hermes *root*: `~/.hermes` itself or a directory outside `~/.hermes` (hermes maps any
/// `HERMES_HOME` inside `~/.hermes` back to `~/.hermes`). Profiles live in `home/profiles/<name>`.
#[derive(Clone, Debug)]
pub struct HermesCli {
    bin: PathBuf,
    home: PathBuf,
    timeout: Duration,
}

impl HermesCli {
    /// `bin` is the venv's `bin/hermes` (as printed by `scripts/install-hermes`).
    pub fn new(bin: impl Into<PathBuf>, home: impl Into<PathBuf>) -> HermesCli {
        HermesCli { bin: bin.into(), home: home.into(), timeout: Duration::from_secs(120) }
    }

    /// How long one hermes command may take before it is killed (default 120 s).
    pub fn with_timeout(mut self, timeout: Duration) -> HermesCli {
        self.timeout = timeout;
        self
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The venv's interpreter, beside `bin/hermes`: what a systemd unit runs (`python -m hermes_cli.main`).
    pub fn python(&self) -> PathBuf {
        self.bin.with_file_name("python")
    }

    pub fn profile_dir(&self, name: &ProfileName) -> PathBuf {
        self.home.join("profiles").join(name.as_str())
    }

    /// The profile's `.env`, which hermes loads (overriding its environment) when the profile starts.
    pub fn env_file(&self, name: &ProfileName) -> PathBuf {
        self.profile_dir(name).join(".env")
    }

    /// hermes' own test (`hermes_cli.profiles.profile_exists`) is "the profile directory exists".
    pub async fn profile_exists(&self, name: &ProfileName) -> Result<bool> {
        let dir = self.profile_dir(name);
        match tokio::fs::metadata(&dir).await {
            Ok(meta) => Ok(meta.is_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspecting", dir)(e)),
        }
    }

    /// `hermes profile create NAME --clone-from TEMPLATE --no-alias`: copies the template's config.yaml,
    /// .env (tightened to 0600), SOUL.md and skills/. An existing profile is left alone.
    pub async fn create_profile(&self, name: &ProfileName, clone_from: &ProfileName) -> Result<PathBuf> {
        let dir = self.profile_dir(name);
        if self.profile_exists(name).await? {
            return Ok(dir);
        }
        self.run(["profile", "create", name.as_str(), "--clone-from", clone_from.as_str(), "--no-alias"]).await?;
        if !self.profile_exists(name).await? {
            return Err(Error::Hermes { profile: name.to_string(), reason: "create succeeded but left no directory" });
        }
        let marker = self.profile_dir(clone_from).join(NO_BUNDLED_SKILLS);
        if tokio::fs::try_exists(&marker).await.map_err(Error::io("inspecting", &marker))? {
            let target = dir.join(NO_BUNDLED_SKILLS);
            tokio::fs::copy(&marker, &target).await.map_err(Error::io("copying", target))?;
        }
        Ok(dir)
    }

    /// `hermes profile delete NAME -y`: stops its gateway if hermes sees one, removes the directory.
    /// A missing profile is already deleted.
    pub async fn delete_profile(&self, name: &ProfileName) -> Result<()> {
        if !self.profile_exists(name).await? {
            return Ok(());
        }
        self.run(["profile", "delete", name.as_str(), "-y"]).await?;
        if self.profile_exists(name).await? {
            return Err(Error::Hermes { profile: name.to_string(), reason: "delete succeeded but the directory remains" });
        }
        Ok(())
    }

    /// Creates (`hermes profile create NAME --no-alias --no-skills`) or updates the template profile from
    /// the shipped `src_dir`: every top-level file is replaced, every top-level directory (skills/, …) is
    /// replaced whole so a skill dropped from the template disappears too. Refuses a template that lacks
    /// config.yaml or a SOUL.md with the bot-name placeholder, or whose `.env` assigns any key: profiles
    /// are cloned from it, so a value there would reach every user.
    pub async fn install_template(&self, src_dir: &Path, name: &ProfileName) -> Result<PathBuf> {
        check_template(src_dir)?;
        if !self.profile_exists(name).await? {
            self.run(["profile", "create", name.as_str(), "--no-alias", "--no-skills"]).await?;
        }
        let (src, dir) = (src_dir.to_owned(), self.profile_dir(name));
        tokio::task::spawn_blocking(move || overlay(&src, &dir).map(|()| dir)).await.expect("template copy panicked")
    }

    /// Takes `tools` out of every platform's toolset list (`platform_toolsets:`, flow lists as the
    /// template writes them) in `name`'s config.yaml; refuses a config whose lists it cannot edit,
    /// rather than leave a withheld tool enabled.
    pub async fn withhold_tools(&self, name: &ProfileName, tools: &'static [&'static str]) -> Result<()> {
        let path = self.profile_dir(name).join("config.yaml");
        tokio::task::spawn_blocking(move || {
            let config = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
            let edited = without_tools(&config, tools)
                .map_err(|reason| Error::Template { path: path.clone(), reason: format!("cannot withhold {tools:?}: {reason}") })?;
            std::fs::write(&path, edited).map_err(Error::io("writing", &path))
        })
        .await
        .expect("config edit panicked")
    }

    /// Renders `profile`'s SOUL.md from the installed template's SOUL.md with the bot's name. Rendering
    /// from the template (not the profile's own copy) makes renaming repeatable.
    pub async fn write_soul(&self, profile: &ProfileName, template: &ProfileName, name: &BotName) -> Result<()> {
        let (template_soul, dir, name) = (self.profile_dir(template).join("SOUL.md"), self.profile_dir(profile), name.clone());
        tokio::task::spawn_blocking(move || soul::write_soul(&template_soul, &dir, &name)).await.expect("SOUL.md write panicked")
    }

    /// `hermes ARGS…` with `HERMES_HOME`, `HERMES_DISABLE_LAZY_INSTALLS=1` (never pip-install at run time),
    /// stdin from /dev/null, and an environment reduced to PATH, HOME, USER, LOGNAME, LANG, LC_ALL and TZ:
    /// the profile commands the provisioner runs. Gateways get even less ([`HermesCli::gateway_command`]).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.env_clear();
        for key in INHERITED_ENV {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.env("HERMES_HOME", &self.home).env("HERMES_DISABLE_LAZY_INSTALLS", "1");
        command
    }

    /// `hermes --profile NAME gateway run`, the foreground gateway a supervisor keeps alive, in the profile
    /// directory with [`HermesCli::gateway_env`] plus LANG, LC_ALL and TZ if we have them, and nothing else
    /// of ours. The profile's secrets reach it through its `.env`, which hermes loads itself.
    pub fn gateway_command(&self, profile: &ProfileName) -> Command {
        let mut command = Command::new(&self.bin);
        command.env_clear().envs(self.gateway_environment(profile));
        command.args(Self::gateway_args(profile)).current_dir(self.profile_dir(profile));
        command
    }

    /// `hermes`' arguments for a profile's foreground gateway.
    pub fn gateway_args(profile: &ProfileName) -> [&str; 4] {
        ["--profile", profile.as_str(), "gateway", "run"]
    }

    /// A gateway's whole environment as the supervisor starts it: [`HermesCli::gateway_env`] plus LANG,
    /// LC_ALL and TZ if we have them.
    pub fn gateway_environment(&self, profile: &ProfileName) -> Vec<(&'static str, OsString)> {
        let inherited = GATEWAY_INHERITED_ENV.into_iter().filter_map(|key| Some((key, std::env::var_os(key)?)));
        inherited.chain(self.gateway_env(profile)).collect()
    }

    /// A gateway's environment, whoever starts it (the supervisor, a unit's `Environment=` lines): the hermes
    /// root; HOME and the kanban board inside the profile (hermes otherwise keeps one board for all profiles
    /// in its root, which a gateway confined to its profile cannot and should not write); no package
    /// installs at run time; the venv first on PATH; two malloc arenas (README, "Capacity": 5 MiB less a
    /// gateway; its threads mostly wait on I/O under the GIL, so two are no bottleneck).
    pub fn gateway_env(&self, profile: &ProfileName) -> Vec<(&'static str, OsString)> {
        let dir = self.profile_dir(profile);
        let venv_bin = self.bin.parent().unwrap_or(Path::new("/"));
        let venv = venv_bin.parent().unwrap_or(Path::new("/"));
        let mut path = venv_bin.as_os_str().to_owned();
        path.push(":/usr/local/bin:/usr/bin:/bin");
        vec![
            ("HERMES_HOME", self.home.clone().into()),
            ("HERMES_KANBAN_HOME", dir.clone().into()),
            ("HOME", dir.into()),
            ("HERMES_DISABLE_LAZY_INSTALLS", "1".into()),
            ("VIRTUAL_ENV", venv.into()),
            ("PATH", path),
            ("MALLOC_ARENA_MAX", "2".into()),
        ]
    }

    async fn run<const N: usize>(&self, args: [&str; N]) -> Result<()> {
        tokio::fs::create_dir_all(&self.home).await.map_err(Error::io("creating", &self.home))?;
        let mut command = self.command();
        command.args(args).current_dir(&self.home);
        command::run(command, None, self.timeout).await.map(drop)
    }
}

fn check_template(src: &Path) -> Result<()> {
    let bad = |reason: String| Error::Template { path: src.to_owned(), reason };
    for file in TEMPLATE_FILES {
        if !src.join(file).is_file() {
            return Err(bad(format!("missing {file}")));
        }
    }
    let soul = std::fs::read_to_string(src.join("SOUL.md")).map_err(Error::io("reading", src.join("SOUL.md")))?;
    if !soul.contains(soul::BOT_NAME_PLACEHOLDER) {
        return Err(bad(format!("SOUL.md has no {} placeholder", soul::BOT_NAME_PLACEHOLDER)));
    }
    let keys = DotEnv::load(src.join(".env"))?.keys();
    if !keys.is_empty() {
        return Err(bad(format!(".env must assign no keys (per-user values are planted per profile), found {keys:?}")));
    }
    Ok(())
}

/// Copies `src` over `dst`: files replaced, top-level directories replaced whole. `.env` ends up 0600.
fn overlay(src: &Path, dst: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src).map_err(Error::io("listing", src))? {
        let entry = entry.map_err(Error::io("listing", src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().map_err(Error::io("inspecting", &from))?;
        if kind.is_dir() {
            if to.exists() {
                std::fs::remove_dir_all(&to).map_err(Error::io("removing", &to))?;
            }
            copy_dir(&from, &to)?;
        } else if kind.is_file() {
            if entry.file_name() == ".env" {
                let bytes = std::fs::read(&from).map_err(Error::io("reading", &from))?;
                crate::secret_file::write_bytes(&to, &bytes)?;
            } else {
                std::fs::copy(&from, &to).map_err(Error::io("copying", &from))?;
            }
        } else {
            return Err(Error::Template { path: from, reason: "only plain files and directories are allowed".into() });
        }
    }
    Ok(())
}

/// `config` with `tools` removed from the one-line lists under `platform_toolsets:`; the reason
/// when one of them is still named in that block afterwards (a list written some other way).
fn without_tools(config: &str, tools: &[&str]) -> std::result::Result<String, String> {
    let mut in_block = false;
    let mut edited = Vec::new();
    for line in config.lines() {
        if !line.starts_with([' ', '#']) && !line.is_empty() {
            in_block = line.trim_end() == "platform_toolsets:";
        }
        let list = line.split_once(": [").and_then(|(platform, rest)| Some((platform, rest.trim_end().strip_suffix(']')?)));
        match list {
            Some((platform, items)) if in_block => {
                let kept: Vec<&str> = items.split(',').map(str::trim).filter(|item| !tools.contains(item)).collect();
                edited.push(format!("{platform}: [{}]", kept.join(", ")));
            }
            _ if in_block && tools.iter().any(|tool| line.contains(tool)) => {
                return Err(format!("platform_toolsets names one in a form other than a one-line list: {line:?}"));
            }
            _ => edited.push(line.to_string()),
        }
    }
    Ok(edited.join("\n") + "\n")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(Error::io("listing", from))? {
        let entry = entry.map_err(Error::io("listing", from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(Error::io("inspecting", &src))?;
        if kind.is_dir() {
            copy_dir(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(Error::io("copying", &src))?;
        } else {
            return Err(Error::Template { path: src, reason: "only plain files and directories are allowed".into() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(dir: &Path) {
        std::fs::create_dir_all(dir.join("skills/a")).unwrap();
        std::fs::write(dir.join("config.yaml"), "model: {}\n").unwrap();
        std::fs::write(dir.join("SOUL.md"), "I am {{BOT_NAME}}\n").unwrap();
        std::fs::write(dir.join("skills/a/SKILL.md"), "---\nname: a\n---\n").unwrap();
        std::fs::write(dir.join(".env"), "# nothing per user\n").unwrap();
    }

    #[test]
    fn templates_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        template(dir.path());
        check_template(dir.path()).unwrap();

        std::fs::write(dir.path().join(".env"), "# ok\nTWILIGHT_API_TOKEN=leak\n").unwrap();
        let err = check_template(dir.path()).unwrap_err().to_string();
        assert!(err.contains("TWILIGHT_API_TOKEN") && !err.contains("leak"), "{err}");

        std::fs::write(dir.path().join(".env"), "").unwrap();
        std::fs::write(dir.path().join("SOUL.md"), "no placeholder").unwrap();
        assert!(check_template(dir.path()).is_err());
        std::fs::remove_file(dir.path().join("config.yaml")).unwrap();
        assert!(check_template(dir.path()).unwrap_err().to_string().contains("config.yaml"));
    }

    #[test]
    fn withheld_tools_leave_every_platform_list() {
        let config = "# a comment\nplatform_toolsets:\n  weixin: [twilight, skills, session_search]\n  cli: [session_search]\n\nmcp_servers:\n  session_search: kept\n";
        assert_eq!(
            without_tools(config, &["session_search"]).unwrap(),
            "# a comment\nplatform_toolsets:\n  weixin: [twilight, skills]\n  cli: []\n\nmcp_servers:\n  session_search: kept\n"
        );
        let block = "platform_toolsets:\n  weixin:\n    - twilight\n    - session_search\n";
        assert!(without_tools(block, &["session_search"]).unwrap_err().contains("one-line list"));
    }

    #[test]
    fn overlay_replaces_directories_whole() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        template(src.path());
        std::fs::create_dir_all(dst.path().join("skills/stale")).unwrap();
        std::fs::write(dst.path().join("skills/stale/SKILL.md"), "old").unwrap();
        std::fs::write(dst.path().join("keep.txt"), "mine").unwrap();
        overlay(src.path(), dst.path()).unwrap();
        assert!(!dst.path().join("skills/stale").exists());
        assert!(dst.path().join("skills/a/SKILL.md").is_file());
        assert_eq!(std::fs::read_to_string(dst.path().join("keep.txt")).unwrap(), "mine");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dst.path().join(".env")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn commands_carry_hermes_home_and_no_foreign_environment() {
        let cli = HermesCli::new("/venv/bin/hermes", "/srv/hermes");
        assert_eq!(cli.python(), Path::new("/venv/bin/python"));
        let envs = |command: &Command| -> Vec<(String, Option<String>)> {
            command.as_std().get_envs().map(|(k, v)| (k.to_str().unwrap().to_owned(), v.map(|v| v.to_str().unwrap().to_owned()))).collect()
        };
        let cli_envs = envs(&cli.command());
        assert!(cli_envs.contains(&("HERMES_HOME".into(), Some("/srv/hermes".into()))));
        assert!(cli_envs
            .iter()
            .all(|(k, _)| k == "HERMES_HOME" || k == "HERMES_DISABLE_LAZY_INSTALLS" || INHERITED_ENV.contains(&k.as_str())));

        let profile = ProfileName::parse("user-1").unwrap();
        let gateway = cli.gateway_command(&profile);
        assert_eq!(command::describe(&gateway), "/venv/bin/hermes --profile user-1 gateway run");
        let gateway_envs = envs(&gateway);
        for (key, value) in [
            ("HERMES_HOME", "/srv/hermes"),
            ("HERMES_KANBAN_HOME", "/srv/hermes/profiles/user-1"),
            ("HOME", "/srv/hermes/profiles/user-1"),
            ("HERMES_DISABLE_LAZY_INSTALLS", "1"),
            ("VIRTUAL_ENV", "/venv"),
            ("PATH", "/venv/bin:/usr/local/bin:/usr/bin:/bin"),
            ("MALLOC_ARENA_MAX", "2"),
        ] {
            assert!(gateway_envs.contains(&(key.into(), Some(value.into()))), "{key} in {gateway_envs:?}");
        }
        let allowed = |k: &str| GATEWAY_INHERITED_ENV.contains(&k) || cli.gateway_env(&profile).iter().any(|(key, _)| *key == k);
        assert!(gateway_envs.iter().all(|(k, _)| allowed(k)), "{gateway_envs:?}");
    }
}
