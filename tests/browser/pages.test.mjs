// The customer page and the agent console, end to end, in headless Chromium:
// a conversation with typing and read ticks, a server restart in the middle
// (a message typed offline goes out after it), screenshots, no console errors.
// Run by scripts/browser.sh, which builds the package and sets PETCHAT_SERVER.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { chromium } from 'playwright-core';

const root = new URL('../../', import.meta.url).pathname;
const artifacts = join(root, 'target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });
const dataDir = mkdtempSync(join(tmpdir(), 'petchat-browser-'));

async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)); });
  });
}

function startServer(port) {
  const child = spawn(process.env.PETCHAT_SERVER, ['--dev', '--bind', `127.0.0.1:${port}`,
    '--database-url', `sqlite://${dataDir}/browser.db`, '--web-dir', join(root, 'target/web'),
    '--agent-grace-ms', '600000'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
  return child;
}

async function waitListening(port) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => { const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); }); s.on('error', () => resolve(false)); });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the server did not listen');
}

test('a customer and an agent chat in the browser, across a server restart', { timeout: 120_000 }, async () => {
  const port = await freePort();
  let server = startServer(port);
  await waitListening(port);
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'petchat-profile-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const errors = [];
  const watch = (page, name) => {
    page.on('console', (m) => { if (m.type() === 'error' && !/WebSocket connection|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) errors.push(`${name}: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    return page;
  };
  try {
    const agent = watch(await context.newPage(), 'agent');
    await agent.goto(`http://127.0.0.1:${port}/agent`);
    await agent.locator('#available').waitFor();
    await agent.waitForFunction(() => document.getElementById('available').checked);

    const customer = watch(await context.newPage(), 'customer');
    await customer.goto(`http://127.0.0.1:${port}/`);
    await customer.getByText(/You're chatting with/).waitFor();

    await customer.getByLabel('Your message').fill('My cat Miso stopped eating');
    await customer.getByLabel('Your message').press('Enter');
    await agent.locator('#messages li', { hasText: 'My cat Miso stopped eating' }).waitFor();

    // The agent types: the customer sees it; the agent answers.
    await agent.bringToFront();
    await agent.getByLabel('Your answer').pressSequentially('Since when', { delay: 20 });
    await customer.locator('#typing', { hasText: 'is typing' }).waitFor();
    await agent.getByLabel('Your answer').fill('Since when has Miso not eaten?');
    await agent.getByLabel('Your answer').press('Enter');
    await customer.locator('#messages li', { hasText: 'Since when has Miso not eaten?' }).waitFor();
    // The agent's page is visible and has read the customer's message: read ticks.
    await customer.locator('#messages li.mine .ticks[data-state="read"]').first().waitFor();

    // The server restarts mid-conversation; the customer types while it is down.
    server.kill('SIGKILL');
    await customer.locator('#banner', { hasText: 'reconnecting in' }).waitFor();
    await customer.getByLabel('Your message').fill('Since yesterday morning');
    await customer.getByLabel('Your message').press('Enter');
    await customer.locator('#messages li.pending', { hasText: 'Since yesterday morning' }).waitFor();
    await customer.screenshot({ path: join(artifacts, 'customer-offline.png') });
    server = startServer(port);
    await waitListening(port);
    await customer.locator('#messages li.mine:not(.pending)', { hasText: 'Since yesterday morning' }).waitFor({ timeout: 60_000 });
    await agent.locator('#messages li', { hasText: 'Since yesterday morning' }).waitFor({ timeout: 60_000 });
    const texts = await agent.locator('#messages li').allTextContents();
    assert.equal(texts.filter((t) => t.includes('Since yesterday morning')).length, 1, 'delivered once');

    await customer.screenshot({ path: join(artifacts, 'customer.png') });
    await agent.screenshot({ path: join(artifacts, 'agent.png') });
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
    server.kill('SIGKILL');
  }
});
