//! Several `petchat-server` processes as one cluster (SPEC §10): one fresh
//! PostgreSQL database, one real Redis, nodes `n1`…`nN` on loopback ports of
//! their own with one JWT secret, and optionally nginx in front. A test kills
//! and restarts nodes, Redis and PostgreSQL, and talks to any node through
//! [`Peer`]s (`peer.rs`), which answer the nodes' pings under the short
//! heartbeat however long a test leaves them unread.
//!
//! The harness blocks briefly while it starts or stops Redis and PostgreSQL,
//! so the tests that use it run on the multi-thread runtime
//! (`#[tokio::test(flavor = "multi_thread")]`), where a blocking section does
//! not stop the peers' readers.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use petchat_protocol::Role;
use serde_json::Value;

pub use super::peer::Peer;

use super::database::TestDatabase;
use super::nginx::Nginx;
use super::private_postgres::PrivatePostgres;
use super::process::ServerProcess;
use super::redis::RedisServer;
use super::slow_link::SlowLink;
use super::{SECRET, TestServer, http};

/// How long a cluster test waits for something that should happen: twice a
/// single node's wait, as several processes share the machine's two cores.
pub const WAIT: Duration = Duration::from_secs(20);
/// The nodes' `--heartbeat-interval-ms` unless a test sets another: short,
/// so that a dead node is noticed within seconds (SPEC §10: two intervals).
pub const HEARTBEAT_MS: u64 = 1_000;
/// The nodes' `--agent-grace-ms` unless a test sets another.
pub const AGENT_GRACE_MS: u64 = 4_000;
/// What the nodes log: warnings, and the server's info lines (among them
/// "petchat listening", which the harness waits for).
const LOG_LEVEL: &str = "warn,petchat_server=info";

/// How a cluster is to be made; [`Cluster::of`] starts one.
pub struct ClusterBuilder {
    nodes: usize,
    flags: Vec<(String, String)>,
    redis: bool,
    private_postgres: bool,
    nginx: bool,
    /// Nodes (1-based) whose Redis traffic is held this long each way.
    slow_redis: Vec<(usize, Duration)>,
}

impl ClusterBuilder {
    /// Sets `--NAME VALUE` on every node, replacing the harness's default for it.
    pub fn flag(mut self, name: &str, value: impl ToString) -> Self {
        let value = value.to_string();
        match self.flags.iter_mut().find(|(flag, _)| flag == name) {
            Some(existing) => existing.1 = value,
            None => self.flags.push((name.to_owned(), value)),
        }
        self
    }

    /// Nodes without `--redis-url` and `--node-id`: independent servers on one
    /// PostgreSQL database, which is how the harness checks itself on a build
    /// that has no cluster mode.
    pub fn without_redis(mut self) -> Self {
        self.redis = false;
        self
    }

    /// The database on a PostgreSQL server of this test's own, which the test
    /// may stop and start ([`Cluster::stop_postgres`]).
    pub fn private_postgres(mut self) -> Self {
        self.private_postgres = true;
        self
    }

    /// Node `n` talks to Redis through a [`SlowLink`] that holds every byte
    /// `delay` each way: it hears the others, and they hear it, late.
    pub fn slow_redis_for(mut self, n: usize, delay: Duration) -> Self {
        assert!((1..=self.nodes).contains(&n), "no node n{n} in a cluster of {}", self.nodes);
        self.slow_redis.push((n, delay));
        self
    }

    /// nginx (deploy/nginx/petchat.conf) in front of every node ([`Cluster::balancer`]).
    pub fn behind_nginx(mut self) -> Self {
        self.nginx = true;
        self
    }

