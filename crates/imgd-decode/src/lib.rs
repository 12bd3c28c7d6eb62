//! Stage 1 of the imgd pipeline: decoding.
//!
//! One call reads a file once, sniffs its format from the magic bytes, checks the limits
//! from the header, decodes the pixels **once** by the cheapest path that reaches the largest
//! resolution tier asked for, applies the EXIF orientation and derives the smaller tiers by
//! resizing:
//!
//! | format | path to the largest tier |
//! |---|---|
//! | JPEG | DCT-domain downscaling by 1/2, 1/4, 1/8 (libjpeg-turbo through `mozjpeg`, with SIMD; `jpeg-decoder` for CMYK/YCCK), else a full decode (`zune-jpeg` through `image`) |
//! | RAW | the embedded JPEG preview when large enough, else a half-size 2×2 CFA binning, else a bilinear demosaic (`rawloader`) |
//! | HEIF/HEIC | the smallest embedded thumbnail that is large enough, else the primary image (`libheif`, feature `heic`) |
//! | PNG, TIFF, WebP, GIF, BMP | a full decode (`image`) |
//!
//! Tiers are 8-bit sRGB [`RgbImage`]s shared as `Arc`; smaller tiers are resized with
//! `fast_image_resize` (CatmullRom, box pre-reduction for ratios over 4). A tier larger than the
//! image is the image itself: nothing is ever upscaled. CMYK/YCCK and 16-bit images are
//! converted to 8-bit RGB; alpha is composited over white. Embedded RGB ICC profiles (JPEG
//! APP2, PNG iCCP, TIFF, WebP ICCP, HEIF colr) are converted to sRGB with `qcms` (pure Rust,
//! through an sRGB output profile whose tables are built once per process: [`icc_to_srgb`]);
//! CMYK and grey profiles are ignored.
//!
//! [`read_header`] reads only the format, dimensions, orientation and the EXIF blob (the first
//! 512 KiB for JPEG/PNG/WebP/GIF/BMP, libheif's box parse for HEIF; TIFF and RAW files are read
//! whole because their directories may sit anywhere), and [`probe`] is the library side of
//! `imgd probe`. Files are read through [`open_image_file`]: opened without blocking and checked
//! on the descriptor (a regular file within the size limit) before a byte is read.
//!
//! No input makes this crate panic out: every decoder call runs under `catch_unwind` and a
//! caught panic becomes [`DecodeError::Panicked`]. See `FUZZING.md` for the fuzzing done.

#![deny(missing_docs)]

mod error;
mod format;
mod header;
mod heif;
mod jpeg;
mod pixels;
mod probe;
mod raw;
#[doc(hidden)]
pub mod synth;
mod tiffwalk;

pub use error::DecodeError;
pub use format::ImageFormat;
pub use header::Header;
pub use image::RgbImage;
pub use pixels::icc_to_srgb;
pub use probe::{ProbeReport, probe};

use serde::Serialize;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Limits checked before any pixel is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest pixel count (width × height) a header may claim. Default 200 megapixels.
    pub max_pixels: u64,
    /// Largest file size in bytes. Default 2 GiB.
    pub max_file_bytes: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: 200_000_000,
            max_file_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl DecodeOptions {
    /// Allocation budget handed to the decoders: 8 bytes per allowed pixel (16-bit RGBA).
    fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8).max(1 << 20)
    }
}

/// Which decode path served an image. Displays (and serialises) as e.g. `jpeg-dct-1/4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodePath {
    /// Full-resolution JPEG decode.
    JpegFull,
    /// JPEG decoded at 1/`denominator` scale in the DCT domain.
    JpegDct {
        /// 2, 4 or 8.
        denominator: u8,
    },
    /// The embedded JPEG preview of a RAW file.
    RawPreview,
    /// Half-size RAW decode (2×2 CFA binning).
    RawHalf,
    /// Full-resolution RAW demosaic.
    RawFull,
    /// An embedded HEIF thumbnail.
    HeifThumbnail,
    /// The HEIF primary image.
    HeifPrimary,
    /// A full decode by the `image` crate of this format (PNG, TIFF, WebP, GIF, BMP).
    Full(ImageFormat),
}

