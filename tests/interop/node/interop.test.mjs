// Interop test: a customer and an agent on the Node.js `ws` client talk to
// petchat-server (started by scripts/interop.sh, which mints the tokens).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { open } from './socket.mjs';

const URL_BASE = process.env.PETCHAT_URL;

test('a customer and an agent chat through the ws client', async () => {
  const agent = await open(URL_BASE, ['petchat.v1', `bearer.${process.env.PETCHAT_AGENT_TOKEN}`]);
  assert.equal(agent.protocol, 'petchat.v1');
  await agent.next('session.ready');
  agent.send_({ type: 'agent.status', data: { available: true } });
  await agent.next('agent.status');

  const customer = await open(`${URL_BASE}?token=${process.env.PETCHAT_CUSTOMER_TOKEN}`, ['petchat.v1']);
  const ready = await customer.next('session.ready');
  assert.equal(ready.data.user.role, 'customer');
  customer.send_({ type: 'conversation.open', data: {} });
  const opened = await customer.next('conversation.opened');
  const id = opened.data.conversation.id;
  await agent.next('agent.assigned');

  customer.send_({ type: 'typing.start', data: { conversationId: id } });
  assert.equal((await agent.next('typing.start')).data.userId, 'cust-node');
  const key = randomUUID();
  customer.send_({ type: 'chat.send', id: 'n1', data: { conversationId: id, clientMessageId: key, text: 'from node' } });
  const ack = await customer.next('chat.ack');
  assert.equal(ack.id, 'n1');
  assert.equal(ack.data.clientMessageId, key);
  const message = await agent.next('chat.message');
  assert.equal(message.data.text, 'from node');
  assert.equal(message.data.seq, ack.data.seq);

  customer.send_({ type: 'ping', id: 'p', data: {} });
  assert.equal((await customer.next('pong')).id, 'p');
  customer.close(1000);
  agent.close(1000);
});

test('a forged token is closed with 4500 after the upgrade', async () => {
  const ws = new WebSocket(`${URL_BASE}?token=forged.token.here`, ['petchat.v1']);
  const code = await new Promise((resolve) => ws.on('close', (c) => resolve(c)));
  assert.equal(code, 4500);
});

// RFC 6455 §5.5.1: the server echoes a client's Close, so ws reports the
// code sent (a server that drops the socket shows up as 1006 after ws's
// 30-second close timeout).
test('a client close with 1000 is echoed', async () => {
  const ws = await open(`${URL_BASE}?token=${process.env.PETCHAT_CUSTOMER_TOKEN}`, ['petchat.v1']);
  await ws.next('session.ready');
  const started = Date.now();
  const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  ws.close(1000, 'bye');
  assert.equal(await closed, 1000);
  assert.ok(Date.now() - started < 5_000, 'the echo arrives at once');
});

// Protocol violations written under the library get a Close frame with 1002
// (1007 for text that is not UTF-8) before the connection ends.
for (const [what, raw, expected] of [
  ['an unmasked frame', Buffer.from([0x81, 0x02, 0x7b, 0x7d]), 1002],
  ['a reserved opcode', Buffer.from([0x83, 0x80, 0, 0, 0, 0]), 1002],
  ['invalid UTF-8', Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe]), 1007],
]) {
  test(`${what} is closed with ${expected}`, async () => {
    const ws = await open(`${URL_BASE}?token=${process.env.PETCHAT_CUSTOMER_TOKEN}`, ['petchat.v1']);
    await ws.next('session.ready');
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('error', () => {});
    ws._socket.write(raw);
    assert.equal(await closed, expected);
  });
}
