//! Batches: what each `imgd enqueue` queued, and how far along it is.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{FailureGroup, StateCounts};
use crate::{Context, Store, StoreError, now_ms, params};

/// One batch and its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchStatus {
    /// Its id.
    pub id: i64,
    /// Whether its scan is still going (jobs are still being queued).
    pub scanning: bool,
    /// How its scan went once it finished (the scanner's report as JSON), when recorded.
    pub scan: Option<serde_json::Value>,
    /// When it was enqueued, milliseconds since the epoch.
    pub created_ms: i64,
    /// The paths it scanned.
    pub roots: Vec<String>,
    /// Images with a job queued by it.
    pub images: i64,
    /// Its jobs by state, per module (jobs queued again by a later batch count there).
    pub modules: BTreeMap<String, StateCounts>,
    /// Its jobs by state, all modules.
    pub total: StateCounts,
    /// Its jobs done per second over the window.
    pub jobs_per_second: f64,
    /// Its queued and leased jobs over that rate; `None` when none is left or nothing was
    /// done in the window.
    pub eta_seconds: Option<f64>,
    /// Its most common failures.
    pub top_failures: Vec<FailureGroup>,
}

impl Store {
    /// Records a new batch of `roots`; returns its id.
    pub fn create_batch(&self, roots: &[String]) -> Result<i64, StoreError> {
        let roots = serde_json::to_string(roots)?;
        self.db
            .query_row(
                "INSERT INTO batches (created_ms, roots) VALUES (?1, ?2) RETURNING id",
                params![now_ms(), roots],
                |r| r.get(0),
            )
            .ctx("recording a batch")
    }

    /// Marks batch `id`'s scan finished, with its `scan` report, and counts the images and
    /// jobs it queued.
    pub fn finish_batch(&self, id: i64, scan: &serde_json::Value) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE batches SET
                     images = (SELECT COUNT(DISTINCT image_id) FROM jobs WHERE batch_id = ?1),
                     jobs = (SELECT COUNT(*) FROM jobs WHERE batch_id = ?1),
                     finished_ms = ?2,
                     scan = ?3
                 WHERE id = ?1",
                params![id, now_ms(), scan.to_string()],
            )
            .ctx("counting a batch")?;
        Ok(())
    }

    /// The ids of the most recent batches, newest first.
    pub fn recent_batches(&self, limit: usize) -> Result<Vec<i64>, StoreError> {
        self.db
            .query_map(
                "SELECT id FROM batches ORDER BY id DESC LIMIT ?1",
                params![limit],
                |r| r.get(0),
            )
            .ctx("listing batches")
    }

    /// Batch `id`'s progress, with its rate over the last `window` at `now_ms`.
    pub fn batch_status(
        &self,
        id: i64,
        window: std::time::Duration,
        now_ms: i64,
    ) -> Result<BatchStatus, StoreError> {
        type Row = (i64, String, i64, Option<i64>, Option<String>);
        let row: Option<Row> = self
            .db
            .query_opt(
                "SELECT created_ms, roots, images, finished_ms, scan FROM batches WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .ctx("reading a batch")?;
        let (created_ms, roots, images, finished_ms, scan) =
            row.ok_or(StoreError::NoSuchBatch(id))?;
        let mut modules: BTreeMap<String, StateCounts> = BTreeMap::new();
        let rows: Vec<(String, String, i64)> = self
            .db
            .query_map(
                "SELECT module, state, COUNT(*) FROM jobs WHERE batch_id = ?1
                 GROUP BY module, state",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ctx("counting a batch's jobs")?;
        let mut total = StateCounts::default();
        for (module, state, count) in rows {
            let counts = modules.entry(module).or_default();
            for c in [counts, &mut total] {
                match state.as_str() {
                    "queued" => c.queued += count,
                    "leased" => c.leased += count,
                    "done" => c.done += count,
                    _ => c.failed += count,
                }
            }
        }
        let since = now_ms - window.as_millis() as i64;
        let (recent, first): (i64, Option<i64>) = self
            .db
            .query_row(
                "SELECT COUNT(*), MIN(updated_ms) FROM jobs
                 WHERE batch_id = ?1 AND state = 'done' AND updated_ms > ?2",
                params![id, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("measuring a batch's rate")?;
        let seconds = first.map_or(window.as_secs_f64(), |first| {
            ((now_ms - first) as f64 / 1000.0).clamp(1.0, window.as_secs_f64())
        });
        let jobs_per_second = recent as f64 / seconds;
        let left = total.queued + total.leased;
        let eta_seconds =
            (left > 0 && jobs_per_second > 0.0).then(|| left as f64 / jobs_per_second);
        let top_failures = self
            .db
            .query_map(
                "SELECT module, coalesce(last_error, '(no message)'), COUNT(*) FROM jobs
                 WHERE batch_id = ?1 AND state = 'failed'
                 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 5",
                params![id],
                |r| {
                    Ok(FailureGroup {
                        module: r.get(0)?,
                        error: r.get(1)?,
                        count: r.get(2)?,
                    })
                },
            )
            .ctx("grouping a batch's failures")?;
        Ok(BatchStatus {
            id,
            scanning: finished_ms.is_none(),
            scan: scan.as_deref().map(serde_json::from_str).transpose()?,
            created_ms,
            roots: serde_json::from_str(&roots)?,
            images,
            modules,
            total,
            jobs_per_second,
            eta_seconds,
            top_failures,
        })
    }
}
