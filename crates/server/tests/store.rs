//! The `Store` contract, on the run's store (SQLite, or PostgreSQL with
//! `PETCHAT_TEST_STORE=postgres`): idempotent appends keep `seq` gap-free,
//! only members append, a member's (or a user id's) open conversations are
//! found, SQLite, one node's store, has no shared agent pool, and feeds
//! (topics' events, users' notifications) keep seq gap-free, their history
//! bounded, their idempotency keys and their read marks.

mod common;

use common::{TestDatabase, TestStore};
use petchat_protocol::ListScope;
use petchat_protocol::{
    Attachment, AttachmentId, AttachmentIds, AttachmentName, AttachmentType, ClientMessageId, ConversationId,
    ConversationStatus, LastSeq, MessageId, MessageText, Participant, Role, Seq, Timestamp, User, UserId,
};
use petchat_server::store::{
    Applied, AttachmentRecord, ConversationRecord, Feed, ListFilter, NewItem, Once, ReceiptKind, Retention, Store,
    StoreError, SummaryRecord, Write,
};

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(1_800_000_000_000 + ms).expect("a time")
}

fn user(id: &str, role: Role) -> User {
    User { id: UserId::new(id).expect("id"), role, name: format!("{id} name") }
}

fn participant(user: &User) -> Participant {
    Participant { id: user.id.clone(), name: user.name.clone() }
}

fn conversation_id(id: &str) -> ConversationId {
    ConversationId::new(id).expect("id")
}

/// A new conversation of `customer`, opened at `at(created)`, assigned to `agent` if any.
fn create(id: &str, customer: &User, agent: Option<&User>, created: i64) -> Write {
    Write::CreateConversation(ConversationRecord {
        id: conversation_id(id),
        customer: participant(customer),
        agent: agent.map(participant),
        status: if agent.is_some() { ConversationStatus::Active } else { ConversationStatus::Queued },
        last_seq: LastSeq::default(),
        created_at: at(created),
        queued_at: agent.is_none().then(|| at(created)),
        topic: None,
        pet_id: None,
        order_id: None,
        customer_away_since: None,
        closed: None,
        declined_by: None,
    })
}

fn append(conversation: &str, author: &User, key: u8, text: &str) -> Write {
    Write::Append {
        conversation: conversation_id(conversation),
        id: MessageId::new(uuid::Uuid::now_v7().to_string()).expect("id"),
        author: author.clone(),
        client_message_id: ClientMessageId::from_random_bytes([key; 16]),
        text: MessageText::new(text).expect("text"),
        attachments: Default::default(),
        sent_at: at(0),
    }
}

fn close(conversation: &str, by: &User) -> Write {
    Write::Close {
        conversation: conversation_id(conversation),
        by: by.id.clone(),
        reason: petchat_protocol::CloseReason::Closed,
        at: at(1),
    }
}

fn outcome(applied: &Applied) -> (&'static str, u64) {
    match applied {
        Applied::Appended(m) => ("appended", m.seq.get()),
        Applied::Duplicate(m) => ("duplicate", m.seq.get()),
        Applied::Done => ("done", 0),
        Applied::Closed => ("closed", 0),
        Applied::NotFound => ("not found", 0),
        Applied::NotMember => ("not member", 0),
        Applied::Receipt { advanced } => (if *advanced { "advanced" } else { "not advanced" }, 0),
        Applied::Posted(item) => ("posted", item.seq.get()),
        Applied::PostedBefore { seq, .. } => ("posted before", seq.get()),
        Applied::KeyConflict => ("key conflict", 0),
        Applied::Read { read_seq, advanced } => (if *advanced { "read" } else { "read unchanged" }, read_seq.get()),
        Applied::AttachmentsRefused => ("attachments refused", 0),
        Applied::AttachmentsFull => ("attachments full", 0),
    }
}

/// An uploaded PDF `id` of `uploader` in `conversation`, for at most `max` per conversation.
fn upload(id: &str, conversation: &str, uploader: &User, max: usize) -> Write {
    Write::CreateAttachment {
        record: AttachmentRecord {
            attachment: Attachment {
                id: AttachmentId::new(id).expect("id"),
                name: AttachmentName::new(format!("{id}.pdf")).expect("name"),
                content_type: AttachmentType::Pdf,
                size: 1234,
                width: None,
                height: None,
            },
            conversation_id: conversation_id(conversation),
            uploader: uploader.id.clone(),
            uploader_role: uploader.role,
            sha256: "00".repeat(32),
            created_at: at(0),
            message_id: None,
        },
        max_per_conversation: max,
    }
}

