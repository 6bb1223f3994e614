//! Polling for changes another process makes to the files the daemon trusts (the trust
//! store, the PKI files): one loop, so each watcher only says how to check and what to
//! log.

use std::time::Duration;

use tokio::sync::watch;

/// How often the files are checked.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// Calls `check` on the blocking pool every [`INTERVAL`] until `stop` turns true. `Ok(true)`
/// (it reloaded) is logged as `reloaded`; an error is logged once, and again only after a
/// check succeeded in between (so a broken file does not fill the log).
pub(crate) async fn poll<E, F>(mut stop: watch::Receiver<bool>, reloaded: &'static str, check: F)
where
    E: std::fmt::Display + Send + 'static,
    F: Fn() -> Result<bool, E> + Clone + Send + 'static,
{
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match tokio::task::spawn_blocking(check.clone()).await {
            Ok(Ok(changed)) => {
                failing = false;
                if changed {
                    tracing::info!("{reloaded}");
                }
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::error!("{e}");
            }
            Ok(Err(_)) | Err(_) => {}
        }
    }
}
