//! A fresh database for each test, on the store the run asks for:
//! `PETCHAT_TEST_STORE=postgres` makes one PostgreSQL database per test on
//! the server of `PETCHAT_TEST_POSTGRES_URL` (`scripts/services.sh` starts
//! one); otherwise a SQLite file in a temp dir.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use petchat_server::store::Store;
use tokio_postgres::NoTls;

/// What to do when PostgreSQL is asked for and cannot be had.
const SERVICES_HINT: &str = "start one with `source scripts/services.sh && services_postgres` \
     (it exports PETCHAT_TEST_POSTGRES_URL; scripts/test.sh does this for its postgres step)";

/// The store a test run is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    /// A SQLite file per test (the default).
    Sqlite,
    /// A PostgreSQL database per test (`PETCHAT_TEST_STORE=postgres`).
    Postgres,
}

/// The store this run is on, from `PETCHAT_TEST_STORE`.
pub fn store() -> TestStore {
    match std::env::var("PETCHAT_TEST_STORE").as_deref() {
        Ok("postgres") => TestStore::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => TestStore::Sqlite,
        Ok(other) => panic!("PETCHAT_TEST_STORE={other:?}: expected sqlite or postgres"),
    }
}

/// An empty database that exists while this value does.
pub struct TestDatabase {
    /// What `--database-url` takes.
    pub url: String,
    place: Place,
}

enum Place {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { server: String, name: String },
}

impl TestDatabase {
    /// A database on the store this run is on.
    pub async fn new() -> Self {
        match store() {
            TestStore::Sqlite => Self::sqlite(),
            TestStore::Postgres => Self::postgres().await,
        }
    }

    /// A SQLite file in a temp dir, whatever the run's store.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("petchat.db").display());
        Self { url, place: Place::Sqlite(dir) }
    }

    /// A new PostgreSQL database on the server of `PETCHAT_TEST_POSTGRES_URL`;
    /// fails the test, naming `scripts/services.sh`, when there is none.
    pub async fn postgres() -> Self {
        let server = postgres_url();
        let name = unique_name();
        let client = admin(&server).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e:?}"));
        Self { url: with_database(&server, &name), place: Place::Postgres { server, name } }
    }

    /// The store opened on this database, as the server opens it.
    pub async fn open(&self) -> Arc<dyn Store> {
        petchat_server::store::open(&self.url).await.expect("the test store opens")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Place::Postgres { server, name } = &self.place else { return };
        let (server, name) = (server.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot block on another:
        // a thread of its own with a runtime of its own. FORCE ends the
        // connections a server still holds. Best effort: a database left
        // behind is only disk space on a throwaway cluster.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let drop = async {
                    let (client, connection) = tokio_postgres::connect(&server, NoTls).await?;
                    tokio::spawn(connection);
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), drop).await;
            });
        })
        .join();
    }
}

/// `PETCHAT_TEST_POSTGRES_URL`, or a failed test that says how to get one.
pub fn postgres_url() -> String {
    match std::env::var("PETCHAT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("PETCHAT_TEST_POSTGRES_URL is not set: these tests need a PostgreSQL server; {SERVICES_HINT}"),
    }
}

/// A connection to the server's maintenance database, to create and drop test databases.
async fn admin(server: &str) -> tokio_postgres::Client {
    let connect = tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(server, NoTls)).await;
    match connect {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            client
        }
        Ok(Err(e)) => {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            panic!("PostgreSQL at PETCHAT_TEST_POSTGRES_URL={server} is unreachable ({e}{cause}); {SERVICES_HINT}")
        }
        Err(_) => panic!("PostgreSQL at PETCHAT_TEST_POSTGRES_URL={server} did not answer in 10 s; {SERVICES_HINT}"),
    }
}

/// `base` with its database replaced by `name` (its query string kept).
pub fn with_database(base: &str, name: &str) -> String {
    let (head, query) = base.split_once('?').map_or((base, None), |(head, query)| (head, Some(query)));
    let authority = head.find("://").map_or(0, |i| i + 3);
    let path = head[authority..].find('/').map_or(head.len(), |i| authority + i);
    let mut url = format!("{}/{name}", &head[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A database name no other test of any run has: process id, a counter, the clock.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!("petchat_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
