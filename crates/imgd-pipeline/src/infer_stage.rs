//! Stage 2: the inference thread. It owns every model (through [`ModelRunner`]s), gathers
//! requests across images into per-model micro-batches, and scatters the results back. Images
//! without model jobs pass straight through. It never touches the disk or the database.
//!
//! **Gates.** A gated module ([`imgd_core::Gate`]: OCR after objects' `has_text`) whose image
//! also has a job of the gating module here has its prepared input held until that result
//! arrives: submitted when the gate column is true (or missing, or the gating job failed),
//! else the job is done with the module's skipped row. One claim, one decode, and OCR runs only
//! on images that show text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use imgd_core::Module;

use imgd_core::{ResultRow, SqlValue};

use crate::batcher::CloseReason;
use crate::decode_stage::DecodedImage;
use crate::fault::{self, Fault};
use crate::messages::{Failure, Job};
use crate::runner::{ImageInput, JobKey, ModelRunner, Prepared, RunnerResults};

/// How long the thread spent running models, and how long it existed from its first image.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InferStats {
    pub busy: Duration,
    pub wall: Duration,
}

/// A gated job's prepared input, held until its gate's result.
struct Held {
    key: JobKey,
    module: Module,
    input: Prepared,
    /// The gating module's job in the same image.
    after_job: i64,
}

struct Waiting {
    image: DecodedImage,
    remaining: usize,
    /// Gated jobs waiting for their gate's result.
    held: Vec<Held>,
}

pub(crate) struct InferStage {
    pub runners: Vec<Box<dyn ModelRunner>>,
    /// Hold gated jobs until their gate's result, and skip them when it stays shut.
    pub follow_gates: bool,
    /// Set when a stop runs out of time: drop what is left.
    pub abandon: Arc<AtomicBool>,
}

/// Whether the gating module's row opens the gate of `module` (a row without the column opens
/// it: the gated module then runs).
fn gate_opens(module: Module, row: &ResultRow) -> bool {
    let Some(gate) = &module.spec().gate else {
        return true;
    };
    row.columns
        .iter()
        .find(|(name, _)| *name == gate.column)
        .is_none_or(|(_, value)| *value != SqlValue::Integer(0))
}

