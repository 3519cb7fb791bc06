// Live updates on the pages (SPEC §11, §12): the customer's order status and
// notifications, and the agent console's support dashboard. The client keeps
// the subscriptions and the notification position across reconnects; this
// module only renders.
const $ = (id) => document.getElementById(id);

/** The order a customer page is about: `?order=1234` in its address. */
export function orderOfPage() {
  const order = new URLSearchParams(location.search).get("order");
  return order && /^[A-Za-z0-9_.:@-]{1,100}$/.test(order) ? order : null;
}

/** Starts what the page shows live; returns the handler for the client's events. */
export function live(client, role, order) {
  const notes = { items: new Map() };
  const dashboard = { points: [] };

  // Once per page: after a reconnect the client resubscribes by itself,
  // from the last event it handed on.
  const subscribeOnce = (topic) => {
    if (!client.topics().some((t) => t.topic === topic)) client.subscribe(topic, 0);
  };
  function onReady() {
    if (order) subscribeOnce(`orders:${order}`);
    if (role === "agent") subscribeOnce("support:stats");
    renderBell();
  }

  function onEvent(event) {
    const d = event.data;
    switch (event.type) {
      case "session.ready": return onReady();
      case "topic.event":
        if (d.topic === `orders:${order}`) return renderOrder(d);
        if (d.topic === "support:stats") return renderDashboard(d);
        return;
      case "topic.subscribed":
        if (d.topic === `orders:${order}` && !d.recovered) $("order-status").textContent = "Order status: reloading…";
        return;
      case "notification":
        notes.items.set(d.seq, d);
        return renderBell();
      case "notification.read": return renderBell();
    }
  }

  // ----- the customer's order ---------------------------------------------------
  function renderOrder(d) {
    const status = typeof d.data.status === "string" ? d.data.status : d.event;
    $("order-status").textContent = `Order ${order}: ${status}`;
    $("order-status").dataset.status = status;
    const li = document.createElement("li");
    li.textContent = `${new Date(d.publishedAt).toLocaleTimeString()} — ${status}`;
    $("order-history").prepend(li);
    while ($("order-history").children.length > 5) $("order-history").lastElementChild.remove();
  }

  // ----- notifications ------------------------------------------------------------
  function renderBell() {
    const bell = $("bell");
    if (!bell) return;
    const { unread, readSeq } = client.notifications();
    const badge = $("bell-count");
    badge.textContent = unread > 0 ? String(unread) : "";
    badge.hidden = unread === 0;
    bell.setAttribute("aria-label", unread > 0 ? `Notifications, ${unread} unread` : "Notifications");
    const list = $("notifications");
    list.replaceChildren(...[...notes.items.values()].sort((a, b) => b.seq - a.seq).map((n) => {
      const li = document.createElement("li");
      li.className = n.seq > readSeq ? "unread-note" : "";
      const title = document.createElement("strong");
      title.textContent = n.title;
      li.append(title, document.createTextNode(n.body ? ` ${n.body}` : ""));
      if (n.link) {
        const a = document.createElement("a");
        a.href = n.link;
        a.textContent = " Open";
        li.append(a);
      }
      return li;
    }));
    if (notes.items.size === 0) {
      const li = document.createElement("li");
      li.textContent = "No notifications.";
      list.replaceChildren(li);
    }
  }

  $("bell")?.addEventListener("click", () => {
    const panel = $("notifications-panel");
    panel.hidden = !panel.hidden;
    $("bell").setAttribute("aria-expanded", String(!panel.hidden));
    const { lastSeq, unread } = client.notifications();
    if (!panel.hidden && unread > 0) client.markNotificationsRead(lastSeq);
    renderBell();
  });

  // In --dev mode the page can drive the order's status itself (a shop's
  // backend publishes it with POST /v1/api/publish).
  const steps = ["placed", "packed", "shipped", "out for delivery", "delivered"];
  $("order-next")?.addEventListener("click", async () => {
    const current = $("order-status").dataset.status;
    const next = steps[Math.min(steps.indexOf(current) + 1, steps.length - 1)];
    const response = await fetch("/dev/publish", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic: `orders:${order}`, event: "order.status", data: { status: next } }),
    });
    if (!response.ok) $("order-next").hidden = true;
  });

  // ----- the support dashboard ---------------------------------------------------------
  const seconds = (ms) => (ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`);
  function renderDashboard(d) {
    const s = d.data;
    const figures = {
      "stat-queue": String(s.queue.length),
      "stat-wait": s.queue.length ? seconds(s.queue.oldestWaitMs) : "—",
      "stat-available": String(s.agents.available),
      "stat-busy": String(s.agents.busy),
      "stat-open": String(s.conversations.open),
      "stat-first-response": s.firstResponse.conversations ? seconds(s.firstResponse.medianMs) : "—",
    };
    for (const [id, text] of Object.entries(figures)) if ($(id)) $(id).textContent = text;
    dashboard.points.push({ at: Date.parse(d.publishedAt), queue: s.queue.length, open: s.conversations.open });
    if (dashboard.points.length > 100) dashboard.points.shift();
    renderChart();
  }

  function renderChart() {
    const svg = $("chart");
    if (!svg) return;
    const points = dashboard.points;
    const width = 300, height = 80, pad = 4;
    const max = Math.max(1, ...points.map((p) => Math.max(p.queue, p.open)));
    const first = points[0]?.at ?? 0, last = points[points.length - 1]?.at ?? 1;
    const x = (p) => pad + ((p.at - first) / Math.max(1, last - first)) * (width - 2 * pad);
    const y = (v) => height - pad - (v / max) * (height - 2 * pad);
    const line = (key) => points.map((p) => `${x(p).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    svg.querySelector(".queue").setAttribute("points", line("queue"));
    svg.querySelector(".open").setAttribute("points", line("open"));
    svg.dataset.points = String(points.length);
  }

  return onEvent;
}
