//! The encoded bodies of live snapshots, one per request shape (projects, format,
//! encoding): the first request of a shape encodes it, concurrent ones wait for that
//! one encoding, later ones reuse it while the snapshot is served. A snapshot holds
//! validated data only; the bodies made from it live here, beside the scrape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::exposition::EncodedBody;
use crate::project_filter::ProjectFilter;
use crate::scrape::ScrapeRequest;
use crate::snapshot::Snapshot;

/// At most this many encodings are cached per snapshot; `?project=` values come from
/// clients, so the cache must not grow with what they send. Beyond it bodies are encoded
/// per request.
pub(crate) const MAX_CACHED_BODIES: usize = 32;

/// Where one encoding is kept: filled once by the first request that needs it while
/// concurrent requests for the same shape wait for that same encoding.
pub(crate) type BodySlot = Arc<tokio::sync::OnceCell<Arc<EncodedBody>>>;

/// One snapshot's bodies, by request shape.
type SnapshotBodies = (Weak<Snapshot>, HashMap<ScrapeRequest, BodySlot>);

/// Bodies per snapshot still referenced somewhere (normally the current one, and the
/// previous one while its last requests finish).
#[derive(Debug, Default)]
pub(crate) struct BodyCache {
    snapshots: Mutex<Vec<SnapshotBodies>>,
}

impl BodyCache {
    /// The slot for `request`'s body of `snapshot`, made empty on first use; `None` once
    /// [`MAX_CACHED_BODIES`] shapes of that snapshot are taken (the caller encodes
    /// without caching). The unfiltered shapes (one per format and encoding: what
    /// Prometheus scrapes) always get a slot, so no flood of other shapes can make the
    /// normal scrape uncached. Bodies of snapshots nobody holds any more are dropped.
    pub(crate) fn slot(
        &self,
        snapshot: &Arc<Snapshot>,
        request: &ScrapeRequest,
    ) -> Option<BodySlot> {
        let mut snapshots = self.snapshots.lock().ok()?;
        snapshots.retain(|(held, _)| held.strong_count() > 0);
        let index = match snapshots
            .iter()
            .position(|(held, _)| std::ptr::eq(held.as_ptr(), Arc::as_ptr(snapshot)))
        {
            Some(index) => index,
            None => {
                snapshots.push((Arc::downgrade(snapshot), HashMap::new()));
                snapshots.len() - 1
            }
        };
        let bodies = &mut snapshots[index].1;
        if let Some(slot) = bodies.get(request) {
            return Some(slot.clone());
        }
        if bodies.len() >= MAX_CACHED_BODIES && request.filter != ProjectFilter::All {
            return None;
        }
        let slot = BodySlot::default();
        bodies.insert(request.clone(), slot.clone());
        Some(slot)
    }

    /// How many bodies of `snapshot` are cached (tests check that clients cannot grow it).
    #[cfg(test)]
    pub(crate) fn len(&self, snapshot: &Arc<Snapshot>) -> usize {
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        snapshots
            .iter()
            .find(|(held, _)| std::ptr::eq(held.as_ptr(), Arc::as_ptr(snapshot)))
            .map_or(0, |(_, bodies)| bodies.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{ContentEncoding, Format};
    use crate::snapshot::SnapshotBuilder;

    fn snapshot() -> Arc<Snapshot> {
        Arc::new(SnapshotBuilder::new(Arc::from(Vec::new()), "lxd").finish())
    }

    fn request(filter: ProjectFilter) -> ScrapeRequest {
        ScrapeRequest {
            filter,
            format: Format::PrometheusText,
            encoding: ContentEncoding::Identity,
        }
    }

    #[test]
    fn clients_cannot_grow_the_cache_and_the_normal_scrape_keeps_its_slot() {
        let cache = BodyCache::default();
        let s = snapshot();
        let key = |i: usize| request(ProjectFilter::only([format!("p{i}")]));
        for i in 0..MAX_CACHED_BODIES {
            assert!(cache.slot(&s, &key(i)).is_some());
        }
        assert!(cache.slot(&s, &key(MAX_CACHED_BODIES)).is_none());
        assert!(
            cache.slot(&s, &request(ProjectFilter::All)).is_some(),
            "the unfiltered scrape always gets a slot"
        );
        assert!(cache.slot(&s, &key(0)).is_some(), "existing shapes stay");
        assert_eq!(cache.len(&s), MAX_CACHED_BODIES + 1);
    }

    #[test]
    fn bodies_live_as_long_as_their_snapshot() {
        let cache = BodyCache::default();
        let (old, new) = (snapshot(), snapshot());
        let all = request(ProjectFilter::All);
        let slot = cache.slot(&old, &all).unwrap();
        assert!(Arc::ptr_eq(&slot, &cache.slot(&old, &all).unwrap()));
        assert!(!Arc::ptr_eq(&slot, &cache.slot(&new, &all).unwrap()));
        drop(old);
        let _ = cache.slot(&new, &all);
        assert_eq!(
            cache.snapshots.lock().unwrap().len(),
            1,
            "the old bodies went"
        );
    }
}