fn append_with(conversation: &str, author: &User, key: u8, attachments: &[&str]) -> Write {
    let Write::Append { conversation, id, author, client_message_id, text, sent_at, .. } =
        append(conversation, author, key, "see attached")
    else {
        unreachable!("append makes an append")
    };
    let ids = attachments.iter().map(|a| AttachmentId::new(*a).expect("id")).collect();
    let attachments = AttachmentIds::new(ids).expect("few and distinct");
    Write::Append { conversation, id, author, client_message_id, text, attachments, sent_at }
}

/// The rules of attachments on any store: uploads only into open
/// conversations below the cap; an append sends only its author's unsent
/// uploads to that conversation, all or none, once; a retry gets the original.
async fn attachment_rules(store: &dyn Store) {
    let (ana, bob, agent) = (user("ana", Role::Customer), user("bob", Role::Customer), user("agent-1", Role::Agent));
    store.apply(&[create("conv-1", &ana, Some(&agent), 0), create("conv-2", &bob, None, 0)]).await.expect("created");
    let uploads = [
        upload("a-1", "conv-1", &ana, 3),
        upload("a-2", "conv-1", &ana, 3),
        upload("a-agent", "conv-1", &agent, 3),
        upload("a-full", "conv-1", &ana, 3),
        upload("b-1", "conv-2", &bob, 3),
        upload("nowhere", "conv-nope", &bob, 3),
    ];
    let outcomes: Vec<_> = store.apply(&uploads).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [("done", 0), ("done", 0), ("done", 0), ("attachments full", 0), ("done", 0), ("not found", 0)]
    );
    let read = store.attachment(&conversation_id("conv-1"), &AttachmentId::new("a-1").expect("id")).await;
    let read = read.expect("read").expect("stored");
    assert_eq!((read.attachment.size, read.uploader.as_str(), read.message_id), (1234, "ana", None));
    let elsewhere = store.attachment(&conversation_id("conv-2"), &AttachmentId::new("a-1").expect("id")).await;
    assert_eq!(elsewhere.expect("read"), None, "an attachment is found only in its conversation");

    let batch = [
        // Another conversation's, the agent's, an unknown one: refused, and nothing claimed.
        append_with("conv-1", &ana, 1, &["a-1", "b-1"]),
        append_with("conv-1", &ana, 2, &["a-agent"]),
        append_with("conv-1", &ana, 3, &["a-1", "a-nope"]),
        // Its own two, in its order.
        append_with("conv-1", &ana, 4, &["a-2", "a-1"]),
        // Sent already, in the same transaction.
        append_with("conv-1", &ana, 5, &["a-1"]),
        // A retry of the sent one.
        append_with("conv-1", &ana, 4, &["a-2", "a-1"]),
    ];
    let applied = store.apply(&batch).await.expect("applied");
    let outcomes: Vec<_> = applied.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            ("attachments refused", 0),
            ("attachments refused", 0),
            ("attachments refused", 0),
            ("appended", 1),
            ("attachments refused", 0),
            ("duplicate", 1)
        ]
    );
    let Applied::Appended(sent) = &applied[3] else { unreachable!("checked above") };
    let names: Vec<&str> = sent.attachments.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(names, ["a-2", "a-1"]);
    assert_eq!(applied[5], Applied::Duplicate(sent.clone()));
    let stored = store.messages_after(&conversation_id("conv-1"), LastSeq::default(), 10).await.expect("read");
    assert_eq!(stored, std::slice::from_ref(sent), "the stored message carries its attachments");
    let claimed = store.attachment(&conversation_id("conv-1"), &AttachmentId::new("a-1").expect("id")).await;
    assert_eq!(claimed.expect("read").expect("stored").message_id, Some(sent.id.clone()));
    // The agent sends its own.
    let outcomes: Vec<_> = store
        .apply(&[append_with("conv-1", &agent, 6, &["a-agent"])])
        .await
        .expect("applied")
        .iter()
        .map(outcome)
        .collect();
    assert_eq!(outcomes, [("appended", 2)]);
    // An agent with the customer's user id is not the customer: it cannot send the customer's upload.
    let (eve, eve_as_agent) = (user("eve", Role::Customer), user("eve", Role::Agent));
    store.apply(&[create("conv-3", &eve, Some(&eve_as_agent), 0), upload("e-1", "conv-3", &eve, 3)]).await.expect("up");
    let batch = [append_with("conv-3", &eve_as_agent, 7, &["e-1"]), append_with("conv-3", &eve, 8, &["e-1"])];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("attachments refused", 0), ("appended", 1)]);
    // A closed conversation takes no upload.
    store.apply(&[close("conv-2", &bob)]).await.expect("closed");
    let outcomes: Vec<_> =
        store.apply(&[upload("b-2", "conv-2", &bob, 3)]).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("closed", 0)]);
}

