//! The `metadata` module: camera, lens, exposure, capture time, GPS position, orientation and
//! dimensions, read from an image's EXIF block. Headers only; the pixels are never decoded.
//!
//! [`extract`] takes the raw EXIF bytes (the TIFF-structured blob that
//! `exif::Reader::read_raw` accepts, i.e. the APP1 payload of a JPEG after `Exif\0\0`) and the
//! width and height from the image header, and never fails: every field is validated on its
//! own, and a field that is missing, of the wrong type, has a zero denominator or a value out of
//! its physical range (a GPS latitude of 4294967295, an ISO of 0, a month of 13) is `None`. Only
//! a blob that cannot be parsed at all is reported, as an entry in [`Metadata::warnings`]; the
//! row is still written with the header's dimensions. An IFD that is truncated half-way keeps
//! the fields that were read before the damage.
//!
//! Interpretation choices:
//! - `taken_at` is the camera's local wall-clock time, `YYYY-MM-DDTHH:MM:SS[.fff]`, from
//!   DateTimeOriginal, else DateTimeDigitized, else DateTime, each with its own SubSecTime*
//!   tag. `taken_utc_ms` is set only when an offset is recorded for that timestamp
//!   (OffsetTimeOriginal / OffsetTimeDigitized, falling back to OffsetTime).
//! - `focal_35mm` is FocalLengthIn35mmFilm, else computed from FocalLength and the sensor size
//!   given by FocalPlaneX/YResolution and the EXIF PixelX/YDimension. The header size is *not*
//!   used for that computation: the focal-plane resolution refers to the size the camera wrote,
//!   and an exported or resized copy would give a wildly wrong crop factor.
//! - `width`/`height` are PixelX/YDimension when present, else the header's.
//! - GPS: a missing hemisphere reference counts as N / E; a position of exactly 0°, 0° (what
//!   some cameras write without a fix) is treated as no position.

use std::fmt::Write as _;

use exif::{Exif, In, Reader, Tag, Value};
use imgd_core::{ResultRow, SqlValue};
use serde::{Deserialize, Serialize};

