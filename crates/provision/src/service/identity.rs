//! One locked-down OS user per gateway. A profile's gateway runs as `tw-<profile id>`, a system user with
//! no login shell whose home is the profile directory; the profile directory is that user's alone (0700),
//! so one user's agent cannot read another's `.env`, sessions or WeChat token, nor write anything outside
//! its profile. The service managers create the user and hand it the profile on every `install` and
//! `start` (which run after every write the provisioner makes into a profile), and delete it on
//! `uninstall`.
//!
//! Creating users and switching to them needs root. Anyone else keeps running every gateway under its
//! own uid, as before; [`Isolation::detect`] says so once in the log.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, Gid, Uid, User};
use tokio::process::Command;

use crate::command;
use crate::error::{Error, Result};
use crate::hermes::HermesCli;
use crate::names::ProfileName;

/// useradd takes 32 characters, but systemd's strict rules for `User=` 31: a longer name draws a warning.
const MAX_NAME: usize = 31;
const PREFIX: &str = "tw-";
/// useradd: the name is taken (someone created it first); userdel: there is no such user.
const USERADD_NAME_IN_USE: i32 = 9;
const USERDEL_NO_SUCH_USER: i32 = 6;

/// The OS user one profile's gateway runs as.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GatewayUser(String);

/// An existing gateway user's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

impl GatewayUser {
    /// `tw-` and the profile's name without its `user-` prefix, within 31 characters: for a user's profile
    /// (`user-<32 hex>`) the first 28 hex digits of the user id (112 bits: distinct in practice). A
    /// longer name of another shape keeps 19 characters and 8 hex digits of its sha256, so two such
    /// names never meet by truncation.
    pub fn for_profile(profile: &ProfileName) -> GatewayUser {
        let name = profile.as_str();
        let rest = name.strip_prefix("user-").unwrap_or(name);
        let room = MAX_NAME - PREFIX.len();
        let id = if rest.len() <= room {
            rest.to_owned()
        } else if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            rest[..room].to_owned()
        } else {
            format!("{}-{}", &rest[..room - 9], &twilight_core::token::hash_hex(name)[..8])
        };
        GatewayUser(format!("{PREFIX}{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Deletes the OS users of the users' profiles under `profiles` (a HERMES_HOME's `profiles/`):
    /// for homes that end without deprovisioning (tests, benchmarks), so runs on one machine do not
    /// pile up `tw-` users. Forced: a killed gateway stays a zombie of the process that ran it until
    /// that process exits, which plain userdel counts as the user still running something.
    pub fn remove_all_under(profiles: &Path) {
        if !Self::supported() {
            return;
        }
        let names = std::fs::read_dir(profiles).into_iter().flatten().flatten().filter_map(|entry| entry.file_name().into_string().ok());
        for name in names.filter(|name| name.starts_with("user-")) {
            let Ok(profile) = ProfileName::parse(&name) else { continue };
            let user = GatewayUser::for_profile(&profile);
            if matches!(user.lookup(), Ok(Some(_))) {
                let _ = std::process::Command::new("userdel").args(["--force", user.as_str()]).status();
            }
        }
    }

    /// Whether this process can create gateway users and run gateways as them: it runs as root.
    pub fn supported() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The user's ids; `None` when there is no such user.
    pub fn lookup(&self) -> Result<Option<Account>> {
        match User::from_name(&self.0) {
            Ok(user) => Ok(user.map(|u| Account { uid: u.uid.as_raw(), gid: u.gid.as_raw() })),
            Err(errno) => Err(Error::UserLookup { user: self.0.clone(), source: errno.into() }),
        }
    }

    /// `useradd --system --no-create-home --home-dir HOME --shell /usr/sbin/nologin --user-group NAME`
    /// unless the user exists; a concurrent creation of the same user is fine.
    pub async fn ensure(&self, home: &Path, timeout: Duration) -> Result<Account> {
        if let Some(account) = self.lookup()? {
            return Ok(account);
        }
        let mut useradd = Command::new("useradd");
        useradd
            .args(["--system", "--no-create-home", "--home-dir"])
            .arg(home)
            .args(["--shell", "/usr/sbin/nologin", "--user-group", "--comment", "Twilight Drive hermes gateway"])
            .arg(&self.0);
        let output = command::run_unchecked(&mut useradd, None, timeout).await?;
        if !output.status.success() && output.status.code() != Some(USERADD_NAME_IN_USE) {
            return Err(command::failure(&useradd, &output));
        }
        self.lookup()?.ok_or_else(|| Error::NoSuchUser(self.0.clone()))
    }

    /// `userdel NAME` (its user-private group goes with it); a missing user is already removed.
    pub async fn remove(&self, timeout: Duration) -> Result<()> {
        if self.lookup()?.is_none() {
            return Ok(());
        }
        let mut userdel = Command::new("userdel");
        userdel.arg(&self.0);
        let output = command::run_unchecked(&mut userdel, None, timeout).await?;
        if output.status.success() || output.status.code() == Some(USERDEL_NO_SUCH_USER) {
            Ok(())
        } else {
            Err(command::failure(&userdel, &output))
        }
    }
}

impl std::fmt::Display for GatewayUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for GatewayUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GatewayUser({})", self.0)
    }
}

