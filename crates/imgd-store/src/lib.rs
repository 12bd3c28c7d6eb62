//! Storage of imgd, on SQLite or PostgreSQL.
//!
//! One database holds everything: registered images, the durable job queue, module results,
//! the full-text search index and shared settings. SQLite (one file, the embedded default) is
//! opened in WAL mode with a busy timeout, so several processes (a daemon, `imgd enqueue`,
//! `imgd status`) can use it at once; PostgreSQL serves workers on many hosts. [`db`] is the
//! one seam between the two engines.
//!
//! - [`Store::open_location`] opens what `--db` names ([`location`]), applies the numbered
//!   migrations in order and refuses a database written by a newer imgd.
//! - [`queue`]: claim images with their queued jobs under a lease, extend, release, fail,
//!   retry, pause, and wait for new work.
//! - [`results`]: one transaction that upserts results, acks their jobs and refreshes the
//!   search rows of finished images.
//! - [`scan`]: what `imgd enqueue` needs: known fingerprints under a folder, and applying a
//!   scan's changes in one transaction.
//! - [`report`]: `imgd status`, `imgd search` and `imgd show`.
//! - [`copy`]: `imgd db copy`, a library from one database to another.

#![deny(missing_docs)]

pub mod batches;
pub mod browse;
pub mod cloud;
pub mod copy;
pub mod db;
pub mod faces;
pub mod location;
mod migrate;
pub mod queue;
pub mod report;
pub mod results;
pub mod scan;
pub mod sidecars;
pub mod vectors;
pub mod workers;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imgd_core::Registry;
use rusqlite::Connection;

use crate::db::{Db, DbError, Dialect};

pub use migrate::latest_schema_version;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An SQLite error, with what was being done.
    #[error("database error while {context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A PostgreSQL error (of the server, or of the connection to it), with what was being
    /// done.
    #[error("database error while {context}: {}", postgres_message(source))]
    Postgres {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: postgres::Error,
    },
    /// The connection to the PostgreSQL server was lost in the middle of a transaction: none
    /// of it was written, and the next statement connects again.
    #[error(
        "the connection to the PostgreSQL server was lost while {context}; nothing of it was \
         written"
    )]
    Lost {
        /// What the store was doing.
        context: &'static str,
    },
    /// A value read from the database did not have the type the store expected.
    #[error("database error while {context}: {message}")]
    Type {
        /// What the store was doing.
        context: &'static str,
        /// What did not fit.
        message: String,
    },
    /// The PostgreSQL server could not be reached or refused the connection.
    #[error(
        "cannot connect to the PostgreSQL server at {url}: {}",
        postgres_message(source)
    )]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The underlying error.
        #[source]
        source: postgres::Error,
    },
    /// The database was written by a newer imgd than this one.
    #[error(
        "the database {path} has schema version {found}, but this imgd only knows versions up to \
         {supported}; upgrade imgd or point --db at another database"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The folder for the database could not be created.
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `--db` names no database this store opens.
    #[error(transparent)]
    Location(#[from] location::LocationError),
    /// No image has this id or path.
    #[error("no image {0} in the database")]
    NoSuchImage(String),
    /// No batch has this id.
    #[error("no batch {0} in the database (imgd status lists them)")]
    NoSuchBatch(i64),
    /// Stored JSON could not be parsed.
    #[error("corrupt JSON in the database: {0}")]
    Json(#[from] serde_json::Error),
    /// The database was found corrupt earlier (a marker file beside it says so): nothing reads
    /// or writes it until `imgd validate` finds it whole again.
    #[error(
        "the database {path} is corrupt (found earlier: {note}); nothing reads or writes it \
         until it is restored from a backup, or `imgd validate` finds it whole again"
    )]
    MarkedCorrupt {
        /// The database file.
        path: PathBuf,
        /// What the marker file says.
        note: String,
    },
    /// SQLite found the database file damaged (or not a database at all). Nothing more is read
    /// from or written to it.
    #[error(
        "the database is corrupt (found while {context}): {source}; stop every imgd using it \
         and restore it from a backup (`imgd validate` runs SQLite's integrity check)"
    )]
    Corrupt {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether the error is the database's as a whole (corrupt, full disk, I/O, locked), not
    /// one row's: such an error fails the whole transaction, never one image's jobs.
    pub fn affects_whole_database(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Corrupt { .. } | StoreError::MarkedCorrupt { .. } => true,
            StoreError::Postgres { .. } | StoreError::Connect { .. } | StoreError::Lost { .. } => {
                self.is_transient()
            }
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                C::DiskFull
                    | C::SystemIoFailure
                    | C::ReadOnly
                    | C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::CannotOpen
                    | C::OutOfMemory
                    | C::FileLockingProtocolFailed
            ),
            _ => false,
        }
    }

    /// Whether the error will likely pass if the same work is tried again later: the
    /// PostgreSQL server was unreachable, restarting, or cut the connection, or the
    /// transaction lost a serialization or deadlock race.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Lost { .. } | StoreError::Connect { .. } => true,
            StoreError::Postgres { source, .. } => {
                source.is_closed()
                    || match source.code() {
                        // Not the server's: the connection's (I/O, a closed socket).
                        None => true,
                        Some(code) => {
                            let code = code.code();
                            // 08: connection exception; 57: operator intervention (shutdown,
                            // restart); 53: insufficient resources; 40001 / 40P01:
                            // serialization failure, deadlock.
                            code.starts_with("08")
                                || code.starts_with("57")
                                || code.starts_with("53")
                                || code == "40001"
                                || code == "40P01"
                        }
                    }
            }
            _ => false,
        }
    }

    /// Whether SQLite found the database file damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::MarkedCorrupt { .. }
        )
    }
}

