//! The Redis link between nodes against a real `redis-server`: fan-out,
//! Lost/Restored across a Redis restart, the per-user cap across nodes,
//! reaping dead nodes exactly once, the clean leave, and a reaped node that
//! was only paused.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis::RedisServer;
use petchat_server::cluster::{Attached, ClusterError, Detached, LinkEvent, LinkSettings, NodeId, RedisLink};
use tokio::sync::mpsc;

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// The heartbeat of the test links: a node is dead after 400 ms without a beat.
const HEARTBEAT: Duration = Duration::from_millis(200);
const PREFIX: &str = "pt:";

type Events = mpsc::Receiver<LinkEvent>;

fn settings() -> LinkSettings {
    LinkSettings { heartbeat: HEARTBEAT, key_prefix: PREFIX.to_owned(), ..LinkSettings::default() }
}

async fn link(redis: &RedisServer, node: &str) -> (RedisLink, Events) {
    link_with(redis, node, settings()).await
}

async fn link_with(redis: &RedisServer, node: &str, settings: LinkSettings) -> (RedisLink, Events) {
    let node = NodeId::new(node).expect("a valid node id");
    RedisLink::connect(&redis.url(), node, settings).await.expect("connect the link")
}

/// The next event, or a failed test after `WAIT`.
async fn next(events: &mut Events) -> LinkEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no event within the wait")
        .expect("the link's event queue closed")
}

/// Nothing arrives for `quiet`.
async fn assert_quiet(events: &mut Events, quiet: Duration) {
    if let Ok(event) = tokio::time::timeout(quiet, events.recv()).await {
        panic!("expected no event for {quiet:?}, got {event:?}");
    }
}

fn message(channel: &str, payload: &'static [u8]) -> LinkEvent {
    LinkEvent::Message { channel: channel.to_owned(), payload: Bytes::from_static(payload) }
}

