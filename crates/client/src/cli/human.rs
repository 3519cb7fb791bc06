//! `petchat chat`: a line-oriented chat for people. Type a line to send it;
//! `/help` lists the commands.

use std::collections::HashMap;
use std::io::Write;

use petchat_client::{Client, ClientConfig, connect};
use petchat_protocol::session::{ConnectionState, Event};
use petchat_protocol::{
    CloseReason, ConversationId, ConversationStatus, OpenConversation, PresenceStatus, Role, ServerMessage, Topic,
    UserId,
};

use super::{Failure, exit, stopped};

const HELP: &str = "commands: /open [topic]  /join ID|N  /list  /close  /available on|off  /read  /quit  \
                    (anything else is sent)";

pub(crate) async fn chat_lines(config: ClientConfig) -> Result<(), Failure> {
    let (client, mut events) = connect(config).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let mut lines = super::stdin_lines();
    let mut view = View::default();
    say(HELP);
    let mut leaving = false;
    loop {
        tokio::select! {
            line = lines.recv(), if !leaving => match line {
                Some(line) => {
                    if view.command(&client, line.trim()).await {
                        leaving = true;
                        client.disconnect().await;
                    }
                }
                None => {
                    leaving = true;
                    client.disconnect().await;
                }
            },
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                if let Event::State(ConnectionState::Stopped { close_code }) = &event {
                    if leaving {
                        return Ok(());
                    }
                    say(&format!("[stopped{}]", close_code.map(|c| format!(": {c}")).unwrap_or_default()));
                    return Err(stopped(*close_code));
                }
                view.show(&client, event).await;
            }
        }
    }
}

/// What the terminal shows: the conversations, the current one and who is who.
#[derive(Default)]
struct View {
    me: Option<(UserId, Role)>,
    current: Option<ConversationId>,
    names: HashMap<UserId, String>,
    /// Every conversation seen, in the order first seen: its label is its
    /// place in this list, from 1.
    conversations: Vec<Seen>,
}

/// What the terminal knows of one conversation.
struct Seen {
    id: ConversationId,
    status: Option<ConversationStatus>,
    last_seq: u64,
}

impl View {
    /// Handles a typed line; true when the user quits.
    async fn command(&mut self, client: &Client, line: &str) -> bool {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let result = match word {
            "" => Ok(()),
            "/quit" => return true,
            "/help" => {
                say(HELP);
                Ok(())
            }
            "/list" => {
                self.list();
                Ok(())
            }
            "/open" => {
                let topic = (!rest.trim().is_empty()).then(|| Topic::new(rest.trim())).transpose();
                match topic {
                    Ok(topic) => client.open(OpenConversation { topic, ..Default::default() }).await,
                    Err(e) => return say_false(&format!("[topic {e}]")),
                }
            }
            "/join" => match self.resolve(rest.trim()) {
                Ok(id) => {
                    self.current = Some(id.clone());
                    client.join(&id).await
                }
                Err(e) => return say_false(&format!("[conversation id {e}]")),
            },
            "/close" => match &self.current {
                Some(id) => client.close_conversation(id).await,
                None => return say_false("[no conversation]"),
            },
            "/available" => client.set_available(rest.trim() != "off").await,
            "/read" => match self.current.as_ref().map(|id| (id, self.seen(id).map_or(0, |s| s.last_seq))) {
                Some((id, last)) => match petchat_protocol::Seq::new(last) {
                    Ok(seq) => client.mark_read(id, seq).await,
                    Err(_) => Ok(()),
                },
                None => Ok(()),
            },
            _ if word.starts_with('/') => return say_false(&format!("[unknown command {word}] {HELP}")),
            _ => match &self.current {
                Some(id) => client.send_chat(id, line).await.map(|_| ()),
                None => return say_false("[no conversation yet: /open or /join first]"),
            },
        };
        if let Err(e) = result {
            say(&format!("[{e}]"));
        }
        false
    }

