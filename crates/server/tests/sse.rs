//! Server-sent events (SPEC §14) over real HTTP: Bearer and single-use
//! tickets, topic events and notifications with one cursor, resume from
//! `Last-Event-ID`, keep-alive comments, the headers that keep proxies from
//! buffering, refusals before the stream starts, and streams counted like
//! sockets.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT, http_post};
use petchat_protocol::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "backend-key";

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.api_keys = vec![KEY.into()];
        config.topics.public_topics = vec!["pets:*".parse().expect("pattern")];
        config.limits.sse_keepalive_ms = 300;
        config.limits.max_connections_per_user = 2;
    })
    .await
}

/// An open SSE response: its head, then its events as they come.
struct Events {
    stream: TcpStream,
    /// Bytes read and not yet unchunked.
    raw: Vec<u8>,
    /// Unchunked text not yet split into events.
    text: String,
    head: String,
}

/// One SSE event block: its fields, or a comment.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Option<Value>,
    comment: Option<String>,
}

impl Events {
    /// GETs `path` with `headers`; returns the status and, for a 200, the stream.
    async fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, Option<Self>, String) {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n", server.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let split = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("a head in time").expect("read");
            assert!(n > 0, "the connection closed before the head");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let rest = raw[split + 4..].to_vec();
        let mut events = Self { stream, raw: rest, text: String::new(), head };
        if status == 200 {
            (status, Some(events), String::new())
        } else {
            // An error body: read what the server sends (it may be chunked or sized).
            let _ = tokio::time::timeout(Duration::from_millis(300), events.fill()).await;
            let body = events.unchunk_all();
            common::openapi::check("GET", path, status, &body);
            (status, None, body)
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let n = self.stream.read(&mut buf).await.expect("read");
        self.raw.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// Moves whole chunks from `raw` to `text`.
    fn unchunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("a chunk size");
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..line_end + 2 + size + 2);
            self.text.push_str(std::str::from_utf8(&data).expect("UTF-8"));
        }
    }

    fn unchunk_all(&mut self) -> String {
        if self.header("transfer-encoding").is_some() {
            self.unchunk();
            std::mem::take(&mut self.text)
        } else {
            String::from_utf8_lossy(&std::mem::take(&mut self.raw)).into_owned()
        }
    }

    /// The next event or comment block.
    async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, async {
            loop {
                self.unchunk();
                if let Some(end) = self.text.find("\n\n") {
                    let block: String = self.text.drain(..end + 2).collect();
                    return parse(&block);
                }
                assert!(self.fill().await, "the stream ended");
            }
        })
        .await
        .expect("an event in time")
    }

    /// The next event that is not a comment.
    async fn next_event(&mut self) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = self.next().await;
            if event.comment.is_none() {
                return event;
            }
            assert!(tokio::time::Instant::now() < deadline, "only comments for {WAIT:?}");
        }
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event { id: None, event: None, data: None, comment: None };
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            event.comment = Some(comment.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(": ") {
            match field {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "data" => {
                    let frame = common::checked_frame(value);
                    event.data = Some(frame);
                }
                _ => {}
            }
        }
    }
    event
}

