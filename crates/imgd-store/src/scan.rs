//! What `imgd enqueue` needs from the store: the fingerprints already known under a folder,
//! and applying a scan's decisions in one transaction.

use std::collections::HashMap;

use imgd_core::{Module, Registry};

use crate::db::{Db, Dialect};
use crate::{Context, Store, StoreError, now_ms, params};

/// A file's identity as the scanner sees it without reading content: size, modification time
/// and, where the platform has one, the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Size in bytes.
    pub size: i64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number, where the platform has one.
    pub inode: Option<i64>,
}

/// An image row as the scanner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownImage {
    /// Row id.
    pub id: i64,
    /// The stored fingerprint.
    pub fingerprint: Fingerprint,
    /// Whether the file was present at the last scan.
    pub present: bool,
    /// Modules that have a job row for this image (bit mask of [`Module::bit`]).
    pub modules_mask: i64,
    /// Whether a content hash (BLAKE3) is stored.
    pub has_hash: bool,
    /// Whether a SHA-256 is stored.
    pub has_sha256: bool,
}

/// A file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Absolute path.
    pub path: String,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Format from the extension (`jpeg`, `png`, `raw`, ...).
    pub format: String,
    /// BLAKE3 of the content, hex, when hashing was asked for.
    pub content_hash: Option<String>,
    /// SHA-256 of the content, hex, when it was asked for.
    pub sha256: Option<String>,
}

/// One decision of a scan.
#[derive(Debug, Clone)]
pub enum ScanAction {
    /// Register a new file and queue its modules.
    New(FoundFile),
    /// The file at a known path changed: store the new fingerprint and re-queue every module it
    /// had plus the requested ones.
    Changed {
        /// Row id.
        id: i64,
        /// The file as found now.
        file: FoundFile,
        /// Modules that already had jobs.
        modules_mask: i64,
    },
    /// Unchanged, but some requested modules have no job yet: queue those.
    AddModules {
        /// Row id.
        id: i64,
        /// Modules that already had jobs.
        modules_mask: i64,
    },
    /// Unchanged, but `--force`: re-queue the requested modules.
    Requeue {
        /// Row id.
        id: i64,
        /// Modules that already had jobs.
        modules_mask: i64,
    },
    /// A file marked missing is back with the same fingerprint.
    Reappeared {
        /// Row id.
        id: i64,
    },
    /// Store the content hashes computed for an unchanged file.
    SetHash {
        /// Row id.
        id: i64,
        /// BLAKE3, hex.
        hash: String,
        /// SHA-256, hex, when it was computed (a stored one is kept otherwise).
        sha256: Option<String>,
    },
    /// A known file is gone.
    Missing {
        /// Row id.
        id: i64,
    },
}

/// The smallest string greater than every path under `root/`: `root` + `0` (`/` + 1).
fn prefix_bounds(root: &str) -> (String, String) {
    let root = root.trim_end_matches('/');
    (format!("{root}/"), format!("{root}0"))
}

