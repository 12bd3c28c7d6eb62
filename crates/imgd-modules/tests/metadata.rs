//! The metadata module on real photos: known values, hostile values, and damaged EXIF blocks.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use imgd_core::SqlValue;
use imgd_modules::metadata::{Metadata, extract};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

/// The raw EXIF bytes of a file, as the pipeline hands them to the module. `exif_gps.jpg` has
/// a damaged IFD chain, so partial results are accepted: only the blob is wanted here.
fn raw_exif(rel: &str) -> Vec<u8> {
    let file = File::open(fixture(rel)).unwrap();
    exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut BufReader::new(file))
        .or_else(|e| e.distill_partial_result(|_| {}))
        .unwrap()
        .buf()
        .to_vec()
}

fn column<'a>(row: &'a imgd_core::ResultRow, name: &str) -> &'a SqlValue {
    &row.columns.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn canon_powershot_s40() {
    let m = extract(Some(&raw_exif("photos/flower.jpg")), 480, 360);
    assert_eq!(m.make.as_deref(), Some("Canon"));
    assert_eq!(m.model.as_deref(), Some("Canon PowerShot S40"));
    assert_eq!(m.lens, None);
    assert_eq!(m.iso, None);
    assert_eq!(m.aperture, Some(4.9));
    assert_eq!(m.shutter_s, Some(0.002));
    assert_eq!(m.focal_mm, Some(21.3125));
    // No FocalLengthIn35mmFilm: from the focal plane (56800/7 px per inch over 2272x1704 px,
    // a 7.11 x 5.33 mm sensor, crop 4.87). Canon sells the S40 as 35-105 mm equivalent.
    assert_eq!(m.focal_35mm, Some(103.7));
    assert_eq!(m.taken_at.as_deref(), Some("2003-12-14T12:01:44"));
    assert_eq!(m.taken_utc_ms, None, "no offset recorded");
    assert_eq!(m.utc_offset, None);
    assert_eq!((m.gps_lat, m.gps_lon, m.gps_alt), (None, None, None));
    assert_eq!(m.orientation, Some(1));
    assert_eq!((m.width, m.height), (Some(2272), Some(1704)));
    assert_eq!(m.software, None);
    assert_eq!(m.flash_fired, Some(false));
    assert_eq!(m.metering_mode.as_deref(), Some("center_weighted_average"));
    assert_eq!(m.white_balance.as_deref(), Some("auto"));
    assert_eq!(m.color_space.as_deref(), Some("srgb"));
    assert_eq!(m.exposure_bias_ev, Some(0.0));
    assert!(m.warnings.is_empty());
}

#[test]
fn canon_eos_rebel_t6_exported_by_lightroom() {
    let m = extract(Some(&raw_exif("photos/xmp_test.jpg")), 2000, 1072);
    assert_eq!(m.make.as_deref(), Some("Canon"));
    assert_eq!(m.model.as_deref(), Some("Canon EOS Rebel T6"));
    assert_eq!(m.lens.as_deref(), Some("EF-S18-55mm f/3.5-5.6 III"));
    assert_eq!(m.iso, Some(100));
    assert_eq!(m.aperture, Some(4.0));
    assert_eq!(m.shutter_s, Some(0.01));
    assert_eq!(m.focal_mm, Some(25.0));
    // The focal-plane resolution refers to the camera's 6000x4000 frame, not to this 2000 px
    // export, and the file has no PixelXDimension: no equivalent focal length is guessed.
    assert_eq!(m.focal_35mm, None);
    assert_eq!(m.taken_at.as_deref(), Some("2018-10-27T13:27:23.530"));
    assert_eq!(m.taken_utc_ms, None);
    assert_eq!(m.orientation, None);
    assert_eq!(
        (m.width, m.height),
        (Some(2000), Some(1072)),
        "header dimensions"
    );
    assert_eq!(
        m.software.as_deref(),
        Some("Adobe Photoshop Lightroom Classic 7.4 (Macintosh)")
    );
    assert_eq!(m.exposure_program.as_deref(), Some("manual"));
    assert_eq!(m.metering_mode.as_deref(), Some("pattern"));
    assert_eq!(m.color_space.as_deref(), Some("uncalibrated"));
}

#[test]
fn pixel_6_with_gps_and_offset() {
    let m = extract(Some(&raw_exif("modules/ultrahdr.jpg")), 1512, 2688);
    assert_eq!(m.make.as_deref(), Some("Google"));
    assert_eq!(m.model.as_deref(), Some("Pixel 6"));
    assert_eq!(m.lens.as_deref(), Some("Pixel 6 back camera 6.81mm f/1.85"));
    assert_eq!(m.iso, Some(89));
    assert_eq!(m.aperture, Some(1.85));
    assert_eq!(m.shutter_s, Some(0.04));
    assert_eq!(m.focal_mm, Some(6.81));
    assert_eq!(m.focal_35mm, Some(24.0));
    assert_eq!(m.taken_at.as_deref(), Some("2024-05-07T09:33:04.046"));
    assert_eq!(m.utc_offset.as_deref(), Some("+08:00"));
    // 2024-05-07T01:33:04.046Z; the GPS clock (GPSTimeStamp 01:32:09 UTC) agrees to a minute.
    assert_eq!(m.taken_utc_ms, Some(1_715_045_584_046));
    // N 30° 37' 39.54", E 119° 44' 19.56", 98.9 m.
    assert_eq!(m.gps_lat, Some(30.6276500));
    assert_eq!(m.gps_lon, Some(119.7387667));
    assert_eq!(m.gps_alt, Some(98.9));
    assert_eq!(m.orientation, Some(1));
    assert_eq!((m.width, m.height), (Some(1512), Some(2688)));
    assert_eq!(m.software.as_deref(), Some("HDR+ 1.0.621982163zd"));
    assert_eq!(m.exposure_program.as_deref(), Some("normal"));
    assert_eq!(m.flash_fired, Some(false));
}

