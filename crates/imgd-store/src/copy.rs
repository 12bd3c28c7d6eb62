//! Copying a library from one database to another, SQLite to PostgreSQL and back
//! (`imgd db copy SRC DST`): images, batches, jobs, identities, faces, every module's results
//! (vectors and cloud totals among them), the search rows and the settings.
//!
//! Tables are copied parents first, in chunks of [`CHUNK`] rows in key order, each chunk in one
//! transaction of the destination; a row whose key is there already is left alone, so a copy
//! that stopped half-way is finished by running it again. The destination's own migrations
//! have created its tables; its identity sequences are moved past the copied ids. At the end
//! every table must hold as many rows in the destination as in the source.

use std::borrow::Cow;

use crate::db::{Db, Dialect, Value, ValueRef};
use crate::{Context, Store, StoreError, params};

/// Rows per chunk: read from the source, written in one destination transaction.
pub const CHUNK: usize = 1000;

/// One table's copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCopy {
    /// The table.
    pub table: String,
    /// Rows in the source.
    pub source_rows: i64,
    /// Rows written to the destination by this run (rows already there are not counted).
    pub copied: i64,
    /// Rows in the destination at the end.
    pub destination_rows: i64,
}

/// Why a copy did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy ended with other counts in the destination than in the source.
    #[error(
        "the copy is incomplete: {table} has {source_rows} rows in the source and \
         {destination_rows} in the destination (a destination that held other data, or a \
         source written to meanwhile; run the copy again into an empty database)"
    )]
    CountsDiffer {
        /// The table.
        table: String,
        /// Rows in the source.
        source_rows: i64,
        /// Rows in the destination.
        destination_rows: i64,
    },
    /// The destination holds an image the source does not (another library): copying into it
    /// would attach this library's results to that image.
    #[error(
        "the destination holds another library: its image {id} is {path}, which the source \
         does not hold under that id; copy into an empty database (or one an earlier copy of \
         this source filled)"
    )]
    ForeignImage {
        /// The image's id in the destination.
        id: i64,
        /// Its path there.
        path: String,
    },
    /// The two databases are one.
    #[error("the source and the destination are the same database")]
    SameDatabase,
}

/// A table to copy: its name and key columns (in the source's and the destination's terms).
struct Table {
    name: String,
    /// Key columns, for paging and ordering.
    key: Vec<&'static str>,
    /// The identity column whose sequence follows the copied ids on PostgreSQL.
    identity: bool,
}

fn table(name: &str, key: &[&'static str], identity: bool) -> Table {
    Table {
        name: name.to_string(),
        key: key.to_vec(),
        identity,
    }
}

/// The search table's columns besides its key.
const SEARCH_COLUMNS: &str = "path, camera, taken, caption, ocr, labels, names, cloud";

fn search_key(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "rowid",
        Dialect::Postgres => "image_id",
    }
}

/// An owned copy of a value read.
fn owned(value: ValueRef<'_>) -> Value<'static> {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Int(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(Cow::Owned(t.to_string())),
        ValueRef::Blob(b) => Value::Blob(Cow::Owned(b.to_vec())),
    }
}

fn count(db: &Db, table: &str) -> Result<i64, StoreError> {
    db.query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
        r.get(0)
    })
    .ctx("counting rows")
}

impl Store {
    /// Copies this store's library into `destination` (see the module docs), calling
    /// `progress` with each table and the rows copied so far. Returns each table's counts.
    pub fn copy_library_to(
        &self,
        destination: &Store,
        mut progress: impl FnMut(&str, i64, i64),
    ) -> Result<Vec<TableCopy>, CopyError> {
        if self.dialect() == destination.dialect() && self.path() == destination.path() {
            return Err(CopyError::SameDatabase);
        }
        refuse_another_library(&self.db, &destination.db)?;
        let mut tables = vec![
            table("settings", &["key"], false),
            table("batches", &["id"], true),
            table("images", &["id"], true),
            table("jobs", &["id"], true),
            table("identities", &["id"], true),
            table("faces", &["id"], true),
        ];
        for module in self.options.modules.all() {
            let key: &[&'static str] = match module.spec().result_key {
                imgd_core::ResultKey::Image => &["image_id"],
                imgd_core::ResultKey::ImageAndModel => &["image_id", "model_id"],
            };
            if !tables.iter().any(|t| t.name == module.result_table()) {
                tables.push(table(module.result_table(), key, false));
            }
        }
        let mut report = Vec::new();
        for table in &tables {
            let source_rows = count(&self.db, &table.name)?;
            let copied = copy_table(&self.db, &destination.db, table, source_rows, &mut progress)?;
            if table.identity && destination.dialect() == Dialect::Postgres {
                destination
                    .db
                    .batch(&format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', 'id'),
                                       (SELECT COALESCE(MAX(id), 0) + 1 FROM {0}), false)",
                        table.name
                    ))
                    .ctx("moving an id sequence past the copied rows")?;
            }
            report.push(TableCopy {
                table: table.name.clone(),
                source_rows,
                copied,
                destination_rows: count(&destination.db, &table.name)?,
            });
        }
        let source_rows = count(&self.db, "search_fts")?;
        let copied = copy_search_rows(&self.db, &destination.db, source_rows, &mut progress)?;
        report.push(TableCopy {
            table: "search_fts".into(),
            source_rows,
            copied,
            destination_rows: count(&destination.db, "search_fts")?,
        });
        if let Some(differs) = report.iter().find(|t| t.source_rows != t.destination_rows) {
            return Err(CopyError::CountsDiffer {
                table: differs.table.clone(),
                source_rows: differs.source_rows,
                destination_rows: differs.destination_rows,
            });
        }
        Ok(report)
    }
}

