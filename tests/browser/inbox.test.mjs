// The agent inbox (/agent) in headless Chromium against a real --dev server,
// with the customers driven as plain WebSocket clients from Node (so these
// tests do not depend on the customer page): the lists, the queue, canned
// replies, close and resolve, a transfer between two agents, the
// customer-away rule, desktop notifications, the search of past
// conversations, attachments, the phone layout, the axe audit and screenshots.
// Run by scripts/browser.sh, which builds the package and sets PETCHAT_SERVER.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { Server, freePort } from './server.mjs';
import { audit, screenshots, watchConsole, assertNoHorizontalScroll } from './quality.mjs';

const TIMEOUT = 15_000;

/** A customer on its own WebSocket: what it received, and waits for what it will. */
class Customer {
  static async connect(server, sub) {
    const token = await (await fetch(`http://127.0.0.1:${server.port}/dev/token?role=customer&sub=${sub}`)).text();
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/ws/chat`, ['petchat.v1', `bearer.${token}`]);
    const customer = new Customer(ws, sub);
    customer.token = token;
    await customer.next((m) => m.type === 'session.ready');
    return customer;
  }

  constructor(ws, sub) {
    this.ws = ws;
    this.sub = sub;
    this.received = [];
    this.waiters = [];
    this.requests = 0;
    ws.on('message', (raw) => {
      const message = JSON.parse(raw.toString());
      this.received.push(message);
      this.waiters = this.waiters.filter((w) => !(w.match(message) && (w.resolve(message), true)));
    });
  }

  /** The first message, received already or to come, that `match` accepts. */
  next(match, what = 'a message') {
    const seen = this.received.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.sub}: no ${what} within ${TIMEOUT} ms`)), TIMEOUT);
      this.waiters.push({ match, resolve: (m) => { clearTimeout(timer); resolve(m); } });
    });
  }

  send(type, data) {
    const id = `r-${++this.requests}`;
    this.ws.send(JSON.stringify({ type, id, data }));
    return id;
  }

  /** Opens a conversation about `about` ({topic, petId, orderId}); resolves with its id. */
  async open(about = {}) {
    const id = this.send('conversation.open', about);
    const opened = await this.next((m) => m.type === 'conversation.opened' && m.id === id, 'conversation.opened');
    this.conversationId = opened.data.conversation.id;
    return this.conversationId;
  }

  /** Sends a chat message and waits for its ack. */
  async say(text) {
    const clientMessageId = randomUUID();
    this.send('chat.send', { conversationId: this.conversationId, clientMessageId, text });
    await this.next((m) => m.type === 'chat.ack' && m.data.clientMessageId === clientMessageId, `the ack of "${text}"`);
  }

  close() {
    this.ws.close(1000);
    return new Promise((resolve) => (this.ws.readyState === WebSocket.CLOSED ? resolve() : this.ws.once('close', resolve)));
  }
}

/** Chromium with a fresh profile; `permissions` are granted to the server's origins. */
async function browser({ permissions = [] } = {}) {
  return chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'petchat-profile-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 800 },
    permissions,
  });
}

/**
 * An inbox page, signed in and available. `host` picks the origin: each
 * origin has its own storage, so 127.0.0.1 and localhost are two agents.
 */
async function inbox(context, server, name, host = '127.0.0.1', expected = undefined) {
  const page = await context.newPage();
  const console = watchConsole(page, name, expected);
  await page.goto(`http://${host}:${server.port}/agent`);
  await page.waitForFunction(() => document.getElementById('available').checked);
  await page.locator('#status', { hasText: 'Signed in as' }).waitFor();
  const agentId = await page.evaluate(() => localStorage.getItem('petchat.dev.agent'));
  return { page, console, agentId };
}

/** Waits until the past list has `n` rows; a timeout says what it showed instead. */
async function pastRows(page, n) {
  try {
    await page.waitForFunction((n) => document.querySelectorAll('#past li').length === n, n, { timeout: TIMEOUT });
  } catch (e) {
    const seen = await page.evaluate(() => ({ rows: document.querySelectorAll('#past li').length, error: document.getElementById('action-error').textContent }));
    throw new Error(`the past list: ${n} rows expected, ${seen.rows} shown (error line: "${seen.error}")`, { cause: e });
  }
}

const row = (page, list, text) => page.locator(`#${list} li`, { hasText: text });