/// The upload of [`upload`], made `ms` after the tests' epoch.
fn upload_at(id: &str, conversation: &str, uploader: &User, ms: i64) -> Write {
    let Write::CreateAttachment { mut record, max_per_conversation } = upload(id, conversation, uploader, 10) else {
        unreachable!("upload makes an upload")
    };
    record.created_at = at(ms);
    Write::CreateAttachment { record, max_per_conversation }
}

/// The sweep of `--unsent-attachment-ms` on any store: it forgets only
/// uploads no message sent, made before the time, oldest first and at most
/// the limit, and a forgotten upload can no longer be sent.
async fn unsent_upload_rules(store: &dyn Store) {
    let (ana, agent) = (user("ana", Role::Customer), user("agent-1", Role::Agent));
    store.apply(&[create("conv-1", &ana, Some(&agent), 0)]).await.expect("created");
    let uploads = [
        upload_at("sent", "conv-1", &ana, 5),
        upload_at("old-2", "conv-1", &ana, 20),
        upload_at("old-1", "conv-1", &agent, 10),
        upload_at("new", "conv-1", &ana, 100),
    ];
    store.apply(&uploads).await.expect("uploaded");
    let sent = store.apply(&[append_with("conv-1", &ana, 1, &["sent"])]).await.expect("applied");
    assert_eq!(sent.iter().map(outcome).collect::<Vec<_>>(), [("appended", 1)]);

    let ids = |ids: Vec<AttachmentId>| ids.iter().map(|id| id.as_str().to_owned()).collect::<Vec<_>>();
    let first = store.forget_unsent_attachments(at(50), 1).await.expect("swept");
    assert_eq!(ids(first), ["old-1"], "the oldest unsent upload first, at most the limit");
    let rest = store.forget_unsent_attachments(at(50), 10).await.expect("swept");
    assert_eq!(ids(rest), ["old-2"], "neither the sent one nor the one made after the time");
    let again = store.forget_unsent_attachments(at(50), 10).await.expect("swept");
    assert!(again.is_empty(), "each upload is forgotten once: {again:?}");

    let conversation = conversation_id("conv-1");
    let read = |id: &'static str| {
        let (conversation, id) = (&conversation, AttachmentId::new(id).expect("id"));
        async move { store.attachment(conversation, &id).await }
    };
    assert_eq!(read("old-1").await.expect("read"), None);
    assert!(read("sent").await.expect("read").is_some_and(|a| a.message_id.is_some()), "a sent upload stays");
    assert!(read("new").await.expect("read").is_some(), "a recent upload stays");
    let batch = [append_with("conv-1", &ana, 2, &["old-2"]), append_with("conv-1", &ana, 3, &["new"])];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("attachments refused", 0), ("appended", 2)], "a forgotten upload cannot be sent");
}

#[tokio::test]
async fn the_sweep_forgets_only_old_uploads_no_message_sent() {
    let database = TestDatabase::new().await;
    unsent_upload_rules(&*database.open().await).await;
}

#[tokio::test]
async fn the_memory_store_forgets_unsent_uploads_by_the_same_rules() {
    unsent_upload_rules(&petchat_server::store::MemoryStore::new()).await;
}

#[tokio::test]
async fn attachments_are_sent_once_by_their_uploader_in_their_conversation() {
    let database = TestDatabase::new().await;
    attachment_rules(&*database.open().await).await;
}

#[tokio::test]
async fn the_memory_store_has_the_same_attachment_rules() {
    attachment_rules(&petchat_server::store::MemoryStore::new()).await;
}