    /// Starts PostgreSQL's database, Redis, the nodes (all at once) and nginx.
    pub async fn start(self) -> Cluster {
        let (database, database_url) = if self.private_postgres {
            let postgres = blocking(PrivatePostgres::start);
            let url = postgres.url();
            (Database::Private(postgres), url)
        } else {
            let database = TestDatabase::postgres().await;
            let url = database.url.clone();
            (Database::Shared(database), url)
        };
        let redis = self.redis.then(|| blocking(RedisServer::start));
        let flags: Vec<String> = self.flags.into_iter().flat_map(|(name, value)| [name, value]).collect();
        let mut nodes: Vec<Node> = (1..=self.nodes)
            .map(|n| Node { id: format!("n{n}"), bind: free_port(), process: None, redis_url: None, _slow: None })
            .collect();
        if let Some(redis) = &redis {
            for node in &mut nodes {
                node.redis_url = Some(redis.url());
            }
            for (n, delay) in self.slow_redis {
                let link = SlowLink::start(SocketAddr::from(([127, 0, 0, 1], redis.port)), delay).await;
                nodes[n - 1].redis_url = Some(format!("redis://{}/", link.addr));
                nodes[n - 1]._slow = Some(link);
            }
        }
        let mut cluster =
            Cluster { nodes, nginx: None, redis, with_node_ids: self.redis, flags, database_url, _database: database };
        let started = futures_util::future::join_all(cluster.nodes.iter().map(|node| cluster.spawn(node))).await;
        for (node, process) in cluster.nodes.iter_mut().zip(started) {
            node.process = Some(process);
        }
        if self.nginx {
            let upstreams: Vec<SocketAddr> = cluster.nodes.iter().map(|node| node.bind).collect();
            cluster.nginx = Some(blocking(|| Nginx::start(&upstreams)));
        }
        cluster
    }
}

/// A running cluster; nodes are numbered from 1 (`n1`), as their ids are.
pub struct Cluster {
    // Declared in the order they stop on drop: nodes, then what they use.
    nodes: Vec<Node>,
    nginx: Option<Nginx>,
    redis: Option<RedisServer>,
    /// Whether nodes get `--node-id` (with Redis only: a build without
    /// cluster mode may not know the flag).
    with_node_ids: bool,
    /// The flags every node gets (each node's `--redis-url` is its own).
    flags: Vec<String>,
    database_url: String,
    _database: Database,
}

/// One node: its id, the address it listens on (the same after a restart,
/// as nginx knows it by it), and its process while it runs.
struct Node {
    id: String,
    bind: SocketAddr,
    process: Option<ServerProcess>,
    /// Its `--redis-url`: Redis's, or its slow link's.
    redis_url: Option<String>,
    /// The slow link in front of Redis, for this node only.
    _slow: Option<SlowLink>,
}

/// Where the cluster's database lives.
enum Database {
    /// A database of its own on the suite's PostgreSQL.
    Shared(#[allow(dead_code)] TestDatabase),
    /// A PostgreSQL server of its own, which the test may stop.
    Private(PrivatePostgres),
}

impl Cluster {
    /// A cluster of `nodes` nodes with the harness's defaults: a heartbeat of
    /// [`HEARTBEAT_MS`], an agent grace of [`AGENT_GRACE_MS`], and a message
    /// rate no test reaches (rate limiting is not what these tests are about).
    pub fn of(nodes: usize) -> ClusterBuilder {
        ClusterBuilder {
            nodes,
            flags: Vec::new(),
            redis: true,
            private_postgres: false,
            nginx: false,
            slow_redis: Vec::new(),
        }
        .flag("--heartbeat-interval-ms", HEARTBEAT_MS)
        .flag("--agent-grace-ms", AGENT_GRACE_MS)
        .flag("--messages-per-second", 10_000)
    }

    /// Node `n` (1-based), to connect to.
    pub fn node(&self, n: usize) -> Endpoint {
        let node = self.node_ref(n);
        Endpoint { name: node.id.clone(), addr: node.bind }
    }

    /// nginx in front of every node.
    pub fn balancer(&self) -> Endpoint {
        let nginx = self.nginx.as_ref().expect("a cluster started with behind_nginx()");
        Endpoint { name: "nginx".to_owned(), addr: nginx.addr }
    }

    /// How many nodes the cluster has, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// What `--database-url` every node has.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// SIGKILL to node `n`, and waits until it is gone.
    pub async fn kill(&mut self, n: usize) {
        let node = self.node_mut(n);
        let mut process = node.process.take().unwrap_or_else(|| panic!("{} is not running", node.id));
        process.signal("KILL").await;
    }

    /// SIGTERM to node `n` (a graceful shutdown), and waits until it has exited.
    pub async fn terminate(&mut self, n: usize) -> std::process::ExitStatus {
        let node = self.node_mut(n);
        let mut process = node.process.take().unwrap_or_else(|| panic!("{} is not running", node.id));
        process.signal("TERM").await
    }

