//! Decoding real files of every supported format.

mod common;
use common::*;
use imgd_decode::{
    DecodeError, DecodeOptions, DecodePath, ImageFormat, decode_tiers, decode_tiers_bytes,
    read_header, read_header_bytes,
};
use std::sync::Arc;

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

#[track_caller]
fn check(path: std::path::PathBuf, tiers: &[u32], format: ImageFormat, dims: (u32, u32), dp: &str) {
    let d =
        decode_tiers(&path, tiers, &opts()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(d.header.format, format, "{}", path.display());
    assert_eq!(d.decode_path.to_string(), dp, "{}", path.display());
    assert_eq!(d.tiers[0].image.dimensions(), dims, "{}", path.display());
}

#[test]
fn every_format_decodes() {
    check(
        photo("flower.jpg"),
        &[],
        ImageFormat::Jpeg,
        (480, 360),
        "jpeg-full",
    );
    check(
        fx("flower2_progressive.jpg"),
        &[],
        ImageFormat::Jpeg,
        (300, 225),
        "jpeg-full",
    );
    check(
        fx("flower2_progressive.jpg"),
        &[150],
        ImageFormat::Jpeg,
        (150, 113),
        "jpeg-dct-1/2",
    );
    check(
        fx("flower2_restart.jpg"),
        &[],
        ImageFormat::Jpeg,
        (300, 225),
        "jpeg-full",
    );
    check(
        fx("flower2_restart.jpg"),
        &[70],
        ImageFormat::Jpeg,
        (70, 53),
        "jpeg-dct-1/4",
    );
    check(
        photo("pil_sample_cmyk.jpg"),
        &[],
        ImageFormat::Jpeg,
        (100, 100),
        "jpeg-full",
    );
    check(fx("hopper.png"), &[], ImageFormat::Png, (128, 128), "png");
    check(
        fx("flower2_palette.png"),
        &[],
        ImageFormat::Png,
        (300, 225),
        "png",
    );
    check(
        fx("flower2_16bit.png"),
        &[100],
        ImageFormat::Png,
        (100, 75),
        "png",
    );
    check(
        fx("pil123rgba.png"),
        &[],
        ImageFormat::Png,
        (162, 150),
        "png",
    );
    check(fx("hopper.tif"), &[], ImageFormat::Tiff, (128, 128), "tiff");
    check(
        fx("tiff_16bit_RGB.tiff"),
        &[],
        ImageFormat::Tiff,
        (100, 40),
        "tiff",
    );
    check(
        fx("tiff_tiled_cmyk_jpeg.tif"),
        &[],
        ImageFormat::Tiff,
        (100, 100),
        "tiff",
    );
    check(
        fx("tiff_tiled_raw.tif"),
        &[200],
        ImageFormat::Tiff,
        (149, 200),
        "tiff",
    );
    check(
        fx("hopper.iccprofile.tif"),
        &[],
        ImageFormat::Tiff,
        (128, 128),
        "tiff",
    );
    check(
        fx("hopper.webp"),
        &[],
        ImageFormat::Webp,
        (128, 128),
        "webp",
    );
    check(
        fx("flower.webp"),
        &[],
        ImageFormat::Webp,
        (480, 360),
        "webp",
    );
    check(fx("hopper.gif"), &[], ImageFormat::Gif, (128, 128), "gif");
    check(fx("hopper.bmp"), &[], ImageFormat::Bmp, (128, 128), "bmp");
    check(
        fx("png_named.jpg"),
        &[],
        ImageFormat::Png,
        (128, 128),
        "png",
    );
}

#[test]
fn sixteen_bit_is_scaled_to_eight() {
    let a = decode_tiers(&fx("flower2_16bit.png"), &[], &opts()).unwrap();
    let b = decode_tiers(&fx("flower2_palette.png"), &[], &opts()).unwrap();
    // The 16-bit file holds the JPEG's exact pixels; the palette one is quantised.
    assert!(mae(&a.tiers[0].image, &b.tiers[0].image) < 6.0);
    let t = decode_tiers(&fx("tiff_16bit_RGB.tiff"), &[], &opts()).unwrap();
    let target = image::open(fx("tiff_16bit_RGB_target.png"))
        .unwrap()
        .into_rgb8();
    assert!(mae(&t.tiers[0].image, &target) < 1.0);
}

#[test]
fn cmyk_matches_between_dct_and_full_paths() {
    let full = decode_tiers(&photo("pil_sample_cmyk.jpg"), &[], &opts()).unwrap();
    let dct = decode_tiers(&photo("pil_sample_cmyk.jpg"), &[50], &opts()).unwrap();
    assert_eq!(dct.decode_path, DecodePath::JpegDct { denominator: 2 });
    let resized = image::imageops::resize(
        &*full.tiers[0].image,
        50,
        50,
        image::imageops::FilterType::Triangle,
    );
    let m = mae(&resized, &dct.tiers[0].image);
    assert!(m < 8.0, "CMYK DCT path differs from the full path: {m}");
    // Not inverted: the top-left corner of the sample is red, the bottom-right black (as in
    // Pillow's own test of this file).
    let img = &full.tiers[0].image;
    let tl = img.get_pixel(0, 0);
    assert!(tl[0] > 200 && tl[1] < 60 && tl[2] < 60, "{tl:?}");
    let br = img.get_pixel(99, 99);
    assert!(br[0] < 30 && br[1] < 30 && br[2] < 30, "{br:?}");
}

#[test]
fn exif_orientation_all_eight() {
    let reference = decode_tiers(&photo("hopper.jpg"), &[], &opts()).unwrap();
    let r = &reference.tiers[0].image;
    for n in 2..=8u16 {
        let p = photo(&format!("hopper_orientation_{n}.jpg"));
        let h = read_header(&p, &opts()).unwrap();
        assert_eq!(h.orientation, n);
        let d = decode_tiers(&p, &[], &opts()).unwrap();
        let m = mae(r, &d.tiers[0].image);
        assert!(m < 6.0, "orientation {n}: mean abs diff {m}");
        // The DCT path is oriented too.
        let s = decode_tiers(&p, &[64], &opts()).unwrap();
        let rs = image::imageops::resize(&**r, 64, 64, image::imageops::FilterType::Triangle);
        assert!(mae(&rs, &s.tiers[0].image) < 8.0, "orientation {n} (DCT)");
    }
    for n in [3u16, 6] {
        let p = fx(&format!("hopper_orientation_{n}.webp"));
        assert_eq!(read_header(&p, &opts()).unwrap().orientation, n);
        let d = decode_tiers(&p, &[], &opts()).unwrap();
        assert!(mae(r, &d.tiers[0].image) < 8.0, "webp orientation {n}");
    }
}

#[test]
fn oriented_dimensions_swap_for_5_to_8() {
    let d = decode_tiers(&fx("bayer_preview.dng"), &[300], &opts()).unwrap();
    assert_eq!(d.header.orientation, 6);
    assert_eq!(d.header.oriented_dimensions(), (428, 800));
    assert!(d.tiers[0].image.dimensions().0 < d.tiers[0].image.dimensions().1);
}

#[test]
fn jpeg_dct_scaling_picks_smallest_sufficient_scale() {
    let p = photo("xmp_test.jpg"); // 2000x1072
    let d = decode_tiers(&p, &[448, 384, 448], &opts()).unwrap();
    assert_eq!(d.decode_path.to_string(), "jpeg-dct-1/4");
    assert_eq!(d.decoded_dimensions, (500, 268));
    assert_eq!(d.tiers.len(), 2);
    assert_eq!(d.tiers[0].image.dimensions(), (448, 240));
    assert_eq!(d.tiers[1].image.dimensions(), (384, 206));
    let d8 = decode_tiers(&p, &[250], &opts()).unwrap();
    assert_eq!(d8.decode_path.to_string(), "jpeg-dct-1/8");
    let d2 = decode_tiers(&p, &[1000], &opts()).unwrap();
    assert_eq!(d2.decode_path.to_string(), "jpeg-dct-1/2");
    let d1 = decode_tiers(&p, &[1001], &opts()).unwrap();
    assert_eq!(d1.decode_path.to_string(), "jpeg-full");
    // Same picture as a full decode resized.
    let full = decode_tiers(&p, &[], &opts()).unwrap();
    let r = image::imageops::resize(
        &*full.tiers[0].image,
        448,
        240,
        image::imageops::FilterType::Lanczos3,
    );
    let psnr = imgd_decode::synth::psnr(&r, &d.tiers[0].image);
    assert!(psnr > 30.0, "psnr {psnr}");
}

#[test]
fn tiers_are_deduplicated_sorted_and_never_upscaled() {
    let d = decode_tiers(
        &photo("flower.jpg"),
        &[384, 5000, 0, 1024, 384, 100],
        &opts(),
    )
    .unwrap();
    let sizes: Vec<u32> = d.tiers.iter().map(|t| t.long_edge).collect();
    assert_eq!(sizes, vec![5000, 1024, 384, 100]);
    assert_eq!(d.tiers[0].image.dimensions(), (480, 360));
    assert!(Arc::ptr_eq(&d.tiers[0].image, &d.tiers[1].image));
    assert_eq!(d.tiers[2].image.dimensions(), (384, 288));
    assert_eq!(d.tiers[3].image.dimensions(), (100, 75));
    assert_eq!(d.decode_path, DecodePath::JpegFull);
    assert!(d.tier(384).is_some() && d.tier(77).is_none());
}

#[test]
fn headers_without_decoding() {
    let h = read_header(&photo("flower.jpg"), &opts()).unwrap();
    assert_eq!(
        (h.format, h.width, h.height, h.orientation),
        (ImageFormat::Jpeg, 480, 360, 1)
    );
    let exif = exif::Reader::new().read_raw(h.exif.unwrap()).unwrap();
    let make = exif.get_field(exif::Tag::Make, exif::In::PRIMARY).unwrap();
    assert!(make.display_value().to_string().contains("Canon"));

    // A prefix is enough for JPEG.
    let bytes = std::fs::read(photo("xmp_test.jpg")).unwrap();
    let h = read_header_bytes(&bytes[..64 * 1024], &opts()).unwrap();
    assert_eq!((h.width, h.height), (2000, 1072));
    let exif = exif::Reader::new().read_raw(h.exif.unwrap()).unwrap();
    let model = exif.get_field(exif::Tag::Model, exif::In::PRIMARY).unwrap();
    assert!(
        model.display_value().to_string().contains("Rebel T6"),
        "{}",
        model.display_value()
    );

    let h = read_header(&fx("hopper.tif"), &opts()).unwrap();
    assert_eq!((h.format, h.width, h.height), (ImageFormat::Tiff, 128, 128));
    if let Some(e) = h.exif {
        exif::Reader::new().read_raw(e).unwrap();
    }
    let h = read_header(&fx("hopper_orientation_6.webp"), &opts()).unwrap();
    assert_eq!((h.format, h.width, h.height), (ImageFormat::Webp, 128, 128));
    exif::Reader::new().read_raw(h.exif.unwrap()).unwrap();
    let h = read_header(&fx("flower2_palette.png"), &opts()).unwrap();
    assert_eq!((h.format, h.width, h.height), (ImageFormat::Png, 300, 225));
    let h = read_header(&fx("hopper.gif"), &opts()).unwrap();
    assert_eq!((h.format, h.width, h.height), (ImageFormat::Gif, 128, 128));
    let h = read_header(&fx("hopper.bmp"), &opts()).unwrap();
    assert_eq!((h.format, h.width, h.height), (ImageFormat::Bmp, 128, 128));
    let h = read_header(&fx("png_named.jpg"), &opts()).unwrap();
    assert_eq!(h.format, ImageFormat::Png);
    let h = read_header(&fx("bayer_preview.dng"), &opts()).unwrap();
    assert_eq!(
        (h.format, h.width, h.height, h.orientation),
        (ImageFormat::Raw, 800, 428, 6)
    );
    let exif = exif::Reader::new().read_raw(h.exif.unwrap()).unwrap();
    assert!(exif.get_field(exif::Tag::Make, exif::In::PRIMARY).is_some());
}

#[test]
fn raw_paths_half_full_and_preview() {
    let src = dng_source();
    // Half size: 2x2 binning, white balance, matrix, gamma.
    let d = decode_tiers(&fx("bayer.dng"), &[400, 200], &opts()).unwrap();
    assert_eq!(d.header.format, ImageFormat::Raw);
    assert_eq!(d.decode_path, DecodePath::RawHalf);
    assert_eq!(d.decoded_dimensions, (400, 214));
    let half_src = half_linear(&src);
    let p = imgd_decode::synth::psnr(&half_src, &d.tiers[0].image);
    eprintln!("raw-half PSNR {p:.2} dB");
    assert!(p >= 30.0, "raw-half PSNR {p} dB");
    // Full: bilinear demosaic.
    let d = decode_tiers(&fx("bayer.dng"), &[800], &opts()).unwrap();
    assert_eq!(d.decode_path, DecodePath::RawFull);
    assert_eq!(d.tiers[0].image.dimensions(), (800, 428));
    let p = imgd_decode::synth::psnr(&src, &d.tiers[0].image);
    eprintln!("raw-full PSNR {p:.2} dB");
    assert!(p >= 28.0, "raw-full PSNR {p} dB");
    // Preview when it covers the largest tier.
    let d = decode_tiers(&fx("bayer_preview.dng"), &[600, 300], &opts()).unwrap();
    assert_eq!(d.decode_path, DecodePath::RawPreview);
    assert_eq!(d.tiers[0].image.dimensions(), (321, 600));
    let d = decode_tiers(&fx("bayer_preview.dng"), &[700], &opts()).unwrap();
    assert_eq!(d.decode_path, DecodePath::RawFull);
    assert_eq!(d.tiers[0].image.dimensions(), (375, 700));
}

#[cfg(feature = "heic")]
#[test]
fn heic_thumbnail_primary_and_orientation() {
    let jpg = decode_tiers(&photo("flower.jpg"), &[], &opts()).unwrap();
    let d = decode_tiers(&fx("flower.heic"), &[], &opts()).unwrap();
    assert_eq!(d.header.format, ImageFormat::Heif);
    assert_eq!(d.decode_path, DecodePath::HeifPrimary);
    assert_eq!(d.tiers[0].image.dimensions(), (480, 360));
    let p = imgd_decode::synth::psnr(&jpg.tiers[0].image, &d.tiers[0].image);
    assert!(p > 25.0, "heic vs jpeg PSNR {p}");
    let t = decode_tiers(&fx("flower.heic"), &[200, 100], &opts()).unwrap();
    assert_eq!(t.decode_path, DecodePath::HeifThumbnail);
    assert_eq!(t.tiers[0].image.dimensions(), (200, 150));
    let h = read_header(&fx("flower.heic"), &opts()).unwrap();
    assert_eq!((h.width, h.height), (480, 360));
    assert!(h.exif.is_some(), "EXIF of the source JPEG is carried");
    exif::Reader::new().read_raw(h.exif.unwrap()).unwrap();

    let reference = decode_tiers(&photo("hopper.jpg"), &[], &opts()).unwrap();
    let o = decode_tiers(&fx("hopper_orientation_6.heic"), &[], &opts()).unwrap();
    let m = mae(&reference.tiers[0].image, &o.tiers[0].image);
    assert!(m < 8.0, "HEIC orientation: {m}");
}

#[test]
fn limits_are_checked_from_the_header() {
    for f in ["bad/bomb.png", "bad/bomb.jpg"] {
        let e = decode_tiers(&fx(f), &[1024], &opts()).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { .. }), "{f}: {e}");
        assert!(e.to_string().contains("too large"));
        let e = read_header(&fx(f), &opts()).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { .. }), "{f}: {e}");
    }
    let small = DecodeOptions {
        max_pixels: 10_000,
        ..opts()
    };
    let e = decode_tiers(&photo("flower.jpg"), &[], &small).unwrap_err();
    assert!(matches!(
        e,
        DecodeError::TooLarge {
            width: 480,
            height: 360,
            limit: 10_000
        }
    ));
    let tiny = DecodeOptions {
        max_file_bytes: 1000,
        ..opts()
    };
    let e = decode_tiers(&photo("flower.jpg"), &[], &tiny).unwrap_err();
    assert!(matches!(e, DecodeError::FileTooLarge { .. }), "{e}");
    let e = read_header(&photo("flower.jpg"), &tiny).unwrap_err();
    assert!(matches!(e, DecodeError::FileTooLarge { .. }), "{e}");
}

