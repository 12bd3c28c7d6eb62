//! A small, bounds-checked TIFF IFD walker: enough to tell camera RAW from plain TIFF, find
//! embedded JPEG previews and read the first IFD's dimensions. Every read is checked; a
//! malformed file yields fewer IFDs, never a panic.

/// One IFD entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub tag: u16,
    pub typ: u16,
    pub count: u32,
    /// Absolute offset of the value bytes (inline or not).
    pub value_at: usize,
}

/// One parsed IFD.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ifd {
    pub entries: Vec<Entry>,
}

/// A TIFF-structured buffer.
pub(crate) struct Tiff<'a> {
    pub buf: &'a [u8],
    pub le: bool,
    /// Offset of the TIFF header inside `buf` (non-zero for RAF's embedded TIFF, etc.).
    pub base: usize,
}

pub(crate) const TAG_WIDTH: u16 = 256;
pub(crate) const TAG_HEIGHT: u16 = 257;
pub(crate) const TAG_COMPRESSION: u16 = 259;
pub(crate) const TAG_PHOTOMETRIC: u16 = 262;
pub(crate) const TAG_STRIP_OFFSETS: u16 = 273;
pub(crate) const TAG_ORIENTATION: u16 = 274;
pub(crate) const TAG_STRIP_BYTES: u16 = 279;
pub(crate) const TAG_SUBIFDS: u16 = 330;
pub(crate) const TAG_JPEG_OFFSET: u16 = 513;
pub(crate) const TAG_JPEG_LENGTH: u16 = 514;
pub(crate) const TAG_CFA_PATTERN: u16 = 33422;
pub(crate) const TAG_EXIF_IFD: u16 = 34665;
pub(crate) const TAG_DNG_VERSION: u16 = 50706;

const MAX_IFDS: usize = 64;

