//! The SQLite store on a real file: the background checkpoint moves
//! committed pages into the database file, and the write-ahead log stays
//! bounded however long writes go on.

mod common;

use std::time::{Duration, Instant};

use common::TestStore;

use petchat_protocol::{
    ClientMessageId, ConversationId, ConversationStatus, LastSeq, MessageId, MessageText, Participant, Role, Timestamp,
    User, UserId,
};
use petchat_server::store::{ConversationRecord, SqliteStore, Store, Write};

fn at() -> Timestamp {
    Timestamp::from_unix_ms(1_800_000_000_000).expect("a time")
}

fn customer() -> User {
    User { id: UserId::new("customer-1").expect("id"), role: Role::Customer, name: "Ana".into() }
}

fn create(id: &ConversationId) -> Write {
    Write::CreateConversation(ConversationRecord {
        id: id.clone(),
        customer: Participant { id: customer().id, name: customer().name },
        agent: None,
        status: ConversationStatus::Queued,
        last_seq: LastSeq::default(),
        created_at: at(),
        queued_at: Some(at()),
        topic: None,
        pet_id: None,
        order_id: None,
        customer_away_since: None,
        closed: None,
        declined_by: None,
    })
}

fn append(conversation: &ConversationId, key: u8, text: &str) -> Write {
    Write::Append {
        conversation: conversation.clone(),
        id: MessageId::new(uuid::Uuid::now_v7().to_string()).expect("id"),
        author: customer(),
        client_message_id: ClientMessageId::from_random_bytes([key; 16]),
        text: MessageText::new(text).expect("text"),
        attachments: Default::default(),
        sent_at: at(),
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&format!("sqlite://{}", dir.path().join("store.db").display())).await.expect("store")
}

/// These tests look at SQLite's own files (the database file, its
/// write-ahead log), so they mean something only in the SQLite stage: under
/// `PETCHAT_TEST_STORE=postgres` they return at once, the PostgreSQL
/// stage's own checks being in postgres_store.rs. (The store contract both
/// share is in store.rs, which runs in both stages.)
fn sqlite_stage() -> bool {
    common::store() == TestStore::Sqlite
}

#[tokio::test]
async fn committed_pages_reach_the_database_file_without_waiting_for_the_writer() {
    if !sqlite_stage() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir).await;
    let file = dir.path().join("store.db");
    let size = || std::fs::metadata(&file).expect("the database file").len();
    let before = size();

    // A few hundred KiB of messages: far below the writer's own checkpoint
    // threshold, so only the background checkpoint copies them.
    let id = ConversationId::new("conv-1").expect("id");
    store.apply(&[create(&id)]).await.expect("created");
    let text = "w".repeat(2000);
    for batch in 0..10u8 {
        let writes: Vec<Write> = (0..20u8).map(|n| append(&id, batch * 20 + n, &text)).collect();
        store.apply(&writes).await.expect("applied");
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while size() < before + 200 * 2000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(size() >= before + 200 * 2000, "the database file stayed at {} bytes (was {before})", size());
}

#[tokio::test]
async fn the_write_ahead_log_stays_bounded_under_writes_that_never_pause() {
    if !sqlite_stage() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir).await;
    let wal = dir.path().join("store.db-wal");
    // 80 MB of messages in back-to-back commits, twice the log's bound.
    let text = "w".repeat(4000);
    let mut largest = 0;
    for round in 0..100u32 {
        let id = ConversationId::new(format!("conv-{round}")).expect("id");
        let mut writes = vec![create(&id)];
        writes.extend((0..200u8).map(|n| append(&id, n, &text)));
        store.apply(&writes).await.expect("applied");
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    // The writer's own checkpoint bounds the log at 10,000 pages of 4 KiB
    // (plus a commit's worth of frames past it).
    assert!(largest < 48 << 20, "the WAL grew to {largest} bytes");
    assert!(largest > 0, "no WAL file was seen: the test measured nothing");
}
