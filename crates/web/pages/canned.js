// The agent inbox's canned replies: the operator's list (canned-replies.json,
// beside the pages; docs/browser.md says how to configure it), offered while
// the agent types `/word` in the answer box: ↑ ↓ choose, Enter or Tab
// inserts, Esc closes.
import { el } from "/dom.js";

/** What the page takes of the file at most, and the longest reply (the server's text limit). */
const MAX_REPLIES = 200;
const MAX_TEXT = 4000;

/**
 * Wires the replies to `textarea` and `listbox`; `values()` gives the
 * placeholders' values now (`{customer, agent, order, pet}`). Call it before
 * adding the composer's own keydown listener: a key the list uses goes no further.
 */
export function cannedReplies(textarea, listbox, values) {
  let replies = [];
  const canned = { open: false, matches: [], active: 0, start: 0 };
  load().then((r) => { replies = r; });

  const expand = (text) => {
    const v = values();
    return text.replace(/\{(customer|agent|order|pet)\}/g, (_, key) => v[key]);
  };
  // The `/word` that ends just before the caret, at the start or after a space.
  function token() {
    const before = textarea.value.slice(0, textarea.selectionStart);
    const m = before.match(/(^|\s)\/([\w-]*)$/);
    return m ? { word: m[2].toLowerCase(), start: before.length - m[2].length - 1 } : null;
  }
  function update() {
    const t = token();
    const matches = t ? replies.filter((r) => r.shortcut.toLowerCase().startsWith(t.word) || r.title.toLowerCase().includes(t.word)) : [];
    // An exact shortcut comes first, so `/hello` then Enter is always that reply.
    matches.sort((a, b) => Number(b.shortcut.toLowerCase() === t?.word) - Number(a.shortcut.toLowerCase() === t?.word));
    if (!t || matches.length === 0) return close();
    Object.assign(canned, { open: true, matches, start: t.start, active: Math.min(canned.active, matches.length - 1) });
    render();
  }
  function render() {
    listbox.hidden = !canned.open;
    listbox.replaceChildren(...canned.matches.map((r, i) => el("li", {
      role: "option", id: `canned-${i}`, "aria-selected": String(i === canned.active), class: "canned-option",
      onmousedown: (e) => { e.preventDefault(); canned.active = i; apply(); },
    }, el("strong", { text: `/${r.shortcut}` }), ` ${r.title}: `, el("span", { class: "canned-text", text: expand(r.text) }))));
    if (canned.open) textarea.setAttribute("aria-activedescendant", `canned-${canned.active}`);
    else textarea.removeAttribute("aria-activedescendant");
    listbox.children[canned.active]?.scrollIntoView({ block: "nearest" });
  }
  function close() {
    canned.open = false;
    canned.active = 0;
    render();
  }
  function apply() {
    const reply = canned.matches[canned.active];
    if (!reply) return;
    const end = textarea.selectionStart;
    const expanded = expand(reply.text);
    textarea.value = textarea.value.slice(0, canned.start) + expanded + textarea.value.slice(end);
    const caret = canned.start + expanded.length;
    textarea.setSelectionRange(caret, caret);
    close();
    textarea.focus();
  }

  textarea.addEventListener("input", update);
  textarea.addEventListener("keydown", (e) => {
    if (!canned.open) return;
    const n = canned.matches.length;
    const keys = {
      ArrowDown: () => { canned.active = (canned.active + 1) % n; render(); },
      ArrowUp: () => { canned.active = (canned.active - 1 + n) % n; render(); },
      Enter: apply,
      Tab: () => (e.shiftKey ? null : apply()),
      Escape: close,
    };
    if (!keys[e.key] || (e.key === "Tab" && e.shiftKey)) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    keys[e.key]();
  });
  textarea.addEventListener("blur", () => setTimeout(close, 150));
}

/** The operator's replies, the valid ones; none when the file is missing or broken. */
async function load() {
  try {
    const response = await fetch("/canned-replies.json", { cache: "no-cache" });
    if (!response.ok) return [];
    const body = await response.json();
    return (Array.isArray(body.replies) ? body.replies : [])
      .filter((r) => typeof r.shortcut === "string" && /^[\w-]{1,32}$/.test(r.shortcut) && typeof r.text === "string" && r.text.length <= MAX_TEXT)
      .slice(0, MAX_REPLIES)
      .map((r) => ({ shortcut: r.shortcut, title: typeof r.title === "string" ? r.title : r.shortcut, text: r.text }));
  } catch (e) {
    console.warn("canned replies", e);
    return [];
  }
}