    /// Starts node `n` again, with its id and on its port.
    pub async fn start_node(&mut self, n: usize) {
        let node = self.node_ref(n);
        assert!(node.process.is_none(), "{} is running already", node.id);
        let process = self.spawn(node).await;
        self.node_mut(n).process = Some(process);
    }

    /// SIGKILL to Redis.
    pub fn kill_redis(&mut self) {
        let redis = self.redis.as_mut().expect("a cluster with Redis");
        blocking(|| redis.kill());
    }

    /// Starts Redis again on its port, empty (it saves nothing).
    pub fn start_redis(&mut self) {
        let redis = self.redis.as_mut().expect("a cluster with Redis");
        blocking(|| redis.restart());
    }

    /// Stops PostgreSQL at once, as a crash would.
    pub fn stop_postgres(&self) {
        let Database::Private(postgres) = &self._database else { panic!("a cluster started with private_postgres()") };
        blocking(|| postgres.stop());
    }

    /// Starts PostgreSQL again on the same data.
    pub fn start_postgres(&self) {
        let Database::Private(postgres) = &self._database else { panic!("a cluster started with private_postgres()") };
        blocking(|| postgres.start_again());
    }

    /// `GET /readyz` on node `n`: status and body; status 0 when it does not
    /// answer within five seconds (a readiness check must not hang).
    pub async fn readyz(&self, n: usize) -> (u16, String) {
        let server = TestServer::at(self.node(n).addr);
        match tokio::time::timeout(Duration::from_secs(5), http(&server, "/readyz", None)).await {
            Ok(answer) => answer,
            Err(_) => (0, "no answer within 5 s".to_owned()),
        }
    }

    /// Until node `n`'s `/readyz` answers `status`; `why` names the rule for
    /// the failure message.
    pub async fn wait_readyz(&self, n: usize, status: u16, why: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (got, body) = self.readyz(n).await;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: GET /readyz answered {got} ({}) for {WAIT:?}, expected {status}: {why}",
                self.node_ref(n).id,
                body.trim()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `n`'s `petchat_connections` gauge (its open sockets).
    pub async fn connections(&self, n: usize) -> u64 {
        let (status, metrics) = http(&TestServer::at(self.node(n).addr), "/metrics", None).await;
        assert_eq!(status, 200, "GET /metrics on {}", self.node_ref(n).id);
        // In a cluster every metric carries the node's id (`--node-id`) as its `node` label.
        let labelled = format!("petchat_connections{{node=\"{}\"}} ", self.node_ref(n).id);
        let gauge = metrics.lines().find_map(|line| {
            line.strip_prefix(&labelled)
                .or_else(|| line.strip_prefix("petchat_connections ").filter(|_| !self.with_node_ids))
        });
        gauge.map_or(0.0, |value| value.trim().parse::<f64>().expect("a number")) as u64
    }

    /// What node `n` has logged so far (for a failure message).
    pub async fn logs(&mut self, n: usize) -> Vec<String> {
        match self.node_mut(n).process.as_mut() {
            Some(process) => process.drain_logs().await.to_vec(),
            None => Vec::new(),
        }
    }

    /// A customer on node `customer_at` opens a conversation, which goes to an
    /// agent on node `agent_at`, the only available one; the agent then makes
    /// itself unavailable, so that the next pair's conversation goes to the
    /// next pair's agent. Frames before the assignment are skipped.
    pub async fn pair(&self, customer_at: usize, customer: &str, agent_at: usize, agent: &str) -> Pair {
        let mut agent_peer = self.node(agent_at).connect(agent, Role::Agent).await;
        agent_peer.set_available(true).await;
        let mut customer_peer = self.node(customer_at).connect(customer, Role::Customer).await;
        let conversation = customer_peer.open().await;
        let assigned = customer_peer.recv_until("agent.assigned").await;
        assert_eq!(
            (assigned["data"]["conversationId"].as_str(), assigned["data"]["agent"]["id"].as_str()),
            (Some(conversation.as_str()), Some(agent)),
            "SPEC §6: the conversation of {customer} goes to {agent}, the only available agent, on {}",
            self.node_ref(agent_at).id
        );
        let assigned = agent_peer.recv_until("agent.assigned").await;
        assert_eq!(
            assigned["data"]["conversationId"],
            conversation,
            "SPEC §3: agent.assigned reaches the agent {agent} on {} for {customer}'s conversation opened on {}",
            self.node_ref(agent_at).id,
            self.node_ref(customer_at).id
        );
        agent_peer.set_available(false).await;
        Pair { customer: customer_peer, agent: agent_peer, conversation }
    }

    fn node_ref(&self, n: usize) -> &Node {
        assert!((1..=self.nodes.len()).contains(&n), "no node n{n} in a cluster of {}", self.nodes.len());
        &self.nodes[n - 1]
    }

    fn node_mut(&mut self, n: usize) -> &mut Node {
        assert!((1..=self.nodes.len()).contains(&n), "no node n{n} in a cluster of {}", self.nodes.len());
        &mut self.nodes[n - 1]
    }

    async fn spawn(&self, node: &Node) -> ServerProcess {
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        if let Some(url) = &node.redis_url {
            flags.extend(["--redis-url", url]);
        }
        if self.with_node_ids {
            flags.extend(["--node-id", &node.id]);
        }
        ServerProcess::start_at(&node.bind.to_string(), &self.database_url, SECRET, &flags, LOG_LEVEL).await
    }
}

/// A customer and an agent in one conversation (see [`Cluster::pair`]).
pub struct Pair {
    /// The customer's connection, subscribed to the conversation.
    pub customer: Peer,
    /// The agent's connection, subscribed to the conversation.
    pub agent: Peer,
    /// The conversation's id.
    pub conversation: String,
}

/// A node or the load balancer, to connect to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `n1`…, or `nginx`, for failure messages.
    pub name: String,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// A token for `sub` (display name "`sub` name"), signed with the cluster's secret.
    pub fn token(&self, sub: &str, role: Role) -> String {
        TestServer::at(self.addr).token(sub, role)
    }

