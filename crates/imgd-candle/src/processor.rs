//! Hugging Face image processors, as their PIL backends run them: the one reader of
//! `preprocessor_config.json` ([`ProcessorConfig`]), the rescale-and-normalise step every
//! processor ends with ([`Normalize`]), the resize without crop of BLIP, TrOCR and SigLIP
//! ([`ResizePreprocess`]), and the batch tensor a vision tower takes ([`pixel_batch`]).
//! CLIP's resize-and-crop processor builds on the same pieces in its own crate.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
pub use imgd_vision::pil::{PilFilter, resize_bicubic_pil, resize_pil, resize_pil_window};
use serde::Deserialize;

use crate::ModelError;

/// OpenAI CLIP's channel means, which BLIP's processors use too.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's channel standard deviations.
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

/// Why an image could not be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    /// The image has no pixels.
    #[error("the image is empty (0 pixels wide or high)")]
    Empty,
}

/// A `size` or `crop_size` of `preprocessor_config.json`: `{"shortest_edge": N}`,
/// `{"height": H, "width": W}`, or a bare number in old files (which stands for all three).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorSize {
    /// `shortest_edge`.
    pub shortest_edge: Option<u32>,
    /// `height`.
    pub height: Option<u32>,
    /// `width`.
    pub width: Option<u32>,
}

impl ProcessorSize {
    fn parse(value: &serde_json::Value) -> Self {
        let number = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        if let Some(n) = number(value) {
            return ProcessorSize {
                shortest_edge: Some(n),
                height: Some(n),
                width: Some(n),
            };
        }
        let field = |key: &str| value.get(key).and_then(number);
        ProcessorSize {
            shortest_edge: field("shortest_edge"),
            height: field("height"),
            width: field("width"),
        }
    }

    /// `(height, width)` when both are given.
    pub fn height_width(&self) -> Option<(u32, u32)> {
        Some((self.height?, self.width?))
    }
}

/// The fields of a Hugging Face `preprocessor_config.json` imgd's models use; `None` where the
/// file leaves a field out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessorConfig {
    /// The file read, for error messages.
    pub path: PathBuf,
    /// `size`: the resize target.
    pub size: Option<ProcessorSize>,
    /// `crop_size`: the centre crop.
    pub crop_size: Option<ProcessorSize>,
    /// `do_center_crop`.
    pub do_center_crop: Option<bool>,
    /// `rescale_factor` (1/255 in every released processor).
    pub rescale_factor: Option<f64>,
    /// `image_mean`.
    pub image_mean: Option<[f32; 3]>,
    /// `image_std`.
    pub image_std: Option<[f32; 3]>,
    /// `resample`: PIL's filter number.
    pub resample: Option<u32>,
    /// `do_resize`.
    pub do_resize: Option<bool>,
    /// `do_rescale`.
    pub do_rescale: Option<bool>,
    /// `do_normalize`.
    pub do_normalize: Option<bool>,
}

