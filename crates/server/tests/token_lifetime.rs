//! Token lifetime on a live connection (SPEC §1), over real sockets: the
//! connection closes with 4501 at `exp` plus `--token-leeway-ms`, a
//! `session.refresh` moves that on, a refused one leaves it where it was,
//! `nbf` is honoured, and two tokens in one handshake are refused.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Next, TestServer};
use petchat_protocol::token::Claims;
use petchat_protocol::{Role, Timestamp, UserId};
use serde_json::{Value, json};

/// A short leeway, so that expiry is seen within a test.
const LEEWAY_MS: u64 = 300;

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// A token for `sub` with the given `exp` and `nbf` (seconds since the epoch).
fn token(server: &TestServer, sub: &str, role: Role, exp: u64, nbf: Option<u64>) -> String {
    server.keys.mint_claims(&Claims {
        sub: UserId::new(sub).expect("id"),
        role,
        name: sub.into(),
        exp,
        iat: None,
        nbf,
        topics: None,
    })
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.limits.token_leeway_ms = LEEWAY_MS).await
}

async fn connect(server: &TestServer, token: &str) -> (Client, Value) {
    let url = format!("{}?token={token}", server.url());
    let mut client = server.connect_raw(&url, &["petchat.v1"], None).await;
    let ready = client.recv_type("session.ready").await;
    (client, ready)
}

fn expires_at(frame: &Value) -> u64 {
    let at: Timestamp = frame["data"]["tokenExpiresAt"].as_str().expect("tokenExpiresAt").parse().expect("RFC 3339");
    u64::try_from(at.as_unix_ms()).expect("after 1970") / 1000
}

/// Reads until the close, which must come within `within`; answers the
/// server's pings meanwhile (the client library does).
async fn closed_within(client: &mut Client, within: Duration) -> (u16, String, Duration) {
    let started = Instant::now();
    let close = tokio::time::timeout(within, client.expect_close()).await.expect("closed in time");
    (close.0, close.1, started.elapsed())
}

#[tokio::test]
async fn session_ready_carries_the_token_expiry_and_the_connection_closes_with_4501_after_it() {
    let server = server().await;
    let exp = now_s() + 2;
    let (mut client, ready) = connect(&server, &token(&server, "cust-1", Role::Customer, exp, None)).await;
    assert_eq!(expires_at(&ready), exp);
    let (code, reason, _) = closed_within(&mut client, Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (4501, "token expired"));
    // Not before exp plus the leeway (a few milliseconds of slack for the two clocks' reads).
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    assert!(
        now_ms + 20 >= u128::from(exp * 1000 + LEEWAY_MS),
        "closed {} ms early",
        u128::from(exp * 1000 + LEEWAY_MS) - now_ms
    );
}

#[tokio::test]
async fn a_refresh_moves_the_expiry_on_and_the_connection_stays_open() {
    let server = server().await;
    let exp = now_s() + 2;
    let (mut client, _) = connect(&server, &token(&server, "cust-1", Role::Customer, exp, None)).await;
    let later = exp + 60;
    client
        .send(json!({"type": "session.refresh", "id": "rt-1", "data": {"token": token(&server, "cust-1", Role::Customer, later, None)}}))
        .await;
    let refreshed = client.recv_type("session.refreshed").await;
    assert_eq!(refreshed["id"], "rt-1");
    assert_eq!(expires_at(&refreshed), later);
    // Nothing closes it until well past the first token's expiry, and it still answers.
    let past_first = Duration::from_millis((exp + 1).saturating_sub(now_s()) * 1000 + LEEWAY_MS);
    assert!(tokio::time::timeout(past_first, client.expect_close()).await.is_err(), "closed despite the refresh");
    client.send(json!({"type": "ping", "id": "p-1", "data": {}})).await;
    assert_eq!(client.recv_until("pong").await["id"], "p-1");
}

#[tokio::test]
async fn a_refused_refresh_says_why_and_the_old_expiry_still_applies() {
    let server = server().await;
    let exp = now_s() + 2;
    let (mut client, _) = connect(&server, &token(&server, "cust-1", Role::Customer, exp, None)).await;
    let later = now_s() + 600;
    let forged = petchat_server::Keys::new(b"another secret").mint_claims(&Claims {
        sub: UserId::new("cust-1").expect("id"),
        role: Role::Customer,
        name: "C".into(),
        exp: later,
        iat: None,
        nbf: None,
        topics: None,
    });
    let refusals = [
        ("other-user", token(&server, "cust-2", Role::Customer, later, None), "unauthorized"),
        ("other-role", token(&server, "cust-1", Role::Agent, later, None), "unauthorized"),
        ("forged", forged, "unauthorized"),
        ("malformed", "not.a.jwt".to_owned(), "unauthorized"),
        ("not-yet", token(&server, "cust-1", Role::Customer, later, Some(later - 60)), "unauthorized"),
        ("expired", token(&server, "cust-1", Role::Customer, now_s() - 120, None), "token_expired"),
    ];
    for (id, token, code) in &refusals {
        client.send(json!({"type": "session.refresh", "id": id, "data": {"token": token}})).await;
        let error = client.recv_type("error").await;
        assert_eq!((error["data"]["code"].as_str(), error["data"]["refId"].as_str()), (Some(*code), Some(*id)));
    }
    let (code, _, _) = closed_within(&mut client, Duration::from_secs(5)).await;
    assert_eq!(code, 4501, "the first token's expiry still closes the connection");
}

#[tokio::test]
async fn a_token_whose_nbf_is_beyond_the_leeway_is_refused_with_4500_and_within_it_accepted() {
    let server = server().await;
    let now = now_s();
    let url = |t: String| format!("{}?token={t}", server.url());
    let mut early = server
        .connect_raw(&url(token(&server, "cust-1", Role::Customer, now + 600, Some(now + 30))), &["petchat.v1"], None)
        .await;
    match early.next().await {
        Next::Closed(Some((code, reason))) => assert_eq!((code, reason.as_str()), (4500, "token not yet valid")),
        other => panic!("expected a close, got {other:?}"),
    }
    let (_ok, _) = connect(&server, &token(&server, "cust-1", Role::Customer, now + 600, Some(now))).await;
}

#[tokio::test]
async fn a_token_in_the_query_and_another_in_the_subprotocol_are_refused_with_4500() {
    let server = server().await;
    let customer = server.token("cust-1", Role::Customer);
    let agent = format!("bearer.{}", server.token("agent-1", Role::Agent));
    for bearer in [agent, format!("bearer.{customer}")] {
        let mut client =
            server.connect_raw(&format!("{}?token={customer}", server.url()), &["petchat.v1", &bearer], None).await;
        match client.next().await {
            Next::Closed(Some((code, reason))) => {
                assert_eq!(code, 4500);
                assert!(reason.contains("not both"), "{reason}");
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_leeway_above_sixty_seconds_refuses_to_start_by_flag_and_by_variable() {
    let database = common::TestDatabase::new().await;
    let base = ["--jwt-secret", "s", "--bind", "127.0.0.1:0", "--database-url", database.url.as_str()];
    let server = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_petchat-server"));
        // A server that does start is killed when the wait below gives up.
        command.args(base).kill_on_drop(true);
        command
    };
    let by_flag = server().args(["--token-leeway-ms", "60001"]).output();
    let by_variable = server().env("PETCHAT_TOKEN_LEEWAY_MS", "120000").output();
    for output in [by_flag, by_variable] {
        let output = tokio::time::timeout(common::WAIT, output).await.expect("exits at once").expect("runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--token-leeway-ms") && stderr.contains("expected 0 to 60000"), "{stderr}");
    }
}
