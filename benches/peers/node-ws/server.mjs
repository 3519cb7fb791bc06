// The benchmark's peer: a support chat on Node.js and `ws`, the way a team
// would write it in an afternoon. Everything lives in memory; nothing is
// persisted before the ack. It speaks the subset of petchat.v1 that
// petchat-bench's scenarios use: session.ready, agent.status,
// conversation.open → conversation.opened (+ agent.assigned to both sides),
// chat.send → chat.ack + chat.message to the other member, message.delivered
// relayed to the other member; and, for the fanout scenario, topics (§11):
// topic.subscribe → topic.subscribed {topic, lastSeq, recovered: true} (live
// events only: no history, afterSeq is ignored, any topic name is allowed),
// topic.unsubscribe → topic.unsubscribed, and on the same port the server API's
// POST /v1/api/publish {topic, event, data} → {topic, seq} (§13; any non-empty
// Bearer key is accepted, idempotencyKey is ignored), which sends topic.event
// {topic, seq, event, data, publishedAt} to the topic's room, serialized once.
// Tokens are read, not verified (HS256 payload).
//
//   node server.mjs --port 9000        (prints "listening <port>" when ready)
import { createServer } from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';
import { randomUUID } from 'node:crypto';

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] || 0);

const users = new Map();          // userId -> {user, sockets: Set}
const conversations = new Map();  // id -> {id, customer, agent, seq, createdAt}
const available = [];             // agent ids taking conversations
const load = new Map();           // agentId -> open conversations
const queue = [];                 // conversations waiting for an agent
const rooms = new Map();          // topic -> Set of sockets subscribed to it
const topicSeq = new Map();       // topic -> last published seq

const now = () => new Date().toISOString();
const frame = (type, data, id) => JSON.stringify(id ? { type, id, data, timestamp: now() } : { type, data, timestamp: now() });

function sendTo(userId, text) {
  const entry = users.get(userId);
  if (entry) for (const socket of entry.sockets) socket.send(text);
}

function broadcast(topic, text) {
  const room = rooms.get(topic);
  if (room) for (const socket of room) if (socket.readyState === WebSocket.OPEN) socket.send(text);
}

function leave(topic, socket) {
  const room = rooms.get(topic);
  if (!room) return;
  room.delete(socket);
  if (room.size === 0) rooms.delete(topic);
}

function snapshot(c) {
  return {
    id: c.id, customer: { id: c.customer.id, name: c.customer.name },
    ...(c.agent ? { agent: { id: c.agent.id, name: c.agent.name } } : {}),
    status: c.agent ? 'active' : 'queued', lastSeq: c.seq, createdAt: c.createdAt,
  };
}

function assign(c) {
  let best = null;
  for (const id of available) if (best === null || load.get(id) < load.get(best)) best = id;
  if (best === null) { queue.push(c); return; }
  load.set(best, load.get(best) + 1);
  c.agent = users.get(best).user;
  const text = frame('agent.assigned', { conversationId: c.id, agent: { id: c.agent.id, name: c.agent.name } });
  sendTo(c.customer.id, text);
  sendTo(c.agent.id, text);
}

function userFrom(request) {
  const protocols = (request.headers['sec-websocket-protocol'] || '').split(',').map((p) => p.trim());
  const bearer = protocols.find((p) => p.startsWith('bearer.'));
  const token = bearer ? bearer.slice(7) : new URL(request.url, 'http://peer').searchParams.get('token');
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  return { id: claims.sub, role: claims.role, name: claims.name };
}

// The server API: POST /v1/api/publish only.
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
    broadcast(topic, frame('topic.event', { topic, seq, event, data, publishedAt: now() }));
    reply(response, 200, { topic, seq });
  });
}

const server = createServer((request, response) => {
  const path = new URL(request.url, 'http://peer').pathname;
  if (request.method === 'POST' && path === '/v1/api/publish') publish(request, response);
  else apiError(response, 404, 'not_found', `no ${request.method} ${path} here`);
});

