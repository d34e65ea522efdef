import { api, apiKey, stream, el, clear, header, showError, fmtTime, jsonBlock, $, ApiError } from '/assets/common.js';

const MAX_PAGES = 10;
const ui = {
  error: $('#error'),
  recent: $('#recent'),
  input: $('#conversation'),
  summary: $('#summary'),
  timeline: $('#timeline'),
  title: $('#cp-title'),
  empty: $('#cp-empty'),
  body: $('#cp-body'),
  meta: $('#cp-meta'),
  diff: $('#diff'),
  routing: $('#routing'),
  writes: $('#writes'),
  forkResult: $('#fork-result'),
  current: $('#current'),
};

const insp = { id: null, checkpoints: [], byId: new Map(), steps: new Map(), runs: new Map(), after: new Map(), selected: null };

// ---- loading ----

async function loadHistory(id) {
  const all = [];
  let before;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const q = before === undefined ? '' : `&before=${before}`;
    const h = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/history?limit=100${q}`);
    all.push(...h.items);
    if (h.next_before === null || h.next_before === undefined) break;
    before = h.next_before;
  }
  return all.sort((a, b) => a.id - b.id);
}

/** What each step of a run did, keyed by checkpoint step: writes, interrupts, custom events. */
function stepsOf(events) {
  const steps = new Map();
  const at = (s) => {
    if (!steps.has(s)) steps.set(s, { tasks: [], writes: [], interrupts: [], custom: [], tokens: 0 });
    return steps.get(s);
  };
  let cur = -1;
  let result = null;
  for (const { event, data } of events) {
    if (!data || typeof data !== 'object') continue;
    if (event === 'step') {
      cur = data.step - 1;
      at(cur).tasks = data.tasks || [];
    } else if (event === 'update') {
      at(data.node === '__input__' ? -1 : cur).writes.push({ node: data.node, update: data.update });
    } else if (event === 'interrupt') {
      at(cur).interrupts.push({ node: data.node, payload: data.payload });
    } else if (event === 'custom') {
      at(cur).custom.push({ node: data.node, value: data.value });
    } else if (event === 'token') {
      at(cur).tokens += 1;
    } else if (event === 'result') {
      result = data;
    } else if (event === 'error') {
      result = { status: 'failed', error: data.error || data };
    }
  }
  return { steps, result };
}

async function runEvents(runId) {
  const events = [];
  await stream('GET', `/v1/runs/${encodeURIComponent(runId)}/events`, undefined, (e) => events.push(e));
  return events;
}

// ---- state reconstruction (best effort: reducers are not published, so arrays append) ----

function applyWrite(state, update) {
  const next = { ...state };
  for (const [k, v] of Object.entries(update || {})) {
    const prev = next[k];
    if (Array.isArray(prev) && Array.isArray(v)) next[k] = prev.concat(v);
    else if (Array.isArray(prev) && v && typeof v === 'object') {
      const i = v.id === undefined ? -1 : prev.findIndex((x) => x && x.id === v.id);
      next[k] = i >= 0 ? prev.map((x, j) => (j === i ? v : x)) : prev.concat([v]);
    } else if (prev === undefined && v && typeof v === 'object' && !Array.isArray(v) && k.endsWith('messages')) {
      next[k] = [v];
    } else next[k] = v;
  }
  return next;
}

function reconstruct() {
  insp.after.clear();
  for (const cp of insp.checkpoints) {
    const before = (cp.parent !== null && insp.after.get(cp.parent)) || {};
    const step = insp.steps.get(cp.run_id)?.steps.get(cp.step);
    let after = before;
    if (step) for (const w of step.writes) after = applyWrite(after, w.update);
    insp.after.set(cp.id, after);
  }
}

// ---- rendering ----

const short = (v) => {
  const s = JSON.stringify(v);
  return s === undefined ? 'undefined' : s.length > 400 ? `${s.slice(0, 400)}…` : s;
};

function diffLines(before, after) {
  const lines = [];
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  for (const k of keys) {
    const a = before[k];
    const b = after[k];
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    if (a === undefined) lines.push(el('div', { class: 'add' }, `+ ${k}: ${short(b)}`));
    else if (b === undefined) lines.push(el('div', { class: 'del' }, `- ${k}: ${short(a)}`));
    else if (Array.isArray(a) && Array.isArray(b) && b.length > a.length && JSON.stringify(b.slice(0, a.length)) === JSON.stringify(a)) {
      for (const item of b.slice(a.length)) lines.push(el('div', { class: 'add' }, `+ ${k}[]: ${short(item)}`));
    } else lines.push(el('div', { class: 'chg' }, `~ ${k}: ${short(a)} → ${short(b)}`));
  }
  return lines;
}

/** Routing decisions found in a step's writes: fields that carry an intent with a score. */
function routingDecisions(step) {
  const out = [];
  for (const w of step.writes) {
    const u = w.update || {};
    for (const [k, written] of Object.entries(u)) {
      // A field written several times in one step (appended values) comes as a list.
      for (const v of Array.isArray(written) ? written : [written]) {
        const decision = v && typeof v === 'object' && !Array.isArray(v);
        if (decision && (v.candidates || v.scores || v.confidence !== undefined || (v.outcome && (v.handler || v.intent)))) {
          out.push({ node: w.node, field: k, ...v });
        }
      }
    }
    if (u.intent !== undefined && (u.confidence !== undefined || u.route !== undefined || u.handler !== undefined)) {
      out.push({ node: w.node, field: 'intent', intent: u.intent, confidence: u.confidence, handler: u.handler ?? u.route });
    }
  }
  for (const c of step.custom) {
    const v = c.value;
    if (v && typeof v === 'object' && (v.candidates || v.scores) ) out.push({ node: c.node, field: 'event', ...v });
  }
  // The same decision is often written to two fields (the latest and a trace): show it once.
  const seen = new Set();
  return out.filter((d) => {
    const { node, field, ...rest } = d;
    const key = JSON.stringify(rest);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function candidates(d) {
  const c = d.candidates || d.scores || [];
  if (Array.isArray(c)) {
    return c.map((x) => (Array.isArray(x) ? { label: x[0], score: x[1] } : { label: x.intent ?? x.label ?? x.name ?? x.handler, score: x.score ?? x.confidence ?? x.probability }));
  }
  return Object.entries(c).map(([label, score]) => ({ label, score }));
}

/** A score bar; its width is set through the CSS object model, which the page's policy allows. */
function bar(percent) {
  const b = el('div', { class: 'bar' });
  b.style.width = `${Math.max(0, Math.min(100, percent)).toFixed(1)}%`;
  return b;
}

function renderRouting(decisions) {
  clear(ui.routing);
  if (!decisions.length) {
    ui.routing.append(el('p', { class: 'muted small' }, 'No routing decision in this step.'));
    return;
  }
  for (const d of decisions) {
    const intent = d.intent ?? d.top_intent ?? d.label ?? d.decision;
    const head = [
      intent !== undefined ? `intent ${typeof intent === 'string' ? intent : JSON.stringify(intent)}` : null,
      typeof d.confidence === 'number' ? `confidence ${d.confidence.toFixed(3)}` : null,
      d.handler || d.route ? `→ ${d.handler || d.route}` : null,
      d.decision && d.decision !== intent ? `decision ${typeof d.decision === 'string' ? d.decision : JSON.stringify(d.decision)}` : null,
      d.outcome ? `outcome ${d.outcome}` : null,
      d.rung ? `rung ${d.rung}` : null,
      d.reason ? `reason ${d.reason}` : null,
      Array.isArray(d.reasons) && d.reasons.length ? `reasons: ${d.reasons.join('; ')}` : null,
      typeof d.threshold === 'number' ? `threshold ${d.threshold}` : null,
      d.thresholds && typeof d.thresholds.oos === 'number' ? `out-of-scope below ${d.thresholds.oos.toFixed(2)}` : null,
      d.thresholds && typeof d.thresholds.clarify_margin === 'number' ? `clarify margin ${d.thresholds.clarify_margin.toFixed(2)}` : null,
    ].filter(Boolean);
    const cands = candidates(d).filter((c) => c.label !== undefined);
    const max = Math.max(1e-9, ...cands.map((c) => (typeof c.score === 'number' ? c.score : 0)));
    ui.routing.append(
      el(
        'div',
        { class: 'routing-decision' },
        el('div', { class: 'small' }, el('strong', {}, `${d.node}.${d.field}: `), head.join(' · ')),
        cands.length
          ? el(
              'table',
              { class: 'small' },
              el(
                'tbody',
                {},
                cands.slice(0, 8).map((c) =>
                  el(
                    'tr',
                    {},
                    el('td', {}, String(c.label)),
                    el('td', { class: 'mono' }, typeof c.score === 'number' ? c.score.toFixed(3) : String(c.score ?? '')),
                    el('td', { class: 'barcell' }, bar((100 * (c.score || 0)) / max)),
                  ),
                ),
              ),
            )
          : null,
      ),
    );
  }
}

function renderWrites(step, cp) {
  clear(ui.writes);
  if (cp.step === -2) {
    ui.writes.append(el('p', { class: 'muted small' }, 'A fork: a new head with the state of its parent checkpoint; the old branch is kept.'));
    return;
  }
  if (!step) {
    ui.writes.append(el('p', { class: 'muted small' }, 'No events recorded for this checkpoint.'));
    return;
  }
  if (step.tasks.length) ui.writes.append(el('div', { class: 'small' }, `tasks: ${step.tasks.join(', ')}`));
  for (const w of step.writes) ui.writes.append(el('div', { class: 'small' }, el('strong', {}, w.node)), jsonBlock(w.update));
  for (const i of step.interrupts) ui.writes.append(el('div', { class: 'small' }, el('strong', {}, `interrupt by ${i.node}`)), jsonBlock(i.payload));
  for (const c of step.custom) ui.writes.append(el('div', { class: 'small' }, el('strong', {}, `event from ${c.node}`)), jsonBlock(c.value));
  if (step.tokens) ui.writes.append(el('div', { class: 'small muted' }, `${step.tokens} streamed token deltas`));
}

function stepLabel(cp) {
  if (cp.step === -1) return 'input';
  if (cp.step === -2) return cp.parent === null ? 'fork' : `fork of #${cp.parent}`;
  return `step ${cp.step}`;
}