impl std::fmt::Display for DecodePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodePath::JpegFull => f.write_str("jpeg-full"),
            DecodePath::JpegDct { denominator } => write!(f, "jpeg-dct-1/{denominator}"),
            DecodePath::RawPreview => f.write_str("raw-preview"),
            DecodePath::RawHalf => f.write_str("raw-half"),
            DecodePath::RawFull => f.write_str("raw-full"),
            DecodePath::HeifThumbnail => f.write_str("heic-thumbnail"),
            DecodePath::HeifPrimary => f.write_str("heic-primary"),
            DecodePath::Full(fmt) => f.write_str(fmt.name()),
        }
    }
}

impl Serialize for DecodePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One resolution tier: the image whose long edge is `long_edge`, or the whole image when it
/// is smaller than that.
#[derive(Clone)]
pub struct Tier {
    /// The long edge that was requested.
    pub long_edge: u32,
    /// 8-bit sRGB pixels, orientation applied.
    pub image: Arc<RgbImage>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("long_edge", &self.long_edge)
            .field("dimensions", &self.image.dimensions())
            .finish()
    }
}

/// The result of one decode: the header, the path taken, and the tiers.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The header of the file.
    pub header: Header,
    /// How the pixels were obtained.
    pub decode_path: DecodePath,
    /// `(width, height)` of the pixels the decoder produced (before resizing and orientation).
    pub decoded_dimensions: (u32, u32),
    /// One tier per distinct requested size, largest first.
    pub tiers: Vec<Tier>,
}

impl Decoded {
    /// The tier for a requested long edge, if it was requested.
    pub fn tier(&self, long_edge: u32) -> Option<&Arc<RgbImage>> {
        self.tiers
            .iter()
            .find(|t| t.long_edge == long_edge)
            .map(|t| &t.image)
    }
}

/// Resizes an image so that its long edge is `long_edge` (never up: a larger `long_edge`
/// returns a copy), with the same filter the tiers use (CatmullRom, box pre-reduction for
/// ratios over 4).
pub fn resize_long_edge(image: &RgbImage, long_edge: u32) -> RgbImage {
    pixels::resize_long_edge(image, long_edge)
}

static PIXEL_DECODES: AtomicU64 = AtomicU64::new(0);