test('the inbox lists conversations with their facts and unread counts, the queue, and sends a canned reply', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort(), ['--max-conversations-per-agent', '2', '--support-stats-interval-ms', '200']);
  await server.start();
  const context = await browser();
  const customers = [];
  try {
    const { page, console } = await inbox(context, server, 'agent');
    // The first customer is opened by itself (the inbox shows the first one).
    const first = await Customer.connect(server, 'cust-first');
    customers.push(first);
    await first.open({ topic: 'Hello there' });
    await first.next((m) => m.type === 'agent.assigned', 'agent.assigned');
    await row(page, 'conversations', 'Customer first').waitFor();

    // The second: topic, pet and order, two messages the agent has not read.
    const ana = await Customer.connect(server, 'cust-ana');
    customers.push(ana);
    await ana.open({ topic: 'Miso will not eat', petId: 'pet-1138', orderId: 'order-77' });
    await ana.next((m) => m.type === 'agent.assigned', 'agent.assigned');
    await ana.say('Since yesterday she skips her food');
    await ana.say('Is the new kibble the problem?');
    const anaRow = row(page, 'conversations', 'Customer ana');
    await anaRow.getByLabel('2 unread').waitFor();
    for (const text of ['Miso will not eat', 'Pet pet-1138', 'Order order-77', 'Customer ana: Is the new kibble the problem?', /waiting \d+ s/]) {
      await anaRow.getByText(text).waitFor();
    }

    // A third customer waits: the agent holds two, the most it takes.
    const bo = await Customer.connect(server, 'cust-bo');
    customers.push(bo);
    await bo.open({ topic: 'Which leash for a puppy?' });
    await bo.next((m) => m.type === 'conversation.queued', 'conversation.queued');
    await bo.say('Hi, which leash would you recommend?');
    const boRow = row(page, 'queue', 'Customer bo');
    await boRow.getByText('Which leash for a puppy?').waitFor();
    await boRow.getByText(/waiting \d+ s/).waitFor();
    await page.locator('#queue-count', { hasText: '(1)' }).waitFor();

    // Opening Ana's conversation reads it and shows her context.
    await anaRow.getByRole('button').click();
    await page.locator('#messages li', { hasText: 'Is the new kibble the problem?' }).waitFor();
    await anaRow.getByLabel('2 unread').waitFor({ state: 'detached' });
    await ana.next((m) => m.type === 'message.read' && m.data.upToSeq === 2, 'message.read');
    const facts = await page.locator('#context-facts').innerText();
    for (const text of ['Customer ana', 'cust-ana', 'Miso will not eat', 'pet-1138', 'order-77', 'Active, with you']) {
      assert.ok(facts.includes(text), `the context shows ${text}: ${facts}`);
    }

    // A canned reply: "/" offers them, typing filters, Enter inserts, Enter sends.
    const answer = page.getByLabel('Your answer');
    await answer.fill('');
    await answer.pressSequentially('/');
    await page.locator('#canned [role=option]').nth(2).waitFor();
    await answer.pressSequentially('ord');
    await page.locator('#canned [role=option][aria-selected=true]', { hasText: '/order' }).waitFor();
    await answer.press('Enter');
    assert.equal(await answer.inputValue(), "Thank you! I'm looking at order order-77 right now, one moment please.");
    assert.equal(await page.locator('#canned').isHidden(), true, 'the list closes');
    await answer.press('Enter');
    const reply = await ana.next((m) => m.type === 'chat.message' && m.data.from.role === 'agent', 'the canned reply');
    assert.equal(reply.data.text, "Thank you! I'm looking at order order-77 right now, one moment please.");
    // Answered: Ana waits no more.
    await anaRow.locator('.row-wait').waitFor({ state: 'detached' });

    // Arrow keys choose among several, Escape closes the list.
    await answer.pressSequentially('/');
    await answer.press('ArrowDown');
    await page.locator('#canned [role=option]').nth(1).and(page.locator('[aria-selected=true]')).waitFor();
    await answer.press('Escape');
    assert.equal(await page.locator('#canned').isHidden(), true);
    await answer.fill('');

    await audit(page, 'inbox');
    // On a phone, one view at a time: the lists, then the conversation.
    await screenshots(page, 'inbox', {
      before: async (p) => { if (await p.locator('#back').isVisible()) await p.locator('#back').click(); },
    });
    await screenshots(page, 'inbox-conversation', {
      before: async (p) => { if (await p.locator('#lists').isVisible() && p.viewportSize().width < 768) await row(p, 'conversations', 'Customer ana').getByRole('button').click(); },
    });
    console.assertNone();
  } finally {
    await Promise.all(customers.map((c) => c.close()));
    await context.close();
    await server.kill();
  }
});

