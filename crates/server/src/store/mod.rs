//! Durable storage behind one trait, so that SQLite (one node, zero setup)
//! and PostgreSQL (several nodes, SPEC §10) are interchangeable without
//! touching the connection code.
//!
//! Every write goes through [`Store::apply`], which commits a whole batch in
//! one transaction: the server's writer task groups what arrives while the
//! previous commit is in flight (group commit), and nothing is acknowledged
//! before the commit returns. Both stores give the same guarantees: `seq` is
//! gapless per conversation and in commit order, an append is idempotent on
//! (conversation, author, clientMessageId), and only a member may append.
//! [`StoreError`] names no driver type, so the hub never learns which
//! database it runs on.
//!
//! With several nodes the agent pool (SPEC §6) is shared: one queue and one
//! set of agents, whatever node each customer and agent is on. Each node's
//! pool decides in rounds, and [`Store::lock_pool`] makes a round exclusive:
//! it takes the pool's global lock, reads the shared state (the open
//! conversations and every agent, [`PoolSnapshot`]), lets the caller decide
//! with the same rules as on one node, and [`PoolRound::commit`] writes the
//! decisions and frees the lock in one transaction; so no two nodes decide
//! from the same state, and a conversation is never given to two agents.
//! Agents' connections are recorded per node ([`Write::AgentConnection`],
//! [`Write::NodeGone`]), so that an agent stays online while any node holds
//! a connection of it. Only PostgreSQL shares a pool between nodes; the
//! memory store has the same rules for the hub's tests, and SQLite (one
//! node only) refuses the round and its writes.

mod checkpoint;
mod columns;
mod feeds;
mod memory;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use petchat_protocol::{
    Attachment, AttachmentId, AttachmentIds, ChatMessage, ClientMessageId, CloseReason, Closure, ConversationId,
    ConversationStatus, LastSeq, ListScope, MessageId, MessageText, OrderId, Participant, PetId, Role, SearchQuery,
    Seq, Timestamp, Topic, User, UserId,
};

pub use feeds::{Feed, FeedItem, FeedPage, NewItem, Once, Retention};
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    /// Its id.
    pub id: ConversationId,
    /// The customer who opened it.
    pub customer: Participant,
    /// The assigned agent, if any.
    pub agent: Option<Participant>,
    /// Where it stands.
    pub status: ConversationStatus,
    /// The seq of its last message.
    pub last_seq: LastSeq,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it last entered the queue (orders the queue after a restart).
    pub queued_at: Option<Timestamp>,
    /// The customer's topic.
    pub topic: Option<Topic>,
    /// The pet it is about.
    pub pet_id: Option<PetId>,
    /// The order it is about.
    pub order_id: Option<OrderId>,
    /// Since when its customer has had no connection (anywhere); `None` while
    /// it has one. A queued conversation is not served while this is set, and
    /// an open one is closed `--customer-away-ms` after it.
    pub customer_away_since: Option<Timestamp>,
    /// Once closed: when, by whom and why.
    pub closed: Option<Closure>,
    /// While queued: the agent who handed it back to the queue, who is not offered it again.
    pub declined_by: Option<UserId>,
}

impl ConversationRecord {
    /// Whether the user may see and write to it: its customer, or its assigned agent.
    pub fn has_member(&self, user: &UserId, role: Role) -> bool {
        match role {
            Role::Customer => self.customer.id == *user,
            Role::Agent => self.agent.as_ref().is_some_and(|a| a.id == *user),
        }
    }
}

/// Which conversations [`Store::list_conversations`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// The user's own (newest first), or the queue (in the order it is served,
    /// without the conversations of customers who are away).
    pub scope: ListScope,
    /// Only conversations in this state (scope `Mine`).
    pub status: Option<ConversationStatus>,
    /// Only those whose customer's name or id, or topic, contains this, ignoring case.
    pub query: Option<SearchQuery>,
    /// Only those listed after this one, in the scope's order.
    pub after: Option<ConversationId>,
    /// At most this many.
    pub limit: usize,
}

