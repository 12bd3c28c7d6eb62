//! Choosing tokens: greedy decoding and beam search as transformers' `generate` does them
//! (its default `early_stopping=False` heuristic), with the logits processors the BLIP-2
//! recipes use: `min_new_tokens`, `min_length`, `repetition_penalty` and `length_penalty`. Both drive any
//! language model through [`Decoding`]: OPT's rows and Flan-T5's decode the same way.

use candle_core::{DType, Tensor};

/// Rows being decoded together, one sequence each: what greedy decoding and beam search drive.
pub trait Decoding {
    /// Keeps the rows `rows` names, in that order (a row may appear several times: beams
    /// sharing a parent).
    fn select(&mut self, rows: &[usize]) -> candle_core::Result<()>;

    /// Feeds one token per row; their next-token logits, `(rows, vocab)`.
    fn step(&mut self, tokens: Vec<u32>) -> candle_core::Result<Tensor>;
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

/// Decodes every row of `rows` as `generation` says, `logits` the rows' next-token logits,
/// `seen[row]` each row's tokens so far (what the repetition penalty counts): greedily, or by
/// beam search with all rows' beams as one batch. Rows leave the batch when their decode ends.
pub fn decode(
    rows: &mut dyn Decoding,
    logits: Tensor,
    seen: &[Vec<u32>],
    generation: &Generation,
    eos: u32,
) -> candle_core::Result<Vec<Decoded>> {
    if generation.num_beams > 1 {
        beam_search(rows, logits, seen, generation, eos)
    } else {
        Ok(greedy(rows, logits, seen, generation, eos)?
            .into_iter()
            .map(|tokens| Decoded {
                tokens,
                score: None,
            })
            .collect())
    }
}

/// Greedy decoding.
fn greedy(
    rows: &mut dyn Decoding,
    mut logits: Tensor,
    seen: &[Vec<u32>],
    generation: &Generation,
    eos: u32,
) -> candle_core::Result<Vec<Vec<u32>>> {
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
            rows.select(&keep)?;
            active = keep.iter().map(|&slot| active[slot]).collect();
        }
        logits = rows.step(tokens)?;
    }
    Ok(out)
}