/// Fails with [`CopyError::ForeignImage`] when the destination holds an image that the source
/// does not hold under the same id and path: only an empty destination, or one that an earlier
/// copy of this source filled, is written to.
fn refuse_another_library(source: &Db, destination: &Db) -> Result<(), CopyError> {
    let mut after = 0i64;
    loop {
        let theirs: Vec<(i64, String)> = destination
            .query_map(
                &format!("SELECT id, path FROM images WHERE id > ?1 ORDER BY id LIMIT {CHUNK}"),
                params![after],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("reading the destination's images")?;
        let (Some(first), Some(last)) = (theirs.first(), theirs.last()) else {
            return Ok(());
        };
        let ours: std::collections::HashMap<i64, String> = source
            .query_map(
                "SELECT id, path FROM images WHERE id >= ?1 AND id <= ?2",
                params![first.0, last.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("reading the source's images")?
            .into_iter()
            .collect();
        if let Some((id, path)) = theirs.iter().find(|(id, path)| ours.get(id) != Some(path)) {
            return Err(CopyError::ForeignImage {
                id: *id,
                path: path.clone(),
            });
        }
        after = last.0;
    }
}

/// Copies one table in key order, a chunk per destination transaction; returns the rows
/// written (rows already in the destination are skipped).
fn copy_table(
    source: &Db,
    destination: &Db,
    table: &Table,
    total: i64,
    progress: &mut impl FnMut(&str, i64, i64),
) -> Result<i64, StoreError> {
    let keys = table.key.join(", ");
    let after: Vec<String> = (1..=table.key.len()).map(|i| format!("?{i}")).collect();
    let mut last: Option<Vec<Value<'static>>> = None;
    let mut copied = 0i64;
    let mut read = 0i64;
    loop {
        let sql = match &last {
            None => format!("SELECT * FROM {} ORDER BY {keys} LIMIT {CHUNK}", table.name),
            Some(_) => format!(
                "SELECT * FROM {} WHERE ({keys}) > ({}) ORDER BY {keys} LIMIT {CHUNK}",
                table.name,
                after.join(", ")
            ),
        };
        let mut columns: Vec<String> = Vec::new();
        let rows: Vec<Vec<Value<'static>>> = source
            .query_map(&sql, last.as_deref().unwrap_or(&[]), |row| {
                if columns.is_empty() {
                    for i in 0..row.len() {
                        columns.push(row.column_name(i)?.to_string());
                    }
                }
                (0..row.len()).map(|i| row.value(i).map(owned)).collect()
            })
            .ctx("reading rows to copy")?;
        if rows.is_empty() {
            return Ok(copied);
        }
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let insert = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
            table.name,
            columns.join(", "),
            placeholders.join(", ")
        );
        let tx = destination.write_tx().ctx("starting a copy chunk")?;
        for row in &rows {
            copied += tx.execute(&insert, row).ctx("copying a row")? as i64;
        }
        tx.commit().ctx("committing a copy chunk")?;
        read += rows.len() as i64;
        progress(&table.name, read, total);
        let last_row = rows.last().expect("not empty");
        last = Some(
            table
                .key
                .iter()
                .map(|k| {
                    let at = columns
                        .iter()
                        .position(|c| c == k)
                        .expect("key column read");
                    last_row[at].clone()
                })
                .collect(),
        );
    }
}

/// Copies the search rows: SQLite's FTS5 rows (keyed by rowid) and PostgreSQL's (keyed by
/// `image_id`, with a generated `tsvector`) carry the same text columns.
fn copy_search_rows(
    source: &Db,
    destination: &Db,
    total: i64,
    progress: &mut impl FnMut(&str, i64, i64),
) -> Result<i64, StoreError> {
    let from_key = search_key(source.dialect());
    let to_key = search_key(destination.dialect());
    let mut last = 0i64;
    let mut copied = 0i64;
    let mut read = 0i64;
    loop {
        let rows: Vec<Vec<Value<'static>>> = source
            .query_map(
                &format!(
                    "SELECT {from_key}, {SEARCH_COLUMNS} FROM search_fts
                     WHERE {from_key} > ?1 ORDER BY {from_key} LIMIT {CHUNK}"
                ),
                params![last],
                |row| (0..row.len()).map(|i| row.value(i).map(owned)).collect(),
            )
            .ctx("reading search rows to copy")?;
        let Some(last_row) = rows.last() else {
            return Ok(copied);
        };
        let Value::Int(id) = last_row[0] else {
            unreachable!("the key is an integer")
        };
        last = id;
        let tx = destination.write_tx().ctx("starting a copy chunk")?;
        for row in &rows {
            let Value::Int(image_id) = row[0] else {
                continue;
            };
            // An FTS5 table has no unique key to conflict on: skip rows already there.
            let there = tx
                .query_opt(
                    &format!("SELECT 1 FROM search_fts WHERE {to_key} = ?1"),
                    params![image_id],
                    |r| r.get::<i64>(0),
                )
                .ctx("checking a search row")?
                .is_some();
            if !there {
                tx.execute(
                    &format!(
                        "INSERT INTO search_fts ({to_key}, {SEARCH_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    ),
                    row,
                )
                .ctx("copying a search row")?;
                copied += 1;
            }
        }
        tx.commit().ctx("committing a copy chunk")?;
        read += rows.len() as i64;
        progress("search_fts", read, total);
    }
}