/// What a service manager does around a gateway's life when gateways get users of their own.
#[derive(Clone, Debug)]
pub(crate) struct Isolation {
    hermes: HermesCli,
    timeout: Duration,
}

impl Isolation {
    /// Per-gateway users for `hermes`'s profiles, or `None` when this process is not root (said once).
    pub(crate) fn detect(hermes: &HermesCli) -> Option<Isolation> {
        static SAID: Once = Once::new();
        let euid = nix::unistd::geteuid();
        if GatewayUser::supported() {
            return Some(Isolation { hermes: hermes.clone(), timeout: Duration::from_secs(30) });
        }
        SAID.call_once(|| {
            tracing::warn!(
                uid = euid.as_raw(),
                "not running as root: hermes gateways cannot get an OS user of their own and run under this process's uid, \
                 able to read each other's profiles"
            );
        });
        None
    }

    /// Makes sure the profile's user exists and owns the profile: the hermes root and `profiles/` become
    /// 0711 (gateways pass through, nobody lists the profiles) and the root's `logs/` 0700, the profile
    /// directory and everything in it go to the user, the directory itself 0700 (files keep their modes:
    /// `.env` stays 0600).
    pub(crate) async fn prepare(&self, profile: &ProfileName) -> Result<(GatewayUser, Account)> {
        let user = GatewayUser::for_profile(profile);
        let dir = self.hermes.profile_dir(profile);
        let account = user.ensure(&dir, self.timeout).await?;
        let (home, profiles) = (self.hermes.home().to_owned(), self.hermes.home().join("profiles"));
        tokio::task::spawn_blocking(move || {
            for shared in [&home, &profiles] {
                std::fs::set_permissions(shared, std::fs::Permissions::from_mode(0o711)).map_err(Error::io("restricting", shared))?;
            }
            // The logs of the profile commands we run as root, which name every profile.
            let logs = home.join("logs");
            if logs.is_dir() {
                std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).map_err(Error::io("restricting", &logs))?;
            }
            hand_over(&dir, account)
        })
        .await
        .expect("handing the profile over panicked")?;
        Ok((user, account))
    }

    /// Deletes the profile's user, first giving a profile directory still there back to root: a later
    /// user given the same uid must not inherit it (deprovisioning deletes the profile next, but may fail).
    pub(crate) async fn remove(&self, profile: &ProfileName) -> Result<()> {
        let dir = self.hermes.profile_dir(profile);
        if tokio::fs::symlink_metadata(&dir).await.is_ok_and(|meta| meta.is_dir()) {
            tokio::task::spawn_blocking(move || hand_over(&dir, Account { uid: 0, gid: 0 }))
                .await
                .expect("taking the profile back panicked")?;
        }
        GatewayUser::for_profile(profile).remove(self.timeout).await
    }

    /// Fails naming the first directory the gateway user could not pass on its way to what it runs and
    /// where it lives: the hermes script, the interpreter it resolves to, and the profile directory.
    /// Directories below a path in `masked` are skipped: a systemd unit replaces those with its own.
    pub(crate) fn check_reachable(&self, profile: &ProfileName, user: &GatewayUser, account: Account, masked: &[PathBuf]) -> Result<()> {
        let python = self.hermes.python();
        let interpreter = std::fs::canonicalize(&python).unwrap_or(python);
        for path in [self.hermes.bin().to_owned(), interpreter, self.hermes.profile_dir(profile)] {
            reachable(&path, account, masked).map_err(|blocked| Error::Unreachable {
                user: user.to_string(),
                path: path.clone(),
                blocked,
            })?;
        }
        Ok(())
    }
}

/// `Err(dir)` for the first ancestor of `path` that `account` may not search (the `x` bit for its
/// owner, group or others, as it applies to the account; ACLs are not consulted).
fn reachable(path: &Path, account: Account, masked: &[PathBuf]) -> Result<(), PathBuf> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        if masked.iter().any(|m| dir.starts_with(m)) {
            return Ok(());
        }
        let Ok(meta) = std::fs::metadata(dir) else { return Err(dir.to_owned()) };
        let bit = if meta.uid() == account.uid {
            0o100
        } else if meta.gid() == account.gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            return Err(dir.to_owned());
        }
    }
    Ok(())
}