impl InferStage {
    /// The inference thread's loop: until the input closes and every batch has drained, or a
    /// stop runs out of time (what is left is dropped: its leases are released).
    pub fn run(
        mut self,
        input: Receiver<DecodedImage>,
        output: Sender<DecodedImage>,
    ) -> InferStats {
        // Busy fraction is measured from the first image on: before it there is no work.
        let mut started: Option<Instant> = None;
        let mut busy = Duration::ZERO;
        let mut waiting: HashMap<i64, Waiting> = HashMap::new();
        let by_module: HashMap<Module, usize> = self
            .runners
            .iter()
            .enumerate()
            .map(|(i, r)| (r.module(), i))
            .collect();
        let mut open = true;
        while (open || !waiting.is_empty()) && !self.abandon.load(Ordering::Relaxed) {
            let deadline = self.runners.iter().filter_map(|r| r.next_deadline()).min();
            let message = if !open {
                Err(RecvTimeoutError::Disconnected)
            } else {
                match deadline {
                    Some(d) => input.recv_timeout(d.saturating_duration_since(Instant::now())),
                    None => input.recv().map_err(|_| RecvTimeoutError::Disconnected),
                }
            };
            match message {
                Ok(image) => {
                    started.get_or_insert_with(Instant::now);
                    self.admit(image, &by_module, &mut waiting, &output);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            for i in 0..self.runners.len() {
                loop {
                    let reason = if open {
                        self.runners[i].ready(Instant::now())
                    } else if self.runners[i].pending() > 0 {
                        Some(CloseReason::Draining)
                    } else {
                        None
                    };
                    let Some(reason) = reason else { break };
                    let t = Instant::now();
                    let results = self.runners[i].run(reason);
                    busy += t.elapsed();
                    fault::point(Fault::InferFinish);
                    self.scatter(results, &by_module, &mut waiting, &output);
                }
            }
            if !open && self.runners.iter().all(|r| r.pending() == 0) && !waiting.is_empty() {
                // Nothing left to run can finish these (a runner lost them): fail them rather
                // than wait forever.
                for (_, mut w) in waiting.drain() {
                    for job in w.image.model_jobs.drain(..) {
                        w.image.outcome.failed.push(Failure {
                            job_id: job.job_id,
                            error: "the model returned no result for this image".into(),
                            permanent: false,
                        });
                    }
                    let _ = output.send(w.image);
                }
            }
        }
        InferStats {
            busy,
            wall: started.map_or(Duration::ZERO, |t| t.elapsed()),
        }
    }

    fn admit(
        &mut self,
        mut image: DecodedImage,
        by_module: &HashMap<Module, usize>,
        waiting: &mut HashMap<i64, Waiting>,
        output: &Sender<DecodedImage>,
    ) {
        fault::point(Fault::InferSubmit);
        let mut remaining = 0;
        let jobs = std::mem::take(&mut image.model_jobs);
        let mut held = Vec::new();
        for job in &jobs {
            let key = JobKey {
                image_id: image.image_id,
                job_id: job.job_id,
            };
            if let Some(after_job) = self.gating_job(job.module, &jobs, by_module)
                && let Some(input) = image.prepared.remove(&job.job_id)
            {
                held.push(Held {
                    key,
                    module: job.module,
                    input,
                    after_job,
                });
                remaining += 1;
                continue;
            }
            let submitted = match (
                image.prepared.remove(&job.job_id),
                by_module.get(&job.module),
            ) {
                (_, None) => Err(format!("no model loaded for the {} module", job.module)),
                (Some(input), Some(&i)) => self.runners[i].submit_prepared(key, input),
                (None, Some(&i)) => {
                    let input = ImageInput {
                        image_id: image.image_id,
                        path: &image.path,
                        tiers: &image.tiers,
                    };
                    self.runners[i].submit(key, &input)
                }
            };
            match submitted {
                Ok(()) => remaining += 1,
                Err(error) => fail(&mut image, job.job_id, error),
            }
        }
        image.model_jobs = jobs;
        // A gating job that failed to go in leaves nothing to wait for: its gated jobs go in
        // now.
        let (released, kept): (Vec<Held>, Vec<Held>) = held
            .into_iter()
            .partition(|h| image.outcome.failed.iter().any(|f| f.job_id == h.after_job));
        for h in released {
            remaining -= 1;
            if self.submit_held(h, &mut image, by_module) {
                remaining += 1;
            }
        }
        if remaining == 0 {
            let _ = output.send(image);
        } else {
            waiting.insert(
                image.image_id,
                Waiting {
                    image,
                    remaining,
                    held: kept,
                },
            );
        }
    }

    /// The job, among `jobs`, whose result `module`'s gate waits for: when gates are followed,
    /// `module` is gated, and both it and its gating module have a runner here.
    fn gating_job(
        &self,
        module: Module,
        jobs: &[Job],
        by_module: &HashMap<Module, usize>,
    ) -> Option<i64> {
        let gate = module.spec().gate.as_ref()?;
        if !self.follow_gates || !by_module.contains_key(&module) {
            return None;
        }
        jobs.iter()
            .find(|job| job.module.name() == gate.after && by_module.contains_key(&job.module))
            .map(|job| job.job_id)
    }

    /// Submits a held input; a failure fails its job. Whether it went in.
    fn submit_held(
        &mut self,
        held: Held,
        image: &mut DecodedImage,
        by_module: &HashMap<Module, usize>,
    ) -> bool {
        let submitted = match by_module.get(&held.module) {
            Some(&i) => self.runners[i].submit_prepared(held.key, held.input),
            None => Err(format!("no model loaded for the {} module", held.module)),
        };
        match submitted {
            Ok(()) => true,
            Err(error) => {
                fail(image, held.key.job_id, error);
                false
            }
        }
    }

    /// Files each result with its image and sends on the images that are complete; a gating
    /// job's result opens or shuts the gates waiting for it (see the module docs).
    fn scatter(
        &mut self,
        results: RunnerResults,
        by_module: &HashMap<Module, usize>,
        waiting: &mut HashMap<i64, Waiting>,
        output: &Sender<DecodedImage>,
    ) {
        for (key, result) in results {
            let Some(w) = waiting.get_mut(&key.image_id) else {
                continue;
            };
            let (opened, still_held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut w.held)
                .into_iter()
                .partition(|h| h.after_job == key.job_id);
            w.held = still_held;
            for h in opened {
                let open = result
                    .as_ref()
                    .map_or(true, |row| gate_opens(h.module, row));
                let skipped = h.module.spec().gate.as_ref().map(|gate| gate.skipped_row);
                match skipped {
                    Some(skipped_row) if !open => {
                        w.image.outcome.done.push((h.key.job_id, skipped_row()));
                        w.remaining -= 1;
                    }
                    _ => {
                        if !self.submit_held(h, &mut w.image, by_module) {
                            w.remaining -= 1;
                        }
                    }
                }
            }
            match result {
                Ok(row) => w.image.outcome.done.push((key.job_id, row)),
                Err(error) => fail(&mut w.image, key.job_id, error),
            }
            w.remaining -= 1;
            if w.remaining == 0
                && let Some(done) = waiting.remove(&key.image_id)
            {
                let _ = output.send(done.image);
            }
        }
    }
}

/// Records a failure of one of the image's jobs.
fn fail(image: &mut DecodedImage, job_id: i64, error: String) {
    image.outcome.failed.push(Failure {
        job_id,
        error,
        permanent: false,
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use imgd_core::{Module, ResultRow, SqlValue};
    use imgd_objects::OBJECTS;
    use imgd_ocr::OCR;

    use super::InferStage;
    use crate::batcher::{BatchStats, CloseReason};
    use crate::decode_stage::DecodedImage;
    use crate::messages::{Job, Outcome};
    use crate::runner::{ImageInput, JobKey, ModelRunner, Prepared, RunnerResults};

    /// Runs whatever it is given at once; the objects one says "text" on even image ids and
    /// fails on image 5, the OCR one records which images it read.
    struct Scripted {
        module: Module,
        queued: Vec<JobKey>,
        read: Arc<Mutex<Vec<i64>>>,
    }

    impl ModelRunner for Scripted {
        fn module(&self) -> Module {
            self.module
        }
        fn model_name(&self) -> &str {
            self.module.name()
        }
        fn submit(&mut self, _: JobKey, _: &ImageInput<'_>) -> Result<(), String> {
            Err("prepared inputs only".into())
        }
        fn ready(&self, _: Instant) -> Option<CloseReason> {
            (!self.queued.is_empty()).then_some(CloseReason::Full)
        }
        fn next_deadline(&self) -> Option<Instant> {
            None
        }
        fn run(&mut self, _: CloseReason) -> RunnerResults {
            self.queued
                .drain(..)
                .map(|key| {
                    let row = |columns| ResultRow {
                        module: self.module,
                        model_id: None,
                        model_version: None,
                        columns,
                        data: serde_json::json!({}),
                        vectors: Vec::new(),
                    };
                    let result = if self.module != OBJECTS {
                        self.read.lock().unwrap().push(key.image_id);
                        Ok(row(vec![]))
                    } else if key.image_id == 5 {
                        Err("objects failed".to_string())
                    } else {
                        Ok(row(vec![(
                            "has_text",
                            SqlValue::Integer(i64::from(key.image_id % 2 == 0)),
                        )]))
                    };
                    (key, result)
                })
                .collect()
        }
        fn pending(&self) -> usize {
            self.queued.len()
        }
        fn set_observer(&mut self, _: Box<dyn FnMut(&BatchStats) + Send>) {}
        fn submit_prepared(&mut self, key: JobKey, _: Prepared) -> Result<(), String> {
            self.queued.push(key);
            Ok(())
        }
    }

    fn image(image_id: i64) -> DecodedImage {
        let jobs = [(image_id * 10, OCR), (image_id * 10 + 1, OBJECTS)];
        DecodedImage {
            image_id,
            path: format!("/p/{image_id}.jpg"),
            outcome: Outcome {
                image_id,
                ..Outcome::default()
            },
            model_jobs: jobs
                .iter()
                .map(|&(job_id, module)| Job {
                    job_id,
                    module,
                    gate_open: None,
                })
                .collect(),
            prepared: jobs
                .iter()
                .map(|&(job_id, _)| (job_id, Prepared::new((), 0)))
                .collect::<HashMap<_, _>>(),
            tiers: Vec::new(),
            jobs: jobs.to_vec(),
            pixels: Default::default(),
        }
    }

    fn run(follow_gates: bool) -> (Vec<DecodedImage>, Vec<i64>) {
        let read = Arc::new(Mutex::new(Vec::new()));
        let runner = |module| {
            Box::new(Scripted {
                module,
                queued: Vec::new(),
                read: Arc::clone(&read),
            }) as Box<dyn ModelRunner>
        };
        let stage = InferStage {
            runners: vec![runner(OCR), runner(OBJECTS)],
            follow_gates,
            abandon: Arc::default(),
        };
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        for id in 1..=6 {
            in_tx.send(image(id)).unwrap();
        }
        drop(in_tx);
        stage.run(in_rx, out_tx);
        let mut images: Vec<DecodedImage> = out_rx.iter().collect();
        images.sort_by_key(|i| i.image_id);
        let mut read = read.lock().unwrap().clone();
        read.sort_unstable();
        (images, read)
    }

    #[test]
    fn ocr_waits_for_objects_in_the_same_pass() {
        let (images, read) = run(true);
        // Text on even images; image 5's objects job failed, so OCR reads it anyway.
        assert_eq!(read, vec![2, 4, 5, 6]);
        for image in &images {
            let ocr = image
                .outcome
                .done
                .iter()
                .find(|(job, _)| *job == image.image_id * 10)
                .map(|(_, row)| row)
                .expect("an OCR row for every image");
            let skipped = ocr.data.get("skipped").is_some();
            assert_eq!(
                skipped,
                !read.contains(&image.image_id),
                "{}",
                image.image_id
            );
        }
        assert_eq!(images[4].outcome.failed.len(), 1, "image 5's objects job");

        // Without the gate OCR reads every image.
        let (_, read) = run(false);
        assert_eq!(read, vec![1, 2, 3, 4, 5, 6]);
    }
}
