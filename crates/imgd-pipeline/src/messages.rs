//! The messages the stages pass each other. The store's types stop at the pipeline's edges: the
//! scheduler turns each claimed image into a [`Work`], and the writer turns each finished
//! image's [`Outcome`] into the store's `ImageOutcome`.

use imgd_core::{Module, ResultRow};
use imgd_store::queue::{ClaimedImage, JobFailure};
use imgd_store::results::ImageOutcome;

/// One job of an image in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's row id.
    pub job_id: i64,
    /// Its module.
    pub module: Module,
    /// For a gated module: what its gate's stored result says, when there is one.
    pub gate_open: Option<bool>,
}

/// An image claimed for this daemon, on its way to the decode threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// The image's row id.
    pub image_id: i64,
    /// Its stored path (see `imgd_core::stored_path`).
    pub path: String,
    /// Its leased jobs, in module order.
    pub jobs: Vec<Job>,
}

impl From<ClaimedImage> for Work {
    fn from(image: ClaimedImage) -> Self {
        Work {
            image_id: image.image_id,
            path: image.path,
            jobs: image
                .jobs
                .into_iter()
                .map(|job| Job {
                    job_id: job.job_id,
                    module: job.module,
                    gate_open: job.gate_open,
                })
                .collect(),
        }
    }
}

/// A job that failed, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The job's row id.
    pub job_id: i64,
    /// What went wrong.
    pub error: String,
    /// Trying again cannot help: the job fails at once.
    pub permanent: bool,
}

/// What became of one image's jobs, gathered by the stages for the writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The image's row id.
    pub image_id: i64,
    /// Its dimensions as decoded (after orientation), when known.
    pub dimensions: Option<(u32, u32)>,
    /// Finished jobs and their results.
    pub done: Vec<(i64, ResultRow)>,
    /// Failed jobs.
    pub failed: Vec<Failure>,
    /// The file is gone: the image is marked missing and its jobs wait for it.
    pub missing: bool,
}

impl Outcome {
    /// The store's form of this outcome, for its commit.
    pub fn to_store(&self) -> ImageOutcome {
        ImageOutcome {
            image_id: self.image_id,
            dimensions: self.dimensions,
            done: self.done.clone(),
            failed: self
                .failed
                .iter()
                .map(|f| JobFailure {
                    job_id: f.job_id,
                    error: f.error.clone(),
                    permanent: f.permanent,
                })
                .collect(),
            missing: self.missing,
        }
    }
}