const wss = new WebSocketServer({
  server,
  handleProtocols: (protocols) => (protocols.has('petchat.v1') ? 'petchat.v1' : false),
});

wss.on('connection', (socket, request) => {
  let user;
  try { user = userFrom(request); } catch { socket.close(4500, 'bad token'); return; }
  if (!users.has(user.id)) users.set(user.id, { user, sockets: new Set() });
  users.get(user.id).sockets.add(socket);
  const topics = new Set();       // the rooms this socket is in
  socket.send(frame('session.ready', {
    sessionId: randomUUID(), user, heartbeatIntervalMs: 25000,
    limits: { maxMessageBytes: 65536, maxTextChars: 4000, messagesPerSecond: 1000000 },
    conversations: [],
  }));

  socket.on('message', (raw) => {
    let message;
    try { message = JSON.parse(raw); } catch { socket.send(frame('error', { code: 'invalid_json', message: 'not JSON' })); return; }
    const { type, id, data } = message;
    switch (type) {
      case 'agent.status': {
        if (!load.has(user.id)) load.set(user.id, 0);
        const at = available.indexOf(user.id);
        if (data.available && at < 0) available.push(user.id);
        if (!data.available && at >= 0) available.splice(at, 1);
        socket.send(frame('agent.status', { available: data.available, activeConversations: load.get(user.id) }, id));
        while (data.available && queue.length > 0) assign(queue.shift());
        return;
      }
      case 'conversation.open': {
        const c = { id: randomUUID(), customer: user, agent: null, seq: 0, createdAt: now() };
        conversations.set(c.id, c);
        socket.send(frame('conversation.opened', { conversation: snapshot(c) }, id));
        assign(c);
        return;
      }
      case 'chat.send': {
        const c = conversations.get(data.conversationId);
        if (!c) { socket.send(frame('error', { code: 'not_found', message: 'no such conversation', refId: id }, id)); return; }
        c.seq += 1;
        const sentAt = now();
        const messageId = randomUUID();
        socket.send(frame('chat.ack', { conversationId: c.id, clientMessageId: data.clientMessageId, messageId, seq: c.seq, sentAt }, id));
        const other = user.id === c.customer.id ? c.agent?.id : c.customer.id;
        if (other) sendTo(other, frame('chat.message', { conversationId: c.id, messageId, seq: c.seq, from: user, text: data.text, sentAt }));
        return;
      }
      case 'message.delivered':
      case 'message.read': {
        const c = conversations.get(data.conversationId);
        if (!c) return;
        const other = user.id === c.customer.id ? c.agent?.id : c.customer.id;
        if (other) sendTo(other, frame(type, { conversationId: c.id, upToSeq: data.upToSeq, by: user.id, at: now() }));
        return;
      }
      case 'topic.subscribe':
      case 'topic.unsubscribe': {
        const topic = data?.topic;
        if (typeof topic !== 'string' || topic === '') {
          socket.send(frame('error', { code: 'invalid_message', message: 'data.topic must be a topic name', refId: id }, id));
          return;
        }
        if (type === 'topic.subscribe') {
          if (!rooms.has(topic)) rooms.set(topic, new Set());
          rooms.get(topic).add(socket);
          topics.add(topic);
          socket.send(frame('topic.subscribed', { topic, lastSeq: topicSeq.get(topic) ?? 0, recovered: true }, id));
        } else {
          leave(topic, socket);
          topics.delete(topic);
          socket.send(frame('topic.unsubscribed', { topic }, id));
        }
        return;
      }
      case 'ping':
        socket.send(frame('pong', {}, id));
        return;
      default:
        socket.send(frame('error', { code: 'unknown_type', message: `type ${type} is not handled here` }, id));
    }
  });

  socket.on('close', () => {
    users.get(user.id)?.sockets.delete(socket);
    for (const topic of topics) leave(topic, socket);
  });
});

// The backend's keep-alive connections outlive a long broadcast: with Node's
// default 5 s, a connection whose next request waited behind broadcasts to
// 10,000 sockets for longer than that was closed as idle, and the publisher
// saw "connection reset" (timers run before the poll phase reads the request).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
