//! Writing results: one transaction upserts the results of many images, acks their jobs and
//! refreshes the search row of every image whose modules are all finished.
//!
//! A result is written only if its job's ack succeeds (the job is still leased by the writer's
//! owner), so a job whose lease was lost, or that was re-queued because its file changed, never
//! leaves a stale result behind. Results are upserts keyed by image (and model, for
//! embeddings): replaying a job never duplicates a row.

use std::borrow::Cow;

use imgd_core::{Registry, ResultRow, SqlValue, StoreHook};

use crate::db::{Db, Dialect, Value};
use crate::queue::{JobFailure, fail_jobs_in};
use crate::{Context, Store, StoreError, now_ms, params};

/// Everything the pipeline learned about one image in one pass.
#[derive(Debug, Clone, Default)]
pub struct ImageOutcome {
    /// The image's row id.
    pub image_id: i64,
    /// Its dimensions as decoded (after orientation), when known.
    pub dimensions: Option<(u32, u32)>,
    /// Finished jobs and their results.
    pub done: Vec<(i64, ResultRow)>,
    /// Failed jobs.
    pub failed: Vec<JobFailure>,
    /// The file is gone (deleted or renamed since it was registered): the image is marked
    /// missing and its jobs go back to the queue without an attempt, to run if it returns.
    pub missing: bool,
}

/// What one commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSummary {
    /// Jobs acked with their results written.
    pub acked: usize,
    /// Results dropped because their job was no longer leased by this owner.
    pub stale: usize,
    /// Failures recorded.
    pub failed: usize,
    /// Search rows written (images whose modules are all finished).
    pub search_rows: usize,
    /// Images whose rows could not be written: their jobs were failed with the database's
    /// error, and the rest of the commit went on.
    pub rejected_images: usize,
    /// Images marked missing.
    pub missing: usize,
}

/// A module's column value, bound.
fn bound(value: &SqlValue) -> Value<'_> {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(v) => Value::Int(*v),
        SqlValue::Real(v) => Value::Real(*v),
        SqlValue::Text(v) => Value::Text(Cow::Borrowed(v)),
        SqlValue::Blob(v) => Value::Blob(Cow::Borrowed(v)),
    }
}

impl Store {
    /// Writes the outcomes of many images in one transaction: results upserted, their jobs
    /// acked, failures recorded, and the search row of each image whose jobs are all finished
    /// rewritten once.
    pub fn commit_outcomes(
        &self,
        owner: &str,
        outcomes: &[ImageOutcome],
    ) -> Result<CommitSummary, StoreError> {
        let tx = self.db.write_tx().ctx("starting a result commit")?;
        let mut summary = CommitSummary::default();
        let now = now_ms();
        for outcome in outcomes {
            // One savepoint per image: a row that cannot be written fails its own image's jobs
            // and the rest of the transaction commits.
            tx.savepoint("image").ctx("starting an image's savepoint")?;
            let context = WriteContext {
                owner,
                now,
                max_attempts: self.options.max_attempts,
                modules: &self.options.modules,
            };
            match write_outcome(&tx, &context, outcome) {
                Ok(written) => {
                    tx.release("image").ctx("releasing an image's savepoint")?;
                    summary.acked += written.acked;
                    summary.stale += written.stale;
                    summary.failed += written.failed;
                    summary.search_rows += written.search_rows;
                    summary.missing += usize::from(outcome.missing);
                }
                Err(error) if !error.affects_whole_database() => {
                    tx.rollback_to("image").ctx("rolling an image back")?;
                    let message = format!("cannot store the result: {error}");
                    let failures: Vec<JobFailure> = outcome
                        .done
                        .iter()
                        .map(|(job_id, _)| *job_id)
                        .chain(outcome.failed.iter().map(|f| f.job_id))
                        .map(|job_id| JobFailure {
                            job_id,
                            error: message.clone(),
                            permanent: false,
                        })
                        .collect();
                    summary.failed +=
                        fail_jobs_in(&tx, owner, &failures, self.options.max_attempts)?;
                    summary.rejected_images += 1;
                }
                Err(error) => return Err(error),
            }
        }
        tx.commit().ctx("committing results")?;
        Ok(summary)
    }