test('the agent resolves one conversation and closes another: the customers get the reason, the inbox shows them ended', { timeout: 90_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const context = await browser();
  const customers = [];
  try {
    const { page, console, agentId } = await inbox(context, server, 'agent');
    for (const sub of ['cust-rex', 'cust-tom']) {
      const customer = await Customer.connect(server, sub);
      customers.push(customer);
      await customer.open({ topic: `${sub} question` });
      await customer.next((m) => m.type === 'agent.assigned');
      await customer.say(`Hello from ${sub}`);
    }
    const [rex, tom] = customers;
    await row(page, 'conversations', 'Customer rex').getByRole('button').click();
    await page.getByRole('button', { name: 'Resolve', exact: true }).click();
    const resolved = await rex.next((m) => m.type === 'conversation.closed', 'conversation.closed');
    assert.deepEqual(resolved.data, { conversationId: rex.conversationId, by: agentId, reason: 'resolved' });
    await row(page, 'conversations', 'Customer rex').getByText('Ended: resolved').waitFor();
    await page.locator('#messages li.event', { hasText: 'Ended: resolved' }).waitFor();
    assert.equal(await page.getByLabel('Your answer').isDisabled(), true, 'an ended conversation is read only');

    await row(page, 'conversations', 'Customer tom').getByRole('button').click();
    // Keyboard only: Tab to Close, Enter.
    await page.getByRole('button', { name: 'Resolve', exact: true }).focus();
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    const closed = await tom.next((m) => m.type === 'conversation.closed', 'conversation.closed');
    assert.deepEqual(closed.data, { conversationId: tom.conversationId, by: agentId, reason: 'closed' });
    await row(page, 'conversations', 'Customer tom').getByText('Ended: closed by you').waitFor();
    // Both are now past conversations.
    await row(page, 'past', 'Customer tom').waitFor();
    await row(page, 'past', 'Customer rex').waitFor();
    console.assertNone();
  } finally {
    await Promise.all(customers.map((c) => c.close()));
    await context.close();
    await server.kill();
  }
});

test('a transfer between two agents: refusals shown, then the conversation moves and the customer reaches the second agent', { timeout: 90_000 }, async () => {
  const server = new Server(await freePort(), ['--support-stats-interval-ms', '100']);
  await server.start();
  const context = await browser();
  let customer;
  try {
    const one = await inbox(context, server, 'agent one', '127.0.0.1');
    const two = await inbox(context, server, 'agent two', 'localhost');
    assert.notEqual(one.agentId, two.agentId);
    // The second agent steps out, so that the customer goes to the first.
    await one.page.locator('#stat-available', { hasText: '2' }).waitFor();
    await two.page.getByLabel('Available for new conversations').uncheck();
    await one.page.locator('#stat-available', { hasText: '1' }).waitFor();
    customer = await Customer.connect(server, 'cust-pip');
    await customer.open({ topic: 'A bigger cage for Pip' });
    const assigned = await customer.next((m) => m.type === 'agent.assigned');
    assert.equal(assigned.data.agent.id, one.agentId);
    await customer.say('Pip the hamster needs more room');
    const page = one.page;
    await row(page, 'conversations', 'Customer pip').getByRole('button').click();
    await page.locator('#messages li', { hasText: 'Pip the hamster needs more room' }).waitFor();

    const transfer = async (to) => {
      if (await page.locator('#transfer').isHidden()) await page.getByRole('button', { name: 'Transfer…' }).click();
      await page.getByRole('radio', { name: 'An agent:' }).check();
      await page.getByLabel('Agent id').fill(to);
      await page.locator('#transfer').getByRole('button', { name: 'Transfer', exact: true }).click();
    };
    // Nobody of that id online: not_found. The second agent unavailable: limit_reached.
    await transfer('agent-nobody');
    await page.locator('#action-error', { hasText: 'agent-nobody is not online (not_found)' }).waitFor();
    await transfer(two.agentId);
    await page.locator('#action-error', { hasText: '(limit_reached)' }).waitFor();

    await two.page.getByLabel('Available for new conversations').check();
    await one.page.locator('#stat-available', { hasText: '2' }).waitFor();
    await transfer(two.agentId);
    // It leaves the first agent's list and comes to the second's, with the transfer in its transcript.
    await row(page, 'conversations', 'Customer pip').waitFor({ state: 'detached' });
    await page.locator('#status', { hasText: 'Customer pip was transferred to' }).waitFor();
    await row(two.page, 'conversations', 'Customer pip').getByRole('button').click();
    await two.page.locator('#messages li', { hasText: 'Pip the hamster needs more room' }).waitFor();
    await two.page.locator('#messages li.event', { hasText: 'Transferred from Agent' }).waitFor();
    const transferred = await customer.next((m) => m.type === 'conversation.transferred');
    assert.equal(transferred.data.to.id, two.agentId);
    await customer.say('Is a two-floor cage good?');
    await two.page.locator('#messages li', { hasText: 'Is a two-floor cage good?' }).waitFor();
    assert.equal(await page.locator('#messages li', { hasText: 'Is a two-floor cage good?' }).count(), 0, 'the first agent no longer hears it');

    // Back to the queue: nobody else is free, so it waits, and leaves this agent's list.
    await two.page.getByRole('button', { name: 'Transfer…' }).click();
    await two.page.getByRole('radio', { name: /The queue/ }).check();
    await two.page.locator('#transfer').getByRole('button', { name: 'Transfer', exact: true }).click();
    await row(two.page, 'conversations', 'Customer pip').waitFor({ state: 'detached' });
    // The first agent is free: it takes the conversation back.
    await row(page, 'conversations', 'Customer pip').waitFor();
    one.console.assertNone();
    two.console.assertNone();
  } finally {
    await customer?.close();
    await context.close();
    await server.kill();
  }
});