function select(id) {
  insp.selected = id;
  for (const li of ui.timeline.querySelectorAll('li[data-checkpoint]')) {
    li.classList.toggle('selected', Number(li.dataset.checkpoint) === id);
  }
  const cp = insp.byId.get(id);
  if (!cp) return;
  ui.empty.classList.add('hidden');
  ui.body.classList.remove('hidden');
  clear(ui.forkResult);
  clear(ui.title).append(`Checkpoint ${cp.id}`);
  clear(ui.meta).append(
    `${stepLabel(cp)} · run ${cp.run_id} · ${fmtTime(cp.created_at_ms)} · parent ${cp.parent ?? '—'} · ` +
      `${cp.snapshot ? 'snapshot' : 'delta'} ${cp.bytes} B · next: ${cp.next.length ? cp.next.join(', ') : 'idle'}`,
  );
  const before = (cp.parent !== null && insp.after.get(cp.parent)) || {};
  const lines = diffLines(before, insp.after.get(cp.id) || {});
  const step = insp.steps.get(cp.run_id)?.steps.get(cp.step);
  const same = step && step.writes.length ? 'no change: this step wrote the values the state already had' : 'no change';
  clear(ui.diff).append(...(lines.length ? lines : [el('div', { class: 'muted' }, same)]));
  renderRouting(step ? routingDecisions(step) : []);
  renderWrites(step, cp);
}