    async fn show(&mut self, client: &Client, event: Event) {
        match event {
            Event::State(ConnectionState::Connecting) => say("[connecting…]"),
            Event::State(ConnectionState::Connected) => {}
            Event::State(ConnectionState::Reconnecting { retry_in_ms, close_code, reason }) => say(&format!(
                "[offline{}{}: reconnecting in {:.1} s]",
                close_code.map(|c| format!(" ({c})")).unwrap_or_default(),
                if reason.is_empty() { String::new() } else { format!(" {reason}") },
                retry_in_ms as f64 / 1000.0
            )),
            Event::State(ConnectionState::Stopped { .. }) => {}
            Event::Queued { conversation_id, .. } => self.say_in(&conversation_id, "  … queued"),
            Event::Sent(ack) => {
                self.advance(&ack.conversation_id, ack.seq.get());
                self.say_in(&ack.conversation_id, &format!("  ✓ sent #{}", ack.seq));
            }
            Event::Failed { error, .. } => say(&format!("  ✗ refused: {}", error.message)),
            Event::Dropped { .. } => say("  ✗ dropped: too big for the server"),
            Event::OutboxFull => say("[outbox full: wait for the connection]"),
            Event::Gap { .. } | Event::TokenNeeded { .. } | Event::Invalid(_) => {}
            Event::Message(envelope) => self.message(client, envelope.message).await,
        }
    }

    async fn message(&mut self, client: &Client, message: ServerMessage) {
        let opened = matches!(message, ServerMessage::ConversationOpened(_));
        match message {
            ServerMessage::SessionReady(ready) => {
                say(&format!("[connected as {} ({})]", ready.user.name, ready.user.role.as_str()));
                self.names.insert(ready.user.id.clone(), ready.user.name.clone());
                self.me = Some((ready.user.id, ready.user.role));
                for conversation in &ready.conversations {
                    let seen = self.note(&conversation.id);
                    seen.status = Some(conversation.status);
                    seen.last_seq = seen.last_seq.max(conversation.last_seq.get());
                }
                if let Some(first) = ready.conversations.first() {
                    self.current.get_or_insert(first.id.clone());
                } else if ready.user.role == Role::Customer && self.current.is_none() {
                    let _ = client.open(OpenConversation::default()).await;
                }
                if ready.user.role == Role::Agent {
                    let _ = client.set_available(true).await;
                }
            }
            ServerMessage::ConversationOpened(s) | ServerMessage::ConversationJoined(s) => {
                // The rejoins after a reconnect must not move typed lines to another conversation.
                let switch = opened || self.current.is_none();
                let c = s.conversation;
                self.names.insert(c.customer.id.clone(), c.customer.name.clone());
                if let Some(agent) = &c.agent {
                    self.names.insert(agent.id.clone(), agent.name.clone());
                }
                let seen = self.note(&c.id);
                seen.status = Some(c.status);
                seen.last_seq = seen.last_seq.max(c.last_seq.get());
                self.say_in(&c.id, &format!("[conversation {} ({:?})]", c.id, c.status));
                if switch {
                    self.current = Some(c.id);
                }
            }
            ServerMessage::ConversationQueued(q) => {
                self.note(&q.conversation_id).status = Some(ConversationStatus::Queued);
                self.say_in(&q.conversation_id, &format!("[waiting for an agent, position {}]", q.position));
            }
            ServerMessage::AgentAssigned(a) => {
                self.names.insert(a.agent.id.clone(), a.agent.name.clone());
                self.note(&a.conversation_id).status = Some(ConversationStatus::Active);
                if self.me.as_ref().is_some_and(|(_, role)| *role == Role::Agent) {
                    self.say_in(&a.conversation_id, &format!("[assigned conversation {}]", a.conversation_id));
                    // Joining shows who the customer is and what was said so far.
                    let _ = client.join(&a.conversation_id).await;
                    self.current = Some(a.conversation_id);
                } else {
                    self.say_in(&a.conversation_id, &format!("[{} joined the conversation]", a.agent.name));
                }
            }
            ServerMessage::ChatMessage(m) => {
                self.advance(&m.conversation_id, m.seq.get());
                self.say_in(&m.conversation_id, &format!("{}: {}", m.from.name, m.text));
            }
            ServerMessage::MessageDelivered(r) => self
                .say_in(&r.conversation_id, &format!("  ✓✓ delivered to {} up to #{}", self.name(&r.by), r.up_to_seq)),
            ServerMessage::MessageRead(r) => {
                self.say_in(&r.conversation_id, &format!("  ✓✓ read by {} up to #{}", self.name(&r.by), r.up_to_seq))
            }
            ServerMessage::TypingStart(t) => {
                self.say_in(&t.conversation_id, &format!("[{} is typing…]", self.name(&t.user_id)))
            }
            ServerMessage::Presence(p) => self.say_in(
                &p.conversation_id,
                &format!(
                    "[{} is {}]",
                    self.name(&p.user_id),
                    if p.status == PresenceStatus::Online { "online" } else { "offline" }
                ),
            ),
            ServerMessage::ConversationClosed(c) => {
                self.note(&c.conversation_id).status = Some(ConversationStatus::Closed);
                let why = match c.reason {
                    CloseReason::Closed => format!("closed by {}", self.name(&c.by)),
                    CloseReason::Resolved => format!("resolved by {}", self.name(&c.by)),
                    CloseReason::CustomerAway => "closed: the customer was away".to_owned(),
                    CloseReason::Idle => "closed: no message for a long time".to_owned(),
                };
                self.say_in(&c.conversation_id, &format!("[conversation {why}]"));
            }
            ServerMessage::ConversationTransferred(t) => {
                let to = t.to.as_ref().map_or_else(|| "the queue".to_owned(), |a| a.name.clone());
                self.say_in(&t.conversation_id, &format!("[{} handed the conversation to {to}]", t.from.name));
            }
            ServerMessage::ConversationListed(list) => {
                for summary in &list.conversations {
                    let c = &summary.conversation;
                    let last = summary.last_message.as_ref().map_or("", |m| m.text.as_str());
                    say(&format!("[{} {:?} {}: {}]", c.id, c.status, c.customer.name, last));
                }
            }
            ServerMessage::AgentStatus(s) => {
                say(&format!("[available: {}, conversations: {}]", s.available, s.active_conversations))
            }
            ServerMessage::Notification(n) => say(&format!("[{}: {}]", n.title, n.body)),
            ServerMessage::TopicEvent(e) => say(&format!("[{} #{}: {}]", e.topic, e.seq, e.event)),
            ServerMessage::Error(e) => say(&format!("[error {}: {}]", e.code, e.message)),
            ServerMessage::ChatAck(_)
            | ServerMessage::TypingStop(_)
            | ServerMessage::Pong(_)
            | ServerMessage::SessionRefreshed(_)
            | ServerMessage::NotificationRead(_)
            | ServerMessage::TopicSubscribed(_)
            | ServerMessage::TopicUnsubscribed(_) => {}
        }
    }

