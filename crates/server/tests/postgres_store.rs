//! The PostgreSQL store as several nodes use it: three stores (three
//! nodes' pools) on one database write to the same conversations at once,
//! share one agent pool (`postgres_store/pool.rs`), and PostgreSQL itself
//! stops and comes back.
//!
//! These tests need a PostgreSQL server, so the file is built only with the
//! `postgres-tests` feature (Cargo.toml): a plain `cargo test` does not have
//! them at all, and scripts/test.sh's postgres step runs them with
//! `--features postgres-tests --test postgres_store` after starting
//! PostgreSQL (scripts/services.sh). Without `PETCHAT_TEST_POSTGRES_URL` they
//! fail at once and say how to get one.

mod common;
#[path = "postgres_store/pool.rs"]
mod pool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDatabase;
use common::private_postgres::PrivatePostgres;
use futures_util::future::join_all;
use petchat_protocol::{
    ClientMessageId, ConversationId, ConversationStatus, LastSeq, MessageId, MessageText, Participant, Role, Timestamp,
    User, UserId,
};
use petchat_server::store::{Applied, ConversationRecord, PostgresStore, Store, StoreError, Write};
use tokio_postgres::NoTls;

/// Three nodes append 200 messages each to one conversation, in batches, all
/// at once: seq is 1..=600 with no gap and no repeat, and each node's
/// messages are stored in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_nodes_appending_to_one_conversation_get_gapless_seqs_in_each_nodes_order() {
    let database = TestDatabase::postgres().await;
    let nodes = nodes(&database, 3).await;
    nodes[0].apply(&[create("conv-1")]).await.expect("created");

    let writers = nodes.iter().enumerate().map(|(node, store)| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for batch in 0..20 {
                let writes: Vec<Write> = (0..10)
                    .map(|i| append("conv-1", key(node, batch * 10 + i), &format!("{node}:{}", batch * 10 + i)))
                    .collect();
                for applied in store.apply(&writes).await.expect("a batch commits") {
                    let Applied::Appended(message) = applied else { panic!("not appended: {applied:?}") };
                    seqs.push(message.seq.get());
                }
            }
            seqs
        })
    });
    let acked: Vec<Vec<u64>> = join_all(writers).await.into_iter().map(|r| r.expect("a writer")).collect();

    let stored = nodes[1].messages_after(&id("conv-1"), LastSeq::default(), 1_000).await.expect("read");
    assert_eq!(stored.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), (1..=600).collect::<Vec<_>>());
    for (node, acked) in acked.iter().enumerate() {
        let sent: Vec<usize> = stored
            .iter()
            .filter_map(|m| m.text.as_str().split_once(':'))
            .filter(|(writer, _)| *writer == node.to_string())
            .map(|(_, n)| n.parse().expect("a number"))
            .collect();
        assert_eq!(sent, (0..200).collect::<Vec<_>>(), "node {node}'s messages in its send order");
        assert!(acked.windows(2).all(|w| w[0] < w[1]), "node {node}'s acks rise");
    }
    let conversation = nodes[2].conversation(&id("conv-1")).await.expect("read").expect("there");
    assert_eq!(conversation.last_seq.get(), 600);
}

/// A client's resend of one clientMessageId reaches two nodes at once: one
/// row, and both nodes answer with the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_message_id_through_two_nodes_at_once_is_stored_once() {
    let database = TestDatabase::postgres().await;
    let nodes = nodes(&database, 2).await;
    nodes[0].apply(&[create("conv-1")]).await.expect("created");

    for n in 0..50 {
        // Each node makes its own message id and time, as the hub does.
        let (first, second) = ([append("conv-1", key(9, n), "hello")], [append("conv-1", key(9, n), "hello")]);
        let (a, b) = tokio::join!(nodes[0].apply(&first), nodes[1].apply(&second));
        let (a, b) = (a.expect("node a commits").remove(0), b.expect("node b commits").remove(0));
        let (appended, duplicate) = match (&a, &b) {
            (Applied::Appended(x), Applied::Duplicate(y)) | (Applied::Duplicate(y), Applied::Appended(x)) => (x, y),
            other => panic!("expected one append and one duplicate, got {other:?}"),
        };
        assert_eq!(appended, duplicate, "both nodes ack the same message");
        assert_eq!(appended.seq.get(), n as u64 + 1);
    }
    let stored = nodes[0].messages_after(&id("conv-1"), LastSeq::default(), 1_000).await.expect("read");
    assert_eq!(stored.len(), 50, "one row per clientMessageId");
}

/// Two nodes commit batches that touch two conversations in opposite orders:
/// each batch locks its conversations in id order first, so neither waits
/// for the other in a cycle, and no deadlock error reaches a caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_touching_two_conversations_in_opposite_orders_never_fail_with_a_deadlock() {
    let database = TestDatabase::postgres().await;
    let nodes = nodes(&database, 2).await;
    nodes[0].apply(&[create("conv-a"), create("conv-b")]).await.expect("created");

    let rounds = 100;
    let writers = nodes.iter().enumerate().map(|(node, store)| {
        let store = store.clone();
        let order = if node == 0 { ["conv-a", "conv-b"] } else { ["conv-b", "conv-a"] };
        tokio::spawn(async move {
            for round in 0..rounds {
                let writes: Vec<Write> = order
                    .iter()
                    .enumerate()
                    .map(|(i, conversation)| append(conversation, key(node, round * 2 + i), "x"))
                    .collect();
                let applied = store.apply(&writes).await.unwrap_or_else(|e| panic!("node {node}: {e}"));
                assert!(applied.iter().all(|a| matches!(a, Applied::Appended(_))), "{applied:?}");
            }
        })
    });
    for writer in join_all(writers).await {
        writer.expect("a writer");
    }
    for conversation in ["conv-a", "conv-b"] {
        let stored = nodes[0].messages_after(&id(conversation), LastSeq::default(), 1_000).await.expect("read");
        assert_eq!(stored.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), (1..=2 * rounds as u64).collect::<Vec<_>>());
    }
}