async fn publish(server: &TestServer, topic: &str, n: u64) {
    let body = json!({"topic": topic, "event": "pet.available", "data": {"n": n}}).to_string();
    let (status, answer) = http_post(server, "/v1/api/publish", Some(KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn notify(server: &TestServer, user: &str, title: &str) {
    let body = json!({"userId": user, "kind": "order.shipped", "title": title, "body": ""}).to_string();
    let (status, answer) = http_post(server, "/v1/api/notify", Some(KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_stream_carries_topic_events_and_notifications_with_one_cursor_and_resumes_after_it() {
    let server = server().await;
    notify(&server, "cust-1", "before").await;
    let bearer = format!("Bearer {}", server.token("cust-1", Role::Customer));
    let (status, events, _) =
        Events::open(&server, "/v1/sse?topics=pets:1,pets:2", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200);
    let mut events = events.expect("a stream");
    assert_eq!(events.header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(events.header("x-accel-buffering").as_deref(), Some("no"));
    assert!(events.header("cache-control").is_some_and(|v| v.contains("no-cache")));

    // Without Last-Event-ID: the unread notification first, then live events only.
    let first = events.next_event().await;
    assert_eq!(first.event.as_deref(), Some("notification"));
    assert_eq!(first.data.as_ref().expect("data")["data"]["title"], "before");
    assert_eq!(first.id.as_deref(), Some("n=1;pets:1=0;pets:2=0"), "the cursor names every topic of the stream");
    publish(&server, "pets:1", 1).await;
    publish(&server, "pets:2", 1).await;
    notify(&server, "cust-1", "after").await;
    let mut ids = Vec::new();
    for expected in ["topic.event", "topic.event", "notification"] {
        let event = events.next_event().await;
        assert_eq!(event.event.as_deref(), Some(expected), "{event:?}");
        assert_eq!(event.data.as_ref().expect("data")["type"], expected);
        ids.push(event.id.expect("an id"));
    }
    assert_eq!(ids, ["n=1;pets:1=1;pets:2=0", "n=1;pets:1=1;pets:2=1", "n=2;pets:1=1;pets:2=1"]);
    drop(events);

    // Resumed after the first topic event: exactly the two items after it.
    publish(&server, "pets:1", 2).await;
    let (status, events, _) = Events::open(
        &server,
        "/v1/sse?topics=pets:1,pets:2",
        &[("Authorization", &bearer), ("Last-Event-ID", &ids[0])],
    )
    .await;
    assert_eq!(status, 200);
    let mut events = events.expect("a stream");
    let mut got = Vec::new();
    for _ in 0..3 {
        let event = events.next_event().await;
        let data = event.data.expect("data");
        got.push((event.event.expect("a type"), data["data"]["seq"].as_u64().expect("a seq")));
    }
    got.sort();
    assert_eq!(got, [("notification".into(), 2), ("topic.event".into(), 1), ("topic.event".into(), 2)]);
    // The stream is never silent: a comment comes after the keep-alive interval.
    let quiet = events.next().await;
    assert!(quiet.comment.is_some(), "{quiet:?}");
}

#[tokio::test]
async fn a_new_event_source_resumes_from_last_event_id_in_the_query() {
    // An EventSource cannot send Last-Event-ID when it is opened, only when
    // it reconnects by itself, which a spent ticket cannot: a page opening a
    // new one on a new ticket puts the cursor in the query.
    let server = server().await;
    let bearer = format!("Bearer {}", server.token("cust-1", Role::Customer));
    let (_, events, _) = Events::open(&server, "/v1/sse?topics=pets:1", &[("Authorization", &bearer)]).await;
    let mut events = events.expect("a stream");
    publish(&server, "pets:1", 1).await;
    let first = events.next_event().await.id.expect("an id");
    drop(events);
    publish(&server, "pets:1", 2).await;
    publish(&server, "pets:1", 3).await;
    let encoded = first.replace('=', "%3D").replace(';', "%3B").replace(':', "%3A");
    let path = format!("/v1/sse?topics=pets:1&lastEventId={encoded}");
    let (status, events, body) = Events::open(&server, &path, &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let mut events = events.expect("a stream");
    for seq in [2, 3] {
        assert_eq!(events.next_event().await.data.expect("data")["data"]["seq"], seq);
    }

    // The header, which a reconnecting EventSource sends, wins over the query.
    let (_, events, _) =
        Events::open(&server, &path, &[("Authorization", &bearer), ("Last-Event-ID", "n=0;pets:1=2")]).await;
    assert_eq!(events.expect("a stream").next_event().await.data.expect("data")["data"]["seq"], 3);
    let (status, _, body) =
        Events::open(&server, "/v1/sse?topics=pets:1&lastEventId=garbage", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once_and_bad_requests_are_refused_before_the_stream() {
    let server = server().await;
    let token = server.token("cust-1", Role::Customer);
    let (status, ticket) = {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let request = format!(
            "POST /v1/sse/tickets HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status: u16 = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        common::openapi::check("POST", "/v1/sse/tickets", status, &body);
        (status, serde_json::from_str::<Value>(&body).expect("JSON"))
    };
    assert_eq!(status, 200, "{ticket}");
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_owned();
    assert!(!ticket.contains(&token[..20]), "the ticket is not the token");
    let path = format!("/v1/sse?topics=pets:1&ticket={ticket}");
    let (status, events, _) = Events::open(&server, &path, &[]).await;
    assert_eq!(status, 200);
    publish(&server, "pets:1", 1).await;
    assert_eq!(events.expect("a stream").next_event().await.event.as_deref(), Some("topic.event"));
    let (status, _, body) = Events::open(&server, &path, &[]).await;
    assert_eq!(status, 401, "a ticket is good once: {body}");

    let bearer = format!("Bearer {token}");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case<'_>; 5] = [
        ("/v1/sse?topics=pets:1", vec![], 401),
        ("/v1/sse?topics=pets:1&ticket=0123", vec![], 401),
        ("/v1/sse?topics=pets:1", vec![("Authorization", "Bearer not-a-token")], 401),
        ("/v1/sse?topics=orders:1", vec![("Authorization", &bearer)], 403),
        ("/v1/sse?topics=Pets", vec![("Authorization", &bearer)], 400),
    ];
    for (path, headers, expected) in cases {
        let (status, _, body) = Events::open(&server, path, &headers).await;
        assert_eq!(status, expected, "{path}: {body}");
        if !body.is_empty() {
            let answer: Value = serde_json::from_str(body.trim()).expect("a JSON error");
            assert!(answer["error"]["code"].is_string(), "{answer}");
        }
    }
    let (status, _, _) =
        Events::open(&server, "/v1/sse?topics=pets:1", &[("Authorization", &bearer), ("Last-Event-ID", "garbage")])
            .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn streams_count_toward_the_per_user_connection_cap() {
    let server = server().await;
    let bearer = format!("Bearer {}", server.token("cust-1", Role::Customer));
    let _socket = server.connect("cust-1", Role::Customer).await;
    let (status, stream, _) = Events::open(&server, "/v1/sse?topics=pets:1", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200);
    let (status, _, body) = Events::open(&server, "/v1/sse?topics=pets:1", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 429, "the cap of 2 is reached: {body}");
    drop(stream);
    // The closed stream gives its place back.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _, _) = Events::open(&server, "/v1/sse?topics=pets:1", &[("Authorization", &bearer)]).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the stream's place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