/// Everything the metadata module extracts from one image. Serialised as-is (flat, `None`
/// fields omitted) into the `data` column of `result_metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Camera maker (Make), e.g. `Canon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub make: Option<String>,
    /// Camera model (Model), e.g. `Canon EOS Rebel T6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Lens (LensModel, else LensMake + LensSpecification as text such as `Canon 18-55mm
    /// f/3.5-5.6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lens: Option<String>,
    /// ISO sensitivity (PhotographicSensitivity, else ISOSpeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<u32>,
    /// F-number (FNumber, else from the APEX ApertureValue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aperture: Option<f64>,
    /// Exposure time in seconds (ExposureTime, else from the APEX ShutterSpeedValue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutter_s: Option<f64>,
    /// Actual focal length in millimetres (FocalLength).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focal_mm: Option<f64>,
    /// 35 mm-equivalent focal length in millimetres (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focal_35mm: Option<f64>,
    /// Local wall-clock capture time, ISO 8601 without offset: `YYYY-MM-DDTHH:MM:SS[.fff]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    /// The UTC offset recorded for `taken_at`, as `+HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,
    /// The capture instant in milliseconds since the Unix epoch; only when an offset is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_utc_ms: Option<i64>,
    /// Latitude in decimal degrees, negative south of the equator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gps_lat: Option<f64>,
    /// Longitude in decimal degrees, negative west of Greenwich.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gps_lon: Option<f64>,
    /// Altitude in metres, negative below sea level (GPSAltitudeRef = 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gps_alt: Option<f64>,
    /// EXIF orientation, 1–8 (1 = upright).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<u8>,
    /// Width in pixels (PixelXDimension, else the header's), before orientation is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels (PixelYDimension, else the header's), before orientation is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Software that wrote the file (Software).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    /// Exposure program, e.g. `aperture_priority`, `manual`, `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure_program: Option<String>,
    /// Whether the flash fired (bit 0 of Flash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_fired: Option<bool>,
    /// White balance: `auto` or `manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub white_balance: Option<String>,
    /// Exposure compensation in EV (ExposureBiasValue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure_bias_ev: Option<f64>,
    /// Metering mode, e.g. `center_weighted_average`, `pattern`, `spot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering_mode: Option<String>,
    /// Colour space: `srgb`, `adobe_rgb` or `uncalibrated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_space: Option<String>,
    /// Problems with the EXIF block as a whole (only when it could not be parsed at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Metadata {
    /// The row for `result_metadata`: the typed columns, and the whole struct as `data`.
    pub fn to_row(&self) -> ResultRow {
        let text = |v: &Option<String>| SqlValue::from(v.clone());
        let int = |v: Option<i64>| SqlValue::from(v);
        ResultRow {
            module: crate::METADATA,
            model_id: None,
            model_version: None,
            columns: vec![
                ("make", text(&self.make)),
                ("model", text(&self.model)),
                ("lens", text(&self.lens)),
                ("iso", int(self.iso.map(i64::from))),
                ("aperture", self.aperture.into()),
                ("shutter_s", self.shutter_s.into()),
                ("focal_mm", self.focal_mm.into()),
                ("focal_35mm", self.focal_35mm.into()),
                ("taken_at", text(&self.taken_at)),
                ("taken_utc_ms", int(self.taken_utc_ms)),
                ("gps_lat", self.gps_lat.into()),
                ("gps_lon", self.gps_lon.into()),
                ("gps_alt", self.gps_alt.into()),
                ("orientation", int(self.orientation.map(i64::from))),
                ("width", int(self.width.map(i64::from))),
                ("height", int(self.height.map(i64::from))),
                ("software", text(&self.software)),
            ],
            // Serialising a struct of options, strings and numbers cannot fail (non-finite
            // floats are never stored in it).
            data: serde_json::to_value(self).unwrap_or_default(),
            vectors: Vec::new(),
        }
    }
}

/// Extracts the metadata of one image from its raw EXIF bytes (`None` when the file has none)
/// and the width and height from its header (0 when unknown). Never fails and never panics on
/// hostile input; see the module doc for what is validated.
pub fn extract(exif: Option<&[u8]>, width: u32, height: u32) -> Metadata {
    let mut meta = Metadata {
        width: (width > 0).then_some(width),
        height: (height > 0).then_some(height),
        ..Metadata::default()
    };
    let Some(bytes) = exif else { return meta };
    let parsed = Reader::new()
        .continue_on_error(true)
        .read_raw(bytes.to_vec())
        .or_else(|e| e.distill_partial_result(|_| {}));
    match parsed {
        Ok(exif) => fill(&mut meta, &Fields(&exif)),
        Err(e) => meta.warnings.push(format!("EXIF could not be parsed: {e}")),
    }
    meta
}

