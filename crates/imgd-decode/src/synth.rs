//! Synthetic camera files for tests, fixtures and the benchmark (not part of the stable API).
//!
//! [`make_dng`] turns an 8-bit sRGB photo into a real, uncompressed Bayer DNG: the pixels go
//! back to linear light, are scaled by per-channel camera gains (so white balance matters),
//! mosaicked as RGGB and stored as 16-bit samples over a black level, with a `ColorMatrix1`
//! and `AsShotNeutral` that describe exactly that camera. A correct decoder therefore gets the
//! source photo back (up to the half-size binning or the demosaic).

use image::RgbImage;

/// Options for [`make_dng`].
#[derive(Debug, Clone)]
pub struct DngOptions {
    /// Camera gains for R, G, B (the `AsShotNeutral` of the file).
    pub gains: [f32; 3],
    /// Black level of the stored samples.
    pub black: u16,
    /// White level of the stored samples.
    pub white: u16,
    /// EXIF orientation written to IFD0.
    pub orientation: u16,
    /// An embedded JPEG preview (encoded from the source at this long edge), if any.
    pub preview_long_edge: Option<u32>,
}

impl Default for DngOptions {
    fn default() -> Self {
        DngOptions {
            gains: [0.5, 1.0, 0.7],
            black: 256,
            white: 16383,
            orientation: 1,
            preview_long_edge: None,
        }
    }
}

fn srgb_to_linear(v: u8) -> f32 {
    let s = v as f32 / 255.0;
    if s <= 0.04045 {
        s / 12.92
    } else {
        ((s + 0.055) / 1.055).powf(2.4)
    }
}

struct Ifd {
    entries: Vec<(u16, u16, u32, Vec<u8>)>,
}

impl Ifd {
    fn new() -> Self {
        Ifd {
            entries: Vec::new(),
        }
    }
    fn short(&mut self, tag: u16, v: &[u16]) {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.entries.push((tag, 3, v.len() as u32, b));
    }
    fn long(&mut self, tag: u16, v: &[u32]) {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.entries.push((tag, 4, v.len() as u32, b));
    }
    fn byte(&mut self, tag: u16, v: &[u8]) {
        self.entries.push((tag, 1, v.len() as u32, v.to_vec()));
    }
    fn ascii(&mut self, tag: u16, s: &str) {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.entries.push((tag, 2, b.len() as u32, b));
    }
    fn rational(&mut self, tag: u16, v: &[f32]) {
        let b = v
            .iter()
            .flat_map(|x| {
                let mut o = ((x * 10000.0).round() as u32).to_le_bytes().to_vec();
                o.extend_from_slice(&10000u32.to_le_bytes());
                o
            })
            .collect();
        self.entries.push((tag, 5, v.len() as u32, b));
    }
    fn srational(&mut self, tag: u16, v: &[f32]) {
        let b = v
            .iter()
            .flat_map(|x| {
                let mut o = ((x * 10000.0).round() as i32).to_le_bytes().to_vec();
                o.extend_from_slice(&10000i32.to_le_bytes());
                o
            })
            .collect();
        self.entries.push((tag, 10, v.len() as u32, b));
    }

    /// Size of the IFD itself (entries) and of its out-of-line values.
    fn sizes(&self) -> (usize, usize) {
        let head = 2 + 12 * self.entries.len() + 4;
        let data = self
            .entries
            .iter()
            .filter(|e| e.3.len() > 4)
            .map(|e| e.3.len().next_multiple_of(2))
            .sum();
        (head, data)
    }

    /// Serialises at absolute offset `at` (entries then values); `next` = next IFD offset.
    fn write(&mut self, out: &mut Vec<u8>, at: usize, next: u32) {
        self.entries.sort_by_key(|e| e.0);
        assert_eq!(out.len(), at);
        let (head, _) = self.sizes();
        let mut data_at = at + head;
        let mut data = Vec::new();
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for (tag, typ, count, v) in &self.entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if v.len() <= 4 {
                let mut inline = v.clone();
                inline.resize(4, 0);
                out.extend_from_slice(&inline);
            } else {
                out.extend_from_slice(&(data_at as u32).to_le_bytes());
                data.extend_from_slice(v);
                if v.len() % 2 == 1 {
                    data.push(0);
                }
                data_at += v.len().next_multiple_of(2);
            }
        }
        out.extend_from_slice(&next.to_le_bytes());
        out.extend_from_slice(&data);
    }
}

/// The XYZ→camera matrix of a camera whose native primaries are linear sRGB scaled by `gains`.
fn color_matrix(gains: [f32; 3]) -> [f32; 9] {
    // XYZ (D65) → linear sRGB.
    const XYZ_TO_SRGB: [[f32; 3]; 3] = [
        [3.240_479, -1.537_15, -0.498_535],
        [-0.969_256, 1.875_992, 0.041_556],
        [0.055_648, -0.204_043, 1.057_311],
    ];
    let mut m = [0f32; 9];
    for i in 0..3 {
        for j in 0..3 {
            m[i * 3 + j] = gains[i] * XYZ_TO_SRGB[i][j];
        }
    }
    m
}

