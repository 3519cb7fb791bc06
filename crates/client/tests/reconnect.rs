//! SPEC §5 from the client's seat, against the real server binary: kills,
//! restarts, close codes, slow reading.

mod common;

use std::time::{Duration, Instant};

use common::{Server, until};
use petchat_client::{TokenProvider, connect};
use petchat_protocol::session::{ConnectionState, Event};
use petchat_protocol::{CloseCode, ConversationId, Role, ServerMessage};

/// A customer and an agent, connected, with an assigned conversation.
async fn pair(
    server: &Server,
) -> (petchat_client::Client, petchat_client::Events, petchat_client::Client, petchat_client::Events, ConversationId) {
    pair_with(server, None).await
}

/// As `pair`, with the agent's socket receive buffer set.
async fn pair_with(
    server: &Server,
    agent_receive_buffer: Option<u32>,
) -> (petchat_client::Client, petchat_client::Events, petchat_client::Client, petchat_client::Events, ConversationId) {
    let mut agent_config = server.config("agent-1", Role::Agent);
    agent_config.receive_buffer_bytes = agent_receive_buffer;
    let (agent, mut agent_events) = connect(agent_config).expect("connect");
    until(&mut agent_events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
    agent.set_available(true).await.expect("available");
    until(&mut agent_events, |e| {
        matches!(e, Event::Message(m) if matches!(m.message, ServerMessage::AgentStatus(_))).then_some(())
    })
    .await;
    let (customer, mut customer_events) = connect(server.config("cust-1", Role::Customer)).expect("connect");
    until(&mut customer_events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
    customer.open(Default::default()).await.expect("open");
    let id = common::opened(&mut customer_events).await;
    until(&mut agent_events, |e| {
        matches!(e, Event::Message(m) if matches!(m.message, ServerMessage::AgentAssigned(_))).then_some(())
    })
    .await;
    (customer, customer_events, agent, agent_events, id)
}

fn chat_text(event: &Event) -> Option<(u64, String)> {
    match event {
        Event::Message(m) => match &m.message {
            ServerMessage::ChatMessage(c) => Some((c.seq.get(), c.text.to_string())),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test]
async fn messages_sent_while_the_server_is_killed_arrive_once_in_order_after_it_returns() {
    let mut server = Server::start(&[]).await;
    let (customer, mut customer_events, _agent, mut agent_events, id) = pair(&server).await;
    customer.send_chat(&id, "before").await.expect("queued");
    assert_eq!(until(&mut agent_events, chat_text).await, (1, "before".into()));
    // The ack too: killed between the fan-out and the ack, the server would
    // (rightly) ack "before" again after the restart, from the replayed outbox.
    let acked = until(&mut customer_events, |e| match e {
        Event::Sent(ack) => Some(ack.seq.get()),
        _ => None,
    })
    .await;
    assert_eq!(acked, 1);

    server.signal("KILL").await;
    // The customer notices (a closed socket), and keeps trying with backoff.
    let mut attempts: Vec<(Instant, u64)> = Vec::new();
    until(&mut customer_events, |e| matches!(e, Event::State(ConnectionState::Reconnecting { .. })).then_some(()))
        .await;
    for n in 1..=5 {
        customer.send_chat(&id, &format!("offline {n}")).await.expect("queued while down");
    }
    // Watch two failed attempts while the server is down.
    while attempts.len() < 3 {
        let retry = until(&mut customer_events, |e| match e {
            Event::State(ConnectionState::Reconnecting { retry_in_ms, .. }) => Some(*retry_in_ms),
            _ => None,
        })
        .await;
        attempts.push((Instant::now(), retry));
    }
    server.restart().await;
    let sent: Vec<u64> = {
        let mut acked = Vec::new();
        while acked.len() < 5 {
            if let Some(seq) = until(&mut customer_events, |e| match e {
                Event::Sent(ack) => Some(Some(ack.seq.get())),
                Event::State(ConnectionState::Reconnecting { retry_in_ms, .. }) => {
                    attempts.push((Instant::now(), *retry_in_ms));
                    None
                }
                _ => None,
            })
            .await
            {
                acked.push(seq);
            }
        }
        acked
    };
    assert_eq!(sent, [2, 3, 4, 5, 6]);
    let mut received = Vec::new();
    while received.len() < 5 {
        received.push(until(&mut agent_events, chat_text).await);
    }
    let expected: Vec<(u64, String)> = (1..=5).map(|n| (n + 1, format!("offline {n}"))).collect();
    assert_eq!(received, expected, "exactly once, in order");

    // The reconnect delays follow the backoff: attempt n waits at most
    // min(30 s, 1 s · 2ⁿ⁻¹) (full jitter), and the waits really happened.
    for (n, pair) in attempts.windows(2).enumerate() {
        let ((at, retry), (next_at, _)) = (pair[0], pair[1]);
        let ceiling = (1_000u64 << (n + 1)).min(30_000);
        assert!(retry <= ceiling, "attempt {n}: {retry} ms > {ceiling} ms");
        let waited = next_at.duration_since(at).as_millis() as u64;
        assert!(waited + 50 >= retry, "attempt {n}: reconnected after {waited} ms, before its {retry} ms delay");
    }
}

#[tokio::test]
async fn a_refused_token_stops_the_client_for_good() {
    let server = Server::start(&[]).await;
    let mut config = server.config("cust-1", Role::Customer);
    config.tokens = TokenProvider::fixed("not-a-token");
    let (_client, mut events) = connect(config).expect("connect");
    let code = until(&mut events, |e| match e {
        Event::State(ConnectionState::Stopped { close_code }) => Some(*close_code),
        _ => None,
    })
    .await;
    assert_eq!(code, Some(CloseCode::UNAUTHORIZED));
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(event) = events.next().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the event stream ends");
    assert!(rest.iter().all(|e| !matches!(e, Event::State(ConnectionState::Connecting))), "no reconnect: {rest:?}");
}

#[tokio::test]
async fn graceful_shutdown_1001_reconnects_and_resumes() {
    let mut server = Server::start(&[]).await;
    let (customer, mut customer_events, _agent, mut agent_events, id) = pair(&server).await;
    server.signal("TERM").await;
    let code = until(&mut customer_events, |e| match e {
        Event::State(ConnectionState::Reconnecting { close_code, .. }) => Some(*close_code),
        _ => None,
    })
    .await;
    assert_eq!(code, Some(CloseCode::GOING_AWAY));
    server.restart().await;
    until(&mut customer_events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
    customer.send_chat(&id, "after restart").await.expect("queued");
    assert_eq!(until(&mut agent_events, chat_text).await, (1, "after restart".into()));
}

/// An application that stops reading events backs the client up until the
/// server cuts it off (4001); the client reconnects and resumes without loss.
#[tokio::test]
async fn a_slow_consumer_closed_with_4001_resumes_without_loss() {
    // A replay (--max-replay) must fit the queue, or every rejoin would overflow it again.
    let server =
        Server::start(&["--outbound-queue", "16", "--max-replay", "8", "--messages-per-second", "100000"]).await;
    let (customer, mut customer_events, _agent, mut agent_events, id) = pair_with(&server, Some(16 * 1024)).await;
    // More than the socket buffers and the client's event queue hold.
    const N: u64 = 5_000;
    let text = "x".repeat(3_900);
    // In rounds whose acks fit the sender's own small queue, each
    // acknowledged before the next.
    for round in 0..N / 10 {
        for n in 0..10 {
            customer.send_chat(&id, &format!("{} {text}", round * 10 + n)).await.expect("queued");
        }
        for _ in 0..10 {
            until(&mut customer_events, |e| matches!(e, Event::Sent(_)).then_some(())).await;
        }
    }
    // Only now does the agent's application read: the client fell behind
    // meanwhile, and the server cut it off. Its close frame may be stuck
    // behind the backlog, so the client may see the close as an abrupt one.
    let mut seqs = Vec::new();
    let mut reconnected = false;
    while seqs.len() < N as usize {
        let event = tokio::time::timeout(common::WAIT, agent_events.next()).await.expect("in time").expect("running");
        match event {
            Event::State(ConnectionState::Reconnecting { close_code, .. }) => {
                assert!(close_code.is_none_or(|c| c == CloseCode::SLOW_CONSUMER), "{close_code:?}");
                reconnected = true;
            }
            other => {
                if let Some((seq, _)) = chat_text(&other) {
                    seqs.push(seq);
                }
            }
        }
    }
    assert!(reconnected, "the client never had to reconnect");
    let metrics = common::http_get(server.port, "/metrics").await;
    assert!(metrics.contains("petchat_closes_total{code=\"4001\"}"), "the server never closed a slow consumer");
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "every message once, in order");
}

#[tokio::test]
async fn the_token_can_travel_in_the_subprotocol() {
    let server = Server::start(&[]).await;
    let mut config = server.config("cust-1", Role::Customer);
    config.auth = petchat_client::AuthMode::Subprotocol;
    let (_client, mut events) = connect(config).expect("connect");
    let user = until(&mut events, |e| match e {
        Event::Message(m) => match &m.message {
            ServerMessage::SessionReady(ready) => Some(ready.user.id.to_string()),
            _ => None,
        },
        _ => None,
    })
    .await;
    assert_eq!(user, "cust-1");
}
