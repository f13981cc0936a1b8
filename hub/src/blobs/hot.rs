//! Recently served blobs, kept in memory for the next downloads of the same content.
//!
//! In a rollout wave every node fetches the same parts of the same release within
//! seconds. Served from here, a part costs neither a file open and read (a blocking-pool
//! hop and a copy per byte) nor a registry read: an entry is made only after the registry
//! said a published release names the digest, and published releases are never removed.
//! The bytes are shared: every download of an entry sends slices of the one buffer. The
//! first requests of a wave arrive together, before anything is cached: they take turns
//! ([`HotBlobs::load_turn`]), so one reads the part and the others find it cached.

use bytes::Bytes;
use efa_domain::bundle::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The blobs being read into the cache, each with the lock its downloads take turns on.
type Loading = Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>;

/// A bounded map from digest to content, least recently used out first.
pub struct HotBlobs {
    /// Bytes the entries may hold together (0: the cache is off).
    budget: usize,
    /// The largest blob kept; larger ones are streamed from the store every time.
    max_entry: usize,
    inner: Mutex<Inner>,
    /// One lock per blob being read into the cache; see [`load_turn`](Self::load_turn).
    loading: Loading,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Digest, (Bytes, u64)>,
    /// Sum of the entries' lengths.
    held: usize,
    /// Advances on every use; an entry's stamp says when it was last used.
    clock: u64,
}

impl HotBlobs {
    /// A cache of at most `budget` bytes for blobs of at most `max_entry` bytes each.
    pub fn new(budget: usize, max_entry: usize) -> Self {
        HotBlobs { budget, max_entry: max_entry.min(budget), inner: Mutex::default(), loading: Arc::default() }
    }

    /// Whether the cache keeps anything at all.
    pub fn is_on(&self) -> bool {
        self.max_entry > 0
    }

    /// Whether a blob of `len` bytes would be kept.
    pub fn admits(&self, len: u64) -> bool {
        len > 0 && len <= self.max_entry as u64
    }

    /// The blob's content, if it is held.
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (bytes, used) = inner.entries.get_mut(digest)?;
        *used = now;
        Some(bytes.clone())
    }

    /// Keeps a blob the registry said is published, evicting the least recently used
    /// entries to stay within the budget.
    pub fn insert(&self, digest: Digest, bytes: Bytes) {
        if !self.admits(bytes.len() as u64) {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let len = bytes.len();
        if let Some((old, _)) = inner.entries.insert(digest, (bytes, now)) {
            inner.held -= old.len();
        }
        inner.held += len;
        while inner.held > self.budget {
            // A linear scan: the budget holds a few hundred parts, and evictions are rare
            // next to hits.
            let Some(oldest) = inner.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(d, _)| *d) else {
                break;
            };
            if let Some((gone, _)) = inner.entries.remove(&oldest) {
                inner.held -= gone.len();
            }
        }
    }

    /// Waits until no other download is reading this blob, so a wave's simultaneous first
    /// requests share one read: the caller looks in the cache again once it has its turn.
    /// The turn ends when the returned value is dropped.
    pub async fn load_turn(&self, digest: &Digest) -> LoadTurn {
        let lock = {
            let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            loading.entry(*digest).or_default().clone()
        };
        LoadTurn { digest: *digest, loading: self.loading.clone(), guard: Some(lock.lock_owned().await) }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A download's turn to read a blob into the cache; see [`HotBlobs::load_turn`].
pub struct LoadTurn {
    digest: Digest,
    loading: Loading,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LoadTurn {
    fn drop(&mut self) {
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        // The map's handle and this turn's are the last ones: nobody waits, forget the lock.
        if loading.get(&self.digest).is_some_and(|l| Arc::strong_count(l) == 2) {
            loading.remove(&self.digest);
        }
        drop(self.guard.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: usize) -> (Digest, Bytes) {
        let bytes = Bytes::from(vec![n; len]);
        (Digest::of(&bytes), bytes)
    }

    #[test]
    fn keeps_the_recently_used_within_its_budget() {
        let hot = HotBlobs::new(300, 100);
        let (a, b, c, d) = (blob(1, 100), blob(2, 100), blob(3, 100), blob(4, 100));
        for (digest, bytes) in [&a, &b, &c] {
            hot.insert(*digest, bytes.clone());
        }
        assert_eq!(hot.held(), 300);
        // `a` is used again, so `b` is now the least recently used and goes first.
        assert_eq!(hot.get(&a.0).as_deref(), Some(&a.1[..]));
        hot.insert(d.0, d.1.clone());
        assert_eq!(hot.held(), 300);
        assert!(hot.get(&b.0).is_none());
        for (digest, bytes) in [&a, &c, &d] {
            assert_eq!(hot.get(digest).as_deref(), Some(&bytes[..]));
        }
    }

    #[test]
    fn refuses_what_is_too_large_or_empty_and_a_zero_budget_holds_nothing() {
        let hot = HotBlobs::new(1000, 100);
        let big = blob(1, 101);
        hot.insert(big.0, big.1);
        assert!(hot.get(&big.0).is_none());
        assert!(!hot.admits(0));
        let off = HotBlobs::new(0, 100);
        assert!(!off.is_on() && hot.is_on());
        let small = blob(2, 10);
        off.insert(small.0, small.1);
        assert_eq!(off.held(), 0);
        assert!(off.get(&small.0).is_none());
    }

    /// Downloads of one part take turns; the lock is forgotten once nobody waits.
    #[tokio::test]
    async fn downloads_of_one_part_take_turns() {
        let hot = Arc::new(HotBlobs::new(1000, 100));
        let (a, b) = (blob(1, 10), blob(2, 10));
        let first = hot.load_turn(&a.0).await;
        // Another part is not held up.
        drop(hot.load_turn(&b.0).await);
        let waiter = {
            let hot = hot.clone();
            tokio::spawn(async move {
                let _turn = hot.load_turn(&a.0).await;
                hot.get(&a.0)
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second download waits for the first one's read");
        hot.insert(a.0, a.1.clone());
        drop(first);
        assert_eq!(waiter.await.unwrap().as_deref(), Some(&a.1[..]), "and then finds the part cached");
        assert!(hot.loading.lock().unwrap().is_empty());
    }

    #[test]
    fn the_same_blob_twice_is_counted_once() {
        let hot = HotBlobs::new(1000, 100);
        let a = blob(1, 50);
        hot.insert(a.0, a.1.clone());
        hot.insert(a.0, a.1);
        assert_eq!(hot.held(), 50);
    }
}
