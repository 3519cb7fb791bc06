// Interop test of live updates (SPEC §11–§14) with Node.js clients nobody here
// wrote: `ws` subscribes to a topic, the npm `eventsource` reads the SSE stream
// on a ticket (as a browser's EventSource must) and a new one resumes it with
// `lastEventId`; the backend's calls use Node's fetch. Run by
// scripts/interop.sh (a server with --api-keys and --public-topics 'pets:*').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { EventSource } from 'eventsource';
import { open } from './socket.mjs';

const HTTP = process.env.PETCHAT_HTTP;
const TOKEN = process.env.PETCHAT_CUSTOMER_TOKEN;
const USER = process.env.PETCHAT_CUSTOMER_ID;
const TOPIC = `pets:node-${randomUUID().slice(0, 8)}`;

async function api(path, body) {
  const response = await fetch(`${HTTP}${path}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${process.env.PETCHAT_API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  return response.json();
}

const publish = (n) => api('/v1/api/publish', { topic: TOPIC, event: 'pet.status', data: { n } });

async function ticket() {
  const response = await fetch(`${HTTP}/v1/sse/tickets`, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(response.status, 200);
  return (await response.json()).ticket;
}

/** An EventSource whose `next()` is its next topic.event or notification, within 10 s. */
function source(url) {
  const events = new EventSource(url);
  const queue = [];
  const waiters = [];
  const push = (e) => {
    const item = { id: e.lastEventId, type: e.type, message: JSON.parse(e.data) };
    if (waiters.length) waiters.shift()(item); else queue.push(item);
  };
  events.addEventListener('topic.event', push);
  events.addEventListener('notification', push);
  events.next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve, reject) => {
    waiters.push(resolve);
    setTimeout(() => reject(new Error('no SSE event within 10 s')), 10_000).unref();
  });
  events.opened = new Promise((resolve, reject) => {
    events.onopen = resolve;
    events.onerror = (e) => reject(new Error(`the stream failed: ${e.code ?? ''} ${e.message ?? ''}`));
  });
  return events;
}

test('ws subscribes to a topic, and eventsource reads it on a ticket and resumes it', async () => {
  const ws = await open(`${process.env.PETCHAT_URL}?token=${TOKEN}`, ['petchat.v1']);
  await ws.next('session.ready');
  ws.send_({ type: 'topic.subscribe', id: 't1', data: { topic: TOPIC } });
  assert.deepEqual((await ws.next('topic.subscribed')).data, { topic: TOPIC, lastSeq: 0, recovered: true });

  const first = source(`${HTTP}/v1/sse?topics=${TOPIC}&ticket=${await ticket()}`);
  await first.opened;
  assert.deepEqual(await publish(1), { topic: TOPIC, seq: 1 });
  const event = await first.next();
  assert.equal(event.type, 'topic.event');
  assert.deepEqual(event.message.data.data, { n: 1 });
  assert.equal((await ws.next('topic.event')).data.seq, 1);
  first.close();

  // Two more while no stream is open; a new EventSource on a new ticket
  // resumes after the last id it got: 2 and 3, then 4 live, each once.
  await publish(2);
  await publish(3);
  const resumed = source(`${HTTP}/v1/sse?topics=${TOPIC}&ticket=${await ticket()}&lastEventId=${encodeURIComponent(event.id)}`);
  await resumed.opened;
  await publish(4);
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push((await resumed.next()).message.data.seq);
  assert.deepEqual(seqs, [2, 3, 4]);

  // A notification reaches the stream and the socket.
  const notified = await api('/v1/api/notify', { userId: USER, kind: 'order.shipped', title: 'Shipped', body: '' });
  const notification = await resumed.next();
  assert.equal(notification.type, 'notification');
  assert.equal(notification.message.data.id, notified.id);
  assert.equal((await ws.next('notification')).data.seq, notified.seq);
  resumed.close();
  ws.close();
});

test('a spent ticket stops the eventsource with 401', async () => {
  const spent = await ticket();
  const used = await fetch(`${HTTP}/v1/sse?topics=${TOPIC}&ticket=${spent}`);
  assert.equal(used.status, 200);
  await used.body.cancel();
  const again = source(`${HTTP}/v1/sse?topics=${TOPIC}&ticket=${spent}`);
  const error = await again.opened.then(() => null, (e) => e);
  assert.match(String(error), /401/);
  assert.equal(again.readyState, EventSource.CLOSED, 'a 401 does not reconnect');
});