/// Until Redis counts `count` subscribers of the caller channel `channel`.
async fn wait_subscribers(redis: &RedisServer, channel: &str, count: i64) {
    let mut conn = redis.client().await;
    let redis_channel = format!("{PREFIX}ch:{channel}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, subscribers): (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&redis_channel).query_async(&mut conn).await.expect("NUMSUB");
        if subscribers == count {
            return;
        }
        assert!(Instant::now() < deadline, "{redis_channel} has {subscribers} subscribers, not {count}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes from `from` until `to` gets it: after an outage the publisher
/// refuses until it has found Redis back.
async fn publish_until_received(from: &RedisLink, to: &mut Events, channel: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if from.publish(channel, Bytes::from_static(b"again")) {
            match tokio::time::timeout(Duration::from_millis(300), to.recv()).await {
                Ok(Some(event)) => {
                    assert_eq!(
                        event,
                        LinkEvent::Message { channel: channel.to_owned(), payload: Bytes::from_static(b"again") }
                    );
                    return;
                }
                Ok(None) => panic!("the receiving link's events closed"),
                Err(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "no message got through on {channel}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counted(attached: &[Attached]) -> usize {
    attached.iter().filter(|a| matches!(a, Attached::Counted { .. })).count()
}

fn firsts(attached: &[Attached]) -> usize {
    attached.iter().filter(|a| matches!(a, Attached::Counted { first_anywhere: true })).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_the_subscribed_links_only_as_opaque_bytes() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, mut b_events) = link(&redis, "b").await;
    let (c, mut c_events) = link(&redis, "c").await;
    b.subscribe("room");
    c.subscribe("other");
    wait_subscribers(&redis, "room", 1).await;
    wait_subscribers(&redis, "other", 1).await;

    // Not UTF-8 on purpose: payloads are bytes.
    assert!(a.publish("room", Bytes::from_static(b"\x00\xff\xfehello")));
    assert!(a.publish("other", Bytes::from_static(b"marker")));

    assert_eq!(next(&mut b_events).await, message("room", b"\x00\xff\xfehello"));
    // One publisher, one pipeline order: had c got "room", it would come before the marker.
    assert_eq!(next(&mut c_events).await, message("other", b"marker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_and_channel_is_under_the_prefix() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    a.subscribe("room");
    wait_subscribers(&redis, "room", 1).await;
    assert!(matches!(a.attach("alice", 3).await, Ok(Attached::Counted { first_anywhere: true })));

    let mut conn = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.expect("KEYS");
    let channels: Vec<String> =
        redis::cmd("PUBSUB").arg("CHANNELS").arg("*").query_async(&mut conn).await.expect("PUBSUB CHANNELS");
    assert!(keys.len() >= 3, "the node set, the node's counts and the user's total: {keys:?}");
    assert!(channels.len() == 2, "the caller's channel and the wake-up channel: {channels:?}");
    for name in keys.iter().chain(&channels) {
        assert!(name.starts_with(PREFIX), "{name} is outside the prefix {PREFIX}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_reference_counted() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, mut b_events) = link(&redis, "b").await;
    b.subscribe("room");
    b.subscribe("room");
    b.subscribe("marker");
    wait_subscribers(&redis, "room", 1).await;
    wait_subscribers(&redis, "marker", 1).await;

    b.unsubscribe("room");
    assert!(a.publish("room", Bytes::from_static(b"one")));
    assert_eq!(next(&mut b_events).await, message("room", b"one"), "one reference is left");

    b.unsubscribe("room");
    wait_subscribers(&redis, "room", 0).await;
    assert!(a.publish("room", Bytes::from_static(b"two")));
    assert!(a.publish("marker", Bytes::from_static(b"m")));
    assert_eq!(next(&mut b_events).await, message("marker", b"m"), "no reference is left to \"room\"");

    // One more unsubscribe than subscribes does nothing, and a new one works.
    b.unsubscribe("room");
    b.subscribe("room");
    wait_subscribers(&redis, "room", 1).await;
    assert!(a.publish("room", Bytes::from_static(b"three")));
    assert_eq!(next(&mut b_events).await, message("room", b"three"));
}

#[tokio::test]
async fn publish_never_waits_and_refuses_when_its_queue_is_full() {
    let redis = RedisServer::start();
    let (a, _a_events) = link_with(&redis, "a", LinkSettings { publish_queue: 2, ..settings() }).await;
    // A current-thread runtime: the publisher cannot run between these calls,
    // so the queue holds two and refuses the rest without waiting.
    let accepted: Vec<bool> = (0..5).map(|_| a.publish("room", Bytes::from_static(b"x"))).collect();
    assert_eq!(accepted, [true, true, false, false, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_comes_back_as_lost_then_restored_and_everything_recovers() {
    let mut redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, mut b_events) = link(&redis, "b").await;
    b.subscribe("room");
    wait_subscribers(&redis, "room", 1).await;
    assert!(matches!(a.attach("alice", 3).await, Ok(Attached::Counted { first_anywhere: true })));

    redis.kill();
    assert_eq!(next(&mut b_events).await, LinkEvent::Lost);

    // Commands fail promptly while Redis is down.
    for _ in 0..3 {
        let started = Instant::now();
        let attach = a.attach("bob", 3).await;
        assert!(attach.is_err(), "attach while redis is down: {attach:?}");
        assert!(a.detach("alice").await.is_err(), "detach while redis is down");
        assert!(a.ping().await.is_err(), "ping while redis is down");
        assert!(started.elapsed() < Duration::from_millis(3500), "three commands took {:?}", started.elapsed());
    }

    // Publishing refuses once the publisher has seen the failure: nothing piles up.
    let deadline = Instant::now() + WAIT;
    while a.publish("room", Bytes::from_static(b"lost")) {
        assert!(Instant::now() < deadline, "publish kept accepting while redis was down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.restart();
    assert_eq!(next(&mut b_events).await, LinkEvent::Restored, "nothing comes between Lost and Restored");
    // Restored means subscribed already, not soon.
    let mut conn = redis.client().await;
    let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{PREFIX}ch:room"))
        .query_async(&mut conn)
        .await
        .expect("NUMSUB");
    assert_eq!(subscribers, 1, "Restored came before the subscription was back");

    // The same publisher works again once it has found Redis back.
    publish_until_received(&a, &mut b_events, "room").await;

    // Redis came back empty: a's heartbeat (or this attach) writes a's own
    // record back, which no longer holds alice (her detach failed, and was
    // forgotten here all the same).
    let deadline = Instant::now() + WAIT;
    loop {
        match a.attach("bob", 1).await {
            Ok(attached) => {
                assert_eq!(attached, Attached::Counted { first_anywhere: true });
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "attach still fails after the restart: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.online(&["alice", "bob"]).await.expect("online"), [false, true]);
    assert_eq!(a.attach("bob", 1).await.expect("attach"), Attached::Refused { total: 1 });
    assert!(a.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_comes_back_as_lost_and_commands_time_out() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, mut b_events) = link(&redis, "b").await;
    b.subscribe("room");
    wait_subscribers(&redis, "room", 1).await;

    // The connections stay open; Redis just stops answering for 2.5 s.
    let mut conn = redis.client().await;
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(2500).arg("ALL").query_async(&mut conn).await.expect("PAUSE");
    let paused = Instant::now();

    let started = Instant::now();
    let attach = a.attach("ivan", 3).await;
    assert!(matches!(attach, Err(ClusterError::Timeout(_))), "attach against a silent redis: {attach:?}");
    assert!(started.elapsed() < Duration::from_millis(1500), "attach took {:?}", started.elapsed());

    // The keepalive PING finds it out (half a heartbeat, then its timeout).
    assert_eq!(next(&mut b_events).await, LinkEvent::Lost);
    assert!(paused.elapsed() < Duration::from_millis(2500), "lost after {:?}", paused.elapsed());
    assert_eq!(next(&mut b_events).await, LinkEvent::Restored);
    publish_until_received(&a, &mut b_events, "room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_nodes_under_concurrent_attaches() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, _b_events) = link(&redis, "b").await;

    let attaches: Vec<_> = (0..20)
        .map(|i| {
            let link = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { link.attach("carol", 3).await })
        })
        .collect();
    let mut results = Vec::new();
    for attach in attaches {
        results.push(attach.await.expect("attach task").expect("attach"));
    }
    assert_eq!(counted(&results), 3, "{results:?}");
    assert_eq!(firsts(&results), 1, "{results:?}");
    assert!(
        results.iter().all(|r| matches!(r, Attached::Counted { .. } | Attached::Refused { total: 3 })),
        "{results:?}"
    );
    let mut conn = redis.client().await;
    let total: i64 = redis::cmd("GET").arg(format!("{PREFIX}user:carol")).query_async(&mut conn).await.expect("GET");
    assert_eq!(total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_and_last_anywhere_come_once_per_transition() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, _b_events) = link(&redis, "b").await;

    for round in 0..5 {
        let attaches: Vec<_> = (0..8)
            .map(|i| {
                let link = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { link.attach("dave", 100).await })
            })
            .collect();
        let mut attached = Vec::new();
        for attach in attaches {
            attached.push(attach.await.expect("attach task").expect("attach"));
        }
        assert_eq!((counted(&attached), firsts(&attached)), (8, 1), "round {round}: {attached:?}");
        assert_eq!(a.online(&["dave", "nobody"]).await.expect("online"), [true, false]);

        let detaches: Vec<_> = (0..8)
            .map(|i| {
                let link = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { link.detach("dave").await })
            })
            .collect();
        let mut detached = Vec::new();
        for detach in detaches {
            detached.push(detach.await.expect("detach task").expect("detach"));
        }
        let last = detached.iter().filter(|d| **d == Detached::LastAnywhere).count();
        assert_eq!(last, 1, "round {round}: {detached:?}");
        assert_eq!(b.online(&["dave"]).await.expect("online"), [false]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_of_a_user_not_attached_here_is_refused() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, _b_events) = link(&redis, "b").await;
    assert!(matches!(a.attach("erin", 3).await, Ok(Attached::Counted { first_anywhere: true })));
    assert!(matches!(b.detach("erin").await, Err(ClusterError::NotAttached(user)) if user == "erin"));
    assert_eq!(a.online(&["erin"]).await.expect("online"), [true], "b's refused detach took nothing off");
    assert_eq!(a.detach("erin").await.expect("detach"), Detached::LastAnywhere);
    assert!(matches!(a.detach("erin").await, Err(ClusterError::NotAttached(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_reaped_by_exactly_one_survivor_within_two_heartbeats() {
    let redis = RedisServer::start();
    let (a, mut a_events) = link(&redis, "a").await;
    let (b, mut b_events) = link(&redis, "b").await;
    let (c, c_events) = link(&redis, "c").await;
    c.attach("solo", 1).await.expect("attach");
    c.attach("shared", 5).await.expect("attach");
    a.attach("shared", 5).await.expect("attach");
    assert_eq!(a.attach("solo", 1).await.expect("attach"), Attached::Refused { total: 1 });

    // Every handle dropped without shutdown: c stops as a crash would.
    drop((c, c_events));
    let died = Instant::now();

    let (gone, a_reaped) = tokio::select! {
        event = next(&mut a_events) => (event, true),
        event = next(&mut b_events) => (event, false),
    };
    let other = if a_reaped { &mut b_events } else { &mut a_events };
    let elapsed = died.elapsed();
    assert_eq!(
        gone,
        LinkEvent::NodeGone { node: NodeId::new("c").expect("id"), offline_users: vec!["solo".to_owned()] }
    );
    // Two heartbeats without a beat, then at most one check period (half a
    // heartbeat), plus slack for a loaded machine.
    assert!(elapsed <= HEARTBEAT * 2 + HEARTBEAT / 2 + Duration::from_millis(500), "reaped after {elapsed:?}");
    assert_quiet(other, HEARTBEAT * 3).await;

    assert_eq!(b.online(&["solo", "shared"]).await.expect("online"), [false, true]);
    assert_eq!(a.attach("solo", 1).await.expect("attach"), Attached::Counted { first_anywhere: true });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_is_reaped_at_once_not_after_the_timeout() {
    let redis = RedisServer::start();
    // A long heartbeat: a's first check runs as it connects and the next one
    // 2 s later, the timeout is 8 s; only the wake-up reaps b within a second.
    let slow = LinkSettings { heartbeat: Duration::from_secs(4), ..settings() };
    let (a, mut a_events) = link_with(&redis, "a", slow.clone()).await;
    let (b, _b_events) = link_with(&redis, "b", slow).await;
    b.attach("frank", 3).await.expect("attach");
    b.attach("frank", 3).await.expect("attach");
    a.attach("grace", 3).await.expect("attach");

    let started = Instant::now();
    b.shutdown().await;
    assert_eq!(
        next(&mut a_events).await,
        LinkEvent::NodeGone { node: NodeId::new("b").expect("id"), offline_users: vec!["frank".to_owned()] }
    );
    assert!(started.elapsed() < Duration::from_secs(1), "announced after {:?}", started.elapsed());
    assert_eq!(a.online(&["frank", "grace"]).await.expect("online"), [false, true]);
    assert!(matches!(b.attach("frank", 3).await, Err(ClusterError::Closed)));
}

/// A link on a runtime of its own, that the test can freeze as a long pause would.
struct Pausable {
    link: RedisLink,
    events: Events,
    pause: mpsc::UnboundedSender<Duration>,
}

fn pausable(url: String, node: &'static str) -> Pausable {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            let (pause, mut pauses) = mpsc::unbounded_channel::<Duration>();
            let (link, events) = RedisLink::connect(&url, NodeId::new(node).expect("id"), settings())
                .await
                .expect("connect the pausable link");
            ready_tx.send(Pausable { link, events, pause }).expect("hand the link over");
            while let Some(pause) = pauses.recv().await {
                // Blocks the runtime's only thread: every task of the link stops.
                std::thread::sleep(pause);
            }
        });
    });
    ready_rx.recv_timeout(WAIT).expect("the pausable link connected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaped_during_a_pause_counts_its_connections_again() {
    let redis = RedisServer::start();
    let (a, mut a_events) = link(&redis, "a").await;
    let mut b = pausable(redis.url(), "b");
    assert_eq!(b.link.attach("heidi", 1).await.expect("attach"), Attached::Counted { first_anywhere: true });

    b.pause.send(HEARTBEAT * 5).expect("pause b");
    assert_eq!(
        next(&mut a_events).await,
        LinkEvent::NodeGone { node: NodeId::new("b").expect("id"), offline_users: vec!["heidi".to_owned()] }
    );

    // Awake again, b finds itself reaped and writes its counts back.
    assert_eq!(next(&mut b.events).await, LinkEvent::Recounted { online: vec!["heidi".to_owned()], offline: vec![] });
    assert_eq!(a.online(&["heidi"]).await.expect("online"), [true]);
    assert_eq!(a.attach("heidi", 1).await.expect("attach"), Attached::Refused { total: 1 });
    assert_eq!(b.link.detach("heidi").await.expect("detach"), Detached::LastAnywhere);
}

#[tokio::test]
async fn connect_fails_promptly_when_redis_is_unreachable() {
    // A port nothing listens on: the harness's server, stopped.
    let mut redis = RedisServer::start();
    redis.kill();
    let started = Instant::now();
    let result = RedisLink::connect(&redis.url(), NodeId::new("a").expect("id"), settings()).await;
    assert!(result.is_err(), "connected to nothing");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(matches!(
        RedisLink::connect("not a url", NodeId::new("a").expect("id"), settings()).await,
        Err(ClusterError::Url(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_summed_over_live_nodes_and_a_user_counts_on_every_node() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, _b_events) = link(&redis, "b").await;
    for (link, user) in [(&a, "u1"), (&a, "u2"), (&b, "u1")] {
        link.attach(user, 10).await.expect("attach");
    }
    assert_eq!(a.connections_total().await.expect("total"), 3);
    assert_eq!(b.connections_of("u1").await.expect("count"), 2);
    assert_eq!(b.connections_of("nobody").await.expect("count"), 0);
    b.detach("u1").await.expect("detach");
    assert_eq!(a.connections_total().await.expect("total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_held_by_one_node_until_it_stops_renewing() {
    let redis = RedisServer::start();
    let (a, _a_events) = link(&redis, "a").await;
    let (b, _b_events) = link(&redis, "b").await;
    let hold = Duration::from_millis(300);
    assert!(a.lease("chore", hold).await.expect("lease"));
    assert!(!b.lease("chore", hold).await.expect("lease"), "a holds it");
    assert!(a.lease("chore", hold).await.expect("lease"), "the holder renews");
    assert!(b.lease("other", hold).await.expect("lease"), "another lease is another lease");
    // a stops renewing: b takes over once the hold has run out.
    let deadline = Instant::now() + WAIT;
    while !b.lease("chore", hold).await.expect("lease") {
        assert!(Instant::now() < deadline, "b never took the lease over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.lease("chore", hold).await.expect("lease"), "b holds it now");
}