    /// Rewrites the search row of one image from what the database holds now.
    pub fn refresh_search_row(&self, image_id: i64) -> Result<(), StoreError> {
        let tx = self.db.write_tx().ctx("starting a search refresh")?;
        refresh_search_row(&tx, &self.options.modules, image_id)?;
        tx.commit().ctx("committing a search refresh")
    }
}

/// What one image's part of a commit wrote.
#[derive(Default)]
struct Written {
    acked: usize,
    stale: usize,
    failed: usize,
    search_rows: usize,
}

/// What every image of one commit is written with.
struct WriteContext<'a> {
    owner: &'a str,
    now: i64,
    max_attempts: u32,
    modules: &'a Registry,
}

/// Writes one image's outcome: dimensions, results with their acks, failures, and its search
/// row once none of its jobs is still in flight.
fn write_outcome(
    tx: &Db,
    context: &WriteContext<'_>,
    outcome: &ImageOutcome,
) -> Result<Written, StoreError> {
    let WriteContext {
        owner,
        now,
        max_attempts,
        modules,
    } = *context;
    let mut written = Written::default();
    if outcome.missing {
        tx.execute(
            "UPDATE images SET state = 'missing' WHERE id = ?1",
            params![outcome.image_id],
        )
        .ctx("marking an image missing")?;
        tx.execute(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_ms = NULL,
                             last_error = 'the file is missing', updated_ms = ?3
             WHERE image_id = ?1 AND state = 'leased' AND lease_owner = ?2",
            params![outcome.image_id, owner, now],
        )
        .ctx("requeuing a missing image's jobs")?;
        return Ok(written);
    }
    if let Some((w, h)) = outcome.dimensions {
        tx.execute(
            "UPDATE images SET width = ?2, height = ?3 WHERE id = ?1",
            params![outcome.image_id, w, h],
        )
        .ctx("updating dimensions")?;
    }
    for (job_id, row) in &outcome.done {
        let acked = tx
            .execute(
                "UPDATE jobs SET state = 'done', model_id = ?3, model_version = ?4,
                     last_error = NULL, lease_owner = NULL, lease_expires_ms = NULL,
                     updated_ms = ?5
                 WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2",
                params![job_id, owner, row.model_id, row.model_version, now],
            )
            .ctx("acking a job")?;
        if acked == 0 {
            written.stale += 1;
            continue;
        }
        upsert_result(tx, outcome.image_id, row, now)?;
        match row.module.spec().store_hook {
            Some(StoreHook::FaceRows) => {
                crate::faces::replace_faces(tx, outcome.image_id, row)?;
            }
            None => {}
        }
        written.acked += 1;
    }
    written.failed = fail_jobs_in(tx, owner, &outcome.failed, max_attempts)?;
    let unfinished: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE image_id = ?1 AND state = 'leased'",
            params![outcome.image_id],
            |r| r.get(0),
        )
        .ctx("counting in-flight jobs")?;
    // Once per image and pass: when none of its jobs is still in flight. Jobs queued for a
    // module whose model is not installed do not hold the row back; they refresh it when they
    // run.
    if unfinished == 0 {
        refresh_search_row(tx, modules, outcome.image_id)?;
        written.search_rows += 1;
    }
    Ok(written)
}

/// Upserts one result row into its module's table.
fn upsert_result(tx: &Db, image_id: i64, row: &ResultRow, now: i64) -> Result<(), StoreError> {
    let table = row.module.result_table();
    let mut names = vec![
        "image_id",
        "model_id",
        "model_version",
        "created_ms",
        "data",
    ];
    names.extend(row.columns.iter().map(|(name, _)| *name));
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let conflict = row.module.spec().result_key.columns();
    let updates: Vec<String> = names[1..]
        .iter()
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({conflict}) DO UPDATE SET {}",
        names.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    );
    let data = serde_json::to_string(&row.data)?;
    let mut values: Vec<Value<'_>> =
        params![image_id, row.model_id, row.model_version, now, data].to_vec();
    values.extend(row.columns.iter().map(|(_, v)| bound(v)));
    tx.execute(&sql, &values).ctx("upserting a result")?;
    Ok(())
}

