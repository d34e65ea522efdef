// End-to-end tests of the pages `switchboard serve` embeds: the start page, the customer chat, the
// agent desk and the conversation inspector, driven in Debian's headless Chromium through
// playwright-core (which never downloads a browser of its own).
//
// Each run starts the real binary on a fresh data directory and a free port, takes the admin key it
// prints at first start, and talks to it only on 127.0.0.1. Screenshots go to ./artifacts/.
//
// Environment: SWITCHBOARD_BIN (default ../../target/release/switchboard), CHROMIUM (default
// /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..'); // the server finds assistants/ relative to its working directory
const BIN = process.env.SWITCHBOARD_BIN || resolve(HERE, '../../target/release/switchboard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = join(HERE, 'artifacts');
const STARTUP_MS = 180_000; // first start may train the router (cached afterwards)
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let server;
let base;
let adminKey;
let context;
let dataDir;
let profileDir;
let serverLog = '';
const consoleErrors = [];

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function startServer(port) {
  return new Promise((ok, fail) => {
    const child = spawn(BIN, ['serve', '--addr', `127.0.0.1:${port}`, '--data-dir', dataDir], {
      cwd: ROOT,
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let key = null;
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      fail(new Error(`switchboard serve did not start within ${STARTUP_MS} ms:\n${serverLog}`));
    }, STARTUP_MS);
    const onData = (chunk) => {
      serverLog += chunk.toString();
      const m = serverLog.match(/^(sb_[0-9a-f]{64})\s*$/m);
      if (m) key = m[1];
      if (/listening on http:\/\//.test(serverLog)) {
        clearTimeout(timer);
        if (!key) fail(new Error(`no admin key printed at first start:\n${serverLog}`));
        else ok({ child, key });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => {
      serverLog += c.toString();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`switchboard serve exited with ${code}:\n${serverLog}`));
    });
  });
}

/** The JSON API, from the test's side (to set up and to check what the pages did). */
async function api(method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

/** A page's address with the admin key, which the page stores and removes from the address bar. */
function url(path, params = {}) {
  const u = new URL(path, base);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  u.searchParams.set('key', adminKey);
  return u.href;
}

async function newPage(name) {
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push({ page: name, text: msg.text(), url: msg.location().url });
  });
  page.on('pageerror', (err) => consoleErrors.push({ page: name, text: `uncaught: ${err.message}`, url: '' }));
  return page;
}

// Starts a conversation with the page's "New conversation" button and returns its id once the
// page shows it. The page restores the last conversation of this browser profile (another
// test's) on load, so `#conversation-id` may already hold an old id when the button is clicked:
// the id is taken from the server's answer to the POST, and the wait is for the page to show it.
async function startConversation(page) {
  const created = page.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/v1/conversations',
    { timeout: 30_000 },
  );
  await page.locator('#new-conversation').click();
  const response = await created;
  assert.equal(response.status(), 201, `POST /v1/conversations answered ${response.status()}`);
  const { id } = await response.json();
  await page.waitForFunction(
    (want) => document.querySelector('#conversation-id')?.textContent === want,
    id,
    { timeout: 30_000, polling: 100 },
  );
  return id;
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

function errorsOf(name) {
  return consoleErrors.filter((e) => e.page === name);
}

/** What the server offers: the assistants and whether the desk API exists. */
async function capabilities() {
  const a = await api('GET', '/v1/assistants');
  const q = await api('GET', '/v1/desk/queue');
  return {
    assistants: a.body.items.map((x) => x.id),
    defaultAssistant: a.body.default,
    desk: q.status === 200,
  };
}

before(async () => {
  assert.ok(existsSync(BIN), `the switchboard binary is missing at ${BIN} (build it, or set SWITCHBOARD_BIN)`);
  assert.ok(existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), 'sb-browser-data-'));
  profileDir = mkdtempSync(join(tmpdir(), 'sb-browser-profile-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const started = await startServer(port);
  server = started.child;
  adminKey = started.key;
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 860 },
  });
});

after(async () => {
  if (context) await context.close();
  if (server) {
    server.removeAllListeners('exit');
    server.kill('SIGTERM');
    await new Promise((ok) => {
      const t = setTimeout(() => {
        server.kill('SIGKILL');
        ok();
      }, 10_000);
      server.once('exit', () => {
        clearTimeout(t);
        ok();
      });
    });
  }
  for (const d of [dataDir, profileDir]) if (d) rmSync(d, { recursive: true, force: true });
});

