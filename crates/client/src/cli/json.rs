//! `petchat chat --json`: client messages in, one per stdin line; server
//! messages and `client.*` events out, one per stdout line (SPEC §9).

use std::io::Write;

use petchat_client::{Client, ClientConfig, connect};
use petchat_protocol::session::{ConnectionState, Event};
use petchat_protocol::{ClientEnvelope, ClientMessageId};
use serde_json::{Value, json};

use super::{Failure, exit, stopped};

/// After stdin closed and everything was sent: how long without a server
/// message before the CLI leaves, so replies to the last requests are printed.
const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

pub(crate) async fn chat_json(config: ClientConfig) -> Result<(), Failure> {
    let (client, mut events) = connect(config).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let mut lines = super::stdin_lines();
    let mut input_open = true;
    let mut leaving = false;
    // Once stdin closes: wait until everything was sent and acknowledged,
    // then until the replies stop coming, then leave.
    let mut drained = false;
    let mut stopping = false;
    let idle = client.clone();
    let mut idle_wait = std::pin::pin!(async move { idle.idle().await });
    let quiet = tokio::time::sleep(QUIET);
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => input(&client, &line).await,
                None => input_open = false,
            },
            result = &mut idle_wait, if !input_open && !drained && !stopping => {
                match result {
                    Ok(()) => {
                        drained = true;
                        quiet.as_mut().reset(tokio::time::Instant::now() + QUIET);
                    }
                    // The client is stopping: its last events say why.
                    Err(_) => stopping = true,
                }
            },
            () = &mut quiet, if drained && !leaving => {
                leaving = true;
                client.disconnect().await;
            },
            event = events.next() => {
                let Some(event) = event else {
                    return if leaving { Ok(()) } else { Err(Failure::new(exit::OTHER, "the client stopped")) };
                };
                print(&event_json(&event));
                if let Event::State(ConnectionState::Stopped { close_code }) = event {
                    return if leaving { Ok(()) } else { Err(stopped(close_code)) };
                }
                if drained {
                    quiet.as_mut().reset(tokio::time::Instant::now() + QUIET);
                }
            }
        }
    }
}

/// One input line: a client message in the wire envelope; a missing
/// `clientMessageId` of a `chat.send` is filled in.
async fn input(client: &Client, line: &str) {
    let mut value: Value = match serde_json::from_str(line) {
        Ok(value) => value,
        Err(e) => {
            return print(&client_event("client.error", json!({"code": "invalid_json", "message": e.to_string()})));
        }
    };
    if value["type"] == "chat.send"
        && let Some(data) = value.get_mut("data").and_then(Value::as_object_mut)
        && !data.contains_key("clientMessageId")
    {
        let id = ClientMessageId::from_random_bytes(rand::random());
        data.insert("clientMessageId".into(), json!(id.as_str()));
    }
    match ClientEnvelope::decode(&value.to_string()) {
        Ok(envelope) => {
            if let Err(e) = client.send(envelope.message, envelope.id).await {
                print(&client_event("client.error", json!({"code": "refused", "message": e.to_string()})));
            }
        }
        Err(e) => print(&client_event(
            "client.error",
            json!({"code": e.code().as_str(), "message": e.message(), "field": e.field()}),
        )),
    }
}

/// An event as one JSON line: server messages as received, the client's own as `client.*`.
fn event_json(event: &Event) -> Value {
    event.to_json(now())
}

fn now() -> petchat_protocol::Timestamp {
    petchat_protocol::Timestamp::from_unix_ms(jiff::Timestamp::now().as_millisecond())
        .expect("the clock reads a year between 1 and 9999")
}

fn client_event(kind: &str, data: Value) -> Value {
    json!({"type": kind, "data": data, "timestamp": now()})
}

fn print(value: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is not worth a panic.
    let _ = writeln!(out, "{value}").and_then(|()| out.flush());
}
