//! The whole model: load a checkpoint folder, encode images once, decode many prompts per
//! image from the cached query embeddings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use imgd_candle::ModelError;

use crate::Result;
use crate::config::{Blip2Config, TextConfig};
pub use crate::generation::{Decoded, Generation};
use crate::generation::{Decoding, decode};
use crate::opt::{KvCache, Opt, OptRows};
use crate::qformer::QFormer;
use crate::t5::T5;
use crate::vision::VisionTower;

/// The weights files of a checkpoint folder: `model.safetensors`, or the shards
/// `model.safetensors.index.json` lists.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = imgd_candle::model_info::require(dir, "model.safetensors.index.json")
        .map_err(|_| ModelError::MissingFile(single.clone()))?;
    let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
        path: index.clone(),
        source,
    })?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}: {e}", index.display())))?;
    let shards: BTreeSet<&str> = parsed["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Config(format!("{}: no weight_map", index.display())))?
        .values()
        .filter_map(|v| v.as_str())
        .collect();
    shards
        .into_iter()
        .map(|name| imgd_candle::model_info::require(dir, name))
        .collect()
}

/// What encoding a batch of images gives: each stage's output, the last one what the
/// language model reads.
pub struct Encoded {
    /// The vision tower's features, `(n, tokens, vision width)`.
    pub vision: Tensor,
    /// The Q-Former's query states, `(n, queries, Q-Former width)`.
    pub qformer: Tensor,
    /// The query states projected into the language model, `(n, queries, text width)`, in the
    /// language model's dtype.
    pub projected: Tensor,
}

/// The language model.
enum LanguageModel {
    Opt(Opt),
    T5(T5),
}

/// What the language model keeps of each image's query embeddings for its prompts: with OPT
/// the key/value cache after them (the image comes first and attention is causal, so every
/// prompt continues from it); with Flan-T5 the embeddings themselves (its encoder reads image
/// and prompt together, both ways).
pub struct ImagePrefix {
    kind: PrefixKind,
}

enum PrefixKind {
    Opt(KvCache),
    T5(Tensor),
}

impl ImagePrefix {
    /// Images held.
    pub fn rows(&self) -> usize {
        match &self.kind {
            PrefixKind::Opt(cache) => cache.rows(),
            PrefixKind::T5(projected) => projected.dim(0).unwrap_or(0),
        }
    }
}

/// BLIP-2 with OPT or Flan-T5.
pub struct Blip2 {
    vision: VisionTower,
    qformer: QFormer,
    projection: Linear,
    language: LanguageModel,
    config: Blip2Config,
    /// The vision tower's.
    dtype: DType,
    /// The projection's and the language model's.
    text_dtype: DType,
}

