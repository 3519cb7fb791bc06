// Live updates in headless Chromium (SPEC §11–§14): the customer page shows
// its order's status as the backend publishes it and the user's
// notifications with an unread count that a read on another tab clears; the
// agent console's dashboard follows support:stats; and the browser's own
// EventSource reads a stream opened with a ticket; the page example of
// docs/protocol.md follows an order across a server restart.
// Run by scripts/browser.sh, which builds the package and sets PETCHAT_SERVER.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Server, freePort, root } from './server.mjs';

const artifacts = join(root, 'target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });
const KEY = 'browser-key';

/** A page of the server's origin without an app of its own (and no /favicon.ico request). */
async function blankPage(server, context, watch) {
  const page = watch(await context.newPage(), 'page');
  await context.route('**/favicon.ico', (route) => route.fulfill({ status: 204 }));
  await page.goto(`http://127.0.0.1:${server.port}/openapi.json`);
  return page;
}

/** Resolves once the server API sees `userId` online (within 10 s). */
async function online(server, userId) {
  for (let i = 0; i < 200; i++) {
    const response = await fetch(`http://127.0.0.1:${server.port}/v1/api/presence/${userId}`, { headers: { Authorization: `Bearer ${KEY}` } });
    if ((await response.json()).online) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${userId} did not come online`);
}

async function browser() {
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'petchat-profile-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const errors = [];
  const watch = (page, name) => {
    page.on('console', (m) => { if (m.type() === 'error' && !/WebSocket connection|net::ERR_/.test(m.text())) errors.push(`${name}: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    return page;
  };
  return { context, errors, watch };
}

async function api(server, path, body) {
  const response = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method: 'POST', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `${path}: ${await response.clone().text()}`);
  return response.json();
}

test('the customer page shows its order live and the notifications with an unread count', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort(), ['--api-keys', KEY]);
  await server.start();
  const { context, errors, watch } = await browser();
  try {
    const page = watch(await context.newPage(), 'customer');
    await page.goto(`http://127.0.0.1:${server.port}/?order=1234`);
    // The demo shop page: its chat widget opens a conversation about the order.
    await page.getByRole('button', { name: /Chat with us/ }).click();
    await page.getByText(/Finding an agent|Waiting for an agent/).waitFor();
    // The backend publishes the order's status: the page shows each one.
    await api(server, '/v1/api/publish', { topic: 'orders:1234', event: 'order.status', data: { status: 'packed' } });
    await page.locator('#order-status', { hasText: 'Order 1234: packed' }).waitFor();
    // The dev button drives it too.
    await page.getByRole('button', { name: /Simulate the next status/ }).click();
    await page.locator('#order-status', { hasText: 'Order 1234: shipped' }).waitFor();

    // The user's id (the page's dev user) for the backend's notifications.
    const userId = await page.evaluate(() => localStorage.getItem('petchat.dev.customer'));
    await api(server, '/v1/api/notify', { userId, kind: 'order.shipped', title: 'Your order has shipped', body: 'Order 1234 is on its way.', link: '/orders/1234' });
    await page.getByRole('button', { name: 'Notifications, 1 unread' }).waitFor();
    // A reload keeps the order's status (replayed) and the unread count (session.ready).
    await page.reload();
    await page.locator('#order-status', { hasText: 'Order 1234: shipped' }).waitFor();
    await page.getByRole('button', { name: 'Notifications, 1 unread' }).waitFor();
    await page.screenshot({ path: join(artifacts, 'customer-order-live.png') });

    // A second tab of the same user reads them: the first tab's count clears.
    const second = watch(await context.newPage(), 'second tab');
    await second.goto(`http://127.0.0.1:${server.port}/?order=1234`);
    await second.getByRole('button', { name: 'Notifications, 1 unread' }).click();
    await second.locator('#notifications li', { hasText: 'Your order has shipped' }).waitFor();
    await page.getByRole('button', { name: 'Notifications', exact: true }).waitFor();
    assert.equal(await page.locator('#bell-count').isHidden(), true, 'the badge is gone');
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});

test('the agent console shows the live support dashboard', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort(), ['--api-keys', KEY, '--support-stats-interval-ms', '100']);
  await server.start();
  const { context, errors, watch } = await browser();
  try {
    const agent = watch(await context.newPage(), 'agent');
    await agent.goto(`http://127.0.0.1:${server.port}/agent`);
    await agent.waitForFunction(() => document.getElementById('available').checked);
    await agent.locator('#stat-available', { hasText: '1' }).waitFor();
    // A customer comes: the agent takes the conversation; the dashboard counts it.
    const customer = watch(await context.newPage(), 'customer');
    await customer.goto(`http://127.0.0.1:${server.port}/`);
    await customer.getByRole('button', { name: /Chat with us/ }).click();
    await customer.getByText(/You're chatting with/).waitFor();
    await agent.locator('#stat-open', { hasText: '1' }).waitFor();
    await agent.locator('#stat-busy', { hasText: '1' }).waitFor();
    await agent.bringToFront();
    await agent.locator('#conversations button').first().click();
    await agent.getByLabel('Your answer').fill('Hello! How can I help?');
    await agent.getByLabel('Your answer').press('Enter');
    await agent.locator('#stat-first-response:not(:has-text("—"))').waitFor();
    await agent.waitForFunction(() => Number(document.getElementById('chart').dataset.points) >= 2);
    await agent.screenshot({ path: join(artifacts, 'agent-dashboard.png') });
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});