    /// `/list`: every conversation with its label, status and last seq; `*` marks the current one.
    fn list(&self) {
        if self.conversations.is_empty() {
            return say("[no conversations yet]");
        }
        say("[conversations]");
        for (index, seen) in self.conversations.iter().enumerate() {
            let mark = if self.current.as_ref() == Some(&seen.id) { '*' } else { ' ' };
            say(&format!("{mark} [{}] {}  {}  last #{}", index + 1, seen.id, status_name(seen.status), seen.last_seq));
        }
    }

    /// A conversation named by its label in `/list` or by its id.
    fn resolve(&self, text: &str) -> Result<ConversationId, petchat_protocol::InvalidValue> {
        let by_label =
            text.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| self.conversations.get(i));
        match by_label {
            Some(seen) => Ok(seen.id.clone()),
            None => ConversationId::new(text),
        }
    }

    /// Prints a line about a conversation, labelled with its number once there are several.
    fn say_in(&mut self, conversation_id: &ConversationId, line: &str) {
        let label = self.label(conversation_id);
        if self.conversations.len() > 1 { say(&format!("[{label}] {line}")) } else { say(line) }
    }

    fn label(&mut self, conversation_id: &ConversationId) -> usize {
        self.note(conversation_id);
        self.conversations.iter().position(|s| &s.id == conversation_id).map_or(0, |i| i + 1)
    }

    /// The conversation's entry, added when it is new.
    fn note(&mut self, conversation_id: &ConversationId) -> &mut Seen {
        let index = match self.conversations.iter().position(|s| &s.id == conversation_id) {
            Some(index) => index,
            None => {
                self.conversations.push(Seen { id: conversation_id.clone(), status: None, last_seq: 0 });
                self.conversations.len() - 1
            }
        };
        &mut self.conversations[index]
    }

    fn seen(&self, conversation_id: &ConversationId) -> Option<&Seen> {
        self.conversations.iter().find(|s| &s.id == conversation_id)
    }

    fn advance(&mut self, conversation_id: &ConversationId, seq: u64) {
        let seen = self.note(conversation_id);
        seen.last_seq = seen.last_seq.max(seq);
    }

    fn name(&self, id: &UserId) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }
}

fn status_name(status: Option<ConversationStatus>) -> &'static str {
    match status {
        Some(ConversationStatus::Queued) => "queued",
        Some(ConversationStatus::Active) => "active",
        Some(ConversationStatus::Closed) => "closed",
        None => "unknown",
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn say_false(line: &str) -> bool {
    say(line);
    false
}