/// Beam search: the beams of all rows run as one batch, and a row's beams leave it when its
/// search ends.
fn beam_search(
    rows: &mut dyn Decoding,
    mut logits: Tensor,
    seen: &[Vec<u32>],
    generation: &Generation,
    eos: u32,
) -> candle_core::Result<Vec<Decoded>> {
    let mut searches = vec![BeamSearch::new(generation.num_beams); seen.len()];
    // The prompt each batch row belongs to; a prompt's rows are its running beams in order.
    let mut owner: Vec<usize> = (0..seen.len()).collect();
    loop {
        let mut scores: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        let mut rows_from = 0;
        let mut parents = Vec::new();
        let mut tokens = Vec::new();
        let mut next_owner = Vec::new();
        while rows_from < owner.len() {
            let prompt = owner[rows_from];
            let beams = owner[rows_from..]
                .iter()
                .take_while(|&&o| o == prompt)
                .count();
            let search = &mut searches[prompt];
            for (beam, scores) in scores[rows_from..rows_from + beams].iter_mut().enumerate() {
                log_softmax(scores);
                let tokens_so_far = &search.running[beam].tokens;
                let sequence = [seen[prompt].as_slice(), tokens_so_far].concat();
                generation.process(scores, &sequence, tokens_so_far.len(), eos);
            }
            let continuations = search.step(&scores[rows_from..rows_from + beams], generation, eos);
            if !search.done {
                for continuation in continuations {
                    parents.push(rows_from + continuation.parent);
                    tokens.push(continuation.token);
                    next_owner.push(prompt);
                }
            }
            rows_from += beams;
        }
        if parents.is_empty() {
            break;
        }
        rows.select(&parents)?;
        owner = next_owner;
        logits = rows.step(tokens)?;
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

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generation {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// The end token is forbidden until this many new tokens.
    pub min_new_tokens: usize,
    /// The end token is forbidden while the sequence is shorter than this: with OPT the image
    /// placeholders, the prompt and the answer; with Flan-T5 the decoder's start token and the
    /// answer (what the reference's `min_length` counts).
    pub min_length: usize,
    /// Beams; 1 is greedy decoding.
    pub num_beams: usize,
    /// A finished beam's score is its log-probability ÷ length^`length_penalty` (beam search
    /// only): above 0 favours longer answers, below 0 shorter ones.
    pub length_penalty: f32,
    /// Scores of tokens already in the sequence (the prompt's too) are divided by this when
    /// positive, multiplied when negative; 1 does nothing.
    pub repetition_penalty: f32,
}

impl Generation {
    /// Greedy decoding of at most `max_new_tokens` tokens, nothing else.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Generation {
            max_new_tokens,
            min_new_tokens: 0,
            min_length: 0,
            num_beams: 1,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
        }
    }

    /// Applies `min_new_tokens`, `min_length` and `repetition_penalty` to one row's scores,
    /// `generated` tokens into its answer, `seen` every token of its sequence so far.
    pub fn process(&self, scores: &mut [f32], seen: &[u32], generated: usize, eos: u32) {
        if self.repetition_penalty != 1.0 {
            let mut done = vec![false; scores.len()];
            for &token in seen {
                let t = token as usize;
                if t < scores.len() && !done[t] {
                    done[t] = true;
                    let s = scores[t];
                    scores[t] = if s < 0.0 {
                        s * self.repetition_penalty
                    } else {
                        s / self.repetition_penalty
                    };
                }
            }
        }
        if (generated < self.min_new_tokens || seen.len() < self.min_length)
            && let Some(s) = scores.get_mut(eos as usize)
        {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `log_softmax` of a row, in place.
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = *x - max - log_sum;
    }
}

/// The index of the largest score (the first of equal ones).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// What transformers gives a score that must lose.
const LOSES: f32 = -1.0e9;

/// One running beam.
#[derive(Debug, Clone)]
pub struct Beam {
    /// Its new tokens.
    pub tokens: Vec<u32>,
    /// Its summed log-probability (with `LOSES` added where it already hit a stop).
    pub score: f32,
}

/// A finished hypothesis (or an empty slot).
#[derive(Debug, Clone)]
struct Finished {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// The beam search of one prompt of one image.
#[derive(Debug, Clone)]
pub struct BeamSearch {
    /// The running beams, best first.
    pub running: Vec<Beam>,
    finished: Vec<Finished>,
    improvable: bool,
    /// Whether the search has ended.
    pub done: bool,
}

/// Where a running beam of the next step comes from.
#[derive(Debug, Clone, Copy)]
pub struct Continuation {
    /// The index of the parent beam in the group's rows of this step.
    pub parent: usize,
    /// The token it adds.
    pub token: u32,
}

impl BeamSearch {
    /// A search starting from one row (the prompt).
    pub fn new(num_beams: usize) -> Self {
        BeamSearch {
            running: vec![Beam {
                tokens: Vec::new(),
                score: 0.0,
            }],
            finished: vec![
                Finished {
                    tokens: Vec::new(),
                    score: LOSES,
                    finished: false,
                };
                num_beams
            ],
            improvable: true,
            done: false,
        }
    }

    /// One step: `log_probs[i]` holds the processed log-probabilities of running beam `i`.
    /// Returns the continuations the next step runs (one per new running beam, in order).
    pub fn step(
        &mut self,
        log_probs: &[Vec<f32>],
        settings: &Generation,
        eos: u32,
    ) -> Vec<Continuation> {
        let beams = settings.num_beams;
        let keep = 2 * beams;
        let generated = self.running[0].tokens.len();
        // The top `2 × beams` continuations over every running beam, best first.
        let mut candidates: Vec<(f32, usize, u32)> =
            Vec::with_capacity(log_probs.len() * log_probs[0].len());
        for (parent, row) in log_probs.iter().enumerate() {
            let base = self.running[parent].score;
            for (token, &lp) in row.iter().enumerate() {
                candidates.push((lp + base, parent, token as u32));
            }
        }
        let by_score = |a: &(f32, usize, u32), b: &(f32, usize, u32)| b.0.total_cmp(&a.0);
        if candidates.len() > keep {
            candidates.select_nth_unstable_by(keep - 1, by_score);
            candidates.truncate(keep);
        }
        candidates.sort_by(by_score);
        let last = generated + 1 >= settings.max_new_tokens;
        let hits: Vec<bool> = candidates.iter().map(|c| last || c.2 == eos).collect();

        // Finished hypotheses: the best `beams` candidates that hit a stop compete with the
        // ones kept so far, on their length-penalised score.
        let length = (generated + 1) as f32;
        let mut merged = std::mem::take(&mut self.finished);
        if self.improvable {
            for (i, &(score, parent, token)) in candidates.iter().enumerate() {
                if i < beams && hits[i] {
                    let mut tokens = self.running[parent].tokens.clone();
                    tokens.push(token);
                    merged.push(Finished {
                        tokens,
                        score: score / length.powf(settings.length_penalty),
                        finished: true,
                    });
                }
            }
        }
        merged.sort_by(|a, b| b.score.total_cmp(&a.score));
        merged.truncate(beams);
        self.finished = merged;

        // The next running beams: the best candidates, those that hit a stop pushed last.
        let mut order: Vec<(f32, usize)> = candidates
            .iter()
            .zip(&hits)
            .enumerate()
            .map(|(i, (c, &hit))| (if hit { c.0 + LOSES } else { c.0 }, i))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        order.truncate(beams);
        let mut next = Vec::with_capacity(beams);
        let mut running = Vec::with_capacity(beams);
        for &(score, i) in &order {
            let (_, parent, token) = candidates[i];
            let mut tokens = self.running[parent].tokens.clone();
            tokens.push(token);
            running.push(Beam { tokens, score });
            next.push(Continuation { parent, token });
        }
        self.running = running;

        // Could a running beam still beat the worst finished one? (transformers' heuristic for
        // `early_stopping=False`: the best running score at the current length.)
        let best = self.running[0].score / length.powf(settings.length_penalty);
        let worst = self
            .finished
            .iter()
            .map(|f| f.score)
            .fold(f32::INFINITY, f32::min);
        self.improvable &= self.finished.iter().any(|f| {
            if f.finished {
                best > worst
            } else {
                best > LOSES
            }
        });
        self.done = !self.improvable || hits.iter().all(|&h| h) || last;
        next
    }

    /// The best finished hypothesis: its new tokens (the end token included when it ended on
    /// one) and its length-penalised score.
    pub fn best(&self) -> (Vec<u32>, f32) {
        let best = &self.finished[0];
        (best.tokens.clone(), best.score)
    }
}
