// The demo shop page's own script, standing in for a shop's backend in --dev
// mode: it gives the widget a token from the chat server's /dev/token (a real
// shop mints it on its backend, see docs/browser.md) and shows the order's
// live status with live.js when the page is opened as /?order=1234.
import { live, orderOfPage } from "/live.js";

const userKey = "petchat.dev.customer";
const userId = localStorage.getItem(userKey) || `customer-${Math.random().toString(36).slice(2, 8)}`;
localStorage.setItem(userKey, userId);
const order = orderOfPage();

// Read by widget.js, which is `defer`red after this module: both run in
// document order once the page is parsed.
window.PetchatWidgetOptions = {
  getToken: async () => {
    const topics = order ? `&topics=${encodeURIComponent(`orders:${order}`)}` : "";
    const response = await fetch(`/dev/token?role=customer&sub=${encodeURIComponent(userId)}${topics}`);
    if (response.status === 404) return null; // not a --dev server: no chat
    if (!response.ok) throw new Error(`token: ${response.status}`);
    return response.text();
  },
  ...(order ? { orderId: order, topic: `Order ${order}` } : {}),
};

async function start(widget) {
  let onLive = null;
  widget.onEvent((event) => onLive?.(event));
  const client = await widget.connect();
  onLive = live(client, "customer", order);
  if (order) document.getElementById("order").hidden = false;
}
if (window.PetchatWidget) start(window.PetchatWidget);
else window.addEventListener("petchat-widget-ready", (e) => start(e.detail), { once: true });
