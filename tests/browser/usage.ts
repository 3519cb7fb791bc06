// The package's TypeScript declarations, checked with `tsc --strict` by
// scripts/browser.sh: what a web developer writes compiles, and misuse does not.
import init, {
  connect, type PetchatEvent, type PendingMessage, type ConnectionState, type NotificationStatus, type TopicPosition,
  type TopicEventData, type NotificationData, type ServerMessage, type ClientMessage, type ChatMessage,
} from "../../target/web/pkg/petchat_web.js";

await init();
const client = connect({
  url: "wss://chat.example/v1/ws/chat",
  getToken: async (fresh: boolean) => (fresh ? null : "a.jwt.token"),
  onEvent: (event: PetchatEvent) => console.log(event.type, event.data),
  storageKey: "shop.outbox",
});
const key: string = client.send("c-1", "Hello");
// A photo uploaded over HTTP first (POST /v1/conversations/c-1/attachments), then sent by id.
client.sendMessage({ type: "chat.send", data: { conversationId: "c-1", text: "the rash", attachments: ["att-1"] } });
const thumbnails = (message: ChatMessage) =>
  (message.attachments ?? []).filter((a) => a.contentType !== "application/pdf").map((a) => `${a.id} ${a.width}x${a.height}`);
client.sendMessage({ type: "typing.start", data: { conversationId: "c-1" } });
client.markRead("c-1", 3);
const state: ConnectionState = client.state();
const pending: PendingMessage[] = client.outbox();
console.log(key, state.state, pending.map((m) => m.text), thumbnails);
client.onEvent((event) => console.log(event.timestamp));
client.open("Miso stopped eating", "1234");
client.subscribe("orders:1234", 0);
client.subscribe("support:stats");
client.unsubscribe("support:stats");
const topics: TopicPosition[] = client.topics();
const notes: NotificationStatus = client.notifications();
if (notes.unread > 0) client.markNotificationsRead(notes.lastSeq);
const show = (event: TopicEventData, note: NotificationData) => `${event.topic}#${event.seq} ${note.title}`;
console.log(topics.map((t) => t.lastSeq), show);
client.close();

// @ts-expect-error the url is required
connect({ getToken: () => "t" });
// @ts-expect-error getToken gives a token, not a number
connect({ url: "ws://x", getToken: () => 42 });
// @ts-expect-error conversation ids are strings
client.send(7, "Hello");
// @ts-expect-error the state has no such field
console.log(client.state().connected);
// @ts-expect-error a topic is a string
client.subscribe(42);
// @ts-expect-error the notification status has no such field
console.log(client.notifications().count);

// The events are a union told apart by `type`: narrowing gives the message's data.
const onEvent = (event: PetchatEvent): string => {
  if (event.type === "chat.message") {
    const text: string = event.data.text;
    const seq: number = event.data.seq;
    const message: ChatMessage = event.data;
    return `${message.from.name}#${seq}: ${text}`;
  }
  if (event.type === "client.sent") return `${event.data.clientMessageId} is #${event.data.seq}`;
  if (event.type === "error") return `${event.data.code} ${event.data.refId ?? ""} ${event.id ?? ""}`;
  return event.timestamp;
};
client.onEvent((event) => console.log(onEvent(event)));

