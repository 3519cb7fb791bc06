//! SPEC §1: both ways to authenticate, and every refusal with its close code.

mod common;

use std::time::Duration;

use common::{Next, TestServer};
use petchat_protocol::token::Claims;
use petchat_protocol::{Role, UserId};
use petchat_server::Keys;

fn expired_token(server: &TestServer, seconds_ago: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    server.keys.mint_claims(&Claims {
        sub: UserId::new("cust-1").expect("id"),
        role: Role::Customer,
        name: "C".into(),
        exp: now - seconds_ago,
        iat: None,
        nbf: None,
        topics: None,
    })
}

async fn refused(server: &TestServer, url: &str, protocols: &[&str], origin: Option<&str>) -> (u16, String) {
    let mut client = server.connect_raw(url, protocols, origin).await;
    match client.next().await {
        Next::Closed(Some(close)) => close,
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_in_the_query_is_accepted_and_petchat_v1_selected() {
    let server = TestServer::start().await;
    let url = format!("{}?token={}", server.url(), server.token("cust-1", Role::Customer));
    let mut client = server.connect_raw(&url, &["petchat.v1"], None).await;
    assert_eq!(client.protocol.as_deref(), Some("petchat.v1"));
    assert_eq!(client.recv_type("session.ready").await["data"]["user"]["id"], "cust-1");
}

#[tokio::test]
async fn a_token_in_the_bearer_subprotocol_is_accepted_and_never_selected() {
    let server = TestServer::start().await;
    let bearer = format!("bearer.{}", server.token("agent-1", Role::Agent));
    let mut client = server.connect_raw(&server.url(), &["petchat.v1", &bearer], None).await;
    assert_eq!(client.protocol.as_deref(), Some("petchat.v1"));
    assert_eq!(client.recv_type("session.ready").await["data"]["user"]["role"], "agent");
}

#[tokio::test]
async fn a_client_offering_no_subprotocol_is_served_as_v1() {
    let server = TestServer::start().await;
    let url = format!("{}?token={}", server.url(), server.token("cust-1", Role::Customer));
    let mut client = server.connect_raw(&url, &[], None).await;
    assert_eq!(client.protocol, None);
    client.recv_type("session.ready").await;
}

#[tokio::test]
async fn every_refusal_completes_the_upgrade_and_closes_with_its_code() {
    let server = TestServer::start().await;
    let good = server.token("cust-1", Role::Customer);
    let url = server.url();

    // Missing, malformed, wrongly signed: 4500.
    assert_eq!(refused(&server, &url, &["petchat.v1"], None).await.0, 4500);
    assert_eq!(refused(&server, &format!("{url}?token=not-a-jwt"), &["petchat.v1"], None).await.0, 4500);
    let forged = Keys::new(b"another secret").mint(
        &UserId::new("cust-1").expect("id"),
        Role::Customer,
        "C",
        Duration::from_secs(60),
    );
    let (code, reason) = refused(&server, &format!("{url}?token={forged}"), &["petchat.v1"], None).await;
    assert_eq!((code, reason.as_str()), (4500, "token invalid"));

    // Expired beyond the 60 s leeway: 4501; within it: accepted.
    let (code, reason) =
        refused(&server, &format!("{url}?token={}", expired_token(&server, 120)), &["petchat.v1"], None).await;
    assert_eq!((code, reason.as_str()), (4501, "token expired"));
    let mut lenient =
        server.connect_raw(&format!("{url}?token={}", expired_token(&server, 30)), &["petchat.v1"], None).await;
    lenient.recv_type("session.ready").await;

    // Only unknown protocol versions: 4505, and the offered entry is echoed
    // so that a browser completes the handshake and reads the code.
    let mut client = server.connect_raw(&format!("{url}?token={good}"), &["petchat.v2"], None).await;
    assert_eq!(client.protocol.as_deref(), Some("petchat.v2"));
    assert_eq!(client.expect_close().await.0, 4505);

    // A foreign origin: 1008. A request without Origin (native) is allowed above.
    let host = format!("http://{}", server.addr);
    assert_eq!(
        refused(&server, &format!("{url}?token={good}"), &["petchat.v1"], Some("https://evil.example")).await.0,
        1008
    );
    let mut same = server.connect_raw(&format!("{url}?token={good}"), &["petchat.v1"], Some(&host)).await;
    same.recv_type("session.ready").await;
}

#[tokio::test]
async fn when_several_things_are_wrong_origin_then_version_then_token_decides() {
    let server = TestServer::start().await;
    let url = format!("{}?token=bad", server.url());
    assert_eq!(refused(&server, &url, &["petchat.v9"], Some("https://evil.example")).await.0, 1008);
    let mut client = server.connect_raw(&url, &["petchat.v9"], None).await;
    assert_eq!(client.expect_close().await.0, 4505);
    assert_eq!(refused(&server, &url, &["petchat.v1"], None).await.0, 4500);
}

#[tokio::test]
async fn an_allow_list_admits_exactly_its_origins() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["https://shop.example".into()]).await;
    let url = format!("{}?token={}", server.url(), server.token("cust-1", Role::Customer));
    let mut ok = server.connect_raw(&url, &["petchat.v1"], Some("https://shop.example")).await;
    ok.recv_type("session.ready").await;
    assert_eq!(refused(&server, &url, &["petchat.v1"], Some(&format!("http://{}", server.addr))).await.0, 1008);
}

#[tokio::test]
async fn connections_beyond_the_per_user_cap_are_refused_with_1013_and_a_hint() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_user = 2).await;
    let _a = server.connect("cust-1", Role::Customer).await;
    let _b = server.connect("cust-1", Role::Customer).await;
    let url = format!("{}?token={}", server.url(), server.token("cust-1", Role::Customer));
    let (code, reason) = refused(&server, &url, &["petchat.v1"], None).await;
    assert_eq!(code, 1013);
    assert!(petchat_protocol::close::retry_hint_ms(&reason).is_some(), "{reason}");
    // Another user still gets in.
    server.connect("cust-2", Role::Customer).await;
}

#[tokio::test]
async fn connections_beyond_the_total_cap_are_refused_with_1013() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 1).await;
    let _a = server.connect("cust-1", Role::Customer).await;
    let url = format!("{}?token={}", server.url(), server.token("cust-2", Role::Customer));
    assert_eq!(refused(&server, &url, &["petchat.v1"], None).await.0, 1013);
}