#[tokio::test]
async fn a_resent_client_message_id_gets_the_first_message_even_once_closed_and_seq_has_no_gap() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let ana = user("customer-1", Role::Customer);
    store.apply(&[create("conv-1", &ana, None, 0)]).await.expect("created");

    // A retry in the same transaction and in a later one.
    let first = store.apply(&[append("conv-1", &ana, 1, "hello"), append("conv-1", &ana, 1, "again")]).await;
    let later = store.apply(&[append("conv-1", &ana, 1, "hello"), append("conv-1", &ana, 2, "next")]).await;
    let (first, later) = (first.expect("applied"), later.expect("applied"));
    let outcomes: Vec<_> = first.iter().chain(&later).map(outcome).collect();
    assert_eq!(outcomes, [("appended", 1), ("duplicate", 1), ("duplicate", 1), ("appended", 2)]);
    let Applied::Duplicate(original) = &later[0] else { unreachable!("checked above") };
    assert_eq!(original.text.as_str(), "hello", "the duplicate returns the stored message");
    assert_eq!(original, {
        let Applied::Appended(stored) = &first[0] else { unreachable!("checked above") };
        stored
    });
    let stored = store.messages_after(&conversation_id("conv-1"), LastSeq::default(), 10).await.expect("read");
    assert_eq!(stored.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [1, 2]);
    let conversation = store.conversation(&conversation_id("conv-1")).await.expect("read").expect("there");
    assert_eq!(conversation.last_seq.get(), 2);

    // Closed since: a retry of a stored message still gets it; a new one is refused.
    store.apply(&[close("conv-1", &ana)]).await.expect("closed");
    let after_close = store.apply(&[append("conv-1", &ana, 2, "next"), append("conv-1", &ana, 3, "late")]).await;
    let outcomes: Vec<_> = after_close.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("duplicate", 2), ("closed", 0)]);
}

#[tokio::test]
async fn only_the_customer_and_the_assigned_agent_may_append() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let (ana, bob) = (user("ana", Role::Customer), user("bob", Role::Customer));
    let (agent, other_agent) = (user("agent-1", Role::Agent), user("agent-2", Role::Agent));
    // An agent with the customer's id is not the customer.
    let ana_as_agent = user("ana", Role::Agent);
    store.apply(&[create("conv-1", &ana, Some(&agent), 0)]).await.expect("created");

    let batch = [
        append("conv-1", &ana, 1, "from the customer"),
        append("conv-1", &bob, 2, "from another customer"),
        append("conv-1", &other_agent, 3, "from another agent"),
        append("conv-1", &ana_as_agent, 4, "from the customer's id as an agent"),
        append("conv-1", &agent, 5, "from the agent"),
        append("conv-nope", &ana, 6, "to nowhere"),
    ];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [("appended", 1), ("not member", 0), ("not member", 0), ("not member", 0), ("appended", 2), ("not found", 0)],
        "a refused append takes no seq"
    );

    // Re-assigned: the former agent's retry of a stored message still gets
    // it, a new message from it is refused, the new agent's is stored.
    let reassign = Write::Assign {
        conversation: conversation_id("conv-1"),
        agent: Some(participant(&other_agent)),
        status: ConversationStatus::Active,
        at: at(2),
        declined_by: None,
    };
    let batch = [
        reassign,
        append("conv-1", &agent, 5, "from the agent"),
        append("conv-1", &agent, 7, "after being replaced"),
        append("conv-1", &other_agent, 8, "from the new agent"),
    ];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("done", 0), ("duplicate", 2), ("not member", 0), ("appended", 3)]);

    // Closed: Closed, not NotMember, for a member and a stranger alike.
    let batch = [close("conv-1", &ana), append("conv-1", &ana, 9, "late"), append("conv-1", &bob, 10, "late")];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("done", 0), ("closed", 0), ("closed", 0)]);
    let conversation = store.conversation(&conversation_id("conv-1")).await.expect("read").expect("there");
    assert_eq!(conversation.last_seq.get(), 3);
}

