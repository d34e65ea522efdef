// The self-contained HTML reports open in Debian's headless Chromium without errors: the scenario
// report (`switchboard eval scenarios --html`), the intent evaluation report
// (`switchboard router eval --html`) and the replay report (`switchboard eval replay --html`). Each is generated here by the real binary into a temporary
// directory and opened from its file:// address; any console error, uncaught page error or request
// for a resource outside the file fails the test. Screenshots go to ./artifacts/.
//
// Environment: SWITCHBOARD_BIN (default ../../target/release/switchboard), CHROMIUM (default
// /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, cpSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BIN = process.env.SWITCHBOARD_BIN || resolve(HERE, '../../target/release/switchboard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = join(HERE, 'artifacts');
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

let browser;
let work;

/** Runs the binary from the repo root; returns its exit code and output. */
function sb(args, { expectStatus = 0, input } = {}) {
  const r = spawnSync(BIN, args, {
    cwd: ROOT,
    encoding: 'utf8',
    input,
    timeout: 600_000,
    // The router trained for the scenarios is cached by content hash; share it with the Rust tests.
    env: { ...process.env, SWITCHBOARD_CACHE_DIR: join(tmpdir(), 'switchboard-eval-tests'), RUST_LOG: 'warn' },
  });
  assert.equal(r.status, expectStatus, `switchboard ${args.join(' ')} exited with ${r.status}:\n${r.stderr}`);
  return r;
}

/** Opens a report file; returns the page and every error it produced. */
async function open(file, name) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('request', (r) => {
    if (!r.url().startsWith('file:')) errors.push(`external request: ${r.url()}`);
  });
  page.on('requestfailed', (r) => errors.push(`failed request: ${r.url()}`));
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  return { page, errors };
}

before(async () => {
  assert.ok(existsSync(BIN), `the switchboard binary is missing at ${BIN} (build it, or set SWITCHBOARD_BIN)`);
  assert.ok(existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  work = mkdtempSync(join(tmpdir(), 'sb-reports-'));
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
});

after(async () => {
  if (browser) await browser.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the scenario report opens without errors and shows the table, the latency chart and the failures', async () => {
  const html = join(work, 'scenarios.html');
  // The fixture folder has one passing and one deliberately failing scenario: exit code 1.
  sb(['eval', 'scenarios', '--lexical', '--html', html, 'tests/fixtures/eval'], { expectStatus: 1 });
  const { page, errors } = await open(html, 'report-scenarios');
  assert.match(await page.locator('h1').textContent(), /Scenario tests/);
  assert.equal(await page.locator('#scenario-table tbody tr').count(), 2);
  assert.equal(await page.locator('#scenario-table tbody tr.failed').count(), 1);
  assert.ok((await page.locator('#latency-chart rect').count()) >= 3, 'one bar per turn');
  assert.equal(await page.locator('#failures article.failure').count(), 1);
  assert.match(await page.locator('#failures').textContent(), /handler: expected `card_freeze`/);
  // The failed scenario's name links to its details.
  await page.locator('#scenario-table tbody tr.failed a').click();
  assert.match(page.url(), /#s\d+$/);
  const box = await page.locator('#latency-chart').boundingBox();
  assert.ok(box && box.width > 100 && box.height > 100, `the chart is drawn: ${JSON.stringify(box)}`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the router evaluation report opens without errors and shows its figures', async () => {
  const model = join(work, 'router');
  const html = join(work, 'router.html');
  const data = 'assistants/exchange-support/data/intents.csv';
  sb(['router', 'train', '--data', data, '--out', model, '--lexical-only', '--max-per-intent', '20']);
  sb(['router', 'eval', '--model', model, '--data', data, '--html', html]);
  const { page, errors } = await open(html, 'report-router');
  assert.match(await page.locator('h1').textContent(), /Intent evaluation/);
  assert.match(await page.locator('#summary').textContent(), /macro-F1/);
  assert.ok((await page.locator('svg').count()) >= 2, 'inline SVG plots');
  assert.deepEqual(errors, []);
  await page.close();
});

test('the replay report opens without errors and shows the changed turn with its diff', async () => {
  const data = join(work, 'recorded');
  const script = 'I lost my card, block it please\nthe one ending 4242\n/approve\n';
  sb(['chat', '--record', '--lexical', '--customer', 'cust_001', '--conversation', 'conv_freeze', '--data-dir', data], {
    input: script,
  });
  const cassettes = join(work, 'cassettes.jsonl');
  sb(['eval', 'export', '--store', join(data, 'chat.sqlite'), '--out', cassettes]);
  // A new version of the assistant whose freeze confirmation is reworded.
  const v2 = join(work, 'exchange-support-v2');
  cpSync(join(ROOT, 'assistants/exchange-support'), v2, { recursive: true });
  const toml = join(v2, 'assistant.toml');
  const old = 'frozen = "Done: the card ending {last4} is now frozen.';
  const text = readFileSync(toml, 'utf8');
  assert.ok(text.includes(old), 'the freeze confirmation is in assistant.toml');
  writeFileSync(toml, text.replace(old, 'frozen = "Card {last4} is blocked.'));
  const html = join(work, 'replay.html');
  sb(['eval', 'replay', '--lexical', '--fail-on-change', '--from', cassettes, '--assistant', v2, '--html', html], {
    expectStatus: 1,
  });
  const { page, errors } = await open(html, 'report-replay');
  assert.match(await page.locator('h1').textContent(), /Replay/);
  assert.equal(await page.locator('#conversations tr.failed').count(), 1);
  const changes = await page.locator('#changes').textContent();
  assert.match(changes, /reply/);
  assert.match(changes, /Card 4242 is blocked/);
  assert.deepEqual(errors, []);
  await page.close();
});
