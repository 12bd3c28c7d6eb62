//! HEIF/HEIC (and AVIF) through the system libheif, behind the `heic` feature.

#[cfg(feature = "heic")]
use crate::DecodePath;
use crate::error::DecodeError;
use crate::format::ImageFormat;
use crate::header::{Header, Parsed};
#[cfg(feature = "heic")]
use image::RgbImage;

#[cfg(feature = "heic")]
mod imp {
    use super::*;
    use libheif_rs::{ColorSpace, HeifContext, ImageHandle, ItemId, LibHeif, RgbChroma};
    use std::sync::OnceLock;

    fn lib() -> &'static LibHeif {
        static LIB: OnceLock<LibHeif> = OnceLock::new();
        LIB.get_or_init(LibHeif::new)
    }

    fn map_err(f: ImageFormat, e: libheif_rs::HeifError) -> DecodeError {
        use libheif_rs::HeifErrorCode as C;
        let msg = e.to_string();
        match e.code {
            C::UnsupportedFeature | C::UnsupportedFileType | C::DecoderPluginError => {
                DecodeError::unsupported(f, msg)
            }
            _ if crate::error::looks_truncated(&msg) => DecodeError::truncated(f, msg),
            _ => DecodeError::corrupt(f, msg),
        }
    }

    /// Children of an ISO-BMFF box payload: (type, payload).
    fn boxes(b: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos + 8 <= b.len() && out.len() < 256 {
            let size = u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
            let kind = &b[pos + 4..pos + 8];
            let (head, size) = match size {
                0 => (8, b.len() - pos),
                1 => match b.get(pos + 8..pos + 16) {
                    Some(l) => (
                        16,
                        u64::from_be_bytes(l.try_into().unwrap_or([0; 8])) as usize,
                    ),
                    None => break,
                },
                n => (8, n),
            };
            if size < head {
                break;
            }
            let end = pos.saturating_add(size).min(b.len());
            out.push((kind, &b[pos + head..end]));
            pos = pos.saturating_add(size);
        }
        out
    }

    /// Whether the container carries its own orientation transforms (`irot`/`imir` item
    /// properties). libheif applies them; EXIF orientation then must not be applied again.
    /// Files without them (some encoders only copy the EXIF tag) get the EXIF orientation.
    pub(crate) fn has_transform_boxes(b: &[u8]) -> bool {
        let Some((_, meta)) = boxes(b).into_iter().find(|(k, _)| *k == b"meta") else {
            return false;
        };
        // `meta` is a full box: 4 bytes of version and flags first.
        let Some(meta) = meta.get(4..) else {
            return false;
        };
        boxes(meta)
            .into_iter()
            .filter(|(k, _)| *k == b"iprp")
            .flat_map(|(_, p)| boxes(p))
            .filter(|(k, _)| *k == b"ipco")
            .flat_map(|(_, p)| boxes(p))
            .any(|(k, _)| k == b"irot" || k == b"imir")
    }

    fn header_of(ctx: &HeifContext, f: ImageFormat, prefix: &[u8]) -> Result<Parsed, DecodeError> {
        let handle = ctx.primary_image_handle().map_err(|e| map_err(f, e))?;
        let mut ids: [ItemId; 4] = [0; 4];
        let n = handle.metadata_block_ids(&mut ids, b"Exif");
        let exif = ids[..n.min(4)]
            .first()
            .and_then(|&id| handle.metadata(id).ok())
            .and_then(|m| strip_exif_item(&m));
        let icc = handle.color_profile_raw().map(|p| p.data);
        Ok(Parsed {
            header: Header {
                format: f,
                width: handle.width(),
                height: handle.height(),
                orientation: if has_transform_boxes(prefix) {
                    1
                } else {
                    exif.as_deref().map_or(1, crate::header::exif_orientation)
                },
                exif,
            },
            icc,
        })
    }

    /// The HEIF `Exif` item starts with a 4-byte offset to the TIFF header.
    fn strip_exif_item(m: &[u8]) -> Option<Vec<u8>> {
        let off = u32::from_be_bytes(m.get(..4)?.try_into().ok()?) as usize;
        let rest = m.get(4usize.checked_add(off)?..)?;
        let rest = rest.strip_prefix(b"Exif\0\0").unwrap_or(rest);
        (rest.starts_with(b"II*\0") || rest.starts_with(b"MM\0*")).then(|| rest.to_vec())
    }

    pub(crate) fn header_from_bytes(b: &[u8], f: ImageFormat) -> Result<Parsed, DecodeError> {
        let _ = lib();
        let ctx = HeifContext::read_from_bytes(b).map_err(|e| map_err(f, e))?;
        header_of(&ctx, f, b)
    }

    fn to_rgb(f: ImageFormat, h: &ImageHandle) -> Result<RgbImage, DecodeError> {
        let img = lib()
            .decode(h, ColorSpace::Rgb(RgbChroma::Rgb), None)
            .map_err(|e| map_err(f, e))?;
        let planes = img.planes();
        let p = planes
            .interleaved
            .ok_or_else(|| DecodeError::corrupt(f, "libheif returned no interleaved plane"))?;
        let (w, hgt) = (p.width as usize, p.height as usize);
        if p.stride < w * 3 || p.data.len() < p.stride * hgt.saturating_sub(1) + w * 3 {
            return Err(DecodeError::corrupt(f, "libheif returned a short plane"));
        }
        let mut out = Vec::with_capacity(w * hgt * 3);
        for y in 0..hgt {
            out.extend_from_slice(&p.data[y * p.stride..y * p.stride + w * 3]);
        }
        RgbImage::from_raw(w as u32, hgt as u32, out)
            .ok_or_else(|| DecodeError::corrupt(f, "bad plane size"))
    }

    /// Decodes the smallest thumbnail that covers `target`, else the primary image. The result
    /// has the container's transforms applied already.
    pub(crate) fn decode(
        b: &[u8],
        f: ImageFormat,
        target: u32,
    ) -> Result<(RgbImage, DecodePath), DecodeError> {
        let _ = lib();
        let ctx = HeifContext::read_from_bytes(b).map_err(|e| map_err(f, e))?;
        let primary = ctx.primary_image_handle().map_err(|e| map_err(f, e))?;
        let n = primary.number_of_thumbnails().min(16);
        let mut ids: Vec<ItemId> = vec![0; n];
        let n = primary.thumbnail_ids(&mut ids);
        let mut thumbs: Vec<ImageHandle> = ids[..n]
            .iter()
            .filter_map(|&id| primary.thumbnail(id).ok())
            .filter(|t| t.width().max(t.height()) >= target)
            .collect();
        thumbs.sort_by_key(|t| t.width().max(t.height()));
        if let Some(t) = thumbs.first()
            && let Ok(img) = to_rgb(f, t)
        {
            return Ok((img, DecodePath::HeifThumbnail));
        }
        to_rgb(f, &primary).map(|i| (i, DecodePath::HeifPrimary))
    }
}

#[cfg(feature = "heic")]
pub(crate) use imp::{decode, header_from_bytes};

#[cfg(not(feature = "heic"))]
pub(crate) fn header_from_bytes(_b: &[u8], f: ImageFormat) -> Result<Parsed, DecodeError> {
    let _ = std::marker::PhantomData::<Header>;
    Err(DecodeError::unsupported(
        f,
        "this build has no HEIF support (cargo feature `heic` is off)",
    ))
}
