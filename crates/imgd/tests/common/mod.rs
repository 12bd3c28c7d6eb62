//! Helpers shared by the end-to-end tests: a temporary database and folders driven through the
//! real binary ([`Env`]), child processes, signals and plain HTTP.
//!
//! The tests run on SQLite files by default. With `IMGD_TEST_ENGINE=postgres` every [`TestDb`]
//! is a fresh schema on the PostgreSQL server `IMGD_TEST_POSTGRES` names (`scripts/test.sh` runs
//! the suite both ways).

#![allow(dead_code)]

pub mod postgres;

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use imgd_store::{Store, StoreOptions};
use serde_json::Value;

/// Waits up to `limit` for the child to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends signal `name` (`TERM`, `KILL`, ...) to the child.
pub fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} failed");
}

/// `GET path` on `addr`: the status and the body, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// `METHOD path` on `addr` with extra header lines (`Name: value`) and a body: the status,
/// the header block and the body, or `None` when nothing answers.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    stream.write_all(body).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((status, head.to_string(), body.to_string()))
}

/// Waits until `addr` answers `/healthz` with 200, for at most `limit`.
pub fn wait_healthy(addr: &str, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    while http_get(addr, "/healthz").is_none_or(|(s, _)| s != 200) {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A spawned daemon, killed when dropped: a failing test leaves no process behind.
pub struct Daemon(pub Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");

/// Whether the tests run on PostgreSQL (`IMGD_TEST_ENGINE=postgres`) rather than SQLite.
pub fn on_postgres() -> bool {
    match std::env::var("IMGD_TEST_ENGINE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("IMGD_TEST_ENGINE is `{other}`: use `sqlite` or `postgres`"),
    }
}

/// A test's database: a SQLite file, or a fresh PostgreSQL schema (dropped at the end) when
/// the tests run on PostgreSQL.
pub enum TestDb {
    /// A SQLite file (created by the first command that opens it).
    File(PathBuf),
    /// A schema of its own on the test server.
    Postgres(postgres::Schema),
}

impl TestDb {
    /// A new database: the SQLite file `file`, or a schema when the tests run on PostgreSQL.
    pub fn new(file: PathBuf) -> TestDb {
        if on_postgres() {
            let server = std::env::var("IMGD_TEST_POSTGRES")
                .ok()
                .filter(|url| !url.is_empty())
                .expect("IMGD_TEST_ENGINE=postgres needs IMGD_TEST_POSTGRES, the server's URL");
            TestDb::Postgres(postgres::Schema::new(&server))
        } else {
            TestDb::File(file)
        }
    }

    /// What `--db` takes to open it.
    pub fn arg(&self) -> OsString {
        match self {
            TestDb::File(path) => path.clone().into_os_string(),
            TestDb::Postgres(schema) => schema.url.clone().into(),
        }
    }

    /// The SQLite file, or `None` on PostgreSQL.
    pub fn file(&self) -> Option<&Path> {
        match self {
            TestDb::File(path) => Some(path),
            TestDb::Postgres(_) => None,
        }
    }

    /// The SQLite file, for a test about that file itself (its corruption, its WAL); `None`,
    /// with a note, on PostgreSQL, where the test has nothing to check.
    pub fn sqlite_only(&self, about: &str) -> Option<&Path> {
        let file = self.file();
        if file.is_none() {
            eprintln!("this test is about {about}: it does not apply to PostgreSQL");
        }
        file
    }

    /// A store on the database, with every module's tables, to read or set up what a test
    /// checks.
    pub fn store(&self) -> Store {
        let options = StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        };
        let store = match self {
            TestDb::File(path) => Store::open(path, options),
            TestDb::Postgres(schema) => Store::connect_postgres(&schema.url, options),
        };
        store.unwrap_or_else(|e| panic!("opening the test database: {e}"))
    }

    /// The one integer `sql` returns.
    pub fn count(&self, sql: &str) -> i64 {
        self.store()
            .db()
            .query_row(sql, &[], |row| row.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs one statement of `sql`, parameters as [`imgd_store::params`] binds them.
    pub fn execute(&self, sql: &str, params: &[imgd_store::db::Value<'_>]) -> usize {
        self.store()
            .db()
            .execute(sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of every row `sql` returns, as text.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        self.store()
            .db()
            .query_map(sql, &[], |row| row.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// A temporary database, photo folder and user model folder.
pub struct Env {
    /// The folder holding the rest.
    pub dir: tempfile::TempDir,
    /// The database.
    pub db: TestDb,
    /// The photo folder (canonical path).
    pub tree: PathBuf,
    /// The user model folder (`IMGD_MODELS`).
    pub models: PathBuf,
}

/// A fresh [`Env`].
pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("imgd.db"));
    let tree = dir.path().join("photos");
    let models = dir.path().join("models");
    fs::create_dir_all(&tree).unwrap();
    fs::create_dir_all(&models).unwrap();
    let tree = fs::canonicalize(&tree).unwrap();
    Env {
        dir,
        db,
        tree,
        models,
    }
}

/// A path under fixtures/.
pub fn fixture(path: &str) -> String {
    format!("{FIXTURES}/{path}")
}

/// Copies the files of `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

impl Env {
    /// `imgd` on this database, with an empty user model folder (no fetched weights), so
    /// only what the test installs (and the registry models) is found.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgd"));
        cmd.arg("--db")
            .arg(self.db.arg())
            .args(args)
            .env("IMGD_MODELS", &self.models)
            .env_remove("IMGD_FAKE_MODEL")
            .env_remove("IMGD_CONFIG")
            .env_remove("IMGD_CLOUD_BASE_URL");
        cmd
    }

    /// The exit status, stdout and stderr of `imgd ARGS`.
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cmd(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// The stdout of `imgd ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "imgd {args:?} failed: {stderr}");
        stdout
    }

    /// The JSON stdout of `imgd ARGS`, which must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Writes a config file with `text`; returns its path.
    pub fn config(&self, text: &str) -> String {
        let path = self.dir.path().join("imgd.toml");
        fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Copies `source` into the photo folder as `name`; returns the new path.
    pub fn add(&self, source: &str, name: &str) -> String {
        let to = self.tree.join(name);
        fs::copy(source, &to).unwrap();
        to.to_str().unwrap().to_string()
    }

    /// Copies every file of the folder `source` into the photo folder under its own name;
    /// returns the new paths.
    pub fn add_all(&self, source: &str) -> Vec<String> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(source).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            paths.push(self.add(path.to_str().unwrap(), &name));
        }
        paths
    }

    /// The one integer `sql` returns from the database.
    pub fn count(&self, sql: &str) -> i64 {
        self.db.count(sql)
    }

    /// `imgd enqueue --json --modules MODULES` over the photo folder: its report.
    pub fn enqueue(&self, modules: &str) -> Value {
        self.json(&[
            "enqueue",
            "--json",
            "--modules",
            modules,
            self.tree.to_str().unwrap(),
        ])
    }
}
