// The customer page (index.html) on the petchat browser client; the agent
// inbox is inbox.js. Plain JavaScript: the client (pkg/petchat_web.js) does
// the protocol work.
import init, { connect } from "/pkg/petchat_web.js";
import { live, orderOfPage } from "/live.js";

const role = "customer";
const $ = (id) => document.getElementById(id);
const ui = { banner: $("banner"), status: $("status"), messages: $("messages"), typing: $("typing"), text: $("text"), form: $("composer") };

// In --dev mode the server hands out tokens; a real shop's page gets them from its backend.
const userKey = `petchat.dev.${role}`;
const userId = localStorage.getItem(userKey) || `${role}-${Math.random().toString(36).slice(2, 8)}`;
localStorage.setItem(userKey, userId);
// The order the customer page is about (`?order=1234`): its token grants the
// order's topic, as a shop's backend grants a customer its own orders.
const order = orderOfPage();
async function getToken() {
  // A failed fetch throws: the client then retries with backoff. No token (not --dev): null stops it.
  const topics = order ? `&topics=${encodeURIComponent(`orders:${order}`)}` : "";
  const response = await fetch(`/dev/token?role=${role}&sub=${encodeURIComponent(userId)}${topics}`);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`token: ${response.status}`);
  return response.text();
}

const state = {
  me: null,
  current: null,              // the conversation shown
  conversations: new Map(),   // id -> {id, title, unread, messages: Map(key -> message), typingTimer}
  names: new Map(),
  countdown: null,
};

function conversation(id) {
  if (!state.conversations.has(id)) state.conversations.set(id, { id, title: id.slice(0, 8), unread: 0, messages: new Map(), receipts: { delivered: 0, read: 0 } });
  return state.conversations.get(id);
}

await init();
// One outbox per signed-in user: the customer page and the agent inbox share localStorage.
const storageKey = `petchat.outbox.${role}.${userId}`;
let onLive = null;
const client = connect({ url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws/chat`, getToken, onEvent, storageKey });
window.petchat = client; // for the console and the tests
onLive = live(client, role, order);
if (order) $("order").hidden = false;

// Messages typed offline before a reload are still in the outbox: show them as pending.
for (const m of client.outbox()) {
  conversation(m.conversationId).messages.set(m.clientMessageId, { text: m.text, mine: true, pending: true, from: null });
  if (!state.current) select(m.conversationId);
}

function onEvent(event) {
  const d = event.data;
  onLive?.(event);
  switch (event.type) {
    case "client.state": return showState(d);
    case "session.ready":
      state.me = d.user;
      state.names.set(d.user.id, d.user.name);
      ui.status.textContent = "Finding an agent…";
      if (d.conversations.length === 0) client.open(null, order);
      for (const c of d.conversations) conversation(c.id);
      if (d.conversations[0]) select(d.conversations[0].id);
      return;
    case "conversation.opened":
    case "conversation.joined": {
      const c = conversation(d.conversation.id);
      c.title = d.conversation.topic || d.conversation.customer.name;
      state.names.set(d.conversation.customer.id, d.conversation.customer.name);
      if (d.conversation.agent) state.names.set(d.conversation.agent.id, d.conversation.agent.name);
      select(c.id);
      if (d.conversation.status === "active") ui.status.textContent = `You're chatting with ${d.conversation.agent.name}`;
      if (d.conversation.status === "closed") ui.status.textContent = "This conversation is closed";
      return;
    }
    case "conversation.queued":
      ui.status.textContent = `Waiting for an agent, position ${d.position}`;
      return;
    case "agent.assigned":
      state.names.set(d.agent.id, d.agent.name);
      ui.status.textContent = `You're chatting with ${d.agent.name}`;
      return;
    case "chat.message": {
      const c = conversation(d.conversationId);
      c.messages.set(d.messageId, { seq: d.seq, from: d.from, text: d.text, mine: d.from.id === state.me?.id });
      if (d.from.id !== state.me?.id) {
        if (c.id === state.current && document.visibilityState === "visible") client.markRead(c.id, d.seq);
        else c.unread += 1;
        hideTyping();
      }
      if (c.id === state.current) renderMessages();
      return;
    }
    case "client.queued": {
      const c = conversation(d.conversationId);
      const pending = client.outbox().find((m) => m.clientMessageId === d.clientMessageId);
      c.messages.set(d.clientMessageId, { text: pending ? pending.text : "", mine: true, pending: true, from: state.me });
      if (c.id === state.current) renderMessages();
      return;
    }
    case "client.sent": {
      const c = conversation(d.conversationId);
      // Known by its stored id from now on, so a replay of it is not shown twice.
      const m = c.messages.get(d.clientMessageId) || c.messages.get(d.messageId) || { text: "", mine: true, from: state.me };
      c.messages.delete(d.clientMessageId);
      c.messages.set(d.messageId, Object.assign(m, { pending: false, seq: d.seq }));
      if (c.id === state.current) renderMessages();
      return;
    }
    case "message.delivered":
    case "message.read": {
      const c = conversation(d.conversationId);
      const kind = event.type === "message.read" ? "read" : "delivered";
      if (d.by !== state.me?.id) c.receipts[kind] = Math.max(c.receipts[kind], d.upToSeq);
      if (c.id === state.current) renderMessages();
      return;
    }
    case "typing.start":
      if (d.conversationId === state.current) showTyping(`${state.names.get(d.userId) || d.userId} is typing…`);
      return;
    case "typing.stop": return hideTyping();
    case "conversation.closed":
      if (d.conversationId === state.current) ui.status.textContent = "This conversation is closed";
      return;
    case "notification": return;
    case "error": console.warn("petchat error", d.code, d.message); return;
  }
}