#[test]
fn bad_files_give_typed_errors() {
    let o = opts();
    let kind = |f: &str| decode_tiers(&fx(f), &[512], &o).unwrap_err();
    assert!(matches!(kind("bad/empty.jpg"), DecodeError::Empty));
    assert!(matches!(
        kind("bad/random.jpg"),
        DecodeError::UnknownFormat { .. }
    ));
    assert!(
        matches!(kind("bad/truncated.jpg"), DecodeError::Truncated { .. }),
        "{}",
        kind("bad/truncated.jpg")
    );
    assert!(
        matches!(kind("bad/header_only.jpg"), DecodeError::Truncated { .. }),
        "{}",
        kind("bad/header_only.jpg")
    );
    let e = kind("bad/truncated.png");
    assert!(
        matches!(
            e,
            DecodeError::Truncated { .. } | DecodeError::Corrupt { .. }
        ),
        "{e}"
    );
    let e = decode_tiers(&fx("does-not-exist.jpg"), &[512], &o).unwrap_err();
    assert!(matches!(e, DecodeError::Io(_)));
    assert!(matches!(
        read_header(&fx("bad/empty.jpg"), &o).unwrap_err(),
        DecodeError::Empty
    ));
    assert!(
        read_header(&fx("bad/truncated.jpg"), &o).is_ok(),
        "header intact"
    );
    // Every bad file: an error, never a panic, from both entry points.
    for entry in std::fs::read_dir(fx("bad")).unwrap() {
        let p = entry.unwrap().path();
        let r = decode_tiers(&p, &[1024, 256], &o);
        assert!(r.is_err(), "{} decoded", p.display());
        let e = r.unwrap_err();
        assert!(
            !matches!(e, DecodeError::Panicked { .. }),
            "{}: {e}",
            p.display()
        );
        let _ = read_header(&p, &o);
        let rep = imgd_decode::probe(&p, &[1024], &o);
        assert!(!rep.ok && rep.error.is_some());
    }
}

