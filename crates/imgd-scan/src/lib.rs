//! The scanner behind `imgd enqueue`.
//!
//! It walks folders in parallel, keeps the files whose extension is an image format
//! (case-insensitive; file content is never read unless hashing is asked for), fingerprints
//! each by size + modification time + inode, compares with what the database knows, and turns
//! the differences into queue updates:
//!
//! - a new file is registered and its modules queued;
//! - a changed fingerprint re-queues every module of the file;
//! - an unchanged file is left alone: re-scanning an unchanged tree reads no content, writes
//!   nothing and queues nothing;
//! - a known file no longer found under a scanned folder is marked missing.
//!
//! Symlink loops, unreadable folders and files that vanish mid-scan are reported and counted,
//! never fatal.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use imgd_core::Module;
use imgd_store::scan::{Fingerprint, FoundFile, KnownImage, ScanAction};
use imgd_store::{Store, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Image formats by lower-case extension.
const EXTENSIONS: &[(&str, &str)] = &[
    ("jpg", "jpeg"),
    ("jpeg", "jpeg"),
    ("jpe", "jpeg"),
    ("png", "png"),
    ("tif", "tiff"),
    ("tiff", "tiff"),
    ("webp", "webp"),
    ("gif", "gif"),
    ("bmp", "bmp"),
    ("heic", "heif"),
    ("heif", "heif"),
    ("avif", "avif"),
    ("dng", "raw"),
    ("cr2", "raw"),
    ("cr3", "raw"),
    ("nef", "raw"),
    ("nrw", "raw"),
    ("arw", "raw"),
    ("srf", "raw"),
    ("sr2", "raw"),
    ("orf", "raw"),
    ("rw2", "raw"),
    ("raf", "raw"),
    ("pef", "raw"),
    ("srw", "raw"),
    ("x3f", "raw"),
    ("3fr", "raw"),
    ("iiq", "raw"),
    ("erf", "raw"),
    ("mrw", "raw"),
];

/// How many scan decisions go into one database transaction.
const ACTIONS_PER_TRANSACTION: usize = 20_000;

/// The format registered for a file name, from its extension (case-insensitive), or `None` when
/// the file is not an image imgd reads.
pub fn format_for_path(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?;
    EXTENSIONS
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, format)| *format)
}

/// What to scan and queue.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Modules to queue for new and changed files.
    pub modules: Vec<Module>,
    /// Queue priority (higher first).
    pub priority: i64,
    /// Content hashes to compute for new and changed files (and for known files without
    /// them); `None`: read no content.
    pub hash: Option<HashAlgorithm>,
    /// Re-queue the modules of unchanged files too.
    pub force: bool,
    /// The batch the queued jobs belong to (`Store::create_batch`).
    pub batch: Option<i64>,
    /// Walker threads.
    pub threads: usize,
    /// Show progress on stderr.
    pub progress: bool,
}

/// A problem met while scanning (never fatal).
#[derive(Debug, Clone, Serialize)]
pub struct ScanProblem {
    /// The path concerned, when known.
    pub path: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// What a scan found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    /// Files registered for the first time.
    pub new: u64,
    /// Known files whose fingerprint changed; their modules are re-queued.
    pub changed: u64,
    /// Known files with the same fingerprint.
    pub unchanged: u64,
    /// Known files no longer found; marked missing.
    pub missing: u64,
    /// Files that are not images (by extension).
    pub skipped: u64,
    /// Problems: unreadable folders, symlink loops, vanished files.
    pub errors: u64,
    /// The first problems, for the user.
    pub problems: Vec<ScanProblem>,
    /// Groups of paths with identical content (with `--hash`).
    pub duplicates: Vec<Vec<String>>,
}

/// Errors that stop a scan.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A path given on the command line does not exist or cannot be read.
    #[error("cannot scan {path}: {source}")]
    Root {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A root's name holds a character imgd reserves to store non-UTF-8 bytes (see
    /// [`imgd_core::stored_path`]).
    #[error("cannot scan {0}: {1}")]
    UnstorablePath(PathBuf, imgd_core::stored_path::ReservedCharacter),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many problems are kept with their messages.
const MAX_PROBLEMS_KEPT: usize = 50;

#[derive(Default)]
struct Collected {
    files: Vec<FoundFile>,
    problems: Vec<ScanProblem>,
    errors: u64,
    skipped: u64,
}

impl Collected {
    fn problem(&mut self, path: Option<String>, message: String) {
        self.errors += 1;
        if self.problems.len() < MAX_PROBLEMS_KEPT {
            self.problems.push(ScanProblem { path, message });
        }
    }
}

fn fingerprint(meta: &std::fs::Metadata) -> Fingerprint {
    Fingerprint {
        size: meta.len() as i64,
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        inode: Some(meta.ino() as i64),
    }
}

fn spinner(enabled: bool, message: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos} files ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A walker thread's own buffer, merged into the shared result when the thread's visitor is
/// dropped (and whenever it grows large), so threads rarely contend on the lock.
struct ThreadBuffer<'a> {
    local: Collected,
    shared: &'a Mutex<Collected>,
}