impl ProcessorConfig {
    /// Reads `dir/preprocessor_config.json`; `Ok(None)` when the folder has none.
    pub fn read(dir: &Path) -> Result<Option<Self>, ModelError> {
        let path = dir.join("preprocessor_config.json");
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(None);
        };
        Self::parse(&text, path).map(Some)
    }

    /// Parses the text of a `preprocessor_config.json` read from `path`.
    pub fn parse(text: &str, path: PathBuf) -> Result<Self, ModelError> {
        #[derive(Deserialize)]
        struct Raw {
            size: Option<serde_json::Value>,
            crop_size: Option<serde_json::Value>,
            do_center_crop: Option<bool>,
            rescale_factor: Option<f64>,
            image_mean: Option<[f32; 3]>,
            image_std: Option<[f32; 3]>,
            resample: Option<u32>,
            do_resize: Option<bool>,
            do_rescale: Option<bool>,
            do_normalize: Option<bool>,
        }
        let raw: Raw = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        Ok(ProcessorConfig {
            path,
            size: raw.size.as_ref().map(ProcessorSize::parse),
            crop_size: raw.crop_size.as_ref().map(ProcessorSize::parse),
            do_center_crop: raw.do_center_crop,
            rescale_factor: raw.rescale_factor,
            image_mean: raw.image_mean,
            image_std: raw.image_std,
            resample: raw.resample,
            do_resize: raw.do_resize,
            do_rescale: raw.do_rescale,
            do_normalize: raw.do_normalize,
        })
    }

    /// The error for a setting imgd does not reproduce: "`path`: `what` is not supported".
    pub fn unsupported(&self, what: &str) -> ModelError {
        ModelError::Config(format!("{}: {what} is not supported", self.path.display()))
    }

    /// The error for a setting that contradicts the model: "`path`: `what`".
    pub fn mismatch(&self, what: &str) -> ModelError {
        ModelError::Config(format!("{}: {what}", self.path.display()))
    }

    /// The resize filter: `resample` when set (bilinear or bicubic, the two PIL filters
    /// reproduced), else `default`.
    pub fn filter(&self, default: PilFilter) -> Result<PilFilter, ModelError> {
        match self.resample {
            None => Ok(default),
            Some(r) => PilFilter::from_pil(r).ok_or_else(|| {
                self.unsupported(&format!("resample {r} (only 2, bilinear, and 3, bicubic)"))
            }),
        }
    }

    /// Refuses a processor with its resize, rescale or normalisation turned off.
    pub fn require_every_step(&self) -> Result<(), ModelError> {
        if [self.do_resize, self.do_rescale, self.do_normalize].contains(&Some(false)) {
            return Err(self.unsupported("turning off the resize, rescale or normalisation"));
        }
        Ok(())
    }

    /// The rescale and normalisation: the file's values, `default`'s where it has none.
    pub fn normalize(&self, default: &Normalize) -> Normalize {
        Normalize {
            rescale: self.rescale_factor.unwrap_or(default.rescale),
            mean: self.image_mean.unwrap_or(default.mean),
            std: self.image_std.unwrap_or(default.std),
        }
    }
}

/// The last steps of every processor: rescale (`× 1/255`) and normalise per channel, channel
/// first, in the reference's precision (the rescale in f64 rounded to f32, then
/// `(x − mean) / std` in f32).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// The rescale factor (`rescale_factor`, 1/255).
    pub rescale: f64,
    /// Channel means (`image_mean`).
    pub mean: [f32; 3],
    /// Channel standard deviations (`image_std`).
    pub std: [f32; 3],
}

impl Normalize {
    /// OpenAI CLIP's normalisation (BLIP's too).
    pub fn openai_clip() -> Self {
        Normalize {
            rescale: 1.0 / 255.0,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
        }
    }

    /// Mean and standard deviation 0.5: pixels in −1…1 (TrOCR, SigLIP).
    pub fn symmetric() -> Self {
        Normalize {
            rescale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// The normalised value of every byte, per channel: `table[c][v]`.
    pub fn table(&self) -> [[f32; 256]; 3] {
        let mut table = [[0f32; 256]; 3];
        for (c, row) in table.iter_mut().enumerate() {
            for (v, entry) in row.iter_mut().enumerate() {
                let rescaled = (v as f64 * self.rescale) as f32;
                *entry = (rescaled - self.mean[c]) / self.std[c];
            }
        }
        table
    }

    /// The image as `3 × height × width` normalised floats, channel first.
    pub fn apply(&self, image: &RgbImage) -> Vec<f32> {
        let (width, height) = image.dimensions();
        let plane = width as usize * height as usize;
        let mut out = vec![0f32; 3 * plane];
        let table = self.table();
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = table[c][pixel.0[c] as usize];
            }
        }
        out
    }
}

