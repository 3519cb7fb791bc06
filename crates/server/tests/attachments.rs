//! Attachments over real sockets (docs/protocol.md, "Attachments"): uploads
//! typed by their content and bounded in size, sent by id in a `chat.send`,
//! carried by `chat.message` live, replayed and in the history, and served
//! to the conversation's members only; and a flood of oversized uploads
//! against a `petchat-server` process that keeps its memory bounded. Every
//! ws frame is checked against the schema and every JSON answer against
//! openapi.json (tests/common).

mod common;

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::ServerProcess;
use common::{SECRET, TestDatabase, TestServer, WAIT, chat};
use petchat_protocol::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer: status, head and body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then_some(value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How a request sends its body.
enum Body<'a> {
    None,
    /// With a `Content-Length`.
    Sized(&'a [u8]),
    /// `Transfer-Encoding: chunked`, in chunks of 64 KiB.
    Chunked(&'a [u8]),
}

/// One request on its own connection; the answer is checked against openapi.json.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Body<'_>,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Body::None => head.push_str("\r\n"),
        Body::Sized(bytes) => head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len())),
        Body::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
    }
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        match body {
            Body::None => {}
            Body::Sized(bytes) => writer.write_all(bytes).await?,
            Body::Chunked(bytes) => {
                for chunk in bytes.chunks(64 * 1024) {
                    writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
                    writer.write_all(chunk).await?;
                    writer.write_all(b"\r\n").await?;
                }
                writer.write_all(b"0\r\n\r\n").await?;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let mut response = Vec::new();
    let read = reader.read_to_end(&mut response);
    // The server may answer (413, 415) before the body is all sent, and stop reading it.
    let (_, read) = tokio::time::timeout(WAIT, async { tokio::join!(write, read) }).await.expect("an answer in time");
    if let Err(e) = read
        && response.is_empty()
    {
        panic!("{method} {path}: no answer: {e}");
    }
    parse(method, path, &response)
}

fn parse(method: &str, path: &str, response: &[u8]) -> Answer {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let answer = Answer { status, head, body };
    if answer.header("content-type") == Some("application/json") {
        common::openapi::check(method, path, status, &answer.text());
    } else {
        common::openapi::check(method, path, status, "");
    }
    answer
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).expect("size").trim(), 16).expect("hex");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 4 + size..];
    }
    out
}

async fn upload(server: &TestServer, conversation: &str, token: &str, name: &str, bytes: &[u8]) -> Answer {
    let path = format!("/v1/conversations/{conversation}/attachments?name={name}");
    request(server.addr, "POST", &path, Some(token), &[("Content-Type", "image/png")], Body::Sized(bytes)).await
}

async fn fetch(server: &TestServer, conversation: &str, id: &str, suffix: &str, token: Option<&str>) -> Answer {
    let path = format!("/v1/conversations/{conversation}/attachments/{id}{suffix}");
    request(server.addr, "GET", &path, token, &[], Body::None).await
}

/// A PNG of `width` × `height` pixels.
fn png(width: u32, height: u32) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 90]));
    let mut bytes = Vec::new();
    picture.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encodes");
    bytes
}

/// A small, valid PDF.
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