#[test]
fn bytes_and_path_entry_points_agree() {
    let bytes = std::fs::read(photo("flower.jpg")).unwrap();
    let a = decode_tiers_bytes(&bytes, &[200], &opts()).unwrap();
    let b = decode_tiers(&photo("flower.jpg"), &[200], &opts()).unwrap();
    assert_eq!(a.tiers[0].image.as_raw(), b.tiers[0].image.as_raw());
    assert_eq!(a.header, b.header);
}

#[test]
fn every_decode_is_counted_once() {
    let before = imgd_decode::pixel_decode_count();
    decode_tiers(&photo("flower.jpg"), &[1024, 448, 384], &opts()).unwrap();
    read_header(&photo("flower.jpg"), &opts()).unwrap();
    assert!(imgd_decode::pixel_decode_count() > before);
}

#[test]
fn tiled_planar_tiff_is_refused_before_the_decoder_panics() {
    // image-tiff 0.11 asserts (panics) on tiled planar-configuration files; the layout is
    // checked first. (Any other decoder panic would still be caught: see lib.rs unit tests.)
    let e = decode_tiers(&fx("tiff_tiled_planar_16bit_RGB.tiff"), &[], &opts()).unwrap_err();
    assert!(matches!(e, DecodeError::Unsupported { .. }), "{e}");
    let r = imgd_decode::probe(&fx("tiff_tiled_planar_16bit_RGB.tiff"), &[64], &opts());
    assert!(!r.ok);
    assert_eq!(r.error_kind, Some("unsupported"));
    assert_eq!(r.format, Some(ImageFormat::Tiff));
}

