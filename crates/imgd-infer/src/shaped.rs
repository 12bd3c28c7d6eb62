//! A model's sessions, one per input shape when [`OrtConfig::fixed_shapes`] is set.
//!
//! ONNX Runtime's CUDA provider sets up its cuDNN convolutions for the input shape of each run
//! and redoes that setup whenever the shape changes: on an H100, PP-OCRv6 rec took 0.2–3 s per
//! run when shapes alternated, 9.6 ms when every session kept one shape (benches/GPU.md). So on
//! the GPU each input shape gets its own session, and callers pad their batches to a few sizes
//! ([`ShapedSessions::padded_batch`]) so that few shapes occur. On the CPU, where a shape change
//! costs nothing, one session serves every shape and nothing is padded.

use std::path::{Path, PathBuf};

use ort::session::Session;

use crate::InferError;
use crate::onnx::{OrtConfig, session};

/// Sessions kept per model by default with [`OrtConfig::fixed_shapes`]; the least recently
/// used one is closed when a new shape needs room.
pub const DEFAULT_SESSIONS_PER_MODEL: usize = 32;

/// One model's sessions: a single one, or one per input shape (see the module docs).
pub struct ShapedSessions {
    model: PathBuf,
    config: OrtConfig,
    /// Least recently used first. The shape is `None` until a session's first run.
    sessions: Vec<(Option<Vec<usize>>, Session)>,
    capacity: usize,
    opened: usize,
}

impl std::fmt::Debug for ShapedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapedSessions")
            .field("model", &self.model)
            .field("fixed_shapes", &self.config.fixed_shapes)
            .field("shapes", &self.shapes())
            .field("opened", &self.opened)
            .finish()
    }
}

impl ShapedSessions {
    /// Opens `model` once (its metadata and first shape come from this session), keeping up to
    /// [`OrtConfig::sessions_per_model`] sessions ([`DEFAULT_SESSIONS_PER_MODEL`] when 0) with
    /// [`OrtConfig::fixed_shapes`].
    pub fn open(model: &Path, config: &OrtConfig) -> Result<Self, InferError> {
        let capacity = match config.sessions_per_model {
            0 => DEFAULT_SESSIONS_PER_MODEL,
            n => n,
        };
        Self::with_capacity(model, config, capacity)
    }

    /// As [`ShapedSessions::open`], keeping up to `capacity` sessions (at least one).
    pub fn with_capacity(
        model: &Path,
        config: &OrtConfig,
        capacity: usize,
    ) -> Result<Self, InferError> {
        let first = session(model, config)?;
        Ok(ShapedSessions {
            model: model.to_path_buf(),
            config: config.clone(),
            sessions: vec![(None, first)],
            capacity: capacity.max(1),
            opened: 1,
        })
    }

    /// Any of the sessions, for the model's metadata, inputs and outputs.
    pub fn any(&self) -> &Session {
        &self.sessions[0].1
    }

    /// The session that runs inputs of `shape`: the one session, or with
    /// [`OrtConfig::fixed_shapes`] the one kept for this shape (opened when new).
    pub fn for_shape(&mut self, shape: &[usize]) -> Result<&mut Session, InferError> {
        if !self.config.fixed_shapes {
            return Ok(&mut self.sessions[0].1);
        }
        let index = match self
            .sessions
            .iter()
            .position(|(kept, _)| kept.as_deref() == Some(shape))
        {
            Some(index) => index,
            None => match self.sessions.iter().position(|(kept, _)| kept.is_none()) {
                Some(unused) => {
                    self.sessions[unused].0 = Some(shape.to_vec());
                    unused
                }
                None => {
                    if self.sessions.len() >= self.capacity {
                        let (evicted, _) = self.sessions.remove(0);
                        tracing::debug!(
                            model = %self.model.display(),
                            shape = ?evicted,
                            "closing the least recently used shape's session"
                        );
                    }
                    let fresh = session(&self.model, &self.config)?;
                    self.opened += 1;
                    tracing::debug!(model = %self.model.display(), ?shape, "session for a new shape");
                    self.sessions.push((Some(shape.to_vec()), fresh));
                    self.sessions.len() - 1
                }
            },
        };
        let entry = self.sessions.remove(index);
        self.sessions.push(entry);
        Ok(&mut self.sessions.last_mut().expect("just pushed").1)
    }

    /// The batch size to run `rows` inputs at, with at most `max` per call: `rows` itself, or
    /// with [`OrtConfig::fixed_shapes`] the next power of two (at most `max`, at least `rows`),
    /// so that batches take few shapes. The caller fills the extra rows (zeros do) and ignores
    /// their outputs.
    pub fn padded_batch(&self, rows: usize, max: usize) -> usize {
        padded_batch(self.config.fixed_shapes, rows, max)
    }

    /// Whether this model keeps one session per shape.
    pub fn fixed_shapes(&self) -> bool {
        self.config.fixed_shapes
    }

    /// The shapes that have a session now, least recently used first.
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        self.sessions
            .iter()
            .filter_map(|(shape, _)| shape.clone())
            .collect()
    }

    /// Sessions opened so far, including closed ones.
    pub fn opened(&self) -> usize {
        self.opened
    }
}

impl Drop for ShapedSessions {
    /// With fixed shapes, says how many sessions the model needed: far more than the shapes it
    /// keeps means shapes outnumber `[models] onnx_sessions_per_model` and sessions were
    /// closed and opened again.
    fn drop(&mut self) {
        if self.config.fixed_shapes {
            tracing::info!(
                model = %self.model.display(),
                opened = self.opened,
                kept = self.sessions.len(),
                capacity = self.capacity,
                "fixed-shape sessions"
            );
        }
    }
}

/// [`ShapedSessions::padded_batch`] for a given setting.
pub fn padded_batch(fixed_shapes: bool, rows: usize, max: usize) -> usize {
    if fixed_shapes {
        rows.next_power_of_two().min(max).max(rows)
    } else {
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pad_to_powers_of_two_only_with_fixed_shapes() {
        assert_eq!(padded_batch(false, 3, 16), 3);
        assert_eq!(padded_batch(true, 3, 16), 4);
        assert_eq!(padded_batch(true, 1, 16), 1);
        assert_eq!(padded_batch(true, 9, 16), 16);
        assert_eq!(padded_batch(true, 11, 12), 12);
        assert_eq!(padded_batch(true, 20, 16), 20);
    }
}