/// Nodes starting at once migrate one database without an error, and a
/// second start finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_by_several_nodes_at_once_and_again_are_applied_once() {
    let database = TestDatabase::postgres().await;
    let opened = join_all((0..4).map(|_| PostgresStore::open(&database.url))).await;
    for store in opened {
        store.expect("every node starts");
    }
    PostgresStore::open(&database.url).await.expect("a second start");

    let (client, connection) = tokio_postgres::connect(&database.url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    let versions: Vec<i64> = client
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .expect("the migrations table")
        .iter()
        .map(|row| row.get(0))
        .collect();
    // One version per migration file, 1, 2, …, each recorded once.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("the migrations")
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count() as i64;
    assert_eq!(versions, (1..=files).collect::<Vec<i64>>(), "each migration recorded once");
}

/// PostgreSQL stopped hard and started again: while it is down, readiness
/// fails within a few seconds and no batch is acknowledged; once it is back
/// the same store (its pool) serves again. On a cluster of its own, so the
/// other tests' database stays up.
#[tokio::test]
async fn a_store_survives_postgres_stopping_and_starting_again() {
    let cluster = PrivatePostgres::start();
    let store = PostgresStore::open(&cluster.url()).await.expect("the store opens");
    store.apply(&[create("conv-1")]).await.expect("created");
    store.apply(&[append("conv-1", key(0, 0), "before")]).await.expect("before the stop");
    store.ping().await.expect("ready");

    cluster.stop();
    let started = Instant::now();
    let ping = store.ping().await;
    assert!(ping.is_err(), "ping answered while PostgreSQL is down");
    assert!(started.elapsed() < Duration::from_secs(3), "ping took {:?} to fail", started.elapsed());
    for n in 1..=3 {
        let started = Instant::now();
        match store.apply(&[append("conv-1", key(0, n), "while down")]).await {
            Ok(applied) => panic!("a batch was acknowledged while PostgreSQL is down: {applied:?}"),
            Err(e) => assert!(matches!(e, StoreError::Unavailable(_)), "a retry may succeed later: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "apply took {:?} to fail", started.elapsed());
    }
    assert!(store.conversation(&id("conv-1")).await.is_err(), "a read answered while PostgreSQL is down");

    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = store.ping().await {
        assert!(Instant::now() < deadline, "not ready 10 s after PostgreSQL came back: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied = store.apply(&[append("conv-1", key(0, 9), "after")]).await.expect("after the restart");
    let Applied::Appended(message) = &applied[0] else { panic!("not appended: {applied:?}") };
    assert_eq!(message.seq.get(), 2, "nothing of the failed batches was stored");
    let stored = store.messages_after(&id("conv-1"), LastSeq::default(), 10).await.expect("read");
    assert_eq!(stored.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["before", "after"]);
}

/// `count` stores on one database, as `count` nodes would have.
async fn nodes(database: &TestDatabase, count: usize) -> Vec<Arc<PostgresStore>> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(Arc::new(PostgresStore::open(&database.url).await.expect("a node's store opens")));
    }
    nodes
}

fn customer() -> User {
    User { id: UserId::new("customer-1").expect("id"), role: Role::Customer, name: "Ana".into() }
}

fn id(conversation: &str) -> ConversationId {
    ConversationId::new(conversation).expect("id")
}

fn create(conversation: &str) -> Write {
    let at = Timestamp::from_unix_ms(1_800_000_000_000).expect("a time");
    Write::CreateConversation(ConversationRecord {
        id: id(conversation),
        customer: Participant { id: customer().id, name: customer().name },
        agent: None,
        status: ConversationStatus::Queued,
        last_seq: LastSeq::default(),
        created_at: at,
        queued_at: Some(at),
        topic: None,
        pet_id: None,
        order_id: None,
        customer_away_since: None,
        closed: None,
        declined_by: None,
    })
}

/// A distinct clientMessageId per (node, n), clear of the bytes a UUID's
/// version and variant bits overwrite (6 and 8).
fn key(node: usize, n: usize) -> ClientMessageId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&(node as u32).to_be_bytes());
    bytes[10..].copy_from_slice(&(n as u64).to_be_bytes()[2..]);
    ClientMessageId::from_random_bytes(bytes)
}

fn append(conversation: &str, key: ClientMessageId, text: &str) -> Write {
    Write::Append {
        conversation: id(conversation),
        id: MessageId::new(uuid::Uuid::now_v7().to_string()).expect("id"),
        author: customer(),
        client_message_id: key,
        text: MessageText::new(text).expect("text"),
        attachments: Default::default(),
        sent_at: Timestamp::from_unix_ms(petchat_server::auth::now_ms() as i64).expect("now is a time"),
    }
}