// A switch over every server message type is checked for exhaustiveness.
const describe = (message: ServerMessage): string => {
  switch (message.type) {
    case "session.ready": return message.data.user.role;
    case "conversation.opened":
    case "conversation.joined": return message.data.conversation.status;
    case "conversation.queued": return `position ${message.data.position}`;
    case "agent.assigned": return message.data.agent.name;
    case "conversation.closed": return message.data.by;
    case "conversation.transferred": return message.data.from.name;
    case "conversation.listed": return `${message.data.conversations.length} ${message.data.hasMore}`;
    case "chat.message": return `${message.data.text} ${message.data.attachments?.length ?? 0}`;
    case "chat.ack": return message.data.messageId;
    case "message.delivered":
    case "message.read": return `${message.data.by} ${message.data.upToSeq}`;
    case "typing.start":
    case "typing.stop": return message.data.userId;
    case "presence": return message.data.status;
    case "agent.status": return `${message.data.activeConversations}`;
    case "notification": return message.data.link ?? message.data.title;
    case "notification.read": return `${message.data.upToSeq}`;
    case "error": return message.data.message;
    case "pong": return "pong";
    case "session.refreshed": return message.data.tokenExpiresAt;
    case "topic.subscribed": return `${message.data.recovered}`;
    case "topic.unsubscribed": return message.data.topic;
    case "topic.event": return message.data.event;
    default: {
      const unhandled: never = message;
      return unhandled;
    }
  }
};
// The same over every event: the client's own need their cases too.
const everyEvent = (event: PetchatEvent): string => {
  switch (event.type) {
    case "client.state": return event.data.state;
    case "client.queued":
    case "client.dropped":
    case "client.failed": return event.data.clientMessageId;
    case "client.sent": return event.data.messageId;
    case "client.error": return event.data.code;
    case "client.gap": return `${event.data.expected} ${event.data.got}`;
    case "client.token_needed": return `${event.data.closeCode}`;
    case "client.invalid": return event.data.message;
    default: return describe(event);
  }
};
const forgetful = (event: PetchatEvent): string => {
  switch (event.type) {
    case "client.state": return event.data.state;
    default: {
      // @ts-expect-error the other events are not handled, so event is not never
      const unhandled: never = event;
      return unhandled;
    }
  }
};
console.log(everyEvent, forgetful);

// sendMessage takes the client messages, typed; a chat.send may leave out its clientMessageId.
client.sendMessage({ type: "chat.send", data: { conversationId: "c-1", text: "Hi" } });
client.sendMessage({ type: "chat.send", id: "r-1", data: { conversationId: "c-1", clientMessageId: key, text: "Hi" } });
client.sendMessage({ type: "conversation.join", data: { conversationId: "c-1", afterSeq: 4 } });
client.sendMessage({ type: "ping", data: {} });
client.sendMessage('{"type":"ping","data":{}}');
const frames: ClientMessage[] = [{ type: "message.read", data: { conversationId: "c-1", upToSeq: 3 } }];
frames.forEach((frame) => client.sendMessage(frame));
const status: ConnectionState["state"] = "reconnecting";
console.log(status);

(event: PetchatEvent) => {
  // @ts-expect-error "chat.mesage" is no event type
  if (event.type === "chat.mesage") return;
  // @ts-expect-error only some events have a conversation
  console.log(event.data.conversationId);
  if (event.type === "chat.message") {
    // @ts-expect-error seq is a number
    const seq: string = event.data.seq;
    // @ts-expect-error a chat message has no such field
    console.log(seq, event.data.body);
  }
};
// @ts-expect-error "chat.mesage" is no client message
client.sendMessage({ type: "chat.mesage", data: { conversationId: "c-1", text: "Hi" } });
// @ts-expect-error a server message is not a client message
client.sendMessage({ type: "chat.ack", data: { conversationId: "c-1" } });
// @ts-expect-error message.read needs upToSeq
client.sendMessage({ type: "message.read", data: { conversationId: "c-1" } });
// @ts-expect-error upToSeq is a number
client.sendMessage({ type: "message.read", data: { conversationId: "c-1", upToSeq: "3" } });
// @ts-expect-error a chat.send needs its text
client.sendMessage({ type: "chat.send", data: { conversationId: "c-1" } });
// @ts-expect-error available is a boolean
client.sendMessage({ type: "agent.status", data: { available: "yes" } });
// @ts-expect-error the data of a message is required
client.sendMessage({ type: "typing.start" });
// @ts-expect-error there is no such connection state
const wrong: ConnectionState["state"] = "online";
console.log(wrong);
