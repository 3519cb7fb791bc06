// The customer widget (on the demo shop page, /) and the agent console, end to
// end, in headless Chromium: a conversation with typing and read ticks, a
// server restart in the middle (a message typed offline goes out after it),
// screenshots, no console errors. The widget's elements are in its open shadow
// root, which Playwright's locators pierce.
// Run by scripts/browser.sh, which builds the package and sets PETCHAT_SERVER.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Server, freePort, root } from './server.mjs';

const artifacts = join(root, 'target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });

/**
 * Chromium with a fresh profile, the agent console and the customer page open
 * and chatting. Every WebSocket goes through `gate`: while `gate.blocked`, new
 * ones are refused with 1013, as when the chat service is unreachable.
 */
async function chatPages(server) {
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'petchat-profile-')), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const gate = { blocked: false };
  await context.routeWebSocket(/\/v1\/ws\/chat/, (ws) => {
    if (gate.blocked) ws.close({ code: 1013, reason: 'unreachable' });
    else ws.connectToServer();
  });
  const errors = [];
  const watch = (page, name) => {
    // Connections refused while the server restarts are expected; an HTTP
    // error status (a 404 for /favicon.ico, say) is not.
    page.on('console', (m) => { if (m.type() === 'error' && !/WebSocket connection|net::ERR_/.test(m.text())) errors.push(`${name}: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    return page;
  };
  const agent = watch(await context.newPage(), 'agent');
  await agent.goto(`http://127.0.0.1:${server.port}/agent`);
  await agent.locator('#available').waitFor();
  await agent.waitForFunction(() => document.getElementById('available').checked);
  const customer = watch(await context.newPage(), 'customer');
  await customer.goto(`http://127.0.0.1:${server.port}/`);
  await openWidget(customer);
  await customer.getByText(/You're chatting with/).waitFor();
  return { context, gate, agent, customer, errors };
}

/** Opens the chat widget of the demo shop page with its launcher. */
async function openWidget(page) {
  await page.getByRole('button', { name: /Chat with us/ }).click();
  await page.locator('#panel').waitFor();
}

test('a customer and an agent chat in the browser, across a server restart', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const { context, agent, customer, errors } = await chatPages(server);
  try {
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
    await server.kill();
    await customer.locator('#banner', { hasText: 'reconnecting in' }).waitFor();
    await customer.getByLabel('Your message').fill('Since yesterday morning');
    await customer.getByLabel('Your message').press('Enter');
    await customer.locator('#messages li.pending', { hasText: 'Since yesterday morning' }).waitFor();
    await customer.screenshot({ path: join(artifacts, 'customer-offline.png') });
    await server.start();
    await customer.locator('#messages li.mine:not(.pending)', { hasText: 'Since yesterday morning' }).waitFor({ timeout: 60_000 });
    await agent.locator('#messages li', { hasText: 'Since yesterday morning' }).waitFor({ timeout: 60_000 });
    const texts = await agent.locator('#messages li').allTextContents();
    assert.equal(texts.filter((t) => t.includes('Since yesterday morning')).length, 1, 'delivered once');

    await customer.screenshot({ path: join(artifacts, 'customer.png') });
    await agent.screenshot({ path: join(artifacts, 'agent.png') });
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});

test('a message typed offline survives a reload of the page and is sent once', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const { context, gate, agent, customer, errors } = await chatPages(server);
  try {
    // The chat service becomes unreachable: the server restarts and new sockets are refused.
    gate.blocked = true;
    await server.kill();
    await server.start();
    await customer.locator('#banner', { hasText: 'reconnecting in' }).waitFor();
    await customer.getByLabel('Your message').fill('Is Miso allowed tuna?');
    await customer.getByLabel('Your message').press('Enter');
    await customer.locator('#messages li.pending', { hasText: 'Is Miso allowed tuna?' }).waitFor();

    // The customer reloads while still offline: the widget opens again, and the
    // message is still there, pending.
    await customer.reload();
    await customer.locator('#messages li.pending', { hasText: 'Is Miso allowed tuna?' }).waitFor();
    await customer.locator('#banner', { hasText: 'reconnecting in' }).waitFor();
    await customer.screenshot({ path: join(artifacts, 'customer-reloaded-offline.png') });

    gate.blocked = false;
    await customer.locator('#messages li.mine:not(.pending)', { hasText: 'Is Miso allowed tuna?' }).waitFor({ timeout: 60_000 });
    await agent.locator('#messages li', { hasText: 'Is Miso allowed tuna?' }).waitFor({ timeout: 60_000 });
    await customer.waitForTimeout(500);
    const texts = await agent.locator('#messages li').allTextContents();
    assert.equal(texts.filter((t) => t.includes('Is Miso allowed tuna?')).length, 1, 'delivered once');
    const mine = await customer.locator('#messages li.mine').allTextContents();
    assert.equal(mine.filter((t) => t.includes('Is Miso allowed tuna?')).length, 1, 'shown once after the reload');
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});

test('the agent console counts unread messages per conversation', { timeout: 120_000 }, async () => {
  const server = new Server(await freePort());
  await server.start();
  const { context, agent, errors } = await chatPages(server);
  try {
    // A second customer: another origin (localhost) has its own storage, so another dev user.
    const other = await context.newPage();
    other.on('pageerror', (e) => errors.push(`other: ${e.message}`));
    await other.goto(`http://localhost:${server.port}/`);
    await openWidget(other);
    await other.getByText(/You're chatting with/).waitFor();
    await agent.locator('#conversations li').nth(1).waitFor();

    await other.getByLabel('Your message').fill('Do you sell hamster wheels?');
    await other.getByLabel('Your message').press('Enter');
    await other.getByLabel('Your message').fill('The quiet kind');
    await other.getByLabel('Your message').press('Enter');
    const badge = agent.getByLabel('2 unread');
    await badge.waitFor();
    await agent.screenshot({ path: join(artifacts, 'agent-unread.png') });

    // Opening the conversation reads it: the badge goes, the customer sees read ticks.
    await agent.locator('#conversations button', { has: badge }).click();
    await agent.locator('#messages li', { hasText: 'The quiet kind' }).waitFor();
    await badge.waitFor({ state: 'detached' });
    await other.locator('#messages li.mine .ticks[data-state="read"]', { hasText: 'read' }).nth(1).waitFor();
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
    await server.kill();
  }
});