fn fill(meta: &mut Metadata, f: &Fields<'_>) {
    meta.make = f.text(Tag::Make);
    meta.model = f.text(Tag::Model);
    meta.software = f.text(Tag::Software);
    meta.lens = f.text(Tag::LensModel).or_else(|| lens_from_spec(f));
    meta.iso = f
        .uint(Tag::PhotographicSensitivity)
        .filter(|&iso| iso != 65535) // "65535 or more": ISOSpeed has the real value.
        .or_else(|| f.uint(Tag::ISOSpeed))
        .filter(|iso| (1..=10_000_000).contains(iso));
    meta.aperture = f
        .real(Tag::FNumber)
        .or_else(|| {
            f.real(Tag::ApertureValue)
                .map(|av| round_to(2f64.powf(av / 2.0), 2))
        })
        .filter(|n| (0.5..=512.0).contains(n));
    meta.shutter_s = f
        .real(Tag::ExposureTime)
        .or_else(|| f.real(Tag::ShutterSpeedValue).map(|tv| 2f64.powf(-tv)))
        .filter(|&t| t > 0.0 && t <= 86_400.0);
    meta.focal_mm = f
        .real(Tag::FocalLength)
        .filter(|&mm| mm > 0.0 && mm <= 10_000.0);
    meta.orientation = f
        .uint(Tag::Orientation)
        .filter(|o| (1..=8).contains(o))
        .map(|o| o as u8);

    let dim = |tag| f.uint(tag).filter(|&d| (1..=1_000_000).contains(&d));
    let (exif_w, exif_h) = (dim(Tag::PixelXDimension), dim(Tag::PixelYDimension));
    if let (Some(w), Some(h)) = (exif_w, exif_h) {
        meta.width = Some(w);
        meta.height = Some(h);
    }
    meta.focal_35mm = f
        .uint(Tag::FocalLengthIn35mmFilm)
        .filter(|mm| (1..=20_000).contains(mm))
        .map(f64::from)
        .or_else(|| focal_35mm_from_sensor(f, meta.focal_mm?, exif_w?, exif_h?));

    fill_time(meta, f);
    fill_gps(meta, f);

    meta.exposure_program = f.uint(Tag::ExposureProgram).and_then(|p| {
        let name = match p {
            1 => "manual",
            2 => "normal",
            3 => "aperture_priority",
            4 => "shutter_priority",
            5 => "creative",
            6 => "action",
            7 => "portrait",
            8 => "landscape",
            _ => return None,
        };
        Some(name.to_string())
    });
    meta.flash_fired = f
        .uint(Tag::Flash)
        .filter(|&v| v <= 0x7f)
        .map(|v| v & 1 == 1);
    meta.white_balance = f.uint(Tag::WhiteBalance).and_then(|v| match v {
        0 => Some("auto".to_string()),
        1 => Some("manual".to_string()),
        _ => None,
    });
    meta.exposure_bias_ev = f
        .real(Tag::ExposureBiasValue)
        .filter(|ev| (-20.0..=20.0).contains(ev))
        .map(|ev| round_to(ev, 2));
    meta.metering_mode = f.uint(Tag::MeteringMode).and_then(|v| {
        let name = match v {
            1 => "average",
            2 => "center_weighted_average",
            3 => "spot",
            4 => "multi_spot",
            5 => "pattern",
            6 => "partial",
            255 => "other",
            _ => return None,
        };
        Some(name.to_string())
    });
    meta.color_space = f.uint(Tag::ColorSpace).and_then(|v| match v {
        1 => Some("srgb".to_string()),
        2 => Some("adobe_rgb".to_string()),
        0xffff => Some("uncalibrated".to_string()),
        _ => None,
    });
}

