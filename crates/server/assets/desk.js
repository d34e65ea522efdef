import {
  api, apiKey, el, clear, header, showError, messageText, messageRole, describeInterrupt, fmtTime, fmtDuration, $,
  ApiError,
} from '/assets/common.js';

const AGENT_STORE = 'switchboard.desk.agent';
const POLL_MS = 3000;

const ui = {
  error: $('#error'),
  agent: $('#agent'),
  queue: $('#queue tbody'),
  queueEmpty: $('#queue-empty'),
  title: $('#detail-title'),
  empty: $('#detail-empty'),
  body: $('#detail-body'),
  meta: $('#detail-meta'),
  summary: $('#summary'),
  approvals: $('#approvals'),
  transcript: $('#transcript'),
  routing: $('#routing'),
  replyText: $('#reply-text'),
  result: $('#action-result'),
};

const desk = { items: [], selected: null, detail: null, available: true, shownTranscript: '' };

ui.agent.value = localStorage.getItem(AGENT_STORE) || 'agent';
ui.agent.addEventListener('change', () => localStorage.setItem(AGENT_STORE, ui.agent.value.trim() || 'agent'));

const agentName = () => ui.agent.value.trim() || 'agent';
const deskPath = (id, rest = '') => `/v1/desk/conversations/${encodeURIComponent(id)}${rest}`;

function priorityBadge(p) {
  const name = String(p ?? 'normal').toLowerCase();
  return el('span', { class: `badge p-${name}` }, String(p ?? 'normal'));
}

function slaText(item, now) {
  if (!item.sla_due_ms) return ['muted', '—'];
  const left = item.sla_due_ms - now;
  const cls = left < 0 ? 'sla-late' : left < 2 * 60 * 1000 ? 'sla-soon' : 'sla-ok';
  return [cls, left < 0 ? `late ${fmtDuration(-left)}` : fmtDuration(left)];
}

/** Updates the waiting time and SLA countdown cells in place (no rows rebuilt). */
function tick() {
  const now = Date.now();
  for (const item of desk.items) {
    const row = ui.queue.querySelector(`tr[data-conversation="${CSS.escape(item.conversation_id)}"]`);
    if (!row) continue;
    const [cls, text] = slaText(item, now);
    const sla = row.querySelector('[data-sla]');
    sla.className = cls;
    sla.textContent = text;
    if (item.queued_at_ms) row.querySelector('[data-wait]').textContent = fmtDuration(now - item.queued_at_ms);
  }
}

function renderQueue() {
  const now = Date.now();
  clear(ui.queue);
  ui.queueEmpty.classList.toggle('hidden', desk.items.length > 0);
  for (const item of desk.items) {
    const id = item.conversation_id;
    const mine = item.assigned_to && item.assigned_to === agentName();
    const claim = el(
      'button',
      {
        class: mine ? 'secondary' : '',
        'data-claim': id,
        onclick: (e) => {
          e.stopPropagation();
          claimConversation(id);
        },
      },
      mine ? 'Open' : item.assigned_to ? 'Take over' : 'Claim',
    );
    ui.queue.append(
      el(
        'tr',
        { class: `clickable${desk.selected === id ? ' selected' : ''}`, 'data-conversation': id, onclick: () => select(id) },
        el('td', {}, priorityBadge(item.priority)),
        el('td', {}, item.customer_id || el('span', { class: 'muted' }, 'anonymous')),
        el(
          'td',
          {},
          item.reason || '',
          item.summary ? el('div', { class: 'small muted clamp', title: item.summary }, item.summary) : null,
        ),
        el('td', { class: 'small', 'data-wait': '' }, item.queued_at_ms ? fmtDuration(now - item.queued_at_ms) : ''),
        el('td', { 'data-sla': '', title: item.sla_due_ms ? `due ${fmtTime(item.sla_due_ms)}` : null }),
        el('td', { class: 'small' }, item.status || '', item.assigned_to ? el('div', { class: 'muted' }, item.assigned_to) : null),
        el('td', {}, claim),
      ),
    );
  }
  tick();
}

function unavailable(e) {
  desk.available = false;
  showError(
    ui.error,
    new Error(`The desk API is not available on this server: ${e.message} (${e.status}). Queue polling stopped.`),
  );
}

