// Two DOM helpers the agent inbox's modules share.

/** The element of this id. */
export const $ = (id) => document.getElementById(id);

/**
 * A new element: `props` are attributes, but `class`, `text` (its text) and
 * `onEVENT` (a listener); children are nodes or strings, null ones skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}
