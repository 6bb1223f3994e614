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
