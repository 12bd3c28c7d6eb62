//! The decode cache and the probe entry point.

mod common;
use common::*;
use imgd_decode::{DecodeCache, DecodeOptions, ProbeReport, RgbImage, probe};
use std::sync::Arc;

fn img(w: u32, h: u32) -> Arc<RgbImage> {
    Arc::new(RgbImage::new(w, h))
}

#[test]
fn cache_hits_misses_and_lru_eviction() {
    // Each 10x10 image is 300 bytes; room for three.
    let c = DecodeCache::new(900);
    assert!(c.get(1, 100).is_none());
    assert!(c.insert(1, 100, img(10, 10)));
    assert!(c.insert(2, 100, img(10, 10)));
    assert!(c.insert(3, 100, img(10, 10)));
    assert!(c.get(1, 100).is_some()); // 1 is now the most recent
    assert!(c.insert(4, 100, img(10, 10))); // evicts 2, the least recently used
    assert!(c.get(2, 100).is_none());
    assert!(c.get(1, 100).is_some());
    assert!(c.get(3, 100).is_some());
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.evictions), (3, 2, 1));
    assert_eq!((s.bytes, s.entries, s.max_bytes), (900, 3, 900));
    // Too big for the whole budget: refused, nothing evicted.
    assert!(!c.insert(5, 1024, img(100, 100)));
    assert_eq!(c.stats().entries, 3);
    // Replacing an entry does not double-count bytes.
    assert!(c.insert(1, 100, img(10, 10)));
    assert_eq!(c.stats().bytes, 900);
}

#[test]
fn cache_remove_image_drops_all_its_tiers() {
    let c = DecodeCache::new(1 << 20);
    c.insert(7, 1024, img(32, 24));
    c.insert(7, 448, img(16, 12));
    c.insert(8, 448, img(16, 12));
    assert_eq!(c.tiers_of(7), vec![1024, 448]);
    assert_eq!(c.remove_image(7), 2);
    assert!(c.get(7, 1024).is_none() && c.get(7, 448).is_none());
    assert!(c.get(8, 448).is_some());
    let s = c.stats();
    assert_eq!((s.entries, s.bytes, s.evictions), (1, 16 * 12 * 3, 0));
}

#[test]
fn cache_is_thread_safe_and_stays_in_budget() {
    let c = Arc::new(DecodeCache::new(64 * 300));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..500i64 {
                    let id = t * 1000 + i % 40;
                    if c.get(id, 100).is_none() {
                        c.insert(id, 100, img(10, 10));
                    }
                    if i % 7 == 0 {
                        c.remove_image(id);
                    }
                    assert!(c.stats().bytes <= 64 * 300);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = c.stats();
    assert!(s.bytes <= s.max_bytes);
    assert_eq!(s.bytes, s.entries * 300);
    assert_eq!(s.hits + s.misses, 2000);
}

#[test]
fn cache_holds_decoded_tiers() {
    let d = imgd_decode::decode_tiers(&photo("flower.jpg"), &[448, 224], &DecodeOptions::default())
        .unwrap();
    let c = DecodeCache::new(10 << 20);
    for t in &d.tiers {
        c.insert(42, t.long_edge, t.image.clone());
    }
    let hit = c.get(42, 224).unwrap();
    assert!(Arc::ptr_eq(&hit, &d.tiers[1].image));
}

#[test]
fn probe_reports_success() {
    let r = probe(
        &photo("hopper_orientation_6.jpg"),
        &[64, 1024],
        &DecodeOptions::default(),
    );
    // The largest tier (1024) is bigger than the image: a full decode.
    assert_eq!(r.decode_path.as_deref(), Some("jpeg-full"));
    let r = probe(
        &photo("hopper_orientation_6.jpg"),
        &[64, 32],
        &DecodeOptions::default(),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(r.error, None);
    assert_eq!(r.orientation, Some(6));
    assert_eq!(r.decode_path.as_deref(), Some("jpeg-dct-1/2"));
    assert_eq!(r.tiers, vec![64, 32]);
    assert_eq!(r.tier_dims, vec![[64, 64], [32, 32]]);
    let j: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(j["format"], "jpeg");
    assert_eq!(j["ok"], true);
    assert_eq!(j["decode_path"], "jpeg-dct-1/2");
    for key in ["path", "error", "width", "height", "millis", "tiers"] {
        assert!(j.get(key).is_some(), "{key}");
    }
    let line = r.human_line();
    assert!(
        line.contains("jpeg 128x128") && line.contains("jpeg-dct-1/2"),
        "{line}"
    );

    let raw = probe(&fx("bayer_preview.dng"), &[448], &DecodeOptions::default());
    assert_eq!(raw.decode_path.as_deref(), Some("raw-preview"));
    assert_eq!(raw.format, Some(imgd_decode::ImageFormat::Raw));
}

#[test]
fn probe_reports_errors_without_panicking() {
    let o = DecodeOptions::default();
    let cases: &[(&str, &str)] = &[
        ("bad/empty.jpg", "empty"),
        ("bad/random.jpg", "unknown_format"),
        ("bad/truncated.jpg", "truncated"),
        ("bad/bomb.png", "too_large"),
        ("missing.png", "io"),
    ];
    for (f, kind) in cases {
        let r: ProbeReport = probe(&fx(f), &[512], &o);
        assert!(!r.ok, "{f}");
        assert_eq!(r.error_kind, Some(*kind), "{f}: {:?}", r.error);
        assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()));
        assert!(r.human_line().contains("ERROR"));
        serde_json::to_string(&r).unwrap();
    }
    // The truncated JPEG's header is intact, so the report still names format and size.
    let r = probe(&fx("bad/truncated.jpg"), &[512], &o);
    assert_eq!((r.width, r.height), (Some(480), Some(360)));
}
