//! The `thumbnail` module: a small JPEG of each image, made on the decode threads from the
//! 256-px tier (the one `phash` reads too, so it costs no extra resize), stored by image id in
//! `result_thumbnail`. Pages show these; a page view never decodes an original.

#![deny(missing_docs)]

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use imgd_core::{Migration, Module, ModuleSpec, ResultKey, ResultRow, RunsOn, SqlValue};
use imgd_infer::runner::{CpuAnalysis, CpuInput};

/// The long edge of a thumbnail, in pixels.
pub const THUMBNAIL_EDGE: u32 = 256;

/// The JPEG quality thumbnails are written at (a 256-px photo takes about 12 KB).
pub const JPEG_QUALITY: u8 = 82;

/// The `thumbnail` module's declaration.
pub static THUMBNAIL_SPEC: ModuleSpec = ModuleSpec {
    name: "thumbnail",
    bit: 10,
    summary: "a 256-px JPEG per image for the web page, made from a tier already decoded",
    tier: Some(THUMBNAIL_EDGE),
    runs_on: RunsOn::DecodeThreads,
    queued_by_default: true,
    result_table: "result_thumbnail",
    result_key: ResultKey::Image,
    migrations: &[Migration {
        version: 10,
        name: "0010_thumbnail",
        sql: include_str!("../migrations/0010_thumbnail.sql"),
        postgres: Some(include_str!("../migrations/0010_thumbnail.pg.sql")),
    }],
    search_text: &[],
    gate: None,
    store_hook: None,
};

/// The `thumbnail` module.
pub const THUMBNAIL: Module = Module::of(&THUMBNAIL_SPEC);

/// `image` as a baseline JPEG at [`JPEG_QUALITY`], through libjpeg-turbo (the mozjpeg fork
/// the decoder links, with its SIMD, set to libjpeg's fast defaults: no trellis, no
/// progressive scans). libjpeg reports errors by unwinding; they are caught here.
pub fn encode_jpeg(image: &RgbImage) -> std::io::Result<Vec<u8>> {
    let run = || -> std::io::Result<Vec<u8>> {
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        compress.set_size(image.width() as usize, image.height() as usize);
        compress.set_fastest_defaults();
        compress.set_quality(f32::from(JPEG_QUALITY));
        let mut started = compress.start_compress(Vec::with_capacity(16 * 1024))?;
        started.write_scanlines(image.as_raw())?;
        started.finish()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(std::io::Error::other("libjpeg reported an error")))
}

/// [`encode_jpeg`] with the `image` crate's own encoder (pure Rust), the baseline of
/// `examples/thumbnail_cost.rs`.
pub fn encode_jpeg_pure_rust(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut jpeg = Vec::with_capacity(16 * 1024);
    JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode_image(image)?;
    Ok(jpeg)
}

/// The `result_thumbnail` row of `image` (already at thumbnail size).
pub fn to_row(image: &RgbImage) -> std::io::Result<ResultRow> {
    let jpeg = encode_jpeg(image)?;
    Ok(ResultRow {
        module: THUMBNAIL,
        model_id: None,
        model_version: None,
        data: serde_json::json!({
            "width": image.width(),
            "height": image.height(),
            "bytes": jpeg.len(),
        }),
        columns: vec![
            ("width", SqlValue::Integer(i64::from(image.width()))),
            ("height", SqlValue::Integer(i64::from(image.height()))),
            ("jpeg", SqlValue::Blob(jpeg)),
        ],
        vectors: Vec::new(),
    })
}

/// The `thumbnail` module on the decode threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thumbnails;

impl CpuAnalysis for Thumbnails {
    fn module(&self) -> Module {
        THUMBNAIL
    }

    fn analyse(&self, input: &CpuInput<'_>) -> Result<ResultRow, String> {
        let tier = input
            .tier
            .ok_or_else(|| "no decoded tier for the thumbnail".to_string())?;
        to_row(tier).map_err(|e| format!("cannot encode the thumbnail: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");

    #[test]
    fn a_thumbnail_is_the_oriented_tier_as_a_small_jpeg() {
        // A camera RAW, 800 × 428 as stored, with EXIF orientation 6 (portrait).
        let path = format!("{FIXTURES}/decode/bayer_preview.dng");
        let decoded = imgd_decode::decode_tiers(
            std::path::Path::new(&path),
            &[THUMBNAIL_EDGE],
            &imgd_decode::DecodeOptions::default(),
        )
        .unwrap();
        let tier = decoded.tier(THUMBNAIL_EDGE).unwrap();
        let row = to_row(tier).unwrap();
        let SqlValue::Blob(jpeg) = &row.columns[2].1 else {
            panic!("no JPEG column");
        };
        let back = image::load_from_memory(jpeg).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), tier.dimensions());
        assert_eq!(back.width().max(back.height()), THUMBNAIL_EDGE);
        assert!(back.height() > back.width(), "orientation applied");
        assert!(jpeg.len() < 40 * 1024, "{} bytes", jpeg.len());
        // The thumbnail looks like its tier: mean absolute difference of a JPEG at q82.
        let diff: u64 = back
            .as_raw()
            .iter()
            .zip(tier.as_raw())
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = diff as f64 / back.as_raw().len() as f64;
        assert!(mean < 6.0, "mean difference {mean}");
        assert_eq!(row.data["bytes"], jpeg.len());
    }
}