test('the start page lists the pages and the assistants, and keeps the key out of the address bar', async () => {
  const page = await newPage('index');
  await page.goto(url('/'));
  await page.locator('#assistant-list li').first().waitFor();
  assert.equal(new URL(page.url()).search, '', 'the key is removed from the address');
  assert.equal(await page.evaluate(() => localStorage.getItem('switchboard.apiKey')), adminKey);
  for (const id of ['#link-chat', '#link-desk', '#link-inspector']) assert.equal(await page.locator(id).count(), 1);
  assert.match(await page.locator('#health').textContent(), /health: ok/);
  await shot(page, '01-index');
  assert.deepEqual(errorsOf('index'), []);
  await page.close();
});

test('a page with a wrong key shows the API error instead of failing silently', async () => {
  const page = await newPage('wrong-key');
  await page.goto(`${base}/chat?key=sb_${'0'.repeat(64)}`);
  await page.locator('#error:not(.hidden)').waitFor();
  assert.match(await page.locator('#error').textContent(), /invalid API key.*401/);
  // The 401 itself is logged by Chromium as a failed resource load; nothing else may be.
  const other = errorsOf('wrong-key').filter((e) => !/status of 401/.test(e.text));
  assert.deepEqual(other, []);
  await page.close();
});

test('chat streams a reply, shows a pending interrupt, and picks up what happens after it', async () => {
  const caps = await capabilities();
  // The demo assistant `support` pauses on a human handoff, which this test follows through.
  const wanted = caps.assistants.includes('support') ? 'support' : caps.defaultAssistant;
  const page = await newPage('chat');
  await page.goto(url('/chat', { assistant: wanted }));
  await page.locator('#assistant option').first().waitFor({ state: 'attached' });
  const assistant = await page.locator('#assistant').inputValue();
  assert.equal(assistant, wanted);
  const conv = await startConversation(page);

  await page.locator('#message').fill('hello, I have a question about my account');
  await page.locator('#send').click();
  const firstReply = page.locator('.msg.assistant').first();
  await firstReply.waitFor();
  await page.waitForFunction(() => {
    const m = document.querySelector('.msg.assistant');
    return m && !m.classList.contains('streaming') && m.textContent.replace(/^Assistant/, '').trim().length > 0;
  });
  const state = await api('GET', `/v1/conversations/${conv}/state`);
  const messages = state.body.values.messages;
  assert.ok(messages.length >= 2, 'the turn was recorded');
  await shot(page, '02-chat-first-reply');

  if (assistant === 'support') {
    // The demo assistant pauses on a human handoff; the chat shows it and then the human's answer.
    await page.locator('#message').fill('I want to talk to a human agent');
    await page.locator('#send').click();
    await page.locator('#pending-approval').waitFor();
    await shot(page, '03-chat-pending');
    const resumed = await api('POST', `/v1/conversations/${conv}/interrupts/resume`, { value: 'Hello, this is Sam from support.' });
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    await page.locator('.msg', { hasText: 'Sam from support' }).waitFor({ timeout: 15_000 });
    await page.locator('#pending-approval').waitFor({ state: 'detached' });
    await shot(page, '04-chat-after-human');
  }
  assert.deepEqual(errorsOf('chat'), []);
  await page.close();
});

