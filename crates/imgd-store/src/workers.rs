//! The daemons that drain the queue: each records itself, beats, and records how it ended, so
//! that `imgd status` lists who works on the library, how fast, and who went silent.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::db::Dialect;
use crate::{Context, Store, StoreError, params};

/// A worker with no heartbeat for this long is listed as silent (it beats every 10 s).
pub const SILENT_AFTER_MS: i64 = 60_000;

/// The second key of a worker's PostgreSQL session lock (the first is its owner name's hash),
/// so that imgd's locks never meet another application's.
const LOCK_SPACE: i64 = 0x696d_6764; // "imgd"

/// Ended workers are forgotten after this long.
const FORGET_AFTER_MS: i64 = 7 * 86_400_000;

/// One daemon, as `imgd status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// Its lease owner name.
    pub owner: String,
    /// Its host.
    pub host: String,
    /// Its process id on that host.
    pub pid: i64,
    /// When it started, milliseconds since the epoch.
    pub started_ms: i64,
    /// Its last heartbeat.
    pub heartbeat_ms: i64,
    /// Images it finished.
    pub images: i64,
    /// Images per second over its last minute, at its last heartbeat.
    pub images_per_second: f64,
    /// `running`, `silent` (no heartbeat for a minute: hung, or dead on another host),
    /// `stopped` or `died`.
    pub state: &'static str,
    /// When it ended.
    pub ended_ms: Option<i64>,
}

impl Store {
    /// Records the worker `owner` (of `host`, process `pid`) as running from `now_ms`, and
    /// forgets workers that ended a week ago.
    pub fn register_worker(
        &self,
        owner: &str,
        host: &str,
        pid: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO workers (owner, host, pid, started_ms, heartbeat_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (owner) DO UPDATE SET heartbeat_ms = ?4, ended_ms = NULL,
                     ended = NULL",
                params![owner, host, pid, now_ms],
            )
            .ctx("recording a worker")?;
        self.db
            .execute(
                "DELETE FROM workers WHERE ended_ms < ?1",
                params![now_ms - FORGET_AFTER_MS],
            )
            .ctx("forgetting old workers")?;
        Ok(())
    }

    /// Holds, for as long as this connection lives, a PostgreSQL session lock named after
    /// `owner`: the proof, to workers on other hosts, that it runs ([`Store::dead_elsewhere`]).
    /// The lock is shared, so that several connections of one worker can each hold it; the
    /// worker counts as dead once none does. A connection lost and made again takes it again.
    /// Nothing on SQLite, whose workers share one host and prove they run by their processes.
    pub fn hold_worker_lock(&self, owner: &str) -> Result<(), StoreError> {
        if self.db.dialect() == Dialect::Postgres {
            self.db
                .session(&format!(
                    "SELECT pg_advisory_lock_shared(hashtextextended('{}', {LOCK_SPACE}))",
                    owner.replace('\'', "''")
                ))
                .ctx("taking the worker's lock")?;
        }
        Ok(())
    }

    /// Workers of any host that no longer run, other than `except`: those recorded as running
    /// or holding leases whose session lock ([`Store::hold_worker_lock`]) is free, because
    /// the connection that held it is gone (the process died, or its host did). PostgreSQL
    /// frees such a lock the moment it notices the connection closed. Always empty on SQLite.
    pub fn dead_elsewhere(&self, except: &str) -> Result<Vec<String>, StoreError> {
        if self.db.dialect() != Dialect::Postgres {
            return Ok(Vec::new());
        }
        let mut owners: BTreeSet<String> = self
            .lease_holders(except)?
            .into_iter()
            .map(|holder| holder.owner)
            .collect();
        let running: Vec<String> = self
            .db
            .query_map(
                "SELECT owner FROM workers WHERE ended_ms IS NULL AND owner != ?1",
                params![except],
                |r| r.get(0),
            )
            .ctx("listing running workers")?;
        owners.extend(running);
        let mut dead = Vec::new();
        for owner in owners {
            let free: bool = self
                .db
                .query_row(
                    &format!("SELECT pg_try_advisory_lock(hashtextextended(?1, {LOCK_SPACE}))"),
                    params![owner],
                    |r| r.get(0),
                )
                .ctx("testing a worker's lock")?;
            if free {
                self.db
                    .query_row(
                        &format!("SELECT pg_advisory_unlock(hashtextextended(?1, {LOCK_SPACE}))"),
                        params![owner],
                        |r| r.get::<bool>(0),
                    )
                    .ctx("releasing a worker's lock")?;
                dead.push(owner);
            }
        }
        Ok(dead)
    }

