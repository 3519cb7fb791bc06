// The agent inbox (/agent) on the petchat browser client: the agent's
// conversations, the queue and past conversations; one conversation with its
// customer's context; close, resolve and transfer; the composer. Plain
// JavaScript: the client (pkg/petchat_web.js) does the protocol work, live.js
// the dashboard and bell, canned.js the canned replies, files.js the
// attachments, alerts.js the notifications and sound.
import init, { connect } from "/pkg/petchat_web.js";
import { live } from "/live.js";
import { $, el } from "/dom.js";
import { cannedReplies } from "/canned.js";
import { upload, attachmentView } from "/files.js";
import { alerts } from "/alerts.js";

/** How often the queue is asked for at the least, and the wait times redrawn. */
const QUEUE_REFRESH_MS = 15_000;
const WAIT_REDRAW_MS = 5_000;
/** At most one queue request per this interval, whatever triggers it. */
const QUEUE_THROTTLE_MS = 1_000;
/** The server's limits: four attachments per message, a page of 20 past conversations. */
const MAX_ATTACHMENTS = 4;
const PAGE = 20;

// ----- identity and token ---------------------------------------------------------
// In --dev mode the server hands out tokens; a real shop's page gets them from its backend.
const userKey = "petchat.dev.agent";
const userId = localStorage.getItem(userKey) || `agent-${Math.random().toString(36).slice(2, 8)}`;
localStorage.setItem(userKey, userId);
async function getToken() {
  // A failed fetch throws: the client then retries with backoff. No token (not --dev): null stops it.
  const response = await fetch(`/dev/token?role=agent&sub=${encodeURIComponent(userId)}`);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`token: ${response.status}`);
  return response.text();
}
// The attachment endpoints take the same JWT as a Bearer header; one token serves a minute.
let httpToken = null;
async function bearer() {
  if (!httpToken || Date.now() - httpToken.at > 60_000) httpToken = { token: await getToken(), at: Date.now() };
  return `Bearer ${httpToken.token}`;
}

// ----- state ------------------------------------------------------------------------
const state = {
  me: null,
  /** Whether the agent wants new conversations; sent again after every reconnect. */
  wantAvailable: sessionStorage.getItem("petchat.inbox.available") !== "false",
  current: null,
  /** id -> conversation as the page holds it (see `conversation`). */
  conversations: new Map(),
  queue: [],
  past: { query: "", items: [], hasMore: false, request: null },
  /** customer id -> the summaries of its conversations with this agent. */
  history: new Map(),
  /** agent id -> name, from transfers: the transfer form offers them. */
  agents: new Map(),
};

function conversation(id) {
  if (!state.conversations.has(id)) {
    state.conversations.set(id, {
      id, info: null, mine: false, messages: new Map(), unread: 0, receipts: { delivered: 0, read: 0 },
      closed: null, waitingSince: null, joinedLastSeq: 0, countReplay: false, online: null, events: 0,
    });
  }
  return state.conversations.get(id);
}
const nameOf = (c) => c.info?.customer?.name ?? "Customer";

// ----- requests with ids: their replies and errors come back with the same id ----------
let requestSeq = 0;
const pending = new Map();
function request(type, data, { reply, error } = {}, retries = 0) {
  const id = `${type}-${++requestSeq}`;
  pending.set(id, { reply, error, resend: () => request(type, data, { reply, error }, retries + 1), retries });
  // Requests without a reply of their own (close, transfer) leave their entry: keep a bounded few.
  while (pending.size > 100) pending.delete(pending.keys().next().value);
  try {
    client.sendMessage({ type, id, data });
  } catch (e) {
    pending.delete(id);
    error?.({ code: "not_sent", message: String(e) });
  }
  return id;
}

