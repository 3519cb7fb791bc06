//! A smoke run of every scenario against each server, for correctness only:
//! each scenario completes on petchat-server, on the three-node cluster and
//! on the Node peer, every acked message reaches the other side, every
//! customer gets an agent, every dropped customer resumes with exactly what
//! it missed, every subscriber of a topic gets every event once and in order
//! (over the WebSocket, SSE and Socket.IO; on the cluster, on every node); a
//! few seconds of soak on petchat-server sample its RSS and CPU. No timing is
//! asserted. Needs the peers' `ws` and `socket.io` (scripts/test.sh runs
//! `npm ci` in benches/peers/node-ws and benches/peers/socket-io), and for
//! the cluster PostgreSQL's binaries and redis-server (scripts/test.sh
//! installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs `petchat-bench --servers SERVERS smoke` and returns its results and table.
fn smoke(servers: &str) -> (Value, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let server = root.join("target/debug/petchat-server");
    assert!(server.exists(), "{} is built by `cargo test --workspace`", server.display());
    assert!(
        root.join("benches/peers/node-ws/node_modules/ws").exists(),
        "the peer needs `ws`: run `npm ci` in benches/peers/node-ws (scripts/test.sh does)"
    );
    assert!(
        root.join("benches/peers/socket-io/node_modules/socket.io").exists(),
        "the Socket.IO peer needs `socket.io`: run `npm ci` in benches/peers/socket-io (scripts/test.sh does)"
    );
    let postgres_bin = PathBuf::from(
        std::env::var("PETCHAT_TEST_POSTGRES_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    );
    if servers.contains("cluster") {
        assert!(postgres_bin.join("initdb").exists(), "the cluster needs PostgreSQL (scripts/test.sh installs it)");
    }
    let out = tempfile::tempdir().expect("a temporary directory");
    let status = Command::new(env!("CARGO_BIN_EXE_petchat-bench"))
        .current_dir(&root)
        .args(["--repeat", "1", "--servers", servers, "--petchat-bin"])
        .arg(&server)
        .arg("--postgres-bin")
        .arg(&postgres_bin)
        .arg("--out")
        .arg(out.path())
        .arg("smoke")
        .status()
        .expect("the bench runs");
    assert!(status.success(), "petchat-bench --servers {servers} smoke failed: {status}");
    let results =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).expect("results.json"))
            .expect("JSON results");
    for plot in ["idle-memory.svg", "chat-latency.svg", "assign.svg", "soak-rss.svg", "soak-cpu.svg", "fanout.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).expect("a plot");
        assert!(svg.starts_with("<svg"), "{plot} is an SVG");
    }
    (results, std::fs::read_to_string(out.path().join("results.md")).expect("results.md"))
}

/// The runs of `scenario` on `server`.
fn runs(results: &Value, scenario: &str, server: &str) -> Vec<Value> {
    results[scenario].as_array().expect("a list of runs").iter().filter(|r| r["server"] == server).cloned().collect()
}

/// Every dropped customer came back and got exactly the messages it missed, then the live one.
fn assert_every_customer_resumed(results: &Value, server: &str) {
    let reconnect = runs(results, "reconnect", server);
    assert_eq!(reconnect.len(), 1, "{server}: one reconnect run");
    let run = &reconnect[0];
    assert_eq!((&run["clients"], &run["missed_per_client"]), (&Value::from(40), &Value::from(3)), "{run}");
    assert_eq!(run["caught_up"]["count"], 40, "{server}: every customer caught up: {run}");
    assert_eq!((&run["lost"], &run["duplicated"]), (&Value::from(0), &Value::from(0)), "{server}: {run}");
    assert!(run["seconds_to_all_caught_up"].as_f64().is_some_and(f64::is_finite), "{run}");
}

/// Every fanout run of `server` over `transport` delivered each of its 5
/// events to each of its 20 subscribers once, in order: a burst and a paced run.
fn assert_every_subscriber_got_every_event(results: &Value, server: &str, transport: &str) {
    let fanout: Vec<Value> =
        runs(results, "fanout", server).into_iter().filter(|r| r["transport"] == transport).collect();
    assert_eq!(fanout.len(), 2, "{server} {transport}: a burst and a paced fanout run: {results}");
    for run in &fanout {
        assert_eq!((&run["subscribers"], &run["events"]), (&Value::from(20), &Value::from(5)), "{run}");
        assert_eq!(run["deliveries"], 100, "{server} {transport}: every subscriber got every event: {run}");
        let faults = (&run["lost"], &run["disordered"], &run["closed_by_server"]);
        assert_eq!(faults, (&Value::from(0), &Value::from(0), &Value::from(0)), "{server} {transport}: {run}");
        assert_eq!(run["latency"]["count"], 100, "{server} {transport}: a latency per delivery: {run}");
        assert!(run["rss_per_subscriber_bytes"].as_f64().is_some_and(f64::is_finite), "{run}");
    }
}

