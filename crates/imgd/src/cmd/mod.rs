//! One function per subcommand.

pub mod config;
mod daemon;
mod db;
mod duplicates;
mod embedder;
mod enqueue;
mod faces;
mod models;
mod modules;
mod probe;
mod progress;
mod query;
mod runners;
mod status;
mod web;
mod xmp;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use imgd_store::location::Location;
use imgd_store::{Store, StoreOptions};

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    install_path_map(&cli.command)?;
    // `run` and `validate` may take the database from their config file (file < env < flag).
    match cli.command {
        Command::Run(args) => return daemon::run(cli.db, args),
        Command::Validate(args) => return daemon::validate(cli.db, args),
        _ => {}
    }
    let db = match cli.db {
        Some(db) => database(db)?,
        None => default_database()?,
    };
    match cli.command {
        Command::Enqueue(args) => enqueue::run(&db, args),
        Command::Status(args) => status::run(&db, args),
        Command::Retry(args) => status::retry(&db, args),
        Command::Pause => status::set_paused(&db, true),
        Command::Resume => status::set_paused(&db, false),
        Command::Search(args) => query::search(&db, args),
        Command::Duplicates(args) => duplicates::run(&db, args),
        Command::Show(args) => query::show(&db, args),
        Command::Probe(args) => probe::run(args),
        Command::Models(args) => models::run(args),
        Command::Faces(args) => faces::run(&db, args),
        Command::Xmp(args) => xmp::run(&db, args),
        Command::Db(args) => db::run(args),
        Command::Run(_) | Command::Validate(_) => unreachable!("handled above"),
    }
}

/// Installs the `[store] path_map` of the command's config file (its `--config`, else
/// `IMGD_CONFIG`), so that every path the command reads or registers is spelt as the database
/// spells it.
fn install_path_map(command: &Command) -> Result<()> {
    let given = match command {
        Command::Run(args) => args.config.clone(),
        Command::Validate(args) => args.config.clone(),
        Command::Status(args) => args.config.clone(),
        Command::Search(args) => args.config.clone(),
        Command::Xmp(crate::cli::XmpArgs {
            command: crate::cli::XmpCommand::Write { config, .. },
        }) => config.clone(),
        _ => None,
    };
    let Some(path) = given.or_else(|| std::env::var_os("IMGD_CONFIG").map(PathBuf::from)) else {
        return Ok(());
    };
    // An unreadable or invalid file is reported by the command that reads it (`validate`
    // lists it among its problems); here it only has no map to give.
    let Ok(config) = config::FileConfig::load(Some(&path)) else {
        return Ok(());
    };
    let map = config.path_map()?;
    if !map.is_empty() {
        imgd_core::path_map::install(map)?;
    }
    Ok(())
}

/// The database `--db`, `IMGD_DB` or the config's `db` names: a SQLite file (a path or a
/// `sqlite://` URL) or a PostgreSQL server (`postgres://`); any other URL is an error naming
/// its scheme, never its password.
/// A PostgreSQL URL without a password takes `PGPASSWORD`'s, as libpq's tools do.
pub fn database(db: PathBuf) -> Result<Location> {
    let location = match db.to_str() {
        Some(text) => imgd_store::location::parse(text)?,
        // Not UTF-8: a path, not a URL.
        None => Location::Sqlite(db),
    };
    Ok(match config::env_var("PGPASSWORD") {
        Some(password) => location.with_password(&password),
        None => location,
    })
}

/// `$XDG_DATA_HOME/imgd/imgd.db`.
pub fn default_database() -> Result<Location> {
    let dirs = directories::ProjectDirs::from("", "", "imgd")
        .context("cannot find a home folder for the default database; pass --db PATH")?;
    Ok(Location::Sqlite(dirs.data_dir().join("imgd.db")))
}

/// The store's options for this build's modules.
pub fn store_options() -> StoreOptions {
    StoreOptions {
        modules: modules::REGISTRY.clone(),
        ..StoreOptions::default()
    }
}

/// Opens the database with default options, naming it in errors.
pub fn open_store(db: &Location) -> Result<Store> {
    remember_db(db);
    Store::open_location(db, store_options())
        .with_context(|| format!("cannot open the database {db}"))
}

/// The SQLite file this command opened, for [`mark_if_corrupt`].
static OPENED_DB: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

fn remember_db(db: &Location) {
    if let Some(file) = db.sqlite_file() {
        *OPENED_DB.lock().unwrap_or_else(|e| e.into_inner()) = Some(file.to_path_buf());
    }
}

/// When `error` says the database is corrupt, marks it so (see
/// [`imgd_store::Store::mark_corrupt`]): every later command refuses it instead of reading
/// pages that may be damaged too, until `imgd validate` finds it whole again.
pub fn mark_if_corrupt(error: &anyhow::Error) {
    let found = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<imgd_store::StoreError>()
            .filter(|e| matches!(e, imgd_store::StoreError::Corrupt { .. }))
    });
    let db = OPENED_DB.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let (Some(found), Some(db)) = (found, db)
        && let Err(io) = Store::mark_corrupt(&db, &found.to_string())
    {
        eprintln!("imgd: cannot mark {} as corrupt: {io}", db.display());
    }
}

/// Prints a value as one line of JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
