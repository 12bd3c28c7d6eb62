//! The probe entry point.

mod common;
use common::*;
use imgd_decode::{DecodeOptions, ProbeReport, probe};

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
