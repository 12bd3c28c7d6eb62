//! Header-only reads: format, dimensions, orientation and the raw EXIF blob, without decoding
//! pixels.

use crate::DecodeOptions;
use crate::error::DecodeError;
use crate::format::{ImageFormat, magic_hex, sniff};
use crate::tiffwalk;
use serde::Serialize;

/// What a header read tells about an image, without decoding its pixels.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// The container format, sniffed from the magic bytes.
    pub format: ImageFormat,
    /// Width as stored, before orientation is applied.
    pub width: u32,
    /// Height as stored, before orientation is applied.
    pub height: u32,
    /// EXIF orientation (1..=8; 1 when absent or invalid). For HEIF files that carry their own
    /// transforms (`irot`/`imir`, applied by libheif) this is 1 and `width`/`height` are the
    /// displayed dimensions; HEIF files without them get their EXIF orientation.
    pub orientation: u16,
    /// The EXIF blob in TIFF structure (starting with `II*\0` or `MM\0*`), as
    /// `exif::Reader::read_raw` accepts it. For TIFF and TIFF-based RAW files it is a compact
    /// re-encoding of the first IFD, the EXIF IFD and the GPS IFD.
    #[serde(skip)]
    pub exif: Option<Vec<u8>>,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("orientation", &self.orientation)
            .field("exif_bytes", &self.exif.as_ref().map(Vec::len))
            .finish()
    }
}

impl Header {
    /// `(width, height)` as displayed, after the EXIF orientation is applied (orientations 5..=8
    /// swap the axes).
    pub fn oriented_dimensions(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// The longer of the two dimensions.
    pub fn long_edge(&self) -> u32 {
        self.width.max(self.height)
    }
}

/// Header plus the details the decoder needs but callers do not.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub header: Header,
    /// Embedded ICC profile, when the format carries one in its header.
    pub icc: Option<Vec<u8>>,
}

/// What the JPEG marker walk found.
#[derive(Debug, Clone, Default)]
pub(crate) struct JpegInfo {
    pub width: u32,
    pub height: u32,
    pub components: u8,
    /// SOF marker (0xC0 baseline, 0xC1 extended, 0xC2 progressive, 0xC3 lossless, ...).
    pub sof: u8,
    pub exif: Option<Vec<u8>>,
    pub icc: Option<Vec<u8>>,
    /// Offset of the first SOS marker.
    pub sos_at: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Walks JPEG markers up to the first SOS.
pub(crate) fn jpeg_info(b: &[u8]) -> Result<JpegInfo, DecodeError> {
    let f = ImageFormat::Jpeg;
    let trunc = || DecodeError::truncated(f, "the file ends inside the JPEG header");
    let mut info = JpegInfo::default();
    let mut icc_chunks: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut pos = 2;
    let mut have_sof = false;
    loop {
        // Skip fill bytes before a marker.
        while b.get(pos) == Some(&0xFF) && b.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (&m0, &m) = (
            b.get(pos).ok_or_else(trunc)?,
            b.get(pos + 1).ok_or_else(trunc)?,
        );
        if m0 != 0xFF {
            return Err(DecodeError::corrupt(
                f,
                format!("expected a JPEG marker at byte {pos}, found {m0:#04x}"),
            ));
        }
        if matches!(m, 0x01 | 0xD0..=0xD7) {
            pos += 2;
            continue;
        }
        if m == 0xD9 {
            return Err(DecodeError::corrupt(f, "end of image before any scan"));
        }
        let len = be16(b, pos + 2).ok_or_else(trunc)? as usize;
        if len < 2 {
            return Err(DecodeError::corrupt(f, "invalid JPEG segment length"));
        }
        let seg_start = pos + 4;
        let seg_end = pos + 2 + len;
        if m == 0xDA {
            if !have_sof {
                return Err(DecodeError::corrupt(f, "scan data before any frame header"));
            }
            info.sos_at = pos;
            break;
        }
        let seg = b.get(seg_start..seg_end).ok_or_else(trunc)?;
        match m {
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if seg.len() < 6 {
                    return Err(DecodeError::corrupt(f, "short frame header"));
                }
                if !have_sof {
                    info.sof = m;
                    info.height = u16::from_be_bytes([seg[1], seg[2]]) as u32;
                    info.width = u16::from_be_bytes([seg[3], seg[4]]) as u32;
                    info.components = seg[5];
                    have_sof = true;
                }
            }
            0xE1 if info.exif.is_none() && seg.starts_with(b"Exif\0") && seg.len() > 6 => {
                info.exif = Some(seg[6..].to_vec());
            }
            0xE2 if seg.starts_with(b"ICC_PROFILE\0") && seg.len() > 14 => {
                icc_chunks.push((seg[12], seg[14..].to_vec()));
            }
            _ => {}
        }
        pos = seg_end;
    }
    if !icc_chunks.is_empty() {
        icc_chunks.sort_by_key(|c| c.0);
        info.icc = Some(icc_chunks.into_iter().flat_map(|c| c.1).collect());
    }
    if info.width == 0 || info.height == 0 {
        return Err(DecodeError::unsupported(
            f,
            "zero image dimension in the frame header (DNL marker)",
        ));
    }
    Ok(info)
}

