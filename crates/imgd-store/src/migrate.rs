//! The migrations runner: numbered SQL files applied in order, each recorded in
//! `schema_version`. The store's own migrations (images, jobs, the search index and the tables
//! of the first modules) and those the registered modules declare share one numbering.

use std::path::Path;

use imgd_core::{Migration, Registry};

use crate::db::{Db, Dialect};
use crate::{Context, StoreError, now_ms, params};

/// The store's own migrations, in order. Append new files here; never edit an applied one. A
/// module's tables come with the module's own migrations ([`imgd_core::ModuleSpec`]).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../../migrations/0001_init.sql"),
        postgres: Some(include_str!("../../../migrations/0001_init.pg.sql")),
    },
    Migration {
        version: 2,
        name: "0002_faces",
        sql: include_str!("../../../migrations/0002_faces.sql"),
        postgres: Some(include_str!("../../../migrations/0002_faces.pg.sql")),
    },
    Migration {
        version: 3,
        name: "0003_embedding_model_index",
        sql: include_str!("../../../migrations/0003_embedding_model_index.sql"),
        postgres: None,
    },
    Migration {
        version: 4,
        name: "0004_suspects",
        sql: include_str!("../../../migrations/0004_suspects.sql"),
        postgres: None,
    },
    // 5 is the phash module's.
    Migration {
        version: 6,
        name: "0006_sha256",
        sql: include_str!("../../../migrations/0006_sha256.sql"),
        postgres: None,
    },
    Migration {
        version: 7,
        name: "0007_done_recently",
        sql: include_str!("../../../migrations/0007_done_recently.sql"),
        postgres: None,
    },
    Migration {
        version: 8,
        name: "0008_batches",
        sql: include_str!("../../../migrations/0008_batches.sql"),
        postgres: Some(include_str!("../../../migrations/0008_batches.pg.sql")),
    },
    Migration {
        version: 9,
        name: "0009_batch_scan",
        sql: include_str!("../../../migrations/0009_batch_scan.sql"),
        postgres: Some(include_str!("../../../migrations/0009_batch_scan.pg.sql")),
    },
    // 10 is the thumbnail module's.
    Migration {
        version: 11,
        name: "0011_workers",
        sql: include_str!("../../../migrations/0011_workers.sql"),
        postgres: Some(include_str!("../../../migrations/0011_workers.pg.sql")),
    },
];

/// Every migration the store and `modules` know, in version order.
fn all_migrations(modules: &Registry) -> Vec<&'static Migration> {
    let mut all: Vec<&'static Migration> = MIGRATIONS.iter().collect();
    all.extend(modules.migrations());
    all.sort_by_key(|m| m.version);
    all
}

/// The newest schema version the store and `modules` know.
pub fn latest_schema_version(modules: &Registry) -> i64 {
    all_migrations(modules).last().map_or(0, |m| m.version)
}

pub(crate) fn current_version(db: &Db) -> Result<i64, StoreError> {
    db.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        params![],
        |r| r.get(0),
    )
    .ctx("reading the schema version")
}

pub(crate) fn apply(db: &Db, path: &Path, modules: &Registry) -> Result<(), StoreError> {
    db.batch(match db.dialect() {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT    NOT NULL,
                 applied_ms INTEGER NOT NULL
             )"
        }
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT   NOT NULL,
                 applied_ms BIGINT NOT NULL
             )"
        }
    })
    .ctx("creating the schema_version table")?;
    let found = current_version(db)?;
    let latest = latest_schema_version(modules);
    if found > latest {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: latest,
        });
    }
    for migration in all_migrations(modules)
        .into_iter()
        .filter(|m| m.version > found)
    {
        let tx = db.write_tx().ctx("starting a migration")?;
        // Another process may have applied it while we waited for the lock.
        if current_version(&tx)? >= migration.version {
            continue;
        }
        tx.batch(match db.dialect() {
            Dialect::Sqlite => migration.sql,
            Dialect::Postgres => migration.postgres_sql(),
        })
        .ctx("applying a migration")?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )
        .ctx("recording a migration")?;
        tx.commit().ctx("committing a migration")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::{Store, StoreOptions};

    #[test]
    fn a_new_database_gets_every_migration_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/imgd.db");
        let store = Store::open(
            &db,
            StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            latest_schema_version(&imgd_registry::registry())
        );
        drop(store);
        // Opening again applies nothing twice.
        let store = Store::open(
            &db,
            StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let rows: i64 = store
            .connection()
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        let module_migrations = imgd_registry::registry().migrations().len();
        assert_eq!(rows, (MIGRATIONS.len() + module_migrations) as i64);
    }

    #[test]
    fn an_older_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("imgd.db");
        // A database as a build with no migrations applied would leave it: only the version
        // table, version 0, plus a user's unrelated table that must survive.
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                                              applied_ms INTEGER NOT NULL);
                 CREATE TABLE keep_me (x INTEGER); INSERT INTO keep_me VALUES (7);",
            )
            .unwrap();
        }
        let store = Store::open(
            &db,
            StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            latest_schema_version(&imgd_registry::registry())
        );
        let kept: i64 = store
            .connection()
            .query_row("SELECT x FROM keep_me", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 7);
    }

    #[test]
    fn a_database_from_a_newer_imgd_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("imgd.db");
        drop(
            Store::open(
                &db,
                StoreOptions {
                    modules: imgd_registry::registry(),
                    ..StoreOptions::default()
                },
            )
            .unwrap(),
        );
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute(
                "INSERT INTO schema_version VALUES (?1, 'future', 0)",
                [latest_schema_version(&imgd_registry::registry()) + 1],
            )
            .unwrap();
        }
        let err = Store::open(
            &db,
            StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            },
        )
        .err()
        .expect("a newer schema must be refused");
        let message = err.to_string();
        assert!(message.contains("upgrade imgd"), "{message}");
        assert!(
            matches!(err, StoreError::NewerSchema { found, .. } if found == latest_schema_version(&imgd_registry::registry()) + 1)
        );
    }
}
