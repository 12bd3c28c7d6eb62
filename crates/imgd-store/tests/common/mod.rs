//! A real store with registered files, for the store tests.

#![allow(dead_code)]

pub mod backends;

use imgd_core::Module;
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::{Store, StoreOptions};

/// A store at `db` with `paths` registered as new JPEGs and `modules` queued for them.
pub fn store_with(db: &std::path::Path, paths: &[&str], modules: &[Module]) -> Store {
    let store = Store::open(
        db,
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    register(&store, paths, modules);
    store
}

/// A connection to the test database `db` with `paths` registered as new JPEGs and `modules`
/// queued for them.
pub fn store_in(db: &backends::TestDb, paths: &[&str], modules: &[Module]) -> Store {
    let store = db.open();
    register(&store, paths, modules);
    store
}

/// Registers `paths` as new JPEGs with `modules` queued for them.
fn register(store: &Store, paths: &[&str], modules: &[Module]) {
    let actions: Vec<ScanAction> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ScanAction::New(FoundFile {
                path: p.to_string(),
                fingerprint: Fingerprint {
                    size: 100 + i as i64,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        })
        .collect();
    store.apply_scan(&actions, modules, 0).unwrap();
}