/// Builds an uncompressed RGGB Bayer DNG from an sRGB image (see the module docs).
pub fn make_dng(src: &RgbImage, o: &DngOptions) -> Vec<u8> {
    let (w, h) = (src.width() & !1, src.height() & !1);
    let range = (o.white - o.black) as f32;
    let lut: Vec<f32> = (0..=255u8).map(srgb_to_linear).collect();
    let mut samples = Vec::with_capacity(w as usize * h as usize * 2);
    for y in 0..h {
        for x in 0..w {
            let c = match (y & 1, x & 1) {
                (0, 0) => 0,
                (1, 1) => 2,
                _ => 1,
            };
            let v = lut[src.get_pixel(x, y)[c] as usize] * o.gains[c];
            let s = (o.black as f32 + v * range)
                .round()
                .clamp(0.0, o.white as f32) as u16;
            samples.extend_from_slice(&s.to_le_bytes());
        }
    }
    let preview = o.preview_long_edge.map(|long| {
        let (pw, ph) = crate::pixels::fit_long_edge(w, h, long.min(w.max(h)));
        let small = image::imageops::resize(src, pw, ph, image::imageops::FilterType::Triangle);
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
            .encode_image(&small)
            .expect("in-memory JPEG encode");
        (pw, ph, jpg)
    });

    let mut ifd0 = Ifd::new();
    ifd0.long(254, &[0]);
    ifd0.long(256, &[w]);
    ifd0.long(257, &[h]);
    ifd0.short(258, &[16]);
    ifd0.short(259, &[1]);
    ifd0.short(262, &[32803]);
    ifd0.ascii(271, "imgd");
    ifd0.ascii(272, "Synthetic Bayer");
    ifd0.long(273, &[0]); // patched below
    ifd0.short(274, &[o.orientation]);
    ifd0.short(277, &[1]);
    ifd0.long(278, &[h]);
    ifd0.long(279, &[w * h * 2]);
    ifd0.short(33421, &[2, 2]);
    ifd0.byte(33422, &[0, 1, 1, 2]);
    ifd0.byte(50706, &[1, 4, 0, 0]);
    ifd0.ascii(50708, "imgd Synthetic Bayer");
    ifd0.short(50714, &[o.black]);
    ifd0.long(50717, &[o.white as u32]);
    ifd0.srational(50721, &color_matrix(o.gains));
    ifd0.rational(50728, &o.gains);
    ifd0.short(50778, &[21]);
    let mut sub = None;
    if let Some((pw, ph, jpg)) = &preview {
        ifd0.long(330, &[0]); // patched below
        let mut s = Ifd::new();
        s.long(254, &[1]);
        s.long(256, &[*pw]);
        s.long(257, &[*ph]);
        s.short(258, &[8, 8, 8]);
        s.short(259, &[7]);
        s.short(262, &[6]);
        s.long(273, &[0]);
        s.short(277, &[3]);
        s.long(278, &[*ph]);
        s.long(279, &[jpg.len() as u32]);
        sub = Some(s);
    }
    // Layout: header | IFD0 | SubIFD | preview JPEG | raw samples.
    let (h0, d0) = ifd0.sizes();
    let sub_at = 8 + h0 + d0;
    let (hs, ds) = sub.as_ref().map_or((0, 0), |s| s.sizes());
    let jpg_at = sub_at + hs + ds;
    let jpg_len = preview.as_ref().map_or(0, |p| p.2.len());
    let raw_at = (jpg_at + jpg_len).next_multiple_of(2);
    let patch = |ifd: &mut Ifd, tag: u16, v: u32| {
        if let Some(e) = ifd.entries.iter_mut().find(|e| e.0 == tag) {
            e.3 = v.to_le_bytes().to_vec();
        }
    };
    patch(&mut ifd0, 273, raw_at as u32);
    if let Some(s) = sub.as_mut() {
        patch(&mut ifd0, 330, sub_at as u32);
        patch(s, 273, jpg_at as u32);
    }
    let mut out = Vec::with_capacity(raw_at + samples.len());
    out.extend_from_slice(b"II*\0");
    out.extend_from_slice(&8u32.to_le_bytes());
    ifd0.write(&mut out, 8, 0);
    if let Some(s) = sub.as_mut() {
        s.write(&mut out, sub_at, 0);
    }
    if let Some((_, _, jpg)) = &preview {
        out.extend_from_slice(jpg);
    }
    out.resize(raw_at, 0);
    out.extend_from_slice(&samples);
    out
}

/// Peak signal-to-noise ratio between two same-sized RGB images, in dB.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}
