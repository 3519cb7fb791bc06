//! A PostgreSQL server of one test's own, for the tests that stop and start
//! PostgreSQL: the suite's shared server (scripts/services.sh) must stay up
//! for the tests running beside them.

use std::path::PathBuf;

/// What to do when the PostgreSQL binaries are missing.
const NEEDS_POSTGRES: &str = "needs PostgreSQL: scripts/test.sh runs it (services.sh, then --features postgres-tests)";

/// A PostgreSQL cluster in a temp dir on a free port, made with the binaries
/// of `PETCHAT_TEST_POSTGRES_BIN` (services.sh exports it; default: Debian's
/// PostgreSQL 15); stopped on drop.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Makes the cluster with initdb and starts it (blocking, about a second).
    pub fn start() -> Self {
        // A test run without the services would otherwise fail below with a less useful message.
        let _ = super::database::postgres_url();
        let bin = PathBuf::from(
            std::env::var("PETCHAT_TEST_POSTGRES_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        assert!(bin.join("initdb").exists(), "no initdb in {}: {NEEDS_POSTGRES}", bin.display());
        let dir = tempfile::tempdir().expect("temp dir");
        // initdb refuses to run as root: the data directory belongs to `postgres`.
        let as_postgres = run("id", &["-u"]).trim() == "0";
        if as_postgres {
            run("chown", &["-R", "postgres:", &dir.path().display().to_string()]);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let cluster = Self { dir, port, bin, as_postgres };
        cluster.postgres(&format!(
            "'{}' -D '{}' -U postgres -A trust --no-sync --no-locale -E UTF8 >/dev/null",
            cluster.bin.join("initdb").display(),
            cluster.data().display()
        ));
        cluster.pg_ctl("-w start");
        cluster
    }

    /// Its maintenance database, `postgres`, which the tests use as theirs.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once, as a crash would (`pg_ctl -m immediate stop`).
    pub fn stop(&self) {
        self.pg_ctl("-m immediate -w stop");
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&self) {
        self.pg_ctl("-w start");
    }

    /// `pg_ctl ARGS` on this cluster (the server's own options included, for `start`).
    pub fn pg_ctl(&self, args: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c shared_buffers=16MB",
            self.port
        );
        self.postgres(&format!(
            "'{}' -D '{}' -l '{}' -o \"{options}\" {args} >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.dir.path().join("log").display()
        ));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a shell command as `postgres` (when root) or as oneself.
    fn postgres(&self, command: &str) {
        let status = if self.as_postgres {
            std::process::Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", command]).status()
        } else {
            std::process::Command::new("sh").args(["-c", command]).status()
        };
        assert!(status.expect("the shell runs").success(), "failed: {command}");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.pg_ctl("-m immediate -w stop")));
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program).args(args).output().expect("runs");
    assert!(output.status.success(), "{program} {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