/// What PostgreSQL said: the server's message with its detail and hint, or the client's error
/// (the connection, the protocol) with its cause.
fn postgres_message(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            message.push_str(&format!("; {hint}"));
        }
        return message;
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Whether a SQLite error says the file is damaged or not a database.
fn is_corruption(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Adds a context to database results.
pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, DbError> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| match error {
            DbError::Sqlite(source) => sqlite_error(context, source),
            DbError::Postgres(source) => StoreError::Postgres { context, source },
            DbError::Lost => StoreError::Lost { context },
            DbError::NoRow => StoreError::Type {
                context,
                message: "the query returned no rows".into(),
            },
            DbError::Type { column, message } => StoreError::Type {
                context,
                message: format!("column {column}: {message}"),
            },
        })
    }
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| sqlite_error(context, source))
    }
}

/// A SQLite error as the store reports it: corruption apart from every other error.
fn sqlite_error(context: &'static str, source: rusqlite::Error) -> StoreError {
    if is_corruption(&source) {
        StoreError::Corrupt { context, source }
    } else {
        StoreError::Sqlite { context, source }
    }
}

/// How long connecting to a PostgreSQL server may take, unless its URL says
/// (`connect_timeout=`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a statement waits for another process's write lock before failing.
    pub busy_timeout: Duration,
    /// How many failed attempts a job gets before it is marked `failed`.
    pub max_attempts: u32,
    /// How many expired leases (a worker that died holding the job) before it is `failed`.
    pub max_lease_expiries: u32,
    /// Open even when the database is marked corrupt (for `imgd validate`, which checks it).
    pub ignore_corrupt_marker: bool,
    /// The modules this build serves: their result tables, migrations, search text, gates and
    /// store hooks. With none, only the store's own tables are known.
    pub modules: Registry,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(30),
            max_attempts: 3,
            max_lease_expiries: 10,
            ignore_corrupt_marker: false,
            modules: Registry::default(),
        }
    }
}