/// Builds the search row of an image from its path and what every registered module adds
/// ([`imgd_core::SearchText`]), and replaces the old one.
pub(crate) fn refresh_search_row(
    tx: &Db,
    modules: &Registry,
    image_id: i64,
) -> Result<(), StoreError> {
    let text = |sql: &str| -> Result<String, StoreError> {
        let parts: Vec<Option<String>> = tx
            .query_map(sql, params![image_id], |row| row.get(0))
            .ctx("reading search text")?;
        let parts: Vec<String> = parts
            .into_iter()
            .flatten()
            .filter(|v| !v.is_empty())
            .collect();
        Ok(parts.join(" "))
    };
    let dialect = tx.dialect();
    let mut columns: Vec<(&str, String)> =
        vec![("path", text("SELECT path FROM images WHERE id = ?1")?)];
    for module in modules.all() {
        for part in module.spec().search_text {
            let found = text(match dialect {
                Dialect::Sqlite => part.sql,
                Dialect::Postgres => part.postgres_sql(),
            })?;
            let words = match part.words {
                Some(words) if !found.is_empty() => words(&found),
                _ => found,
            };
            match columns
                .iter_mut()
                .find(|(column, _)| *column == part.column)
            {
                Some((_, text)) if !words.is_empty() => {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    text.push_str(&words);
                }
                Some(_) => {}
                None => columns.push((part.column, words)),
            }
        }
    }
    // SQLite's FTS5 row is the image's rowid; PostgreSQL's table has an image_id column.
    let key = match dialect {
        Dialect::Sqlite => "rowid",
        Dialect::Postgres => "image_id",
    };
    tx.execute(
        &format!("DELETE FROM search_fts WHERE {key} = ?1"),
        params![image_id],
    )
    .ctx("deleting a search row")?;
    let names: Vec<&str> = columns.iter().map(|(column, _)| *column).collect();
    let placeholders: Vec<String> = (2..=columns.len() + 1).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO search_fts ({key}, {}) VALUES (?1, {})",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut values: Vec<Value<'_>> = vec![Value::Int(image_id)];
    values.extend(
        columns
            .iter()
            .map(|(_, text)| Value::Text(Cow::Borrowed(text))),
    );
    tx.execute(&sql, &values).ctx("writing a search row")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search-text queries run once per finished image: they must stay prepared. A query
    /// whose plan depends on a bound value is re-parsed and re-planned on every call.
    #[test]
    fn search_rows_carry_cloud_text_and_their_queries_are_never_reprepared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("s.db"),
            crate::StoreOptions {
                modules: imgd_registry::registry(),
                ..crate::StoreOptions::default()
            },
        )
        .unwrap();
        let conn = store.connection();
        for id in 1..=3 {
            conn.execute(
                "INSERT INTO images (id, path, size, mtime_ns, format, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, 1, 1, 'jpeg', 0, 0)",
                rusqlite::params![id, format!("/photos/img{id}.jpg")],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO result_cloud (image_id, created_ms, data)
             VALUES (2, 0, '{\"scene\": {\"tags\": [\"lighthouse\", \"harbour\"]}, \"n\": 3}')",
            [],
        )
        .unwrap();
        for id in 1..=3 {
            store.refresh_search_row(id).unwrap();
        }
        let cloud: String = conn
            .query_row("SELECT cloud FROM search_fts WHERE rowid = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(cloud, "lighthouse harbour");
        let stmt = conn
            .prepare_cached(imgd_cloud::CLOUD_SPEC.search_text[0].sql)
            .unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 3);
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }
}
