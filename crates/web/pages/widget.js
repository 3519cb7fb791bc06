// The petchat customer widget: one <script src="https://CHAT-HOST/widget.js"> on
// any shop page adds a launcher button and a chat panel, inside a Shadow DOM so
// that the shop's CSS cannot reach it. It loads the wasm client from the chat
// host and talks to /v1/ws/chat there. Public API and options: docs/browser.md
// ("Embedding the widget"). A classic script, not a module, so that
// `document.currentScript` gives its data-* attributes and its origin.
(() => {
  "use strict";
  if (window.PetchatWidget) return; // Included twice: the first one wins.

  const script = document.currentScript;
  const base = new URL(script?.src || location.href);
  const attrs = script?.dataset ?? {};
  const given = window.PetchatWidgetOptions || {};
  const options = {
    title: given.title ?? attrs.title ?? "Pet store support",
    chatUrl: given.chatUrl ?? attrs.chatUrl ?? `${base.protocol === "https:" ? "wss" : "ws"}://${base.host}/v1/ws/chat`,
    tokenUrl: given.tokenUrl ?? attrs.tokenUrl ?? null,
  };
  // Read when a token is needed, so that a page may set it after this script ran.
  const tokenProvider = () => (typeof window.PetchatWidgetOptions?.getToken === "function" ? window.PetchatWidgetOptions.getToken : null);
  /** The shop's context for the next conversation: what, which pet, which order. */
  let context = cleanContext({ topic: given.topic ?? attrs.topic, petId: given.petId ?? attrs.petId, orderId: given.orderId ?? attrs.orderId });
  const ACTIVE_KEY = "petchat.widget.active";   // localStorage: a conversation is open; connect at load
  const OPEN_KEY = "petchat.widget.open";       // sessionStorage: the panel was open before a reload
  const MAX_ATTACHMENTS = 4;
  const MAX_SHOWN = 500;                        // messages shown at most, the latest
  const ACCEPT = "image/jpeg,image/png,image/gif,image/webp,application/pdf";

  // ----- the DOM, in a shadow root ----------------------------------------------------------
  const host = document.createElement("div");
  host.id = "petchat-widget";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `<style>${css()}</style><div class="root">
<button type="button" class="launcher" id="launcher" aria-expanded="false" aria-controls="panel">
  <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2Z"/></svg>
  <span>Chat with us</span><span class="badge" id="badge" hidden></span>
</button>
<section class="panel" id="panel" role="dialog" aria-labelledby="title" hidden>
  <header>
    <h2 id="title"></h2>
    <button type="button" class="end" id="end" hidden>End chat</button>
    <button type="button" class="close" id="close" aria-label="Minimize chat">
      <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><path fill="currentColor" d="M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4Z"/></svg>
    </button>
  </header>
  <p class="banner" id="banner" role="status" hidden></p>
  <p class="status" id="status" role="status" aria-live="polite">Connecting…</p>
  <ol class="messages" id="messages" aria-label="Conversation" tabindex="0"></ol>
  <p class="empty" id="empty" hidden>Ask us anything about your pet or your order.</p>
  <p class="typing" id="typing" aria-live="polite" hidden></p>
  <div class="ended" id="ended" hidden>
    <p id="ended-reason" role="status"></p>
    <button type="button" id="restart">Start a new conversation</button>
  </div>
  <form class="composer" id="composer">
    <label for="text">Your message</label>
    <ul class="chips" id="chips" aria-label="Files to send"></ul>
    <p class="error" id="composer-error" role="alert" hidden></p>
    <div class="row">
      <button type="button" class="attach" id="attach" aria-label="Attach a photo or PDF">
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><path fill="currentColor" d="M16.5 6v11.5a4 4 0 0 1-8 0V5a2.5 2.5 0 0 1 5 0v10.5a1 1 0 0 1-2 0V6H10v9.5a2.5 2.5 0 0 0 5 0V5a4 4 0 0 0-8 0v12.5a5.5 5.5 0 0 0 11 0V6Z"/></svg>
      </button>
      <input type="file" id="file" accept="${ACCEPT}" multiple hidden>
      <textarea id="text" rows="2" maxlength="4000" placeholder="Type your message; Enter sends"></textarea>
      <button type="submit" class="send">Send</button>
    </div>
  </form>
</section></div>`;
  const $ = (id) => root.getElementById(id);
  $("title").textContent = options.title;

  // ----- state ----------------------------------------------------------------------------------
  const state = {
    client: null, ready: null, me: null, token: null,
    /** The conversation shown: {id, status, agent, queuedAt, position, closed, transferring}. */
    current: null,
    messages: new Map(),            // key (messageId or clientMessageId) -> message
    receipts: { delivered: 0, read: 0 },
    past: [],                       // session.ready.pastConversations
    wantsConversation: false,       // opened, with no open conversation yet: open one once connected
    connected: false,
    unread: 0,
    early: [],                      // messages typed before the conversation was opened: {text, attachments}
    chips: [],                      // files picked for the next message: {key, file, state, attachment?, reason?, preview?}
    blobs: new Map(),               // attachment id -> blob URL of its thumbnail
    listeners: new Set(),
    countdown: null, waitTimer: null, typingTimer: null,
  };

  // ----- public API -----------------------------------------------------------------------------
  const api = {
    /** Opens the panel; `context` ({topic, petId, orderId}) goes with the next new conversation. */
    open(next) { if (next) context = cleanContext(next); show(); },
    /** Hides the panel (the conversation goes on). */
    close() { hide(false); },
    /** Connects without opening the panel; resolves with the PetchatClient. */
    connect() { return ensureClient(); },
    /** Calls `callback(event)` for every client event; returns a function that removes it. */
    onEvent(callback) { state.listeners.add(callback); return () => state.listeners.delete(callback); },
    /** Whether the panel is open. */
    get isOpen() { return !$("panel").hidden; },
  };
  window.PetchatWidget = api;


  // ----- connection -----------------------------------------------------------------------------
  async function provideToken(fresh) {
    let token = null;
    const getToken = tokenProvider();
    if (getToken) token = await getToken(Boolean(fresh));
    else if (options.tokenUrl) {
      const response = await fetch(options.tokenUrl, { credentials: "include", headers: { Accept: "text/plain, application/json" } });
      if ([401, 403, 404].includes(response.status)) return null; // signed out: no chat
      if (!response.ok) throw new Error(`token: ${response.status}`);
      const body = (await response.text()).trim();
      token = body.startsWith("{") ? JSON.parse(body).token : body;
    }
    token = typeof token === "string" && token ? token : null;
    state.token = token;
    return token;
  }

  function ensureClient() {
    if (state.ready) return state.ready;
    state.ready = (async () => {
      // The first token names the user, so that each user has an outbox of its own.
      let first = await provideToken(false);
      if (!first) { signedOut(); throw new Error("petchat widget: no token"); }
      const pkg = await import(new URL("/pkg/petchat_web.js", base).href);
      await pkg.default({ module_or_path: new URL("/pkg/petchat_web_bg.wasm", base) });
      const getToken = async (fresh) => {
        if (first && !fresh) { const t = first; first = null; return t; }
        first = null;
        return provideToken(fresh);
      };
      const client = pkg.connect({ url: options.chatUrl, getToken, onEvent, storageKey: `petchat.widget.outbox.${subject(first)}` });
      state.client = client;
      // Messages typed offline before a reload are still in the outbox: show them, pending.
      for (const m of client.outbox()) {
        if (!state.current) state.current = { id: m.conversationId, status: "unknown" };
        if (m.conversationId === state.current.id) state.messages.set(m.clientMessageId, { text: m.text, mine: true, pending: true });
      }
      render();
      return client;
    })();
    state.ready.catch((error) => { console.warn("petchat widget:", error.message); state.ready = null; });
    return state.ready;
  }

  function signedOut() {
    $("status").textContent = "Sign in to the shop to chat with us.";
    $("composer").hidden = true;
  }

  // ----- events from the client ----------------------------------------------------------------
  function onEvent(event) {
    const d = event.data;
    for (const listener of state.listeners) { try { listener(event); } catch (error) { console.warn("petchat widget listener:", error); } }
    switch (event.type) {
      case "client.state": return showConnection(d);
      case "session.ready": {
        state.me = d.user;
        state.past = d.pastConversations || [];
        const open = d.conversations[0];
        active(Boolean(open));
        if (open) {
          if (state.current?.id !== open.id) switchTo({ id: open.id, status: open.status });
        } else if (state.current && !isEnded() && state.current.status !== "unknown") {
          // The conversation shown closed while we were away: the join tells how.
          state.client.join(state.current.id);
        } else if (!state.current || state.current.status === "unknown") {
          // No open conversation: show the last one's transcript (ended), or open one if asked to.
          const last = state.past[0]?.conversation;
          if (last) { switchTo(last); state.client.join(last.id); }
          else if (state.wantsConversation || !$("panel").hidden) startConversation();
        }
        render();
        return;
      }
      case "conversation.opened":
      case "conversation.joined": {
        const c = d.conversation;
        if (event.type === "conversation.joined" && state.current && state.current.id !== c.id) return;
        if (state.current?.id !== c.id) switchTo(c);
        Object.assign(state.current, { status: c.status, agent: c.agent, queuedAt: c.queuedAt, closed: c.closed, topic: c.topic });
        // What is replayed up to here is history, not news for the unread badge.
        state.current.seenUpTo = Math.max(state.current.seenUpTo ?? 0, Number(c.lastSeq) || 0);
        if (c.status !== "queued") state.current.position = null;
        state.wantsConversation = false;
        if (c.status !== "closed") active(true);
        // What was typed before the conversation existed goes out now.
        if (c.status !== "closed") for (const early of state.early.splice(0)) send(early.text, early.attachments);
        render();
        return;
      }
      case "conversation.queued":
        if (!isCurrent(d.conversationId)) return;
        Object.assign(state.current, { status: "queued", position: d.position });
        state.current.queuedAt ??= event.timestamp;
        return render();
      case "agent.assigned":
        if (!isCurrent(d.conversationId)) return;
        Object.assign(state.current, { status: "active", agent: d.agent, position: null, queuedAt: null, transferring: false });
        return render();
      case "conversation.transferred":
        if (!isCurrent(d.conversationId)) return;
        state.current.transferring = true;
        return render();
      case "conversation.closed":
        if (!isCurrent(d.conversationId)) return;
        Object.assign(state.current, { status: "closed", closed: { at: event.timestamp, by: d.by, reason: d.reason } });
        active(false);
        hideTyping();
        render();
        // The focus was in the panel (perhaps on "End chat", now hidden): it goes to the way on.
        if (!$("panel").hidden && (!root.activeElement || $("panel").contains(root.activeElement))) $("restart").focus();
        return;
      case "chat.message": {
        if (!isCurrent(d.conversationId)) return;
        const mine = d.from.id === state.me?.id;
        state.messages.set(d.messageId, { seq: d.seq, from: d.from, text: d.text, sentAt: d.sentAt, mine, attachments: d.attachments || [] });
        // The page keeps the latest messages only (the first inserted are the oldest: replayed in order).
        if (state.messages.size > MAX_SHOWN) state.messages.delete(state.messages.keys().next().value);
        if (!mine) {
          hideTyping();
          if (isVisible() && !isEnded()) state.client.markRead(d.conversationId, d.seq);
          else if (!isEnded() && d.seq > (state.current.seenUpTo ?? 0)) state.unread += 1;
        }
        return render();
      }
      case "client.queued": {
        if (!isCurrent(d.conversationId)) return;
        const pending = state.client.outbox().find((m) => m.clientMessageId === d.clientMessageId);
        const known = state.messages.get(d.clientMessageId);
        state.messages.set(d.clientMessageId, Object.assign(known || {}, { text: pending ? pending.text : known?.text ?? "", mine: true, pending: true }));
        return render();
      }
      case "client.sent": {
        if (!isCurrent(d.conversationId)) return;
        const m = state.messages.get(d.clientMessageId) || state.messages.get(d.messageId) || { text: "", mine: true };
        state.messages.delete(d.clientMessageId);
        state.messages.set(d.messageId, Object.assign(m, { pending: false, seq: d.seq, sentAt: d.sentAt }));
        return render();
      }
      case "client.failed":
      case "client.dropped": {
        const m = state.messages.get(d.clientMessageId);
        if (!m) return;
        m.pending = false;
        m.failed = event.type === "client.dropped" ? "too big to send" : failure(d.error);
        return render();
      }
      case "message.delivered":
      case "message.read": {
        if (!isCurrent(d.conversationId) || d.by === state.me?.id) return;
        const kind = event.type === "message.read" ? "read" : "delivered";
        state.receipts[kind] = Math.max(state.receipts[kind], d.upToSeq);
        if (kind === "read") state.receipts.delivered = Math.max(state.receipts.delivered, d.upToSeq);
        return render();
      }
      case "typing.start":
        if (isCurrent(d.conversationId) && d.userId !== state.me?.id) showTyping(`${nameOf(d.userId)} is typing…`);
        return;
      case "typing.stop": return hideTyping();
    }
  }

  // ----- conversations --------------------------------------------------------------------------
  function switchTo(conversation) {
    state.current = { id: conversation.id, status: conversation.status, agent: conversation.agent, queuedAt: conversation.queuedAt, closed: conversation.closed, position: null };
    state.messages = new Map();
    state.receipts = { delivered: 0, read: 0 };
    for (const url of state.blobs.values()) URL.revokeObjectURL(url);
    state.blobs.clear();
    state.chips = [];
  }

  function startConversation() {
    state.wantsConversation = true;
    if (!state.client || !state.me) return; // session.ready opens it
    state.current = null;
    state.messages = new Map();
    const data = {};
    for (const key of ["topic", "petId", "orderId"]) if (context[key]) data[key] = context[key];
    state.client.sendMessage({ type: "conversation.open", data });
    render();
  }

  /** Remembers whether a conversation is open, so that the next page connects at load (or not). */
  function active(open) { if (open) localStorage.setItem(ACTIVE_KEY, "1"); else localStorage.removeItem(ACTIVE_KEY); }

  const isCurrent = (id) => state.current?.id === id;
  const isEnded = () => state.current?.status === "closed";
  const isVisible = () => !$("panel").hidden && document.visibilityState === "visible";
  const nameOf = (id) => (state.current?.agent?.id === id ? state.current.agent.name : [...state.messages.values()].find((m) => m.from?.id === id)?.from.name ?? "The agent");

  function endedText(closed) {
    const agent = state.current?.agent?.name ?? "The agent";
    switch (closed?.reason) {
      case "resolved": return `${agent} marked your question as resolved.`;
      case "customer_away": return "This conversation was closed because you were away.";
      case "idle": return "This conversation was closed after a long time without messages.";
      default: return closed?.by === state.me?.id ? "You ended this conversation." : `${agent} ended this conversation.`;
    }
  }

  function failure(error) {
    switch (error?.code) {
      case "conversation_closed": return "not sent: the conversation had ended";
      case "text_too_long": return "not sent: too long";
      case "forbidden": return "not sent: not allowed";
      default: return `not sent${error?.message ? `: ${error.message}` : ""}`;
    }
  }

  // ----- showing and hiding -------------------------------------------------------------------
  function show({ focus = true } = {}) {
    $("panel").hidden = false;
    host.dataset.open = "true";
    $("launcher").setAttribute("aria-expanded", "true");
    sessionStorage.setItem(OPEN_KEY, "1");
    state.unread = 0;
    ensureClient().then(() => {
      // Before session.ready, the session.ready handler decides what to show.
      if (!state.current && state.me) { const last = state.past[0]?.conversation; if (last) { switchTo(last); state.client.join(last.id); } else startConversation(); }
      markRead();
      render();
    }, () => {});
    render();
    if (focus) requestAnimationFrame(() => (isEnded() ? $("restart") : $("text")).focus());
  }

  function hide(returnFocus = true) {
    $("panel").hidden = true;
    delete host.dataset.open;
    $("launcher").setAttribute("aria-expanded", "false");
    sessionStorage.removeItem(OPEN_KEY);
    render();
    if (returnFocus) $("launcher").focus();
  }

  function markRead() {
    if (!state.client || !state.current || isEnded() || !isVisible()) return;
    const last = [...state.messages.values()].filter((m) => !m.mine && m.seq).map((m) => m.seq).sort((a, b) => a - b).pop();
    if (last) state.client.markRead(state.current.id, last);
  }

  // ----- rendering -------------------------------------------------------------------------------
  function render() {
    const c = state.current;
    const ended = isEnded();
    $("badge").hidden = state.unread === 0;
    $("badge").textContent = String(state.unread);
    $("launcher").setAttribute("aria-label", state.unread ? `Chat with us, ${state.unread} unread` : "Chat with us");
    $("end").hidden = !c || ended || c.status === "unknown";
    $("ended").hidden = !ended;
    $("ended-reason").textContent = ended ? endedText(c.closed) : "";
    $("text").disabled = ended;
    $("attach").disabled = ended || !c || c.status === "unknown";
    $("composer").querySelector(".send").disabled = ended;
    $("status").textContent = statusText();
    clearInterval(state.waitTimer);
    if (c?.status === "queued") state.waitTimer = setInterval(() => { $("status").textContent = statusText(); }, 15_000);
    renderMessages();
    renderChips();
    $("empty").hidden = ended || state.messages.size + state.early.length > 0 || !c || c.status === "unknown";
  }

  function statusText() {
    const c = state.current;
    if (!state.me) return state.client ? "Connecting…" : "Ask us anything about your order or your pet.";
    if (!c) return "Finding an agent…";
    if (c.status === "closed") return "Conversation ended";
    if (c.transferring) return `You are being transferred to another agent${c.position ? `, position ${c.position}` : "…"}`;
    if (c.status === "queued") {
      const waited = c.queuedAt ? Math.max(0, Date.now() - Date.parse(c.queuedAt)) : 0;
      return c.position ? `Waiting for an agent, position ${c.position} (waiting ${duration(waited)})` : "Finding an agent…";
    }
    if (c.status === "active" && c.agent) return `You're chatting with ${c.agent.name}`;
    return "Finding an agent…";
  }

  function renderMessages() {
    const list = $("messages");
    const sorted = [...state.messages.values()].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity))
      .concat(state.early.map((e) => ({ text: e.text, attachments: e.attachments, mine: true, pending: true })));
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren(...sorted.map((m) => {
      const li = document.createElement("li");
      li.className = [m.mine ? "mine" : "", m.pending ? "pending" : "", m.failed ? "failed" : ""].join(" ").trim();
      const author = document.createElement("span");
      author.className = "author";
      author.textContent = m.mine ? "You" : m.from?.name ?? "";
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = m.text;
      li.append(author, text);
      if (m.attachments?.length) li.append(renderAttachments(m.attachments));
      const meta = document.createElement("span");
      meta.className = "meta";
      if (m.sentAt) {
        const time = document.createElement("time");
        time.dateTime = m.sentAt;
        time.textContent = new Date(m.sentAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        meta.append(time);
      }
      if (m.mine) {
        const ticks = document.createElement("span");
        const read = m.seq && state.receipts.read >= m.seq;
        const delivered = m.seq && state.receipts.delivered >= m.seq;
        const s = m.failed ? "failed" : m.pending ? "pending" : read ? "read" : delivered ? "delivered" : "sent";
        ticks.className = `ticks ${s}`;
        ticks.dataset.state = s;
        ticks.textContent = { failed: m.failed, pending: "sending…", read: "✓✓ read", delivered: "✓✓ delivered", sent: "✓ sent" }[s];
        meta.append(ticks);
        if (m.failed && !isEnded()) {
          const retry = document.createElement("button");
          retry.type = "button";
          retry.className = "retry";
          retry.textContent = "Retry";
          retry.setAttribute("aria-label", `Retry sending “${m.text.slice(0, 40)}”`);
          retry.addEventListener("click", () => { state.messages.delete([...state.messages].find(([, v]) => v === m)?.[0]); send(m.text, m.attachments || []); });
          meta.append(retry);
        }
      }
      li.append(meta);
      return li;
    }));
    if (atBottom || sorted.at(-1)?.mine) list.scrollTop = list.scrollHeight;
  }

  function renderAttachments(attachments) {
    const ul = document.createElement("ul");
    ul.className = "files";
    for (const a of attachments) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "file";
      if (a.contentType?.startsWith("image/")) {
        // A thumbnail has no text of its own: the label names what it opens.
        button.setAttribute("aria-label", `Open ${a.name} (${bytes(a.size)})`);
        const img = document.createElement("img");
        img.alt = a.name;
        img.width = 96; img.height = 96;
        const url = state.blobs.get(a.id);
        if (url) img.src = url; else if (state.current) loadThumbnail(state.current.id, a.id);
        button.append(img);
      } else {
        // Its visible text is its name (axe: the accessible name holds the visible text).
        button.textContent = `📄 ${a.name} · ${bytes(a.size)}`;
        button.title = `Open ${a.name}`;
      }
      button.addEventListener("click", () => openFile(state.current.id, a));
      li.append(button);
      ul.append(li);
    }
    return ul;
  }

  function renderChips() {
    $("chips").replaceChildren(...state.chips.map((chip) => {
      const li = document.createElement("li");
      li.className = `chip ${chip.state}`;
      if (chip.preview) { const img = document.createElement("img"); img.src = chip.preview; img.alt = ""; li.append(img); }
      const label = document.createElement("span");
      label.textContent = chip.state === "uploading" ? `${chip.file.name}: uploading…` : chip.state === "refused" ? `${chip.file.name}: ${chip.reason}` : chip.file.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${chip.file.name}`);
      remove.addEventListener("click", () => { state.chips = state.chips.filter((c) => c !== chip); if (chip.preview) URL.revokeObjectURL(chip.preview); renderChips(); $("text").focus(); });
      li.append(label, remove);
      return li;
    }));
  }

  function showConnection(s) {
    clearInterval(state.countdown);
    const banner = $("banner");
    state.connected = s.state === "connected";
    if (s.state === "connected") { banner.hidden = true; return; }
    banner.hidden = false;
    if (s.state === "connecting") banner.textContent = "Connecting…";
    if (s.state === "stopped") banner.textContent = `Disconnected${s.closeCode ? ` (${s.closeCode})` : ""}. Reload the page to try again.`;
    if (s.state === "reconnecting") {
      const until = Date.now() + s.retryInMs;
      const tick = () => { banner.textContent = `Offline: reconnecting in ${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s. Messages you send now will go out then.`; };
      tick();
      state.countdown = setInterval(tick, 1000);
    }
  }

  function showTyping(text) { $("typing").textContent = text; $("typing").hidden = false; clearTimeout(state.typingTimer); state.typingTimer = setTimeout(hideTyping, 6000); }
  function hideTyping() { $("typing").hidden = true; }

  // ----- sending ----------------------------------------------------------------------------------
  function send(text, attachments) {
    const c = state.current;
    if (!state.client || !c || isEnded()) return;
    const clientMessageId = crypto.randomUUID();
    const data = { conversationId: c.id, clientMessageId, text: text || attachments.map((a) => `📎 ${a.name}`).join(" ") };
    if (attachments.length) data.attachments = attachments.map((a) => a.id);
    state.messages.set(clientMessageId, { text: data.text, mine: true, pending: true, attachments });
    try {
      state.client.sendMessage({ type: "chat.send", data });
      state.client.stopTyping(c.id);
      $("composer-error").hidden = true;
    } catch (error) {
      state.messages.delete(clientMessageId);
      showError(String(error.message || error));
    }
    render();
  }

  function showError(text) { $("composer-error").textContent = text; $("composer-error").hidden = false; }

  // ----- attachments (POST /v1/conversations/{id}/attachments, docs/browser.md) ------------------
  async function upload(chip, conversationId) {
    try {
      const token = state.token || (await provideToken(false));
      const response = await fetch(new URL(`/v1/conversations/${encodeURIComponent(conversationId)}/attachments?name=${encodeURIComponent(chip.file.name)}`, base), {
        method: "POST", body: chip.file, headers: { Authorization: `Bearer ${token}`, "Content-Type": chip.file.type || "application/octet-stream" },
      });
      if (response.status === 201) { chip.attachment = await response.json(); chip.state = "ready"; }
      else { chip.state = "refused"; chip.reason = refusal(response.status); }
    } catch {
      chip.state = "refused";
      chip.reason = "could not upload (no answer)";
    }
    renderChips();
  }

  function refusal(status) {
    switch (status) {
      case 413: return "too big to send";
      case 415: return "not a photo or a PDF";
      case 409: return "the conversation has ended";
      case 401: case 403: return "not allowed";
      default: return `could not upload (${status})`;
    }
  }

  async function fetchFile(conversationId, id, thumbnail) {
    const token = state.token || (await provideToken(false));
    const path = `/v1/conversations/${encodeURIComponent(conversationId)}/attachments/${encodeURIComponent(id)}${thumbnail ? "/thumbnail" : ""}`;
    const response = await fetch(new URL(path, base), { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) throw new Error(`attachment: ${response.status}`);
    // The blob URL belongs to the shop's origin: only photos and PDFs keep their type, so that
    // nothing the chat host sends can run as a page there (an SVG or HTML file would).
    const blob = await response.blob();
    const type = /^(image\/(jpeg|png|gif|webp)|application\/pdf)$/.test(blob.type) ? blob.type : "application/octet-stream";
    return URL.createObjectURL(new Blob([blob], { type }));
  }

  async function loadThumbnail(conversationId, id) {
    if (state.blobs.has(id)) return;
    state.blobs.set(id, "");
    try { state.blobs.set(id, await fetchFile(conversationId, id, true)); renderMessages(); } catch (error) { console.warn("petchat widget:", error.message); }
  }

  async function openFile(conversationId, attachment) {
    try { window.open(await fetchFile(conversationId, attachment.id, false), "_blank", "noopener"); } catch (error) { showError(`${attachment.name}: ${error.message}`); }
  }

  // ----- input --------------------------------------------------------------------------------------
  $("launcher").addEventListener("click", () => ($("panel").hidden ? show() : hide()));
  $("close").addEventListener("click", () => hide());
  $("panel").addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); hide(); return; }
    // Full screen on a phone, the panel is all there is: Tab goes round inside it.
    if (e.key !== "Tab" || !matchMedia("(max-width: 480px)").matches) return;
    const focusable = [...$("panel").querySelectorAll("button, textarea, [tabindex='0']")].filter((el) => !el.disabled && el.offsetParent !== null);
    const [first, last] = [focusable[0], focusable.at(-1)];
    if (e.shiftKey && root.activeElement === first) { e.preventDefault(); last.focus(); }
    else if (!e.shiftKey && root.activeElement === last) { e.preventDefault(); first.focus(); }
  });
  $("end").addEventListener("click", () => { if (state.current && !isEnded()) state.client.closeConversation(state.current.id); });
  $("restart").addEventListener("click", () => { startConversation(); $("text").focus(); });
  $("text").addEventListener("input", () => { if (state.current && !isEnded() && state.current.status !== "unknown") state.client?.typing(state.current.id); });
  $("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); } });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (state.chips.some((c) => c.state === "uploading")) return showError("Wait until the files are uploaded.");
    const attachments = state.chips.filter((c) => c.state === "ready").map((c) => c.attachment);
    if (!text && !attachments.length) return;
    if (text.length > 4000) return showError("Your message is too long (at most 4000 characters).");
    if (!state.current || state.current.status === "unknown") state.early.push({ text, attachments });
    else send(text, attachments);
    $("text").value = "";
    for (const chip of state.chips) if (chip.preview) URL.revokeObjectURL(chip.preview);
    state.chips = [];
    renderChips();
  });
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    const files = [...$("file").files];
    $("file").value = "";
    const c = state.current;
    if (!c || isEnded()) return;
    for (const file of files) {
      if (state.chips.length >= MAX_ATTACHMENTS) { showError(`At most ${MAX_ATTACHMENTS} files per message.`); break; }
      const chip = { key: crypto.randomUUID(), file, state: "uploading", preview: file.type.startsWith("image/") ? URL.createObjectURL(file) : null };
      state.chips.push(chip);
      upload(chip, c.id);
    }
    renderChips();
  });
  document.addEventListener("visibilitychange", markRead);

  // ----- helpers ------------------------------------------------------------------------------------
  function cleanContext(c) {
    const clean = {};
    for (const key of ["topic", "petId", "orderId"]) if (typeof c?.[key] === "string" && c[key].trim()) clean[key] = c[key].trim();
    return clean;
  }

  /** The token's `sub` (read, not verified: the server verifies), for the outbox's key. */
  function subject(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return String(JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))).sub).replace(/[^\w.@:-]/g, "_");
    } catch { return "user"; }
  }

  function duration(ms) { return ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.max(1, Math.round(ms / 1000))} s`; }
  function bytes(n) { return n >= 1_000_000 ? `${(n / 1_000_000).toFixed(1)} MB` : `${Math.max(1, Math.round((n || 0) / 1000))} kB`; }

  // ----- start: last, once everything above is defined ---------------------------------------
  const mount = () => {
    document.body.append(host);
    if (sessionStorage.getItem(OPEN_KEY) === "1") show({ focus: false });
    else if (localStorage.getItem(ACTIVE_KEY) === "1") ensureClient().catch(() => {});
    window.dispatchEvent(new CustomEvent("petchat-widget-ready", { detail: api }));
  };
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount, { once: true });

  function css() {
    return `
:host { all: initial; }
/* The shop's rules may reach the host element (a "*" rule beats :host) and what it inherits:
   the root inside resets everything again. Sizes are in em of the root's 15px, never rem,
   which would follow the shop's <html> font size. */
.root { all: initial; --bg: #ffffff; --fg: #1d2330; --muted: #4b5363; --line: #c8cdd8; --accent: #1d4ed8; --on-accent: #ffffff;
  --mine: #e3ecff; --theirs: #f1f3f7; --warn-bg: #fff3cd; --warn-fg: #4d3b00; --bad: #b42318; --focus: #f0a500;
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
@media (prefers-color-scheme: dark) {
  .root { --bg: #161b26; --fg: #eef1f6; --muted: #c3c9d4; --line: #3b4456; --accent: #8fb3ff; --on-accent: #0b1220;
    --mine: #24365e; --theirs: #232a38; --warn-bg: #4d3b00; --warn-fg: #fff3cd; --bad: #ffb4ab; }
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
button { font: inherit; cursor: pointer; }
button:disabled { cursor: not-allowed; opacity: .6; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; display: inline-flex; align-items: center; gap: .5em;
  padding: .75em 1.1em; border: 0; border-radius: 999px; background: var(--accent); color: var(--on-accent);
  font-weight: 600; box-shadow: 0 4px 14px #0004; }
.badge { min-width: 1.4em; padding: 0 .35em; border-radius: 1em; background: var(--bg); color: var(--fg); font-size: .8em; text-align: center; }
.panel { position: fixed; right: 20px; bottom: 84px; z-index: 2147483001; width: min(24em, calc(100vw - 40px));
  height: min(38em, calc(100vh - 108px)); display: flex; flex-direction: column; background: var(--bg); color: var(--fg);
  border: 1px solid var(--line); border-radius: 14px; box-shadow: 0 12px 40px #0005; overflow: hidden; }
header { display: flex; align-items: center; gap: .5em; padding: .6em .75em; background: var(--accent); color: var(--on-accent); }
h2 { flex: 1; margin: 0; font-size: 1.05em; }
header button { border: 1px solid currentColor; border-radius: .4em; background: transparent; color: inherit; padding: .2em .6em; }
header .close { border: 0; display: inline-flex; padding: .25em; }
.banner { margin: 0; padding: .45em .75em; background: var(--warn-bg); color: var(--warn-fg); font-size: .9em; }
.status { margin: 0; padding: .45em .75em; border-bottom: 1px solid var(--line); color: var(--muted); font-size: .9em; }
.messages { flex: 1; min-height: 0; overflow-y: auto; overflow-x: hidden; list-style: none; margin: 0; padding: .5em .75em; }
.messages li { margin: .4em 0; padding: .45em .65em; border-radius: .7em; background: var(--theirs); max-width: 85%;
  width: fit-content; overflow-wrap: anywhere; white-space: pre-wrap; }
.messages li.mine { margin-left: auto; background: var(--mine); }
.messages li.pending { opacity: .75; }
.messages li.failed { outline: 1px solid var(--bad); }
.author { display: block; font-weight: 600; font-size: .85em; }
.meta { display: flex; flex-wrap: wrap; justify-content: flex-end; gap: .4em; margin-top: .15em; font-size: .75em; color: var(--muted); white-space: normal; }
.ticks.read { color: var(--accent); font-weight: 600; }
.ticks.failed { color: var(--bad); font-weight: 600; }
.retry { border: 1px solid var(--bad); border-radius: .3em; background: transparent; color: var(--bad); padding: 0 .4em; font-size: .75em; }
.files { list-style: none; display: flex; flex-wrap: wrap; gap: .3em; margin: .3em 0 0; padding: 0; }
.files li { margin: 0; padding: 0; background: none; max-width: none; }
.file { border: 1px solid var(--line); border-radius: .4em; background: var(--bg); color: var(--fg); padding: .2em .4em; }
.file img { display: block; width: 96px; height: 96px; object-fit: cover; border-radius: .3em; }
.empty { position: absolute; top: 40%; left: 0; right: 0; margin: 0; padding: 0 1.5em; text-align: center; color: var(--muted); pointer-events: none; }
.typing { margin: 0; padding: 0 .75em .3em; color: var(--muted); font-style: italic; font-size: .9em; }
.ended { padding: .6em .75em; border-top: 1px solid var(--line); background: var(--theirs); }
.ended p { margin: 0 0 .4em; font-weight: 600; }
.ended button, .send { border: 0; border-radius: .4em; background: var(--accent); color: var(--on-accent); padding: .5em 1em; font-weight: 600; }
.composer { border-top: 1px solid var(--line); padding: .5em .75em .75em; }
.composer label { display: block; font-weight: 600; font-size: .85em; margin-bottom: .25em; }
.row { display: flex; gap: .4em; align-items: flex-end; }
textarea { flex: 1; min-width: 0; font: inherit; padding: .45em; border: 1px solid var(--line); border-radius: .4em; resize: none; background: var(--bg); color: var(--fg); }
.attach { display: inline-flex; padding: .45em; border: 1px solid var(--line); border-radius: .4em; background: var(--bg); color: var(--fg); }
.chips { list-style: none; display: flex; flex-wrap: wrap; gap: .3em; margin: 0 0 .3em; padding: 0; }
.chip { display: inline-flex; align-items: center; gap: .3em; max-width: 100%; padding: .15em .3em; border: 1px solid var(--line); border-radius: .4em; font-size: .8em; overflow-wrap: anywhere; }
.chip img { width: 28px; height: 28px; object-fit: cover; border-radius: .2em; }
.chip.refused { border-color: var(--bad); color: var(--bad); font-weight: 600; }
.chip button { border: 0; background: none; color: inherit; padding: 0 .2em; }
.error { margin: 0 0 .3em; color: var(--bad); font-size: .85em; font-weight: 600; }
@media (max-width: 480px) {
  .panel { inset: 0; width: 100%; height: 100%; border-radius: 0; border: 0; }
  :host([data-open]) .launcher { display: none; }
}`;
  }
})();