#[tokio::test]
async fn member_conversations_are_the_open_ones_of_the_customer_or_the_assigned_agent_oldest_first() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let (ana, bob) = (user("ana", Role::Customer), user("bob", Role::Customer));
    let (agent, other_agent) = (user("agent-1", Role::Agent), user("agent-2", Role::Agent));
    store
        .apply(&[
            create("c-newer", &ana, Some(&agent), 30),
            create("c-older", &ana, None, 10),
            create("c-closed", &ana, Some(&agent), 5),
            create("c-bob", &bob, Some(&agent), 20),
            create("c-other-agent", &bob, Some(&other_agent), 1),
        ])
        .await
        .expect("created");
    store.apply(&[close("c-closed", &ana)]).await.expect("closed");

    let ids = |records: Vec<ConversationRecord>| records.into_iter().map(|c| c.id.to_string()).collect::<Vec<_>>();
    let of = |user: User| {
        let store = store.clone();
        async move { ids(store.member_conversations(&user).await.expect("read")) }
    };
    assert_eq!(of(ana.clone()).await, ["c-older", "c-newer"]);
    assert_eq!(of(bob).await, ["c-other-agent", "c-bob"]);
    assert_eq!(of(agent.clone()).await, ["c-bob", "c-newer"]);
    assert_eq!(of(other_agent).await, ["c-other-agent"]);
    // Roles do not mix: the customer's id as an agent has no conversation.
    assert!(of(user("ana", Role::Agent)).await.is_empty());
    assert!(of(user("agent-1", Role::Customer)).await.is_empty());
}

#[tokio::test]
async fn receipts_only_move_forward_and_writes_to_a_closed_conversation_say_so() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let (ana, agent) = (user("ana", Role::Customer), user("agent-1", Role::Agent));
    store.apply(&[create("conv-1", &ana, Some(&agent), 0)]).await.expect("created");
    let receipt = |up_to: u64| Write::Receipt {
        conversation: conversation_id("conv-1"),
        user: agent.id.clone(),
        kind: ReceiptKind::Read,
        up_to_seq: Seq::new(up_to).expect("seq"),
        at: at(up_to as i64),
    };
    let batch = [receipt(2), receipt(2), receipt(1), receipt(3)];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("advanced", 0), ("not advanced", 0), ("not advanced", 0), ("advanced", 0)]);
    let receipts = store.receipts(&conversation_id("conv-1")).await.expect("read");
    assert_eq!(receipts.len(), 1);
    assert_eq!((receipts[0].kind, receipts[0].up_to_seq.get()), (ReceiptKind::Read, 3));

    let requeue = Write::Assign {
        conversation: conversation_id("conv-1"),
        agent: None,
        status: ConversationStatus::Queued,
        at: at(5),
        declined_by: None,
    };
    let batch = [close("conv-1", &agent), close("conv-1", &agent), requeue];
    let outcomes: Vec<_> = store.apply(&batch).await.expect("applied").iter().map(outcome).collect();
    assert_eq!(outcomes, [("done", 0), ("closed", 0), ("closed", 0)]);
    assert!(store.open_conversations().await.expect("read").is_empty());
}

