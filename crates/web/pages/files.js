// The agent inbox's attachments, on the wire of docs/protocol.md: uploads
// (POST /v1/conversations/{id}/attachments, the raw file, the Bearer JWT) and
// the files and thumbnails of messages, fetched with the same header and
// shown from blob URLs.
import { el } from "/dom.js";

/** What each refusal of an upload means to the agent (the body's `message` says more). */
const REFUSALS = {
  401: "not signed in", 403: "not your conversation", 404: "conversation not found", 409: "the conversation has ended or holds too many files",
  413: "too big", 415: "only photos (JPEG, PNG, WebP, GIF) and PDFs", 429: "too many uploads at once, try again",
};
/** Blob URLs kept at most; older ones are revoked. */
const MAX_BLOBS = 200;

/** Uploads `file`; resolves with the attachment (`{id, name, contentType, size, width?, height?}`). */
export async function upload(conversationId, file, bearer) {
  const response = await fetch(`/v1/conversations/${encodeURIComponent(conversationId)}/attachments?name=${encodeURIComponent(file.name)}`, {
    method: "POST", body: file, headers: { Authorization: await bearer(), "Content-Type": file.type || "application/octet-stream" },
  });
  if (response.status === 201) return response.json();
  const body = await response.json().catch(() => ({}));
  const why = response.status === 409 && body.code === "conversation_closed" ? "the conversation has ended" : REFUSALS[response.status];
  throw new Error(`${why ?? `upload failed (${response.status})`}${body.message ? `: ${body.message}` : ""}`);
}

/** A file of a message: a thumbnail for a photo, a button for a PDF; both open the file. */
export function attachmentView(conversationId, a, { bearer, onError }) {
  const base = `/v1/conversations/${encodeURIComponent(conversationId)}/attachments/${encodeURIComponent(a.id)}`;
  const open = async () => {
    try { window.open(await blobUrl(base, bearer), "_blank", "noopener"); } catch (e) { onError(`Could not open ${a.name}: ${e.message}`); }
  };
  if (a.contentType?.startsWith("image/")) {
    // The thumbnail's space is kept from the picture's size (same aspect ratio).
    const width = a.width && a.height ? Math.max(40, Math.min(200, Math.round((90 * a.width) / a.height))) : 120;
    const img = el("img", { alt: a.name, width, height: 90 });
    blobUrl(`${base}/thumbnail`, bearer).then((url) => { img.src = url; }, () => { img.alt = `${a.name} (unavailable)`; });
    return el("button", { type: "button", class: "thumb", "aria-label": `Open photo ${a.name}`, onclick: open }, img);
  }
  return el("button", { type: "button", class: "file", onclick: open, text: `📄 ${a.name} (${Math.ceil(a.size / 1024)} KB)` });
}

const blobs = new Map();
/** The file at `url`, fetched once with the Bearer header, as a blob URL. */
function blobUrl(url, bearer) {
  if (!blobs.has(url)) {
    const promise = (async () => {
      const response = await fetch(url, { headers: { Authorization: await bearer() } });
      if (!response.ok) throw new Error(`${response.status}`);
      return URL.createObjectURL(await response.blob());
    })();
    promise.catch(() => blobs.delete(url));
    blobs.set(url, promise);
    while (blobs.size > MAX_BLOBS) {
      const [oldest, p] = blobs.entries().next().value;
      blobs.delete(oldest);
      p.then(URL.revokeObjectURL, () => {});
    }
  }
  return blobs.get(url);
}