/// A conversation of a list, with its last message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRecord {
    /// The conversation.
    pub conversation: ConversationRecord,
    /// Its last message (seq = `last_seq`), if it has one.
    pub last_message: Option<MessageRecord>,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message id.
    pub id: MessageId,
    /// Its position.
    pub seq: Seq,
    /// The author.
    pub author: User,
    /// The author's idempotency key.
    pub client_message_id: ClientMessageId,
    /// The trimmed text.
    pub text: MessageText,
    /// The attachments sent with it, in order.
    pub attachments: Vec<Attachment>,
    /// When it was stored.
    pub sent_at: Timestamp,
}

/// An uploaded attachment as stored: what `chat.message` shows of it, and
/// what the server checks before it lets a message send it or a user read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    /// Its metadata, as the wire carries it.
    pub attachment: Attachment,
    /// The conversation it was uploaded to (only its members read it).
    pub conversation_id: ConversationId,
    /// Who uploaded it (only they may send it).
    pub uploader: UserId,
    /// The uploader's role then.
    pub uploader_role: Role,
    /// The SHA-256 of the file, lowercase hex (an operator can check a file against it).
    pub sha256: String,
    /// When it was uploaded.
    pub created_at: Timestamp,
    /// The message that sent it; `None` until one did (each is sent once).
    pub message_id: Option<MessageId>,
}

impl From<MessageRecord> for ChatMessage {
    fn from(record: MessageRecord) -> Self {
        ChatMessage {
            conversation_id: record.conversation_id,
            message_id: record.id,
            seq: record.seq,
            from: record.author,
            text: record.text,
            attachments: record.attachments,
            sent_at: record.sent_at,
        }
    }
}

/// Which receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// `message.delivered`.
    Delivered,
    /// `message.read`.
    Read,
}

impl ReceiptKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
}

/// A member's latest receipt in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    /// The member.
    pub user_id: UserId,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// Up to which seq.
    pub up_to_seq: Seq,
    /// When it was recorded.
    pub at: Timestamp,
}

/// An agent as the shared pool stores it (several nodes, SPEC §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its user id.
    pub id: UserId,
    /// Its display name, as its latest connection or status gave it.
    pub name: String,
    /// It asked to be in the pool (`agent.status`).
    pub available: bool,
    /// It has a connection on at least one node.
    pub online: bool,
    /// Ties of least-loaded assignment go to the smallest (longest idle).
    pub idle_since: Timestamp,
    /// When its last connection on any node closed; `None` while online. An
    /// agent first known while offline (by [`Write::AgentAvailability`]) is
    /// offline since then, so this is `None` exactly when `online` is true.
    pub offline_since: Option<Timestamp>,
}

/// The shared pool's state as one round reads it under the lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Every conversation that is not closed, exactly as `open_conversations` orders them (queued ones in queue order first).
    pub open: Vec<ConversationRecord>,
    /// Every agent the pool knows (seen online, or set available, ever), by id.
    pub agents: Vec<AgentRecord>,
}

/// One round of the shared pool: holds the pool's lock from `Store::lock_pool` until `commit` (or drop, which rolls back and frees it).
#[async_trait]
pub trait PoolRound: Send {
    /// What the round read after taking the lock.
    fn snapshot(&self) -> &PoolSnapshot;