async function loadQueue() {
  if (!apiKey() || !desk.available) return;
  try {
    const q = await api('GET', '/v1/desk/queue');
    desk.items = q.items || [];
    renderQueue();
    showError(ui.error, null);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) unavailable(e);
    else showError(ui.error, e);
  }
}

function renderSummary(s) {
  clear(ui.summary);
  if (s === null || s === undefined || s === '') {
    ui.summary.append(el('p', { class: 'muted' }, 'No summary.'));
  } else if (typeof s === 'string') {
    ui.summary.append(el('p', { id: 'summary-text' }, s));
  } else {
    const text = s.text || s.summary;
    if (text) ui.summary.append(el('p', { id: 'summary-text' }, text));
    const rest = Object.entries(s).filter(([k]) => k !== 'text' && k !== 'summary');
    if (rest.length) {
      ui.summary.append(
        el('table', {}, el('tbody', {}, rest.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', { class: 'mono' }, typeof v === 'string' ? v : JSON.stringify(v)))))),
      );
    }
  }
}

function approvalId(a) {
  return a.interrupt_id ?? a.id ?? a.task_id;
}

function renderApprovals(list) {
  clear(ui.approvals);
  for (const a of list) {
    const id = approvalId(a);
    const payload = a.payload ?? a;
    ui.approvals.append(
      el(
        'div',
        { class: 'approval', 'data-approval': id },
        el('strong', {}, 'Approval requested: '),
        describeInterrupt(payload),
        a.tool || payload.tool ? el('div', { class: 'mono small' }, `${a.tool || payload.tool} ${JSON.stringify(a.args || payload.args || {})}`) : null,
        el(
          'div',
          { class: 'row gap-top' },
          el('button', { class: 'good', 'data-approve': id, onclick: () => decide(id, true) }, 'Approve'),
          el('button', { class: 'danger', 'data-deny': id, onclick: () => decide(id, false) }, 'Deny'),
        ),
      ),
    );
  }
}

function renderTranscript(messages) {
  const json = JSON.stringify(messages);
  if (json === desk.shownTranscript) return;
  desk.shownTranscript = json;
  clear(ui.transcript);
  for (const m of messages) {
    const role = messageRole(m);
    const name = m.author || m.name;
    const label = { user: 'Customer', assistant: m.handler ? `Bot · ${m.handler}` : 'Bot', agent: typeof name === 'string' ? `Agent ${name}` : 'Agent', tool: 'Tool', system: 'System' }[role];
    ui.transcript.append(el('div', { class: `msg ${role}` }, el('span', { class: 'who' }, label), messageText(m)));
  }
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function candidatesOf(step) {
  const c = step.candidates || step.scores || step.top || [];
  if (Array.isArray(c)) {
    return c.map((x) => (Array.isArray(x) ? { label: x[0], score: x[1] } : { label: x.intent ?? x.label ?? x.name ?? x.handler, score: x.score ?? x.confidence ?? x.probability }));
  }
  if (c && typeof c === 'object') return Object.entries(c).map(([label, score]) => ({ label, score }));
  return [];
}

function renderRouting(trace) {
  clear(ui.routing);
  if (!trace || !trace.length) {
    ui.routing.append(el('p', { class: 'muted small' }, 'No routing decisions recorded.'));
    return;
  }
  const rows = trace.map((step, i) => {
    const cands = candidatesOf(step)
      .slice(0, 3)
      .map((c) => `${c.label} ${typeof c.score === 'number' ? c.score.toFixed(2) : ''}`)
      .join(' · ');
    const conf = step.confidence ?? step.score;
    return el(
      'tr',
      {},
      el('td', { class: 'small muted' }, String(step.turn ?? i + 1)),
      el('td', { class: 'small' }, step.text ?? step.message ?? ''),
      el('td', {}, step.intent ?? step.decision ?? step.label ?? '', step.outcome && step.outcome !== 'intent' ? el('div', { class: 'small muted' }, step.outcome) : null),
      el('td', {}, step.handler ?? step.route ?? step.kind ?? ''),
      el('td', { class: 'mono' }, typeof conf === 'number' ? conf.toFixed(2) : ''),
      el('td', { class: 'small muted' }, cands || step.reason || (Array.isArray(step.reasons) ? step.reasons.join('; ') : '')),
    );
  });
  ui.routing.append(
    el(
      'table',
      { id: 'routing-table' },
      el('thead', {}, el('tr', {}, ['#', 'Message', 'Intent', 'Handler', 'Conf.', 'Candidates'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows),
    ),
  );
}

function renderDetail(d) {
  desk.detail = d;
  ui.empty.classList.add('hidden');
  ui.body.classList.remove('hidden');
  clear(ui.title).append('Conversation ', el('span', { class: 'mono' }, d.conversation_id || desk.selected));
  const h = { ...(d.handoff && typeof d.handoff === 'object' ? d.handoff : {}), ...d };
  clear(ui.meta).append(
    [
      h.customer_id && `customer ${h.customer_id}`,
      h.status && `status ${h.status}`,
      h.assigned_to && `assigned to ${h.assigned_to}`,
      h.priority && `priority ${h.priority}`,
      h.reason && `reason ${h.reason}`,
      h.sla_due_ms && `SLA due ${fmtTime(h.sla_due_ms)}`,
    ]
      .filter(Boolean)
      .join(' · '),
  );
  renderSummary(d.summary);
  if (d.slots && typeof d.slots === 'object' && Object.keys(d.slots).length) {
    ui.summary.append(el('div', { class: 'small' }, 'Slots: ', el('span', { class: 'mono' }, JSON.stringify(d.slots))));
  }
  const calls = d.tool_calls || [];
  if (calls.length) {
    ui.summary.append(
      el('div', { class: 'small', id: 'tool-calls' }, `Tool calls: ${calls.map((c) => `${c.name || c.tool}${c.outcome || c.status ? ` (${c.outcome || c.status})` : ''}`).join(', ')}`),
    );
  }
  renderApprovals(d.pending_approvals || d.approvals || d.interrupts || []);
  renderTranscript(d.transcript || d.messages || []);
  renderRouting(d.routing_trace || d.routing || d.trace || []);
}

async function loadDetail() {
  if (!desk.selected || !desk.available) return;
  try {
    renderDetail(await api('GET', deskPath(desk.selected)));
  } catch (e) {
    showError(ui.error, e);
  }
}

async function select(id) {
  desk.selected = id;
  desk.shownTranscript = '';
  clear(ui.result);
  renderQueue();
  await loadDetail();
}

async function act(label, fn) {
  clear(ui.result);
  try {
    await fn();
    ui.result.className = 'small notice ok';
    ui.result.append(label);
  } catch (e) {
    ui.result.className = 'small notice error';
    ui.result.append(`${label} failed: ${e.message}`);
  }
  await loadQueue();
  await loadDetail();
}

async function claimConversation(id) {
  localStorage.setItem(AGENT_STORE, agentName());
  desk.selected = id;
  await act(`Claimed by ${agentName()}`, () => api('POST', deskPath(id, '/claim'), { agent: agentName() }));
}

async function decide(interruptId, approve) {
  if (!desk.selected) return;
  const id = desk.selected;
  await act(approve ? 'Approved' : 'Denied', () =>
    api('POST', deskPath(id, `/approvals/${encodeURIComponent(interruptId)}`), { approve }),
  );
}

$('#reply').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = ui.replyText.value.trim();
  if (!text || !desk.selected) return;
  const id = desk.selected;
  await act('Reply sent', async () => {
    await api('POST', deskPath(id, '/messages'), { text });
    ui.replyText.value = '';
  });
});

$('#handback').addEventListener('click', async () => {
  if (!desk.selected) return;
  const id = desk.selected;
  await act('Handed back to the bot', () => api('POST', deskPath(id, '/handback'), {}));
});

async function start() {
  desk.available = true;
  if (!apiKey()) {
    showError(ui.error, new Error('Enter an API key with the desk or admin scope above.'));
    return;
  }
  const wanted = new URL(window.location.href).searchParams.get('conversation');
  await loadQueue();
  if (wanted) await select(wanted);
}

setInterval(() => {
  if (document.visibilityState !== 'visible') return;
  loadQueue();
  loadDetail();
}, POLL_MS);
setInterval(tick, 1000);

header('/desk', () => start());
start();