/// Gives `dir` and everything below it to `account`; `dir` becomes 0700, the rest keep their modes.
/// The walk goes through directory descriptors opened with `O_NOFOLLOW` and changes symlinks themselves,
/// so a running gateway that swaps a directory for a symlink cannot steer it outside the profile; and a
/// file with other hard links is left alone unless the account owns it already, so a link to a file
/// elsewhere does not hand that file over.
fn hand_over(dir: &Path, account: Account) -> Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let top = Dir::open(dir, flags, Mode::empty()).map_err(nix_io("opening", dir))?;
    fchown(&top, Some(Uid::from_raw(account.uid)), Some(Gid::from_raw(account.gid))).map_err(nix_io("chowning", dir))?;
    fchmod(&top, Mode::from_bits_truncate(0o700)).map_err(nix_io("chmodding", dir))?;
    hand_over_entries(top, dir, account)
}

fn hand_over_entries(mut dir: Dir, path: &Path, account: Account) -> Result<()> {
    let (uid, gid) = (Some(Uid::from_raw(account.uid)), Some(Gid::from_raw(account.gid)));
    let mut names: Vec<CString> = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(nix_io("listing", path))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    for name in names {
        let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        // The gateway may be running and deleting its own files meanwhile: gone is fine.
        let stat = match fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(nix_io("inspecting", &child)(e)),
        };
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = match Dir::openat(&dir, name.as_c_str(), flags, Mode::empty()) {
                Ok(sub) => sub,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(nix_io("opening", &child)(e)),
            };
            fchown(&sub, uid, gid).map_err(nix_io("chowning", &child))?;
            hand_over_entries(sub, &child, account)?;
        } else if kind == SFlag::S_IFREG && stat.st_nlink > 1 && stat.st_uid != account.uid {
            tracing::warn!(path = %child.display(), "not handing over a file with other hard links");
        } else {
            match fchownat(&dir, name.as_c_str(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(nix_io("chowning", &child)(e)),
            }
        }
    }
    Ok(())
}

fn nix_io(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let path = path.to_owned();
    move |errno| Error::Io { action, path, source: errno.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_and_follow_the_user_id() {
        let profile = ProfileName::parse("user-6f9619ff8b86d011b42d00c04fc964ff").unwrap();
        let user = GatewayUser::for_profile(&profile);
        assert_eq!(user.as_str(), "tw-6f9619ff8b86d011b42d00c04fc9");
        assert_eq!(user.as_str().len(), 31);
        assert_eq!(GatewayUser::for_profile(&ProfileName::parse("user-abc").unwrap()).as_str(), "tw-abc");
        assert_eq!(GatewayUser::for_profile(&ProfileName::template()).as_str(), "tw-template-stock-research-pro");
        let (a, b) = (ProfileName::parse(&"a".repeat(40)).unwrap(), ProfileName::parse(&format!("{}b", "a".repeat(39))).unwrap());
        let (a, b) = (GatewayUser::for_profile(&a), GatewayUser::for_profile(&b));
        assert_ne!(a, b);
        assert!(a.as_str().len() <= MAX_NAME && b.as_str().len() <= MAX_NAME, "{a} {b}");
    }

    #[test]
    fn reachability_stops_at_the_first_closed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir_all(closed.join("inner")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let stranger = Account { uid: 4_000_000, gid: 4_000_000 };
        let target = closed.join("inner/file");
        assert_eq!(reachable(&target, stranger, &[]), Err(closed.clone()));
        assert_eq!(reachable(&target, stranger, std::slice::from_ref(&closed)), Ok(()), "masked directories are not checked");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(reachable(&target, stranger, &[]), Ok(()));
    }

    #[test]
    fn handing_over_changes_owners_not_modes_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(profile.join("sessions")).unwrap();
        std::fs::write(profile.join(".env"), "K=v\n").unwrap();
        std::fs::set_permissions(profile.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "not yours").unwrap();
        std::os::unix::fs::symlink(&outside, profile.join("link")).unwrap();
        std::fs::hard_link(&outside, profile.join("sessions/hardlink")).unwrap();
        let me = Account { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
        // Handing over to ourselves exercises the walk anywhere; the ownership change itself is tested as root
        // in tests/services.rs.
        hand_over(&profile, me).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&profile), 0o700);
        assert_eq!(mode(&profile.join(".env")), 0o600);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not yours");
        assert!(matches!(hand_over(&profile.join("link"), me), Err(Error::Io { action: "opening", .. })), "a symlinked profile is refused");
    }
}
