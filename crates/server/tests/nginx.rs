//! petchat behind nginx (SPEC §10: any node, no sticky sessions), with the
//! configuration of deploy/nginx/petchat.conf: real `petchat-server`
//! processes, each on its own SQLite file for now, and a real nginx in front.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nginx::{self, Nginx};
use common::process::ServerProcess;
use common::{Next, SECRET, TestServer, WAIT, http, http_with};
use futures_util::StreamExt;
use petchat_protocol::Role;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn a_socket_through_nginx_authenticates_by_subprotocol_or_query_and_gets_petchat_v1() {
    let lb = Balanced::start(3, STEADY_HEARTBEAT_MS, &[], |config| config).await;
    let url = lb.clients.url();

    // A browser: the token in the subprotocol, and its page's Origin, which
    // the node compares with the Host nginx passes on (port included).
    let token = lb.clients.token("cust-browser", Role::Customer);
    let origin = format!("http://{}", lb.nginx.addr);
    let mut browser = lb.clients.connect_raw(&url, &["petchat.v1", &format!("bearer.{token}")], Some(&origin)).await;
    assert_eq!(browser.protocol.as_deref(), Some("petchat.v1"), "the node's choice of subprotocol comes back");
    let ready = browser.recv_type("session.ready").await;
    assert_eq!(ready["data"]["user"]["id"], "cust-browser");
    assert_eq!(ready["data"]["heartbeatIntervalMs"], STEADY_HEARTBEAT_MS);

    // A native client: the token in the query.
    let token = lb.clients.token("cust-native", Role::Customer);
    let mut native = lb.clients.connect_raw(&format!("{url}?token={token}"), &["petchat.v1"], None).await;
    assert_eq!(native.protocol.as_deref(), Some("petchat.v1"));
    assert_eq!(native.recv_type("session.ready").await["data"]["user"]["id"], "cust-native");
    native.send(json!({"type": "ping", "id": "p1", "data": {}})).await;
    assert_eq!(native.recv_type("pong").await["id"], "p1");
}

#[tokio::test]
async fn connections_spread_over_every_node_without_stickiness() {
    let lb = Balanced::start(3, STEADY_HEARTBEAT_MS, &[], |config| config).await;
    // Thirty users, all from 127.0.0.1: ip_hash or any affinity would put
    // them on one node.
    let mut clients = Vec::new();
    for n in 0..30 {
        clients.push(lb.clients.connect(&format!("spread-{n}"), Role::Customer).await);
    }
    let counts = lb.wait_connections(30).await;
    // least_conn with a shared zone gives 10 each; round robin would be
    // close to that too.
    assert!(counts.iter().all(|&n| n >= 5), "30 sockets spread over three nodes, got {counts:?}");
}

#[tokio::test]
async fn an_idle_socket_outlives_the_proxy_timeout_while_the_heartbeat_is_shorter() {
    // The proxy cuts a socket after 3 s without traffic; the node pings every second.
    let lb = Balanced::start(1, HEARTBEAT_MS, &[], |config| nginx::with_socket_timeout(&config, 3)).await;
    let mut client = lb.clients.connect("idle-short", Role::Customer).await;
    let held = Duration::from_secs(7);
    let until = tokio::time::Instant::now() + held;
    let mut pings = 0;
    // Reading lets tungstenite answer each ping with a pong, as every client does.
    loop {
        match tokio::time::timeout_at(until, client.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("after {pings} pings the idle socket got {other:?}"),
        }
    }
    assert!(pings >= 5, "the node's pings crossed nginx: {pings} in {held:?}");
    client.send(json!({"type": "ping", "id": "still", "data": {}})).await;
    assert_eq!(client.recv_type("pong").await["id"], "still", "the socket is open after {held:?}");
}

#[tokio::test]
async fn an_idle_socket_is_cut_by_the_proxy_when_the_heartbeat_is_longer() {
    // The converse: the node's heartbeat (30 s) outlasts the proxy's 3 s.
    let lb = Balanced::start(1, 30_000, &[], |config| nginx::with_socket_timeout(&config, 3)).await;
    let mut client = lb.clients.connect("idle-long", Role::Customer).await;
    let start = Instant::now();
    match client.next().await {
        Next::Closed(None) => {}
        other => panic!("expected nginx to drop the idle socket without a close frame, got {other:?}"),
    }
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(2500) && after < Duration::from_secs(8),
        "nginx cut the socket after its 3 s read timeout, not after {after:?}"
    );
}