#[test]
fn hostile_values_are_dropped_field_by_field() {
    let m = extract(Some(&raw_exif("photos/exif_gps.jpg")), 8, 8);
    assert_eq!(m.make.as_deref(), Some("Make"));
    assert_eq!(m.model.as_deref(), Some("XXX-XXX"));
    assert_eq!(m.software.as_deref(), Some("PIL"));
    assert_eq!(m.shutter_s, None, "ExposureTime 4294967295");
    assert_eq!(m.iso, None, "ISOSpeed 4294967295");
    assert_eq!(m.gps_lat, None, "GPSLatitude 4294967295");
    assert_eq!(m.gps_lon, None);
    assert_eq!(m.gps_alt, None);
    assert_eq!(m.taken_at.as_deref(), Some("2099-09-29T10:10:10"));
    assert_eq!(m.lens.as_deref(), Some("LensMake 1mm f/1"));
    assert_eq!((m.width, m.height), (Some(8), Some(8)));
    assert!(m.warnings.is_empty());
}

#[test]
fn orientation_from_every_hopper() {
    for n in 2..=8 {
        let m = extract(
            Some(&raw_exif(&format!("photos/hopper_orientation_{n}.jpg"))),
            128,
            128,
        );
        assert_eq!(m.orientation, Some(n), "hopper_orientation_{n}.jpg");
    }
}

#[test]
fn no_exif_and_garbage_exif() {
    let none = extract(None, 640, 480);
    assert_eq!(
        none,
        Metadata {
            width: Some(640),
            height: Some(480),
            ..Metadata::default()
        }
    );
    let garbage = extract(Some(b"this is not a TIFF header"), 640, 480);
    assert_eq!((garbage.width, garbage.height), (Some(640), Some(480)));
    assert_eq!(garbage.warnings.len(), 1);
    assert!(
        garbage.warnings[0].contains("EXIF could not be parsed"),
        "{:?}",
        garbage.warnings
    );
    let row = garbage.to_row();
    assert_eq!(column(&row, "width"), &SqlValue::Integer(640));
    assert!(row.data["warnings"][0].as_str().unwrap().contains("EXIF"));
    assert_eq!(extract(Some(&[]), 0, 0).width, None);
}

/// Every truncation and a few thousand random byte corruptions of real EXIF blocks: never a
/// panic, and a truncated block keeps what came before the cut.
#[test]
fn damaged_blocks_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for rel in [
        "photos/flower.jpg",
        "modules/ultrahdr.jpg",
        "photos/exif_gps.jpg",
    ] {
        let blob = raw_exif(rel);
        for len in (0..blob.len()).step_by(7) {
            let _ = extract(Some(&blob[..len]), 10, 10);
        }
        for _ in 0..700 {
            let mut damaged = blob.clone();
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % damaged.len();
                damaged[at] = next() as u8;
            }
            let m = extract(Some(&damaged), 10, 10);
            let _ = m.to_row();
        }
    }
    let blob = raw_exif("photos/flower.jpg");
    let cut = extract(Some(&blob[..blob.len() * 2 / 3]), 480, 360);
    assert_eq!(cut.make.as_deref(), Some("Canon"));
}

#[test]
fn row_columns_match_the_table_and_data_round_trips() {
    let m = extract(Some(&raw_exif("modules/ultrahdr.jpg")), 1512, 2688);
    let row = m.to_row();
    assert_eq!(row.module, imgd_modules::METADATA);
    assert_eq!(row.model_id, None);
    let names: Vec<&str> = row.columns.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "make",
            "model",
            "lens",
            "iso",
            "aperture",
            "shutter_s",
            "focal_mm",
            "focal_35mm",
            "taken_at",
            "taken_utc_ms",
            "gps_lat",
            "gps_lon",
            "gps_alt",
            "orientation",
            "width",
            "height",
            "software"
        ]
    );
    let schema = include_str!("../../../migrations/0001_init.sql");
    let table = schema.split("CREATE TABLE result_metadata").nth(1).unwrap();
    let table = &table[..table.find(");").unwrap()];
    for name in names {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} is not a column of result_metadata"
        );
    }
    assert_eq!(column(&row, "iso"), &SqlValue::Integer(89));
    assert_eq!(
        column(&row, "taken_at"),
        &SqlValue::Text("2024-05-07T09:33:04.046".into())
    );
    assert_eq!(
        column(&row, "taken_utc_ms"),
        &SqlValue::Integer(1_715_045_584_046)
    );
    assert_eq!(column(&row, "gps_alt"), &SqlValue::Real(98.9));
    assert_eq!(row.data["utc_offset"], "+08:00");
    assert!(
        row.data.get("warnings").is_none(),
        "empty fields are left out of data"
    );
    let back: Metadata = serde_json::from_value(row.data).unwrap();
    assert_eq!(back, m);
}