function renderTimeline() {
  clear(ui.timeline);
  let run = null;
  for (const cp of insp.checkpoints) {
    if (cp.run_id !== run) {
      run = cp.run_id;
      const r = insp.steps.get(run)?.result;
      const missing = insp.steps.get(run)?.missing ? ' · events not recorded' : '';
      ui.timeline.append(el('li', { class: 'run-head' }, `run ${run}${r && r.status ? ` · ${r.status}` : ''}${missing}`));
    }
    const step = insp.steps.get(cp.run_id)?.steps.get(cp.step);
    const nodes = step ? [...new Set(step.writes.map((w) => w.node))].join(', ') : '';
    const hasRouting = step && routingDecisions(step).length > 0;
    ui.timeline.append(
      el(
        'li',
        { 'data-checkpoint': cp.id, onclick: () => select(cp.id) },
        el('span', { class: 'mono' }, `#${cp.id}`),
        ` ${stepLabel(cp)}`,
        nodes ? el('span', { class: 'small muted' }, ` · ${nodes}`) : null,
        hasRouting ? el('span', { class: 'badge tag' }, 'routing') : null,
        step && step.interrupts.length ? el('span', { class: 'badge p-high tag' }, 'interrupt') : null,
      ),
    );
  }
}

async function inspect(id) {
  showError(ui.error, null);
  insp.id = id;
  ui.input.value = id;
  if ([...ui.recent.options].some((o) => o.value === id)) ui.recent.value = id;
  const url = new URL(window.location.href);
  url.searchParams.set('conversation', id);
  history.replaceState(null, '', url.pathname + url.search);
  try {
    insp.checkpoints = await loadHistory(id);
    insp.byId = new Map(insp.checkpoints.map((c) => [c.id, c]));
    const runs = [...new Set(insp.checkpoints.filter((c) => c.step !== -2).map((c) => c.run_id))];
    for (const r of runs) {
      if (insp.steps.has(r)) continue;
      try {
        insp.steps.set(r, stepsOf(await runEvents(r)));
      } catch (e) {
        // A run started outside the conversation API (e.g. by the desk) has no stored events.
        if (!(e instanceof ApiError && e.status === 404)) throw e;
        insp.steps.set(r, { steps: new Map(), result: null, missing: true });
      }
    }
    reconstruct();
    renderTimeline();
    clear(ui.summary).append(`${insp.checkpoints.length} checkpoints in ${runs.length} runs`);
    const state = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/state`);
    clear(ui.current).append(jsonBlock(state.values));
    const keep = insp.selected !== null && insp.byId.has(insp.selected) ? insp.selected : insp.checkpoints.at(-1)?.id;
    if (keep !== undefined) select(keep);
  } catch (e) {
    showError(ui.error, e);
  }
}

async function loadRecent() {
  const list = await api('GET', '/v1/conversations?limit=50');
  clear(ui.recent).append(el('option', { value: '' }, 'recent conversations…'));
  for (const c of list.items) {
    ui.recent.append(el('option', { value: c.id }, `${c.id} · ${c.customer_id || 'anonymous'} · ${c.status} · ${fmtTime(c.created_at_ms)}`));
  }
}

$('#pick').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = ui.input.value.trim();
  if (id) inspect(id);
});
ui.recent.addEventListener('change', () => {
  if (ui.recent.value) inspect(ui.recent.value);
});
$('#fork').addEventListener('click', async () => {
  const cp = insp.selected;
  if (cp === null || !insp.id) return;
  clear(ui.forkResult);
  try {
    const r = await api('POST', `/v1/conversations/${encodeURIComponent(insp.id)}/fork`, { checkpoint_id: cp });
    insp.selected = r.checkpoint_id;
    await inspect(insp.id);
    ui.forkResult.className = 'small notice ok';
    clear(ui.forkResult).append(
      `Forked: the conversation now continues from checkpoint ${r.checkpoint_id} (a copy of ${r.forked_from}); the old branch is kept.`,
    );
  } catch (e) {
    ui.forkResult.className = 'small notice error';
    ui.forkResult.append(`Fork failed: ${e.message}`);
  }
});

async function start() {
  if (!apiKey()) {
    showError(ui.error, new Error('Enter an API key with the desk or admin scope above.'));
    return;
  }
  try {
    await loadRecent();
    const id = new URL(window.location.href).searchParams.get('conversation');
    if (id) await inspect(id);
  } catch (e) {
    showError(ui.error, e);
  }
}

header('/inspector', () => start());
start();
