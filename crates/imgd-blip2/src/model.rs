//! The whole model: load a checkpoint folder, encode images once, decode many prompts per
//! image from the cached query embeddings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use imgd_candle::ModelError;

use crate::Result;
use crate::config::{Blip2Config, TextConfig};
pub use crate::generation::Generation;
use crate::generation::{BeamSearch, argmax, log_softmax};
use crate::opt::{KvCache, Opt};
use crate::qformer::QFormer;
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
    /// The query states projected into the language model, `(n, queries, text width)`.
    pub projected: Tensor,
}

/// One decoded prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The new tokens, the end token included when the decode ended on it.
    pub tokens: Vec<u32>,
    /// Beam search's score of the hypothesis (its log-probability over its length to the
    /// `length_penalty`); `None` for greedy decoding.
    pub score: Option<f32>,
}

/// BLIP-2 with OPT.
pub struct Blip2 {
    vision: VisionTower,
    qformer: QFormer,
    projection: Linear,
    opt: Opt,
    config: Blip2Config,
    dtype: DType,
}

impl Blip2 {
    /// Loads the checkpoint in `dir` (`config.json` and memory-mapped safetensors, one file
    /// or shards), in f32 (what the CPU runs).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_as(dir, device, DType::F32)
    }

    /// [`Blip2::load`] in `dtype` (f16 or bf16 halve a GPU's memory and work; candle's CPU
    /// multiply has no bf16 kernel); the Q-Former and its query tokens stay in f32, as the
    /// reference keeps them.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = Blip2Config::load(dir)?;
        let files = weight_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; model files are not modified while
        // imgd runs (they are replaced by rename, which keeps the mapped inode intact).
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Self::new(vb, config)
    }

    /// Builds it from `vb` (a checkpoint's root), in `vb`'s dtype but for the Q-Former (f32).
    pub fn new(vb: VarBuilder<'_>, config: Blip2Config) -> Result<Self> {
        let TextConfig::Opt(text) = &config.text_config else {
            return Err(ModelError::Config(
                "only OPT language models are implemented so far".into(),
            ));
        };
        let vision = VisionTower::new(vb.pp("vision_model"), &config.vision_config)?;
        let qformer = QFormer::new(
            vb.clone().set_dtype(DType::F32),
            &config.qformer_config,
            config.num_query_tokens,
        )?;
        let projection = candle_nn::linear(
            config.qformer_config.hidden_size,
            text.hidden_size,
            vb.pp("language_projection"),
        )?;
        let opt = Opt::new(vb.pp("language_model"), text)?;
        Ok(Blip2 {
            vision,
            qformer,
            projection,
            opt,
            dtype: vb.dtype(),
            config,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &Blip2Config {
        &self.config
    }

    /// The language model.
    pub fn language_model(&self) -> &Opt {
        &self.opt
    }

    /// Runs the vision tower, the Q-Former (in f32) and the projection on `(n, 3, S, S)`
    /// pixels.
    pub fn encode(&self, pixels: &Tensor) -> Result<Encoded> {
        let vision = self.vision.forward(&pixels.to_dtype(self.dtype)?)?;
        let qformer = self.qformer.forward(&vision.to_dtype(DType::F32)?)?;
        let projected = self.projection.forward(&qformer.to_dtype(self.dtype)?)?;
        Ok(Encoded {
            vision,
            qformer,
            projected,
        })
    }

    /// The language model's cache after each image's query embeddings (`projected`,
    /// `(n, queries, width)`): the image comes first in every prompt, so this is computed once
    /// per image and every prompt continues from it.
    pub fn image_prefix(&self, projected: &Tensor) -> Result<KvCache> {
        let (n, queries, _) = projected.dims3()?;
        let mut cache = KvCache::new(self.opt.layer_count(), n);
        self.opt
            .forward(projected, &vec![vec![1; queries]; n], &mut cache)?;
        Ok(cache)
    }

    /// Feeds every (image, prompt) pair's prompt after its image's cached prefix, the prompts
    /// left-padded to one length: the cache of the `images × prompts` rows (image-major) and
    /// the next-token logits of each, `(rows, vocab)`.
    pub fn prompt_logits(
        &self,
        prefix: &KvCache,
        prompts: &[Vec<u32>],
    ) -> Result<(KvCache, Tensor)> {
        if prompts.iter().any(Vec::is_empty) {
            return Err(ModelError::Input(
                "a prompt has no tokens (BOS first)".into(),
            ));
        }
        let images = prefix.rows();
        let rows: Vec<usize> = (0..images)
            .flat_map(|image| std::iter::repeat_n(image, prompts.len()))
            .collect();
        let mut cache = prefix.select(&rows)?;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pad = self.opt.config().pad_token_id;
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
        let device = self.device();
        let ids = Tensor::from_vec(ids, (rows.len(), longest), device)?;
        let hidden = self
            .opt
            .forward(&self.opt.embed(&ids)?, &real, &mut cache)?;
        let logits = self.opt.logits(&hidden)?;
        Ok((cache, logits))
    }

    /// Decodes every prompt for every image in one batch, greedily or by beam search as
    /// `generation` says: `result[image][prompt]` holds the new tokens, up to and including
    /// the end token. Each image's query embeddings go through the language model once; every
    /// prompt continues from that cache, and rows leave the batch when their prompt is done.
    pub fn generate(
        &self,
        projected: &Tensor,
        prompts: &[Vec<u32>],
        generation: Generation,
    ) -> Result<Vec<Vec<Decoded>>> {
        self.generate_from(&self.image_prefix(projected)?, prompts, generation)
    }

    /// [`generate`](Self::generate) from images' language-model cache ([`image_prefix`](
    /// Self::image_prefix)), so that prompts decoded in several batches (captions in one,
    /// questions in another) read each image's query embeddings once.
    pub fn generate_from(
        &self,
        prefix: &KvCache,
        prompts: &[Vec<u32>],
        generation: Generation,
    ) -> Result<Vec<Vec<Decoded>>> {
        let images = prefix.rows();
        let (cache, logits) = self.prompt_logits(prefix, prompts)?;
        // Each (image, prompt) row's tokens so far, for the repetition penalty: the image
        // placeholders, then the prompt, as the reference's `input_ids` hold them.
        let placeholders = self
            .config
            .image_token_index
            .map(|id| vec![id; self.config.num_query_tokens])
            .unwrap_or_default();
        let seen: Vec<Vec<u32>> = (0..images)
            .flat_map(|_| prompts.iter())
            .map(|prompt| [placeholders.as_slice(), prompt].concat())
            .collect();
        let answers = if generation.num_beams > 1 {
            self.beam_search(cache, logits, &seen, &generation)?
        } else {
            self.greedy(cache, logits, &seen, &generation)?
                .into_iter()
                .map(|tokens| Decoded {
                    tokens,
                    score: None,
                })
                .collect()
        };
        Ok(answers
            .chunks(prompts.len())
            .map(<[Decoded]>::to_vec)
            .collect())
    }

    /// Greedy decoding of rows whose prompts are in `cache`, `logits` their next-token logits.
    fn greedy(
        &self,
        mut cache: KvCache,
        mut logits: Tensor,
        seen: &[Vec<u32>],
        generation: &Generation,
    ) -> Result<Vec<Vec<u32>>> {
        let eos = self.opt.config().eos_token_id;
        let mut out = vec![Vec::new(); seen.len()];
        let mut active: Vec<usize> = (0..out.len()).collect();
        for step in 0..generation.max_new_tokens {
            let mut scores: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
            let mut keep = Vec::with_capacity(active.len());
            let mut tokens = Vec::with_capacity(active.len());
            for (slot, (&row, scores)) in active.iter().zip(scores.iter_mut()).enumerate() {
                let sequence = [seen[row].as_slice(), &out[row]].concat();
                generation.process(scores, &sequence, out[row].len(), eos);
                let token = argmax(scores);
                out[row].push(token);
                if token != eos {
                    keep.push(slot);
                    tokens.push(token);
                }
            }
            if keep.is_empty() || step + 1 == generation.max_new_tokens {
                break;
            }
            if keep.len() < active.len() {
                cache = cache.select(&keep)?;
                active = keep.iter().map(|&slot| active[slot]).collect();
            }
            logits = self.step(&mut cache, tokens)?;
        }
        Ok(out)
    }

    /// Beam search of rows whose prompts are in `cache`, `logits` their next-token logits: the
    /// beams of all rows run as one batch, and a row's beams leave it when its search ends.
    fn beam_search(
        &self,
        mut cache: KvCache,
        mut logits: Tensor,
        seen: &[Vec<u32>],
        generation: &Generation,
    ) -> Result<Vec<Decoded>> {
        let eos = self.opt.config().eos_token_id;
        let mut searches = vec![BeamSearch::new(generation.num_beams); seen.len()];
        // The prompt each cache row belongs to; a prompt's rows are its running beams in order.
        let mut owner: Vec<usize> = (0..seen.len()).collect();
        loop {
            let mut scores: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
            let mut rows_from = 0;
            let mut parents = Vec::new();
            let mut tokens = Vec::new();
            let mut next_owner = Vec::new();
            while rows_from < owner.len() {
                let prompt = owner[rows_from];
                let rows = owner[rows_from..]
                    .iter()
                    .take_while(|&&o| o == prompt)
                    .count();
                let search = &mut searches[prompt];
                for (beam, scores) in scores[rows_from..rows_from + rows].iter_mut().enumerate() {
                    log_softmax(scores);
                    let tokens_so_far = &search.running[beam].tokens;
                    let sequence = [seen[prompt].as_slice(), tokens_so_far].concat();
                    generation.process(scores, &sequence, tokens_so_far.len(), eos);
                }
                let continuations =
                    search.step(&scores[rows_from..rows_from + rows], generation, eos);
                if !search.done {
                    for continuation in continuations {
                        parents.push(rows_from + continuation.parent);
                        tokens.push(continuation.token);
                        next_owner.push(prompt);
                    }
                }
                rows_from += rows;
            }
            if parents.is_empty() {
                break;
            }
            cache = cache.select(&parents)?;
            owner = next_owner;
            logits = self.step(&mut cache, tokens)?;
        }
        Ok(searches
            .iter()
            .map(|search| {
                let (tokens, score) = search.best();
                Decoded {
                    tokens,
                    score: Some(score),
                }
            })
            .collect())
    }

    /// Feeds one token per cache row; their next-token logits.
    fn step(&self, cache: &mut KvCache, tokens: Vec<u32>) -> Result<Tensor> {
        let rows = tokens.len();
        let ids = Tensor::from_vec(tokens, (rows, 1), self.device())?;
        let hidden = self
            .opt
            .forward(&self.opt.embed(&ids)?, &vec![vec![1u8]; rows], cache)?;
        Ok(self.opt.logits(&hidden)?)
    }

    /// The next-token logits of one forward over the whole sequence (the image's query
    /// embeddings, then `prompt`), without a cache: what the reference's forward computes.
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
        let embeds = Tensor::cat(&[projected, &self.opt.embed(&ids)?], 1)?;
        let mut cache = KvCache::new(self.opt.layer_count(), n);
        let real = vec![vec![1u8; queries + prompt.len()]; n];
        let hidden = self.opt.forward(&embeds, &real, &mut cache)?;
        Ok(self.opt.logits(&hidden)?)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.projection.weight().device()
    }
}
