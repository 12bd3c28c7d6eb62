//! The store's tests run on both engines: a SQLite file in a temporary folder, and a fresh
//! schema of the PostgreSQL server that `IMGD_TEST_POSTGRES` names (`scripts/test.sh` starts
//! a throwaway cluster and sets it). Without that variable only SQLite runs, unless
//! `IMGD_REQUIRE_POSTGRES` is set, which makes its absence a failure.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use imgd_store::{Store, StoreOptions};

/// A fresh, empty database on one engine, deleted when dropped.
pub struct TestDb {
    /// What `--db` would name: the SQLite file, or the PostgreSQL URL of the test's schema.
    pub url: String,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite file in a new temporary folder.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("imgd.db").display().to_string();
        TestDb {
            url,
            dir,
            postgres: None,
        }
    }

    /// A new schema on the PostgreSQL server at `server`; connections to [`TestDb::url`] see
    /// only it.
    pub fn postgres(server: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin = postgres::Client::connect(server, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server {server}: {e}"));
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let separator = if server.contains('?') { '&' } else { '?' };
        TestDb {
            url: format!("{server}{separator}options=-csearch_path%3D{schema}"),
            dir: tempfile::tempdir().unwrap(),
            postgres: Some((server.to_string(), schema)),
        }
    }

    /// Another fresh database on the same engine.
    pub fn another(&self) -> TestDb {
        match &self.postgres {
            Some((server, _)) => TestDb::postgres(server),
            None => TestDb::sqlite(),
        }
    }

    /// Whether this is the PostgreSQL one.
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// `sqlite` or `postgres`, for messages.
    pub fn engine(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// A temporary folder of the test's own (the SQLite file lives there too).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A new connection with every registered module.
    pub fn open(&self) -> Store {
        self.open_with(StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        })
    }

    /// A new connection with these options.
    pub fn open_with(&self, options: StoreOptions) -> Store {
        Store::connect(&self.url, options)
            .unwrap_or_else(|e| panic!("opening the {} test database: {e}", self.engine()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, schema)) = &self.postgres
            && let Ok(mut admin) = postgres::Client::connect(server, postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// The PostgreSQL server of the tests, if any (see the module docs).
pub fn postgres_server() -> Option<String> {
    match std::env::var("IMGD_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("IMGD_REQUIRE_POSTGRES").is_some() => {
            panic!("IMGD_REQUIRE_POSTGRES is set but IMGD_TEST_POSTGRES names no server")
        }
        _ => None,
    }
}

/// A fresh database on every engine there is: SQLite, then PostgreSQL when a server is set.
pub fn test_dbs() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    match postgres_server() {
        Some(server) => dbs.push(TestDb::postgres(&server)),
        None => eprintln!("IMGD_TEST_POSTGRES is not set: this test ran on SQLite only"),
    }
    dbs
}

/// Runs `test` once per engine, each time on a fresh database, naming the engine when it
/// fails.
pub fn each_backend(test: impl Fn(&TestDb)) {
    for db in test_dbs() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&db)));
        if let Err(panic) = outcome {
            eprintln!("the test failed on {}", db.engine());
            std::panic::resume_unwind(panic);
        }
    }
}