test('a customer who goes away: the inbox shows it ended "customer away" and the slot goes to the next customer queued', { timeout: 90_000 }, async () => {
  const server = new Server(await freePort(), ['--customer-away-ms', '1500', '--max-conversations-per-agent', '1', '--support-stats-interval-ms', '200']);
  await server.start();
  const context = await browser();
  const customers = [];
  try {
    const { page, console } = await inbox(context, server, 'agent');
    const gone = await Customer.connect(server, 'cust-gone');
    customers.push(gone);
    await gone.open({ topic: 'Leaving soon' });
    await gone.next((m) => m.type === 'agent.assigned');
    const next = await Customer.connect(server, 'cust-next');
    customers.push(next);
    await next.open({ topic: 'Next in line' });
    await next.next((m) => m.type === 'conversation.queued');
    await row(page, 'queue', 'Customer next').waitFor();

    await gone.close();
    await row(page, 'conversations', 'Customer gone').getByText('Customer offline').waitFor();
    await row(page, 'conversations', 'Customer gone').getByText('Ended: customer away').waitFor();
    await next.next((m) => m.type === 'agent.assigned', 'agent.assigned');
    await row(page, 'conversations', 'Customer next').waitFor();
    await row(page, 'queue', 'Customer next').waitFor({ state: 'detached' });
    await row(page, 'conversations', 'Customer gone').getByRole('button').click();
    await page.locator('#messages li.event', { hasText: 'Ended: customer away' }).waitFor();
    console.assertNone();
  } finally {
    await Promise.all(customers.map((c) => c.close()));
    await context.close();
    await server.kill();
  }
});