#[tokio::test]
async fn user_conversations_are_the_open_ones_where_the_id_is_the_customer_or_the_agent_whatever_its_role() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let (ana, bob, agent) = (user("ana", Role::Customer), user("bob", Role::Customer), user("agent-1", Role::Agent));
    store
        .apply(&[
            create("c-newer", &ana, Some(&agent), 30),
            create("c-older", &ana, None, 10),
            create("c-closed", &ana, Some(&agent), 5),
            create("c-bob", &bob, Some(&agent), 20),
            create("c-bob-queued", &bob, None, 1),
        ])
        .await
        .expect("created");
    store.apply(&[close("c-closed", &ana)]).await.expect("closed");

    let of = |id: &str| {
        let (store, id) = (store.clone(), UserId::new(id).expect("id"));
        async move {
            let records = store.user_conversations(&id).await.expect("read");
            records.into_iter().map(|c| c.id.to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(of("ana").await, ["c-older", "c-newer"], "a customer's, oldest first");
    assert_eq!(of("agent-1").await, ["c-bob", "c-newer"], "an agent's");
    assert_eq!(of("bob").await, ["c-bob-queued", "c-bob"]);
    assert!(of("nobody").await.is_empty());
}

#[tokio::test]
async fn sqlite_serves_one_node_and_refuses_the_shared_agent_pool() {
    if common::store() != TestStore::Sqlite {
        return; // PostgreSQL's pool: tests/postgres_store/pool.rs.
    }
    let database = TestDatabase::new().await;
    let store = database.open().await;
    match store.lock_pool().await {
        Err(StoreError::Refused(e)) => assert!(e.to_string().contains("needs PostgreSQL"), "says why: {e}"),
        Err(other) => panic!("expected Refused, got {other}"),
        Ok(_) => panic!("SQLite locked a shared pool"),
    }

    // A batch holding a pool write is refused whole: its other writes are not stored.
    let ana = user("ana", Role::Customer);
    let idle = Write::AgentIdle { agent: UserId::new("agent-1").expect("id"), at: at(1) };
    let refused = store.apply(&[create("conv-1", &ana, None, 0), idle]).await;
    assert!(matches!(refused, Err(StoreError::Refused(_))), "{refused:?}");
    assert!(store.open_conversations().await.expect("read").is_empty());
}

fn topic_feed(name: &str) -> Feed {
    Feed::Topic(petchat_protocol::TopicName::new(name).expect("topic"))
}

fn post(feed: &Feed, n: i64, key: Option<(&str, &str)>, retention: Retention) -> Write {
    Write::Post {
        feed: feed.clone(),
        item: NewItem {
            id: format!("item-{n}"),
            name: petchat_protocol::EventName::new("order.shipped").expect("name"),
            body: format!("{{\"n\":{n}}}"),
            at: at(n),
        },
        once: key.map(|(key, digest)| Once {
            key: petchat_protocol::api::IdempotencyKey::new(key).expect("key"),
            digest: digest.into(),
        }),
        retention,
    }
}

const KEEP_3: Retention = Retention { keep: 3, ttl_ms: None, keep_unread: false };

#[tokio::test]
async fn a_feed_numbers_its_items_without_gaps_and_keeps_only_its_last_ones() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let orders = topic_feed("orders:1");
    let pets = topic_feed("pets:1");
    // Two feeds in one batch, interleaved: each counts on its own.
    let batch: Vec<Write> =
        (1..=5).flat_map(|n| [post(&orders, n, None, KEEP_3), post(&pets, n, None, KEEP_3)]).collect();
    let seqs: Vec<_> = store.apply(&batch).await.expect("posted").iter().map(outcome).collect();
    let expected: Vec<_> = (1..=5).flat_map(|n| [("posted", n), ("posted", n)]).collect();
    assert_eq!(seqs, expected);

    let page = store.feed(&orders, Some(LastSeq::NONE), 100, None).await.expect("read");
    assert_eq!(page.last_seq.get(), 5);
    let kept: Vec<u64> = page.items.iter().map(|i| i.seq.get()).collect();
    assert_eq!(kept, [3, 4, 5], "only the last 3 are kept");
    assert_eq!(page.items[0].body, r#"{"n":3}"#);
    assert_eq!(page.items[0].at, at(3));

    let after = store.feed(&orders, Some(LastSeq::new(4).expect("seq")), 100, None).await.expect("read");
    assert_eq!(after.items.iter().map(|i| i.seq.get()).collect::<Vec<_>>(), [5]);
    let limited = store.feed(&orders, Some(LastSeq::NONE), 2, None).await.expect("read");
    assert_eq!(limited.items.len(), 2);
    let never = store.feed(&topic_feed("orders:never"), Some(LastSeq::NONE), 100, None).await.expect("read");
    assert_eq!((never.last_seq.get(), never.items.len()), (0, 0));
}

#[tokio::test]
async fn a_feed_drops_items_older_than_its_ttl_and_reads_skip_them() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let feed = topic_feed("orders:ttl");
    let ttl = Retention { keep: 100, ttl_ms: Some(10), keep_unread: false };
    store.apply(&[post(&feed, 0, None, ttl), post(&feed, 5, None, ttl)]).await.expect("posted");
    // Posting at 20 drops what is older than 10.
    store.apply(&[post(&feed, 20, None, ttl)]).await.expect("posted");
    let page = store.feed(&feed, Some(LastSeq::NONE), 100, None).await.expect("read");
    assert_eq!(page.items.iter().map(|i| i.seq.get()).collect::<Vec<_>>(), [3]);
    let page = store.feed(&feed, Some(LastSeq::NONE), 100, Some(at(21))).await.expect("read");
    assert!(page.items.is_empty(), "a read skips what is older than asked");
    assert_eq!(page.last_seq.get(), 3);
}

#[tokio::test]
async fn an_idempotency_key_posts_once_and_refuses_another_request() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let feed = topic_feed("orders:key");
    let first = store.apply(&[post(&feed, 1, Some(("k1", "d1")), KEEP_3)]).await.expect("posted");
    assert_eq!(outcome(&first[0]), ("posted", 1));
    let again = store
        .apply(&[post(&feed, 2, Some(("k1", "d1")), KEEP_3), post(&feed, 3, Some(("k1", "other")), KEEP_3)])
        .await
        .expect("answered");
    assert_eq!(again.iter().map(outcome).collect::<Vec<_>>(), [("posted before", 1), ("key conflict", 0)]);
    assert!(matches!(&again[0], Applied::PostedBefore { id, .. } if id == "item-1"));
    // The same key on another feed is another key.
    let elsewhere = store.apply(&[post(&topic_feed("orders:other"), 4, Some(("k1", "d1")), KEEP_3)]).await;
    assert_eq!(outcome(&elsewhere.expect("posted")[0]), ("posted", 1));
    assert_eq!(store.feed(&feed, Some(LastSeq::NONE), 100, None).await.expect("read").last_seq.get(), 1);
    // After 24 h the key is forgotten.
    let day = 86_400_000;
    let late = store.apply(&[post(&feed, day + 2, Some(("k1", "d1")), KEEP_3)]).await.expect("posted");
    assert_eq!(outcome(&late[0]), ("posted", 2));
}

