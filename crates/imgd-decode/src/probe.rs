//! The library side of `imgd probe FILE... [--json]`.

use crate::{
    DecodeOptions, ImageFormat, decode_tiers_bytes, guard, read_header_bytes, read_image_file,
};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// What `imgd probe` reports for one file. Serialises to one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The path as given.
    pub path: String,
    /// Whether the decode succeeded.
    pub ok: bool,
    /// The error message when not ok.
    pub error: Option<String>,
    /// The error's stable kind (`"truncated"`, `"too_large"`, ...) when not ok.
    pub error_kind: Option<&'static str>,
    /// File size in bytes, when it could be read.
    pub file_bytes: Option<u64>,
    /// The sniffed format, when the header could be read.
    pub format: Option<ImageFormat>,
    /// Stored width (before orientation), when the header could be read.
    pub width: Option<u32>,
    /// Stored height (before orientation), when the header could be read.
    pub height: Option<u32>,
    /// EXIF orientation (1..=8), when the header could be read.
    pub orientation: Option<u16>,
    /// Whether the file carries an EXIF blob.
    pub has_exif: bool,
    /// The decode path (`jpeg-dct-1/4`, `raw-preview`, `heic-primary`, `png`, ...).
    pub decode_path: Option<String>,
    /// Pixels the decoder produced, before resizing and orientation.
    pub decoded_width: Option<u32>,
    /// See `decoded_width`.
    pub decoded_height: Option<u32>,
    /// The tier long edges produced, largest first.
    pub tiers: Vec<u32>,
    /// `[width, height]` of each tier image (orientation applied), in `tiers` order.
    pub tier_dims: Vec<[u32; 2]>,
    /// Wall time of read + decode + tiers, in milliseconds.
    pub millis: f64,
}

impl ProbeReport {
    /// A one-line human summary.
    pub fn human_line(&self) -> String {
        if !self.ok {
            return format!(
                "{}: ERROR {} ({:.1} ms)",
                self.path,
                self.error.as_deref().unwrap_or("unknown error"),
                self.millis
            );
        }
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .zip(&self.tier_dims)
            .map(|(t, d)| format!("{t}:{}x{}", d[0], d[1]))
            .collect();
        format!(
            "{}: {} {}x{} orientation {} via {} -> tiers [{}] in {:.1} ms",
            self.path,
            self.format.map_or("?", |f| f.name()),
            self.width.unwrap_or(0),
            self.height.unwrap_or(0),
            self.orientation.unwrap_or(1),
            self.decode_path.as_deref().unwrap_or("?"),
            tiers.join(", "),
            self.millis
        )
    }
}

/// Decodes `path` exactly as the pipeline does (one read, one decode, the tiers) and reports
/// what happened. Never panics: any failure, including a caught decoder panic, becomes
/// `ok: false` with an `error`.
pub fn probe(path: &Path, tiers: &[u32], opts: &DecodeOptions) -> ProbeReport {
    let start = Instant::now();
    let mut r = ProbeReport {
        path: path.display().to_string(),
        ok: false,
        error: None,
        error_kind: None,
        file_bytes: None,
        format: None,
        width: None,
        height: None,
        orientation: None,
        has_exif: false,
        decode_path: None,
        decoded_width: None,
        decoded_height: None,
        tiers: Vec::new(),
        tier_dims: Vec::new(),
        millis: 0.0,
    };
    let result = guard(|| {
        let bytes = read_image_file(path, opts)?;
        Ok(bytes)
    })
    .and_then(|bytes| {
        r.file_bytes = Some(bytes.len() as u64);
        let h = read_header_bytes(&bytes, opts)?;
        r.format = Some(h.format);
        r.width = Some(h.width);
        r.height = Some(h.height);
        r.orientation = Some(h.orientation);
        r.has_exif = h.exif.is_some();
        decode_tiers_bytes(&bytes, tiers, opts)
    });
    match result {
        Ok(d) => {
            r.ok = true;
            r.decode_path = Some(d.decode_path.to_string());
            r.decoded_width = Some(d.decoded_dimensions.0);
            r.decoded_height = Some(d.decoded_dimensions.1);
            for t in &d.tiers {
                r.tiers.push(t.long_edge);
                r.tier_dims.push([t.image.width(), t.image.height()]);
            }
        }
        Err(e) => {
            r.error_kind = Some(e.kind());
            r.error = Some(e.to_string());
        }
    }
    r.millis = start.elapsed().as_secs_f64() * 1000.0;
    r
}
