// Runs the wasm-bindgen-test suite of the browser client (crates/web/tests/browser.rs)
// in headless Chromium against a real server. This file is its harness: it
// starts the server and a small HTTP control endpoint the tests call (with
// CORS, since the test page has another origin) to mint tokens, and to stop,
// start and restart the server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import { Server, freePort, root } from './server.mjs';

const secret = randomBytes(32).toString('hex');

/** An HS256 JWT with the claims petchat reads; `ttl` in seconds may be negative. */
function mint({ role, sub, ttl = 3600, key = secret }) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ sub, role, name: sub, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

test('the browser client API, in Chromium, against a real server', { timeout: 600_000 }, async () => {
  // A short token leeway, so that an unrefreshed short-lived token closes within the test.
  const server = new Server(await freePort(), ['--jwt-secret', secret, '--token-leeway-ms', '500']);
  await server.start();
  const routes = {
    '/config': () => ({ url: `ws://127.0.0.1:${server.port}/v1/ws/chat` }),
    '/token': (q) => mint({ role: q.get('role'), sub: q.get('sub'), ttl: Number(q.get('ttl') ?? 3600), key: q.get('secret') ?? secret }),
    '/stop': async () => { await server.kill(); return 'stopped'; },
    '/start': async () => { await server.start(); return 'started'; },
    '/restart': async () => { await server.kill(); await server.start(); return 'restarted'; },
    // Uploads a small PDF as customer `sub` to `conversation` (the test page, on another
    // origin, cannot: the attachment endpoints send no CORS headers); answers the attachment.
    '/upload': async (q) => {
      const url = `http://127.0.0.1:${server.port}/v1/conversations/${q.get('conversation')}/attachments?name=receipt.pdf`;
      const pdf = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n');
      const headers = { Authorization: `Bearer ${mint({ role: 'customer', sub: q.get('sub') })}` };
      const response = await fetch(url, { method: 'POST', body: pdf, headers });
      assert.equal(response.status, 201, 'the upload is stored');
      return response.json();
    },
  };
  const control = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://harness');
    const route = routes[url.pathname];
    res.setHeader('Access-Control-Allow-Origin', '*');
    if (!route) { res.writeHead(404).end(); return; }
    try {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(await route(url.searchParams)));
    } catch (error) {
      res.writeHead(500).end(String(error));
    }
  });
  await new Promise((resolve) => control.listen(0, '127.0.0.1', resolve));
  try {
    const cargo = spawn('cargo', ['test', '--locked', '--package', 'petchat-web',
      '--target', 'wasm32-unknown-unknown', '--test', 'browser', '--', '--nocapture'], {
      cwd: root,
      stdio: 'inherit',
      env: {
        ...process.env,
        PETCHAT_HARNESS: `http://127.0.0.1:${control.address().port}`,
        CHROMEDRIVER: process.env.CHROMEDRIVER ?? '/usr/bin/chromedriver',
        WASM_BINDGEN_TEST_TIMEOUT: '300',
      },
    });
    const code = await new Promise((resolve) => cargo.on('exit', resolve));
    assert.equal(code, 0, 'the wasm-bindgen-test suite passes');
  } finally {
    control.close();
    await server.kill();
  }
});