await init();
// Set once the client exists; connect() may hand on its first events before.
let onLive = () => {};
let alertAgent = () => {};
const client = connect({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws/chat`,
  getToken, onEvent, storageKey: `petchat.outbox.agent.${userId}`,
});
window.petchat = client; // for the console and the tests
onLive = live(client, "agent", null);
alertAgent = alerts({ button: $("notify"), sound: $("sound"), onOpen: (id) => state.conversations.has(id) && select(id, { show: true }) });

// Messages typed offline before a reload are still in the outbox: show them as pending.
for (const m of client.outbox()) {
  const c = conversation(m.conversationId);
  c.mine = true;
  c.messages.set(m.clientMessageId, { text: m.text, mine: true, pending: true, from: null, seq: null });
}

function onEvent(event) {
  const d = event.data;
  onLive(event);
  if (event.id && pending.has(event.id) && event.type !== "error") {
    const { reply } = pending.get(event.id);
    pending.delete(event.id);
    reply?.(d, event);
  }
  switch (event.type) {
    case "client.state": return showState(d);
    case "session.ready": {
      state.me = d.user;
      $("status").textContent = `Signed in as ${d.user.name} (${d.user.id})`;
      $("available").checked = state.wantAvailable;
      client.setAvailable(state.wantAvailable);
      // The client joins these by itself; their conversation.joined fills them in.
      for (const summary of d.conversations) conversation(summary.id).mine = true;
      // The ten most recent; "More" pages on from the last of them.
      if (!state.past.query) showPast(d.pastConversations ?? [], false, (d.pastConversations ?? []).length >= 10);
      refreshQueue();
      return render();
    }
    case "conversation.opened":
    case "conversation.joined": {
      const c = conversation(d.conversation.id);
      c.info = d.conversation;
      c.joinedLastSeq = d.conversation.lastSeq;
      for (const m of c.messages.values()) {
        if (m.provisional) Object.assign(m, { provisional: false, seq: d.conversation.lastSeq + (m.seq % 1) });
      }
      if (d.conversation.closed) c.closed = d.conversation.closed;
      if (d.conversation.agent?.id === state.me?.id && !d.conversation.closed) c.mine = true;
      if (c.announceOnJoin) {
        c.announceOnJoin = false;
        alertAgent(`New conversation: ${nameOf(c)}`, c.info.topic ?? "A customer is waiting for you", c.id);
        announce(`New conversation assigned with ${nameOf(c)}`);
      }
      if (c.mine && !state.current && wide()) select(c.id, { show: false });
      if (c.id === state.current) renderContext();
      return render();
    }
    case "agent.assigned": {
      if (d.agent.id !== state.me?.id) return;
      const c = conversation(d.conversationId);
      c.mine = true;
      c.closed = null;
      // What the customer wrote while queued is news to this agent.
      c.countReplay = true;
      // The join's reply names the customer: the alert waits for it.
      c.announceOnJoin = true;
      client.join(d.conversationId);
      if (!state.current && wide()) select(c.id, { show: false });
      refreshQueue();
      return render();
    }
    case "chat.message": return onMessage(d);
    case "client.queued": {
      const c = conversation(d.conversationId);
      const outgoing = client.outbox().find((m) => m.clientMessageId === d.clientMessageId);
      const files = sentFiles.get(d.clientMessageId);
      c.messages.set(d.clientMessageId, { text: outgoing ? outgoing.text : "", mine: true, pending: true, from: state.me, seq: null, attachments: files });
      return renderConversation(c.id);
    }
    case "client.sent": {
      const c = conversation(d.conversationId);
      // Known by its stored id from now on, so a replay of it is not shown twice.
      const m = c.messages.get(d.clientMessageId) || c.messages.get(d.messageId) || { text: "", mine: true, from: state.me };
      c.messages.delete(d.clientMessageId);
      c.messages.set(d.messageId, Object.assign(m, { pending: false, seq: d.seq, sentAt: d.sentAt }));
      sentFiles.delete(d.clientMessageId);
      c.waitingSince = null;
      renderConversation(c.id);
      return renderLists();
    }
    case "client.failed": {
      const c = [...state.conversations.values()].find((x) => x.messages.has(d.clientMessageId));
      if (c) c.messages.delete(d.clientMessageId);
      showError(`Not sent: ${d.error?.message ?? d.error?.code ?? "refused"}`);
      if (c) renderConversation(c.id);
      return;
    }
    case "message.delivered":
    case "message.read": {
      const c = conversation(d.conversationId);
      const kind = event.type === "message.read" ? "read" : "delivered";
      if (d.by !== state.me?.id) c.receipts[kind] = Math.max(c.receipts[kind], d.upToSeq);
      return renderConversation(c.id);
    }
    case "typing.start":
      if (d.conversationId === state.current) showTyping(`${nameOf(conversation(d.conversationId))} is typing…`);
      return;
    case "typing.stop": return hideTyping();
    case "presence": {
      const c = conversation(d.conversationId);
      if (d.userId === c.info?.customer?.id) c.online = d.status === "online";
      return renderLists();
    }
    case "conversation.transferred": return onTransferred(d, event.timestamp);
    case "conversation.closed": {
      const c = conversation(d.conversationId);
      c.closed = { by: d.by, reason: d.reason, at: event.timestamp };
      if (c.info) c.info.status = "closed";
      addEvent(c, closedText(c.closed), event.timestamp);
      if (c.mine) announce(`${nameOf(c)}: ${closedText(c.closed)}`);
      if (c.id === state.current) hidePanels();
      refreshQueue();
      if (c.info?.customer) state.history.delete(c.info.customer.id);
      refreshPastSoon();
      return render();
    }
    case "conversation.listed": return;
    case "topic.event":
      if (d.topic === "support:stats") refreshQueue();
      return;
    case "agent.status":
      $("available").checked = d.available;
      return;
    case "error": {
      const waiting = d.refId && pending.get(d.refId);
      if (waiting) {
        pending.delete(d.refId);
        // Over the connection's rate (a burst of assignments costs joins): again once allowed.
        if (d.code === "rate_limited" && waiting.retries < 3) return void setTimeout(waiting.resend, d.retryAfterMs ?? 1000);
        if (waiting.error) return waiting.error(d);
      }
      showError(`${d.code}: ${d.message}`);
      return console.warn("petchat error", d.code, d.message);
    }
  }
}

function onMessage(d) {
  const c = conversation(d.conversationId);
  if (c.messages.has(d.messageId)) return;
  const live = d.seq > c.joinedLastSeq;
  const fromOther = d.from.id !== state.me?.id;
  c.messages.set(d.messageId, { seq: d.seq, from: d.from, text: d.text, mine: !fromOther, sentAt: d.sentAt, attachments: d.attachments });
  // The customer waits from its first message after the last answer of any agent.
  if (d.from.role === "customer") c.waitingSince ??= d.sentAt;
  else c.waitingSince = null;
  if (fromOther && !c.closed) {
    const seen = c.id === state.current && document.visibilityState === "visible" && (wide() || document.body.dataset.view === "conversation");
    if (seen) markReadSoon(c.id);
    else if (live || c.countReplay) c.unread += 1;
    if (live) {
      hideTyping();
      alertAgent(nameOf(c), d.text || "sent a file", c.id);
      announce(`New message from ${d.from.name}: ${d.text}`);
    }
  }
  renderLists();
  renderConversation(c.id);
}

/** One read receipt for a burst of messages (a replay is many): receipts count against the rate limit. */
const readTimers = new Map();
function markReadSoon(id) {
  if (readTimers.has(id)) return;
  readTimers.set(id, setTimeout(() => {
    readTimers.delete(id);
    const c = state.conversations.get(id);
    const last = c && [...c.messages.values()].filter((m) => !m.mine && !m.system && m.seq).map((m) => m.seq).sort((a, b) => a - b).pop();
    if (last && !c.closed) client.markRead(id, last);
  }, 200));
}

function onTransferred(d, at) {
  const c = conversation(d.conversationId);
  state.agents.set(d.from.id, d.from.name);
  if (d.to) state.agents.set(d.to.id, d.to.name);
  renderKnownAgents();
  const who = (a) => (a.id === state.me?.id ? "you" : a.name);
  addEvent(c, `Transferred from ${who(d.from)} to ${d.to ? who(d.to) : "the queue"}`, at);
  if (d.from.id === state.me?.id) {
    // No longer a member: it leaves this agent's list.
    c.mine = false;
    state.conversations.delete(c.id);
    if (state.current === c.id) {
      state.current = null;
      hidePanels();
      showView("list");
      $("status").textContent = `${nameOf(c)} was transferred to ${d.to ? d.to.name : "the queue"}`;
      clearConversation();
    }
    announce(`${nameOf(c)} transferred to ${d.to ? d.to.name : "the queue"}`);
  }
  refreshQueue();
  render();
}

const closedText = (closed) => {
  switch (closed.reason) {
    case "resolved": return "Ended: resolved";
    case "customer_away": return "Ended: customer away";
    case "idle": return "Ended: idle";
    default: return closed.by === state.me?.id ? "Ended: closed by you" : closed.by === "system" ? "Ended: closed" : "Ended: closed by the customer";
  }
};

/** A lifecycle line in the transcript, after the messages that came before it. */
function addEvent(c, text, at) {
  const last = Math.max(0, ...[...c.messages.values()].map((m) => (Number.isFinite(m.seq) ? m.seq : 0)));
  c.events += 1;
  // Before its join (a conversation transferred to this agent), it goes after the history the join replays.
  c.messages.set(`event-${c.events}`, { system: true, text, seq: last + 0.5 + c.events / 1000, sentAt: at, provisional: !c.info });
  renderConversation(c.id);
}

// ----- the queue ----------------------------------------------------------------------
let queueTimer = null;
let queueLast = 0;
let queueInFlight = false;
function refreshQueue() {
  if (queueTimer) return;
  const wait = Math.max(0, queueLast + QUEUE_THROTTLE_MS - Date.now());
  queueTimer = setTimeout(() => {
    queueTimer = null;
    if (queueInFlight || client.state().state !== "connected") return;
    queueLast = Date.now();
    queueInFlight = true;
    request("conversation.list", { scope: "queue", limit: 50 }, {
      reply: (d) => { queueInFlight = false; state.queue = d.conversations; renderQueue(); },
      error: () => { queueInFlight = false; },
    });
  }, wait);
}
setInterval(refreshQueue, QUEUE_REFRESH_MS);
setInterval(() => { renderLists(); if (state.current) renderContext(); }, WAIT_REDRAW_MS);

// ----- past conversations ---------------------------------------------------------------
function searchPast(query, more) {
  const data = { status: "closed", limit: PAGE };
  if (query) data.query = query;
  if (more && state.past.items.length) data.after = state.past.items[state.past.items.length - 1].conversation.id;
  // Only the latest request's answer counts: an older one may come after it.
  state.past.query = query;
  const search = {};
  state.past.request = search;
  request("conversation.list", data, {
    reply: (d) => { if (state.past.request === search) showPast(d.conversations, more, d.hasMore); },
    error: (e) => { if (state.past.request === search) showError(`Search: ${e.message}`); },
  });
}
/** After closes, the recent past conversations once, a second later (closes come in bursts). */
let pastTimer = null;
function refreshPastSoon() {
  if (state.past.query || pastTimer) return;
  pastTimer = setTimeout(() => { pastTimer = null; if (!state.past.query) searchPast("", false); }, 1000);
}
function showPast(items, more, hasMore) {
  state.past.items = more ? [...state.past.items, ...items] : items;
  state.past.hasMore = hasMore;
  renderPast();
}
$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  searchPast($("search-query").value.trim().slice(0, 100), false);
});
$("past-more").addEventListener("click", () => searchPast(state.past.query, true));

/** Opens a closed conversation read-only: joining it replays its transcript. */
function openPast(summary) {
  const c = conversation(summary.conversation.id);
  c.info ??= summary.conversation;
  c.closed ??= summary.conversation.closed ?? null;
  if (c.messages.size === 0) client.join(c.id);
  select(c.id, { show: true });
}

// ----- rendering ------------------------------------------------------------------------
const wide = () => matchMedia("(min-width: 48rem)").matches;
function render() {
  renderLists();
  if (state.current) renderConversation(state.current);
  renderComposerState();
}

function renderLists() {
  const mine = [...state.conversations.values()].filter((c) => c.mine);
  // Open ones first, in the order they came; ended ones below.
  mine.sort((a, b) => Number(Boolean(a.closed)) - Number(Boolean(b.closed)));
  fillRows($("conversations"), mine.map((c) => ({ id: c.id, summary: rowOf(c), onOpen: () => select(c.id, { show: true }) })));
  $("mine-empty").hidden = mine.length > 0;
  const unread = mine.reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Agent inbox` : "Agent inbox";
  renderQueue();
}

function renderQueue() {
  const rows = state.queue.map((s) => ({ id: s.conversation.id, summary: rowOfSummary(s, "queue") }));
  fillRows($("queue"), rows);
  $("queue-empty").hidden = rows.length > 0;
  $("queue-count").textContent = rows.length ? `(${rows.length})` : "";
}

function renderPast() {
  const rows = state.past.items.map((s) => ({ id: s.conversation.id, summary: rowOfSummary(s, "past"), onOpen: () => openPast(s) }));
  fillRows($("past"), rows);
  $("past-empty").hidden = rows.length > 0;
  $("past-more").hidden = !state.past.hasMore;
}

/** What a row shows, from the page's own copy of a conversation. */
function rowOf(c) {
  const last = [...c.messages.values()].filter((m) => !m.system).sort(bySeq).pop();
  return {
    name: nameOf(c), topic: c.info?.topic, petId: c.info?.petId, orderId: c.info?.orderId,
    last: last ? `${last.mine ? "You" : last.from?.name ?? ""}: ${last.text}` : null,
    waitingSince: c.closed ? null : c.waitingSince, unread: c.unread, ended: c.closed ? closedText(c.closed) : null,
    offline: c.online === false && !c.closed, current: c.id === state.current,
  };
}

/** What a row shows, from a `conversation.list` summary. */
function rowOfSummary(s, kind) {
  const conv = s.conversation;
  const last = s.lastMessage;
  const waitingSince = kind === "queue" ? conv.queuedAt ?? conv.createdAt : null;
  return {
    name: conv.customer.name, topic: conv.topic, petId: conv.petId, orderId: conv.orderId,
    last: last ? `${last.from.id === state.me?.id ? "You" : last.from.name}: ${last.text}` : null,
    waitingSince, unread: 0, ended: conv.closed ? closedText(conv.closed) : null,
    date: kind === "past" ? conv.closed?.at ?? conv.createdAt : null, current: conv.id === state.current,
  };
}

/**
 * Fills a list with one row per entry, keeping the elements of rows already
 * there, so that a redraw (every few seconds for the wait times) never takes
 * the keyboard focus away from a row.
 */
function fillRows(list, rows) {
  const existing = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const items = rows.map((row) => {
    let li = existing.get(row.id);
    if (!li) {
      li = el("li", { "data-id": row.id });
      li.append(row.onOpen ? el("button", { type: "button", class: "row" }) : el("div", { class: "row" }));
    }
    const inner = li.firstElementChild;
    if (row.onOpen) inner.onclick = row.onOpen;
    if (inner.tagName === "BUTTON") inner.setAttribute("aria-current", String(row.summary.current));
    inner.replaceChildren(...rowContent(row.summary).filter(Boolean));
    return li;
  });
  const same = items.length === list.children.length && items.every((li, i) => list.children[i] === li);
  if (!same) {
    const focused = list.contains(document.activeElement) ? document.activeElement.closest("li")?.dataset.id : null;
    list.replaceChildren(...items);
    if (focused) list.querySelector(`li[data-id="${CSS.escape(focused)}"] .row`)?.focus();
  }
}

function rowContent(s) {
  const facts = [s.petId && `Pet ${s.petId}`, s.orderId && `Order ${s.orderId}`].filter(Boolean).join(" · ");
  const top = el("span", { class: "row-top" }, el("strong", { class: "row-name", text: s.name }));
  if (s.waitingSince) top.append(el("span", { class: "row-wait", text: `waiting ${since(s.waitingSince)}` }));
  if (s.date) top.append(el("span", { class: "row-wait", text: new Date(s.date).toLocaleDateString() }));
  if (s.unread > 0) top.append(el("span", { class: "unread", role: "img", "aria-label": `${s.unread} unread`, text: String(s.unread) }));
  return [
    top,
    s.topic ? el("span", { class: "row-topic", text: s.topic }) : null,
    facts ? el("span", { class: "row-facts", text: facts }) : null,
    s.last ? el("span", { class: "row-last", text: s.last }) : null,
    s.ended ? el("span", { class: "row-ended", text: s.ended }) : null,
    s.offline ? el("span", { class: "row-ended", text: "Customer offline" }) : null,
  ];
}

/** "12 s", "3 min", "2 h" since an RFC 3339 time. */
function since(at) {
  const ms = Math.max(0, Date.now() - Date.parse(at));
  if (ms < 60_000) return `${Math.floor(ms / 1000)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min`;
  return `${Math.floor(ms / 3_600_000)} h ${Math.floor((ms % 3_600_000) / 60_000)} min`;
}
const bySeq = (a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity);

function select(id, { show }) {
  if (state.current !== id) {
    hidePanels();
    hideTyping();
    clearFiles();
  }
  state.current = id;
  const c = conversation(id);
  c.unread = 0;
  c.countReplay = false;
  renderLists();
  renderConversation(id);
  renderContext();
  renderComposerState();
  if (show) showView("conversation");
  if (c.mine && !c.closed) markReadSoon(id);
}

/** On a phone the list and the conversation are two views; the back button returns. */
function showView(view) {
  document.body.dataset.view = view;
  if (wide()) return;
  if (view === "conversation") $("conversation-title").focus();
  else if (state.current) document.querySelector(`#conversations li[data-id="${CSS.escape(state.current)}"] .row`)?.focus();
}
$("back").addEventListener("click", () => showView("list"));

function clearConversation() {
  $("messages").replaceChildren();
  $("conversation-title").textContent = "No conversation open";
  renderContext();
  renderComposerState();
}

function renderConversation(id) {
  if (id !== state.current) return;
  const c = conversation(id);
  $("conversation-title").textContent = c.info ? `${nameOf(c)}${c.info.topic ? `: ${c.info.topic}` : ""}` : "Conversation";
  const focusedKey = $("messages").contains(document.activeElement) ? document.activeElement.closest("li")?.dataset.key : null;
  const sorted = [...c.messages.entries()].sort(([, a], [, b]) => bySeq(a, b));
  $("messages").replaceChildren(...sorted.map(([key, m]) => messageItem(c, key, m)));
  if (focusedKey) $("messages").querySelector(`li[data-key="${CSS.escape(focusedKey)}"] button`)?.focus();
  $("messages").lastElementChild?.scrollIntoView({ block: "nearest" });
  renderComposerState();
}

function messageItem(c, key, m) {
  if (m.system) return el("li", { class: "event", "data-key": key, text: m.text });
  const li = el("li", { class: `${m.mine ? "mine" : ""} ${m.pending ? "pending" : ""}`, "data-key": key });
  li.append(el("span", { class: "author", text: m.mine ? "You" : m.from?.name ?? "" }), document.createTextNode(m.text));
  if (m.attachments?.length) li.append(el("div", { class: "attachments" }, ...m.attachments.map((a) => attachmentView(c.id, a, { bearer, onError: showError }))));
  if (m.mine) {
    const read = m.seq && c.receipts.read >= m.seq;
    const delivered = m.seq && c.receipts.delivered >= m.seq;
    const ticks = el("span", { class: `ticks ${read ? "read" : ""}`, text: m.pending ? "pending" : read ? "✓✓ read" : delivered ? "✓✓ delivered" : "✓ sent" });
    ticks.dataset.state = m.pending ? "pending" : read ? "read" : delivered ? "delivered" : "sent";
    li.append(ticks);
  }
  return li;
}

function renderComposerState() {
  const c = state.current && state.conversations.get(state.current);
  const writable = Boolean(c && c.mine && !c.closed);
  $("text").disabled = !writable;
  $("composer").querySelector("button[type=submit]").disabled = !writable;
  $("attach").disabled = !writable;
  $("actions").hidden = !writable;
  if (!writable) { $("transfer").hidden = true; $("transfer-toggle").setAttribute("aria-expanded", "false"); }
  if (c && !writable) {
    $("status").textContent = c.closed ? `${closedText(c.closed)} (read only)` : "Read only: you are not this conversation's agent";
  } else if (c) {
    $("status").textContent = `Chatting with ${nameOf(c)}`;
  }
}

// ----- the customer's context -------------------------------------------------------------
function renderContext() {
  const c = state.current && state.conversations.get(state.current);
  const info = c?.info;
  $("context-none").hidden = Boolean(info);
  $("context-facts").hidden = !info;
  $("context-history-heading").hidden = !info;
  if (!info) { $("context-facts").replaceChildren(); $("context-history").replaceChildren(); return; }
  const status = c.closed ? closedText(c.closed) : info.status === "queued" ? "Waiting in the queue" : c.mine ? "Active, with you" : info.status;
  const facts = [
    ["Name", info.customer.name], ["Customer id", info.customer.id], ["Topic", info.topic ?? "—"],
    ["Pet", info.petId ?? "—"], ["Order", info.orderId ?? "—"],
    ["Opened", new Date(info.createdAt).toLocaleString()], ["Status", status],
  ];
  if (c.waitingSince && !c.closed) facts.push(["Waiting for an answer", since(c.waitingSince)]);
  $("context-facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))));
  const customerId = info.customer.id;
  const known = state.history.get(customerId);
  if (known) fillRows($("context-history"), known.filter((s) => s.conversation.id !== c.id).map((s) => ({ id: s.conversation.id, summary: { ...rowOfSummary(s, "past"), name: s.conversation.topic ?? "No topic", topic: null }, onOpen: () => openPast(s) })));
  else {
    state.history.set(customerId, []);
    request("conversation.list", { query: customerId, limit: PAGE }, {
      reply: (d) => {
        // Only this customer's (the query also matches topics and other ids containing it).
        state.history.set(customerId, d.conversations.filter((s) => s.conversation.customer.id === customerId));
        if (state.current === c.id) renderContext();
      },
      error: () => state.history.delete(customerId),
    });
  }
  if (known && !$("context-history").children.length) $("context-history").replaceChildren(el("li", { class: "empty", text: "None before this one." }));
}

// ----- close, resolve, transfer --------------------------------------------------------------
function showError(text) {
  $("action-error").textContent = text;
  $("action-error").hidden = false;
}
function hidePanels() {
  $("transfer").hidden = true;
  $("transfer-toggle").setAttribute("aria-expanded", "false");
  $("action-error").hidden = true;
}
const lifecycleError = (what) => (e) => showError(`${what}: ${{ not_found: "not found", forbidden: "you are not this conversation's agent", conversation_closed: "the conversation has ended already" }[e.code] ?? e.message}`);
$("close").addEventListener("click", () => state.current && request("conversation.close", { conversationId: state.current }, { error: lifecycleError("Close") }));
$("resolve").addEventListener("click", () => state.current && request("conversation.resolve", { conversationId: state.current }, { error: lifecycleError("Resolve") }));
$("transfer-toggle").addEventListener("click", () => {
  const open = $("transfer").hidden;
  $("transfer").hidden = !open;
  $("transfer-toggle").setAttribute("aria-expanded", String(open));
  $("action-error").hidden = true;
  if (open) $("transfer").querySelector("input:checked").focus();
});
$("transfer-cancel").addEventListener("click", () => { hidePanels(); $("transfer-toggle").focus(); });
$("transfer").addEventListener("keydown", (e) => { if (e.key === "Escape") { hidePanels(); $("transfer-toggle").focus(); } });
$("transfer-agent").addEventListener("input", () => { $("transfer").querySelector("input[value=agent]").checked = true; });
$("transfer").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!state.current) return;
  const toAgent = $("transfer").querySelector("input[value=agent]").checked;
  const toAgentId = $("transfer-agent").value.trim();
  if (toAgent && !toAgentId) return showError("Transfer: type the id of the agent to transfer to");
  const data = { conversationId: state.current };
  if (toAgent) data.toAgentId = toAgentId;
  request("conversation.transfer", data, {
    error: (err) => showError(`Transfer: ${{
      not_found: `${toAgentId} is not online`,
      limit_reached: `${toAgentId} is not available or has no free slot`,
      invalid_message: "you cannot transfer a conversation to yourself",
      forbidden: "you are not this conversation's agent",
    }[err.code] ?? err.message} (${err.code})`),
  });
});
function renderKnownAgents() {
  $("known-agents").replaceChildren(...[...state.agents].filter(([id]) => id !== state.me?.id).map(([id, name]) => el("option", { value: id, text: name })));
}

