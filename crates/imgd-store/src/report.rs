//! Read-only views: queue status, full-text search and everything known about one image.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::db::{Dialect, ValueRef};
use crate::{Context, Store, StoreError, params};

/// Job counts of one module, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Waiting to be claimed.
    pub queued: i64,
    /// Claimed by a worker.
    pub leased: i64,
    /// Finished with a result.
    pub done: i64,
    /// Out of attempts.
    pub failed: i64,
}

impl StateCounts {
    /// All jobs of the module.
    pub fn total(&self) -> i64 {
        self.queued + self.leased + self.done + self.failed
    }
}

/// Image counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImageCounts {
    /// Every registered image.
    pub total: i64,
    /// Present at the last scan.
    pub present: i64,
    /// Gone since an earlier scan.
    pub missing: i64,
}

/// A failure message and how many jobs ended with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    /// The module.
    pub module: String,
    /// The error text.
    pub error: String,
    /// How many failed jobs carry it.
    pub count: i64,
}

/// The state of the queue, as `imgd status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStatus {
    /// Per module, job counts by state (every known module is listed, zeros included).
    pub modules: BTreeMap<String, StateCounts>,
    /// Image counts.
    pub images: ImageCounts,
    /// Whether the queue is paused.
    pub paused: bool,
    /// The most common failure messages.
    pub top_failures: Vec<FailureGroup>,
}

/// What the queue did in the last minutes, and how long what is queued will take at that pace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Throughput {
    /// The seconds the rates are measured over: the window, or less when the first job done in
    /// it is more recent (a run that started within it).
    pub window_seconds: f64,
    /// Images with a job done in the window, per second.
    pub images_per_second: f64,
    /// Per module with jobs done in the window or queued: its rate and time left.
    pub modules: BTreeMap<String, ModuleThroughput>,
    /// The time left for every unfinished (queued or leased) job of a module that is making
    /// progress: the longest of the modules' times (an image's jobs are claimed together).
    /// `None` when nothing is left or nothing was done in the window.
    pub eta_seconds: Option<f64>,
}

/// One module's rate and time left.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModuleThroughput {
    /// Jobs done per second in the window.
    pub jobs_per_second: f64,
    /// Queued and leased jobs over that rate; `None` when none is left or the module did
    /// nothing in the window (its model missing, disabled, or no daemon running).
    pub eta_seconds: Option<f64>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The image's row id.
    pub image_id: i64,
    /// Its path.
    pub path: String,
    /// BM25 relevance (higher is better).
    pub score: f64,
    /// The best-matching text, with matches in `[brackets]`.
    pub snippet: String,
}

/// How to find an image for `imgd show`.
#[derive(Debug, Clone)]
pub enum ImageRef<'a> {
    /// By row id.
    Id(i64),
    /// By absolute path, as this host names it (see `imgd_core::path_map`).
    Path(&'a str),
}

/// The words of a search for PostgreSQL's `plainto_tsquery`: every run of characters that are
/// not letters or digits separates words, as in the indexed text (see `0001_init.pg.sql`), so
/// `img_0042.jpg` finds the file's name and extension; `None` when no word is left.
pub fn tsquery_words(text: &str) -> Option<String> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Turns free text into an FTS5 query that cannot be a syntax error: every word becomes a
/// quoted phrase (quotes doubled), and the phrases are ANDed. Returns `None` for a query with
/// no words.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

