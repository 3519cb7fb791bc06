// The benchmark's peer: a support chat on Node.js and `ws`, the way a team
// would write it in an afternoon. Everything lives in memory; nothing is
// persisted before the ack. It speaks the subset of petchat.v1 that
// petchat-bench's scenarios use: session.ready, agent.status,
// conversation.open → conversation.opened (+ agent.assigned to both sides),
// chat.send → chat.ack + chat.message to the other member, message.delivered
// relayed to the other member. Tokens are read, not verified (HS256 payload).
//
//   node server.mjs --port 9000        (prints "listening <port>" when ready)
import { WebSocketServer } from 'ws';
import { randomUUID } from 'node:crypto';

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1] || 0);

const users = new Map();          // userId -> {user, sockets: Set}
const conversations = new Map();  // id -> {id, customer, agent, seq, createdAt}
const available = [];             // agent ids taking conversations
const load = new Map();           // agentId -> open conversations
const queue = [];                 // conversations waiting for an agent

const now = () => new Date().toISOString();
const frame = (type, data, id) => JSON.stringify(id ? { type, id, data, timestamp: now() } : { type, data, timestamp: now() });

function sendTo(userId, text) {
  const entry = users.get(userId);
  if (entry) for (const socket of entry.sockets) socket.send(text);
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

const wss = new WebSocketServer({
  port, host: '127.0.0.1',
  handleProtocols: (protocols) => (protocols.has('petchat.v1') ? 'petchat.v1' : false),
});

wss.on('connection', (socket, request) => {
  let user;
  try { user = userFrom(request); } catch { socket.close(4500, 'bad token'); return; }
  if (!users.has(user.id)) users.set(user.id, { user, sockets: new Set() });
  users.get(user.id).sockets.add(socket);
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
      case 'ping':
        socket.send(frame('pong', {}, id));
        return;
      default:
        socket.send(frame('error', { code: 'unknown_type', message: `type ${type} is not handled here` }, id));
    }
  });

  socket.on('close', () => {
    users.get(user.id)?.sockets.delete(socket);
  });
});

wss.on('listening', () => console.log(`listening ${wss.address().port}`));