/// How many pixel decodes this process has started (header reads excluded). The pipeline
/// checks its once-per-image invariant against this counter.
pub fn pixel_decode_count() -> u64 {
    PIXEL_DECODES.load(Ordering::Relaxed)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f`, turning a panic into [`DecodeError::Panicked`].
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(DecodeError::Panicked {
            message: panic_message(p),
        }),
    }
}

/// Reads the header of a file: format, dimensions, orientation and EXIF, without decoding
/// pixels. Checks the file-size and pixel limits.
pub fn read_header(path: &Path, opts: &DecodeOptions) -> Result<Header, DecodeError> {
    guard(|| header::read_path(path, opts))
}

/// [`read_header`] on bytes already in memory (a whole file or a prefix of at least the
/// header).
pub fn read_header_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<Header, DecodeError> {
    guard(|| {
        check_size(bytes.len() as u64, opts)?;
        header::parse(bytes, opts).map(|p| p.header)
    })
}

fn check_size(size: u64, opts: &DecodeOptions) -> Result<(), DecodeError> {
    if size == 0 {
        return Err(DecodeError::Empty);
    }
    if size > opts.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            size,
            limit: opts.max_file_bytes,
        });
    }
    Ok(())
}

/// What a path that is not a regular file is, in words.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without blocking (a FIFO or a device swapped in for an image
/// never stalls the open) and checks, on the opened descriptor, that it is a regular file,
/// not empty and within the size limit, before a byte is read. Returns the file and its size.
pub fn open_image_file(path: &Path, opts: &DecodeOptions) -> Result<(File, u64), DecodeError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(std::io::Error::from)?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(DecodeError::NotAFile {
            kind: file_kind(meta.file_type()),
        });
    }
    check_size(meta.len(), opts)?;
    Ok((file, meta.len()))
}

/// Reads the rest of `file`, never more than the size limit allows in all (`already` bytes
/// were read before): a file that grows while it is read fails as too large.
pub(crate) fn read_rest_bounded(
    file: &mut File,
    bytes: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<(), DecodeError> {
    let allowed = opts.max_file_bytes.saturating_sub(bytes.len() as u64);
    file.take(allowed.saturating_add(1)).read_to_end(bytes)?;
    if bytes.len() as u64 > opts.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            size: bytes.len() as u64,
            limit: opts.max_file_bytes,
        });
    }
    Ok(())
}

/// Reads a whole image file, bounded: see [`open_image_file`]. Non-regular and oversized files
/// fail before a byte is read; at most the size limit is ever read.
pub fn read_image_file(path: &Path, opts: &DecodeOptions) -> Result<Vec<u8>, DecodeError> {
    let (mut file, size) = open_image_file(path, opts)?;
    let mut bytes = Vec::with_capacity(size as usize);
    read_rest_bounded(&mut file, &mut bytes, opts)?;
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(bytes)
}

/// Decodes a file once and returns one tier per requested long edge (deduplicated, largest
/// first). An empty `tiers` means "the full image". The file is read once into memory.
pub fn decode_tiers(
    path: &Path,
    tiers: &[u32],
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let bytes = read_image_file(path, opts)?;
    decode_tiers_bytes(&bytes, tiers, opts)
}

/// The requested tiers, deduplicated, zero dropped, largest first.
fn normalise_tiers(tiers: &[u32]) -> Vec<u32> {
    let mut t: Vec<u32> = tiers.iter().copied().filter(|&t| t > 0).collect();
    t.sort_unstable_by(|a, b| b.cmp(a));
    t.dedup();
    t
}

/// [`decode_tiers`] on a file already in memory.
pub fn decode_tiers_bytes(
    bytes: &[u8],
    tiers: &[u32],
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    guard(|| {
        check_size(bytes.len() as u64, opts)?;
        let parsed = header::parse(bytes, opts)?;
        decode_parsed(bytes, parsed, tiers, opts)
    })
}

fn decode_parsed(
    bytes: &[u8],
    parsed: header::Parsed,
    tiers: &[u32],
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let header = parsed.header;
    let mut tiers = normalise_tiers(tiers);
    if tiers.is_empty() {
        tiers.push(header.long_edge());
    }
    let target = tiers[0].min(header.long_edge());
    PIXEL_DECODES.fetch_add(1, Ordering::Relaxed);
    let mut icc = parsed.icc;
    let (base, path, orientation) = match header.format {
        ImageFormat::Jpeg => {
            let info = header::jpeg_info(bytes)?;
            let (img, p) = jpeg::decode(bytes, &info, target, opts.max_alloc())?;
            (img, p, header.orientation)
        }
        ImageFormat::Raw => {
            let (img, p) = raw::decode(bytes, target, opts.max_alloc())?;
            (img, p, header.orientation)
        }
        ImageFormat::Heif | ImageFormat::Avif => {
            #[cfg(feature = "heic")]
            {
                let (img, p) = heif::decode(bytes, header.format, target)?;
                (img, p, header.orientation)
            }
            #[cfg(not(feature = "heic"))]
            {
                return Err(DecodeError::unsupported(
                    header.format,
                    "this build has no HEIF support (cargo feature `heic` is off)",
                ));
            }
        }
        f => {
            if f == ImageFormat::Tiff {
                tiffwalk::check_supported_tiff(bytes)?;
            }
            let (img, profile) = decode_generic(bytes, f, opts)?;
            icc = icc.or(profile);
            (img, DecodePath::Full(f), header.orientation)
        }
    };
    let decoded_dimensions = base.dimensions();
    let base_long = base.width().max(base.height());
    let mut largest = if base_long > target {
        pixels::resize_long_edge(&base, target)
    } else {
        base
    };
    if let Some(icc) = icc.as_deref() {
        pixels::icc_to_srgb(&mut largest, icc);
    }
    let largest = Arc::new(pixels::orient(largest, orientation));
    let mut out: Vec<Tier> = Vec::with_capacity(tiers.len());
    let mut prev = largest;
    for t in tiers {
        let long = prev.width().max(prev.height());
        let img = if t >= long {
            prev.clone()
        } else {
            Arc::new(pixels::resize_long_edge(&prev, t))
        };
        prev = img.clone();
        out.push(Tier {
            long_edge: t,
            image: img,
        });
    }
    Ok(Decoded {
        header,
        decode_path: path,
        decoded_dimensions,
        tiers: out,
    })
}

/// Full decode by the `image` crate (PNG, TIFF, WebP, GIF first frame, BMP); returns the
/// pixels and the embedded ICC profile, if any.
fn decode_generic(
    bytes: &[u8],
    f: ImageFormat,
    opts: &DecodeOptions,
) -> Result<(RgbImage, Option<Vec<u8>>), DecodeError> {
    use image::ImageDecoder;
    let fmt = match f {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        other => {
            return Err(DecodeError::unsupported(
                other,
                "no decoder for this format",
            ));
        }
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), fmt);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(opts.max_alloc());
    reader.limits(limits);
    let mut dec = reader
        .into_decoder()
        .map_err(|e| error::from_image_error(f, e))?;
    let (w, h) = dec.dimensions();
    if w as u64 * h as u64 > opts.max_pixels {
        return Err(DecodeError::TooLarge {
            width: w,
            height: h,
            limit: opts.max_pixels,
        });
    }
    let icc = dec.icc_profile().ok().flatten();
    let img = image::DynamicImage::from_decoder(dec).map_err(|e| error::from_image_error(f, e))?;
    Ok((pixels::to_rgb8(img), icc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_a_typed_error() {
        let r: Result<(), DecodeError> = guard(|| panic!("boom {}", 42));
        match r {
            Err(DecodeError::Panicked { message }) => assert_eq!(message, "boom 42"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn dct_denominator_is_the_smallest_sufficient_scale() {
        assert_eq!(jpeg::dct_denominator(6000, 4000, 1568), 2);
        assert_eq!(jpeg::dct_denominator(6000, 4000, 1024), 4);
        assert_eq!(jpeg::dct_denominator(6000, 4000, 750), 8);
        assert_eq!(jpeg::dct_denominator(6000, 4000, 3001), 1);
        assert_eq!(jpeg::dct_denominator(4000, 6000, 1500), 4);
    }

    #[test]
    fn decode_paths_display() {
        assert_eq!(
            DecodePath::JpegDct { denominator: 4 }.to_string(),
            "jpeg-dct-1/4"
        );
        assert_eq!(DecodePath::Full(ImageFormat::Png).to_string(), "png");
        assert_eq!(DecodePath::HeifThumbnail.to_string(), "heic-thumbnail");
        assert_eq!(
            serde_json::to_string(&DecodePath::RawHalf).unwrap(),
            "\"raw-half\""
        );
    }

    #[test]
    fn tiers_normalise() {
        assert_eq!(
            normalise_tiers(&[384, 0, 1024, 384, 448]),
            vec![1024, 448, 384]
        );
        assert!(normalise_tiers(&[]).is_empty());
    }
}