fn png_header(b: &[u8]) -> Result<Parsed, DecodeError> {
    let f = ImageFormat::Png;
    let trunc = || DecodeError::truncated(f, "the file ends inside the PNG header");
    if b.get(12..16) != Some(b"IHDR") {
        if b.len() < 16 {
            return Err(trunc());
        }
        return Err(DecodeError::corrupt(f, "the first chunk is not IHDR"));
    }
    let width = be32(b, 16).ok_or_else(trunc)?;
    let height = be32(b, 20).ok_or_else(trunc)?;
    let mut exif = None;
    let mut pos = 8usize;
    // Walk the chunks before the image data for eXIf and iCCP.
    while let (Some(len), Some(kind)) = (be32(b, pos), b.get(pos + 4..pos + 8)) {
        let data = pos + 8;
        let end = data.saturating_add(len as usize);
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        let Some(body) = b.get(data..end) else {
            break;
        };
        if kind == b"eXIf" {
            let body = body.strip_prefix(b"Exif\0\0").unwrap_or(body);
            exif = Some(body.to_vec());
        }
        pos = end + 4;
    }
    Ok(Parsed {
        header: Header {
            format: f,
            width,
            height,
            orientation: exif.as_deref().map_or(1, exif_orientation),
            exif,
        },
        // iCCP is zlib-compressed: the decode path takes the profile from the png decoder.
        icc: None,
    })
}

fn gif_header(b: &[u8]) -> Result<Parsed, DecodeError> {
    let f = ImageFormat::Gif;
    let s = b
        .get(6..10)
        .ok_or_else(|| DecodeError::truncated(f, "the file ends inside the GIF header"))?;
    Ok(simple(
        f,
        u16::from_le_bytes([s[0], s[1]]) as u32,
        u16::from_le_bytes([s[2], s[3]]) as u32,
    ))
}

fn bmp_header(b: &[u8]) -> Result<Parsed, DecodeError> {
    let f = ImageFormat::Bmp;
    let trunc = || DecodeError::truncated(f, "the file ends inside the BMP header");
    let dib = le32(b, 14).ok_or_else(trunc)?;
    let (w, h) = if dib == 12 {
        let s = b.get(18..22).ok_or_else(trunc)?;
        (
            u16::from_le_bytes([s[0], s[1]]) as i64,
            u16::from_le_bytes([s[2], s[3]]) as i64,
        )
    } else {
        (
            le32(b, 18).ok_or_else(trunc)? as i32 as i64,
            le32(b, 22).ok_or_else(trunc)? as i32 as i64,
        )
    };
    let (w, h) = (w.unsigned_abs(), h.unsigned_abs());
    if w > u32::MAX as u64 || h > u32::MAX as u64 {
        return Err(DecodeError::corrupt(f, "invalid BMP dimensions"));
    }
    Ok(simple(f, w as u32, h as u32))
}

