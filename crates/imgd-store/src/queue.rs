//! The durable job queue.
//!
//! Work is claimed **by image**: a claim hands out images together with all their queued jobs
//! for the modules the worker can run, so one decode serves every module of an image. A claim
//! is a lease (owner + expiry) taken inside one transaction, so two processes claiming from one
//! database never get the same job: on SQLite the transaction holds the write lock
//! (`BEGIN IMMEDIATE`); on PostgreSQL it locks the job rows it picks with
//! `FOR UPDATE SKIP LOCKED`, so workers on many hosts claim side by side without waiting. A job leaves the lease by being acked
//! (see [`crate::results`]), failed ([`Store::fail_jobs`]), released ([`Store::release_jobs`]),
//! taken back from a daemon proven dead ([`Store::reclaim_dead_owners`]) or by its lease
//! expiring; the last two put it back in the queue as a *suspect*.
//!
//! **Suspects.** A daemon that dies (a crash, a kill, the out-of-memory killer) takes down every
//! image it held, and only one of them may be to blame. Each such job comes back with its
//! `lease_expiries` raised, and suspect images are claimed apart: only by a worker holding no
//! other image ([`ClaimRequest::idle`]), most suspect first, in groups that shrink with the
//! count ([`probation_group`]: 64, 16, 4, then one at a time). A group that runs clean is
//! done; one that kills the daemon again is split further, so a file that kills the daemon on
//! every start ends up alone and is failed alone after `max_lease_expiries` deaths, while the
//! images that were merely claimed with it run to completion.

use std::time::Duration;

use imgd_core::Module;

use crate::db::{Db, Dialect};
use crate::{Context, Store, StoreError, now_ms, params};

/// The settings key of the pause flag.
const PAUSED_KEY: &str = "paused";

/// The PostgreSQL channel told whenever jobs enter the queue (an enqueue, a retry, a resume,
/// a release), so that idle workers claim them at once.
const WORK_CHANNEL: &str = "imgd_work";

/// One job handed out by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job's row id.
    pub job_id: i64,
    /// Its module.
    pub module: Module,
    /// For a gated module ([`imgd_core::Gate`]): what the gating module's stored result says,
    /// when it has one (`Some(false)`: the gate is shut). `None` otherwise.
    pub gate_open: Option<bool>,
}

/// An image handed out by a claim, with its leased jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedImage {
    /// The image's row id.
    pub image_id: i64,
    /// Its path.
    pub path: String,
    /// The format registered from its extension.
    pub format: String,
    /// Its size when it was registered.
    pub size: i64,
    /// The leased jobs, one per module.
    pub jobs: Vec<ClaimedJob>,
    /// How many daemons died holding this image (the most of its jobs); above zero it is a
    /// suspect, claimed apart from other images.
    pub lease_expiries: u32,
}

/// A job to fail, with its error text.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// The job's row id.
    pub job_id: i64,
    /// What went wrong, for `imgd status` and `imgd show`.
    pub error: String,
    /// Trying again cannot help (the file is corrupt, unsupported, too large, not a file): the
    /// job fails at once instead of using up its attempts.
    pub permanent: bool,
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Who takes the lease (e.g. `host:pid:nonce`).
    pub owner: &'a str,
    /// The modules this worker can run; jobs of other modules stay queued.
    pub modules: &'a [Module],
    /// At most this many images.
    pub max_images: usize,
    /// How long the lease lasts unless extended.
    pub lease: Duration,
    /// The worker holds no image now. Suspect images are claimed only then, and while any is
    /// queued for these modules nothing else is claimed by a busy worker.
    pub idle: bool,
}

/// How many suspect images are claimed together when the most suspect of them has died with
/// `lease_expiries` daemons: 64, 16, 4, then 1.
pub fn probation_group(lease_expiries: u32) -> usize {
    let shift = 2 * lease_expiries.saturating_sub(1).min(3);
    (64usize >> shift).max(1)
}

/// A lease owner holding jobs, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The owner name (`host:pid:start`).
    pub owner: String,
    /// Jobs it holds.
    pub jobs: i64,
}