impl Store {
    /// Counts jobs per module and state, images per state, and the top failure messages.
    pub fn queue_status(&self, top_failures: usize) -> Result<QueueStatus, StoreError> {
        let mut modules: BTreeMap<String, StateCounts> = self
            .options
            .modules
            .all()
            .iter()
            .map(|m| (m.name().to_string(), StateCounts::default()))
            .collect();
        let rows: Vec<(String, String, i64)> = self
            .db
            .query_map(
                "SELECT module, state, COUNT(*) FROM jobs GROUP BY module, state",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ctx("counting jobs")?;
        for (module, state, count) in rows {
            let counts = modules.entry(module).or_default();
            match state.as_str() {
                "queued" => counts.queued = count,
                "leased" => counts.leased = count,
                "done" => counts.done = count,
                _ => counts.failed = count,
            }
        }
        let images = self
            .db
            .query_row(
                "SELECT COUNT(*), COUNT(CASE WHEN state = 'present' THEN 1 END),
                        COUNT(CASE WHEN state = 'missing' THEN 1 END)
                 FROM images",
                params![],
                |r| {
                    Ok(ImageCounts {
                        total: r.get(0)?,
                        present: r.get(1)?,
                        missing: r.get(2)?,
                    })
                },
            )
            .ctx("counting images")?;
        let failures = self
            .db
            .query_map(
                "SELECT module, coalesce(last_error, '(no message)'), COUNT(*) FROM jobs
                 WHERE state = 'failed' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT ?1",
                params![top_failures],
                |r| {
                    Ok(FailureGroup {
                        module: r.get(0)?,
                        error: r.get(1)?,
                        count: r.get(2)?,
                    })
                },
            )
            .ctx("grouping failures")?;
        Ok(QueueStatus {
            modules,
            images,
            paused: self.is_paused()?,
            top_failures: failures,
        })
    }

    /// The rates of the last `window` (jobs done per module, images) and the time left for
    /// what `status` counts as queued, at `now_ms`.
    pub fn throughput(
        &self,
        status: &QueueStatus,
        window: std::time::Duration,
        now_ms: i64,
    ) -> Result<Throughput, StoreError> {
        let since = now_ms - window.as_millis() as i64;
        let done: Vec<(String, i64, i64)> = self
            .db
            .query_map(
                "SELECT module, COUNT(*), MIN(updated_ms) FROM jobs
                 WHERE state = 'done' AND updated_ms > ?1 GROUP BY module",
                params![since],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ctx("measuring throughput")?;
        let images: i64 = self
            .db
            .query_row(
                "SELECT COUNT(DISTINCT image_id) FROM jobs
                 WHERE state = 'done' AND updated_ms > ?1",
                params![since],
                |r| r.get(0),
            )
            .ctx("measuring throughput")?;
        let oldest = done.iter().map(|(_, _, first)| *first).min();
        // At least a second: a window that just began would give absurd rates.
        let seconds = oldest.map_or(window.as_secs_f64(), |first| {
            ((now_ms - first) as f64 / 1000.0).clamp(1.0, window.as_secs_f64())
        });
        let mut throughput = Throughput {
            window_seconds: seconds,
            images_per_second: images as f64 / seconds,
            ..Throughput::default()
        };
        for (name, counts) in &status.modules {
            let count = done
                .iter()
                .find(|(module, _, _)| module == name)
                .map_or(0, |(_, count, _)| *count);
            // Leased jobs are claimed, not finished: a daemon claims many images at once.
            let left = counts.queued + counts.leased;
            if count == 0 && left == 0 {
                continue;
            }
            let rate = count as f64 / seconds;
            let eta = (left > 0 && rate > 0.0).then(|| left as f64 / rate);
            throughput.modules.insert(
                name.clone(),
                ModuleThroughput {
                    jobs_per_second: rate,
                    eta_seconds: eta,
                },
            );
        }
        throughput.eta_seconds = throughput
            .modules
            .values()
            .filter_map(|m| m.eta_seconds)
            .reduce(f64::max);
        Ok(throughput)
    }

    /// Full-text search over paths, camera, dates and every module's text, best first.
    pub fn search_text(&self, query: &str, limit: usize) -> Result<Vec<SearchHit>, StoreError> {
        let (sql, query) = match self.db.dialect() {
            Dialect::Sqlite => (
                "SELECT i.id, i.path, -bm25(search_fts),
                        snippet(search_fts, -1, '[', ']', '…', 10)
                 FROM search_fts JOIN images i ON i.id = search_fts.rowid
                 WHERE search_fts MATCH ?1 AND i.state = 'present'
                 ORDER BY bm25(search_fts), i.id LIMIT ?2",
                fts_query(query),
            ),
            Dialect::Postgres => (
                "SELECT i.id, i.path, CAST(ts_rank(s.document, q) AS DOUBLE PRECISION),
                        ts_headline('imgd', regexp_replace(
                            coalesce(s.path, '') || ' ' || coalesce(s.camera, '') || ' ' ||
                            coalesce(s.taken, '') || ' ' || coalesce(s.caption, '') || ' ' ||
                            coalesce(s.ocr, '') || ' ' || coalesce(s.labels, '') || ' ' ||
                            coalesce(s.names, '') || ' ' || coalesce(s.cloud, ''),
                            '[^[:alnum:]]+', ' ', 'g'), q,
                            'StartSel=[, StopSel=], MaxWords=10, MinWords=4')
                 FROM search_fts s JOIN images i ON i.id = s.image_id,
                      plainto_tsquery('imgd', ?1) q
                 WHERE s.document @@ q AND i.state = 'present'
                 ORDER BY 3 DESC, i.id LIMIT ?2",
                tsquery_words(query),
            ),
        };
        let Some(query) = query else {
            return Ok(Vec::new());
        };
        self.db
            .query_map(sql, params![query, limit], |r| {
                Ok(SearchHit {
                    image_id: r.get(0)?,
                    path: imgd_core::stored_path::display(&r.get::<String>(1)?),
                    score: r.get(2)?,
                    snippet: r.get(3)?,
                })
            })
            .ctx("searching")
    }

    /// Finds an image's row id.
    pub fn image_id(&self, image: &ImageRef<'_>) -> Result<i64, StoreError> {
        let found: Option<i64> = match image {
            ImageRef::Id(id) => {
                self.db
                    .query_opt("SELECT id FROM images WHERE id = ?1", params![id], |r| {
                        r.get(0)
                    })
            }
            ImageRef::Path(path) => self.db.query_opt(
                "SELECT id FROM images WHERE path = ?1",
                params![imgd_core::path_map::installed().to_stored(path)],
                |r| r.get(0),
            ),
        }
        .ctx("looking up an image")?;
        found.ok_or_else(|| match image {
            ImageRef::Id(id) => StoreError::NoSuchImage(format!("with id {id}")),
            ImageRef::Path(path) => StoreError::NoSuchImage(format!("at {path}")),
        })
    }

    /// Everything known about one image: `image` (the row), `jobs` (per module: state,
    /// attempts, error, model) and one top-level key per module that has a result.
    pub fn show(&self, image: &ImageRef<'_>) -> Result<Value, StoreError> {
        let id = self.image_id(image)?;
        let mut out = Map::new();
        let mut image_row = self.row_json("SELECT * FROM images WHERE id = ?1", id)?;
        for row in &mut image_row {
            if let Some(Value::String(path)) = row.get_mut("path") {
                *path = imgd_core::stored_path::display(path);
            }
        }
        out.insert(
            "image".into(),
            image_row.into_iter().next().unwrap_or(Value::Null),
        );
        let jobs = self.row_json(
            "SELECT module, state, attempts, last_error, model_id, model_version, updated_ms
             FROM jobs WHERE image_id = ?1 ORDER BY module",
            id,
        )?;
        let mut job_map = Map::new();
        for mut job in jobs {
            if let Some(module) = job.as_object_mut().and_then(|o| o.remove("module")) {
                job_map.insert(module.as_str().unwrap_or_default().to_string(), job);
            }
        }
        out.insert("jobs".into(), Value::Object(job_map));
        for module in self.options.modules.all() {
            let rows = self.row_json(
                &format!(
                    "SELECT * FROM {} WHERE image_id = ?1",
                    module.result_table()
                ),
                id,
            )?;
            let mut rows: Vec<Value> = rows
                .into_iter()
                .map(|mut row| {
                    if let Some(obj) = row.as_object_mut() {
                        obj.remove("image_id");
                        if let Some(Value::String(data)) = obj.remove("data") {
                            let parsed: Value =
                                serde_json::from_str(&data).unwrap_or(Value::String(data));
                            obj.insert("data".into(), parsed);
                        }
                    }
                    row
                })
                .collect();
            match rows.len() {
                0 => {}
                1 => {
                    out.insert(module.name().into(), rows.remove(0));
                }
                _ => {
                    out.insert(module.name().into(), Value::Array(rows));
                }
            }
        }
        Ok(Value::Object(out))
    }

    /// Runs a query with one `?1` parameter and returns each row as a JSON object. BLOB columns
    /// are summarised by their length.
    fn row_json(&self, sql: &str, param: i64) -> Result<Vec<Value>, StoreError> {
        self.db
            .query_map(sql, params![param], |row| {
                let mut obj = Map::new();
                for i in 0..row.len() {
                    let value = match row.value(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Int(v) => json!(v),
                        ValueRef::Real(v) => json!(v),
                        ValueRef::Text(t) => Value::String(t.to_string()),
                        ValueRef::Blob(b) => json!({ "bytes": b.len() }),
                    };
                    obj.insert(row.column_name(i)?.to_string(), value);
                }
                Ok(Value::Object(obj))
            })
            .ctx("reading a row")
    }
}

/// One image's values of some integer result columns: (image id, one value per column).
pub type IntegerRow = (i64, Vec<Option<i64>>);

impl Store {
    /// The bytes in `column` of `module`'s result row for image `image_id` (a thumbnail);
    /// `None` when the image has no such row.
    pub fn result_blob(
        &self,
        module: imgd_core::Module,
        image_id: i64,
        column: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!(
            "SELECT {column} FROM {} WHERE image_id = ?1",
            module.result_table()
        );
        self.db
            .query_opt(&sql, params![image_id], |r| r.get(0))
            .ctx("reading a result")
    }

    /// The integer `columns` of `module`'s result rows, for every present image that has one:
    /// (image id, one value per column). Column names come from the module's own code, never
    /// from user input.
    pub fn result_integers(
        &self,
        module: imgd_core::Module,
        columns: &[&str],
    ) -> Result<Vec<IntegerRow>, StoreError> {
        let sql = format!(
            "SELECT r.image_id, {} FROM {} r JOIN images i ON i.id = r.image_id
             WHERE i.state = 'present' ORDER BY r.image_id",
            columns
                .iter()
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            module.result_table()
        );
        self.db
            .query_map(&sql, params![], |r| {
                let values = (0..columns.len())
                    .map(|k| r.get::<Option<i64>>(k + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((r.get(0)?, values))
            })
            .ctx("reading results")
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn fts_queries_quote_every_word() {
        assert_eq!(fts_query("red car").unwrap(), "\"red\" \"car\"");
        assert_eq!(fts_query("a\"b OR").unwrap(), "\"a\"\"b\" \"OR\"");
        assert!(fts_query("   ").is_none());
    }
}