test("the browser's EventSource reads a stream opened with a ticket, which is good once", { timeout: 60_000 }, async () => {
  const server = new Server(await freePort(), ['--api-keys', KEY, '--public-topics', 'pets:*']);
  await server.start();
  const { context, errors, watch } = await browser();
  try {
    const page = await blankPage(server, context, watch);
    const opened = page.evaluate(async () => {
      const token = await (await fetch('/dev/token?role=customer&sub=sse-user')).text();
      const ticket = await (await fetch('/v1/sse/tickets', { method: 'POST', headers: { Authorization: `Bearer ${token}` } })).json();
      window.events = [];
      const source = new EventSource(`/v1/sse?topics=pets:7&ticket=${ticket.ticket}`);
      source.addEventListener('topic.event', (e) => window.events.push({ id: e.lastEventId, data: JSON.parse(e.data) }));
      await new Promise((resolve, reject) => { source.onopen = resolve; source.onerror = reject; });
      window.source = source;
      // The ticket is used: another stream with it is refused.
      const again = await fetch(`/v1/sse?topics=pets:7&ticket=${ticket.ticket}`);
      return again.status;
    });
    assert.equal(await opened, 401, 'a used ticket gets 401');
    await api(server, '/v1/api/publish', { topic: 'pets:7', event: 'pet.available', data: { name: 'Miso' } });
    await page.waitForFunction(() => window.events.length === 1);
    const [event] = await page.evaluate(() => window.events);
    assert.equal(event.data.type, 'topic.event');
    assert.equal(event.data.data.data.name, 'Miso');
    assert.match(event.id, /pets:7=1/);
    await page.evaluate(() => window.source.close());
    // The one error the page logs is the refused reuse of the ticket, which it asked for.
    assert.deepEqual(errors.filter((e) => !e.includes('status of 401')), [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});

test('the page example of docs/protocol.md follows an order across a server restart, each event once', { timeout: 90_000 }, async () => {
  const docs = readFileSync(join(root, 'docs/protocol.md'), 'utf8');
  const example = docs.match(/<!-- example: follow-order\.js -->\n```js\n([\s\S]*?)\n```/);
  assert.ok(example, 'docs/protocol.md has the follow-order.js example');
  const server = new Server(await freePort(), ['--api-keys', KEY]);
  await server.start();
  const { context, errors, watch } = await browser();
  try {
    const page = await blankPage(server, context, watch);
    await page.addScriptTag({ content: example[1] });
    await page.evaluate(() => {
      window.got = [];
      const token = async () => (await fetch('/dev/token?role=customer&sub=docs-page&topics=orders:77')).text();
      window.stop = followOrder('77', token, (message) => window.got.push(message));
    });
    const seqs = async (n) => {
      await page.waitForFunction((n) => window.got.filter((m) => m.type === 'topic.event').length >= n, n, { timeout: 30_000 });
      return page.evaluate(() => window.got.filter((m) => m.type === 'topic.event').map((m) => m.data.seq));
    };
    // The stream counts as the user's connection once it is open.
    await online(server, 'docs-page');
    await api(server, '/v1/api/publish', { topic: 'orders:77', event: 'order.status', data: { status: 'packed' } });
    assert.deepEqual(await seqs(1), [1]);

    // A restart drops the stream; the events published meanwhile come once
    // the page resumes with lastEventId on a new ticket, then live ones.
    await server.kill();
    await server.start();
    for (const status of ['shipped', 'out for delivery']) {
      await api(server, '/v1/api/publish', { topic: 'orders:77', event: 'order.status', data: { status } });
    }
    assert.deepEqual(await seqs(3), [1, 2, 3]);
    await api(server, '/v1/api/notify', { userId: 'docs-page', kind: 'order.shipped', title: 'Shipped', body: '' });
    await page.waitForFunction(() => window.got.some((m) => m.type === 'notification'));
    await api(server, '/v1/api/publish', { topic: 'orders:77', event: 'order.status', data: { status: 'delivered' } });
    assert.deepEqual(await seqs(4), [1, 2, 3, 4]);
    await page.evaluate(() => window.stop());
    // What the page logs: the refused retries of the spent ticket and of the stopped server.
    assert.deepEqual(errors.filter((e) => !/status of 401|ERR_CONNECTION_REFUSED|EventSource/.test(e)), [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});
