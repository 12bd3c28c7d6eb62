//! Which threads call the model runners: only the inference thread runs them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgd_core::Module;
use imgd_pipeline::batcher::{BatchConfig, BatchStats, CloseReason};
use imgd_pipeline::daemon::{Modules, PipelineConfig, RunMode, run};
use imgd_pipeline::metrics::Metrics;
use imgd_pipeline::runner::{
    ImageInput, JobKey, ModelRunner, Prepared, RunnerResults, SharedPrepare, fake_runner,
};
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::{Store, StoreOptions};

/// A runner that records the name of every thread that calls it, around the fake model.
struct ThreadRecorder {
    inner: Box<dyn ModelRunner>,
    callers: Arc<Mutex<BTreeSet<String>>>,
}

impl ThreadRecorder {
    fn record(&self) {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.callers.lock().unwrap().insert(name);
    }
}

impl ModelRunner for ThreadRecorder {
    fn module(&self) -> Module {
        self.inner.module()
    }
    fn model_name(&self) -> &str {
        self.inner.model_name()
    }
    fn submit(&mut self, key: JobKey, image: &ImageInput<'_>) -> Result<(), String> {
        self.record();
        self.inner.submit(key, image)
    }
    fn ready(&self, now: Instant) -> Option<CloseReason> {
        self.record();
        self.inner.ready(now)
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }
    fn run(&mut self, reason: CloseReason) -> RunnerResults {
        self.record();
        self.inner.run(reason)
    }
    fn pending(&self) -> usize {
        self.inner.pending()
    }
    fn set_observer(&mut self, observer: Box<dyn FnMut(&BatchStats) + Send>) {
        self.inner.set_observer(observer);
    }
    fn preparer(&self) -> Option<SharedPrepare> {
        self.inner.preparer()
    }
    fn submit_prepared(&mut self, key: JobKey, input: Prepared) -> Result<(), String> {
        self.record();
        self.inner.submit_prepared(key, input)
    }
}

fn register_photos(db: &Path) -> usize {
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/photos");
    let mut actions = Vec::new();
    for entry in std::fs::read_dir(photos).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jpg") {
            let size = std::fs::metadata(&path).unwrap().len() as i64;
            actions.push(ScanAction::New(FoundFile {
                path: path.to_str().unwrap().to_string(),
                fingerprint: Fingerprint {
                    size,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            }));
        }
    }
    let store = Store::open(
        db,
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store
        .apply_scan(&actions, &[imgd_modules::METADATA, imgd_clip::EMBEDDING], 0)
        .unwrap();
    actions.len()
}

/// Regression: the documented invariant "only the inference thread runs models" was proven
/// by no test. Every call that queues, runs or polls a model comes from `imgd-infer`, with
/// two decode threads preparing the inputs beside it.
#[test]
fn runners_are_called_only_on_the_inference_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("imgd.db");
    let images = register_photos(&db);
    assert!(images >= 5, "fixture photos missing");
    let callers = Arc::new(Mutex::new(BTreeSet::new()));
    let runner = ThreadRecorder {
        inner: fake_runner(
            imgd_clip::EMBEDDING,
            BatchConfig::default(),
            Duration::from_millis(1),
            Duration::ZERO,
        ),
        callers: Arc::clone(&callers),
    };
    let config = PipelineConfig {
        decode_threads: 2,
        ..PipelineConfig::default()
    };
    let summary = run(
        &imgd_store::location::Location::Sqlite(db.clone()),
        &config,
        Modules {
            registry: imgd_registry::registry(),
            analyses: imgd_registry::cpu_analyses(),
            runners: vec![Box::new(runner)],
        },
        Arc::new(Metrics::new(&[])),
        Arc::new(AtomicBool::new(false)),
        RunMode::Once,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.jobs_done as usize, 2 * images);
    let callers = callers.lock().unwrap().clone();
    assert_eq!(callers, BTreeSet::from(["imgd-infer".to_string()]));
}