    /// Applies `writes` (any `Write` variants, same semantics and results as `Store::apply`) in the locked transaction, commits and frees the lock.
    async fn commit(self: Box<Self>, writes: &[Write]) -> Result<Vec<Applied>, StoreError>;
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store a new conversation.
    CreateConversation(ConversationRecord),
    /// Set a conversation's agent and status (assignment, or re-queueing with no agent).
    Assign {
        /// The conversation.
        conversation: ConversationId,
        /// The agent, or none when re-queued.
        agent: Option<Participant>,
        /// The new status.
        status: ConversationStatus,
        /// When (becomes `queued_at` when queued).
        at: Timestamp,
        /// Re-queued by this agent's transfer: it is not offered to it again.
        declined_by: Option<UserId>,
    },
    /// Close a conversation.
    Close {
        /// The conversation.
        conversation: ConversationId,
        /// Who closed it (`UserId::system()` for the server).
        by: UserId,
        /// Why.
        reason: CloseReason,
        /// When.
        at: Timestamp,
    },
    /// The customer of an open conversation lost its last connection
    /// (`since: Some`) or has one again (`None`).
    CustomerAway {
        /// The conversation.
        conversation: ConversationId,
        /// Since when the customer is away.
        since: Option<Timestamp>,
    },
    /// Store an uploaded attachment's metadata, if its conversation is open
    /// and holds fewer than `max_per_conversation` attachments.
    CreateAttachment {
        /// The attachment (its file is already in place).
        record: AttachmentRecord,
        /// Most attachments one conversation may hold.
        max_per_conversation: usize,
    },
    /// Append a chat message, idempotent on (conversation, author, clientMessageId).
    ///
    /// With attachments, a new message is stored only when every one of them
    /// was uploaded to this conversation by the author and not sent yet; then
    /// it claims them (their `message_id`) and carries their metadata.
    /// Otherwise nothing is written ([`Applied::AttachmentsRefused`]); a
    /// repeated key still returns the original message.
    Append {
        /// The conversation.
        conversation: ConversationId,
        /// The id to give the message if it is new.
        id: MessageId,
        /// The author.
        author: User,
        /// The idempotency key.
        client_message_id: ClientMessageId,
        /// The text.
        text: MessageText,
        /// The attachments to send with it.
        attachments: AttachmentIds,
        /// The time to record if it is new.
        sent_at: Timestamp,
    },
    /// Raise a member's receipt to `up_to_seq` (never lowers it).
    Receipt {
        /// The conversation.
        conversation: ConversationId,
        /// The member.
        user: UserId,
        /// Delivered or read.
        kind: ReceiptKind,
        /// Up to which seq.
        up_to_seq: Seq,
        /// When.
        at: Timestamp,
    },
    /// An agent's connections on `node` went from none to some (`online: true`) or from some to none.
    ///
    /// The agent is online while it has a connection on some node; its last
    /// one going sets `offline_since = at`, a first one clears it. Both
    /// record the agent if it is new (unavailable, idle since `at`) and keep
    /// its latest name; going offline on a node where it was not online does
    /// nothing.
    AgentConnection {
        /// The agent.
        agent: UserId,
        /// Its display name.
        name: String,
        /// The node, as the cluster names it.
        node: String,
        /// Whether the agent now has connections on `node`.
        online: bool,
        /// When.
        at: Timestamp,
    },
    /// `agent.status`: becoming available (from unavailable) sets `idle_since = at`.
    AgentAvailability {
        /// The agent (recorded if new, offline since `at` unless connected).
        agent: UserId,
        /// Its display name.
        name: String,
        /// Whether it is now in the pool.
        available: bool,
        /// When.
        at: Timestamp,
    },
    /// The agent was given a conversation or freed one: `idle_since = at`
    /// (an agent the pool does not know: nothing).
    AgentIdle {
        /// The agent.
        agent: UserId,
        /// When.
        at: Timestamp,
    },
    /// Every connection of `node` is gone (it died or left, or restarted): its agent connections are forgotten; agents left with none go offline at `at`.
    NodeGone {
        /// The node.
        node: String,
        /// When (the agents' `offline_since`).
        at: Timestamp,
    },
    /// Post an item to a feed with the next seq (creating the feed), then
    /// drop what `retention` no longer keeps; with `once`, at most once per key.
    Post {
        /// The feed.
        feed: Feed,
        /// The item.
        item: NewItem,
        /// The idempotency key, if any.
        once: Option<Once>,
        /// What the feed keeps.
        retention: Retention,
    },
    /// Mark a feed's items read up to `up_to` (never lowers it, never beyond the feed's last seq).
    MarkRead {
        /// The feed.
        feed: Feed,
        /// Up to which seq.
        up_to: Seq,
    },
}

