//! A shard's typing indicators: start, stop, and expiry without a stop.

use petchat_protocol::{ConversationId, RequestId, ServerMessage, Typing, User, UserId};

use super::shard::{Shard, ShardCommand};
use crate::bus::{ConnId, Skip};

impl Shard {
    pub(super) fn typing_start(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        conversation: &ConversationId,
    ) {
        if !self.member_conversation(conn, user, &id, conversation, None) {
            return;
        }
        self.typing_generation += 1;
        let generation = self.typing_generation;
        if let Some(conv) = self.conversations.get_mut(conversation) {
            conv.typing.insert(user.id.clone(), generation);
        }
        let start =
            ServerMessage::TypingStart(Typing { conversation_id: conversation.clone(), user_id: user.id.clone() });
        self.out.to_conversation(conversation, start, Skip::User(&user.id));
        let internal = self.internal.clone();
        let (conversation, user) = (conversation.clone(), user.id.clone());
        let expiry = self.limits.typing_expiry();
        tokio::spawn(async move {
            tokio::time::sleep(expiry).await;
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(ShardCommand::TypingExpired { conversation, user, generation });
            }
        });
    }

    pub(super) fn typing_expired(&mut self, conversation: &ConversationId, user: &UserId, generation: u64) {
        let current = self.conversations.get(conversation).and_then(|c| c.typing.get(user)).copied();
        if current == Some(generation) {
            self.stop_typing(conversation, user);
        }
    }

    /// Ends `user`'s typing in the conversation, telling the others if it was on.
    pub(super) fn stop_typing(&mut self, conversation: &ConversationId, user: &UserId) {
        let Some(conv) = self.conversations.get_mut(conversation) else { return };
        if conv.typing.remove(user).is_some() {
            let stop =
                ServerMessage::TypingStop(Typing { conversation_id: conversation.clone(), user_id: user.clone() });
            self.out.to_conversation(conversation, stop, Skip::User(user));
        }
    }
}
