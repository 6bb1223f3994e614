//! The coalescing cache: at most one refresh at a time, and its result served to every
//! request for `metrics.cache_ttl` (8 s by default) after it completed.
//!
//! - A request inside the window gets the stored snapshot.
//! - A request while a refresh runs waits for that same refresh (single flight): N
//!   concurrent scrapers cause one refresh and nobody gets an error.
//! - The refresh runs in its own task, so a client that goes away never cancels it and
//!   the next request still benefits from it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::RefreshEngine;
use crate::snapshot::Snapshot;

/// The refresh task ended without a snapshot (it panicked; the engine itself catches
/// collector panics, so this means a bug in the engine).
#[derive(Debug, thiserror::Error)]
#[error("the metrics refresh ended without a result")]
pub struct RefreshFailed;

type Pending = watch::Receiver<Option<Arc<Snapshot>>>;

#[derive(Default)]
struct State {
    latest: Option<(Arc<Snapshot>, Instant)>,
    pending: Option<Pending>,
}

/// Serves snapshots, refreshing at most once per window.
pub struct MetricsCache {
    engine: Arc<RefreshEngine>,
    ttl: Duration,
    state: Mutex<State>,
}

impl MetricsCache {
    /// A cache over `engine` with the given window.
    pub fn new(engine: Arc<RefreshEngine>, ttl: Duration) -> Arc<Self> {
        Arc::new(MetricsCache {
            engine,
            ttl,
            state: Mutex::new(State::default()),
        })
    }

    /// The engine behind the cache.
    pub fn engine(&self) -> &Arc<RefreshEngine> {
        &self.engine
    }

    /// The most recent completed snapshot, if any, without refreshing.
    #[cfg(test)]
    pub(crate) fn latest(&self) -> Option<Arc<Snapshot>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.latest.as_ref().map(|(s, _)| s.clone())
    }

    /// A snapshot no older than the window: the stored one, the one being made, or a new
    /// one.
    pub async fn snapshot(self: &Arc<Self>) -> Result<Arc<Snapshot>, RefreshFailed> {
        let mut pending = {
            // The lock is never held across an await; a poisoned lock only means another
            // thread panicked between two plain assignments, so the state is usable.
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((snapshot, completed)) = &state.latest {
                if completed.elapsed() < self.ttl {
                    return Ok(snapshot.clone());
                }
            }
            match &state.pending {
                Some(pending) => pending.clone(),
                None => {
                    let pending = self.start_refresh();
                    state.pending = Some(pending.clone());
                    pending
                }
            }
        };
        let result = pending
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RefreshFailed)?;
        result.clone().ok_or(RefreshFailed)
    }

    /// Starts a refresh task that publishes its snapshot to waiters and to the cache.
    fn start_refresh(self: &Arc<Self>) -> Pending {
        let (sender, receiver) = watch::channel(None);
        let cache = self.clone();
        tokio::spawn(async move {
            // Clears `pending` even if the refresh panics, so the next request retries
            // instead of waiting on a channel nobody will fill.
            struct ClearPending<'a>(&'a MetricsCache);
            impl Drop for ClearPending<'_> {
                fn drop(&mut self) {
                    let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.pending = None;
                }
            }
            let _clear = ClearPending(&cache);
            let snapshot = Arc::new(cache.engine.refresh().await);
            {
                let mut state = cache.state.lock().unwrap_or_else(|p| p.into_inner());
                state.latest = Some((snapshot.clone(), Instant::now()));
            }
            sender.send_replace(Some(snapshot));
        });
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::StaticDiscovery;
    use async_trait::async_trait;
    use lxmetrics_plugin::{CollectError, Collection, Collector, HostPaths, Scope};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts collections; each takes a second so concurrent requests overlap it.
    struct Counting(Arc<AtomicUsize>);

    #[async_trait]
    impl Collector for Counting {
        async fn collect(&self, _: &Scope) -> Result<Collection, CollectError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Collection::new())
        }
    }

    fn cache(ttl: Duration) -> (Arc<MetricsCache>, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let engine = RefreshEngine::new(
            Arc::new(StaticDiscovery::default()),
            vec![("counting", Arc::new(Counting(count.clone())))],
            Arc::new(HostPaths::default()),
            Duration::from_secs(5),
            "lxd",
        );
        (MetricsCache::new(Arc::new(engine), ttl), count)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_collection() {
        let (cache, count) = cache(Duration::from_secs(8));
        let requests: Vec<_> = (0..200)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.snapshot().await })
            })
            .collect();
        let mut snapshots = Vec::new();
        for r in requests {
            snapshots.push(r.await.unwrap().unwrap());
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(cache.engine().refreshes(), 1);
        assert!(snapshots.iter().all(|s| Arc::ptr_eq(s, &snapshots[0])));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_is_served_from_cache_and_expires() {
        let (cache, count) = cache(Duration::from_secs(8));
        let first = cache.snapshot().await.unwrap();
        tokio::time::sleep(Duration::from_millis(7_900)).await;
        let second = cache.snapshot().await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let third = cache.snapshot().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_does_not_cancel_the_refresh() {
        let (cache, count) = cache(Duration::from_secs(8));
        let impatient = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.snapshot().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        impatient.abort();
        // The refresh it started completes and is cached for the next client.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(cache.latest().is_some());
        let _ = cache.snapshot().await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ttl_still_coalesces_concurrent_requests() {
        let (cache, count) = cache(Duration::ZERO);
        let a = cache.clone();
        let b = cache.clone();
        let (x, y) = tokio::join!(a.snapshot(), b.snapshot());
        assert!(Arc::ptr_eq(&x.unwrap(), &y.unwrap()));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let _ = cache.snapshot().await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
