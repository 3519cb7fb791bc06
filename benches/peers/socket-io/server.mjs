// The benchmark's Socket.IO peer, for the fanout scenario: what a team would
// write with Socket.IO to push a backend's events to browsers. Everything lives
// in memory; there is no history. One port serves both:
//
//   - Socket.IO (default namespace, /socket.io/, Engine.IO v4; WebSocket and
//     long-polling): the event `subscribe` with a topic string joins the room
//     of that name and acks {topic, lastSeq}; `unsubscribe` leaves it (and
//     acks {topic} if asked); a missing or empty topic is acked {error}. A
//     socket leaves its rooms when it disconnects.
//   - POST /v1/api/publish {topic, event, data} with any non-empty Bearer key
//     (petchat SPEC §13; idempotencyKey is ignored) → {topic, seq}, seq per
//     topic from 1, after io.to(topic).emit("topic.event", {topic, seq, event,
//     data, publishedAt}).
//
// README.md gives the frames a raw Engine.IO client sends and receives.
//
//   node server.mjs --port 9000        (prints "listening <port>" when ready)
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] || 0);

const topicSeq = new Map();       // topic -> last published seq

function reply(response, status, body) {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}
const apiError = (response, status, code, message) => reply(response, status, { error: { code, message } });
const MAX_BODY_BYTES = 1 << 20;

function publish(request, response) {
  if (!/^Bearer \S/i.test(request.headers.authorization || '')) {
    apiError(response, 401, 'unauthorized', 'an Authorization: Bearer key is required');
    return;
  }
  const chunks = [];
  let size = 0;
  request.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  });
  request.on('end', () => {
    if (size > MAX_BODY_BYTES) { apiError(response, 413, 'invalid_message', 'body too large'); return; }
    let body;
    try { body = JSON.parse(Buffer.concat(chunks)); } catch { apiError(response, 400, 'invalid_json', 'body is not JSON'); return; }
    const { topic, event, data } = body ?? {};
    if (typeof topic !== 'string' || topic === '' || typeof event !== 'string' || event === ''
        || typeof data !== 'object' || data === null || Array.isArray(data)) {
      apiError(response, 400, 'invalid_message', 'expected {topic, event, data} with data an object');
      return;
    }
    const seq = (topicSeq.get(topic) ?? 0) + 1;
    topicSeq.set(topic, seq);
    io.to(topic).emit('topic.event', { topic, seq, event, data, publishedAt: new Date().toISOString() });
    reply(response, 200, { topic, seq });
  });
}

// Socket.IO takes the requests under /socket.io/; this handler gets the rest.
const server = createServer((request, response) => {
  const path = new URL(request.url, 'http://peer').pathname;
  if (request.method === 'POST' && path === '/v1/api/publish') publish(request, response);
  else apiError(response, 404, 'not_found', `no ${request.method} ${path} here`);
});

// The heartbeat is Engine.IO's default, written out because README.md
// documents it: a ping ("2") 25 s after the open packet and after each pong,
// answered by a pong ("3") within 20 s or the connection is closed.
const io = new Server(server, { serveClient: false, pingInterval: 25000, pingTimeout: 20000 });

// The arguments of `subscribe` and `unsubscribe`: (topic, ack), where a client
// may leave out the ack (or, wrongly, the topic, which is then answered).
function topicArgs(args) {
  const ack = typeof args.at(-1) === 'function' ? args.pop() : () => {};
  const topic = args[0];
  if (typeof topic === 'string' && topic !== '') return { topic, ack };
  ack({ error: { code: 'invalid_message', message: 'the topic must be a non-empty string' } });
  return null;
}

io.on('connection', (socket) => {
  socket.on('subscribe', (...args) => {
    const r = topicArgs(args);
    if (!r) return;
    socket.join(r.topic);
    r.ack({ topic: r.topic, lastSeq: topicSeq.get(r.topic) ?? 0 });
  });
  socket.on('unsubscribe', (...args) => {
    const r = topicArgs(args);
    if (!r) return;
    socket.leave(r.topic);
    r.ack({ topic: r.topic });
  });
});

// The backend's keep-alive connections outlive a long broadcast: with Node's
// default 5 s, a connection whose next request waited behind broadcasts to
// 10,000 sockets for longer than that was closed as idle, and the publisher
// saw "connection reset" (timers run before the poll phase reads the request).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