/// A processor that resizes to `height × width` without keeping the aspect ratio and without
/// a crop, then normalises: BLIP's `BlipImageProcessor`, TrOCR's `ViTImageProcessor`,
/// SigLIP's `SiglipImageProcessor`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizePreprocess {
    /// Output height (`size.height`).
    pub height: u32,
    /// Output width (`size.width`).
    pub width: u32,
    /// The resize filter (`resample`).
    pub filter: PilFilter,
    /// The rescale and normalisation.
    pub normalize: Normalize,
}

impl ResizePreprocess {
    /// A square processor of `size` pixels.
    pub fn square(size: u32, filter: PilFilter, normalize: Normalize) -> Self {
        ResizePreprocess {
            height: size,
            width: size,
            filter,
            normalize,
        }
    }

    /// The processor `dir/preprocessor_config.json` describes, `default` where the folder has
    /// none or a field is left out. The output must be the model's square input of
    /// `image_size`; what is not reproduced (another filter, a centre crop that cuts, a step
    /// turned off) is refused.
    pub fn load(dir: &Path, image_size: usize, default: Self) -> Result<Self, ModelError> {
        let Some(config) = ProcessorConfig::read(dir)? else {
            return Ok(default);
        };
        let filter = config.filter(default.filter)?;
        config.require_every_step()?;
        let (height, width) = match config.size {
            None => (default.height, default.width),
            Some(size) => size
                .height_width()
                .ok_or_else(|| config.unsupported("a `size` without height and width"))?,
        };
        if config.do_center_crop == Some(true) {
            // A crop to the resized size (what old feature extractors saved) changes nothing.
            let crop = config.crop_size.and_then(|c| c.height_width());
            if crop != Some((height, width)) {
                return Err(config.unsupported("a centre crop smaller than the resized image"));
            }
        }
        if (height, width) != (image_size as u32, image_size as u32) {
            return Err(config.mismatch(&format!(
                "size {width}x{height} differs from the model's image_size {image_size}"
            )));
        }
        Ok(ResizePreprocess {
            height,
            width,
            filter,
            normalize: config.normalize(&default.normalize),
        })
    }

    /// Floats per preprocessed image: 3 × height × width.
    pub fn len(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    /// Whether the output is empty (a zero size; never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The resized 8-bit image. PIL returns a copy when the size is already right.
    pub fn resize(&self, image: &RgbImage) -> Result<RgbImage, PreprocessError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty);
        }
        if (width, height) == (self.width, self.height) {
            return Ok(image.clone());
        }
        Ok(resize_pil(image, self.width, self.height, self.filter))
    }

    /// The model input for one image: `3 × height × width` floats, channel first (CHW).
    pub fn apply(&self, image: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
        Ok(self.normalize.apply(&self.resize(image)?))
    }
}