test('desktop notifications, with the permission granted, for a new assignment and a new message while the tab is hidden', { timeout: 90_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const context = await browser({ permissions: ['notifications'] });
  // Records every Notification the page makes, and lets the test hide the tab.
  await context.addInitScript(() => {
    const Real = window.Notification;
    window.notes = [];
    function Recording(title, options) {
      window.notes.push({ title, body: options?.body });
      try { return new Real(title, options); } catch { return { close() {} }; }
    }
    Object.defineProperty(Recording, 'permission', { get: () => Real.permission });
    Recording.requestPermission = (...args) => Real.requestPermission(...args);
    window.Notification = Recording;
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (window.hiddenTab ? 'hidden' : 'visible') });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => Boolean(window.hiddenTab) });
  });
  let customer;
  try {
    const { page, console } = await inbox(context, server, 'agent');
    // Granted already: on, without asking; the button turns them off and on again.
    const button = page.locator('#notify');
    await page.locator('#notify[aria-pressed=true]').waitFor();
    await button.click();
    await page.locator('#notify[aria-pressed=false]').waitFor();
    await button.click();
    await page.locator('#notify[aria-pressed=true]').waitFor();

    // Visible: no notification.
    customer = await Customer.connect(server, 'cust-luna');
    await customer.open({ topic: 'Luna scratches the sofa' });
    await customer.next((m) => m.type === 'agent.assigned');
    await row(page, 'conversations', 'Customer luna').waitFor();
    assert.deepEqual(await page.evaluate(() => window.notes), []);

    await page.evaluate(() => { window.hiddenTab = true; document.dispatchEvent(new Event('visibilitychange')); });
    await customer.say('Any tips for a scratching post?');
    await page.waitForFunction(() => window.notes.length >= 1);
    assert.deepEqual(await page.evaluate(() => window.notes), [{ title: 'Customer luna', body: 'Any tips for a scratching post?' }]);
    // The message came while hidden: unread, though the conversation is the one shown.
    await row(page, 'conversations', 'Customer luna').getByLabel('1 unread').waitFor();

    // A new assignment while hidden.
    const other = await Customer.connect(server, 'cust-max');
    await other.open({ topic: 'Max needs a bed' });
    await page.waitForFunction(() => window.notes.length >= 2);
    assert.deepEqual((await page.evaluate(() => window.notes))[1], { title: 'New conversation: Customer max', body: 'Max needs a bed' });
    await other.close();

    // Visible again: read.
    await page.evaluate(() => { window.hiddenTab = false; document.dispatchEvent(new Event('visibilitychange')); });
    await customer.next((m) => m.type === 'message.read', 'message.read');
    console.assertNone();
  } finally {
    await customer?.close();
    await context.close();
    await server.kill();
  }
});

test('past conversations are searchable by customer, page by page, and open read only', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const context = await browser();
  try {
    const { page, console } = await inbox(context, server, 'agent');
    // 22 past conversations with customers "cust-pager-N", and one with Zoe.
    for (const sub of [...Array.from({ length: 22 }, (_, i) => `cust-pager-${i + 1}`), 'cust-zoe']) {
      const customer = await Customer.connect(server, sub);
      await customer.open({ topic: `Question of ${sub}` });
      await customer.next((m) => m.type === 'agent.assigned');
      await customer.say(`Transcript line of ${sub}`);
      customer.send('conversation.close', { conversationId: customer.conversationId });
      await customer.next((m) => m.type === 'conversation.closed');
      await customer.close();
      // At the inbox's pace: each assignment costs it a join, within its rate limit.
      await row(page, 'conversations', `Question of ${sub}`).getByText('Ended: closed by the customer').waitFor();
    }
    const search = async (query) => {
      await page.getByLabel('Customer name or id').fill(query);
      await page.getByLabel('Customer name or id').press('Enter');
    };
    await search('zoe');
    await row(page, 'past', 'Customer zoe').waitFor();
    await pastRows(page, 1);

    await search('pager');
    await pastRows(page, 20);
    const more = page.getByRole('button', { name: 'More past conversations' });
    await more.click();
    await pastRows(page, 22);
    await more.waitFor({ state: 'hidden' });
    const names = await page.locator('#past li .row-name').allTextContents();
    assert.equal(new Set(names).size, 22, 'each once');

    await search('nobody-like-this');
    await page.locator('#past-empty').waitFor();

    // Opening one replays its transcript, read only.
    await search('zoe');
    await row(page, 'past', 'Customer zoe').getByRole('button').click();
    await page.locator('#messages li', { hasText: 'Transcript line of cust-zoe' }).waitFor();
    await page.locator('#status', { hasText: 'Ended: closed by the customer (read only)' }).waitFor();
    assert.equal(await page.getByLabel('Your answer').isDisabled(), true);
    assert.equal(await page.locator('#actions').isHidden(), true);
    console.assertNone();
  } finally {
    await context.close();
    await server.kill();
  }
});

