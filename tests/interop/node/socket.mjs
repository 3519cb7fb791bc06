// A socket of the Node.js `ws` client with `next(kind)`: the next frame of a
// type, waited for 10 s at most; what the interop tests share.
import WebSocket from 'ws';

/** Opens a socket; resolves once it is open. */
export function open(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const frames = [];
    const waiters = [];
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      const i = waiters.findIndex((w) => w.kind === frame.type);
      if (i >= 0) waiters.splice(i, 1)[0].resolve(frame);
      else frames.push(frame);
    });
    ws.next = (kind) => {
      const i = frames.findIndex((f) => f.type === kind);
      if (i >= 0) return Promise.resolve(frames.splice(i, 1)[0]);
      return new Promise((res, rej) => {
        waiters.push({ kind, resolve: res });
        setTimeout(() => rej(new Error(`no ${kind} within 10 s`)), 10_000).unref();
      });
    };
    ws.send_ = (frame) => ws.send(JSON.stringify(frame));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}