impl Write {
    /// Whether it is a write of the shared agent pool (which SQLite refuses).
    fn is_agent_pool_write(&self) -> bool {
        matches!(
            self,
            Self::AgentConnection { .. }
                | Self::AgentAvailability { .. }
                | Self::AgentIdle { .. }
                | Self::NodeGone { .. }
        )
    }
}

/// What one write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Done.
    Done,
    /// A new message, with its seq.
    Appended(MessageRecord),
    /// The key was known: the original message.
    Duplicate(MessageRecord),
    /// The conversation is closed: nothing written.
    Closed,
    /// No such conversation: nothing written.
    NotFound,
    /// The conversation is open but the author of an append is neither its
    /// customer nor its assigned agent: nothing written.
    NotMember,
    /// An append names an attachment that is not an unsent upload of its
    /// author in this conversation (unknown, another conversation's, another
    /// user's, or sent already): nothing written.
    AttachmentsRefused,
    /// An attachment was not stored: its conversation holds its most already.
    AttachmentsFull,
    /// A receipt: whether it moved forward.
    Receipt {
        /// False when an equal or higher receipt was already stored.
        advanced: bool,
    },
    /// A post stored its item.
    Posted(FeedItem),
    /// A post's key was used before with the same request: nothing written;
    /// the first post's seq and item id.
    PostedBefore {
        /// The first post's seq.
        seq: Seq,
        /// The first post's item id.
        id: String,
    },
    /// A post's key was used before with another request: nothing written.
    KeyConflict,
    /// A feed's read mark.
    Read {
        /// Where it stands now.
        read_seq: LastSeq,
        /// Whether it moved forward.
        advanced: bool,
    },
}

