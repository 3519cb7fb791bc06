//! The `petchat-server` binary's own interface: `token`, `--dev`, and refusing
//! to start without a secret.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestDatabase, TestServer, WAIT};
use petchat_protocol::Role;
use petchat_server::Keys;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_petchat-server");

#[tokio::test]
async fn token_mints_a_token_the_server_accepts() {
    let output = Command::new(BIN)
        .args(["token", "--secret", "s3cret", "--sub", "alice", "--role", "customer", "--name", "Alice", "--ttl", "2h"])
        .output()
        .await
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let claims = Keys::new(b"s3cret").verify(token.trim()).expect("a valid token");
    assert_eq!((claims.sub.as_str(), claims.role, claims.name.as_str()), ("alice", Role::Customer, "Alice"));
    let lifetime = claims.exp - claims.iat.expect("iat");
    assert_eq!(lifetime, 2 * 3600);
}

#[tokio::test]
async fn token_refuses_an_unknown_role() {
    let output = Command::new(BIN)
        .args(["token", "--secret", "s", "--sub", "a", "--role", "admin"])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("customer or agent"));
}

#[tokio::test]
async fn the_server_refuses_to_start_without_a_secret() {
    let database = TestDatabase::new().await;
    let output = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--database-url", &database.url])
        .env_remove("PETCHAT_JWT_SECRET")
        .env_remove("PETCHAT_DEV")
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PETCHAT_JWT_SECRET"));
}

#[tokio::test]
async fn contradictory_limits_are_refused_at_start() {
    let database = TestDatabase::new().await;
    let output = Command::new(BIN)
        .args(["--jwt-secret", "s", "--bind", "127.0.0.1:0", "--outbound-queue", "10", "--max-replay", "20"])
        .args(["--database-url", &database.url])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--outbound-queue (10) must exceed --max-replay (20)"));
}

#[tokio::test]
async fn dev_mode_prints_tokens_that_work() {
    let database = TestDatabase::new().await;
    let mut child = Command::new(BIN)
        .args(["--dev", "--bind", "127.0.0.1:0", "--database-url", &database.url])
        .env_remove("PETCHAT_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut customer, mut agent, mut addr, mut key) = (None, None, None, None);
    tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim().to_owned();
            if let Some(t) = line.strip_prefix("customer token: ") {
                customer = Some(t.trim().to_owned());
            } else if let Some(t) = line.strip_prefix("agent token:") {
                agent = Some(t.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("connect:") {
                addr = rest.trim().strip_prefix("ws://").and_then(|r| r.split('/').next()).map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("api key:") {
                key = rest.split_whitespace().next().map(str::to_owned);
            }
            if customer.is_some() && agent.is_some() && addr.is_some() && key.is_some() {
                break;
            }
        }
    })
    .await
    .expect("dev mode prints its tokens");
    let server = TestServer::at(addr.expect("address").parse().expect("socket address"));
    // Any origin is allowed in dev mode.
    for token in [customer.expect("customer token"), agent.expect("agent token")] {
        let mut client = server
            .connect_raw(&format!("{}?token={token}", server.url()), &["petchat.v1"], Some("http://elsewhere.example"))
            .await;
        client.recv_type("session.ready").await;
    }
    // So does the server API key it printed (SPEC §8: --dev prints a key).
    let key = key.expect("an api key");
    let (status, _) = common::http(&server, "/v1/api/stats", Some(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(common::http(&server, "/v1/api/stats", Some("dev-wrong")).await.0, 401);
    child.start_kill().expect("kill");
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}
