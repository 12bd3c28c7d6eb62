//! Stage 2: the inference thread. It owns every model (through [`ModelRunner`]s), gathers
//! requests across images into per-model micro-batches, and scatters the results back. Images
//! without model jobs pass straight through. It never touches the disk or the database.
//!
//! **The OCR gate.** When an image has both an objects and an OCR job (and `ocr_needs_text`),
//! its prepared OCR input is held until the objects result arrives: submitted when objects saw
//! a text phrase (or failed), else the OCR job is done with an empty, skipped row. One claim,
//! one decode, and OCR runs only on images that show text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use imgd_core::Module;
use imgd_store::queue::JobFailure;

use imgd_core::{ResultRow, SqlValue};

use crate::batcher::CloseReason;
use crate::decode_stage::{DecodedImage, skipped_ocr_row};
use crate::fault::{self, Fault};
use crate::runner::{ImageInput, JobKey, ModelRunner, Prepared, RunnerResults};

/// How long the thread spent running models, and how long it existed from its first image.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InferStats {
    pub busy: Duration,
    pub wall: Duration,
}

struct Waiting {
    image: DecodedImage,
    remaining: usize,
    /// The OCR job and its prepared input, held until the objects job's result (the OCR gate).
    held_ocr: Option<(JobKey, Prepared)>,
    /// The objects job the held OCR input waits for.
    objects_job: Option<i64>,
}

pub(crate) struct InferStage {
    pub runners: Vec<Box<dyn ModelRunner>>,
    /// Run OCR only where the objects job of the same image found text.
    pub ocr_needs_text: bool,
    /// Set when a stop runs out of time: drop what is left.
    pub abandon: Arc<AtomicBool>,
}

/// Whether an objects row says the image shows text (a row without the column counts as yes:
/// OCR then runs).
fn shows_text(row: &ResultRow) -> bool {
    row.columns
        .iter()
        .find(|(name, _)| *name == "has_text")
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
                        w.image.outcome.failed.push(JobFailure {
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
        let objects_job = jobs
            .iter()
            .find(|job| job.module == Module::Objects && by_module.contains_key(&job.module))
            .map(|job| job.job_id);
        let gate = self.ocr_needs_text && objects_job.is_some();
        let mut held_ocr = None;
        for job in &jobs {
            let key = JobKey {
                image_id: image.image_id,
                job_id: job.job_id,
            };
            if gate
                && job.module == Module::Ocr
                && by_module.contains_key(&Module::Ocr)
                && let Some(input) = image.prepared.remove(&job.job_id)
            {
                held_ocr = Some((key, input));
                remaining += 1;
                continue;
            }
            if let Some(input) = image.prepared.remove(&job.job_id) {
                let submitted = match by_module.get(&job.module) {
                    Some(&i) => self.runners[i].submit_prepared(key, input),
                    None => Err(format!("no model loaded for the {} module", job.module)),
                };
                match submitted {
                    Ok(()) => remaining += 1,
                    Err(error) => image.outcome.failed.push(JobFailure {
                        job_id: job.job_id,
                        error,
                        permanent: false,
                    }),
                }
                continue;
            }
            let input = ImageInput {
                image_id: image.image_id,
                path: &image.path,
                tiers: &image.tiers,
            };
            let submitted = match by_module.get(&job.module) {
                Some(&i) => self.runners[i].submit(key, &input),
                None => Err(format!("no model loaded for the {} module", job.module)),
            };
            match submitted {
                Ok(()) => remaining += 1,
                Err(error) => image.outcome.failed.push(JobFailure {
                    job_id: job.job_id,
                    error,
                    permanent: false,
                }),
            }
        }
        image.model_jobs = jobs;
        // An objects job that failed to go in leaves nothing to wait for: OCR goes in now.
        let objects_failed =
            objects_job.is_some_and(|id| image.outcome.failed.iter().any(|f| f.job_id == id));
        if objects_failed && let Some((key, input)) = held_ocr.take() {
            remaining -= 1;
            let submitted = match by_module.get(&Module::Ocr) {
                Some(&i) => self.runners[i].submit_prepared(key, input),
                None => Err("no model loaded for the ocr module".to_string()),
            };
            match submitted {
                Ok(()) => remaining += 1,
                Err(error) => image.outcome.failed.push(JobFailure {
                    job_id: key.job_id,
                    error,
                    permanent: false,
                }),
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
                    objects_job: held_ocr.as_ref().and(objects_job),
                    held_ocr,
                },
            );
        }
    }

    /// Files each result with its image and sends on the images that are complete; an
    /// objects result releases the image's held OCR job (see the module docs).
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
            if w.objects_job == Some(key.job_id)
                && let Some((ocr_key, input)) = w.held_ocr.take()
            {
                let text = result.as_ref().map_or(true, shows_text);
                let submitted = match (text, by_module.get(&Module::Ocr)) {
                    (false, _) => {
                        w.image
                            .outcome
                            .done
                            .push((ocr_key.job_id, skipped_ocr_row()));
                        w.remaining -= 1;
                        Ok(())
                    }
                    (true, Some(&i)) => self.runners[i].submit_prepared(ocr_key, input),
                    (true, None) => Err("no model loaded for the ocr module".to_string()),
                };
                if let Err(error) = submitted {
                    w.image.outcome.failed.push(JobFailure {
                        job_id: ocr_key.job_id,
                        error,
                        permanent: false,
                    });
                    w.remaining -= 1;
                }
            }
            match result {
                Ok(row) => w.image.outcome.done.push((key.job_id, row)),
                Err(error) => w.image.outcome.failed.push(JobFailure {
                    job_id: key.job_id,
                    error,
                    permanent: false,
                }),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use imgd_core::{Module, ResultRow, SqlValue};
    use imgd_store::queue::ClaimedJob;
    use imgd_store::results::ImageOutcome;

    use super::InferStage;
    use crate::batcher::{BatchStats, CloseReason};
    use crate::decode_stage::DecodedImage;
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
                    };
                    let result = match self.module {
                        Module::Objects if key.image_id == 5 => Err("objects failed".to_string()),
                        Module::Objects => Ok(row(vec![(
                            "has_text",
                            SqlValue::Integer(i64::from(key.image_id % 2 == 0)),
                        )])),
                        _ => {
                            self.read.lock().unwrap().push(key.image_id);
                            Ok(row(vec![]))
                        }
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
        let jobs = [
            (image_id * 10, Module::Ocr),
            (image_id * 10 + 1, Module::Objects),
        ];
        DecodedImage {
            image_id,
            path: format!("/p/{image_id}.jpg"),
            outcome: ImageOutcome {
                image_id,
                ..ImageOutcome::default()
            },
            model_jobs: jobs
                .iter()
                .map(|&(job_id, module)| ClaimedJob { job_id, module })
                .collect(),
            prepared: jobs
                .iter()
                .map(|&(job_id, _)| (job_id, Box::new(()) as Prepared))
                .collect::<HashMap<_, _>>(),
            tiers: Vec::new(),
            jobs: jobs.to_vec(),
            pixels: Default::default(),
        }
    }

    fn run(ocr_needs_text: bool) -> (Vec<DecodedImage>, Vec<i64>) {
        let read = Arc::new(Mutex::new(Vec::new()));
        let runner = |module| {
            Box::new(Scripted {
                module,
                queued: Vec::new(),
                read: Arc::clone(&read),
            }) as Box<dyn ModelRunner>
        };
        let stage = InferStage {
            runners: vec![runner(Module::Ocr), runner(Module::Objects)],
            ocr_needs_text,
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