/// The SQL list `('metadata','technical')` for a set of modules. Module names are fixed
/// identifiers from [`Module::name`], never user input.
pub(crate) fn module_list_sql(modules: &[Module]) -> String {
    let names: Vec<String> = modules.iter().map(|m| format!("'{}'", m.name())).collect();
    format!("({})", names.join(","))
}

/// What the stored result of `module`'s gate says for image `image_id` (see
/// [`ClaimedJob::gate_open`]).
fn gate_value(
    db: &Db,
    modules: &imgd_core::Registry,
    module: Module,
    image_id: i64,
) -> Result<Option<bool>, StoreError> {
    let Some((after, column)) = modules.gate_of(module) else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {column} FROM {} WHERE image_id = ?1",
        after.result_table()
    );
    Ok(db
        .query_opt(&sql, params![image_id], |r| r.get::<Option<bool>>(0))
        .ctx("reading a gate's result")?
        .flatten())
}

/// What a claim locks on PostgreSQL: the job rows it picks, skipping rows another worker's
/// claim holds, so concurrent claims never wait on each other. SQLite's claim holds the
/// database's write lock instead.
fn claim_lock(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => "FOR UPDATE OF j SKIP LOCKED",
    }
}

impl Store {
    /// Claims up to `max_images` images that have queued jobs for `modules`, highest priority
    /// first, and leases all those jobs to `owner`. Expired leases are returned to the queue
    /// first. Returns nothing while the queue is paused.
    pub fn claim(&mut self, request: &ClaimRequest<'_>) -> Result<Vec<ClaimedImage>, StoreError> {
        if request.modules.is_empty() || request.max_images == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let expires = now + request.lease.as_millis() as i64;
        let modules = module_list_sql(request.modules);
        let max_lease_expiries = self.options.max_lease_expiries;
        let lock = claim_lock(self.db.dialect());
        let tx = self.db.write_tx().ctx("starting a claim")?;
        reclaim_expired(&tx, now, max_lease_expiries)?;
        let paused: Option<String> = tx
            .query_opt(
                "SELECT value FROM settings WHERE key = ?1",
                params![PAUSED_KEY],
                |r| r.get(0),
            )
            .ctx("reading the pause flag")?;
        if paused.as_deref() == Some("1") {
            return Ok(Vec::new());
        }

        // Suspects first, alone; nothing else while any waits.
        let mut image_ids: Vec<i64> = Vec::with_capacity(request.max_images);
        let suspects = queued_suspects(&tx, &modules, lock)?;
        if let Some(&(_, most)) = suspects.first() {
            if !request.idle {
                tx.commit().ctx("committing a claim")?;
                return Ok(Vec::new());
            }
            let group = probation_group(most).min(request.max_images);
            for (id, _) in suspects {
                if !image_ids.contains(&id) {
                    image_ids.push(id);
                    if image_ids.len() == group {
                        break;
                    }
                }
            }
        }
        // Walk queued jobs in claim order and collect distinct images until we have enough.
        // An image has at most one job per module, so that many rows per image always reach
        // `max_images` images when the queue holds them.
        if image_ids.is_empty() {
            let limit = request.max_images * request.modules.len();
            tx.query_each(
                &format!(
                    "SELECT j.image_id FROM jobs j JOIN images i ON i.id = j.image_id
                     WHERE j.state = 'queued' AND j.module IN {modules} AND i.state = 'present'
                     ORDER BY j.priority DESC, j.image_id
                     LIMIT ?1 {lock}"
                ),
                params![limit],
                |row| {
                    let id: i64 = row.get(0)?;
                    if !image_ids.contains(&id) {
                        image_ids.push(id);
                    }
                    Ok(image_ids.len() < request.max_images)
                },
            )
            .ctx("scanning the queue")?;
        }

        let mut claimed = Vec::with_capacity(image_ids.len());
        let lease_sql = format!(
            "UPDATE jobs SET state = 'leased', lease_owner = ?2, lease_expires_ms = ?3,
                             updated_ms = ?4
             WHERE image_id = ?1 AND state = 'queued' AND module IN {modules}
             RETURNING id, module, lease_expiries"
        );
        for image_id in image_ids {
            let (path, format, size) = tx
                .query_row(
                    "SELECT path, format, size FROM images WHERE id = ?1",
                    params![image_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .ctx("reading a claimed image")?;
            let mut jobs = Vec::new();
            let mut lease_expiries = 0u32;
            tx.query_each(
                &lease_sql,
                params![image_id, request.owner, expires, now],
                |row| {
                    let job_id: i64 = row.get(0)?;
                    let module: String = row.get(1)?;
                    lease_expiries = lease_expiries.max(row.get(2)?);
                    // Rows of other modules are never selected: the IN list holds the
                    // requested modules only.
                    if let Some(&module) = request.modules.iter().find(|m| m.name() == module) {
                        jobs.push(ClaimedJob {
                            job_id,
                            module,
                            gate_open: None,
                        });
                    }
                    Ok(true)
                },
            )
            .ctx("leasing jobs")?;
            if jobs.is_empty() {
                // Another worker leased them between the scan and the update.
                continue;
            }
            jobs.sort_by_key(|j| j.module);
            for job in &mut jobs {
                job.gate_open = gate_value(&tx, &self.options.modules, job.module, image_id)?;
            }
            claimed.push(ClaimedImage {
                image_id,
                path,
                format,
                size,
                jobs,
                lease_expiries,
            });
        }
        tx.commit().ctx("committing a claim")?;
        Ok(claimed)
    }

    /// Extends the lease of `owner`'s jobs by `lease` from now. Returns how many jobs it still
    /// held (a job whose lease already expired and was re-claimed is not extended).
    pub fn extend_lease(
        &self,
        owner: &str,
        job_ids: &[i64],
        lease: Duration,
    ) -> Result<usize, StoreError> {
        let expires = now_ms() + lease.as_millis() as i64;
        let tx = self.db.write_tx().ctx("starting a lease extension")?;
        let mut extended = 0;
        for id in job_ids {
            extended += tx
                .execute(
                    "UPDATE jobs SET lease_expires_ms = ?3
                     WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2",
                    params![id, owner, expires],
                )
                .ctx("extending a lease")?;
        }
        tx.commit().ctx("committing a lease extension")?;
        Ok(extended)
    }

    /// Puts `owner`'s leased jobs back in the queue without counting an attempt (graceful
    /// shutdown). Returns how many were released.
    pub fn release_jobs(&self, owner: &str, job_ids: &[i64]) -> Result<usize, StoreError> {
        let tx = self.db.write_tx().ctx("starting a release")?;
        let mut released = 0;
        let now = now_ms();
        for id in job_ids {
            released += tx
                .execute(
                    "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_ms = NULL,
                                     updated_ms = ?3
                     WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2",
                    params![id, owner, now],
                )
                .ctx("releasing a job")?;
        }
        if released > 0 {
            notify_work(&tx)?;
        }
        tx.commit().ctx("committing a release")?;
        Ok(released)
    }

    /// Releases every job `owner` still holds (graceful shutdown).
    pub fn release_all(&self, owner: &str) -> Result<usize, StoreError> {
        let released = self
            .db
            .execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_ms = NULL,
                                 updated_ms = ?2
                 WHERE state = 'leased' AND lease_owner = ?1",
                params![owner, now_ms()],
            )
            .ctx("releasing jobs")?;
        if released > 0 {
            notify_work(&self.db)?;
        }
        Ok(released)
    }

    /// Records failed attempts. A job with attempts left goes back to the queue; one that used
    /// its last attempt becomes `failed`. Either way `last_error` keeps the message.
    pub fn fail_jobs(&self, owner: &str, failures: &[JobFailure]) -> Result<(), StoreError> {
        let tx = self.db.write_tx().ctx("starting to fail jobs")?;
        fail_jobs_in(&tx, owner, failures, self.options.max_attempts)?;
        tx.commit().ctx("committing failed jobs")
    }

    /// The owners holding leased jobs other than `owner`, and how many each holds.
    pub fn lease_holders(&self, except: &str) -> Result<Vec<LeaseHolder>, StoreError> {
        self.db
            .query_map(
                "SELECT lease_owner, COUNT(*) FROM jobs
                 WHERE state = 'leased' AND lease_owner IS NOT NULL AND lease_owner != ?1
                 GROUP BY lease_owner ORDER BY lease_owner",
                params![except],
                |r| {
                    Ok(LeaseHolder {
                        owner: r.get(0)?,
                        jobs: r.get(1)?,
                    })
                },
            )
            .ctx("reading the lease holders")
    }

    /// Takes back at once every lease held by an owner that `is_dead` proves dead (a daemon
    /// of this host that no longer runs), instead of waiting for the leases to expire. Each job
    /// comes back as a suspect: its `lease_expiries` counts the death, and after
    /// `max_lease_expiries` deaths it is failed. `except` (the caller itself) is never asked
    /// about. Returns how many jobs were taken back.
    pub fn reclaim_dead_owners(
        &self,
        except: &str,
        is_dead: impl Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let dead: Vec<String> = self
            .lease_holders(except)?
            .into_iter()
            .map(|holder| holder.owner)
            .filter(|owner| is_dead(owner))
            .collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let tx = self.db.write_tx().ctx("starting a dead-owner reclaim")?;
        let sql = take_back_sql(
            "lease_owner = ?3",
            "'the daemon died ' || (lease_expiries + 1) || ' times while processing this \
             image (the last times with no other image in flight)'",
        );
        let now = now_ms();
        let mut reclaimed = 0;
        for owner in &dead {
            reclaimed += tx
                .execute(&sql, params![now, self.options.max_lease_expiries, owner])
                .ctx("reclaiming a dead owner's leases")?;
        }
        if reclaimed > 0 {
            notify_work(&tx)?;
        }
        tx.commit().ctx("committing a dead-owner reclaim")?;
        Ok(reclaimed)
    }

    /// Returns expired leases to the queue now (claims also do this). Returns how many.
    pub fn reclaim_expired(&self) -> Result<usize, StoreError> {
        let tx = self.db.write_tx().ctx("starting a reclaim")?;
        let n = reclaim_expired(&tx, now_ms(), self.options.max_lease_expiries)?;
        tx.commit().ctx("committing a reclaim")?;
        Ok(n)
    }

    /// Re-queues failed jobs (of one module, or all), resetting their attempts. Returns how many.
    pub fn retry_failed(&self, module: Option<Module>) -> Result<usize, StoreError> {
        let now = now_ms();
        let sql = "UPDATE jobs SET state = 'queued', attempts = 0, lease_expiries = 0,
                                   updated_ms = ?1, queued_ms = ?1
                   WHERE state = 'failed' AND (CAST(?2 AS TEXT) IS NULL OR module = ?2)";
        let requeued = self
            .db
            .execute(sql, params![now, module.map(Module::name)])
            .ctx("re-queuing failed jobs")?;
        if requeued > 0 {
            notify_work(&self.db)?;
        }
        Ok(requeued)
    }

    /// Pauses or resumes the queue for every worker on this database.
    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.set_setting(PAUSED_KEY, if paused { "1" } else { "0" })?;
        if !paused {
            notify_work(&self.db)?;
        }
        Ok(())
    }