#[test]
fn every_scenario_runs_on_both_servers_without_losing_a_message() {
    let (results, table) = smoke("petchat,peer");
    assert_every_customer_resumed(&results, "petchat");
    assert!(runs(&results, "reconnect", "peer").is_empty(), "the peer keeps no history to resume from");
    for server in ["petchat", "peer"] {
        let of = |scenario: &str| runs(&results, scenario, server);
        let idle = of("idle");
        assert_eq!(idle.len(), 1, "{server}: one idle run");
        assert_eq!(idle[0]["connections"], 50);
        assert!(idle[0]["rss_bytes"].as_u64() > Some(0), "{server}: RSS read from /proc");

        let chat = of("chat");
        assert_eq!(chat.len(), 2, "{server}: a closed-loop and a fixed-rate chat run");
        for run in &chat {
            assert!(run["acked"].as_u64() > Some(0), "{server}: messages acked: {run}");
            assert!(run["relayed"].as_u64() > Some(0), "{server}: messages relayed: {run}");
            assert_eq!(run["lost"], 0, "{server}: every acked message reached the other side: {run}");
            assert!(run["ack"]["count"].as_u64() > Some(0), "{server}: ack latencies recorded");
        }

        let assign = of("assign");
        assert_eq!(assign.len(), 1, "{server}: one assign run");
        assert_eq!(assign[0]["open_to_assigned"]["count"], 20, "{server}: all 20 customers got an agent");
    }
    let soak = results["soak"].as_array().expect("a list of soak runs");
    assert_eq!(soak.len(), 1, "one soak run, on petchat only");
    let soak = &soak[0];
    assert_eq!((&soak["server"], &soak["connections"]), (&Value::from("petchat"), &Value::from(60)));
    let samples = soak["samples"].as_array().expect("samples");
    assert!(samples.len() >= 5, "RSS and CPU sampled over the run: {}", samples.len());
    assert!(samples.iter().all(|s| s["rss_bytes"].as_u64() > Some(0)), "RSS read from /proc");
    assert!(soak["min_connections"].as_u64() >= Some(56), "the idle connections stayed open: {soak}");
    assert_eq!(soak["heartbeat_closes"], 0, "idle connections answer the 1 s heartbeats: {soak}");
    assert!(soak["chat"]["acked"].as_u64() > Some(0), "the soak chats: {soak}");
    assert_eq!(soak["chat"]["lost"], 0, "nothing acked is lost during the soak: {soak}");
    assert!(soak["rss_growth_percent"].as_f64().is_some_and(f64::is_finite), "a growth figure: {soak}");
    assert!(soak["verdict"].as_str().is_some_and(|v| v.contains("MB")), "a verdict: {soak}");

    assert_every_subscriber_got_every_event(&results, "petchat", "ws");
    assert_every_subscriber_got_every_event(&results, "petchat", "sse");
    assert_every_subscriber_got_every_event(&results, "peer", "ws");
    assert_every_subscriber_got_every_event(&results, "socketio", "socketio");
    assert!(runs(&results, "fanout", "peer").iter().all(|r| r["transport"] == "ws"), "the peers serve no SSE");

    assert!(
        table.contains("| scenario | figure | petchat | peer | socketio | petchat ÷ peer | socketio ÷ peer |"),
        "{table}"
    );
    assert!(table.contains("| fanout, S = 20, 5 events | deliveries/s |"), "{table}");
    assert!(table.contains("| fanout over SSE, S = 20, 5 events at 50/s | publish → deliver p99 (ms) |"), "{table}");
    assert!(table.contains("| idle, N = 50 | connects/s |"), "{table}");
    assert!(table.contains("| soak, N = 60, 3 s, 20 msg/s | RSS growth, last vs middle third (%) |"), "{table}");
}

#[test]
fn the_cluster_chats_across_nodes_and_its_customers_resume_on_other_nodes() {
    let (results, table) = smoke("cluster");
    // The bench itself fails a run whose customer got an agent on its own node.
    let chat = runs(&results, "chat", "cluster");
    assert_eq!(chat.len(), 2, "a closed-loop and a fixed-rate chat run: {results}");
    for run in &chat {
        assert!(run["relayed"].as_u64() > Some(0), "messages relayed across nodes: {run}");
        assert_eq!(run["lost"], 0, "every acked message reached the agent on the other node: {run}");
        let engines = ["postgres_cpu_percent", "redis_cpu_percent"].map(|f| run[f].as_f64().expect("a CPU figure"));
        assert!(engines.iter().all(|&cpu| cpu > 0.0), "PostgreSQL and Redis counted: {run}");
        assert!(run["server_cpu_percent"].as_f64() > Some(engines[0] + engines[1]), "the nodes too: {run}");
    }
    assert_eq!(runs(&results, "assign", "cluster")[0]["open_to_assigned"]["count"], 20, "every customer got an agent");
    assert_every_customer_resumed(&results, "cluster");
    // Published on the first node, delivered to subscribers on all three.
    assert_every_subscriber_got_every_event(&results, "cluster", "ws");
    assert_every_subscriber_got_every_event(&results, "cluster", "sse");
    assert!(table.contains("| of which PostgreSQL (% of a core) |"), "{table}");
}
