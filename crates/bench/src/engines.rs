//! The engines of the `cluster` target: a throwaway PostgreSQL (initdb in a
//! temp dir, fsync and synchronous_commit on, as a shop would run it) and a
//! Redis without persistence, each on a free loopback port, with their CPU
//! read from /proc so that a cluster's cost per message counts them too.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::target::{cpu_seconds_of, free_port};

/// Where the engines' programs are.
#[derive(Debug, Clone)]
pub(crate) struct EnginePrograms {
    /// The directory of initdb, pg_ctl and postgres (Debian: /usr/lib/postgresql/15/bin).
    pub(crate) postgres_bin: PathBuf,
    /// The redis-server program.
    pub(crate) redis_server: PathBuf,
}

/// A running PostgreSQL and Redis; both stopped when dropped.
pub(crate) struct Engines {
    postgres: Postgres,
    redis: Child,
    redis_port: u16,
}

impl Engines {
    /// Makes a PostgreSQL cluster and starts it, then starts Redis.
    pub(crate) async fn start(programs: &EnginePrograms) -> Result<Engines> {
        let postgres = Postgres::start(&programs.postgres_bin).await?;
        let redis_port = free_port()?;
        let redis = Command::new(&programs.redis_server)
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", programs.redis_server.display()))?;
        crate::target::wait_listening(([127, 0, 0, 1], redis_port).into(), "redis-server").await?;
        Ok(Engines { postgres, redis, redis_port })
    }

    /// The database URL the nodes share.
    pub(crate) fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.postgres.port)
    }

    /// The Redis URL the nodes share.
    pub(crate) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// A reader of the engines' CPU seconds so far, PostgreSQL's (the
    /// postmaster and all its backends) and Redis's, that a task can own.
    pub(crate) fn cpu_seconds_reader(&self) -> impl Fn() -> Result<EngineCpu> + Send + 'static {
        let postmaster = self.postgres.postmaster;
        let redis = self.redis.id().map(|pid| pid.to_string());
        move || {
            Ok(EngineCpu {
                postgres: tree_cpu_seconds(postmaster)?,
                redis: cpu_seconds_of(redis.as_deref().context("Redis has exited")?)?,
            })
        }
    }
}

/// CPU seconds of each engine.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EngineCpu {
    /// PostgreSQL: the postmaster and its backends.
    pub(crate) postgres: f64,
    /// Redis.
    pub(crate) redis: f64,
}

/// A PostgreSQL cluster in a temp dir, stopped at once (`-m immediate`) on drop.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    postmaster: u32,
    as_postgres: bool,
}

impl Postgres {
    async fn start(bin: &Path) -> Result<Postgres> {
        if !bin.join("initdb").exists() {
            bail!(
                "no initdb in {}: install PostgreSQL (Debian: apt-get install postgresql) or pass --postgres-bin",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        // initdb and postgres refuse to run as root: the cluster then belongs to `postgres`.
        let as_postgres = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)?;
        if as_postgres {
            shell(false, &format!("chown -R postgres: '{}'", dir.path().display())).await?;
        }
        let data = dir.path().join("data");
        shell(
            as_postgres,
            &format!(
                "'{}' -D '{}' -U postgres -A trust --no-sync --no-locale -E UTF8 >/dev/null",
                bin.join("initdb").display(),
                data.display()
            ),
        )
        .await?;
        let port = free_port()?;
        // The server's defaults, fsync and synchronous_commit included; no Unix
        // socket (a temp dir's path may be longer than its limit allows).
        let options =
            format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200");
        shell(
            as_postgres,
            &format!(
                "'{}' -D '{}' -l '{}' -o \"{options}\" -w -t 60 start >/dev/null",
                bin.join("pg_ctl").display(),
                data.display(),
                dir.path().join("log").display()
            ),
        )
        .await?;
        let pid = std::fs::read_to_string(data.join("postmaster.pid")).context("reading postmaster.pid")?;
        let postmaster = pid.lines().next().and_then(|l| l.trim().parse().ok()).context("a pid in postmaster.pid")?;
        Ok(Postgres { dir, bin: bin.to_owned(), port, postmaster, as_postgres })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let command = format!(
            "'{}' -D '{}' -m immediate -w stop >/dev/null 2>&1",
            self.bin.join("pg_ctl").display(),
            self.dir.path().join("data").display()
        );
        let _ = if self.as_postgres {
            std::process::Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &command]).status()
        } else {
            std::process::Command::new("sh").args(["-c", &command]).status()
        };
    }
}

/// Runs a shell command, as `postgres` when asked (from root), and fails unless it succeeds.
async fn shell(as_postgres: bool, command: &str) -> Result<()> {
    let status = if as_postgres {
        Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", command]).status().await
    } else {
        Command::new("sh").args(["-c", command]).status().await
    }
    .with_context(|| format!("running {command}"))?;
    if !status.success() {
        bail!("failed ({status}): {command}");
    }
    Ok(())
}

/// CPU seconds of process `root`, of the children it has reaped (cutime and
/// cstime) and of its live children: a postmaster and its backends.
fn tree_cpu_seconds(root: u32) -> Result<f64> {
    let mut total = cpu_seconds_with_reaped(root)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        // The fields after the name: state, then the parent's pid.
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(root) {
            total += cpu_seconds_of(pid).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// utime + stime + cutime + cstime of `pid`, in seconds.
fn cpu_seconds_with_reaped(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("PostgreSQL has exited")?;
    let rest = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11..15].iter().map(|f| f.parse::<u64>().unwrap_or(0)).sum();
    Ok(ticks as f64 / crate::target::CLOCK_TICKS_PER_SECOND)
}
