//! A smoke run of every scenario against both servers, for correctness only:
//! each scenario completes on petchat-server and on the Node peer, every
//! acked message reaches the other side, and every customer gets an agent;
//! a few seconds of soak on petchat-server sample its RSS and CPU.
//! No timing is asserted. Needs the peer's `ws` (scripts/test.sh runs
//! `npm ci` in benches/peers/node-ws).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn every_scenario_runs_on_both_servers_without_losing_a_message() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let server = root.join("target/debug/petchat-server");
    assert!(server.exists(), "{} is built by `cargo test --workspace`", server.display());
    assert!(
        root.join("benches/peers/node-ws/node_modules/ws").exists(),
        "the peer needs `ws`: run `npm ci` in benches/peers/node-ws (scripts/test.sh does)"
    );
    let out = tempfile::tempdir().expect("a temporary directory");
    let status = Command::new(env!("CARGO_BIN_EXE_petchat-bench"))
        .current_dir(&root)
        .args(["--repeat", "1", "--petchat-bin"])
        .arg(&server)
        .arg("--out")
        .arg(out.path())
        .arg("smoke")
        .status()
        .expect("the bench runs");
    assert!(status.success(), "petchat-bench smoke failed: {status}");

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).expect("results.json"))
            .expect("JSON results");
    for server in ["petchat", "peer"] {
        let runs = |scenario: &str| -> Vec<Value> {
            results[scenario]
                .as_array()
                .expect("a list of runs")
                .iter()
                .filter(|r| r["server"] == server)
                .cloned()
                .collect()
        };
        let idle = runs("idle");
        assert_eq!(idle.len(), 1, "{server}: one idle run");
        assert_eq!(idle[0]["connections"], 50);
        assert!(idle[0]["rss_bytes"].as_u64() > Some(0), "{server}: RSS read from /proc");

        let chat = runs("chat");
        assert_eq!(chat.len(), 2, "{server}: a closed-loop and a fixed-rate chat run");
        for run in &chat {
            assert!(run["acked"].as_u64() > Some(0), "{server}: messages acked: {run}");
            assert!(run["relayed"].as_u64() > Some(0), "{server}: messages relayed: {run}");
            assert_eq!(run["lost"], 0, "{server}: every acked message reached the other side: {run}");
            assert!(run["ack"]["count"].as_u64() > Some(0), "{server}: ack latencies recorded");
        }

        let assign = runs("assign");
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

    let table = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    assert!(table.contains("| idle, N = 50 | connects/s |"), "{table}");
    assert!(table.contains("| soak, N = 60, 3 s, 20 msg/s | RSS growth, last vs middle third (%) |"), "{table}");
    for plot in ["idle-memory.svg", "chat-latency.svg", "assign.svg", "soak-rss.svg", "soak-cpu.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).expect("a plot");
        assert!(svg.starts_with("<svg"), "{plot} is an SVG");
    }
}