fn webp_header(b: &[u8]) -> Result<Parsed, DecodeError> {
    let f = ImageFormat::Webp;
    let trunc = || DecodeError::truncated(f, "the file ends inside the WebP header");
    let mut dims: Option<(u32, u32)> = None;
    let mut exif = None;
    let mut icc = None;
    let mut extended = false;
    let riff_end = (le32(b, 4).ok_or_else(trunc)? as usize).saturating_add(8);
    let mut pos = 12usize;
    while pos + 8 <= riff_end {
        let (Some(kind), Some(len)) = (b.get(pos..pos + 4), le32(b, pos + 4)) else {
            return Err(trunc());
        };
        let data = pos + 8;
        let end = data.saturating_add(len as usize);
        match kind {
            b"VP8X" => {
                let s = b.get(data..data + 10).ok_or_else(trunc)?;
                extended = true;
                let w = 1 + (s[4] as u32 | (s[5] as u32) << 8 | (s[6] as u32) << 16);
                let h = 1 + (s[7] as u32 | (s[8] as u32) << 8 | (s[9] as u32) << 16);
                dims = Some((w, h));
            }
            b"VP8 " => {
                let s = b.get(data..data + 10).ok_or_else(trunc)?;
                if s[3..6] != [0x9d, 0x01, 0x2a] {
                    return Err(DecodeError::corrupt(f, "bad VP8 frame signature"));
                }
                let w = u16::from_le_bytes([s[6], s[7]]) as u32 & 0x3fff;
                let h = u16::from_le_bytes([s[8], s[9]]) as u32 & 0x3fff;
                dims.get_or_insert((w, h));
            }
            b"VP8L" => {
                let s = b.get(data..data + 5).ok_or_else(trunc)?;
                if s[0] != 0x2f {
                    return Err(DecodeError::corrupt(f, "bad VP8L signature"));
                }
                let bits = u32::from_le_bytes([s[1], s[2], s[3], s[4]]);
                dims.get_or_insert(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1));
            }
            b"EXIF" => {
                let body = b.get(data..end).ok_or_else(trunc)?;
                let body = body.strip_prefix(b"Exif\0\0").unwrap_or(body);
                exif = Some(body.to_vec());
            }
            b"ICCP" => {
                icc = Some(b.get(data..end).ok_or_else(trunc)?.to_vec());
            }
            _ => {}
        }
        // Simple (non-extended) files hold one image chunk and nothing else worth reading.
        if dims.is_some() && !extended {
            break;
        }
        pos = end + (len as usize & 1);
    }
    let (width, height) =
        dims.ok_or_else(|| DecodeError::corrupt(f, "no image chunk in the WebP file"))?;
    let orientation = exif.as_deref().map_or(1, exif_orientation);
    Ok(Parsed {
        header: Header {
            format: f,
            width,
            height,
            orientation,
            exif,
        },
        icc,
    })
}

fn simple(format: ImageFormat, width: u32, height: u32) -> Parsed {
    Parsed {
        header: Header {
            format,
            width,
            height,
            orientation: 1,
            exif: None,
        },
        icc: None,
    }
}

/// The EXIF orientation in a TIFF-structured EXIF blob; 1 when absent or out of range.
pub(crate) fn exif_orientation(exif: &[u8]) -> u16 {
    let Some(t) = tiffwalk::Tiff::new(exif, 0) else {
        return 1;
    };
    t.ifd0()
        .and_then(|ifd| ifd.get(tiffwalk::TAG_ORIENTATION).copied())
        .and_then(|e| t.value(&e, 0))
        .filter(|o| (1..=8).contains(o))
        .map_or(1, |o| o as u16)
}