#[tokio::test]
async fn a_killed_node_is_passed_over_for_new_sockets_and_http() {
    let mut lb = Balanced::start(3, STEADY_HEARTBEAT_MS, &[], |config| config).await;
    let mut before = Vec::new();
    for n in 0..6 {
        before.push(lb.clients.connect(&format!("before-{n}"), Role::Customer).await);
    }
    let on_dead = lb.wait_connections(6).await[0];
    let dead = lb.nodes[0].addr;
    lb.nodes[0].signal("KILL").await;

    // The dead node's sockets end without a close frame (nginx relays the
    // TCP end); the others stay open.
    let ends = futures_util::future::join_all(before.iter_mut().map(|client| async {
        matches!(tokio::time::timeout(Duration::from_secs(2), client.next()).await, Ok(Next::Closed(None)))
    }))
    .await;
    assert_eq!(ends.iter().filter(|&&ended| ended).count() as u64, on_dead, "the dead node's sockets ended");

    // New sockets (the token in the query, to check the logs below) reach the others.
    let mut tokens = Vec::new();
    let mut after = Vec::new();
    for n in 0..6 {
        let token = lb.clients.token(&format!("after-{n}"), Role::Customer);
        let mut client =
            lb.clients.connect_raw(&format!("{}?token={token}", lb.clients.url()), &["petchat.v1"], None).await;
        client.recv_type("session.ready").await;
        after.push(client);
        tokens.push(token);
    }
    for n in 0..20 {
        let (status, body) = http(&lb.clients, "/healthz", None).await;
        assert_eq!(status, 200, "GET /healthz number {n} after the kill: {body}");
    }
    let survivors = lb.connections_of(&lb.nodes[1..]).await;
    assert_eq!(survivors.iter().sum::<u64>(), 6 - on_dead + 6, "every live socket is on a live node: {survivors:?}");

    // The dead node was tried, and the request passed on, at most max_fails
    // times; then it was left alone for fail_timeout. nginx logs a socket
    // when it ends: close them first.
    for client in after {
        client.close().await;
    }
    let log = lb
        .nginx
        .wait_access_log(|log| {
            let sockets = log.lines().filter(|line| line.contains("GET /v1/ws/chat") && line.contains(" 101 "));
            sockets.count() == on_dead as usize + 6
        })
        .await;
    let retried = log.lines().filter(|line| line.contains(&format!("upstream={dead}, "))).count();
    assert!((1..=3).contains(&retried), "passed over {retried} times (max_fails=3):\n{log}");
    let logs = lb.nginx.logs();
    assert!(!tokens.iter().any(|token| logs.contains(token.as_str())), "a token in nginx's logs:\n{logs}");
}

#[tokio::test]
async fn close_codes_pass_through_nginx_unchanged() {
    let mut lb = Balanced::start(1, STEADY_HEARTBEAT_MS, &["--shutdown-grace-ms", "3000"], |config| config).await;
    let url = lb.clients.url();
    let token = lb.clients.token("cust-close", Role::Customer);

    let mut bad = lb.clients.connect_raw(&format!("{url}?token=not-a-jwt"), &["petchat.v1"], None).await;
    let (code, reason) = bad.expect_close().await;
    assert_eq!(code, 4500, "a bad token: {reason}");
    assert!(!reason.is_empty(), "the reason comes through too");

    let both = format!("bearer.{token}");
    let mut doubled = lb.clients.connect_raw(&format!("{url}?token={token}"), &["petchat.v1", &both], None).await;
    assert_eq!(doubled.expect_close().await.0, 4500, "two tokens");

    let mut future = lb.clients.connect_raw(&format!("{url}?token={token}"), &["petchat.v9"], None).await;
    assert_eq!(future.expect_close().await.0, 4505, "an unknown protocol version");

    let elsewhere = Some("http://elsewhere.example");
    let mut foreign = lb.clients.connect_raw(&format!("{url}?token={token}"), &["petchat.v1"], elsewhere).await;
    assert_eq!(foreign.expect_close().await.0, 1008, "a refused origin");

    // The client's close is echoed with its code.
    let mut leaving = lb.clients.connect("cust-leaving", Role::Customer).await;
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    leaving.ws.close(Some(bye)).await.expect("send the close");
    assert!(matches!(leaving.next().await, Next::Closed(Some((1000, _)))), "the node echoes 1000 through nginx");

    // A node shutting down closes with 1001, read while it drains.
    let mut staying = lb.clients.connect("cust-staying", Role::Customer).await;
    let closing = tokio::spawn(async move { staying.expect_close().await });
    lb.nodes[0].signal("TERM").await;
    let (code, _) = tokio::time::timeout(WAIT, closing).await.expect("closed in time").expect("reader");
    assert_eq!(code, 1001, "a node shutting down");
}

#[tokio::test]
async fn http_through_nginx_keeps_the_host_hides_metrics_and_bounds_headers() {
    let lb = Balanced::start(1, STEADY_HEARTBEAT_MS, &[], |config| config).await;
    let (status, body) = http(&lb.clients, "/readyz", None).await;
    assert_eq!((status, body.as_str()), (200, "ready\nstore: ok\n"));
    // The node names the Host it was reached by, nginx's address and port.
    let (status, yaml) = http(&lb.clients, "/asyncapi.yaml", None).await;
    assert_eq!(status, 200);
    assert!(yaml.contains(&format!("host: \"{}\"", lb.nginx.addr)), "asyncapi.yaml names nginx's host:\n{yaml}");
    assert_eq!(http(&lb.clients, "/metrics", None).await.0, 403, "metrics are scraped per node, not through nginx");

    // A header line of 12 KB (a large token) passes; one of 20 KB stops at nginx.
    let host = lb.nginx.addr.to_string();
    for (size, expected) in [(12_000, 200), (20_000, 400)] {
        let big = "a".repeat(size);
        let (status, ..) = http_with(&lb.clients, "/healthz", &[("Host", &host), ("X-Big", &big)]).await;
        assert_eq!(status, expected, "a header line of {size} bytes");
    }
}