test('the inspector shows the checkpoint timeline, a state diff per step, and forks', async () => {
  const caps = await capabilities();
  const assistant = caps.assistants.includes('support') ? 'support' : caps.defaultAssistant;
  const created = await api('POST', '/v1/conversations', { assistant, customer_id: 'cust_001' });
  const conv = created.body.id;
  for (const text of ['hi there', 'how do refunds work?']) {
    const r = await api('POST', `/v1/conversations/${conv}/messages`, { text });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  const hist = await api('GET', `/v1/conversations/${conv}/history?limit=100`);
  const page = await newPage('inspector');
  await page.goto(url('/inspector', { conversation: conv }));
  await page.locator('#timeline li[data-checkpoint]').first().waitFor();
  assert.equal(await page.locator('#timeline li[data-checkpoint]').count(), hist.body.items.length);
  assert.equal(await page.locator('#timeline li.run-head').count(), 2, 'one group per turn');

  // The input checkpoint of the second turn adds the customer's message.
  const inputs = page.locator('#timeline li[data-checkpoint]', { hasText: 'input' });
  await inputs.nth(1).click();
  await page.locator('#diff .add', { hasText: 'how do refunds work?' }).waitFor();
  // A later step shows what its node wrote.
  await page.locator('#timeline li[data-checkpoint]').last().click();
  assert.ok((await page.locator('#writes pre').count()) > 0 || (await page.locator('#diff div').count()) > 0);
  // The routing step is marked in the timeline and shows the decision with its score.
  const routed = page.locator('#timeline li[data-checkpoint]', { has: page.locator('.badge', { hasText: 'routing' }) });
  assert.ok((await routed.count()) >= 2, 'a routing decision per turn');
  await routed.last().click();
  await page.locator('.routing-decision', { hasText: /confidence \d\.\d{3}/ }).first().waitFor();
  await shot(page, '05-inspector');

  // Fork from the first turn's last checkpoint: the head moves there and the old branch stays.
  const firstRun = hist.body.items.sort((a, b) => a.id - b.id)[0].run_id;
  const target = hist.body.items.filter((c) => c.run_id === firstRun).sort((a, b) => b.id - a.id)[0];
  await page.locator(`#timeline li[data-checkpoint="${target.id}"]`).click();
  await page.locator('#fork').click();
  await page.locator('#fork-result.ok').waitFor();
  const forked = await api('GET', `/v1/conversations/${conv}/history?limit=100`);
  assert.equal(forked.body.items.length, hist.body.items.length + 1, 'the fork wrote one checkpoint');
  const state = await api('GET', `/v1/conversations/${conv}/state`);
  const texts = state.body.values.messages.map((m) => m.content ?? m.text);
  assert.ok(!texts.includes('how do refunds work?'), 'the head is back before the second turn');
  await page.locator('#timeline li[data-checkpoint]', { hasText: 'fork' }).waitFor();
  await shot(page, '06-inspector-fork');
  assert.deepEqual(errorsOf('inspector'), []);
  await page.close();
});

test('the desk page loads its queue', async () => {
  const caps = await capabilities();
  const page = await newPage('desk');
  await page.goto(url('/desk'));
  if (caps.desk) {
    await page.waitForFunction(() => document.querySelectorAll('#queue tbody tr').length > 0 || !document.querySelector('#queue-empty').classList.contains('hidden'));
    assert.deepEqual(errorsOf('desk'), []);
  } else {
    await page.locator('#error:not(.hidden)').waitFor();
    assert.match(await page.locator('#error').textContent(), /desk API is not available/);
    const other = errorsOf('desk').filter((e) => !(e.url.includes('/v1/desk/') && /status of 404/.test(e.text)));
    assert.deepEqual(other, []);
    console.log('!!! the desk API (/v1/desk/...) is not on this server: the desk page was checked for its "not available" state only');
  }
  await shot(page, '07-desk');
  await page.close();
});

test('story: lost card, human handoff, an agent approves the freeze in the desk and hands back', async (t) => {
  const caps = await capabilities();
  if (!caps.assistants.includes('exchange-support') || !caps.desk) {
    const why = `needs the exchange-support assistant (served: ${caps.assistants.join(', ')}) and the desk API (${caps.desk ? 'present' : 'missing'})`;
    console.log(`!!! STORY SKIPPED: ${why}`);
    t.skip(why);
    return;
  }
  const chat = await newPage('story-chat');
  await chat.goto(url('/chat', { assistant: 'exchange-support', customer: 'cust_001' }));
  await chat.locator('#assistant option[value="exchange-support"]').waitFor({ state: 'attached' });
  const conv = await startConversation(chat);
  const say = async (text) => {
    const before = await chat.locator('.msg.assistant').count();
    await chat.locator('#message').fill(text);
    await chat.locator('#send').click();
    try {
      await chat.waitForFunction(
        (n) => {
          const all = document.querySelectorAll('.msg.assistant');
          const refused = !document.querySelector('#error').classList.contains('hidden');
          return refused || (all.length > n && !document.querySelector('.msg.streaming'));
        },
        before,
        // Checked on a timer, not on animation frames: a renderer starved of CPU (the rest of the
        // suite building beside it) may paint no frame for a long time, and a frame-polled wait
        // then misses a reply that is already on the page.
        { timeout: 60_000, polling: 100 },
      );
    } catch (e) {
      // Say what the page and the server were doing, not only that the wait timed out.
      const transcript = await chat.locator('#transcript').innerText().catch(() => '(no transcript)');
      throw new Error(
        `no reply to ${JSON.stringify(text)}: ${e.message}\n--- page transcript ---\n${transcript}` +
          `\n--- server log (last 4 KB) ---\n${serverLog.slice(-4096)}`,
      );
    }
    // A refused message shows the API's error in the page: fail with it, not later with a timeout.
    const error = chat.locator('#error:not(.hidden)');
    if (await error.count()) assert.fail(`the chat refused ${JSON.stringify(text)}: ${await error.textContent()}`);
  };
  await say('I lost my card, block it please');
  await say('the one ending 4242');
  await chat.locator('#pending-approval').waitFor();
  await shot(chat, '10-story-chat-approval-pending');
  await say('can I talk to a person?');
  await chat.locator('#handoff-status').waitFor({ timeout: 15_000 });
  await shot(chat, '11-story-chat-handoff');

  const desk = await newPage('story-desk');
  await desk.goto(url('/desk'));
  await desk.locator('#agent').fill('alex');
  await desk.locator('#agent').dispatchEvent('change');
  const row = desk.locator(`#queue tr[data-conversation="${conv}"]`);
  try {
    await row.waitFor({ timeout: 15_000 });
  } catch (e) {
    // Say what the server's queue held and what the page showed, not only that the wait timed out.
    const q = await api('GET', '/v1/desk/queue');
    const page = await desk
      .evaluate(() => ({
        visibility: document.visibilityState,
        rows: [...document.querySelectorAll('#queue tbody tr')].map((r) => r.dataset.conversation),
        error: document.querySelector('#error')?.textContent ?? '',
      }))
      .catch((err) => ({ unreadable: String(err) }));
    throw new Error(
      `the desk queue never showed ${conv}: ${e.message}\n--- GET /v1/desk/queue ---\n${q.status} ${JSON.stringify(q.body)}` +
        `\n--- desk page ---\n${JSON.stringify(page)}\n--- server log (last 4 KB) ---\n${serverLog.slice(-4096)}`,
    );
  }
  await shot(desk, '12-story-desk-queue');
  await desk.locator(`[data-claim="${conv}"]`).click();
  await desk.locator('#action-result', { hasText: 'Claimed by alex' }).waitFor();
  await desk.locator('#transcript .msg.user', { hasText: 'lost my card' }).waitFor();
  const approve = desk.locator('[data-approve]').first();
  await approve.waitFor();
  await shot(desk, '13-story-desk-claimed');
  await approve.click();
  await desk.locator('#action-result', { hasText: 'Approved' }).waitFor();
  await desk.locator('[data-approve]').first().waitFor({ state: 'detached', timeout: 15_000 });
  const afterApproval = await api('GET', `/v1/conversations/${conv}/state`);
  const calls = afterApproval.body.values.tool_calls || [];
  assert.ok(
    calls.some((c) => (c.name ?? c.tool) === 'freeze_card' && JSON.stringify(c).includes('4242')),
    `the approved freeze ran: ${JSON.stringify(calls)}`,
  );
  await desk.locator('#reply-text').fill('Hi Ana, I have frozen your card ending 4242.');
  await desk.locator('#reply-send').click();
  await desk.locator('#action-result', { hasText: 'Reply sent' }).waitFor();
  await desk.locator('#handback').click();
  await desk.locator('#action-result', { hasText: 'Handed back' }).waitFor();
  await shot(desk, '14-story-desk-handed-back');

  // The customer sees the agent's reply without reloading.
  await chat.locator('.msg', { hasText: 'I have frozen your card ending 4242' }).waitFor({ timeout: 15_000 });
  await chat.locator('#pending-approval').waitFor({ state: 'detached', timeout: 15_000 });
  await shot(chat, '15-story-chat-after-desk');

  // The inspector shows the routing decisions of the conversation with their scores.
  const insp = await newPage('story-inspector');
  await insp.goto(url('/inspector', { conversation: conv }));
  const routed = insp.locator('#timeline li[data-checkpoint]', { has: insp.locator('.badge', { hasText: 'routing' }) });
  await routed.first().waitFor();
  await routed.first().click();
  await insp.locator('.routing-decision').first().waitFor();
  await shot(insp, '16-story-inspector');

  // Runs the desk starts do not go through the conversation API, so they have no stored events:
  // the inspector asks, gets a 404 (which Chromium logs), and marks them "events not recorded".
  const unrecorded = errorsOf('story-inspector').filter((e) => e.url.includes('/v1/runs/') && /status of 404/.test(e.text));
  if (unrecorded.length) console.log(`!!! ${unrecorded.length} run(s) of the story have no stored events (started by the desk)`);
  assert.deepEqual(errorsOf('story-inspector').filter((e) => !unrecorded.includes(e)), [], 'story-inspector');
  for (const name of ['story-chat', 'story-desk']) assert.deepEqual(errorsOf(name), [], name);
  await Promise.all([chat.close(), desk.close(), insp.close()]);
});