/// A server whose attachments go to a directory of their own.
async fn server_with(tune: impl FnOnce(&mut petchat_server::Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().to_owned();
    let server = TestServer::start_with(move |config| {
        config.attachments.attachments_dir = Some(path);
        tune(config);
    })
    .await;
    (server, dir)
}

fn send_with(conversation: &str, text: &str, attachments: &[&str]) -> Value {
    let mut frame = chat(conversation, text);
    frame["data"]["attachments"] = json!(attachments);
    frame
}

#[tokio::test]
async fn a_photo_and_a_pdf_are_typed_by_content_sent_by_id_and_served_to_members() {
    let (server, dir) = server_with(|_| {}).await;
    let (mut customer, mut agent, id) = server.pair("att-c1", "att-a1").await;
    let customer_token = server.token("att-c1", Role::Customer);
    let agent_token = server.token("att-a1", Role::Agent);

    let photo = png(640, 480);
    let answer = upload(&server, &id, &customer_token, "..%2F..%2Frash%20photo.png", &photo).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let photo_meta = answer.json();
    assert_eq!(photo_meta["contentType"], "image/png");
    assert_eq!(photo_meta["size"], photo.len());
    assert_eq!((photo_meta["width"].as_u64(), photo_meta["height"].as_u64()), (Some(640), Some(480)));
    assert_eq!(photo_meta["name"], "rash photo.png", "the path is dropped, the name kept for display");
    let photo_id = photo_meta["id"].as_str().expect("id").to_owned();
    // Stored under its id, never under the client's name.
    assert!(dir.path().join(&photo_id).is_file());
    assert!(!dir.path().join("rash photo.png").exists());

    // The client says image/png; the content says PDF.
    let answer = upload(&server, &id, &customer_token, "receipt.pdf", PDF).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let pdf_meta = answer.json();
    assert_eq!(pdf_meta["contentType"], "application/pdf");
    assert_eq!(pdf_meta["size"], PDF.len());
    assert!(pdf_meta.get("width").is_none() && pdf_meta.get("height").is_none(), "{pdf_meta}");
    let pdf_id = pdf_meta["id"].as_str().expect("id").to_owned();

    // Not sent yet: only its uploader sees it.
    assert_eq!(fetch(&server, &id, &photo_id, "", Some(&agent_token)).await.status, 404);
    assert_eq!(fetch(&server, &id, &photo_id, "", Some(&customer_token)).await.status, 200);

    let frame = send_with(&id, "the rash, and the receipt", &[&photo_id, &pdf_id]);
    let key = frame["data"]["clientMessageId"].clone();
    customer.send(frame.clone()).await;
    let ack = customer.recv_until("chat.ack").await;
    let message = agent.recv_until("chat.message").await;
    assert_eq!(message["data"]["attachments"], json!([photo_meta, pdf_meta]));
    assert_eq!(message["data"]["messageId"], ack["data"]["messageId"]);

    // A resent chat.send (same clientMessageId) gets the original ack, and no second message.
    customer.send(frame).await;
    let again = customer.recv_until("chat.ack").await;
    assert_eq!(again["data"]["messageId"], ack["data"]["messageId"]);
    assert_eq!(again["data"]["clientMessageId"], key);
    // A new message cannot send them again.
    customer.send(send_with(&id, "once more", &[&photo_id])).await;
    let error = customer.recv_until("error").await;
    assert_eq!(error["data"]["code"], "invalid_message", "{error}");

    // The file, to the agent now that it is sent: the same bytes, with the safe headers.
    let file = fetch(&server, &id, &photo_id, "", Some(&agent_token)).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.body, photo);
    assert_eq!(file.header("content-type"), Some("image/png"));
    assert_eq!(file.header("x-content-type-options"), Some("nosniff"));
    assert!(file.header("content-security-policy").is_some_and(|csp| csp.contains("sandbox")));
    assert!(file.header("cache-control").is_some_and(|c| c.starts_with("private")));
    assert!(file.header("content-disposition").is_some_and(|d| d.starts_with("inline;")), "{}", file.head);
    let thumbnail = fetch(&server, &id, &photo_id, "/thumbnail", Some(&agent_token)).await;
    assert_eq!(thumbnail.status, 200);
    assert_eq!(thumbnail.header("content-type"), Some("image/jpeg"));
    let small = image::load_from_memory_with_format(&thumbnail.body, image::ImageFormat::Jpeg).expect("a JPEG");
    assert_eq!((small.width(), small.height()), (320, 240));
    let pdf = fetch(&server, &id, &pdf_id, "", Some(&agent_token)).await;
    assert_eq!((pdf.status, pdf.body.as_slice()), (200, PDF));
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert!(pdf.header("content-disposition").is_some_and(|d| d.starts_with("attachment;")), "{}", pdf.head);
    let none = fetch(&server, &id, &pdf_id, "/thumbnail", Some(&agent_token)).await;
    assert_eq!((none.status, none.json()["code"].as_str()), (404, Some("not_found")));

    // Strangers: no token, another customer, an agent who is not assigned.
    assert_eq!(fetch(&server, &id, &photo_id, "", None).await.status, 401);
    assert_eq!(fetch(&server, &id, &photo_id, "", Some("not-a-token")).await.status, 401);
    let stranger = server.token("att-stranger", Role::Customer);
    assert_eq!(fetch(&server, &id, &photo_id, "", Some(&stranger)).await.status, 403);
    assert_eq!(fetch(&server, &id, &photo_id, "/thumbnail", Some(&stranger)).await.status, 403);
    let other_agent = server.token("att-a-other", Role::Agent);
    assert_eq!(fetch(&server, &id, &photo_id, "", Some(&other_agent)).await.status, 403);
    assert_eq!(fetch(&server, &id, "no-such-attachment", "", Some(&agent_token)).await.status, 404);

    // The replay of a join, and the history endpoint, carry them too.
    let mut phone = server.connect("att-a1", Role::Agent).await;
    phone.send(json!({"type": "conversation.join", "data": {"conversationId": id}})).await;
    let replayed = phone.recv_until("chat.message").await;
    assert_eq!(replayed["data"]["attachments"], json!([photo_meta, pdf_meta]));
    let history =
        request(server.addr, "GET", &format!("/v1/conversations/{id}/messages"), Some(&agent_token), &[], Body::None)
            .await;
    assert_eq!(history.status, 200);
    assert_eq!(history.json()["messages"][0]["attachments"], json!([photo_meta, pdf_meta]));
}

