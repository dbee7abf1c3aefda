//! The one config file: the server, the login (refresh token, plus the current access token
//! so that not every command refreshes) and the default organization.
//!
//! `$BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.toml`, else
//! `~/.config/berth/config.toml`; created with mode 0600 in a 0700 folder. Every write goes to
//! a temporary file in the same folder and is renamed over the old one, so a reader sees the
//! old file or the new one, never half of either. Changes that read, call the server and write
//! (a refresh, which spends the old refresh token) hold an exclusive lock on `<file>.lock`
//! for the whole exchange, so two `berth` processes never both spend the same token.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The server `login` talked to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The default organization (`berth org use`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<DefaultOrg>,
    /// The login, absent after `logout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// The organization later commands use when `--org` is not given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultOrg {
    pub id: Uuid,
    pub name: String,
}

/// A login: never the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub email: String,
    pub refresh_token: String,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
}

/// Where the file is, from the environment. A symlink is followed (the file it names is the
/// one written), and anything but a regular file is refused, so that a mistaken
/// `BERTH_CONFIG=/dev/null` can never replace a device with a file of tokens.
pub fn path() -> Result<PathBuf, String> {
    let p = named_path()?;
    match fs::symlink_metadata(&p) {
        Err(_) => Ok(p),
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::canonicalize(&p).map_err(|e| {
                format!(
                    "the config file {} is a symlink to nothing: {e}",
                    p.display()
                )
            })?;
            regular(target)
        }
        Ok(_) => regular(p),
    }
}

fn regular(p: PathBuf) -> Result<PathBuf, String> {
    match fs::metadata(&p) {
        Ok(m) if !m.is_file() => Err(format!(
            "the config file {} is not a regular file: set BERTH_CONFIG to a file's path",
            p.display()
        )),
        _ => Ok(p),
    }
}

fn named_path() -> Result<PathBuf, String> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("BERTH_CONFIG") {
        return Ok(p);
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(x.join("berth").join("config.toml"));
    }
    var("HOME")
        .map(|h| h.join(".config").join("berth").join("config.toml"))
        .ok_or_else(|| "cannot find a place for the config file: set BERTH_CONFIG or HOME".into())
}

/// The file at `path`, or the empty config when there is none yet.
pub fn load(path: &Path) -> Result<Config, String> {
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            format!(
                "the config file {} is not valid: {}",
                path.display(),
                e.message()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!(
            "cannot read the config file {}: {e}",
            path.display()
        )),
    }
}

/// Writes `config` to `path` atomically, mode 0600.
pub fn save(path: &Path, config: &Config) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let dir = folder(path)?;
    let text = toml::to_string(config).map_err(|e| fail(&e))?;
    // tempfile creates the file 0600 and renames it into place.
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.toml.")
        .tempfile_in(&dir)
        .map_err(|e| fail(&e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(&e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| fail(&e))?;
    tmp.as_file().sync_all().map_err(|e| fail(&e))?;
    tmp.persist(path).map_err(|e| fail(&e.error))?;
    Ok(())
}

/// Holds the file's lock until dropped.
pub struct Lock(#[allow(dead_code)] File);

/// Takes the exclusive lock of the file at `path` (waiting for another `berth` to finish).
pub fn lock(path: &Path) -> Result<Lock, String> {
    folder(path)?;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&name)
        .map_err(|e| format!("cannot open {}: {e}", Path::new(&name).display()))?;
    file.lock()
        .map_err(|e| format!("cannot lock {}: {e}", Path::new(&name).display()))?;
    Ok(Lock(file))
}

/// Creates the file's folder (0700) when missing and returns it.
fn folder(path: &Path) -> Result<PathBuf, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            server: Some("http://127.0.0.1:8787".into()),
            org: Some(DefaultOrg {
                id: Uuid::now_v7(),
                name: "Acme".into(),
            }),
            session: Some(Session {
                email: "ada@example.com".into(),
                refresh_token: "brt_x".into(),
                access_token: "ey.x.y".into(),
                access_expires_at: Utc::now(),
            }),
        }
    }

    #[test]
    fn written_0600_in_a_new_0700_folder_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/berth/config.toml");
        assert_eq!(load(&path).unwrap(), Config::default());
        let c = sample();
        save(&path, &c).unwrap();
        assert_eq!(load(&path).unwrap(), c);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // Rewriting keeps 0600 even when someone loosened the old file.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &Config::default()).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load(&path).unwrap(), Config::default());
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        save(&path, &sample()).unwrap();
        let before = fs::metadata(&path).unwrap();
        save(&path, &Config::default()).unwrap();
        let after = fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        // A rename puts a new inode in place; writing in place would keep the old one.
        assert_ne!(before.ino(), after.ino());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["config.toml".to_string()]);
    }

    #[test]
    fn concurrent_writers_never_leave_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let a = sample();
        let mut b = sample();
        b.session.as_mut().unwrap().refresh_token = "brt_".to_string() + &"y".repeat(5000);
        std::thread::scope(|s| {
            for c in [&a, &b] {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..200 {
                        save(path, c).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..400 {
                    let got = load(&path).unwrap();
                    assert!(got == Config::default() || got == a || got == b);
                }
            });
        });
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let held = lock(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _l = lock(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn a_broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, "server = [").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("is not valid"), "{e}");
    }

    #[test]
    fn only_regular_files_are_config_files_and_symlinks_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let with = |p: &Path| {
            std::env::set_var("BERTH_CONFIG", p);
            path()
        };
        // Serialized by this test alone touching BERTH_CONFIG.
        assert!(with(Path::new("/dev/null"))
            .unwrap_err()
            .contains("not a regular file"));
        assert!(with(dir.path()).unwrap_err().contains("not a regular file"));
        let real = dir.path().join("real.toml");
        save(&real, &sample()).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let resolved = with(&link).unwrap();
        assert_eq!(resolved, fs::canonicalize(&real).unwrap());
        save(&resolved, &Config::default()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(load(&real).unwrap(), Config::default());
        let dangling = dir.path().join("dangling.toml");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        assert!(with(&dangling).unwrap_err().contains("symlink to nothing"));
        let fresh = dir.path().join("new/config.toml");
        assert_eq!(with(&fresh).unwrap(), fresh);
        std::env::remove_var("BERTH_CONFIG");
    }
}
