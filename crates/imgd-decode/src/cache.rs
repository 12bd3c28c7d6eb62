//! The decode cache shared by the decode stage and the modules: tier images keyed by image id
//! and tier long edge, bounded by bytes, evicting the least recently used entry.

use image::RgbImage;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Key = (i64, u32);

struct Entry {
    image: Arc<RgbImage>,
    bytes: u64,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Recency order: tick → key (smallest tick = least recently used).
    lru: BTreeMap<u64, Key>,
    next_tick: u64,
}

/// A thread-safe, byte-bounded LRU cache of decoded tier images.
///
/// Keys are `(image id, tier long edge)`. An image larger than the whole budget is not kept.
/// Entries are shared as `Arc<RgbImage>`, so an evicted entry stays alive for whoever still
/// holds it; the budget counts what the cache holds.
pub struct DecodeCache {
    max_bytes: u64,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    inserts: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
}

/// A snapshot of the cache counters (monotonic counters plus current gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// `get` calls that found an entry.
    pub hits: u64,
    /// `get` calls that found nothing.
    pub misses: u64,
    /// Entries dropped to stay under the byte budget.
    pub evictions: u64,
    /// Entries inserted (including replacements).
    pub inserts: u64,
    /// Bytes of pixel data currently held.
    pub bytes: u64,
    /// Entries currently held.
    pub entries: u64,
    /// The byte budget.
    pub max_bytes: u64,
}

fn image_bytes(img: &RgbImage) -> u64 {
    img.as_raw().len() as u64
}

impl DecodeCache {
    /// A cache holding at most `max_bytes` of pixel data.
    pub fn new(max_bytes: u64) -> Self {
        DecodeCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// The tier image of `id` at `tier` long edge, marking it most recently used.
    pub fn get(&self, id: i64, tier: u32) -> Option<Arc<RgbImage>> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        g_touch(inner, (id, tier)).map_or_else(
            || {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            },
            |img| {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(img)
            },
        )
    }

    /// Inserts (or replaces) the tier image of `id` at `tier`, evicting least recently used
    /// entries until the budget holds. Returns `false` when the image alone exceeds the budget
    /// (it is then not cached).
    pub fn insert(&self, id: i64, tier: u32, image: Arc<RgbImage>) -> bool {
        let bytes = image_bytes(&image);
        if bytes > self.max_bytes {
            return false;
        }
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if let Some(old) = inner.map.remove(&(id, tier)) {
            inner.lru.remove(&old.tick);
            self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
        while self.bytes.load(Ordering::Relaxed) + bytes > self.max_bytes {
            let Some((&tick, &key)) = inner.lru.iter().next() else {
                break;
            };
            inner.lru.remove(&tick);
            if let Some(e) = inner.map.remove(&key) {
                self.bytes.fetch_sub(e.bytes, Ordering::Relaxed);
                self.entries.fetch_sub(1, Ordering::Relaxed);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let tick = inner.next_tick;
        inner.next_tick += 1;
        inner.lru.insert(tick, (id, tier));
        inner.map.insert((id, tier), Entry { image, bytes, tick });
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.inserts.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Drops every tier of image `id` (once all its modules are done). Returns how many
    /// entries were removed. Not counted as evictions.
    pub fn remove_image(&self, id: i64) -> usize {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let keys: Vec<Key> = inner.map.keys().filter(|k| k.0 == id).copied().collect();
        for k in &keys {
            if let Some(e) = inner.map.remove(k) {
                inner.lru.remove(&e.tick);
                self.bytes.fetch_sub(e.bytes, Ordering::Relaxed);
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        keys.len()
    }

    /// The cached tiers of image `id`, largest first.
    pub fn tiers_of(&self, id: i64) -> Vec<u32> {
        let g = self.inner.lock();
        let mut t: Vec<u32> = g.map.keys().filter(|k| k.0 == id).map(|k| k.1).collect();
        t.sort_unstable_by(|a, b| b.cmp(a));
        t
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
        }
    }
}

fn g_touch(inner: &mut Inner, key: Key) -> Option<Arc<RgbImage>> {
    let tick = inner.next_tick;
    let e = inner.map.get_mut(&key)?;
    inner.lru.remove(&e.tick);
    e.tick = tick;
    inner.lru.insert(tick, key);
    inner.next_tick += 1;
    Some(e.image.clone())
}

impl std::fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeCache")
            .field("stats", &self.stats())
            .finish()
    }
}