    /// Connects as `sub` with the token in the query and reads `session.ready`.
    pub async fn connect(&self, sub: &str, role: Role) -> Peer {
        self.connect_ready(sub, role).await.0
    }

    /// Connects as `connect` does and returns `session.ready` too.
    pub async fn connect_ready(&self, sub: &str, role: Role) -> (Peer, Value) {
        let mut peer = self.open_socket(sub, role).await;
        let ready = peer.recv().await;
        assert_eq!(ready["type"], "session.ready", "SPEC §1: the first frame {} gets is session.ready", peer.label);
        (peer, ready)
    }

    /// Completes the upgrade as `sub` and reads nothing.
    pub async fn open_socket(&self, sub: &str, role: Role) -> Peer {
        let server = TestServer::at(self.addr);
        let url = format!("{}?token={}", server.url(), server.token(sub, role));
        let client = server.connect_raw(&url, &["petchat.v1"], None).await;
        Peer::spawn(format!("{sub}@{}", self.name), client.ws)
    }

    /// Connects as `connect` does, trying again every 100 ms while the
    /// connection is refused (a node starting), as a reconnecting client does.
    pub async fn reconnect(&self, sub: &str, role: Role) -> Peer {
        let server = TestServer::at(self.addr);
        let url = format!("{}?token={}", server.url(), server.token(sub, role));
        let deadline = Instant::now() + WAIT;
        loop {
            let request = {
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                let mut request = url.as_str().into_client_request().expect("request");
                request.headers_mut().insert("Sec-WebSocket-Protocol", "petchat.v1".parse().expect("header"));
                request
            };
            match tokio_tungstenite::connect_async(request).await {
                Ok((ws, _)) => {
                    let mut peer = Peer::spawn(format!("{sub}@{}", self.name), ws);
                    let ready = peer.recv().await;
                    assert_eq!(ready["type"], "session.ready", "SPEC §1: the first frame {} gets", peer.label);
                    return peer;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{sub} could not reconnect to {} within {WAIT:?}: {e}",
                    self.name
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A GET on this endpoint: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http(&TestServer::at(self.addr), path, None).await
    }
}

/// `f`, allowed to block the runtime's thread (starting Redis or PostgreSQL).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A loopback address no one listens on now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free loopback port")
}