#[tokio::test]
async fn disguised_broken_empty_and_oversized_files_are_refused() {
    let (server, dir) = server_with(|config| {
        config.attachments.max_attachment_bytes = 200_000;
        config.attachments.max_image_pixels = 100_000;
    })
    .await;
    let (_customer, _agent, id) = server.pair("att-c2", "att-a2").await;
    let token = server.token("att-c2", Role::Customer);

    // A Windows executable named photo.png and sent as image/png.
    let exe = [b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff".as_slice(), &[0u8; 4000]].concat();
    let answer = upload(&server, &id, &token, "photo.png", &exe).await;
    assert_eq!((answer.status, answer.json()["code"].as_str()), (415, Some("invalid_message")));
    // An HTML page (script on the chat's origin, if it were served as such).
    assert_eq!(upload(&server, &id, &token, "x.png", b"<html><script>alert(1)</script></html>").await.status, 415);
    // It starts like a PNG and is not one.
    let fake = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 5000]].concat();
    assert_eq!(upload(&server, &id, &token, "fake.png", &fake).await.status, 415);
    assert_eq!(upload(&server, &id, &token, "empty.png", b"").await.status, 400);

    // Too many pixels (500 × 500 > 100,000), a small file all the same.
    let answer = upload(&server, &id, &token, "big.png", &png(500, 500)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.json()["message"].as_str().is_some_and(|m| m.contains("pixels")), "{}", answer.text());

    // A Content-Length above the cap is refused before the body is read.
    let path = format!("/v1/conversations/{id}/attachments?name=huge.png");
    let declared = [("Content-Length", "50000000")];
    let answer = request(server.addr, "POST", &path, Some(&token), &declared, Body::None).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    // Without a length, the cap stops the stream.
    let big = [png(10, 10), vec![0u8; 1_000_000]].concat();
    let answer = request(server.addr, "POST", &path, Some(&token), &[], Body::Chunked(&big)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());

    // Nothing refused left a file behind, and the server still takes a good one.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let chunked = png(100, 100);
    let answer = request(server.addr, "POST", &path, Some(&token), &[], Body::Chunked(&chunked)).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.json()["size"], chunked.len());
}