/// `LensMake` plus LensSpecification formatted as `18-55mm f/3.5-5.6`; unknown parts (0/0)
/// are left out.
fn lens_from_spec(f: &Fields<'_>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(make) = f.text(Tag::LensMake) {
        parts.push(make);
    }
    let spec = |i| {
        f.real_at(Tag::LensSpecification, i)
            .filter(|v| *v > 0.0 && *v < 100_000.0)
    };
    let range = |lo: Option<f64>, hi: Option<f64>| match (lo, hi) {
        (Some(lo), Some(hi)) if (lo - hi).abs() > 1e-9 => Some(format!("{}-{}", num(lo), num(hi))),
        (Some(v), _) | (None, Some(v)) => Some(num(v)),
        (None, None) => None,
    };
    if let Some(focal) = range(spec(0), spec(1)) {
        parts.push(format!("{focal}mm"));
    }
    if let Some(fnum) = range(spec(2), spec(3)) {
        parts.push(format!("f/{fnum}"));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// A number as short text: `18`, `3.5`, `5.63`.
fn num(v: f64) -> String {
    let s = format!("{:.2}", v);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// The 35 mm-equivalent focal length from the sensor size: the focal-plane resolution gives
/// pixels per unit, the EXIF pixel dimensions give the sensor's extent in pixels, and the crop
/// factor is the ratio of the 35 mm frame's diagonal (43.27 mm) to the sensor's.
fn focal_35mm_from_sensor(f: &Fields<'_>, focal_mm: f64, w: u32, h: u32) -> Option<f64> {
    let unit_mm = match f.uint(Tag::FocalPlaneResolutionUnit).unwrap_or(2) {
        2 => 25.4,
        3 => 10.0,
        4 => 1.0,
        5 => 0.001,
        _ => return None,
    };
    let xres = f.real(Tag::FocalPlaneXResolution).filter(|&r| r > 0.0)?;
    let yres = f
        .real(Tag::FocalPlaneYResolution)
        .filter(|&r| r > 0.0)
        .unwrap_or(xres);
    let sensor_w = f64::from(w) / xres * unit_mm;
    let sensor_h = f64::from(h) / yres * unit_mm;
    let crop = 43.266_615 / sensor_w.hypot(sensor_h);
    // From medium format (~0.5) to the smallest phone sensors (~12); anything else means the
    // tags do not describe this image.
    (0.2..=20.0)
        .contains(&crop)
        .then(|| round_to(focal_mm * crop, 1))
}

fn fill_time(meta: &mut Metadata, f: &Fields<'_>) {
    let candidates = [
        (
            Tag::DateTimeOriginal,
            Tag::SubSecTimeOriginal,
            Tag::OffsetTimeOriginal,
        ),
        (
            Tag::DateTimeDigitized,
            Tag::SubSecTimeDigitized,
            Tag::OffsetTimeDigitized,
        ),
        (Tag::DateTime, Tag::SubSecTime, Tag::OffsetTime),
    ];
    for (date_tag, subsec_tag, offset_tag) in candidates {
        let Some(t) = f.ascii(date_tag).and_then(parse_datetime) else {
            continue;
        };
        let millis = f.ascii(subsec_tag).and_then(parse_subsec_ms);
        let mut text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        );
        if let Some(ms) = millis {
            let _ = write!(text, ".{ms:03}");
        }
        meta.taken_at = Some(text);
        let offset = f
            .ascii(offset_tag)
            .or_else(|| f.ascii(Tag::OffsetTime))
            .and_then(parse_offset_minutes);
        if let Some(minutes) = offset {
            let sign = if minutes < 0 { '-' } else { '+' };
            meta.utc_offset = Some(format!(
                "{sign}{:02}:{:02}",
                minutes.abs() / 60,
                minutes.abs() % 60
            ));
            let local_ms = days_from_civil(t.year, t.month, t.day) * 86_400_000
                + (i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second))
                    * 1000
                + i64::from(millis.unwrap_or(0));
            meta.taken_utc_ms = Some(local_ms - i64::from(minutes) * 60_000);
        }
        return;
    }
}

