// The customer widget (/widget.js) end to end, in headless Chromium against
// the real server: embedded by a shop page of ANOTHER origin (a tiny shop
// server on 127.0.0.2, the chat host on 127.0.0.1), with agents driven by
// plain WebSocket clients in Node. A conversation with typing, read ticks, a
// transfer, a resolve and a close by the customer; the away rule; the
// transcript after a reload; the mobile layout; the demo page; the size budget.
// Run by scripts/browser.sh, which builds the package and sets PETCHAT_SERVER.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, constants } from 'node:zlib';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { Server, freePort, root } from './server.mjs';
import { assertNoHorizontalScroll, audit, screenshots, watchConsole } from './quality.mjs';

/**
 * The widget's size budget (docs/browser.md, "Size"): what a shop page
 * downloads for the chat, gzipped at level 9 as `cargo xtask web` writes it.
 */
const BUDGET = { widget: 16_000, total: 200_000 };

async function browser() {
  return chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'petchat-profile-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A shop on another origin (127.0.0.2): its product page embeds the widget
 * from the chat host with one script tag, and its backend hands the signed-in
 * shopper (a cookie) a chat token at `/token`, minted here by the chat
 * server's --dev endpoint as a real shop's backend would sign one.
 */
async function shop(chat) {
  const port = await freePort();
  const page = `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"><title>Kibble — a test shop</title>
<style>html { font-size: 10px; } body { font: 30px serif; color: #f00; margin: 0; padding: 1rem; } * { all: revert; } div { color: #f00 !important; font-size: 30px !important; } button { background: red !important; font-size: 40px !important; }</style>
</head><body><main><h1>Salmon kibble</h1><p>A shop page whose CSS is hostile to everything it contains.</p></main>
<script src="http://127.0.0.1:${chat.port}/widget.js" data-token-url="/token" data-topic="Cat food" data-pet-id="miso" async></script>
</body></html>`;
  const server = http.createServer(async (request, response) => {
    const url = new URL(request.url, 'http://shop');
    const user = /(?:^|; )user=([\w-]+)/.exec(request.headers.cookie ?? '')?.[1];
    if (url.pathname === '/token') {
      if (!user) { response.writeHead(401); response.end(); return; }
      const token = await fetch(`http://127.0.0.1:${chat.port}/dev/token?role=customer&sub=${user}`);
      response.writeHead(token.status, { 'Content-Type': 'text/plain' });
      response.end(await token.text());
    } else if (url.pathname === '/') {
      const headers = { 'Content-Type': 'text/html; charset=utf-8' };
      if (!user) headers['Set-Cookie'] = `user=shopper-${Math.random().toString(36).slice(2, 8)}; Path=/; SameSite=Lax`;
      response.writeHead(200, headers);
      response.end(page);
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.2', resolve));
  return { url: `http://127.0.0.2:${port}/`, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** An agent on a plain WebSocket, which records every server message. */
class Agent {
  static async connect(chat, sub, { available = true } = {}) {
    const token = await (await fetch(`http://127.0.0.1:${chat.port}/dev/token?role=agent&sub=${sub}`)).text();
    const agent = new Agent();
    agent.base = `http://127.0.0.1:${chat.port}`;
    agent.token = token;
    agent.ws = new WebSocket(`ws://127.0.0.1:${chat.port}/v1/ws/chat`, ['petchat.v1', `bearer.${token}`]);
    agent.ws.on('message', (raw) => {
      const message = JSON.parse(String(raw));
      agent.received.push(message);
      for (const waiter of [...agent.waiters]) if (waiter.match(message)) { agent.waiters.delete(waiter); waiter.resolve(message); }
    });
    await agent.next('session.ready');
    if (available) { agent.send('agent.status', { available: true }); await agent.next('agent.status'); }
    return agent;
  }

  constructor() { this.received = []; this.waiters = new Set(); }
  send(type, data) { this.ws.send(JSON.stringify({ type, data })); }
  say(conversationId, text) { this.send('chat.send', { conversationId, clientMessageId: crypto.randomUUID(), text }); }

  /**
   * The first message of `type` matching `where`, already received or still to
   * come (`past: false`: only from now on).
   */
  next(type, where = () => true, { past = true, timeout = 20_000 } = {}) {
    const match = (m) => m.type === type && where(m.data);
    if (past) { const seen = this.received.find(match); if (seen) return Promise.resolve(seen); }
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve };
      this.waiters.add(waiter);
      setTimeout(() => { if (this.waiters.delete(waiter)) reject(new Error(`agent: no ${type} within ${timeout} ms`)); }, timeout);
    });
  }

  /** Uploads `body` as `name` to the conversation; the attachment, or the refusal's status. */
  async upload(conversationId, name, body) {
    const response = await fetch(`${this.base}/v1/conversations/${conversationId}/attachments?name=${encodeURIComponent(name)}`,
      { method: 'POST', headers: { authorization: `Bearer ${this.token}` }, body });
    return response.ok ? response.json() : { status: response.status };
  }

  /** An attachment's thumbnail (`thumbnail`) or file, as the agent may fetch it. */
  async fetchAttachment(conversationId, id, thumbnail = false) {
    return fetch(`${this.base}/v1/conversations/${conversationId}/attachments/${id}${thumbnail ? '/thumbnail' : ''}`,
      { headers: { authorization: `Bearer ${this.token}` } });
  }

  close() { this.ws.close(1000); }
}

/** The widget's panel, once its launcher is clicked. */
async function openWidget(page) {
  await page.getByRole('button', { name: /Chat with us/ }).click();
  await page.locator('#panel').waitFor();
}

test('a conversation through the widget on a shop page of another origin: transfer, resolve, a new one, closed by the customer', { timeout: 180_000 }, async () => {
  const chat = new Server(await freePort());
  await chat.start();
  const store = await shop(chat);
  const context = await browser();
  const agents = [];
  try {
    const first = await Agent.connect(chat, 'agent-ann');
    agents.push(first);
    const page = await context.newPage();
    const errors = watchConsole(page, 'shop');
    await page.goto(store.url);
    // The shop's hostile CSS does not reach into the widget.
    const launcherColor = await page.locator('#launcher').evaluate((b) => getComputedStyle(b).backgroundColor);
    assert.notEqual(launcherColor, 'rgb(255, 0, 0)', 'the shop CSS leaked into the widget');
    await openWidget(page);
    const status = await page.locator('#status').evaluate((p) => ({ color: getComputedStyle(p).color, size: getComputedStyle(p).fontSize }));
    assert.notEqual(status.color, 'rgb(255, 0, 0)', 'the shop page colour is inherited');
    assert.equal(status.size, '13.5px', 'the widget keeps its own font size, whatever the shop sets on html and body');
    const assigned = await first.next('agent.assigned', () => true);
    const conversationId = assigned.data.conversationId;
    await page.getByText(/You're chatting with Agent ann/).waitFor();
    // The shop's context went with the conversation.
    first.send('conversation.list', {});
    const listed = await first.next('conversation.listed', () => true, { past: false });
    const mine = listed.data.conversations.find((c) => c.conversation.id === conversationId).conversation;
    assert.equal(mine.topic, 'Cat food');
    assert.equal(mine.petId, 'miso');
    // The text box has the focus once the panel opens.
    assert.equal(await page.evaluate(() => document.getElementById('petchat-widget').shadowRoot.activeElement?.id), 'text');

    await page.getByLabel('Your message').fill('My cat Miso stopped eating');
    await page.getByLabel('Your message').press('Enter');
    const message = await first.next('chat.message', (d) => d.text === 'My cat Miso stopped eating');
    await page.locator('#messages li.mine .ticks[data-state="sent"], #messages li.mine .ticks[data-state="delivered"]').first().waitFor();
    first.send('message.read', { conversationId, upToSeq: message.data.seq });
    await page.locator('#messages li.mine .ticks[data-state="read"]').waitFor();
    first.send('typing.start', { conversationId });
    await page.locator('#typing', { hasText: 'Agent ann is typing' }).waitFor();
    first.say(conversationId, 'Since when has Miso not eaten?');
    await page.locator('#messages li', { hasText: 'Since when has Miso not eaten?' }).waitFor();
    await page.locator('#typing').waitFor({ state: 'hidden' });
    // Timestamps: every message shows the time it was stored.
    assert.equal(await page.locator('#messages li time').count(), 2);
    // The customer's page is visible with the panel open: the agent gets the read receipt.
    await first.next('message.read', (d) => d.conversationId === conversationId);
    await screenshots(page, 'widget-open');
    await audit(page, 'widget open');

    // A transfer back to the queue: no other agent yet, so the customer waits, told why.
    first.send('conversation.transfer', { conversationId });
    await page.getByText(/You are being transferred to another agent/).waitFor();
    const second = await Agent.connect(chat, 'agent-bob');
    agents.push(second);
    await second.next('agent.assigned', (d) => d.conversationId === conversationId);
    await page.getByText(/You're chatting with Agent bob/).waitFor();

    // Bob resolves it: the ended state says so and offers a new conversation.
    second.send('conversation.resolve', { conversationId });
    await page.getByText('Agent bob marked your question as resolved.').waitFor();
    assert.equal(await page.getByLabel('Your message').isDisabled(), true, 'nothing can be written to an ended conversation');
    await screenshots(page, 'widget-ended');
    await page.getByRole('button', { name: 'Start a new conversation' }).click();
    await page.getByText(/You're chatting with Agent (ann|bob)/).waitFor();
    await page.locator('#messages li').first().waitFor({ state: 'detached' });
    const name = /Agent (ann|bob)/.exec(await page.locator('#status').textContent())[1];
    const now = name === 'ann' ? first : second;

    // The customer ends the new one; the agent hears it; the widget says so.
    await page.getByLabel('Your message').fill('Thanks, that was all');
    await page.getByLabel('Your message').press('Enter');
    await page.locator('#messages li.mine:not(.pending)', { hasText: 'Thanks, that was all' }).waitFor();
    await page.getByRole('button', { name: 'End chat' }).click();
    await page.getByText('You ended this conversation.').waitFor();
    const closed = await now.next('conversation.closed', (d) => d.conversationId !== conversationId);
    assert.equal(closed.data.reason, 'closed');
    assert.match(closed.data.by, /^shopper-/);
    // Escape minimizes the panel and gives the focus back to the launcher.
    await page.keyboard.press('Escape');
    await page.locator('#panel').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => document.getElementById('petchat-widget').shadowRoot.activeElement?.id), 'launcher');
    errors.assertNone();
  } finally {
    for (const agent of agents) agent.close();
    await context.close();
    await store.close();
    await chat.kill();
  }
});

test('the transcript after a reload, the mobile layout and the agent ending the chat', { timeout: 120_000 }, async () => {
  const chat = new Server(await freePort());
  await chat.start();
  const store = await shop(chat);
  const context = await browser();
  const agent = await Agent.connect(chat, 'agent-cat');
  try {
    const page = await context.newPage();
    const errors = watchConsole(page, 'shop');
    await page.setViewportSize({ width: 375, height: 667 });
    await page.goto(store.url);
    await assertNoHorizontalScroll(page, 'shop page with the launcher at 375x667');
    await openWidget(page);
    const { data: { conversationId } } = await agent.next('agent.assigned', () => true);
    // The panel fills the small screen and nothing scrolls sideways.
    const box = await page.locator('#panel').boundingBox();
    assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, 375, 667], 'the panel fills the screen');
    // The page behind is covered: Tab goes round inside the panel.
    const focused = () => page.evaluate(() => document.getElementById('petchat-widget').shadowRoot.activeElement?.textContent.trim());
    await page.getByRole('button', { name: 'End chat' }).focus();
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'Send');
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'End chat');
    await page.getByLabel('Your message').fill(`A long word: ${'x'.repeat(120)} and a link https://example.com/${'a'.repeat(80)}`);
    await page.getByLabel('Your message').press('Enter');
    await agent.next('chat.message', (d) => d.text.startsWith('A long word'));
    agent.say(conversationId, 'Got it, thanks');
    await page.locator('#messages li', { hasText: 'Got it, thanks' }).waitFor();
    await assertNoHorizontalScroll(page, 'widget open at 375x667');
    // Minimized, a reply is counted on the launcher; opening the panel reads it.
    await page.getByRole('button', { name: 'Minimize chat' }).click();
    agent.say(conversationId, 'Are you still there?');
    await page.getByRole('button', { name: 'Chat with us, 1 unread' }).click();
    await page.locator('#messages li', { hasText: 'Are you still there?' }).waitFor();
    const asked = await agent.next('chat.ack', () => true);
    await agent.next('message.read', (d) => d.upToSeq >= asked.data.seq);
    assert.equal(await page.locator('#launcher').getAttribute('aria-label'), 'Chat with us', 'the badge is gone');
    const overflow = await page.locator('#messages').evaluate((list) => list.scrollWidth - list.clientWidth);
    assert.ok(overflow <= 0, `the conversation scrolls sideways by ${overflow} px`);
    await audit(page, 'widget at 375x667');

    // A reload: the panel opens again and shows the conversation so far.
    await page.reload();
    await page.locator('#messages li', { hasText: 'Got it, thanks' }).waitFor();
    await page.locator('#messages li.mine', { hasText: 'A long word' }).waitFor();
    await page.getByText(/You're chatting with Agent cat/).waitFor();

    // The agent ends it; after another reload the ended transcript is still there.
    agent.send('conversation.close', { conversationId });
    await page.getByText('Agent cat ended this conversation.').waitFor();
    await page.reload();
    await page.getByText('ended this conversation.').waitFor();
    await page.locator('#messages li', { hasText: 'Got it, thanks' }).waitFor();
    await page.getByRole('button', { name: 'Start a new conversation' }).waitFor();
    errors.assertNone();
  } finally {
    agent.close();
    await context.close();
    await store.close();
    await chat.kill();
  }
});

test('a customer who closes the tab is away: the agent is told, and the widget shows the ended transcript on return', { timeout: 120_000 }, async () => {
  const chat = new Server(await freePort(), ['--customer-away-ms', '1500']);
  await chat.start();
  const store = await shop(chat);
  const context = await browser();
  const agent = await Agent.connect(chat, 'agent-dan', { available: false });
  try {
    let page = await context.newPage();
    let errors = watchConsole(page, 'shop');
    await page.goto(store.url);
    await openWidget(page);
    // No agent available yet: the queue position and the wait.
    await page.getByText(/Waiting for an agent, position 1 \(waiting \d+ s\)/).waitFor();
    agent.send('agent.status', { available: true });
    const { data: { conversationId } } = await agent.next('agent.assigned', () => true);
    await page.getByLabel('Your message').fill('Do you deliver on Sundays?');
    await page.getByLabel('Your message').press('Enter');
    await agent.next('chat.message', (d) => d.text === 'Do you deliver on Sundays?');
    errors.assertNone();
    await page.close();
    const closed = await agent.next('conversation.closed', (d) => d.conversationId === conversationId);
    assert.equal(closed.data.reason, 'customer_away');
    assert.equal(closed.data.by, 'system');

    page = await context.newPage();
    // The disguised file below is refused (415): the browser logs it as a failed load.
    errors = watchConsole(page, 'shop, again', /WebSocket connection|net::ERR_|Failed to load resource/);
    await page.goto(store.url);
    await openWidget(page);
    await page.getByText('This conversation was closed because you were away.').waitFor();
    await page.locator('#messages li.mine', { hasText: 'Do you deliver on Sundays?' }).waitFor();
    await screenshots(page, 'widget-away');
    await page.getByRole('button', { name: 'Start a new conversation' }).click();
    await page.getByText(/You're chatting with Agent dan/).waitFor();
    // An upload from this other origin passes the CORS preflight: a receipt as a PDF is sent
    // and reaches the agent; a program named like a PDF is refused by its content.
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n');
    await page.locator('#file').setInputFiles({ name: 'invoice.pdf', mimeType: 'application/pdf', buffer: pdf });
    await page.locator('.chip.ready', { hasText: 'invoice.pdf' }).waitFor();
    await page.getByRole('button', { name: 'Send' }).click();
    const withPdf = await agent.next('chat.message', (d) => d.attachments?.length > 0);
    assert.deepEqual(withPdf.data.attachments.map((a) => [a.name, a.contentType, a.size]), [['invoice.pdf', 'application/pdf', pdf.length]]);
    await page.locator('#messages li.mine button.file', { hasText: 'invoice.pdf' }).waitFor();
    const file = await agent.fetchAttachment(withPdf.data.conversationId, withPdf.data.attachments[0].id);
    assert.deepEqual(Buffer.from(await file.arrayBuffer()), pdf, 'the agent gets the bytes the customer sent');
    const program = Buffer.concat([Buffer.from('MZ'), Buffer.alloc(64)]);
    await page.locator('#file').setInputFiles({ name: 'receipt.pdf', mimeType: 'application/pdf', buffer: program });
    await page.locator('.chip.refused', { hasText: 'receipt.pdf: not a photo or a PDF' }).waitFor();
    errors.assertNone();
  } finally {
    agent.close();
    await context.close();
    await store.close();
    await chat.kill();
  }
});

test('a message typed offline into a conversation the agent ends meanwhile is shown as not sent', { timeout: 120_000 }, async () => {
  const chat = new Server(await freePort());
  await chat.start();
  const store = await shop(chat);
  const context = await browser();
  // Every WebSocket of the page goes through the gate: while blocked, the chat host is unreachable.
  const gate = { blocked: false };
  await context.routeWebSocket(/\/v1\/ws\/chat/, (ws) => {
    if (gate.blocked) ws.close({ code: 1013, reason: 'unreachable' });
    else ws.connectToServer();
  });
  let agent = await Agent.connect(chat, 'agent-fay');
  try {
    const page = await context.newPage();
    const errors = watchConsole(page, 'shop');
    await page.goto(store.url);
    await openWidget(page);
    const { data: { conversationId } } = await agent.next('agent.assigned');
    await page.getByText(/You're chatting with Agent fay/).waitFor();
    // The chat host restarts and stays unreachable for the page; the agent ends the conversation.
    gate.blocked = true;
    agent.close();
    await chat.kill();
    await chat.start();
    await page.locator('#banner', { hasText: 'reconnecting in' }).waitFor();
    await page.getByLabel('Your message').fill('Is the kibble grain-free?');
    await page.getByLabel('Your message').press('Enter');
    await page.locator('#messages li.pending', { hasText: 'Is the kibble grain-free?' }).waitFor();
    agent = await Agent.connect(chat, 'agent-fay');
    agent.send('conversation.close', { conversationId });
    await agent.next('conversation.closed', (d) => d.conversationId === conversationId);
    gate.blocked = false;
    // Back online: the conversation is ended, and the message says it was not sent.
    await page.getByText('Agent fay ended this conversation.').waitFor({ timeout: 60_000 });
    await page.locator('#messages li.failed .ticks[data-state="failed"]', { hasText: 'not sent' }).waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Start a new conversation' }).waitFor();
    await audit(page, 'widget with a message not sent');
    errors.assertNone();
  } finally {
    agent.close();
    await context.close();
    await store.close();
    await chat.kill();
  }
});

test('the demo shop page embeds the widget; a photo and a PDF go both ways, a disguised file is refused', { timeout: 120_000 }, async () => {
  const chat = new Server(await freePort());
  await chat.start();
  const context = await browser();
  const agent = await Agent.connect(chat, 'agent-eve');
  try {
    const page = await context.newPage();
    // The upload's refusal is logged by the browser as a failed resource load.
    const errors = watchConsole(page, 'demo', /WebSocket connection|net::ERR_|Failed to load resource/);
    await page.goto(`http://127.0.0.1:${chat.port}/`);
    await page.getByRole('heading', { name: /Salmon & Rice Kibble/ }).waitFor();
    await screenshots(page, 'demo');
    // The page's API: open with a context of its own, close, and whether it is open.
    await page.evaluate(() => window.PetchatWidget.open({ topic: 'Is it grain-free?', petId: 'rex', orderId: '77' }));
    await page.getByText(/You're chatting with Agent eve/).waitFor();
    const { data: { conversationId } } = await agent.next('agent.assigned');
    agent.send('conversation.list', {});
    const listed = await agent.next('conversation.listed', () => true, { past: false });
    const opened = listed.data.conversations.find((c) => c.conversation.id === conversationId).conversation;
    assert.deepEqual([opened.topic, opened.petId, opened.orderId], ['Is it grain-free?', 'rex', '77']);
    assert.equal(await page.evaluate(() => window.PetchatWidget.isOpen), true);
    await page.evaluate(() => window.PetchatWidget.close());
    await page.locator('#panel').waitFor({ state: 'hidden' });
    await openWidget(page);
    await screenshots(page, 'demo-widget');
    // A photo of the rash goes out as a thumbnail on both sides; the agent answers with a PDF.
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
    await page.locator('#file').setInputFiles({ name: 'miso.png', mimeType: 'image/png', buffer: png });
    await page.locator('.chip.ready', { hasText: 'miso.png' }).waitFor();
    await page.getByLabel('Your message').fill('This is the rash');
    await page.getByRole('button', { name: 'Send' }).click();
    const photo = await agent.next('chat.message', (d) => d.attachments?.length > 0);
    assert.equal(photo.data.text, 'This is the rash');
    assert.deepEqual(photo.data.attachments.map((a) => [a.name, a.contentType, a.width, a.height]), [['miso.png', 'image/png', 1, 1]]);
    const thumbnail = await agent.fetchAttachment(conversationId, photo.data.attachments[0].id, true);
    assert.equal(thumbnail.headers.get('content-type'), 'image/jpeg', 'the agent side gets a thumbnail');
    await page.locator('#messages li.mine img[alt="miso.png"][src^="blob:"]').waitFor();
    const pdf = Buffer.from('%PDF-1.4\n%%EOF\n');
    const uploaded = await agent.upload(conversationId, 'care-plan.pdf', pdf);
    assert.equal(uploaded.contentType, 'application/pdf', JSON.stringify(uploaded));
    agent.send('chat.send', { conversationId, clientMessageId: crypto.randomUUID(), text: 'Here is the care plan', attachments: [uploaded.id] });
    await page.locator('#messages li button.file', { hasText: 'care-plan.pdf' }).waitFor();
    // A text file named like a photo is refused by its content; the widget says so and sends nothing.
    await page.locator('#file').setInputFiles({ name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not a picture at all') });
    await page.locator('.chip.refused', { hasText: 'notes.png: not a photo or a PDF' }).waitFor();
    await audit(page, 'demo with a refused file');
    await page.getByRole('button', { name: 'Remove notes.png' }).click();
    await page.locator('.chip').waitFor({ state: 'detached' });
    errors.assertNone();
  } finally {
    agent.close();
    await context.close();
    await chat.kill();
  }
});

test('the widget and the wasm package stay within their gzipped size budget', () => {
  const gzipped = (file) => gzipSync(readFileSync(join(root, 'target/web', file)), { level: constants.Z_BEST_COMPRESSION }).length;
  const widget = gzipped('widget.js');
  const total = widget + gzipped('pkg/petchat_web.js') + gzipped('pkg/petchat_web_bg.wasm');
  process.stdout.write(`# widget.js ${widget} bytes gzipped; with the package ${total} bytes\n`);
  assert.ok(widget <= BUDGET.widget, `widget.js is ${widget} bytes gzipped, over its budget of ${BUDGET.widget}`);
  assert.ok(total <= BUDGET.total, `the widget and the package are ${total} bytes gzipped, over the budget of ${BUDGET.total}`);
});
