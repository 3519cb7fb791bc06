//! The tokio driver: sockets, timers and commands around one `Session`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use petchat_protocol::CloseCode;
use petchat_protocol::handshake::{BEARER_PREFIX, SUBPROTOCOL, TOKEN_QUERY_PARAM};
use petchat_protocol::session::{Action, ConnectionState, Event, Millis, Session};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use crate::token::TokenFuture;
use crate::{AuthMode, ClientConfig, Command};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs the session until it stops for good.
pub(crate) async fn run(
    config: ClientConfig,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<crate::Event>,
) {
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as Millis;
    let mut session = Session::new(config.session.clone());
    if let Some(file) = &config.outbox_file {
        match file.load() {
            Ok(saved) => session.restore_outbox(now(), saved),
            Err(e) => warn!(error = %e, "the saved outbox could not be read"),
        }
    }
    session.start(now());
    let mut socket: Option<Socket> = None;
    let mut fresh_token: Option<String> = None;
    let mut on_stop: Option<oneshot::Sender<()>> = None;
    let mut on_idle: Vec<oneshot::Sender<()>> = Vec::new();
    let mut commands_open = true;
    // A fresh token on its way for the live connection (`Action::RefreshToken`).
    let mut refreshing: Option<TokenFuture> = None;

    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Connect => {
                    let token = match fresh_token.take() {
                        Some(token) => Some(token),
                        None => config.tokens.get(false).await,
                    };
                    let Some(token) = token else {
                        session.handle_closed(now(), Some(CloseCode::UNAUTHORIZED), "no token");
                        continue;
                    };
                    match tokio::time::timeout(config.connect_timeout, open(&config, &token)).await {
                        Ok(Ok(ws)) => {
                            socket = Some(ws);
                            session.handle_connected(now());
                        }
                        Ok(Err(e)) => {
                            // The error never names the URL, but a token pasted into it would be.
                            let reason = e.to_string().replace(token.as_str(), "<token>");
                            debug!(error = %reason, "connecting failed");
                            session.handle_closed(now(), None, &reason);
                        }
                        Err(_) => {
                            let reason = format!("no answer within {} s", config.connect_timeout.as_secs_f64());
                            session.handle_closed(now(), None, &reason);
                        }
                    }
                }
                Action::RefreshToken => {
                    // Asked on the side, so that frames keep flowing while the provider works.
                    let tokens = config.tokens.clone();
                    refreshing = Some(Box::pin(async move { tokens.get(true).await }));
                }
                Action::Close { code, reason } => {
                    if let Some(mut ws) = socket.take() {
                        let frame = CloseFrame { code: code.code().into(), reason: reason.into() };
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
                    }
                }
            }
        }

        if let Some(ws) = socket.as_mut() {
            let mut wrote = false;
            let mut failed = false;
            while let Some(frame) = session.poll_transmit() {
                if ws.feed(Message::Text(frame.into())).await.is_err() {
                    failed = true;
                    break;
                }
                wrote = true;
            }
            if failed || (wrote && ws.flush().await.is_err()) {
                socket = None;
                session.handle_closed(now(), None, "writing to the socket failed");
                continue;
            }
        }

        let mut pending: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
        if pending.iter().any(|e| matches!(e, Event::TokenNeeded { .. }))
            && let Some(token) = config.tokens.get(true).await
        {
            // A fresh token overturns the stop: the application sees the
            // token request and the reconnect, not a stop that did not last.
            fresh_token = Some(token);
            pending.retain(|e| !matches!(e, Event::State(ConnectionState::Stopped { .. })));
            session.token_refreshed(now());
            pending.extend(std::iter::from_fn(|| session.poll_event()));
        }
        for event in pending {
            match &event {
                Event::Queued { .. } | Event::Sent(_) | Event::Failed { .. } | Event::Dropped { .. } => {
                    if let Some(file) = &config.outbox_file
                        && let Err(e) = file.save(session.outbox())
                    {
                        warn!(error = %e, "the outbox could not be saved");
                    }
                }
                _ => {}
            }
            // An application that stopped reading events slows the client down, never drops them.
            let _ = events.send(event).await;
        }

        if session.is_idle() {
            for reply in on_idle.drain(..) {
                let _ = reply.send(());
            }
        }

        if matches!(session.state(), ConnectionState::Stopped { .. }) && session.poll_timeout().is_none() {
            // Events emitted by the last step were delivered above; nothing will restart us.
            if fresh_token.is_none() {
                break;
            }
        }

        let deadline = session.poll_timeout();
        tokio::select! {
            command = commands.recv(), if commands_open => match command {
                Some(Command::Chat { conversation, text, reply }) => {
                    let _ = reply.send(session.send_chat(now(), &conversation, &text));
                }
                Some(Command::Send { message, id, reply }) => {
                    let _ = reply.send(session.send(now(), message, id));
                }
                Some(Command::Typing(conversation)) => session.typing(now(), &conversation),
                Some(Command::StopTyping(conversation)) => session.stop_typing(&conversation),
                Some(Command::WhenIdle(reply)) => on_idle.push(reply),
                Some(Command::Disconnect(reply)) => {
                    on_stop = Some(reply);
                    session.disconnect(now());
                }
                None => {
                    commands_open = false;
                    session.disconnect(now());
                }
            },
            frame = next_frame(&mut socket) => match frame {
                Some(Ok(Message::Text(text))) => session.handle_frame(now(), text.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    socket = None;
                    let (code, reason) = frame.map_or((None, String::new()), |f| (Some(CloseCode(f.code.into())), f.reason.to_string()));
                    session.handle_closed(now(), code, &reason);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    socket = None;
                    session.handle_closed(now(), None, &e.to_string());
                }
                None => {
                    socket = None;
                    session.handle_closed(now(), None, "the connection ended without a close frame");
                }
            },
            token = async { refreshing.as_mut().expect("guarded by is_some").await }, if refreshing.is_some() => {
                refreshing = None;
                // No token: the server closes with 4501 at expiry, and the TokenNeeded path asks again.
                if let Some(token) = token {
                    session.refresh_token(now(), token);
                }
            }
            () = sleep_until(started, deadline) => session.handle_timeout(now()),
        }
    }
    if let Some(mut ws) = socket.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    if let Some(reply) = on_stop {
        let _ = reply.send(());
    }
}

