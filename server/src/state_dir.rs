//! The state directory: where the server certificate, trust store, socket and optional
//! `config.toml` live.

use std::path::{Path, PathBuf};

/// The default state directory: `/var/lib/lxmetrics` for root, otherwise
/// `$XDG_DATA_HOME/lxmetrics` or `~/.local/share/lxmetrics`.
pub fn default_state_dir() -> PathBuf {
    let is_root = rustix::process::geteuid().is_root();
    default_for(
        is_root,
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn default_for(is_root: bool, xdg_data_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/lxmetrics");
    }
    if let Some(xdg) = xdg_data_home.filter(|p| p.is_absolute()) {
        return xdg.join("lxmetrics");
    }
    match home {
        Some(home) => home.join(".local/share/lxmetrics"),
        None => PathBuf::from("/var/lib/lxmetrics"),
    }
}

/// The files of a state directory, named in this one place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StateDir<'a>(pub(crate) &'a Path);

impl StateDir<'_> {
    /// The admin API's unix socket.
    pub(crate) fn socket(self) -> PathBuf {
        self.0.join("unix.socket")
    }
    /// The trust store (SQLite).
    pub(crate) fn trust_db(self) -> PathBuf {
        self.0.join("trust.db")
    }
    /// The server certificate (PEM).
    pub(crate) fn server_cert(self) -> PathBuf {
        self.0.join("server.crt")
    }
    /// The server certificate's private key (PEM, mode 0600).
    pub(crate) fn server_key(self) -> PathBuf {
        self.0.join("server.key")
    }
    /// The configuration file read when `--config` is not given.
    pub(crate) fn config(self) -> PathBuf {
        self.0.join("config.toml")
    }
    /// PKI mode's CA certificate.
    pub(crate) fn ca(self) -> PathBuf {
        self.0.join("server.ca")
    }
    /// PKI mode's revocation list.
    pub(crate) fn crl(self) -> PathBuf {
        self.0.join("ca.crl")
    }

    /// The files that decide who is trusted or how the daemon runs: each must be as
    /// private as the directory.
    fn private_files(self) -> [PathBuf; 5] {
        [
            self.trust_db(),
            self.server_key(),
            self.config(),
            self.ca(),
            self.crl(),
        ]
    }
}

/// A state directory (or a file in it) that another user could have written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateDirError {
    /// Owned by someone else: they decide who is trusted.
    #[error(
        "{path} is owned by uid {owner}, not by this daemon's uid {uid}: \
         `chown {uid} {path}`, or pass another --state-dir"
    )]
    NotOwned {
        /// The directory or file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        uid: u32,
    },
    /// Writable by group or others: anyone in them could plant a trust store.
    #[error("{path} has mode {mode:o}, writable by group or others: `chmod go-w {path}`")]
    Writable {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It could not be examined.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// Refuses a state directory that another user could have written: not owned by the
/// daemon's user, or writable by group or others, and the same for the files in it that
/// hold trust and configuration. A directory that does not exist yet is fine (it is
/// created 0700 by [`ensure`]).
pub(crate) fn check_private(dir: &Path) -> Result<(), StateDirError> {
    let uid = rustix::process::geteuid().as_raw();
    check_one(dir, uid, true)?;
    for file in StateDir(dir).private_files() {
        check_one(&file, uid, false)?;
    }
    Ok(())
}

fn check_one(path: &Path, uid: u32, follow: bool) -> Result<(), StateDirError> {
    use std::os::unix::fs::MetadataExt;
    // The directory may be a symlink an administrator made; the files in it may not.
    let meta = match if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    } {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateDirError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    if meta.uid() != uid {
        return Err(StateDirError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StateDirError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Creates the state directory (mode 0700) if it does not exist yet.
pub fn ensure(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_state_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(check_private(&state).is_ok(), "not created yet");
        ensure(&state).unwrap();
        check_private(&state).unwrap();

        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = check_private(&state).unwrap_err();
        assert!(matches!(e, StateDirError::Writable { .. }), "{e}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");

        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let planted = state.join("trust.db");
        std::fs::write(&planted, "").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            check_private(&state),
            Err(StateDirError::Writable { path, .. }) if path == planted
        ));
        std::fs::remove_file(&planted).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &planted).unwrap();
        // A symlink's own mode is 0777: a planted link is refused too.
        assert!(check_private(&state).is_err());
    }

    #[test]
    fn defaults_follow_the_design() {
        assert_eq!(
            default_for(true, None, None),
            PathBuf::from("/var/lib/lxmetrics")
        );
        assert_eq!(
            default_for(false, Some("/x/data".into()), Some("/home/u".into())),
            PathBuf::from("/x/data/lxmetrics")
        );
        assert_eq!(
            default_for(false, Some("relative".into()), Some("/home/u".into())),
            PathBuf::from("/home/u/.local/share/lxmetrics")
        );
        assert_eq!(
            default_for(false, None, Some("/home/u".into())),
            PathBuf::from("/home/u/.local/share/lxmetrics")
        );
    }
}