/// Preprocessed images as one `(n, 3, height, width)` tensor on `device`, each checked to hold
/// `3 × height × width` values.
pub fn pixel_batch(
    pixels: &[Vec<f32>],
    height: usize,
    width: usize,
    device: &Device,
) -> Result<Tensor, ModelError> {
    let per_image = 3 * height * width;
    if pixels.is_empty() {
        return Err(ModelError::Input("no images to encode".into()));
    }
    if let Some(bad) = pixels.iter().find(|p| p.len() != per_image) {
        return Err(ModelError::Input(format!(
            "a preprocessed image has {} values, the model takes {per_image}",
            bad.len()
        )));
    }
    let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(
        flat,
        (pixels.len(), 3, height, width),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ProcessorConfig {
        ProcessorConfig::parse(json, PathBuf::from("preprocessor_config.json")).unwrap()
    }

    #[test]
    fn sizes_parse_in_all_three_spellings() {
        let c =
            config(r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 3, "width": 4}}"#);
        assert_eq!(c.size.unwrap().shortest_edge, Some(224));
        assert_eq!(c.crop_size.unwrap().height_width(), Some((3, 4)));
        let bare = config(r#"{"size": 384}"#).size.unwrap();
        assert_eq!(bare.shortest_edge, Some(384));
        assert_eq!(bare.height_width(), Some((384, 384)));
        assert!(ProcessorConfig::parse("not json", PathBuf::new()).is_err());
    }

    #[test]
    fn unsupported_filters_and_switched_off_steps_are_refused() {
        assert_eq!(
            config(r#"{"resample": 2}"#)
                .filter(PilFilter::Bicubic)
                .unwrap(),
            PilFilter::Bilinear
        );
        assert_eq!(
            config("{}").filter(PilFilter::Bicubic).unwrap(),
            PilFilter::Bicubic
        );
        let lanczos = config(r#"{"resample": 1}"#).filter(PilFilter::Bicubic);
        assert!(lanczos.unwrap_err().to_string().contains("resample 1"));
        assert!(
            config(r#"{"do_normalize": false}"#)
                .require_every_step()
                .is_err()
        );
        assert!(
            config(r#"{"do_normalize": true}"#)
                .require_every_step()
                .is_ok()
        );
    }

    #[test]
    fn a_resize_processor_loads_from_its_folder_and_checks_the_model_size() {
        let dir = tempfile::tempdir().unwrap();
        let default = ResizePreprocess::square(4, PilFilter::Bicubic, Normalize::openai_clip());
        assert_eq!(
            ResizePreprocess::load(dir.path(), 4, default.clone()).unwrap(),
            default
        );
        let write = |json: &str| fs::write(dir.path().join("preprocessor_config.json"), json);
        write(r#"{"size": {"height": 4, "width": 4}, "image_mean": [0.5, 0.5, 0.5]}"#).unwrap();
        let loaded = ResizePreprocess::load(dir.path(), 4, default.clone()).unwrap();
        assert_eq!(loaded.normalize.mean, [0.5; 3]);
        assert_eq!(loaded.normalize.std, OPENAI_CLIP_STD);
        write(r#"{"size": {"height": 8, "width": 8}}"#).unwrap();
        let err = ResizePreprocess::load(dir.path(), 4, default.clone()).unwrap_err();
        assert!(err.to_string().contains("image_size 4"), "{err}");
        write(r#"{"do_center_crop": true, "crop_size": 2}"#).unwrap();
        assert!(ResizePreprocess::load(dir.path(), 4, default.clone()).is_err());
        write(r#"{"do_center_crop": true, "crop_size": 4}"#).unwrap();
        assert!(ResizePreprocess::load(dir.path(), 4, default).is_ok());
    }

    #[test]
    fn resize_ignores_the_aspect_ratio_and_normalises_channel_first() {
        let p = ResizePreprocess::square(4, PilFilter::Bicubic, Normalize::openai_clip());
        let image = RgbImage::from_pixel(8, 2, image::Rgb([0, 255, 128]));
        let out = p.apply(&image).unwrap();
        assert_eq!(out.len(), p.len());
        assert!((out[0] - (-OPENAI_CLIP_MEAN[0] / OPENAI_CLIP_STD[0])).abs() < 1e-6);
        assert!((out[16] - (1.0 - OPENAI_CLIP_MEAN[1]) / OPENAI_CLIP_STD[1]).abs() < 1e-6);
        assert_eq!(p.resize(&image).unwrap().dimensions(), (4, 4));
        assert_eq!(p.apply(&RgbImage::new(0, 3)), Err(PreprocessError::Empty));
        let symmetric = ResizePreprocess::square(4, PilFilter::Bilinear, Normalize::symmetric());
        let out = symmetric.apply(&image).unwrap();
        assert!((out[0] + 1.0).abs() < 1e-6 && (out[16] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn pixel_batches_check_every_image() {
        let batch = pixel_batch(&[vec![0.0; 12], vec![1.0; 12]], 2, 2, &Device::Cpu).unwrap();
        assert_eq!(batch.dims(), &[2, 3, 2, 2]);
        assert!(pixel_batch(&[], 2, 2, &Device::Cpu).is_err());
        let err = pixel_batch(&[vec![0.0; 11]], 2, 2, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("11 values"), "{err}");
    }
}