impl Store {
    /// Every image registered under the folder `root` (or the file `root` itself), keyed by
    /// path.
    pub fn known_under(&self, root: &str) -> Result<HashMap<String, KnownImage>, StoreError> {
        let (lo, hi) = prefix_bounds(root);
        let rows = self
            .db
            .query_map(
                "SELECT path, id, size, mtime_ns, inode, state, modules_mask,
                        content_hash IS NOT NULL, sha256 IS NOT NULL
                 FROM images WHERE (path >= ?1 AND path < ?2) OR path = ?3",
                params![lo, hi, root],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        KnownImage {
                            id: r.get(1)?,
                            fingerprint: Fingerprint {
                                size: r.get(2)?,
                                mtime_ns: r.get(3)?,
                                inode: r.get(4)?,
                            },
                            present: r.get::<String>(5)? == "present",
                            modules_mask: r.get(6)?,
                            has_hash: r.get(7)?,
                            has_sha256: r.get(8)?,
                        },
                    ))
                },
            )
            .ctx("reading known images")?;
        Ok(rows.into_iter().collect())
    }

    /// Applies a scan's decisions in one transaction, queuing `modules` at `priority`.
    pub fn apply_scan(
        &self,
        actions: &[ScanAction],
        modules: &[Module],
        priority: i64,
    ) -> Result<(), StoreError> {
        self.apply_scan_in_batch(actions, modules, priority, None)
    }

    /// [`Self::apply_scan`], the jobs it queues belonging to `batch`
    /// ([`Self::create_batch`]).
    pub fn apply_scan_in_batch(
        &self,
        actions: &[ScanAction],
        modules: &[Module],
        priority: i64,
        batch: Option<i64>,
    ) -> Result<(), StoreError> {
        if actions.is_empty() {
            return Ok(());
        }
        let scan = ScanWrite {
            registry: &self.options.modules,
            modules,
            requested: Module::mask_of(modules),
            priority,
            now: now_ms(),
            batch,
        };
        let tx = self.db.write_tx().ctx("starting a scan transaction")?;
        for action in actions {
            scan.apply(&tx, action)?;
        }
        crate::queue::notify_work(&tx)?;
        tx.commit().ctx("committing a scan")
    }

    /// Groups of present images that share a content hash, largest groups first.
    pub fn content_duplicates(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let paths = match self.db.dialect() {
            Dialect::Sqlite => "json_group_array(path)",
            Dialect::Postgres => "json_agg(path)::text",
        };
        let rows: Vec<(String, String)> = self
            .db
            .query_map(
                &format!(
                    "SELECT content_hash, {paths} FROM images
                     WHERE content_hash IS NOT NULL AND state = 'present'
                     GROUP BY content_hash HAVING COUNT(*) > 1
                     ORDER BY COUNT(*) DESC, content_hash LIMIT ?1"
                ),
                params![limit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("finding duplicates")?;
        let mut groups = Vec::new();
        for (hash, paths) in rows {
            let mut paths: Vec<String> = serde_json::from_str(&paths)?;
            paths.sort();
            groups.push((hash, paths));
        }
        Ok(groups)
    }
}

/// Registers an image, or refreshes the one at its path (a file seen again after it went
/// missing keeps its id and its modules).
const INSERT_IMAGE: &str = "INSERT INTO images (path, size, mtime_ns, inode, content_hash,
                                format, modules_mask, first_seen_ms, last_seen_ms, sha256)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
     ON CONFLICT (path) DO UPDATE SET
         size = excluded.size, mtime_ns = excluded.mtime_ns,
         inode = excluded.inode, content_hash = excluded.content_hash,
         sha256 = excluded.sha256,
         format = excluded.format, state = 'present',
         modules_mask = images.modules_mask | excluded.modules_mask,
         last_seen_ms = excluded.last_seen_ms
     RETURNING id";

/// A changed file: new fingerprint, its size unknown until it is decoded again, and the
/// hashes of its new content (NULL when not computed: the old content's would be false).
const UPDATE_CHANGED_IMAGE: &str = "UPDATE images SET size = ?2, mtime_ns = ?3, inode = ?4,
         content_hash = ?5, sha256 = ?9, format = ?6,
         state = 'present', modules_mask = ?7, last_seen_ms = ?8,
         width = NULL, height = NULL
     WHERE id = ?1";

const ADD_TO_MASK: &str = "UPDATE images SET modules_mask = modules_mask | ?2,
         state = 'present', last_seen_ms = ?3
     WHERE id = ?1";

/// Queues a job unless the image already has one for the module.
const INSERT_JOB: &str = "INSERT INTO jobs (image_id, module, priority, queued_ms, updated_ms,
                              batch_id)
     VALUES (?1, ?2, ?3, ?4, ?4, ?5)
     ON CONFLICT (image_id, module) DO NOTHING";

/// Queues a job, or queues the existing one again from scratch, in the current batch.
const REQUEUE_JOB: &str = "INSERT INTO jobs (image_id, module, priority, queued_ms, updated_ms,
                              batch_id)
     VALUES (?1, ?2, ?3, ?4, ?4, ?5)
     ON CONFLICT (image_id, module) DO UPDATE SET
         state = 'queued', attempts = 0, lease_expiries = 0, last_error = NULL,
         lease_owner = NULL, lease_expires_ms = NULL,
         priority = excluded.priority, queued_ms = excluded.queued_ms,
         updated_ms = excluded.updated_ms, batch_id = excluded.batch_id";

const SET_HASH: &str =
    "UPDATE images SET content_hash = ?2, sha256 = coalesce(?3, sha256) WHERE id = ?1";

