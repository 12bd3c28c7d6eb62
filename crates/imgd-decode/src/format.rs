//! Formats and magic-byte sniffing.

use serde::Serialize;

/// An image container format, as sniffed from the file's magic bytes (never its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// JPEG / JFIF / EXIF.
    Jpeg,
    /// PNG.
    Png,
    /// TIFF (and BigTIFF) that is not a camera RAW.
    Tiff,
    /// WebP (lossy, lossless, extended).
    Webp,
    /// GIF (the first frame is decoded).
    Gif,
    /// Windows BMP.
    Bmp,
    /// HEIF / HEIC.
    Heif,
    /// AVIF (decoded through libheif where its AV1 decoder is present).
    Avif,
    /// Camera RAW (DNG and the proprietary formats `rawloader` knows).
    Raw,
}

impl ImageFormat {
    /// Lowercase name, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Heif => "heif",
            ImageFormat::Avif => "avif",
            ImageFormat::Raw => "raw",
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Hex of the first (up to 8) bytes, for error messages.
pub(crate) fn magic_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sniffs the container format from the first bytes. TIFF-structured files are reported as
/// [`ImageFormat::Tiff`] here; [`crate::tiffwalk::is_camera_raw`] then tells RAW apart.
pub(crate) fn sniff(b: &[u8]) -> Option<ImageFormat> {
    if b.len() >= 3 && b[..3] == [0xFF, 0xD8, 0xFF] {
        return Some(ImageFormat::Jpeg);
    }
    if b.len() >= 8 && b[..8] == [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A] {
        return Some(ImageFormat::Png);
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Some(ImageFormat::Webp);
    }
    if b.len() >= 6 && (&b[..6] == b"GIF87a" || &b[..6] == b"GIF89a") {
        return Some(ImageFormat::Gif);
    }
    if b.len() >= 18 && &b[..2] == b"BM" {
        let dib = u32::from_le_bytes([b[14], b[15], b[16], b[17]]);
        if matches!(dib, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124) {
            return Some(ImageFormat::Bmp);
        }
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        let brand = &b[8..12];
        return match brand {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1"
            | b"mif2" => Some(ImageFormat::Heif),
            b"avif" | b"avis" => Some(ImageFormat::Avif),
            b"crx " => Some(ImageFormat::Raw),
            _ => None,
        };
    }
    if b.len() >= 8 && &b[..8] == b"FUJIFILM" {
        return Some(ImageFormat::Raw);
    }
    if b.len() >= 4 {
        match &b[..4] {
            // Olympus ORF, Panasonic RW2.
            b"IIRO" | b"IIRS" | b"MMOR" | b"IIU\0" => return Some(ImageFormat::Raw),
            // Minolta MRW, Sigma X3F.
            b"\0MRM" | b"FOVb" => return Some(ImageFormat::Raw),
            b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+" => return Some(ImageFormat::Tiff),
            _ => {}
        }
    }
    // Canon CRW (CIFF).
    if b.len() >= 14 && &b[..2] == b"II" && &b[6..14] == b"HEAPCCDR" {
        return Some(ImageFormat::Raw);
    }
    None
}