// ----- the composer and attachments ----------------------------------------------------------
const files = [];          // {name, contentType, size, id?, error?, status}
const sentFiles = new Map(); // clientMessageId -> attachment metadata, to show one's own files
function clearFiles() { files.length = 0; renderFiles(); }
function renderFiles() {
  const list = $("pending-files");
  list.hidden = files.length === 0;
  list.replaceChildren(...files.map((f, i) => el("li", {},
    `${f.name} (${f.status})`,
    el("button", { type: "button", class: "link", "aria-label": `Remove ${f.name}`, text: "Remove", onclick: () => { files.splice(i, 1); renderFiles(); } }))));
}
$("attach").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", async (e) => {
  const conversationId = state.current;
  for (const file of [...e.target.files]) {
    if (files.length >= MAX_ATTACHMENTS) { showError(`At most ${MAX_ATTACHMENTS} files per message`); break; }
    const entry = { name: file.name, contentType: file.type, size: file.size, status: "uploading…" };
    files.push(entry);
    renderFiles();
    uploadInto(conversationId, file, entry);
  }
  e.target.value = "";
});
async function uploadInto(conversationId, file, entry) {
  try {
    Object.assign(entry, await upload(conversationId, file, bearer), { status: "ready" });
  } catch (e) {
    entry.status = `not uploaded: ${e.message}`;
    entry.error = true;
  }
  renderFiles();
}