#[tokio::test]
async fn only_members_of_open_conversations_upload_but_closed_ones_still_serve() {
    let (server, _dir) = server_with(|_| {}).await;
    let (mut customer, _agent, id) = server.pair("att-c3", "att-a3").await;
    let token = server.token("att-c3", Role::Customer);
    let photo = png(64, 48);

    let path = format!("/v1/conversations/{id}/attachments");
    assert_eq!(request(server.addr, "POST", &path, None, &[], Body::Sized(&photo)).await.status, 401);
    assert_eq!(request(server.addr, "POST", &path, Some("garbage"), &[], Body::Sized(&photo)).await.status, 401);
    let stranger = server.token("att-c3-stranger", Role::Customer);
    assert_eq!(upload(&server, &id, &stranger, "a.png", &photo).await.status, 403);
    let other_agent = server.token("att-a3-other", Role::Agent);
    assert_eq!(upload(&server, &id, &other_agent, "a.png", &photo).await.status, 403);
    assert_eq!(upload(&server, "no-such-conversation", &token, "a.png", &photo).await.status, 404);

    // The agent uploads too; sent before the close, read after it.
    let agent_token = server.token("att-a3", Role::Agent);
    let sent = upload(&server, &id, &token, "a.png", &photo).await.json();
    let sent_id = sent["id"].as_str().expect("id").to_owned();
    customer.send(send_with(&id, "look", &[&sent_id])).await;
    customer.recv_until("chat.ack").await;
    assert_eq!(upload(&server, &id, &agent_token, "b.png", &photo).await.status, 201);

    customer.send(json!({"type": "conversation.close", "data": {"conversationId": id}})).await;
    customer.recv_until("conversation.closed").await;
    let answer = upload(&server, &id, &token, "late.png", &photo).await;
    assert_eq!((answer.status, answer.json()["code"].as_str()), (409, Some("conversation_closed")));
    let file = fetch(&server, &id, &sent_id, "", Some(&agent_token)).await;
    assert_eq!((file.status, file.body == photo), (200, true));
    assert_eq!(fetch(&server, &id, &sent_id, "/thumbnail", Some(&token)).await.status, 200);
}

#[tokio::test]
async fn uploads_in_flight_are_bounded_per_user() {
    let (server, _dir) = server_with(|config| config.attachments.max_uploads_per_user = 2).await;
    let (_customer, _agent, id) = server.pair("att-c4", "att-a4").await;
    let token = server.token("att-c4", Role::Customer);
    // Two uploads that send their head and a first chunk, then wait.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
        let head = format!(
            "POST /v1/conversations/{id}/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\n\r\n4\r\n%PDF\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        held.push(stream);
    }
    // The third waits for nothing: it is refused while the two are in flight.
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        let answer = upload(&server, &id, &token, "third.pdf", PDF).await;
        if answer.status == 429 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Another user is not held up by them.
    let (_c, _a, other) = server.pair("att-c4-other", "att-a4-other").await;
    let other_token = server.token("att-c4-other", Role::Customer);
    assert_eq!(upload(&server, &other, &other_token, "ok.pdf", PDF).await.status, 201);
    drop(held);
    // Once they end, the user uploads again.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = upload(&server, &id, &token, "fourth.pdf", PDF).await;
        if answer.status == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", answer.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn chat_send_takes_only_its_authors_unsent_uploads_to_that_conversation() {
    let (server, _dir) = server_with(|_| {}).await;
    let (mut customer, mut agent, id) = server.pair("att-c5", "att-a5").await;
    let (_other_customer, _other_agent, other) = server.pair("att-c5-other", "att-a5-other").await;
    let token = server.token("att-c5", Role::Customer);
    let other_token = server.token("att-c5-other", Role::Customer);
    let mine = upload(&server, &id, &token, "mine.pdf", PDF).await.json()["id"].as_str().expect("id").to_owned();
    let elsewhere =
        upload(&server, &other, &other_token, "theirs.pdf", PDF).await.json()["id"].as_str().expect("id").to_owned();

    // Another conversation's attachment; an unknown id; the customer's upload sent by the agent.
    for (by_agent, mut frame) in [
        (false, send_with(&id, "x", &[&elsewhere])),
        (false, send_with(&id, "x", &["no-such-attachment"])),
        (true, send_with(&id, "x", &[&mine])),
    ] {
        frame["id"] = json!("r");
        let client = if by_agent { &mut agent } else { &mut customer };
        client.send(frame).await;
        let error = client.recv_until("error").await;
        assert_eq!(error["data"]["code"], "invalid_message", "{error}");
        assert_eq!(error["data"]["refId"], "r");
    }
    // More than four, or one twice: refused by the schema.
    customer.send(send_with(&id, "x", &["a", "b", "c", "d", "e"])).await;
    assert_eq!(customer.recv_until("error").await["data"]["code"], "invalid_message");
    customer.send(send_with(&id, "x", &[&mine, &mine])).await;
    assert_eq!(customer.recv_until("error").await["data"]["code"], "invalid_message");
    // A refused send claimed nothing: the upload is still the customer's to send.
    customer.send(send_with(&id, "now", &[&mine])).await;
    let ack = customer.recv_until("chat.ack").await;
    let message = agent.recv_until("chat.message").await;
    assert_eq!(message["data"]["messageId"], ack["data"]["messageId"]);
    assert_eq!(message["data"]["attachments"][0]["id"], mine.as_str());
    assert_eq!(message["data"]["seq"], 1, "the refused sends took no seq");
}