/// A compact EXIF blob re-encoded from a TIFF-structured file (IFD0 tags, EXIF and GPS IFDs),
/// without the image data.
pub(crate) fn tiff_exif_blob(b: &[u8]) -> Option<Vec<u8>> {
    use exif::{In, Tag};
    let parsed = exif::Reader::new().read_raw(b.to_vec()).ok()?;
    let fields: Vec<&exif::Field> = parsed
        .fields()
        .filter(|f| f.ifd_num == In::PRIMARY)
        .filter(|f| !matches!(f.tag, Tag(exif::Context::Tiff, 330)))
        .collect();
    if fields.is_empty() {
        return None;
    }
    let mut w = exif::experimental::Writer::new();
    for f in &fields {
        w.push_field(f);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    w.write(&mut out, parsed.little_endian()).ok()?;
    Some(out.into_inner())
}

fn tiff_header(b: &[u8]) -> Result<Parsed, DecodeError> {
    let f = ImageFormat::Tiff;
    let t =
        tiffwalk::Tiff::new(b, 0).ok_or_else(|| DecodeError::corrupt(f, "invalid TIFF header"))?;
    let ifd0 = t.ifd0().ok_or_else(|| {
        if b.len() < 16 {
            DecodeError::truncated(f, "the file ends inside the TIFF header")
        } else {
            DecodeError::corrupt(f, "cannot read the first image directory")
        }
    })?;
    let get = |tag| ifd0.get(tag).and_then(|e| t.value(e, 0));
    let (Some(width), Some(height)) = (get(tiffwalk::TAG_WIDTH), get(tiffwalk::TAG_HEIGHT)) else {
        return Err(DecodeError::corrupt(
            f,
            "the first image directory has no dimensions",
        ));
    };
    let orientation = get(tiffwalk::TAG_ORIENTATION)
        .filter(|o| (1..=8).contains(o))
        .map_or(1, |o| o as u16);
    Ok(Parsed {
        header: Header {
            format: f,
            width,
            height,
            orientation,
            exif: tiff_exif_blob(b),
        },
        icc: None,
    })
}

fn raw_header(b: &[u8]) -> Result<Parsed, DecodeError> {
    let f = ImageFormat::Raw;
    let raw = crate::raw::load(b, true)?;
    let (w, h) = crate::raw::cropped_dims(&raw);
    let exif = if tiffwalk::Tiff::new(b, 0).is_some()
        && (&b[..2] == b"II" || &b[..2] == b"MM")
        && matches!(&b[2..4], [42, 0] | [0, 42])
    {
        tiff_exif_blob(b)
    } else {
        None
    };
    if w == 0 || h == 0 {
        return Err(DecodeError::corrupt(f, "zero raw image dimensions"));
    }
    Ok(Parsed {
        header: Header {
            format: f,
            width: w as u32,
            height: h as u32,
            orientation: crate::raw::orientation_value(raw.orientation),
            exif,
        },
        icc: None,
    })
}

/// Parses the header of a complete file or of a file prefix. For a prefix, a
/// [`DecodeError::Truncated`] means "read more".
pub(crate) fn parse(b: &[u8], opts: &DecodeOptions) -> Result<Parsed, DecodeError> {
    if b.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut format = sniff(b).ok_or_else(|| DecodeError::UnknownFormat {
        magic: magic_hex(b),
    })?;
    if format == ImageFormat::Tiff && tiffwalk::is_camera_raw(b) {
        format = ImageFormat::Raw;
    }
    let parsed = match format {
        ImageFormat::Jpeg => {
            let info = jpeg_info(b)?;
            let orientation = info.exif.as_deref().map_or(1, exif_orientation);
            Parsed {
                header: Header {
                    format,
                    width: info.width,
                    height: info.height,
                    orientation,
                    exif: info.exif,
                },
                icc: info.icc,
            }
        }
        ImageFormat::Png => png_header(b)?,
        ImageFormat::Gif => gif_header(b)?,
        ImageFormat::Bmp => bmp_header(b)?,
        ImageFormat::Webp => webp_header(b)?,
        ImageFormat::Tiff => tiff_header(b)?,
        ImageFormat::Raw => raw_header(b)?,
        ImageFormat::Heif | ImageFormat::Avif => crate::heif::header_from_bytes(b, format)?,
    };
    check_limits(&parsed.header, opts)?;
    Ok(parsed)
}

/// Rejects zero-sized images and headers over the pixel limit.
pub(crate) fn check_limits(h: &Header, opts: &DecodeOptions) -> Result<(), DecodeError> {
    if h.width == 0 || h.height == 0 {
        return Err(DecodeError::corrupt(
            h.format,
            format!("invalid dimensions {}x{}", h.width, h.height),
        ));
    }
    if h.width as u64 * h.height as u64 > opts.max_pixels {
        return Err(DecodeError::TooLarge {
            width: h.width,
            height: h.height,
            limit: opts.max_pixels,
        });
    }
    Ok(())
}

/// How many bytes a header-only read takes first.
pub(crate) const HEADER_PREFIX: usize = 512 * 1024;

/// Reads a header from a file, reading only a prefix where the format allows it.
pub(crate) fn read_path(
    path: &std::path::Path,
    opts: &DecodeOptions,
) -> Result<Header, DecodeError> {
    use std::io::Read;
    let (mut file, size) = crate::open_image_file(path, opts)?;
    let mut prefix = Vec::with_capacity(HEADER_PREFIX.min(size as usize));
    (&mut file)
        .take(HEADER_PREFIX as u64)
        .read_to_end(&mut prefix)?;
    let complete = prefix.len() as u64 >= size;
    let format = sniff(&prefix);
    match format {
        #[cfg(feature = "heic")]
        Some(ImageFormat::Heif | ImageFormat::Avif) => {
            // libheif reads from memory: it never opens the path itself, which may have been
            // swapped for something else since the checks above.
            let mut all = prefix;
            crate::read_rest_bounded(&mut file, &mut all, opts)?;
            let parsed = crate::heif::header_from_bytes(&all, format.unwrap_or(ImageFormat::Heif))?;
            check_limits(&parsed.header, opts)?;
            return Ok(parsed.header);
        }
        Some(ImageFormat::Tiff | ImageFormat::Raw) if !complete => {
            // IFDs and EXIF values may sit anywhere in the file.
            let mut all = prefix;
            crate::read_rest_bounded(&mut file, &mut all, opts)?;
            return parse(&all, opts).map(|p| p.header);
        }
        _ => {}
    }
    match parse(&prefix, opts) {
        Err(DecodeError::Truncated { .. }) if !complete => {
            let mut all = prefix;
            crate::read_rest_bounded(&mut file, &mut all, opts)?;
            parse(&all, opts).map(|p| p.header)
        }
        other => other.map(|p| p.header),
    }
}