/// The error a driver reports, boxed so that no driver type is part of the trait.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached, did not answer in time, or did not
    /// commit the transaction (a lost connection, a conflict that outlasted
    /// the retries): the same request may succeed later. A failed batch wrote
    /// nothing, except when the connection was lost during COMMIT, where it
    /// may have been written: retrying an append is safe (it is idempotent).
    #[error("database unavailable: {}", chain(.0.as_ref()))]
    Unavailable(#[source] DriverError),
    /// The database refused the request (a broken constraint, a statement it
    /// does not accept): sending the same request again fails the same way.
    #[error("database refused the request: {}", chain(.0.as_ref()))]
    Refused(#[source] DriverError),
    /// A stored value does not satisfy the protocol's rules.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL names a store this build does not have.
    #[error("unsupported database url {0:?}: use sqlite://FILE (one node) or postgres://USER[:PASS]@HOST:PORT/DB")]
    Unsupported(String),
}

impl StoreError {
    /// Whether the same request may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// An error and its sources, `: `-separated: drivers often say little at the
/// top ("db error") and put the useful part in the source.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Where conversations and messages live.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies a batch of writes in one transaction, in order; all or nothing.
    ///
    /// A batch that holds a write of the shared agent pool (`Agent*`,
    /// `NodeGone`) first waits for the round in progress, if any, so that it
    /// never lands between a round's snapshot and its commit. SQLite refuses
    /// such a batch whole: it serves one node only.
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError>;

    /// One conversation.
    async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError>;

    /// Every conversation that is not closed, queued ones in queue order first (ties: by id).
    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError>;

    /// Messages with `seq > after`, in order, at most `limit`.
    async fn messages_after(
        &self,
        id: &ConversationId,
        after: LastSeq,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    /// The message `author` stored under `client_message_id` in a conversation, if any
    /// (a retry's original, for conversations the hub no longer holds).
    async fn stored_message(
        &self,
        conversation: &ConversationId,
        author: &UserId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<MessageRecord>, StoreError>;

    /// The attachment `id` of a conversation, if it was uploaded there.
    async fn attachment(
        &self,
        conversation: &ConversationId,
        id: &AttachmentId,
    ) -> Result<Option<AttachmentRecord>, StoreError>;

    /// The members' latest receipts in a conversation.
    async fn receipts(&self, id: &ConversationId) -> Result<Vec<ReceiptRecord>, StoreError>;

    /// The conversations that are not closed where `user` is the customer (a
    /// customer) or the assigned agent (an agent), oldest first (for `session.ready`).
    async fn member_conversations(&self, user: &User) -> Result<Vec<ConversationRecord>, StoreError>;

    /// The conversations that are not closed where `user` is the customer or the assigned agent, whatever its role (for presence when a node dies, which knows only user ids).
    ///
    /// Oldest first, as [`Store::member_conversations`] orders them.
    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationRecord>, StoreError>;

    /// A feed: its last and read seqs, and its items with `seq > after` (the
    /// unread ones, after the read mark, when `after` is `None`), in order, at
    /// most `limit`, none posted before `not_before`; one snapshot.
    async fn feed(
        &self,
        feed: &Feed,
        after: Option<LastSeq>,
        limit: usize,
        not_before: Option<Timestamp>,
    ) -> Result<FeedPage, StoreError>;

    /// A page of conversations for `user` (scope `Mine`: where it is the
    /// customer, or the assigned agent; scope `Queue`: every queued one of a
    /// customer who is not away), in the scope's order, at most
    /// `filter.limit + 1` so that the caller can tell whether more follow.
    async fn list_conversations(&self, user: &User, filter: &ListFilter) -> Result<Vec<SummaryRecord>, StoreError>;

    /// What `session.ready` lists: the user's open conversations (as
    /// [`Store::member_conversations`]) and its `past` most recent closed ones
    /// (as [`Store::list_conversations`] with status closed), read together.
    async fn ready_conversations(
        &self,
        user: &User,
        past: usize,
    ) -> Result<(Vec<ConversationRecord>, Vec<SummaryRecord>), StoreError> {
        let filter = past_filter(past);
        let (open, mut closed) =
            tokio::try_join!(self.member_conversations(user), self.list_conversations(user, &filter))?;
        closed.truncate(past);
        Ok((open, closed))
    }

    /// The open conversations without a message since `quiet_since` (nor an
    /// opening, for one without messages), oldest first.
    async fn quiet_conversations(&self, quiet_since: Timestamp) -> Result<Vec<ConversationId>, StoreError>;

    /// Forgets at most `limit` uploads that no message sent and that were
    /// uploaded before `uploaded_before`, oldest first, and returns their ids
    /// so that the caller removes their files. An append that names one of
    /// them afterwards is refused ([`Applied::AttachmentsRefused`]); one that
    /// claimed it first keeps it.
    async fn forget_unsent_attachments(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError>;

    /// For each conversation opened at or after `since` that an agent has
    /// answered: how long, in ms, from its opening to the agent's first
    /// message (the dashboard's first-response time), in no particular order.
    async fn first_responses(&self, since: Timestamp) -> Result<Vec<u64>, StoreError>;

    /// Locks the shared agent pool for one round (several nodes): waits for the lock (bounded: StoreError::Unavailable after a timeout of a few seconds), then reads the snapshot in the same transaction.
    ///
    /// SQLite serves one node only and refuses it ([`StoreError::Refused`]).
    async fn lock_pool(&self) -> Result<Box<dyn PoolRound>, StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes and closes the store.
    async fn close(&self);
}

/// The filter of a user's `past` most recent closed conversations.
fn past_filter(past: usize) -> ListFilter {
    ListFilter {
        scope: ListScope::Mine,
        status: Some(ConversationStatus::Closed),
        query: None,
        after: None,
        limit: past,
    }
}

/// Whether the URL names a store several nodes can share (PostgreSQL).
pub fn is_shared_url(url: &str) -> bool {
    postgres::is_postgres_url(url)
}

/// Opens the store a database URL names: `sqlite:…` or `postgres://…` / `postgresql://…`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if postgres::is_postgres_url(url) {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Unsupported(url.to_owned()))
    }
}