test('on a phone the list and the conversation are two views, with a back button, and nothing scrolls sideways', { timeout: 90_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const context = await browser();
  let customer;
  try {
    const { page, console } = await inbox(context, server, 'agent');
    await page.setViewportSize({ width: 375, height: 667 });
    customer = await Customer.connect(server, 'cust-with-a-rather-long-identifier-that-could-overflow');
    await customer.open({ topic: 'A topic long enough to wrap across the narrow screen of a small phone, twice over', petId: 'pet-1', orderId: 'order-2' });
    await customer.next((m) => m.type === 'agent.assigned');
    await customer.say('Averyveryverylongwordwithoutanyspacethatmustwrapinsteadofscrollingsideways');
    const list = row(page, 'conversations', 'A topic long enough');
    await list.waitFor();
    assert.equal(await page.locator('#conversation').isHidden(), true, 'the list view shows no conversation');
    await assertNoHorizontalScroll(page, 'the list view');

    await list.getByRole('button').click();
    await page.locator('#messages li', { hasText: 'Averyveryverylongword' }).waitFor();
    assert.equal(await page.locator('#lists').isHidden(), true, 'the conversation view hides the lists');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'conversation-title', 'focus goes to the conversation');
    await assertNoHorizontalScroll(page, 'the conversation view');
    await audit(page, 'the conversation view at 375 px');

    await page.getByRole('button', { name: '← Conversations' }).click();
    await list.waitFor();
    assert.equal(await page.locator('#conversation').isHidden(), true);
    assert.equal(await page.evaluate(() => document.activeElement.closest('li')?.textContent.includes('A topic long enough')), true, 'focus returns to the row');
    console.assertNone();
  } finally {
    await customer?.close();
    await context.close();
    await server.kill();
  }
});

test('attachments: a photo from the customer shows as a thumbnail, the agent sends a PDF, a refused file says why', { timeout: 90_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const context = await browser();
  let customer;
  try {
    const { page, console } = await inbox(context, server, 'agent', '127.0.0.1', /WebSocket connection|status of 415/);
    customer = await Customer.connect(server, 'cust-rash');
    await customer.open({ topic: 'A rash on Miso' });
    await customer.next((m) => m.type === 'agent.assigned');
    await row(page, 'conversations', 'Customer rash').waitFor();

    // The customer uploads a photo (made by the page's canvas) and sends it.
    const png = Buffer.from(await page.evaluate(() => {
      const canvas = Object.assign(document.createElement('canvas'), { width: 64, height: 48 });
      const g = canvas.getContext('2d');
      g.fillStyle = '#c85a00';
      g.fillRect(0, 0, 64, 48);
      return canvas.toDataURL('image/png').split(',')[1];
    }), 'base64');
    const uploaded = await fetch(`http://127.0.0.1:${server.port}/v1/conversations/${customer.conversationId}/attachments?name=rash.png`, {
      method: 'POST', body: png, headers: { Authorization: `Bearer ${customer.token}` },
    });
    assert.equal(uploaded.status, 201, await uploaded.clone().text());
    const photo = await uploaded.json();
    const clientMessageId = randomUUID();
    customer.send('chat.send', { conversationId: customer.conversationId, clientMessageId, text: '📷 rash.png', attachments: [photo.id] });
    await customer.next((m) => m.type === 'chat.ack' && m.data.clientMessageId === clientMessageId, 'the ack');
    const thumb = page.locator('#messages li button.thumb img[alt="rash.png"]');
    await page.waitForFunction(() => document.querySelector('#messages li button.thumb img')?.src.startsWith('blob:'));
    assert.equal(await thumb.evaluate((img) => img.complete && img.naturalWidth > 0), true, 'the thumbnail is a picture');
    await page.getByRole('button', { name: 'Open photo rash.png' }).waitFor();

    // A file that is neither a photo nor a PDF is refused, and the page says why.
    await page.locator('#attach-input').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('just text') });
    await page.locator('#pending-files li', { hasText: 'notes.txt (not uploaded: only photos' }).waitFor();
    await page.getByRole('button', { name: 'Remove notes.txt' }).click();
    await page.locator('#pending-files').waitFor({ state: 'hidden' });

    // The agent attaches a PDF and sends it with a caption.
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n');
    await page.locator('#attach-input').setInputFiles({ name: 'receipt.pdf', mimeType: 'application/pdf', buffer: pdf });
    await page.locator('#pending-files li', { hasText: 'receipt.pdf (ready)' }).waitFor();
    await page.getByLabel('Your answer').fill('Here is your receipt');
    await page.getByLabel('Your answer').press('Enter');
    const message = await customer.next((m) => m.type === 'chat.message' && m.data.attachments, "the agent's file");
    assert.equal(message.data.text, 'Here is your receipt');
    assert.equal(message.data.attachments.length, 1);
    assert.equal(message.data.attachments[0].name, 'receipt.pdf');
    assert.equal(message.data.attachments[0].contentType, 'application/pdf');
    await page.locator('#messages li.mine button.file', { hasText: 'receipt.pdf' }).waitFor();
    await audit(page, 'a conversation with attachments');
    console.assertNone();
  } finally {
    await customer?.close();
    await context.close();
    await server.kill();
  }
});
