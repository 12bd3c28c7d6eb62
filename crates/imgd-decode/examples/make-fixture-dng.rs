//! Writes the DNG fixtures from a real photo:
//! `cargo run -p imgd-decode --example make-fixture-dng -- PHOTO.jpg OUTDIR`.
//!
//! `bayer.dng`: 800 px wide, no preview (served by half-size or full demosaic);
//! `bayer_preview.dng`: same, with a 600 px JPEG preview and EXIF orientation 6. The tests
//! rebuild the source pixels the same way (Lanczos3 to 800×428) for their PSNR checks.

use imgd_decode::synth::{DngOptions, make_dng};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (photo, out) = (&args[1], std::path::Path::new(&args[2]));
    let src = image::open(photo).expect("read photo").into_rgb8();
    let src = image::imageops::resize(&src, 800, 428, image::imageops::FilterType::Lanczos3);
    std::fs::write(
        out.join("bayer.dng"),
        make_dng(&src, &DngOptions::default()),
    )
    .expect("write");
    let o = DngOptions {
        orientation: 6,
        preview_long_edge: Some(600),
        ..DngOptions::default()
    };
    std::fs::write(out.join("bayer_preview.dng"), make_dng(&src, &o)).expect("write");
}
