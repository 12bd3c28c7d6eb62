//! PostgreSQL for the end-to-end tests: a fresh schema on the test server that
//! `IMGD_TEST_POSTGRES` names (`scripts/test.sh` starts a throwaway cluster), and private
//! clusters for the tests that restart theirs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The test server's URL. Without `IMGD_TEST_POSTGRES` the PostgreSQL tests are skipped with a
/// note, unless `IMGD_REQUIRE_POSTGRES` makes that a failure.
pub fn server() -> Option<String> {
    match std::env::var("IMGD_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("IMGD_REQUIRE_POSTGRES").is_some() => {
            panic!("IMGD_REQUIRE_POSTGRES is set but IMGD_TEST_POSTGRES names no server")
        }
        _ => {
            eprintln!("IMGD_TEST_POSTGRES is not set: this PostgreSQL test did not run");
            None
        }
    }
}

/// A fresh schema on a PostgreSQL server, dropped at the end; [`Schema::url`] is what `--db`
/// takes to see only it.
pub struct Schema {
    /// The URL of the schema.
    pub url: String,
    server: String,
    name: String,
}

impl Schema {
    /// A new schema on `server`.
    pub fn new(server: &str) -> Schema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "e2e_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = ::postgres::Client::connect(server, ::postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .unwrap();
        let separator = if server.contains('?') { '&' } else { '?' };
        Schema {
            url: format!("{server}{separator}options=-csearch_path%3D{name}"),
            server: server.to_string(),
            name,
        }
    }

    /// A connection that sees the schema.
    pub fn client(&self) -> ::postgres::Client {
        let mut client = ::postgres::Client::connect(&self.server, ::postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("SET search_path = {}", self.name))
            .unwrap();
        client
    }

    /// The one integer `sql` returns.
    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&self.server, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// A PostgreSQL cluster of one test's own (`scripts/pg-test-cluster.sh` in a folder and on a
/// port of its own), which the test may restart; stopped and deleted at the end.
pub struct Cluster {
    /// Its URL.
    pub url: String,
    dir: PathBuf,
    port: u16,
}

fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-cluster.sh")
}

impl Cluster {
    /// Starts a new cluster.
    pub fn start() -> Cluster {
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!("imgd-pg-{}-{port}", std::process::id()));
        let mut cluster = Cluster {
            url: String::new(),
            dir,
            port,
        };
        let out = cluster.script("start");
        cluster.url = String::from_utf8(out).unwrap().trim().to_string();
        cluster
    }

    /// Stops the cluster at once (its clients are cut off) and starts it again.
    pub fn restart(&self) {
        self.script("restart");
    }

    fn script(&self, command: &str) -> Vec<u8> {
        let out = Command::new("bash")
            .arg(cluster_script())
            .arg(command)
            .env("IMGD_PG_DIR", &self.dir)
            .env("IMGD_PG_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg-test-cluster.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(cluster_script())
            .arg("stop")
            .env("IMGD_PG_DIR", &self.dir)
            .env("IMGD_PG_PORT", self.port.to_string())
            .output();
    }
}