const text = $("text");
// First: the keys the canned list takes go no further.
cannedReplies(text, $("canned"), () => {
  const c = state.current && state.conversations.get(state.current);
  return { customer: c ? nameOf(c) : "there", agent: state.me?.name ?? "your agent", order: c?.info?.orderId ?? "your order", pet: c?.info?.petId ?? "your pet" };
});
text.addEventListener("input", () => { if (state.current && text.value) client.typing(state.current); });
text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const body = text.value.trim();
  const ready = files.filter((f) => f.id);
  if ((!body && ready.length === 0) || !state.current) return;
  if (files.some((f) => !f.id && !f.error)) return showError("Wait for the files to finish uploading");
  try {
    if (ready.length) {
      const clientMessageId = crypto.randomUUID();
      sentFiles.set(clientMessageId, ready.map(({ id, name, contentType, size, width, height }) => ({ id, name, contentType, size, width, height })));
      client.sendMessage({ type: "chat.send", data: { conversationId: state.current, clientMessageId, text: body || ready.map((f) => `${f.contentType?.startsWith("image/") ? "📷" : "📄"} ${f.name}`).join(", "), attachments: ready.map((f) => f.id) } });
    } else {
      client.send(state.current, body);
    }
    text.value = "";
    clearFiles();
    client.stopTyping(state.current);
  } catch (error) {
    showError(String(error));
  }
});