#[tokio::test]
async fn read_marks_only_rise_stop_at_the_last_item_and_keep_unread_items() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let feed = Feed::User(UserId::new("customer-1").expect("id"));
    let notifications = Retention { keep: 2, ttl_ms: None, keep_unread: true };
    let batch: Vec<Write> = (1..=4).map(|n| post(&feed, n, None, notifications)).collect();
    store.apply(&batch).await.expect("posted");
    let page = store.feed(&feed, Some(LastSeq::NONE), 100, None).await.expect("read");
    assert_eq!(page.items.len(), 4, "unread items are kept whatever the count");
    assert_eq!(page.unread(), 4);

    let up_to = |n: u64| Write::MarkRead { feed: feed.clone(), up_to: Seq::new(n).expect("seq") };
    let marks = store.apply(&[up_to(3), up_to(2), up_to(9)]).await.expect("marked");
    assert_eq!(marks.iter().map(outcome).collect::<Vec<_>>(), [("read", 3), ("read unchanged", 3), ("read", 4)]);
    let page = store.feed(&feed, Some(LastSeq::NONE), 100, None).await.expect("read");
    assert_eq!((page.read_seq.get(), page.unread()), (4, 0));

    // Read items beyond the 2 kept go at the next post.
    store.apply(&[post(&feed, 5, None, notifications)]).await.expect("posted");
    let page = store.feed(&feed, Some(LastSeq::NONE), 100, None).await.expect("read");
    assert_eq!(page.items.iter().map(|i| i.seq.get()).collect::<Vec<_>>(), [4, 5]);
    // Without `after`: the unread ones, after the read mark.
    let unread = store.feed(&feed, None, 100, None).await.expect("read");
    assert_eq!((unread.read_seq.get(), unread.items.iter().map(|i| i.seq.get()).collect::<Vec<_>>()), (4, vec![5]));
    let nobody = Write::MarkRead { feed: Feed::User(UserId::new("nobody").expect("id")), up_to: Seq::FIRST };
    assert_eq!(outcome(&store.apply(&[nobody]).await.expect("answered")[0]), ("read unchanged", 0));
}

fn filter(scope: ListScope) -> ListFilter {
    ListFilter { scope, status: None, query: None, after: None, limit: 20 }
}

fn listed(page: &[SummaryRecord]) -> Vec<String> {
    page.iter().map(|s| s.conversation.id.to_string()).collect()
}