impl ThreadBuffer<'_> {
    fn flush(&mut self) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.files.append(&mut self.local.files);
        shared.skipped += std::mem::take(&mut self.local.skipped);
        shared.errors += std::mem::take(&mut self.local.errors);
        for p in self.local.problems.drain(..) {
            if shared.problems.len() < MAX_PROBLEMS_KEPT {
                shared.problems.push(p);
            }
        }
    }

    fn visit(
        &mut self,
        entry: Result<ignore::DirEntry, ignore::Error>,
        seen: &AtomicU64,
        bar: &ProgressBar,
    ) {
        let local = &mut self.local;
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                let path = match &err {
                    ignore::Error::WithPath { path, .. } => Some(path.display().to_string()),
                    _ => None,
                };
                local.problem(path, err.to_string());
                return;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            return;
        }
        let path = entry.path();
        let Some(format) = format_for_path(path) else {
            local.skipped += 1;
            return;
        };
        let path_str = match imgd_core::stored_path::encode(path) {
            Ok(stored) => stored,
            Err(err) => {
                local.problem(Some(path.display().to_string()), err.to_string());
                return;
            }
        };
        let path_str = path_str.as_str();
        match entry.metadata() {
            Err(err) => local.problem(Some(path_str.to_string()), err.to_string()),
            Ok(meta) => {
                local.files.push(FoundFile {
                    path: path_str.to_string(),
                    fingerprint: fingerprint(&meta),
                    format: format.to_string(),
                    content_hash: None,
                    sha256: None,
                });
                let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(512) {
                    bar.set_position(n);
                }
            }
        }
        if local.files.len() >= 4096 {
            self.flush();
        }
    }
}

impl Drop for ThreadBuffer<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Walks `root` (a folder or a single file) in parallel and collects image files.
fn walk(root: &Path, options: &ScanOptions, bar: &ProgressBar) -> Collected {
    let collected = Mutex::new(Collected::default());
    let seen = AtomicU64::new(0);
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .hidden(false)
        .follow_links(true)
        .threads(options.threads.max(1))
        .build_parallel();
    walker.run(|| {
        let mut buffer = ThreadBuffer {
            local: Collected::default(),
            shared: &collected,
        };
        let seen = &seen;
        Box::new(move |entry| {
            buffer.visit(entry, seen, bar);
            ignore::WalkState::Continue
        })
    });
    collected.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Which content hashes `imgd enqueue --hash` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// BLAKE3 (several GB/s): tells files apart and finds identical ones.
    Blake3,
    /// SHA-256 for chain-of-custody records, and BLAKE3 with it from the same read.
    Sha256,
}

/// A file's content hashes, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHashes {
    /// BLAKE3.
    pub blake3: String,
    /// SHA-256, when asked for.
    pub sha256: Option<String>,
}

/// BLAKE3 of a file's content, hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    hash_file_with(path, HashAlgorithm::Blake3).map(|hashes| hashes.blake3)
}

/// The hashes `algorithm` asks for of a file's content, from one read.
pub fn hash_file_with(path: &Path, algorithm: HashAlgorithm) -> std::io::Result<ContentHashes> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut blake3 = blake3::Hasher::new();
    let mut sha256 = (algorithm == HashAlgorithm::Sha256).then(Sha256::new);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        blake3.update(&buffer[..n]);
        if let Some(sha256) = &mut sha256 {
            sha256.update(&buffer[..n]);
        }
    }
    Ok(ContentHashes {
        blake3: blake3.finalize().to_hex().to_string(),
        sha256: sha256.map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect()),
    })
}

/// Hashes the given files in parallel; returns (index, hashes or error).
fn hash_all(
    paths: &[&str],
    algorithm: HashAlgorithm,
    threads: usize,
    bar: &ProgressBar,
) -> Vec<(usize, std::io::Result<ContentHashes>)> {
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::with_capacity(paths.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(path) = paths.get(i) else { break };
                    let hash = hash_file_with(&imgd_core::stored_path::decode(path), algorithm);
                    bar.inc(1);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, hash));
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Scans `roots`, applies the differences to the store and reports what it found.
pub fn scan(
    store: &Store,
    roots: &[PathBuf],
    options: &ScanOptions,
) -> Result<ScanReport, ScanError> {
    let mut report = ScanReport::default();
    for root in roots {
        let root = std::fs::canonicalize(root).map_err(|source| ScanError::Root {
            path: root.clone(),
            source,
        })?;
        let root_str = imgd_core::stored_path::encode(&root)
            .map_err(|e| ScanError::UnstorablePath(root.clone(), e))?;
        scan_root(store, &root, &root_str, options, &mut report)?;
    }
    if options.hash.is_some() {
        report.duplicates = store
            .content_duplicates(100)?
            .into_iter()
            .map(|(_, paths)| paths)
            .collect();
    }
    Ok(report)
}

