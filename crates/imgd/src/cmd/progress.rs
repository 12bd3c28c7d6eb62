//! `imgd run`'s progress: on a terminal, a bar of the jobs of the modules this daemon runs
//! with the rate and the time left; otherwise a log line every half minute. The log goes
//! through [`log_writer`], which writes around the bar so that a log line never leaves a copy
//! of it on the terminal.

use imgd_store::location::Location;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use imgd_core::Module;
use imgd_store::Store;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::open_store;
use super::status::{RATE_WINDOW, human_duration, now_ms};

/// The bar on show, if any.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Standard error for the log: each line is written with the bar, if one is on show, cleared
/// and redrawn around it.
pub struct LogWriter {
    line: Vec<u8>,
}

/// A [`LogWriter`] (what `tracing_subscriber`'s `with_writer` takes).
pub fn log_writer() -> LogWriter {
    LogWriter { line: Vec::new() }
}

impl LogWriter {
    fn emit(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let line = std::mem::take(&mut self.line);
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(&line)),
            None => std::io::stderr().write_all(&line),
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

/// The progress thread; [`Progress::finish`] ends it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// One reading of the queue: (jobs finished, all jobs) of `runnable`, and a message with the
/// rate and the time left.
fn reading(store: &Store, runnable: &[Module]) -> Result<(u64, u64, String)> {
    let status = store.queue_status(0)?;
    let throughput = store.throughput(&status, RATE_WINDOW, now_ms())?;
    let (mut finished, mut total) = (0, 0);
    for module in runnable {
        if let Some(c) = status.modules.get(module.name()) {
            finished += (c.done + c.failed) as u64;
            total += c.total() as u64;
        }
    }
    let left = throughput
        .eta_seconds
        .map_or_else(|| "-".to_string(), human_duration);
    let message = format!(
        "{:.1} images/s, time left {left}",
        throughput.images_per_second
    );
    Ok((finished, total, message))
}

impl Progress {
    /// Starts showing the progress of the jobs of `runnable` in the database at `db`.
    pub fn start(db: &Location, runnable: Vec<Module>) -> Result<Progress> {
        let store = open_store(db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let terminal = std::io::stderr().is_terminal();
        let thread = std::thread::Builder::new()
            .name("imgd-progress".into())
            .spawn(move || {
                if terminal {
                    show_bar(&store, &runnable, &stopped);
                } else {
                    log_lines(&store, &runnable, &stopped);
                }
            })
            .context("cannot start the progress thread")?;
        Ok(Progress { stop, thread })
    }

    /// Stops the display.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Sleeps `period` in short steps; false once `stop` is set.
fn wait(period: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + period;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !stop.load(Ordering::Relaxed)
}

fn show_bar(store: &Store, runnable: &[Module], stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} jobs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    loop {
        if let Ok((finished, total, message)) = reading(store, runnable) {
            bar.set_length(total);
            bar.set_position(finished);
            bar.set_message(message);
        }
        if !wait(Duration::from_secs(2), stop) {
            break;
        }
    }
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
    bar.finish_and_clear();
}

fn log_lines(store: &Store, runnable: &[Module], stop: &AtomicBool) {
    while wait(Duration::from_secs(30), stop) {
        match reading(store, runnable) {
            Ok((finished, total, message)) => {
                tracing::info!("progress: {finished}/{total} jobs, {message}");
            }
            Err(err) => tracing::debug!("progress: {err:#}"),
        }
    }
}