impl Blip2 {
    /// Loads the checkpoint in `dir` (`config.json` and memory-mapped safetensors, one file
    /// or shards), in f32 (what the CPU runs).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_as(dir, device, DType::F32)
    }

    /// [`Blip2::load`] in `dtype` (f16 or bf16 halve a GPU's memory and work; candle's CPU
    /// multiply has no bf16 kernel and widens bf16 to f32); the Q-Former and its query tokens
    /// stay in f32, as the reference keeps them, and Flan-T5 asked for f16 runs in bf16 (T5
    /// overflows f16).
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = Blip2Config::load(dir)?;
        let files = weight_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; model files are not modified while
        // imgd runs (they are replaced by rename, which keeps the mapped inode intact).
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Self::new(vb, config)
    }

    /// Builds it from `vb` (a checkpoint's root), in `vb`'s dtype but for the Q-Former (f32)
    /// and Flan-T5 in f16 (bf16).
    pub fn new(vb: VarBuilder<'_>, config: Blip2Config) -> Result<Self> {
        let vision = VisionTower::new(vb.pp("vision_model"), &config.vision_config)?;
        let qformer = QFormer::new(
            vb.clone().set_dtype(DType::F32),
            &config.qformer_config,
            config.num_query_tokens,
        )?;
        let text_width = match &config.text_config {
            TextConfig::Opt(text) => text.hidden_size,
            TextConfig::T5(text) => text.d_model,
        };
        // T5 v1.1 overflows f16 (Flan-T5 was trained in bf16), so asked for f16 it runs in
        // bf16, which has f32's range; the projection feeding it with it.
        let text_dtype = match (&config.text_config, vb.dtype()) {
            (TextConfig::T5(_), DType::F16) => DType::BF16,
            (_, dtype) => dtype,
        };
        let text_vb = vb.clone().set_dtype(text_dtype);
        let projection = candle_nn::linear(
            config.qformer_config.hidden_size,
            text_width,
            text_vb.pp("language_projection"),
        )?;
        let language = match &config.text_config {
            TextConfig::Opt(text) => {
                LanguageModel::Opt(Opt::new(text_vb.pp("language_model"), text)?)
            }
            TextConfig::T5(text) => LanguageModel::T5(T5::new(text_vb.pp("language_model"), text)?),
        };
        Ok(Blip2 {
            vision,
            qformer,
            projection,
            language,
            dtype: vb.dtype(),
            text_dtype,
            config,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &Blip2Config {
        &self.config
    }

    /// The token the language model's prompts start with: OPT's BOS; none for Flan-T5, whose
    /// prompts end with its end token instead.
    pub fn bos_token_id(&self) -> Option<u32> {
        match &self.language {
            LanguageModel::Opt(opt) => Some(opt.config().bos_token_id),
            LanguageModel::T5(_) => None,
        }
    }

    /// The language model's end token.
    pub fn eos_token_id(&self) -> u32 {
        match &self.language {
            LanguageModel::Opt(opt) => opt.config().eos_token_id,
            LanguageModel::T5(t5) => t5.config().eos_token_id,
        }
    }

    /// Positions the language model holds (image tokens, prompt and answer together): OPT's
    /// learned table; `None` for Flan-T5, whose positions are relative.
    pub fn max_positions(&self) -> Option<usize> {
        match &self.language {
            LanguageModel::Opt(opt) => Some(opt.config().max_position_embeddings),
            LanguageModel::T5(_) => None,
        }
    }

    /// Runs the vision tower, the Q-Former (in f32) and the projection on `(n, 3, S, S)`
    /// pixels.
    pub fn encode(&self, pixels: &Tensor) -> Result<Encoded> {
        let vision = self.vision.forward(&pixels.to_dtype(self.dtype)?)?;
        let qformer = self.qformer.forward(&vision.to_dtype(DType::F32)?)?;
        let projected = self
            .projection
            .forward(&qformer.to_dtype(self.text_dtype)?)?;
        Ok(Encoded {
            vision,
            qformer,
            projected,
        })
    }

    /// What the language model keeps of each image's query embeddings (`projected`,
    /// `(n, queries, width)`), computed once per image for all its prompts: with OPT its
    /// key/value cache after them.
    pub fn image_prefix(&self, projected: &Tensor) -> Result<ImagePrefix> {
        let kind = match &self.language {
            LanguageModel::Opt(opt) => {
                let (n, queries, _) = projected.dims3()?;
                let mut cache = KvCache::new(opt.layer_count(), n);
                opt.forward(projected, &vec![vec![1; queries]; n], &mut cache)?;
                PrefixKind::Opt(cache)
            }
            LanguageModel::T5(_) => PrefixKind::T5(projected.clone()),
        };
        Ok(ImagePrefix { kind })
    }

    /// Feeds every (image, prompt) pair's prompt after its image's prefix: the rows of the
    /// `images × prompts` pairs (image-major), ready to decode, and the next-token logits of
    /// each, `(rows, vocab)`. With OPT the prompts are left-padded to one length after the
    /// cached image; with Flan-T5 each image's embeddings and each prompt are encoded together,
    /// right-padded, and the decoder takes its first step.
    pub fn prompt_logits<'a>(
        &'a self,
        prefix: &ImagePrefix,
        prompts: &[Vec<u32>],
    ) -> Result<(Box<dyn Decoding + 'a>, Tensor)> {
        if prompts.iter().any(Vec::is_empty) {
            return Err(ModelError::Input("a prompt has no tokens".into()));
        }
        let images = prefix.rows();
        let rows: Vec<usize> = (0..images)
            .flat_map(|image| std::iter::repeat_n(image, prompts.len()))
            .collect();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let device = self.device();
        match (&self.language, &prefix.kind) {
            (LanguageModel::Opt(opt), PrefixKind::Opt(cache)) => {
                let mut cache = cache.select(&rows)?;
                let pad = opt.config().pad_token_id;
                let mut ids = Vec::with_capacity(rows.len() * longest);
                let mut real = Vec::with_capacity(rows.len());
                for _ in 0..images {
                    for prompt in prompts {
                        let padding = longest - prompt.len();
                        ids.extend(std::iter::repeat_n(pad, padding));
                        ids.extend_from_slice(prompt);
                        let mut bits = vec![0u8; padding];
                        bits.extend(std::iter::repeat_n(1u8, prompt.len()));
                        real.push(bits);
                    }
                }
                let ids = Tensor::from_vec(ids, (rows.len(), longest), device)?;
                let hidden = opt.forward(&opt.embed(&ids)?, &real, &mut cache)?;
                let logits = opt.logits(&hidden)?;
                Ok((Box::new(OptRows { opt, cache }), logits))
            }
            (LanguageModel::T5(t5), PrefixKind::T5(projected)) => {
                let pad = t5.config().pad_token_id;
                let queries = projected.dim(1)?;
                let mut ids = Vec::with_capacity(prompts.len() * longest);
                for prompt in prompts {
                    ids.extend_from_slice(prompt);
                    ids.extend(std::iter::repeat_n(pad, longest - prompt.len()));
                }
                let ids = Tensor::from_vec(ids, (prompts.len(), longest), device)?;
                let prompt_embeds = t5.embed(&ids)?;
                let image_index = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    device,
                )?;
                let prompt_index = Tensor::from_vec(
                    (0..rows.len())
                        .map(|row| (row % prompts.len()) as u32)
                        .collect::<Vec<_>>(),
                    rows.len(),
                    device,
                )?;
                let embeds = Tensor::cat(
                    &[
                        projected.index_select(&image_index, 0)?,
                        prompt_embeds.index_select(&prompt_index, 0)?,
                    ],
                    1,
                )?;
                let real: Vec<Vec<u8>> = (0..rows.len())
                    .map(|row| {
                        let prompt = &prompts[row % prompts.len()];
                        let mut bits = vec![1u8; queries + prompt.len()];
                        bits.resize(queries + longest, 0);
                        bits
                    })
                    .collect();
                let mut decoding = t5.encode(&embeds, &real)?;
                let start = t5.config().decoder_start();
                let logits = decoding.step(vec![start; rows.len()])?;
                Ok((Box::new(decoding), logits))
            }
            _ => Err(ModelError::Input(
                "an image prefix of another language model".into(),
            )),
        }
    }

    /// Decodes every prompt for every image in one batch, greedily or by beam search as
    /// `generation` says: `result[image][prompt]` holds the new tokens, up to and including
    /// the end token. Each image is read once; every prompt continues from that, and rows
    /// leave the batch when their prompt is done.
    pub fn generate(
        &self,
        projected: &Tensor,
        prompts: &[Vec<u32>],
        generation: Generation,
    ) -> Result<Vec<Vec<Decoded>>> {
        self.generate_from(&self.image_prefix(projected)?, prompts, generation)
    }

    /// [`generate`](Self::generate) from images' prefix ([`image_prefix`](
    /// Self::image_prefix)), so that prompts decoded in several batches (captions in one,
    /// questions in another) read each image's query embeddings once.
    pub fn generate_from(
        &self,
        prefix: &ImagePrefix,
        prompts: &[Vec<u32>],
        generation: Generation,
    ) -> Result<Vec<Vec<Decoded>>> {
        let images = prefix.rows();
        let (mut rows, logits) = self.prompt_logits(prefix, prompts)?;
        // Each (image, prompt) row's tokens so far, for the repetition penalty, as the
        // reference's `input_ids` hold them: OPT's the image placeholders and the prompt;
        // Flan-T5's the decoder's, its start token.
        let seen: Vec<Vec<u32>> = match &self.language {
            LanguageModel::Opt(_) => {
                let placeholders = self
                    .config
                    .image_token_index
                    .map(|id| vec![id; self.config.num_query_tokens])
                    .unwrap_or_default();
                (0..images)
                    .flat_map(|_| prompts.iter())
                    .map(|prompt| [placeholders.as_slice(), prompt].concat())
                    .collect()
            }
            LanguageModel::T5(t5) => {
                vec![vec![t5.config().decoder_start()]; images * prompts.len()]
            }
        };
        let answers = decode(
            rows.as_mut(),
            logits,
            &seen,
            &generation,
            self.eos_token_id(),
        )?;
        Ok(answers
            .chunks(prompts.len())
            .map(<[Decoded]>::to_vec)
            .collect())
    }

    /// The next-token logits of one forward over the whole sequence (the image's query
    /// embeddings, then `prompt`), without a cache or padding: what the reference's forward
    /// computes (with Flan-T5, the decoder's first step).
    pub fn full_forward_logits(&self, projected: &Tensor, prompt: &[u32]) -> Result<Tensor> {
        let (n, queries, _) = projected.dims3()?;
        let ids = Tensor::from_vec(
            prompt
                .iter()
                .copied()
                .cycle()
                .take(n * prompt.len())
                .collect::<Vec<_>>(),
            (n, prompt.len()),
            self.device(),
        )?;
        let real = vec![vec![1u8; queries + prompt.len()]; n];
        match &self.language {
            LanguageModel::Opt(opt) => {
                let embeds = Tensor::cat(&[projected, &opt.embed(&ids)?], 1)?;
                let mut cache = KvCache::new(opt.layer_count(), n);
                let hidden = opt.forward(&embeds, &real, &mut cache)?;
                Ok(opt.logits(&hidden)?)
            }
            LanguageModel::T5(t5) => {
                let embeds = Tensor::cat(&[projected, &t5.embed(&ids)?], 1)?;
                let mut decoding = t5.encode(&embeds, &real)?;
                Ok(decoding.step(vec![t5.config().decoder_start(); n])?)
            }
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.projection.weight().device()
    }
}
