//! The built `petchat-server` binary as a child process, for what only a real
//! process shows: SIGKILL, SIGTERM, and what it writes to its logs.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::WAIT;

/// `--bind` for a server that may take any free port.
const LOOPBACK_ANY_PORT: &str = "127.0.0.1:0";

/// A running `petchat-server` and the log lines it writes.
pub struct ServerProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub logs: mpsc::UnboundedReceiver<String>,
    pub seen: Vec<String>,
    /// Its `--attachments-dir`, unless `extra` names one (with PostgreSQL the
    /// default would be the working directory).
    attachments: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts the binary on `database_url` with JSON logs at `log_level`.
    pub async fn start(database_url: &str, secret: &str, extra: &[&str], log_level: &str) -> Self {
        Self::start_at(LOOPBACK_ANY_PORT, database_url, secret, extra, log_level).await
    }

    /// Starts the binary as `start` does, listening on `bind` (a node that
    /// restarts on the port a load balancer knows it by).
    pub async fn start_at(bind: &str, database_url: &str, secret: &str, extra: &[&str], log_level: &str) -> Self {
        let command = Command::new(env!("CARGO_BIN_EXE_petchat-server"));
        Self::spawn(command, bind, database_url, secret, extra, log_level).await
    }

    /// Starts the binary as `start` does, allowed at most `files` open file
    /// descriptors (`ulimit -n`), to run it out of them.
    pub async fn start_with_open_files(
        files: u32,
        database_url: &str,
        secret: &str,
        extra: &[&str],
        log_level: &str,
    ) -> Self {
        let mut command = Command::new("sh");
        command.args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_petchat-server")]);
        Self::spawn(command, LOOPBACK_ANY_PORT, database_url, secret, extra, log_level).await
    }

    async fn spawn(
        mut command: Command,
        bind: &str,
        database_url: &str,
        secret: &str,
        extra: &[&str],
        log_level: &str,
    ) -> Self {
        let attachments =
            (!extra.contains(&"--attachments-dir")).then(|| tempfile::tempdir().expect("a directory for attachments"));
        if let Some(dir) = &attachments {
            command.arg("--attachments-dir").arg(dir.path());
        }
        let mut child = command
            .args(["--bind", bind, "--database-url", database_url, "--jwt-secret", secret, "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, mut logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(WAIT, async {
            loop {
                // A server that exits before listening (a refused flag, an
                // unreachable database) says why in what it logged.
                let Some(line) = logs.recv().await else {
                    panic!("petchat-server {extra:?} exited before listening; its log:\n{}", seen.join("\n"))
                };
                seen.push(line.clone());
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if value["message"] == "petchat listening" {
                    return value["addr"].as_str().expect("addr").parse().expect("socket address");
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("petchat-server {extra:?} did not listen within {WAIT:?}"));
        Self { child, addr, logs, seen, attachments }
    }

    /// The resident set size of the process, in KiB (`VmRSS` in /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("a VmRSS line")
    }

    /// The CPU time the process has used (user + system), from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.id().expect("running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
        // Fields after the command name (which may hold spaces) start at state.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("(comm)").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // Linux reports in USER_HZ, 100 on every platform petchat runs on.
        Duration::from_millis(ticks * 10)
    }

    /// Every log line so far.
    pub async fn drain_logs(&mut self) -> &[String] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(line) = self.logs.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Sends a signal (e.g. `KILL`, `TERM`) and waits for the exit.
    pub async fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args([format!("-{signal}"), pid]).status().await.expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits in time").expect("wait")
    }
}
