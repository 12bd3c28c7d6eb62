//! Fault-injection points for the supervision and crash-recovery tests.
//!
//! With the `fault-injection` feature, [`arm`] chooses one point; the stage that passes it
//! then panics (outside any per-image `catch_unwind`) or, for [`Fault::AbortOnPath`], aborts
//! the whole process the way a crashing native decoder would. Without the feature [`arm`]
//! does not exist and every point compiles to nothing.

/// A place where a fault can be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A decode thread panics between images.
    Decode,
    /// The inference thread panics while submitting an image's jobs.
    InferSubmit,
    /// The inference thread panics after a batch ran, while filing its results.
    InferFinish,
    /// The writer thread panics before a commit.
    WriterCommit,
    /// The scheduler panics in its loop.
    Scheduler,
    /// The process aborts when a decode thread starts on a path containing this text.
    AbortOnPath(String),
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `decode`, `infer-submit`, `infer-finish`, `writer-commit`, `scheduler` or
    /// `abort-on:TEXT`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "decode" => Fault::Decode,
            "infer-submit" => Fault::InferSubmit,
            "infer-finish" => Fault::InferFinish,
            "writer-commit" => Fault::WriterCommit,
            "scheduler" => Fault::Scheduler,
            _ => match text.strip_prefix("abort-on:") {
                Some(path) if !path.is_empty() => Fault::AbortOnPath(path.to_string()),
                _ => return Err(format!("unknown fault point {text:?}")),
            },
        })
    }
}

#[cfg(feature = "fault-injection")]
static ARMED: std::sync::OnceLock<Fault> = std::sync::OnceLock::new();

/// Arms `fault` for the rest of the process (the first call wins).
#[cfg(feature = "fault-injection")]
pub fn arm(fault: Fault) {
    let _ = ARMED.set(fault);
}

/// Panics when `point` is armed.
#[inline]
pub(crate) fn point(point: Fault) {
    #[cfg(feature = "fault-injection")]
    if ARMED.get() == Some(&point) {
        panic!("injected fault: {point:?}");
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// Aborts the process when an [`Fault::AbortOnPath`] fault matches `path`.
#[inline]
pub(crate) fn abort_on_path(path: &str) {
    #[cfg(feature = "fault-injection")]
    if let Some(Fault::AbortOnPath(text)) = ARMED.get()
        && path.contains(text.as_str())
    {
        eprintln!("injected fault: aborting on {path}");
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = path;
}