/// Many concurrent uploads far over the cap, against a server process: each
/// is refused at the cap, and the server's RSS does not grow with the bytes sent.
#[tokio::test]
async fn a_flood_of_oversized_uploads_keeps_server_memory_bounded() {
    const USERS: usize = 8;
    const PER_USER: usize = 2;
    const BYTES: usize = 48 << 20;
    let database = TestDatabase::new().await;
    let dir = tempfile::tempdir().expect("a directory");
    let flags = ["--attachments-dir", dir.path().to_str().expect("utf-8"), "--max-attachment-bytes", "4000000"];
    let process = ServerProcess::start(&database.url, SECRET, &flags, "warn,petchat_server=info").await;
    let server = TestServer::at(process.addr);
    let mut conversations = Vec::new();
    let mut clients = Vec::new();
    for n in 0..USERS {
        let sub = format!("flood-{n}");
        let mut client = server.connect(&sub, Role::Customer).await;
        client.send(json!({"type": "conversation.open", "data": {"topic": "flood"}})).await;
        let opened = client.recv_until("conversation.opened").await;
        conversations.push((
            server.token(&sub, Role::Customer),
            opened["data"]["conversation"]["id"].as_str().expect("id").to_owned(),
        ));
        clients.push(client);
    }
    let before = process.rss_kib();
    let body = [png(4, 4), vec![0x5a; BYTES]].concat();
    let started = Instant::now();
    let mut uploads = tokio::task::JoinSet::new();
    for (token, id) in &conversations {
        for _ in 0..PER_USER {
            let (body, token, id) = (body.clone(), token.clone(), id.clone());
            let addr = process.addr;
            uploads.spawn(async move {
                let path = format!("/v1/conversations/{id}/attachments?name=flood.png");
                request(addr, "POST", &path, Some(&token), &[], Body::Chunked(&body)).await.status
            });
        }
    }
    let mut peak = before;
    let mut statuses = Vec::new();
    while !uploads.is_empty() {
        match tokio::time::timeout(Duration::from_millis(50), uploads.join_next()).await {
            Ok(Some(status)) => statuses.push(status.expect("an upload task")),
            Ok(None) => break,
            Err(_) => {}
        }
        peak = peak.max(process.rss_kib());
    }
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!(
        "upload flood: {} uploads of {} MiB in {:?}, RSS {before} KiB -> peak {peak} KiB, statuses {statuses:?}",
        USERS * PER_USER,
        BYTES >> 20,
        started.elapsed()
    );
    assert!(statuses.iter().all(|s| *s == 413), "{statuses:?}");
    // Sixteen uploads held whole at the cap would be 61 MiB.
    assert!(growth_mib < 24, "RSS grew by {growth_mib} MiB");
    // It still takes a good upload, and left no partial file behind.
    let (token, id) = &conversations[0];
    let path = format!("/v1/conversations/{id}/attachments?name=ok.pdf");
    assert_eq!(request(process.addr, "POST", &path, Some(token), &[], Body::Sized(PDF)).await.status, 201);
    let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").filter_map(Result::ok).collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

/// A picture of `width` × `height` pixels in `format`.
fn picture(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let picture =
        image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 60, 255]));
    let mut bytes = Vec::new();
    match format {
        image::ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(picture)
            .to_rgb8()
            .write_to(&mut Cursor::new(&mut bytes), format)
            .expect("encodes"),
        _ => picture.write_to(&mut Cursor::new(&mut bytes), format).expect("encodes"),
    }
    bytes
}