const SET_STATE: &str = "UPDATE images SET state = ?2, last_seen_ms = ?3 WHERE id = ?1";

/// One scan transaction's settings: what [`Store::apply_scan`] was asked to queue.
struct ScanWrite<'a> {
    registry: &'a Registry,
    modules: &'a [Module],
    requested: i64,
    priority: i64,
    now: i64,
    batch: Option<i64>,
}

impl ScanWrite<'_> {
    /// Writes one scan decision (statements are prepared once per connection and cached).
    fn apply(&self, tx: &Db, action: &ScanAction) -> Result<(), StoreError> {
        let (requested, now) = (self.requested, self.now);
        match action {
            ScanAction::New(file) => {
                let fp = &file.fingerprint;
                let id: i64 = tx
                    .query_row(
                        INSERT_IMAGE,
                        params![
                            file.path,
                            fp.size,
                            fp.mtime_ns,
                            fp.inode,
                            file.content_hash,
                            file.format,
                            requested,
                            now,
                            file.sha256
                        ],
                        |r| r.get(0),
                    )
                    .ctx("registering an image")?;
                self.queue(tx, REQUEUE_JOB, id, self.modules.iter().copied())
            }
            ScanAction::Changed {
                id,
                file,
                modules_mask,
            } => {
                let fp = &file.fingerprint;
                let mask = modules_mask | requested;
                tx.execute(
                    UPDATE_CHANGED_IMAGE,
                    params![
                        id,
                        fp.size,
                        fp.mtime_ns,
                        fp.inode,
                        file.content_hash,
                        file.format,
                        mask,
                        now,
                        file.sha256
                    ],
                )
                .ctx("updating a changed image")?;
                self.queue(tx, REQUEUE_JOB, *id, self.registry.from_mask(mask))
            }
            ScanAction::AddModules { id, modules_mask } => {
                self.add_to_mask(tx, *id)?;
                let added = self.registry.from_mask(requested & !modules_mask);
                self.queue(tx, INSERT_JOB, *id, added)
            }
            ScanAction::Requeue { id, .. } => {
                self.add_to_mask(tx, *id)?;
                self.queue(tx, REQUEUE_JOB, *id, self.modules.iter().copied())
            }
            ScanAction::Reappeared { id } => set_state(tx, *id, "present", now),
            ScanAction::SetHash { id, hash, sha256 } => {
                tx.execute(SET_HASH, params![id, hash, sha256])
                    .ctx("storing a hash")?;
                Ok(())
            }
            ScanAction::Missing { id } => set_state(tx, *id, "missing", now),
        }
    }

    /// Runs `sql` (a job insert) for each of `modules` of image `id`.
    fn queue(
        &self,
        tx: &Db,
        sql: &str,
        id: i64,
        modules: impl Iterator<Item = Module>,
    ) -> Result<(), StoreError> {
        for module in modules {
            tx.execute(
                sql,
                params![id, module.name(), self.priority, self.now, self.batch],
            )
            .ctx("queuing a job")?;
        }
        Ok(())
    }

    /// Adds the requested modules to image `id`'s mask.
    fn add_to_mask(&self, tx: &Db, id: i64) -> Result<(), StoreError> {
        tx.execute(ADD_TO_MASK, params![id, self.requested, self.now])
            .ctx("updating a module mask")?;
        Ok(())
    }
}

/// Marks image `id` present or missing.
fn set_state(tx: &Db, id: i64, state: &str, now: i64) -> Result<(), StoreError> {
    tx.execute(SET_STATE, params![id, state, now])
        .ctx("marking an image present or missing")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefix_bounds;

    #[test]
    fn prefix_bounds_select_exactly_the_folder() {
        let (lo, hi) = prefix_bounds("/a/b/");
        assert_eq!(lo, "/a/b/");
        assert_eq!(hi, "/a/b0");
        for inside in ["/a/b/x.jpg", "/a/b/c/d.png"] {
            assert!(inside >= lo.as_str() && inside < hi.as_str());
        }
        for outside in ["/a/b.jpg", "/a/bc/x.jpg", "/a/a/x.jpg", "/a/b"] {
            assert!(
                !(outside >= lo.as_str() && outside < hi.as_str()),
                "{outside}"
            );
        }
    }
}
