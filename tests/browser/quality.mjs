// What every page must pass, for every browser test that opens one: an
// accessibility audit by axe-core (no serious or critical violation), no
// console error, and screenshots at the two sizes the docs show, light and
// dark, in target/browser-artifacts (docs/browser.md embeds them).
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { root } from './server.mjs';

export const artifacts = join(root, 'target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** The sizes of the screenshots: a laptop and a small phone. */
export const VIEWPORTS = [
  { width: 1280, height: 800 },
  { width: 375, height: 667 },
];

/**
 * Runs axe-core on the page (its shadow roots included) and fails with every
 * serious or critical violation, each with the elements it found. `label`
 * names the page in the message.
 */
export async function audit(page, label) {
  await page.evaluate(axeSource);
  const results = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ['violations'] }));
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const described = bad.map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
  assert.deepEqual(described, [], `${label}: accessibility violations`);
  return results;
}

/**
 * Screenshots of the page at every viewport, light and dark
 * (`prefers-color-scheme`), as `NAME-WIDTHxHEIGHT-SCHEME.png`; each is
 * audited too, since a layout or a colour scheme can break what another passed.
 * Leaves the page at its first viewport, light.
 */
export async function screenshots(page, name, { before } = {}) {
  const written = [];
  for (const viewport of VIEWPORTS) {
    for (const colorScheme of ['light', 'dark']) {
      await page.setViewportSize(viewport);
      await page.emulateMedia({ colorScheme });
      if (before) await before(page);
      const file = join(artifacts, `${name}-${viewport.width}x${viewport.height}-${colorScheme}.png`);
      await page.screenshot({ path: file });
      await audit(page, `${name} at ${viewport.width}x${viewport.height}, ${colorScheme}`);
      written.push(file);
    }
  }
  await page.setViewportSize(VIEWPORTS[0]);
  await page.emulateMedia({ colorScheme: 'light' });
  return written;
}

/**
 * Collects the page's console errors and uncaught exceptions; `expected`
 * matches the ones a test provokes on purpose (a refused connection while the
 * server restarts). Call `assertNone()` at the end of the test.
 */
export function watchConsole(page, name, expected = /WebSocket connection|net::ERR_/) {
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error' && !expected.test(m.text())) errors.push(`${name}: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
  return { errors, assertNone: () => assert.deepEqual(errors, [], `${name}: console errors`) };
}

/** The page's document is at most as wide as its viewport: nothing scrolls sideways. */
export async function assertNoHorizontalScroll(page, label) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client, `${label}: the page is ${scroll} px wide in a ${client} px viewport`);
}
