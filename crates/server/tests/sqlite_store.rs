//! The SQLite store on a real file: idempotent appends keep `seq` gap-free,
//! the background checkpoint moves committed pages into the database file,
//! and the write-ahead log stays bounded however long writes go on.

use std::time::{Duration, Instant};

use petchat_protocol::{
    ClientMessageId, ConversationId, ConversationStatus, LastSeq, MessageId, MessageText, Participant, Role, Timestamp,
    User, UserId,
};
use petchat_server::store::{Applied, ConversationRecord, SqliteStore, Store, Write};

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
    })
}

fn append(conversation: &ConversationId, key: u8, text: &str) -> Write {
    Write::Append {
        conversation: conversation.clone(),
        id: MessageId::new(uuid::Uuid::now_v7().to_string()).expect("id"),
        author: customer(),
        client_message_id: ClientMessageId::from_random_bytes([key; 16]),
        text: MessageText::new(text).expect("text"),
        sent_at: at(),
    }
}

fn seq_of(applied: &Applied) -> (&'static str, u64) {
    match applied {
        Applied::Appended(m) => ("appended", m.seq.get()),
        Applied::Duplicate(m) => ("duplicate", m.seq.get()),
        _ => ("other", 0),
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&format!("sqlite://{}", dir.path().join("store.db").display())).await.expect("store")
}

#[tokio::test]
async fn a_resent_client_message_id_gets_the_first_message_even_once_closed_and_seq_has_no_gap() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir).await;
    let id = ConversationId::new("conv-1").expect("id");
    store.apply(&[create(&id)]).await.expect("created");

    // A retry in the same transaction and in a later one.
    let first = store.apply(&[append(&id, 1, "hello"), append(&id, 1, "hello again")]).await.expect("applied");
    let later = store.apply(&[append(&id, 1, "hello"), append(&id, 2, "next")]).await.expect("applied");

    let seqs: Vec<_> = first.iter().chain(&later).map(seq_of).collect();
    assert_eq!(seqs, [("appended", 1), ("duplicate", 1), ("duplicate", 1), ("appended", 2)]);
    let Applied::Duplicate(original) = &later[0] else { unreachable!("checked above") };
    assert_eq!(original.text.as_str(), "hello", "the duplicate returns the stored message");
    let stored = store.messages_after(&id, LastSeq::default(), 10).await.expect("read");
    assert_eq!(stored.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [1, 2]);
    let conversation = store.conversation(&id).await.expect("read").expect("there");
    assert_eq!(conversation.last_seq.get(), 2);

    // Closed since: a retry of a stored message still gets it; a new one is refused.
    let close = Write::Close { conversation: id.clone(), by: customer().id, at: at() };
    store.apply(&[close]).await.expect("closed");
    let after_close = store.apply(&[append(&id, 2, "next"), append(&id, 3, "too late")]).await.expect("applied");
    assert_eq!(seq_of(&after_close[0]), ("duplicate", 2));
    assert!(matches!(after_close[1], Applied::Closed), "a new message to a closed conversation is refused");
}

#[tokio::test]
async fn committed_pages_reach_the_database_file_without_waiting_for_the_writer() {
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