#[tokio::test]
async fn jpeg_webp_and_gif_pictures_are_known_by_their_content() {
    let (server, _dir) = server_with(|_| {}).await;
    let (_customer, _agent, id) = server.pair("att-c6", "att-a6").await;
    let token = server.token("att-c6", Role::Customer);
    for (format, kind) in [
        (image::ImageFormat::Jpeg, "image/jpeg"),
        (image::ImageFormat::WebP, "image/webp"),
        (image::ImageFormat::Gif, "image/gif"),
    ] {
        // Named as something else, to show that the name decides nothing.
        let answer = upload(&server, &id, &token, "picture.pdf", &picture(90, 60, format)).await;
        assert_eq!(answer.status, 201, "{kind}: {}", answer.text());
        let meta = answer.json();
        assert_eq!(
            (meta["contentType"].as_str(), meta["width"].as_u64(), meta["height"].as_u64()),
            (Some(kind), Some(90), Some(60))
        );
        let thumbnail = fetch(&server, &id, meta["id"].as_str().expect("id"), "/thumbnail", Some(&token)).await;
        assert_eq!(thumbnail.status, 200, "{kind}");
        let small = image::load_from_memory_with_format(&thumbnail.body, image::ImageFormat::Jpeg).expect("a JPEG");
        // Smaller than the thumbnail's size: kept as it is.
        assert_eq!((small.width(), small.height()), (90, 60), "{kind}");
    }
}

#[tokio::test]
async fn a_slow_upload_times_out_and_a_full_conversation_takes_no_more() {
    let (server, dir) = server_with(|config| {
        config.attachments.upload_timeout_ms = 300;
        config.attachments.max_attachments_per_conversation = 1;
    })
    .await;
    let (_customer, _agent, id) = server.pair("att-c7", "att-a7").await;
    let token = server.token("att-c7", Role::Customer);

    // A head and four bytes, then nothing: 408 once the upload's time is up.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /v1/conversations/{id}/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n%PDF\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("an answer in time").expect("read");
    let answer = parse("POST", &format!("/v1/conversations/{id}/attachments"), &response);
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none(), "the partial file is gone");

    assert_eq!(upload(&server, &id, &token, "one.pdf", PDF).await.status, 201);
    let answer = upload(&server, &id, &token, "two.pdf", PDF).await;
    assert_eq!((answer.status, answer.json()["code"].as_str()), (409, Some("limit_reached")));
    let files = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(files, 1, "the refused upload's file is removed");
}

