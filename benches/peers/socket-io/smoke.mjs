// Smoke test: starts server.mjs, connects 3 subscribers with raw `ws` speaking
// the Engine.IO v4 / Socket.IO v5 framing of README.md (so the README's frames
// are checked byte for byte), publishes 5 events over HTTP, checks every
// subscriber got seq 1..5 in order, then that unsubscribe stops delivery.
// Exits 0, or 1 with a message (10 s at most).   node smoke.mjs
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

// A raw Engine.IO connection whose text frames can be awaited one by one;
// it answers the server's ping "2" with the pong "3", as a client must.
async function connect() {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  const waiters = [];
  socket.on('message', (raw, isBinary) => {
    if (isBinary) fail('a binary frame');
    const text = raw.toString();
    if (text === '2') { socket.send('3'); return; }
    if (waiters.length > 0) waiters.shift()(text); else frames.push(text);
  });
  await new Promise((resolve, reject) => { socket.on('open', resolve); socket.on('error', reject); });
  const next = () => (frames.length > 0 ? Promise.resolve(frames.shift()) : new Promise((resolve) => waiters.push(resolve)));

  const open = await next();
  if (open[0] !== '0') fail(`expected the open packet, got ${open}`);
  const handshake = JSON.parse(open.slice(1));
  if (typeof handshake.sid !== 'string' || JSON.stringify(handshake.upgrades) !== '[]' || handshake.pingInterval !== 25000
      || handshake.pingTimeout !== 20000 || handshake.maxPayload !== 1000000) {
    fail(`unexpected open packet ${open}`);
  }
  socket.send('40');
  const connected = await next();
  if (!/^40\{"sid":"[^"]+"\}$/.test(connected)) fail(`expected 40{"sid":...}, got ${connected}`);
  return { socket, frames, next };
}

async function publish(body, headers = { authorization: 'Bearer smoke-key' }) {
  const response = await fetch(`http://127.0.0.1:${port}/v1/api/publish`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body,
  });
  return { status: response.status, body: await response.json() };
}

const topic = 'orders:1';
const clients = await Promise.all([1, 2, 3].map(connect));
for (const [i, client] of clients.entries()) {
  client.socket.send(`42${i + 1}["subscribe","${topic}"]`);
  const ack = await client.next();
  if (ack !== `43${i + 1}[{"topic":"${topic}","lastSeq":0}]`) fail(`subscriber ${i}: unexpected ack ${ack}`);
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
    const packet = await client.next();
    const prefix = `42["topic.event",{"topic":"${topic}","seq":${n},"event":"order.status","data":{"n":${n}},"publishedAt":"`;
    if (!packet.startsWith(prefix) || !packet.endsWith('"}]')) fail(`subscriber ${i}, event ${n}: ${packet}`);
    const [name, event] = JSON.parse(packet.slice(2));
    if (name !== 'topic.event' || Number.isNaN(Date.parse(event.publishedAt))) fail(`subscriber ${i}, event ${n}: ${packet}`);
  }
}

clients[2].socket.send(`424["unsubscribe","${topic}"]`);
const left = await clients[2].next();
if (left !== `434[{"topic":"${topic}"}]`) fail(`unsubscribe: ${left}`);
answer = await publish(JSON.stringify({ topic, event: 'order.status', data: { n: 6 } }));
for (const client of clients.slice(0, 2)) if (!(await client.next()).includes('"seq":6,')) fail('seq 6 missing');
await new Promise((resolve) => setTimeout(resolve, 100));
if (clients[2].frames.length > 0) fail(`an unsubscribed socket got ${clients[2].frames[0]}`);

console.log('smoke: ok (3 raw Engine.IO subscribers, README frames, seq 1..5 in order, unsubscribe stops delivery)');
process.exit(0);
