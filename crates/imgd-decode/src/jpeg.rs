//! JPEG: DCT-domain downscaling through libjpeg-turbo (`mozjpeg`; `jpeg-decoder` for
//! CMYK/YCCK and as the fallback), full decodes through `image` (zune-jpeg).

use crate::DecodePath;
use crate::error::{DecodeError, from_image_error, looks_truncated};
use crate::format::ImageFormat;
use crate::header::JpegInfo;
use crate::pixels;
use image::RgbImage;
use std::io::Cursor;

const F: ImageFormat = ImageFormat::Jpeg;

/// Whether the entropy-coded data after the first scan ends with an EOI marker. `FF D9`
/// cannot occur inside entropy-coded data (0xFF is stuffed), so its absence after the first
/// SOS means the file was cut short. Searched from the end, where a whole file has it, so
/// that the check does not read the whole scan.
pub(crate) fn has_eoi(b: &[u8], sos_at: usize) -> bool {
    b.get(sos_at..)
        .is_some_and(|s| s.windows(2).rev().any(|w| w == [0xFF, 0xD9]))
}

/// The DCT scale denominator (1, 2, 4, 8) for a target long edge: the
/// smallest output whose long edge is still >= `target`.
pub(crate) fn dct_denominator(width: u32, height: u32, target: u32) -> u32 {
    let long = width.max(height);
    let mut best = 1;
    for d in [2u32, 4, 8] {
        if long.div_ceil(d) >= target {
            best = d;
        }
    }
    best
}

/// Decodes a JPEG so that its long edge is at least `target` (or the full image), by the
/// cheapest path. `max_pixels` bounds the decoder's allocations.
pub(crate) fn decode(
    b: &[u8],
    info: &JpegInfo,
    target: u32,
    max_alloc: u64,
) -> Result<(RgbImage, DecodePath), DecodeError> {
    if !matches!(info.sof, 0xC0..=0xC2) {
        return Err(DecodeError::unsupported(
            F,
            format!(
                "JPEG process {:#04x} (lossless/arithmetic) is not supported",
                info.sof
            ),
        ));
    }
    if !has_eoi(b, info.sos_at) {
        return Err(DecodeError::truncated(
            F,
            "the image data ends before the end-of-image marker",
        ));
    }
    let denom = dct_denominator(info.width, info.height, target);
    if denom == 1 {
        return full(b, max_alloc).map(|i| (i, DecodePath::JpegFull));
    }
    // libjpeg-turbo's scaled decode for RGB and greyscale; jpeg-decoder for CMYK/YCCK and as
    // the fallback.
    if matches!(info.components, 1 | 3)
        && let Ok(img) = scaled_turbo(b, denom)
    {
        return Ok((
            img,
            DecodePath::JpegDct {
                denominator: denom as u8,
            },
        ));
    }
    match scaled(b, info, target) {
        Ok((img, 1)) => Ok((img, DecodePath::JpegFull)),
        Ok((img, d)) => Ok((
            img,
            DecodePath::JpegDct {
                denominator: d as u8,
            },
        )),
        // jpeg-decoder is stricter than zune-jpeg on some real files: fall back to a full decode.
        Err(e) => match full(b, max_alloc) {
            Ok(img) => Ok((img, DecodePath::JpegFull)),
            Err(_) => Err(e),
        },
    }
}

fn full(b: &[u8], max_alloc: u64) -> Result<RgbImage, DecodeError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(b), image::ImageFormat::Jpeg);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| from_image_error(F, e))?;
    Ok(pixels::to_rgb8(img))
}

/// DCT-domain scaled decode through libjpeg-turbo (the mozjpeg fork, with its x86 SIMD
/// reduced-size IDCTs and colour conversion; at 1/2..1/8 scale the Huffman decode, which has
/// no SIMD, is most of the time). libjpeg reports errors by unwinding; they are caught here
/// and become `Corrupt`.
fn scaled_turbo(b: &[u8], denom: u32) -> Result<RgbImage, DecodeError> {
    let run = || -> std::io::Result<RgbImage> {
        let mut d = mozjpeg::Decompress::new_mem(b)?;
        d.scale((8 / denom) as u8);
        d.do_fancy_upsampling(false);
        d.dct_method(mozjpeg::DctMethod::IntegerFast);
        let mut s = d.rgb()?;
        let (w, h) = (s.width() as u32, s.height() as u32);
        let px: Vec<u8> = s.read_scanlines()?;
        s.finish()?;
        RgbImage::from_raw(w, h, px).ok_or_else(|| std::io::Error::other("short pixel buffer"))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(DecodeError::corrupt(F, e.to_string())),
        Err(_) => Err(DecodeError::corrupt(F, "libjpeg reported an error")),
    }
}

fn scaled(b: &[u8], info: &JpegInfo, target: u32) -> Result<(RgbImage, u32), DecodeError> {
    let map = |e: jpeg_decoder::Error| {
        let m = e.to_string();
        if looks_truncated(&m) {
            DecodeError::truncated(F, m)
        } else {
            DecodeError::corrupt(F, m)
        }
    };
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(b));
    d.read_info().map_err(map)?;
    let (w, h) = (info.width, info.height);
    let long = w.max(h);
    let req_w = (w as u64 * target as u64)
        .div_ceil(long as u64)
        .clamp(1, 65535) as u16;
    let req_h = (h as u64 * target as u64)
        .div_ceil(long as u64)
        .clamp(1, 65535) as u16;
    let (ow, oh) = d.scale(req_w, req_h).map_err(map)?;
    let px = d.decode().map_err(map)?;
    let meta = d
        .info()
        .ok_or_else(|| DecodeError::corrupt(F, "no frame information"))?;
    let (ow, oh) = (ow as u32, oh as u32);
    let _ = (meta.width, meta.height);
    let n = ow as usize * oh as usize;
    let bad = || DecodeError::corrupt(F, "decoded buffer has the wrong size");
    let img = match meta.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(ow, oh, px).ok_or_else(bad)?,
        jpeg_decoder::PixelFormat::L8 => {
            if px.len() != n {
                return Err(bad());
            }
            RgbImage::from_raw(ow, oh, px.iter().flat_map(|&v| [v, v, v]).collect())
                .ok_or_else(bad)?
        }
        jpeg_decoder::PixelFormat::L16 => {
            if px.len() != 2 * n {
                return Err(bad());
            }
            RgbImage::from_raw(
                ow,
                oh,
                px.chunks_exact(2)
                    .flat_map(|v| [v[0], v[0], v[0]])
                    .collect(),
            )
            .ok_or_else(bad)?
        }
        jpeg_decoder::PixelFormat::CMYK32 => {
            if px.len() != 4 * n {
                return Err(bad());
            }
            pixels::cmyk_to_rgb(ow, oh, &px).ok_or_else(bad)?
        }
    };
    let denom = [1u32, 2, 4, 8]
        .into_iter()
        .find(|&k| w.div_ceil(k) == ow)
        .unwrap_or(1);
    Ok((img, denom))
}