struct WallClock {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// Parses `YYYY:MM:DD HH:MM:SS` (also with `-` in the date or `T` between date and time, as
/// some software writes), validating every field. All-blank or all-zero dates are `None`.
fn parse_datetime(s: &[u8]) -> Option<WallClock> {
    if s.len() < 19 {
        return None;
    }
    let n = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &s[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits
            .iter()
            .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
    };
    let sep_ok = matches!(s[4], b':' | b'-')
        && s[7] == s[4]
        && matches!(s[10], b' ' | b'T')
        && s[13] == b':'
        && s[16] == b':';
    if !sep_ok {
        return None;
    }
    let t = WallClock {
        year: i64::from(n(0..4)?),
        month: n(5..7)?,
        day: n(8..10)?,
        hour: n(11..13)?,
        minute: n(14..16)?,
        second: n(17..19)?,
    };
    let valid = (1800..=9999).contains(&t.year)
        && (1..=12).contains(&t.month)
        && t.day >= 1
        && t.day <= days_in_month(t.year, t.month)
        && t.hour < 24
        && t.minute < 60
        && t.second < 61;
    valid.then_some(t)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// SubSecTime* text (`046`, `53`) as milliseconds: the digits are a decimal fraction.
fn parse_subsec_ms(s: &[u8]) -> Option<u32> {
    let digits: Vec<u8> = s.iter().copied().take_while(u8::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let ms = digits
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some(ms)
}

/// `+02:00` / `-05:30` as minutes east of UTC.
fn parse_offset_minutes(s: &[u8]) -> Option<i32> {
    if s.len() < 6 || s[3] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<i32> {
        let (a, b) = (s[i], s[i + 1]);
        (a.is_ascii_digit() && b.is_ascii_digit())
            .then(|| i32::from(a - b'0') * 10 + i32::from(b - b'0'))
    };
    let (hours, minutes) = (two(1)?, two(4)?);
    if hours > 14 || minutes >= 60 {
        return None;
    }
    let total = hours * 60 + minutes;
    match s[0] {
        b'+' => Some(total),
        b'-' => Some(-total),
        _ => None,
    }
}

fn fill_gps(meta: &mut Metadata, f: &Fields<'_>) {
    let lat = gps_coordinate(f, Tag::GPSLatitude, Tag::GPSLatitudeRef, b'N', b'S', 90.0);
    let lon = gps_coordinate(
        f,
        Tag::GPSLongitude,
        Tag::GPSLongitudeRef,
        b'E',
        b'W',
        180.0,
    );
    if let (Some(lat), Some(lon)) = (lat, lon)
        && (lat != 0.0 || lon != 0.0)
    {
        meta.gps_lat = Some(lat);
        meta.gps_lon = Some(lon);
    }
    let below_sea_level = match f.uint(Tag::GPSAltitudeRef) {
        None | Some(0) => Some(false),
        Some(1) => Some(true),
        Some(_) => None,
    };
    meta.gps_alt = below_sea_level.and_then(|below| {
        let alt = f
            .real(Tag::GPSAltitude)
            .filter(|a| (0.0..=100_000.0).contains(a))?;
        Some(if below { -alt } else { alt })
    });
}

/// Degrees, minutes and seconds (three rationals; fewer are accepted) to signed decimal degrees.
fn gps_coordinate(
    f: &Fields<'_>,
    tag: Tag,
    ref_tag: Tag,
    positive: u8,
    negative: u8,
    max: f64,
) -> Option<f64> {
    let field = f.get(tag)?;
    let parts: Vec<f64> = match &field.value {
        Value::Rational(v) if !v.is_empty() && v.len() <= 3 => v
            .iter()
            .map(|r| (r.denom != 0).then(|| r.to_f64()))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    let deg = parts[0];
    let min = parts.get(1).copied().unwrap_or(0.0);
    let sec = parts.get(2).copied().unwrap_or(0.0);
    if !(0.0..=max).contains(&deg) || !(0.0..60.0).contains(&min) || !(0.0..60.0).contains(&sec) {
        return None;
    }
    let value = deg + min / 60.0 + sec / 3600.0;
    if value > max {
        return None;
    }
    let sign = match f.ascii(ref_tag).and_then(|r| r.first().copied()) {
        None => 1.0,
        Some(c) if c.eq_ignore_ascii_case(&positive) => 1.0,
        Some(c) if c.eq_ignore_ascii_case(&negative) => -1.0,
        Some(_) => return None,
    };
    Some(round_to(sign * value, 7))
}

/// Typed, validating access to the primary IFD (and the Exif and GPS IFDs below it).
struct Fields<'a>(&'a Exif);

impl<'a> Fields<'a> {
    fn get(&self, tag: Tag) -> Option<&'a exif::Field> {
        self.0.get_field(tag, In::PRIMARY)
    }

    /// The first ASCII string of a field (or the bytes of an UNDEFINED/BYTE one, which some
    /// writers use for text), without trailing NULs.
    fn ascii(&self, tag: Tag) -> Option<&'a [u8]> {
        let bytes: &[u8] = match &self.get(tag)?.value {
            Value::Ascii(v) => v.first()?,
            Value::Undefined(v, _) | Value::Byte(v) => v,
            _ => return None,
        };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Some(&bytes[..end])
    }

    /// Text for display: valid UTF-8 (lossy), control characters dropped, trimmed, at most 256
    /// characters; empty text is `None`.
    fn text(&self, tag: Tag) -> Option<String> {
        let raw = self.ascii(tag)?;
        let text: String = String::from_utf8_lossy(raw)
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }

    /// The first value of an integer field (BYTE, SHORT or LONG).
    fn uint(&self, tag: Tag) -> Option<u32> {
        self.get(tag)?.value.get_uint(0)
    }

    fn real(&self, tag: Tag) -> Option<f64> {
        self.real_at(tag, 0)
    }

    /// The `index`th value of a numeric field as a finite float; rationals with a zero
    /// denominator are `None`.
    fn real_at(&self, tag: Tag, index: usize) -> Option<f64> {
        let v = match &self.get(tag)?.value {
            Value::Rational(v) => v.get(index).filter(|r| r.denom != 0).map(|r| r.to_f64()),
            Value::SRational(v) => v.get(index).filter(|r| r.denom != 0).map(|r| r.to_f64()),
            Value::Float(v) => v.get(index).map(|&x| f64::from(x)),
            Value::Double(v) => v.get(index).copied(),
            other => other.get_uint(index).map(f64::from),
        }?;
        v.is_finite().then_some(v)
    }
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Words that make a capture date findable: `2024 07 14 2024-07-14 july`.
pub fn date_words(taken_at: &str) -> String {
    let date = taken_at.get(..10).unwrap_or(taken_at);
    let mut words = date.replace('-', " ");
    words.push(' ');
    words.push_str(date);
    if let Some(month) = taken_at
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
    {
        words.push(' ');
        words.push_str(month);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_words_cover_year_month_day_and_month_name() {
        assert_eq!(
            date_words("2003-12-14T12:01:44"),
            "2003 12 14 2003-12-14 december"
        );
        assert_eq!(date_words("junk"), "junk junk");
    }

    #[test]
    fn dates_validate_and_convert() {
        assert!(parse_datetime(b"2003:12:14 12:01:44").is_some());
        assert!(parse_datetime(b"0000:00:00 00:00:00").is_none());
        assert!(parse_datetime(b"1999:99:99 99:99:99").is_none());
        assert!(parse_datetime(b"2023:02:29 10:00:00").is_none());
        assert!(parse_datetime(b"2024:02:29 10:00:00").is_some());
        assert!(parse_datetime(b"    :  :     :  :  ").is_none());
        assert!(parse_datetime(b"2003:12:14").is_none());
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_subsec_ms(b"046"), Some(46));
        assert_eq!(parse_subsec_ms(b"53"), Some(530));
        assert_eq!(parse_subsec_ms(b"5"), Some(500));
        assert_eq!(parse_subsec_ms(b"123456"), Some(123));
        assert_eq!(parse_subsec_ms(b"  "), None);
        assert_eq!(parse_offset_minutes(b"+02:00"), Some(120));
        assert_eq!(parse_offset_minutes(b"-05:30"), Some(-330));
        assert_eq!(parse_offset_minutes(b"+99:99"), None);
        assert_eq!(parse_offset_minutes(b"   :  "), None);
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(num(18.0), "18");
        assert_eq!(num(3.5), "3.5");
        assert_eq!(num(5.656), "5.66");
    }
}