/// Regression: a FIFO swapped in for a registered JPEG blocked the decode thread in `open`
/// forever, and a symlink to `/dev/zero` was read until memory ran out.
#[test]
fn a_fifo_or_a_device_at_an_image_path_fails_at_once_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("swapped.jpg");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let zero = dir.path().join("zero.jpg");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let folder = dir.path().join("folder.jpg");
    std::fs::create_dir(&folder).unwrap();
    for (path, kind) in [
        (&fifo, "a FIFO"),
        (&zero, "a character device"),
        (&folder, "a folder"),
    ] {
        for error in [
            decode_tiers(path, &[256], &opts()).unwrap_err(),
            read_header(path, &opts()).unwrap_err(),
            imgd_decode::read_image_file(path, &opts()).unwrap_err(),
        ] {
            assert!(
                matches!(error, DecodeError::NotAFile { kind: k } if k == kind),
                "{}: {error}",
                path.display()
            );
            assert!(error.is_permanent());
        }
    }
}

/// Regression: a 3 GiB sparse `.jpg` was read whole (3.2 GB of memory) before its size was
/// checked.
#[test]
fn an_oversized_sparse_file_is_refused_before_a_byte_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jpg");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(3 << 30).unwrap();
    let options = opts();
    for error in [
        decode_tiers(&path, &[256], &options).unwrap_err(),
        read_header(&path, &options).unwrap_err(),
    ] {
        assert!(
            matches!(error, DecodeError::FileTooLarge { size, .. } if size == 3 << 30),
            "{error}"
        );
        assert!(error.is_permanent());
    }
    // Under a small limit, a file that is within it when opened is still read no further than
    // the limit.
    let small = DecodeOptions {
        max_file_bytes: 1 << 20,
        ..opts()
    };
    std::fs::File::create(&path)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    assert!(matches!(
        imgd_decode::read_image_file(&path, &small).unwrap_err(),
        DecodeError::FileTooLarge { .. }
    ));
}

#[test]
fn a_vanished_file_is_missing_and_may_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let error = decode_tiers(&dir.path().join("gone.jpg"), &[256], &opts()).unwrap_err();
    assert!(error.is_missing(), "{error}");
    assert!(!error.is_permanent());
}