    /// A heartbeat of `owner`: the images it finished so far and its recent rate. A worker
    /// that beats runs, even if another found it dead while its connection was cut.
    pub fn worker_heartbeat(
        &self,
        owner: &str,
        images: u64,
        images_per_second: f64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE workers SET heartbeat_ms = ?2, images = ?3, images_per_second = ?4,
                                    ended_ms = NULL, ended = NULL
                 WHERE owner = ?1",
                params![owner, now_ms, images as i64, images_per_second],
            )
            .ctx("recording a heartbeat")?;
        Ok(())
    }

    /// Records that `owner` ended: `died` when another daemon found it dead, else `stopped`.
    pub fn worker_ended(&self, owner: &str, died: bool, now_ms: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE workers SET ended_ms = ?2, ended = ?3, images_per_second = 0
                 WHERE owner = ?1 AND ended_ms IS NULL",
                params![owner, now_ms, if died { "died" } else { "stopped" }],
            )
            .ctx("recording a worker's end")?;
        Ok(())
    }

    /// Records every running worker of `host` that `is_dead` says no longer runs as died.
    pub fn bury_dead_workers(
        &self,
        host: &str,
        is_dead: impl Fn(&str) -> bool,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let running: Vec<String> = self
            .db
            .query_map(
                "SELECT owner FROM workers WHERE host = ?1 AND ended_ms IS NULL",
                params![host],
                |r| r.get(0),
            )
            .ctx("listing running workers")?;
        let mut buried = 0;
        for owner in running.iter().filter(|o| is_dead(o)) {
            self.worker_ended(owner, true, now_ms)?;
            buried += 1;
        }
        Ok(buried)
    }

    /// The workers, running ones first, then the most recently ended; at most `limit`.
    pub fn workers(&self, now_ms: i64, limit: usize) -> Result<Vec<WorkerStatus>, StoreError> {
        self.db
            .query_map(
                "SELECT owner, host, pid, started_ms, heartbeat_ms, images, images_per_second,
                    ended_ms, ended
             FROM workers
             ORDER BY ended_ms IS NOT NULL, coalesce(ended_ms, heartbeat_ms) DESC, owner
             LIMIT ?1",
                params![limit],
                |r| {
                    let heartbeat_ms: i64 = r.get(4)?;
                    let ended: Option<String> = r.get(8)?;
                    let state = match ended.as_deref() {
                        Some("died") => "died",
                        Some(_) => "stopped",
                        None if now_ms - heartbeat_ms > SILENT_AFTER_MS => "silent",
                        None => "running",
                    };
                    Ok(WorkerStatus {
                        owner: r.get(0)?,
                        host: r.get(1)?,
                        pid: r.get(2)?,
                        started_ms: r.get(3)?,
                        heartbeat_ms,
                        images: r.get(5)?,
                        images_per_second: r.get(6)?,
                        state,
                        ended_ms: r.get(7)?,
                    })
                },
            )
            .ctx("listing workers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn workers_beat_end_and_go_silent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db"), StoreOptions::default()).unwrap();
        store.register_worker("a:1:s1-b", "a", 1, 1_000).unwrap();
        store.register_worker("a:2:s2-b", "a", 2, 1_000).unwrap();
        store.register_worker("b:7:s7-c", "b", 7, 1_000).unwrap();
        store.worker_heartbeat("a:1:s1-b", 40, 2.5, 11_000).unwrap();
        store.worker_heartbeat("b:7:s7-c", 5, 0.5, 11_000).unwrap();
        let states = |now| {
            store
                .workers(now, 10)
                .unwrap()
                .into_iter()
                .map(|w| (w.owner, w.state))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(12_000),
            [
                ("a:1:s1-b".to_string(), "running"),
                ("b:7:s7-c".to_string(), "running"),
                ("a:2:s2-b".to_string(), "running"),
            ]
        );
        // Process 2 of host a is gone; host b's are never judged from here.
        let buried = store
            .bury_dead_workers("a", |owner| owner == "a:2:s2-b", 20_000)
            .unwrap();
        assert_eq!(buried, 1);
        store.worker_ended("a:1:s1-b", false, 30_000).unwrap();
        let listed = store.workers(80_000, 10).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|w| (w.owner.as_str(), w.state))
                .collect::<Vec<_>>(),
            [
                ("b:7:s7-c", "silent"),
                ("a:1:s1-b", "stopped"),
                ("a:2:s2-b", "died")
            ]
        );
        assert_eq!(listed[1].images, 40);
        assert_eq!(listed[1].images_per_second, 0.0);
        // A week later the ended ones are forgotten when a new worker starts.
        store
            .register_worker("a:3:s3-b", "a", 3, 30_000 + FORGET_AFTER_MS + 1)
            .unwrap();
        assert_eq!(store.workers(0, 10).unwrap().len(), 2);
    }
}
