// The package's TypeScript declarations, checked with `tsc --strict` by
// scripts/browser.sh: what a web developer writes compiles, and misuse does not.
import init, {
  connect, type PetchatEvent, type PendingMessage, type ConnectionState, type NotificationStatus, type TopicPosition,
  type TopicEventData, type NotificationData,
} from "../../target/web/pkg/petchat_web.js";

await init();
const client = connect({
  url: "wss://chat.example/v1/ws/chat",
  getToken: async (fresh: boolean) => (fresh ? null : "a.jwt.token"),
  onEvent: (event: PetchatEvent) => console.log(event.type, event.data),
  storageKey: "shop.outbox",
});
const key: string = client.send("c-1", "Hello");
client.sendMessage({ type: "typing.start", data: { conversationId: "c-1" } });
client.markRead("c-1", 3);
const state: ConnectionState = client.state();
const pending: PendingMessage[] = client.outbox();
console.log(key, state.state, pending.map((m) => m.text));
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