function select(id) {
  state.current = id;
  const c = conversation(id);
  c.unread = 0;
  renderMessages();
  const lastOther = [...c.messages.values()].filter((m) => !m.mine && m.seq).map((m) => m.seq).pop();
  if (lastOther) client.markRead(id, lastOther);
}

function renderMessages() {
  const c = state.current && conversation(state.current);
  if (!c) return;
  const sorted = [...c.messages.values()].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
  ui.messages.replaceChildren(...sorted.map((m) => {
    const li = document.createElement("li");
    li.className = `${m.mine ? "mine" : ""} ${m.pending ? "pending" : ""}`;
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = m.mine ? "You" : m.from?.name ?? "";
    li.append(author, document.createTextNode(m.text));
    if (m.mine) {
      const ticks = document.createElement("span");
      const read = m.seq && c.receipts.read >= m.seq;
      const delivered = m.seq && c.receipts.delivered >= m.seq;
      ticks.className = `ticks ${read ? "read" : ""}`;
      ticks.textContent = m.pending ? "pending" : read ? "✓✓ read" : delivered ? "✓✓ delivered" : "✓ sent";
      ticks.dataset.state = m.pending ? "pending" : read ? "read" : delivered ? "delivered" : "sent";
      li.append(ticks);
    }
    return li;
  }));
  ui.messages.lastElementChild?.scrollIntoView({ block: "nearest" });
}

function showState(s) {
  clearInterval(state.countdown);
  if (s.state === "connected") { ui.banner.hidden = true; return; }
  ui.banner.hidden = false;
  if (s.state === "connecting") ui.banner.textContent = "Connecting…";
  if (s.state === "stopped") ui.banner.textContent = `Disconnected${s.closeCode ? ` (${s.closeCode})` : ""}. Reload the page to try again.`;
  if (s.state === "reconnecting") {
    const until = Date.now() + s.retryInMs;
    const tick = () => { ui.banner.textContent = `Offline: reconnecting in ${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s. Messages you send now will go out then.`; };
    tick();
    state.countdown = setInterval(tick, 1000);
  }
}

let typingTimer;
function showTyping(text) { ui.typing.textContent = text; ui.typing.hidden = false; clearTimeout(typingTimer); typingTimer = setTimeout(hideTyping, 6000); }
function hideTyping() { ui.typing.hidden = true; }

ui.text.addEventListener("input", () => { if (state.current) client.typing(state.current); });
ui.text.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); ui.form.requestSubmit(); } });
ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !state.current) return;
  try { client.send(state.current, text); ui.text.value = ""; } catch (error) { ui.status.textContent = String(error); }
});
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && state.current) select(state.current); });