    /// Waits until jobs may have entered the queue, or `timeout` passed, or `stop` is set.
    /// On PostgreSQL every enqueue, retry, resume and release notifies the waiting workers
    /// of every host (`LISTEN`/`NOTIFY`), so new work is claimed at once; SQLite has no such
    /// signal and the wait is the whole `timeout` (a poll). Returns whether a notification
    /// came.
    pub fn wait_for_work(
        &self,
        timeout: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, StoreError> {
        if self.db.dialect() == Dialect::Postgres && !self.listening.get() {
            self.db
                .session(&format!("LISTEN {WORK_CHANNEL}"))
                .ctx("listening for new work")?;
            self.listening.set(true);
        }
        let until = std::time::Instant::now() + timeout;
        // Short slices, so that a stop is seen within a fifth of a second.
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if self
                .db
                .wait_for_notification(left.min(Duration::from_millis(200)))
                .ctx("waiting for new work")?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the queue is paused.
    pub fn is_paused(&self) -> Result<bool, StoreError> {
        Ok(self.setting(PAUSED_KEY)?.as_deref() == Some("1"))
    }
}

/// Tells idle workers that jobs entered the queue: on PostgreSQL a `NOTIFY`, delivered when
/// the transaction it runs in commits; nothing on SQLite, whose workers poll.
pub(crate) fn notify_work(db: &Db) -> Result<(), StoreError> {
    if db.dialect() == Dialect::Postgres {
        db.batch(&format!("NOTIFY {WORK_CHANNEL}"))
            .ctx("notifying workers of new work")?;
    }
    Ok(())
}

/// Fails jobs inside an open transaction (shared with the writer's commit).
pub(crate) fn fail_jobs_in(
    db: &Db,
    owner: &str,
    failures: &[JobFailure],
    max_attempts: u32,
) -> Result<usize, StoreError> {
    let now = now_ms();
    let mut failed = 0;
    for failure in failures {
        failed += db
            .execute(
                "UPDATE jobs SET
                     attempts = attempts + 1,
                     state = CASE WHEN ?6 OR attempts + 1 >= ?4 THEN 'failed' ELSE 'queued' END,
                     last_error = ?3, lease_owner = NULL, lease_expires_ms = NULL,
                     updated_ms = ?5
                 WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2",
                params![
                    failure.job_id,
                    owner,
                    failure.error,
                    max_attempts,
                    now,
                    failure.permanent
                ],
            )
            .ctx("failing a job")?;
    }
    Ok(failed)
}

/// Queued suspect jobs for `modules` (SQL list), most suspect first: image id and count.
fn queued_suspects(db: &Db, modules: &str, lock: &str) -> Result<Vec<(i64, u32)>, StoreError> {
    db.query_map(
        &format!(
            "SELECT j.image_id, j.lease_expiries FROM jobs j JOIN images i ON i.id = j.image_id
             WHERE j.state = 'queued' AND j.lease_expiries > 0 AND j.module IN {modules}
                   AND i.state = 'present'
             ORDER BY j.lease_expiries DESC, j.priority DESC, j.image_id
             LIMIT 256 {lock}"
        ),
        params![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ctx("scanning for suspects")
}

/// The statement that takes leased jobs back as suspects: one more death counted and back in
/// the queue, or, at the `max_lease_expiries`-th (`?2`), failed with the error `death` (an SQL
/// expression). `?1` is now; `condition` picks the jobs.
fn take_back_sql(condition: &str, death: &str) -> String {
    format!(
        "UPDATE jobs SET
             lease_expiries = lease_expiries + 1,
             state = CASE WHEN lease_expiries + 1 >= ?2 THEN 'failed' ELSE 'queued' END,
             last_error = CASE WHEN lease_expiries + 1 >= ?2 THEN {death} ELSE last_error END,
             lease_owner = NULL, lease_expires_ms = NULL, updated_ms = ?1
         WHERE state = 'leased' AND {condition}"
    )
}

/// Puts jobs whose lease ran out back in the queue; after too many expiries (a worker that
/// keeps dying on this image) the job fails instead, so one poisonous file cannot stall the
/// queue forever.
fn reclaim_expired(db: &Db, now: i64, max_lease_expiries: u32) -> Result<usize, StoreError> {
    db.execute(
        &take_back_sql(
            "lease_expires_ms < ?1",
            "'the worker stopped while processing this image ' || (lease_expiries + 1) \
             || ' times (lease expired)'",
        ),
        params![now, max_lease_expiries],
    )
    .ctx("reclaiming expired leases")
}