#[test]
fn the_template_s_socket_timeouts_outlast_two_default_heartbeats() {
    let limits = petchat_server::Config::with_defaults("sqlite://unused.db", "secret").limits;
    for directive in ["proxy_read_timeout", "proxy_send_timeout"] {
        let timeout = seconds(nginx::socket_setting(nginx::TEMPLATE, directive));
        assert!(
            timeout > limits.heartbeat_interval() * petchat_protocol::limits::HEARTBEAT_MISSED_INTERVALS,
            "{directive} ({timeout:?}) must outlast the node's own rule (two heartbeats of {:?})",
            limits.heartbeat_interval()
        );
    }
    let header = nginx::TEMPLATE.lines().find_map(|line| line.trim().strip_prefix("client_header_timeout "));
    let header = seconds(header.expect("client_header_timeout").trim_end_matches(';'));
    assert!(header <= limits.handshake_timeout(), "nginx holds a trickling request no longer than a node would");
}

#[test]
fn scripts_nginx_sh_renders_the_same_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstreams: Vec<SocketAddr> = ["127.0.0.1:9001", "127.0.0.1:9002"].map(|a| a.parse().expect("addr")).into();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/nginx.sh");
    let status = std::process::Command::new("bash")
        .args(["-c", "source \"$0\" && nginx_render \"$1\" 127.0.0.1:8080 127.0.0.1:9001 127.0.0.1:9002"])
        .arg(script)
        .arg(dir.path())
        .status()
        .expect("bash runs");
    assert!(status.success());
    let shell = std::fs::read_to_string(dir.path().join("nginx.conf")).expect("nginx.conf");
    assert_eq!(shell, nginx::render(dir.path(), "127.0.0.1:8080", &upstreams));
    let left: Vec<&str> = shell.lines().filter(|l| !l.trim_start().starts_with('#') && l.contains('@')).collect();
    assert!(left.is_empty(), "placeholders left: {left:?}");
}

/// The nodes' heartbeat where a test is about it: shorter than the 3 s the
/// timeout tests give nginx.
const HEARTBEAT_MS: u64 = 1000;
/// The nodes' heartbeat elsewhere: long enough that a socket a test does not
/// read for a while (so its client sends no pong) is not closed for silence.
const STEADY_HEARTBEAT_MS: u64 = 10_000;

/// Nodes behind one nginx.
struct Balanced {
    nodes: Vec<ServerProcess>,
    nginx: Nginx,
    /// Mints tokens and connects, through nginx.
    clients: TestServer,
    _databases: Vec<tempfile::TempDir>,
}

impl Balanced {
    /// `count` nodes with a heartbeat every `heartbeat_ms` and `extra` flags,
    /// and nginx in front with the template's configuration passed through `edit`.
    async fn start(count: usize, heartbeat_ms: u64, extra: &[&str], edit: impl FnOnce(String) -> String) -> Self {
        let databases: Vec<_> = (0..count).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let heartbeat = heartbeat_ms.to_string();
        let mut flags = vec!["--heartbeat-interval-ms", heartbeat.as_str()];
        flags.extend_from_slice(extra);
        let flags = &flags;
        let nodes = futures_util::future::join_all(databases.iter().map(|dir| async move {
            let url = format!("sqlite://{}", dir.path().join("petchat.db").display());
            ServerProcess::start(&url, SECRET, flags, "info").await
        }))
        .await;
        let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
        let nginx = Nginx::start_with(&addrs, edit);
        let clients = TestServer::at(nginx.addr);
        Self { nodes, nginx, clients, _databases: databases }
    }

    /// Each node's `petchat_connections`, once they add up to `total`.
    async fn wait_connections(&self, total: u64) -> Vec<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let counts = self.connections_of(&self.nodes).await;
            if counts.iter().sum::<u64>() == total {
                return counts;
            }
            assert!(Instant::now() < deadline, "expected {total} connections, the nodes count {counts:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `petchat_connections` gauge of each of `nodes`, asked directly.
    async fn connections_of(&self, nodes: &[ServerProcess]) -> Vec<u64> {
        let mut counts = Vec::new();
        for node in nodes {
            let (status, metrics) = http(&TestServer::at(node.addr), "/metrics", None).await;
            assert_eq!(status, 200);
            let gauge = metrics.lines().find_map(|line| line.strip_prefix("petchat_connections "));
            counts.push(gauge.map_or(0.0, |value| value.trim().parse::<f64>().expect("a number")) as u64);
        }
        counts
    }
}

/// `75s` → 75 seconds (the only unit the template uses).
fn seconds(value: &str) -> Duration {
    Duration::from_secs(value.strip_suffix('s').and_then(|n| n.parse().ok()).expect("a value in seconds"))
}