#[tokio::test]
async fn a_users_conversations_list_newest_first_by_status_and_search_page_by_page_with_their_last_message() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let (ana, bob, agent) = (user("ana", Role::Customer), user("bob", Role::Customer), user("agent-1", Role::Agent));
    let mut topical = create("c-topic", &ana, Some(&agent), 40);
    if let Write::CreateConversation(rec) = &mut topical {
        rec.topic = Some(petchat_protocol::Topic::new("Miso 100% stopped_eating").expect("topic"));
    }
    store
        .apply(&[
            create("c-1", &ana, Some(&agent), 10),
            create("c-2", &ana, Some(&agent), 20),
            create("c-3", &ana, None, 30),
            topical,
            create("c-bob", &bob, Some(&agent), 25),
        ])
        .await
        .expect("created");
    store.apply(&[append("c-2", &ana, 1, "first"), append("c-2", &agent, 2, "the last one")]).await.expect("sent");
    store.apply(&[close("c-1", &ana), close("c-2", &agent)]).await.expect("closed");

    let page = store.list_conversations(&ana, &filter(ListScope::Mine)).await.expect("read");
    assert_eq!(listed(&page), ["c-topic", "c-3", "c-2", "c-1"], "newest first, every status, only ana's");
    let last = page[2].last_message.as_ref().expect("c-2 has messages");
    assert_eq!((last.seq.get(), last.text.as_str(), last.author.id.as_str()), (2, "the last one", "agent-1"));
    assert!(page[1].last_message.is_none(), "c-3 has none");
    let closed = &page[2].conversation.closed.as_ref().expect("c-2 is closed");
    assert_eq!((closed.by.as_str(), closed.reason), ("agent-1", petchat_protocol::CloseReason::Closed));

    let only_closed = ListFilter { status: Some(ConversationStatus::Closed), ..filter(ListScope::Mine) };
    assert_eq!(listed(&store.list_conversations(&ana, &only_closed).await.expect("read")), ["c-2", "c-1"]);
    // A page of limit holds limit + 1 rows: the caller tells that more follow.
    let first = ListFilter { limit: 1, ..filter(ListScope::Mine) };
    assert_eq!(listed(&store.list_conversations(&ana, &first).await.expect("read")), ["c-topic", "c-3"]);
    let next = ListFilter { after: Some(conversation_id("c-3")), limit: 2, ..filter(ListScope::Mine) };
    assert_eq!(listed(&store.list_conversations(&ana, &next).await.expect("read")), ["c-2", "c-1"]);

    let search = |q: &str| ListFilter {
        query: Some(petchat_protocol::SearchQuery::new(q).expect("query")),
        ..filter(ListScope::Mine)
    };
    let handled = store.list_conversations(&agent, &search("BOB")).await.expect("read");
    assert_eq!(listed(&handled), ["c-bob"], "an agent finds a customer by name, ignoring case");
    // `%` and `_` are plain characters, not patterns.
    assert_eq!(listed(&store.list_conversations(&ana, &search("100% stopped_")).await.expect("read")), ["c-topic"]);
    assert!(store.list_conversations(&ana, &search("100%%")).await.expect("read").is_empty());
    assert!(store.list_conversations(&ana, &search("m_so")).await.expect("read").is_empty());
}

#[tokio::test]
async fn the_queue_lists_waiting_customers_in_serving_order_and_quiet_conversations_are_found() {
    let database = TestDatabase::new().await;
    let store = database.open().await;
    let (ana, bob, cy, agent) = (
        user("ana", Role::Customer),
        user("bob", Role::Customer),
        user("cy", Role::Customer),
        user("agent-1", Role::Agent),
    );
    store
        .apply(&[create("q-ana", &ana, None, 10), create("q-bob", &bob, None, 20), create("q-cy", &cy, None, 30)])
        .await
        .expect("created");
    let away = Write::CustomerAway { conversation: conversation_id("q-bob"), since: Some(at(25)) };
    assert_eq!(store.apply(&[away]).await.expect("marked"), [Applied::Done]);
    let queue = store.list_conversations(&agent, &filter(ListScope::Queue)).await.expect("read");
    assert_eq!(listed(&queue), ["q-ana", "q-cy"], "bob is away: not listed");
    let back = Write::CustomerAway { conversation: conversation_id("q-bob"), since: None };
    store.apply(&[back]).await.expect("marked");
    let queue = store.list_conversations(&agent, &filter(ListScope::Queue)).await.expect("read");
    assert_eq!(listed(&queue), ["q-ana", "q-bob", "q-cy"]);
    let after = ListFilter { after: Some(conversation_id("q-bob")), ..filter(ListScope::Queue) };
    assert_eq!(listed(&store.list_conversations(&agent, &after).await.expect("read")), ["q-cy"]);

    // Quiet since `at(22)`: ana (opened at 10, no message) and bob (opened at 20), not cy (a message at 35).
    let mut hello = append("q-cy", &cy, 1, "hello");
    if let Write::Append { sent_at, .. } = &mut hello {
        *sent_at = at(35);
    }
    store.apply(&[hello]).await.expect("sent");
    let quiet = store.quiet_conversations(at(22)).await.expect("read");
    assert_eq!(quiet.iter().map(ConversationId::as_str).collect::<Vec<_>>(), ["q-ana", "q-bob"]);
    store.apply(&[close("q-ana", &ana)]).await.expect("closed");
    let quiet = store.quiet_conversations(at(22)).await.expect("read");
    assert_eq!(quiet.iter().map(ConversationId::as_str).collect::<Vec<_>>(), ["q-bob"], "closed ones are not quiet");
    assert!(store.quiet_conversations(at(0)).await.expect("read").is_empty());
}
