//! Token lifetime from the client's seat (SPEC §1), against the real server
//! binary with a short `--token-leeway-ms`: a client whose token provider
//! mints fresh tokens stays on one connection for several token lifetimes;
//! one whose provider has nothing more is closed with 4501 and stops.

mod common;

use std::time::{Duration, Instant};

use common::{SECRET, Server, until};
use petchat_client::{ClientConfig, TokenProvider, connect, mint};
use petchat_protocol::session::{Backoff, ConnectionState, Event, SessionConfig};
use petchat_protocol::{CloseCode, Role, ServerMessage, UserId};

const LIFETIME: Duration = Duration::from_secs(3);

fn config(server: &Server, tokens: TokenProvider) -> ClientConfig {
    let mut config = ClientConfig::new(server.url(), tokens);
    config.session = SessionConfig { seed: 7, backoff: Backoff::new(7), ..SessionConfig::default() };
    config
}

#[tokio::test]
async fn a_client_with_a_minting_provider_stays_on_one_connection_for_three_token_lifetimes() {
    let server = Server::start(&["--token-leeway-ms", "200"]).await;
    let tokens = TokenProvider::minted(SECRET, UserId::new("cust-1").expect("id"), Role::Customer, "C", LIFETIME);
    let (client, mut events) = connect(config(&server, tokens)).expect("connect");
    until(&mut events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
    let started = Instant::now();
    let (mut sessions, mut refreshed, mut states) = (Vec::new(), 0, Vec::new());
    // Three lifetimes and a little more: without refreshes the server closes after each.
    let end = started + LIFETIME * 3 + Duration::from_millis(500);
    while let Ok(event) = tokio::time::timeout_at(end.into(), events.next()).await {
        match event.expect("the client is running") {
            Event::State(state) => states.push(state),
            Event::Message(m) => match m.message {
                ServerMessage::SessionReady(ready) => sessions.push(ready.session_id),
                ServerMessage::SessionRefreshed(_) => refreshed += 1,
                ServerMessage::Error(e) => panic!("the server refused something: {e:?}"),
                _ => {}
            },
            Event::TokenNeeded { close_code } => panic!("the connection lost its token: {close_code}"),
            _ => {}
        }
    }
    assert_eq!(states, [], "the connection never dropped");
    // The first connection's session.ready follows its Connected state; no second one came.
    assert_eq!(sessions.len(), 1, "one session, one connection: {sessions:?}");
    assert!(refreshed >= 3, "{refreshed} refreshes in three lifetimes");
    // And it still serves requests.
    client.open(Default::default()).await.expect("open");
    until(&mut events, |e| {
        matches!(e, Event::Message(m) if matches!(m.message, ServerMessage::ConversationOpened(_))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_whose_provider_has_no_fresh_token_is_closed_with_4501_and_stops() {
    let server = Server::start(&["--token-leeway-ms", "200"]).await;
    let token = mint(SECRET, &UserId::new("cust-1").expect("id"), Role::Customer, "C", Duration::from_secs(2));
    let (_client, mut events) = connect(config(&server, TokenProvider::fixed(token))).expect("connect");
    until(&mut events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
    let mut stopped = None;
    let closed = until(&mut events, |e| match e {
        Event::State(state) => {
            stopped = Some(state.clone());
            None
        }
        Event::TokenNeeded { close_code } => Some(*close_code),
        Event::Message(m) if matches!(m.message, ServerMessage::SessionRefreshed(_)) => {
            panic!("nothing to refresh with")
        }
        _ => None,
    })
    .await;
    assert_eq!(closed, CloseCode::TOKEN_EXPIRED);
    assert_eq!(stopped, Some(ConnectionState::Stopped { close_code: Some(CloseCode::TOKEN_EXPIRED) }));
    // Stopped for good: the client's task ends and the event stream with it.
    let rest = tokio::time::timeout(common::WAIT, async {
        let mut rest = Vec::new();
        while let Some(event) = events.next().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the client stops");
    assert!(!rest.iter().any(|e| matches!(e, Event::State(ConnectionState::Connecting))), "{rest:?}");
}