/// `--unsent-attachment-ms`: an upload no `chat.send` names in time is
/// deleted, its files and its record (no longer served, sendable or counted
/// against the conversation's cap), while a sent one stays; and the partial
/// files a stopped process left are removed at start, but not recent ones.
#[tokio::test]
async fn an_upload_never_sent_is_deleted_after_its_time_and_a_sent_one_stays() {
    let dir = tempfile::tempdir().expect("a directory");
    let (stale, fresh) = (dir.path().join(".stale-upload.part"), dir.path().join(".fresh-upload.part"));
    for path in [&stale, &fresh] {
        std::fs::write(path, b"%PDF").expect("a partial file");
    }
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let file = std::fs::OpenOptions::new().write(true).open(&stale).expect("open");
    file.set_modified(an_hour_ago).expect("an old modification time");
    drop(file);
    let path = dir.path().to_owned();
    let server = TestServer::start_with(move |config| {
        config.attachments.attachments_dir = Some(path);
        config.attachments.unsent_attachment_ms = 1_500;
        config.attachments.max_attachments_per_conversation = 2;
    })
    .await;
    let (mut customer, mut agent, id) = server.pair("att-c9", "att-a9").await;
    assert!(!stale.exists(), "a partial file older than an upload may take is removed at start");
    assert!(fresh.exists(), "a recent partial file (another node's upload, on a shared directory) stays");
    let token = server.token("att-c9", Role::Customer);
    let sent =
        upload(&server, &id, &token, "sent.png", &png(40, 30)).await.json()["id"].as_str().expect("id").to_owned();
    customer.send(send_with(&id, "here it is", &[&sent])).await;
    customer.recv_until("chat.ack").await;
    agent.recv_until("chat.message").await;
    let unsent = upload(&server, &id, &token, "unsent.pdf", PDF).await.json()["id"].as_str().expect("id").to_owned();
    let answer = upload(&server, &id, &token, "third.pdf", PDF).await;
    assert_eq!((answer.status, answer.json()["code"].as_str()), (409, Some("limit_reached")), "unsent ones count");

    let deadline = Instant::now() + WAIT;
    while fetch(&server, &id, &unsent, "", Some(&token)).await.status != 404 {
        assert!(Instant::now() < deadline, "the unsent upload was not deleted within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|name| name.starts_with(unsent.as_str())), "its file is gone: {names:?}");
    assert!(names.contains(&sent) && names.contains(&format!("{sent}.thumb.jpg")), "the sent one's stay: {names:?}");
    let agent_token = server.token("att-a9", Role::Agent);
    assert_eq!(fetch(&server, &id, &sent, "", Some(&agent_token)).await.status, 200);
    assert_eq!(fetch(&server, &id, &sent, "/thumbnail", Some(&token)).await.status, 200);

    let mut late = send_with(&id, "and this", &[&unsent]);
    late["id"] = json!("late");
    customer.send(late).await;
    let error = customer.recv_until("error").await;
    assert_eq!(
        (error["data"]["code"].as_str(), error["data"]["refId"].as_str()),
        (Some("invalid_message"), Some("late"))
    );
    assert_eq!(upload(&server, &id, &token, "again.pdf", PDF).await.status, 201, "the deleted one freed its place");
}

/// A JPEG whose EXIF says "rotate 90° clockwise to show" (orientation 6), as phones write them.
fn rotated_jpeg(width: u32, height: u32) -> Vec<u8> {
    let plain = picture(width, height, image::ImageFormat::Jpeg);
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    // One IFD entry: Orientation (0x0112), SHORT, count 1, value 6; no next IFD.
    exif.extend_from_slice(&[1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
    let length = u16::try_from(exif.len() + 2).expect("short").to_be_bytes();
    [&plain[..2], &[0xFF, 0xE1], &length, &exif, &plain[2..]].concat()
}

#[tokio::test]
async fn a_photo_is_measured_as_shown_after_its_exif_orientation() {
    let (server, _dir) = server_with(|_| {}).await;
    let (_customer, _agent, id) = server.pair("att-c8", "att-a8").await;
    let token = server.token("att-c8", Role::Customer);
    let answer = upload(&server, &id, &token, "phone.jpg", &rotated_jpeg(90, 60)).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let meta = answer.json();
    assert_eq!((meta["width"].as_u64(), meta["height"].as_u64()), (Some(60), Some(90)), "{meta}");
    let thumbnail = fetch(&server, &id, meta["id"].as_str().expect("id"), "/thumbnail", Some(&token)).await;
    let small = image::load_from_memory_with_format(&thumbnail.body, image::ImageFormat::Jpeg).expect("a JPEG");
    assert_eq!((small.width(), small.height()), (60, 90), "the thumbnail is upright");
}
