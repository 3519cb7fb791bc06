//! A shard's chat: `chat.send`, stored then acked then fanned out, and the
//! delivery and read receipts.

use petchat_protocol::{ErrorCode, MessageId, Receipt, ReceiptUpTo, RequestId, SendChat, ServerMessage, User};

use super::batch::{Batch, Outcome};
use super::frames::{frame, now};
use super::out::ack;
use super::sequence::Ready;
use super::shard::Shard;
use crate::bus::{ConnId, Skip};
use crate::store::{Applied, ReceiptKind, Write};

impl Shard {
    pub(super) fn chat_send(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        send: SendChat,
        batch: &mut Batch<Self>,
    ) {
        let retry = Some(&send.client_message_id);
        if !self.member_conversation(conn, user, &id, &send.conversation_id, retry) {
            return;
        }
        let conversation = send.conversation_id.clone();
        self.stop_typing(&conversation, &user.id);
        let write = Write::Append {
            conversation: conversation.clone(),
            id: MessageId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid id"),
            author: user.clone(),
            client_message_id: send.client_message_id,
            text: send.text,
            attachments: send.attachments,
            sent_at: now(),
        };
        batch.write_then(write, move |shard, outcome| match outcome {
            Outcome::Applied(Applied::Appended(record)) => {
                let message = frame(ServerMessage::ChatMessage(record.clone().into()), None);
                if let Some(remote) = &shard.remote {
                    remote.message(&conversation, record.seq.get(), &message);
                }
                let ack = frame(ServerMessage::ChatAck(ack(record)), id);
                // The ack and the message go out once every earlier message did.
                shard.deliver_in_order(
                    &conversation,
                    record.seq.get(),
                    Ready { frame: message, sender: Some((conn, ack)) },
                );
                metrics::counter!("petchat_chat_messages_stored_total").increment(1);
            }
            Outcome::Applied(Applied::Duplicate(record)) => {
                shard.out.send_to(conn, ServerMessage::ChatAck(ack(record)), id);
            }
            Outcome::Applied(Applied::Closed) => {
                shard.out.error(conn, id, ErrorCode::ConversationClosed, "the conversation is closed");
            }
            Outcome::Applied(Applied::NotMember) => {
                shard.out.error(conn, id, ErrorCode::Forbidden, "this conversation is not yours");
            }
            Outcome::Applied(Applied::AttachmentsRefused) => {
                let message = "data.attachments: each must be an attachment you uploaded to this conversation \
                               and have not sent yet";
                shard.out.error(conn, id, ErrorCode::InvalidMessage, message);
            }
            Outcome::Applied(_) => shard.out.error(conn, id, ErrorCode::NotFound, "no such conversation"),
            Outcome::Failed | Outcome::None => {
                shard.out.error(conn, id, ErrorCode::Internal, "the message could not be stored; send it again");
            }
        });
    }

    pub(super) fn receipt(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        receipt: ReceiptUpTo,
        kind: ReceiptKind,
        batch: &mut Batch<Self>,
    ) {
        if !self.member_conversation(conn, user, &id, &receipt.conversation_id, None) {
            return;
        }
        let last = self.conversations.get(&receipt.conversation_id).map(|c| c.rec.last_seq).unwrap_or_default();
        if receipt.up_to_seq.get() > last.get() {
            let message = format!("data.upToSeq {} is beyond the conversation's last seq {last}", receipt.up_to_seq);
            return self.out.error(conn, id, ErrorCode::InvalidMessage, &message);
        }
        let at = now();
        let write = Write::Receipt {
            conversation: receipt.conversation_id.clone(),
            user: user.id.clone(),
            kind,
            up_to_seq: receipt.up_to_seq,
            at,
        };
        let by = user.id.clone();
        batch.write_then(write, move |shard, outcome| match outcome {
            Outcome::Applied(Applied::Receipt { advanced: true }) => {
                let data =
                    Receipt { conversation_id: receipt.conversation_id.clone(), up_to_seq: receipt.up_to_seq, by, at };
                let message = match kind {
                    ReceiptKind::Delivered => ServerMessage::MessageDelivered(data),
                    ReceiptKind::Read => ServerMessage::MessageRead(data),
                };
                shard.out.to_conversation(&receipt.conversation_id, message, Skip::Conn(conn));
            }
            Outcome::Applied(_) => {}
            Outcome::Failed | Outcome::None => {
                shard.out.error(conn, id, ErrorCode::Internal, "the receipt could not be stored");
            }
        });
    }
}
