//! `petchat chat`: a line-oriented chat for people. Type a line to send it;
//! `/help` lists the commands.

use std::collections::HashMap;
use std::io::Write;

use petchat_client::{Client, ClientConfig, connect};
use petchat_protocol::session::{ConnectionState, Event};
use petchat_protocol::{ConversationId, OpenConversation, PresenceStatus, Role, ServerMessage, Topic, UserId};

use super::{Failure, exit, stopped};

const HELP: &str =
    "commands: /open [topic]  /join ID  /close  /available on|off  /read  /quit  (anything else is sent)";

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

/// What the terminal shows: the current conversation and who is who.
#[derive(Default)]
struct View {
    me: Option<(UserId, Role)>,
    current: Option<ConversationId>,
    names: HashMap<UserId, String>,
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
            "/open" => {
                let topic = (!rest.trim().is_empty()).then(|| Topic::new(rest.trim())).transpose();
                match topic {
                    Ok(topic) => client.open(OpenConversation { topic, ..Default::default() }).await,
                    Err(e) => return say_false(&format!("[topic {e}]")),
                }
            }
            "/join" => match ConversationId::new(rest.trim()) {
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
            "/read" => match (&self.current, petchat_protocol::Seq::new(self.last_seq)) {
                (Some(id), Ok(seq)) => client.mark_read(id, seq).await,
                _ => Ok(()),
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
            Event::State(ConnectionState::Reconnecting { retry_in_ms, close_code }) => say(&format!(
                "[offline{}: reconnecting in {:.1} s]",
                close_code.map(|c| format!(" ({c})")).unwrap_or_default(),
                retry_in_ms as f64 / 1000.0
            )),
            Event::State(ConnectionState::Stopped { .. }) => {}
            Event::Queued { .. } => say("  … queued"),
            Event::Sent(ack) => say(&format!("  ✓ sent #{}", ack.seq)),
            Event::Failed { error, .. } => say(&format!("  ✗ refused: {}", error.message)),
            Event::Dropped { .. } => say("  ✗ dropped: too big for the server"),
            Event::OutboxFull => say("[outbox full: wait for the connection]"),
            Event::Gap { .. } | Event::TokenNeeded { .. } | Event::Invalid(_) => {}
            Event::Message(envelope) => self.message(client, envelope.message).await,
        }
    }

    async fn message(&mut self, client: &Client, message: ServerMessage) {
        match message {
            ServerMessage::SessionReady(ready) => {
                say(&format!("[connected as {} ({})]", ready.user.name, ready.user.role.as_str()));
                self.names.insert(ready.user.id.clone(), ready.user.name.clone());
                self.me = Some((ready.user.id, ready.user.role));
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
                let c = s.conversation;
                self.names.insert(c.customer.id.clone(), c.customer.name.clone());
                if let Some(agent) = &c.agent {
                    self.names.insert(agent.id.clone(), agent.name.clone());
                }
                say(&format!("[conversation {} ({:?})]", c.id, c.status));
                self.current = Some(c.id);
            }
            ServerMessage::ConversationQueued(q) => say(&format!("[waiting for an agent, position {}]", q.position)),
            ServerMessage::AgentAssigned(a) => {
                self.names.insert(a.agent.id.clone(), a.agent.name.clone());
                if self.me.as_ref().is_some_and(|(_, role)| *role == Role::Agent) {
                    say(&format!("[assigned conversation {}]", a.conversation_id));
                    // Joining shows who the customer is and what was said so far.
                    let _ = client.join(&a.conversation_id).await;
                    self.current = Some(a.conversation_id);
                } else {
                    say(&format!("[{} joined the conversation]", a.agent.name));
                }
            }
            ServerMessage::ChatMessage(m) => {
                self.last_seq = self.last_seq.max(m.seq.get());
                say(&format!("{}: {}", m.from.name, m.text));
            }
            ServerMessage::MessageDelivered(r) => {
                say(&format!("  ✓✓ delivered to {} up to #{}", self.name(&r.by), r.up_to_seq))
            }
            ServerMessage::MessageRead(r) => say(&format!("  ✓✓ read by {} up to #{}", self.name(&r.by), r.up_to_seq)),
            ServerMessage::TypingStart(t) => say(&format!("[{} is typing…]", self.name(&t.user_id))),
            ServerMessage::Presence(p) => say(&format!(
                "[{} is {}]",
                self.name(&p.user_id),
                if p.status == PresenceStatus::Online { "online" } else { "offline" }
            )),
            ServerMessage::ConversationClosed(c) => say(&format!("[conversation closed by {}]", self.name(&c.by))),
            ServerMessage::AgentStatus(s) => {
                say(&format!("[available: {}, conversations: {}]", s.available, s.active_conversations))
            }
            ServerMessage::Notification(n) => say(&format!("[{}: {}]", n.title, n.body)),
            ServerMessage::Error(e) => say(&format!("[error {}: {}]", e.code, e.message)),
            ServerMessage::ChatAck(_)
            | ServerMessage::TypingStop(_)
            | ServerMessage::Pong(_)
            | ServerMessage::SessionRefreshed(_) => {}
        }
    }

    fn name(&self, id: &UserId) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string())
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