impl<'a> Tiff<'a> {
    /// Parses the 8-byte classic TIFF header at `base`. ORF/RW2 variants of the magic are
    /// accepted (their IFD layout is classic TIFF).
    pub fn new(buf: &'a [u8], base: usize) -> Option<Self> {
        let h = buf.get(base..base + 4)?;
        let le = match &h[..2] {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        let t = Tiff { buf, le, base };
        let magic = t.u16_at(base + 2)?;
        if !matches!(magic, 42 | 0x4f52 | 0x5352 | 0x55) {
            return None;
        }
        Some(t)
    }

    pub fn u16_at(&self, at: usize) -> Option<u16> {
        let b = self.buf.get(at..at.checked_add(2)?)?;
        Some(if self.le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    }

    pub fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.buf.get(at..at.checked_add(4)?)?;
        Some(if self.le {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    fn type_size(typ: u16) -> usize {
        match typ {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 => 8,
            _ => 0,
        }
    }

    /// Parses the IFD at `base + off`; returns it and the offset of the next IFD (0 = none).
    pub fn ifd(&self, off: u32) -> Option<(Ifd, u32)> {
        let at = self.base.checked_add(off as usize)?;
        let n = self.u16_at(at)? as usize;
        if n == 0 || n > 4000 {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let e = at + 2 + i * 12;
            let tag = self.u16_at(e)?;
            let typ = self.u16_at(e + 2)?;
            let count = self.u32_at(e + 4)?;
            let size = Self::type_size(typ).checked_mul(count as usize)?;
            let value_at = if size <= 4 {
                e + 8
            } else {
                self.base.checked_add(self.u32_at(e + 8)? as usize)?
            };
            entries.push(Entry {
                tag,
                typ,
                count,
                value_at,
            });
        }
        let next = self.u32_at(at + 2 + n * 12).unwrap_or(0);
        Some((Ifd { entries }, next))
    }

    /// The i-th value of an integer entry (BYTE, SHORT, LONG, IFD).
    pub fn value(&self, e: &Entry, i: u32) -> Option<u32> {
        if i >= e.count {
            return None;
        }
        match e.typ {
            1 | 7 => self.buf.get(e.value_at + i as usize).map(|&b| b as u32),
            3 => self.u16_at(e.value_at + 2 * i as usize).map(u32::from),
            4 | 13 => self.u32_at(e.value_at + 4 * i as usize),
            _ => None,
        }
    }

    /// Every IFD reachable from the header: the IFD0 chain, SubIFDs and the EXIF IFD, with
    /// loop and count guards.
    pub fn all_ifds(&self) -> Vec<Ifd> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<(u32, u32)> = Vec::new();
        if let Some(first) = self.u32_at(self.base + 4) {
            todo.push((first, 0));
        }
        while let Some((off, depth)) = todo.pop() {
            if off == 0 || depth > 4 || out.len() >= MAX_IFDS || !seen.insert(off) {
                continue;
            }
            let Some((ifd, next)) = self.ifd(off) else {
                continue;
            };
            todo.push((next, depth));
            for e in &ifd.entries {
                if e.tag == TAG_SUBIFDS || e.tag == TAG_EXIF_IFD {
                    for i in 0..e.count.min(16) {
                        if let Some(o) = self.value(e, i) {
                            todo.push((o, depth + 1));
                        }
                    }
                }
            }
            out.push(ifd);
        }
        out
    }

    /// The first IFD only.
    pub fn ifd0(&self) -> Option<Ifd> {
        let off = self.u32_at(self.base + 4)?;
        self.ifd(off).map(|(i, _)| i)
    }
}

impl Ifd {
    pub fn get(&self, tag: u16) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }
}

/// Whether a TIFF-magic file is a camera RAW rather than a plain TIFF: a DNG version tag,
/// the CR2 marker, or a CFA pattern in any IFD.
pub(crate) fn is_camera_raw(buf: &[u8]) -> bool {
    if buf.len() >= 10 && &buf[8..10] == b"CR" {
        return true;
    }
    let Some(t) = Tiff::new(buf, 0) else {
        return false;
    };
    if let Some(ifd0) = t.ifd0()
        && ifd0.get(TAG_DNG_VERSION).is_some()
    {
        return true;
    }
    t.all_ifds().iter().any(|ifd| {
        ifd.get(TAG_CFA_PATTERN).is_some()
            || ifd
                .get(TAG_PHOTOMETRIC)
                .and_then(|e| t.value(e, 0))
                .is_some_and(|p| p == 32803 || p == 34892)
    })
}

/// A JPEG stream embedded in a RAW file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmbeddedJpeg {
    pub offset: usize,
    pub len: usize,
}

/// Candidate embedded JPEG previews: JPEGInterchangeFormat pairs and single-strip JPEG IFDs in
/// any IFD, plus the RAF header's preview pointer.
pub(crate) fn embedded_jpegs(buf: &[u8]) -> Vec<EmbeddedJpeg> {
    let mut out = Vec::new();
    let mut push = |offset: usize, len: usize| {
        if len > 4
            && offset.checked_add(len).is_some_and(|end| end <= buf.len())
            && buf[offset..offset + 2] == [0xFF, 0xD8]
        {
            out.push(EmbeddedJpeg { offset, len });
        }
    };
    if buf.len() >= 92 && &buf[..8] == b"FUJIFILM" {
        let off = u32::from_be_bytes([buf[84], buf[85], buf[86], buf[87]]) as usize;
        let len = u32::from_be_bytes([buf[88], buf[89], buf[90], buf[91]]) as usize;
        push(off, len);
    }
    if let Some(t) = Tiff::new(buf, 0) {
        for ifd in t.all_ifds() {
            if let (Some(o), Some(l)) = (ifd.get(TAG_JPEG_OFFSET), ifd.get(TAG_JPEG_LENGTH))
                && let (Some(o), Some(l)) = (t.value(o, 0), t.value(l, 0))
            {
                push(o as usize, l as usize);
            }
            let comp = ifd.get(TAG_COMPRESSION).and_then(|e| t.value(e, 0));
            if matches!(comp, Some(6) | Some(7))
                && let (Some(o), Some(l)) = (ifd.get(TAG_STRIP_OFFSETS), ifd.get(TAG_STRIP_BYTES))
                && o.count == 1
                && let (Some(o), Some(l)) = (t.value(o, 0), t.value(l, 0))
            {
                push(o as usize, l as usize);
            }
        }
    }
    out
}

/// Rejects TIFF layouts the `image` TIFF decoder cannot handle before it runs (tiled files with
/// separate colour planes make `image-tiff` 0.11 panic on an assertion).
pub(crate) fn check_supported_tiff(buf: &[u8]) -> Result<(), crate::DecodeError> {
    let Some(t) = Tiff::new(buf, 0) else {
        return Ok(());
    };
    let Some(ifd0) = t.ifd0() else {
        return Ok(());
    };
    let tiled = ifd0.get(322).is_some();
    let planar = ifd0.get(284).and_then(|e| t.value(e, 0)) == Some(2);
    if tiled && planar {
        return Err(crate::DecodeError::unsupported(
            crate::ImageFormat::Tiff,
            "tiled TIFF with separate colour planes (PlanarConfiguration 2)",
        ));
    }
    Ok(())
}