/// A connection to the imgd database. Not `Sync`: give each thread its own `Store`.
pub struct Store {
    db: Db,
    path: PathBuf,
    options: StoreOptions,
    /// The session listens for new work ([`Store::wait_for_work`]).
    listening: std::cell::Cell<bool>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, enables WAL, foreign keys and the busy
    /// timeout, and applies pending migrations.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if !options.ignore_corrupt_marker
            && let Ok(note) = std::fs::read_to_string(Self::corrupt_marker(path))
        {
            return Err(StoreError::MarkedCorrupt {
                path: path.to_path_buf(),
                note: note.trim().to_string(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).ctx("opening the database")?;
        // The writer's commit uses a few statements per module plus the search-row queries;
        // keep them all prepared across commits.
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(options.busy_timeout)
            .ctx("setting the busy timeout")?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .ctx("enabling WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .ctx("setting synchronous")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx("enabling foreign keys")?;
        let store = Store {
            db: Db::sqlite(conn),
            path: path.to_path_buf(),
            options,
            listening: std::cell::Cell::new(false),
        };
        migrate::apply(&store.db, &store.path, &store.options.modules)?;
        Ok(store)
    }

    /// Opens the database `db` names (see [`location::parse`]): a SQLite file or a PostgreSQL
    /// server.
    pub fn connect(db: &str, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_location(&location::parse(db)?, options)
    }

    /// Opens the database at `location`: a SQLite file or a PostgreSQL server.
    pub fn open_location(
        location: &location::Location,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        match location {
            location::Location::Sqlite(path) => Store::open(path, options),
            location::Location::Postgres(url) => Store::connect_postgres(url, options),
        }
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user@host:port/db`) and
    /// applies pending migrations. `url` is never repeated with its password.
    pub fn connect_postgres(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let shown = location::without_password(url);
        let connect_error = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let mut config: postgres::Config = url.parse().map_err(connect_error)?;
        if config.get_connect_timeout().is_none() {
            // An unreachable host fails in seconds, not after the system's TCP timeout.
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server that vanished (a crash, a cut cable) is noticed within a minute.
        config.keepalives_idle(Duration::from_secs(30));
        let client = config.connect(postgres::NoTls).map_err(connect_error)?;
        let store = Store {
            db: Db::postgres(client, config),
            path: PathBuf::from(&shown),
            options,
            listening: std::cell::Cell::new(false),
        };
        // The server's notices ("already exists, skipping") are not news.
        store
            .db
            .session("SET client_min_messages = warning")
            .ctx("setting up the session")?;
        // Concurrent first opens by several workers: one applies the migrations, the others
        // wait on this lock and then find them applied.
        store
            .db
            .batch("SELECT pg_advisory_lock(7283640001)")
            .ctx("waiting for the migration lock")?;
        let applied = migrate::apply(&store.db, &store.path, &store.options.modules);
        store
            .db
            .batch("SELECT pg_advisory_unlock(7283640001)")
            .ctx("releasing the migration lock")?;
        applied?;
        Ok(store)
    }

    /// The marker file beside a database found corrupt: `<db>-corrupt`, like SQLite's own
    /// `-wal` and `-shm` files.
    pub fn corrupt_marker(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push("-corrupt");
        PathBuf::from(name)
    }

    /// Records that the database at `db` was found corrupt (`note` says how), so that every
    /// later open refuses it until [`Store::clear_corrupt_marker`].
    pub fn mark_corrupt(db: &Path, note: &str) -> std::io::Result<()> {
        std::fs::write(Self::corrupt_marker(db), format!("{note}\n"))
    }

    /// Removes the corrupt marker (after an integrity check came out clean).
    pub fn clear_corrupt_marker(db: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(Self::corrupt_marker(db)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The database file (for PostgreSQL, its URL without the password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Which engine the store runs on.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        migrate::current_version(&self.db)
    }

    /// Runs SQLite's `PRAGMA integrity_check` and returns its verdict (`"ok"` when healthy).
    /// PostgreSQL checks its own pages; there the answer is always `"ok"` once connected.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        match self.db.as_sqlite() {
            Some(conn) => conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .ctx("checking integrity"),
            None => {
                self.db.batch("SELECT 1").ctx("checking the connection")?;
                Ok("ok".to_string())
            }
        }
    }

    /// The connection, for tests and one-off maintenance.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The SQLite connection, for tests and one-off maintenance.
    ///
    /// # Panics
    /// On a PostgreSQL store.
    pub fn connection(&self) -> &Connection {
        self.db
            .as_sqlite()
            .expect("Store::connection is SQLite's; use Store::db")
    }

    /// Reads a shared setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.db
            .query_opt(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .ctx("reading a setting")
    }

    /// Writes a shared setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .ctx("writing a setting")?;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