fn scan_root(
    store: &Store,
    root: &Path,
    root_str: &str,
    options: &ScanOptions,
    report: &mut ScanReport,
) -> Result<(), ScanError> {
    let bar = spinner(options.progress, "scanning");
    let known = store.known_under(root_str)?;
    let mut collected = walk(root, options, &bar);
    bar.finish_and_clear();
    report.skipped += collected.skipped;
    report.errors += collected.errors;
    report.problems.append(&mut collected.problems);
    report.problems.truncate(MAX_PROBLEMS_KEPT);

    let requested = Module::mask_of(&options.modules);
    let mut remaining: HashMap<&str, &KnownImage> =
        known.iter().map(|(p, k)| (p.as_str(), k)).collect();
    // Decide for each file; remember which ones need a hash.
    let mut decisions: Vec<(FoundFile, Option<&KnownImage>)> = Vec::new();
    for file in collected.files.drain(..) {
        let previous = remaining.remove(file.path.as_str());
        decisions.push((file, previous));
    }

    if let Some(algorithm) = options.hash {
        let sha256 = algorithm == HashAlgorithm::Sha256;
        let to_hash: Vec<usize> = decisions
            .iter()
            .enumerate()
            .filter(|(_, (f, k))| match k {
                None => true,
                Some(k) => {
                    k.fingerprint != f.fingerprint || !k.has_hash || (sha256 && !k.has_sha256)
                }
            })
            .map(|(i, _)| i)
            .collect();
        let paths: Vec<&str> = to_hash
            .iter()
            .map(|&i| decisions[i].0.path.as_str())
            .collect();
        let bar = if options.progress && !paths.is_empty() {
            let bar = ProgressBar::new(paths.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("hashing {bar:30} {pos}/{len} ({per_sec}, {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let hashes = hash_all(&paths, algorithm, options.threads, &bar);
        bar.finish_and_clear();
        let mut vanished = Vec::new();
        for (j, hash) in hashes {
            let i = to_hash[j];
            match hash {
                Ok(hashes) => {
                    decisions[i].0.content_hash = Some(hashes.blake3);
                    decisions[i].0.sha256 = hashes.sha256;
                }
                Err(err) => {
                    let path = decisions[i].0.path.clone();
                    vanished.push(i);
                    report.errors += 1;
                    if report.problems.len() < MAX_PROBLEMS_KEPT {
                        report.problems.push(ScanProblem {
                            path: Some(path),
                            message: format!("cannot read for hashing: {err}"),
                        });
                    }
                }
            }
        }
        // A file that could not be read is left as it was: a vanished file is not registered
        // and a known one is not marked missing until a later scan stops finding it.
        vanished.sort_unstable();
        for i in vanished.into_iter().rev() {
            decisions.swap_remove(i);
        }
    }

    let mut actions = Vec::new();
    for (file, previous) in decisions {
        match previous {
            None => {
                report.new += 1;
                actions.push(ScanAction::New(file));
            }
            Some(known) if known.fingerprint != file.fingerprint => {
                report.changed += 1;
                actions.push(ScanAction::Changed {
                    id: known.id,
                    file,
                    modules_mask: known.modules_mask,
                });
            }
            Some(known) => {
                report.unchanged += 1;
                if options.force {
                    actions.push(ScanAction::Requeue {
                        id: known.id,
                        modules_mask: known.modules_mask,
                    });
                } else if requested & !known.modules_mask != 0 {
                    actions.push(ScanAction::AddModules {
                        id: known.id,
                        modules_mask: known.modules_mask,
                    });
                } else if !known.present {
                    actions.push(ScanAction::Reappeared { id: known.id });
                }
                // Hashed only because a hash was missing.
                if let Some(hash) = file.content_hash {
                    actions.push(ScanAction::SetHash {
                        id: known.id,
                        hash,
                        sha256: file.sha256,
                    });
                }
            }
        }
    }
    for known in remaining.values().filter(|k| k.present) {
        report.missing += 1;
        actions.push(ScanAction::Missing { id: known.id });
    }
    for chunk in actions.chunks(ACTIONS_PER_TRANSACTION) {
        store.apply_scan_in_batch(chunk, &options.modules, options.priority, options.batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions_case_insensitively() {
        assert_eq!(format_for_path(Path::new("/a/IMG_1.JPG")), Some("jpeg"));
        assert_eq!(format_for_path(Path::new("/a/b.Cr3")), Some("raw"));
        assert_eq!(format_for_path(Path::new("/a/b.heic")), Some("heif"));
        assert_eq!(format_for_path(Path::new("/a/notes.txt")), None);
        assert_eq!(format_for_path(Path::new("/a/jpg")), None);
    }
}