// ----- availability, announcements -------------------------------------------------------
$("available").addEventListener("change", (e) => {
  state.wantAvailable = e.target.checked;
  sessionStorage.setItem("petchat.inbox.available", String(state.wantAvailable));
  client.setAvailable(state.wantAvailable);
});

function announce(text) { $("announce").textContent = text; }

// ----- connection state, typing, keyboard ---------------------------------------------------------
let countdown = null;
function showState(s) {
  clearInterval(countdown);
  const banner = $("banner");
  if (s.state === "connected") { banner.hidden = true; return; }
  banner.hidden = false;
  if (s.state === "connecting") banner.textContent = "Connecting…";
  if (s.state === "stopped") banner.textContent = `Disconnected${s.closeCode ? ` (${s.closeCode})` : ""}. Reload the page to try again.`;
  if (s.state === "reconnecting") {
    const until = Date.now() + s.retryInMs;
    const tick = () => { banner.textContent = `Offline: reconnecting in ${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s. Answers you send now will go out then.`; };
    tick();
    countdown = setInterval(tick, 1000);
  }
}
let typingTimer;
function showTyping(t) { $("typing").textContent = t; $("typing").hidden = false; clearTimeout(typingTimer); typingTimer = setTimeout(hideTyping, 6000); }
function hideTyping() { $("typing").hidden = true; }

// ↑ and ↓ move between the rows of a list.
$("lists").addEventListener("keydown", (e) => {
  if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
  const row = e.target.closest?.(".row");
  if (!row || row.tagName !== "BUTTON") return;
  const rows = [...$("lists").querySelectorAll("button.row")];
  const next = rows[rows.indexOf(row) + (e.key === "ArrowDown" ? 1 : -1)];
  if (next) { e.preventDefault(); next.focus(); }
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.current && (wide() || document.body.dataset.view === "conversation")) select(state.current, { show: false });
});
render();
