// Smoke test of the topic subset: starts server.mjs, subscribes 3 sockets to
// one topic, publishes 5 events over HTTP, checks every socket got seq 1..5 in
// order, then that topic.unsubscribe stops delivery. Exits 0, or 1 with a
// message (10 s at most).   node smoke.mjs
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const fail = (message) => { console.error(`smoke: FAIL: ${message}`); process.exit(1); };
setTimeout(() => fail('timed out after 10 s'), 10000);
process.on('unhandledRejection', (error) => fail(error?.stack ?? error));

const server = spawn(process.execPath, [fileURLToPath(new URL('server.mjs', import.meta.url)), '--port', '0'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
process.on('exit', () => server.kill());
server.on('exit', (code) => fail(`the server exited (${code})`));
const port = await new Promise((resolve) => {
  let out = '';
  server.stdout.on('data', (chunk) => { out += chunk; const m = /^listening (\d+)\n/.exec(out); if (m) resolve(Number(m[1])); });
});

const base64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const token = (sub) => `${base64url({ alg: 'HS256' })}.${base64url({ sub, role: 'customer', name: sub })}.unsigned`;

// A socket whose incoming frames can be awaited one by one.
async function connect(sub) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/v1/ws/chat?token=${token(sub)}`, 'petchat.v1');
  const frames = [];
  const waiters = [];
  socket.on('message', (raw) => {
    const frame = JSON.parse(raw);
    if (waiters.length > 0) waiters.shift()(frame); else frames.push(frame);
  });
  await new Promise((resolve, reject) => { socket.on('open', resolve); socket.on('error', reject); });
  const next = () => (frames.length > 0 ? Promise.resolve(frames.shift()) : new Promise((resolve) => waiters.push(resolve)));
  const ready = await next();
  if (ready.type !== 'session.ready') fail(`${sub}: first frame ${ready.type}`);
  return { socket, frames, next, send: (frame) => socket.send(JSON.stringify(frame)) };
}

async function publish(body, headers = { authorization: 'Bearer smoke-key' }) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/api/publish`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body,
  });
  return { status: response.status, body: await response.json() };
}

const topic = 'orders:1';
const clients = await Promise.all(['u1', 'u2', 'u3'].map(connect));
for (const [i, client] of clients.entries()) {
  client.send({ type: 'topic.subscribe', id: `s${i}`, data: { topic } });
  const reply = await client.next();
  if (reply.type !== 'topic.subscribed' || reply.id !== `s${i}` || reply.data.topic !== topic
      || reply.data.lastSeq !== 0 || reply.data.recovered !== true || !reply.timestamp) {
    fail(`subscriber ${i}: unexpected reply ${JSON.stringify(reply)}`);
  }
}

let answer = await publish(JSON.stringify({ topic, event: 'order.shipped', data: {} }), {});
if (answer.status !== 401 || answer.body.error?.code !== 'unauthorized') fail(`no key: ${JSON.stringify(answer)}`);
answer = await publish('{not json');
if (answer.status !== 400 || !answer.body.error?.code) fail(`bad JSON: ${JSON.stringify(answer)}`);

for (let n = 1; n <= 5; n += 1) {
  answer = await publish(JSON.stringify({ topic, event: 'order.status', data: { n } }));
  if (answer.status !== 200 || answer.body.topic !== topic || answer.body.seq !== n) fail(`publish ${n}: ${JSON.stringify(answer)}`);
}
for (const [i, client] of clients.entries()) {
  for (let n = 1; n <= 5; n += 1) {
    const event = await client.next();
    const d = event.data;
    if (event.type !== 'topic.event' || d.topic !== topic || d.seq !== n || d.event !== 'order.status' || d.data.n !== n
        || Number.isNaN(Date.parse(d.publishedAt)) || !event.timestamp) {
      fail(`subscriber ${i}, event ${n}: ${JSON.stringify(event)}`);
    }
  }
}

clients[2].send({ type: 'topic.unsubscribe', id: 'u', data: { topic } });
const left = await clients[2].next();
if (left.type !== 'topic.unsubscribed' || left.id !== 'u' || left.data.topic !== topic) fail(`unsubscribe: ${JSON.stringify(left)}`);
answer = await publish(JSON.stringify({ topic, event: 'order.status', data: { n: 6 } }));
for (const client of clients.slice(0, 2)) if ((await client.next()).data?.seq !== 6) fail('seq 6 missing');
await new Promise((resolve) => setTimeout(resolve, 100));
if (clients[2].frames.length > 0) fail(`an unsubscribed socket got ${JSON.stringify(clients[2].frames[0])}`);

console.log('smoke: ok (3 subscribers, seq 1..5 in order, unsubscribe stops delivery)');
process.exit(0);