async fn open(config: &ClientConfig, token: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = match config.auth {
        AuthMode::Query => {
            let separator = if config.url.contains('?') { '&' } else { '?' };
            format!("{}{separator}{TOKEN_QUERY_PARAM}={token}", config.url)
        }
        AuthMode::Subprotocol => config.url.clone(),
    };
    let mut request = url.into_client_request()?;
    let protocols = match config.auth {
        AuthMode::Query => SUBPROTOCOL.to_owned(),
        AuthMode::Subprotocol => format!("{SUBPROTOCOL}, {BEARER_PREFIX}{token}"),
    };
    let value =
        HeaderValue::from_str(&protocols).map_err(|e| tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", value);
    let Some(size) = config.receive_buffer_bytes else {
        // Small frames must not wait for Nagle's algorithm (a 40 ms stall per round trip).
        let (ws, _response) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        return Ok(ws);
    };
    let host = request.uri().host().unwrap_or("127.0.0.1").trim_matches(['[', ']']).to_owned();
    let port = request.uri().port_u16().unwrap_or(if request.uri().scheme_str() == Some("wss") { 443 } else { 80 });
    let address = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host"))?;
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(size)?;
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(request, stream, None, None).await?;
    Ok(ws)
}

async fn next_frame(socket: &mut Option<Socket>) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match socket.as_mut() {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(started: Instant, deadline: Option<Millis>) {
    // A deadline beyond what an `Instant` can hold is as good as never.
    match deadline.and_then(|at| started.checked_add(Duration::from_millis(at))) {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
