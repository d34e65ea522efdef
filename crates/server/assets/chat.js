import {
  api, apiKey, stream, el, clear, header, showError, messageText, messageRole, describeInterrupt, $,
} from '/assets/common.js';

const CONV_STORE = 'switchboard.chat.conversation';
const POLL_MS = 2500;

const ui = {
  assistant: $('#assistant'),
  customer: $('#customer'),
  info: $('#conversation-info'),
  error: $('#error'),
  transcript: $('#transcript'),
  pending: $('#pending'),
  input: $('#message'),
  send: $('#send'),
};

const chat = {
  id: null,
  streaming: false,
  shown: '', // JSON of the messages last rendered from the state
  routing: [], // routing line per customer message, by index
  interrupts: [],
  status: '',
  fromState: false, // the assistant keeps its pending approval in the state
  handoff: null, // the assistant's handoff record, when it keeps one in the state
};

const WITH_HUMAN = {
  'handoff-requested': 'You asked for a person: connecting you to a support agent…',
  queued: 'You are in the queue for a support agent. You can keep writing here.',
  'agent-assigned': 'A support agent has your conversation and will write shortly.',
  'agent-active': 'You are chatting with a support agent.',
};

function routingLine(values) {
  if (!values || typeof values !== 'object') return null;
  let r = values.routing || values.route_decision || values.decision;
  if (Array.isArray(r)) r = r[r.length - 1];
  if (r && typeof r !== 'object') r = null;
  const intent = (r && (r.intent || r.top_intent || r.label || r.outcome)) || values.intent;
  if (!intent || Array.isArray(intent)) return null;
  const conf = (r && (r.confidence ?? r.score)) ?? values.confidence;
  const handler = (r && (r.handler || r.route || r.kind)) || values.handler || values.route;
  const outcome = r && r.outcome && r.outcome !== 'intent' ? ` [${r.outcome}]` : '';
  let s = `routed: ${typeof intent === 'string' ? intent : JSON.stringify(intent)}${outcome}`;
  if (typeof conf === 'number') s += ` (${conf.toFixed(2)})`;
  if (handler && typeof handler === 'string') s += ` → ${handler}`;
  return s;
}

function bubble(role, text, extra) {
  const who = { user: 'You', assistant: 'Assistant', agent: 'Agent', tool: 'Tool', system: 'System' }[role] || role;
  return el('div', { class: `msg ${role}${extra ? ` ${extra}` : ''}` }, el('span', { class: 'who' }, who), text);
}

function scrollDown() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function renderMessages(messages) {
  clear(ui.transcript);
  let userIndex = -1;
  let annotated = true;
  for (const m of messages) {
    const role = messageRole(m);
    if (role === 'tool') continue;
    const name = m.author || m.name;
    const who = role === 'agent' && typeof name === 'string' ? `Agent ${name}` : null;
    const b = bubble(role, messageText(m));
    if (who) b.querySelector('.who').textContent = who;
    ui.transcript.append(b);
    if (role === 'user') {
      userIndex += 1;
      annotated = false;
    } else if (!annotated && chat.routing[userIndex]) {
      ui.transcript.append(el('div', { class: 'routing' }, chat.routing[userIndex]));
      annotated = true;
    }
  }
  scrollDown();
}

function renderPending() {
  clear(ui.pending);
  const h = chat.handoff;
  const key = h && typeof h.status === 'string' ? h.status.replace(/_/g, '-') : '';
  if (WITH_HUMAN[key]) {
    const who = h.assigned_to && key.startsWith('agent') ? ` (${h.assigned_to})` : '';
    ui.pending.append(el('div', { class: 'notice', id: 'handoff-status', 'data-status': key }, WITH_HUMAN[key] + who));
  }
  if (chat.interrupts.length) {
    for (const i of chat.interrupts) {
      const p = i.payload && typeof i.payload === 'object' ? i.payload : {};
      const approval = p.type === 'approval' || p.tool !== undefined;
      ui.pending.append(
        el(
          'div',
          { class: 'approval', id: 'pending-approval', 'data-kind': approval ? 'approval' : 'human' },
          el('strong', {}, approval ? 'Waiting for approval: ' : 'Waiting for a support agent: '),
          describeInterrupt(i.payload),
          el('div', { class: 'small muted' }, approval ? 'A support agent reviews this request.' : 'An agent will answer here.'),
        ),
      );
    }
  } else if (chat.status === 'interrupted' && !chat.fromState) {
    ui.pending.append(el('div', { class: 'approval', id: 'pending-approval' }, 'Waiting for a support agent…'));
  }
}

async function refresh() {
  const id = chat.id;
  if (!id) return;
  const [state, conv] = await Promise.all([
    api('GET', `/v1/conversations/${id}/state`),
    api('GET', `/v1/conversations/${id}`),
  ]);
  // Another conversation was opened while this one was read: its answer is stale.
  if (chat.id !== id) return;
  const messages = (state.values && state.values.messages) || [];
  const json = JSON.stringify(messages);
  if (json !== chat.shown) {
    chat.shown = json;
    renderMessages(messages);
  }
  chat.status = conv.status;
  const v = state.values || {};
  chat.fromState = Object.hasOwn(v, 'pending_approval');
  if (chat.fromState) {
    // The assistant keeps its pending approval in the state: that is the truth, whoever resolved it.
    chat.interrupts = v.pending_approval ? [{ payload: { type: 'approval', ...v.pending_approval } }] : [];
  } else if (conv.status !== 'interrupted') {
    chat.interrupts = [];
  }
  chat.handoff = v.handoff && typeof v.handoff === 'object' ? v.handoff : null;
  renderPending();
}

function setConversation(id) {
  chat.id = id;
  chat.shown = '';
  chat.routing = [];
  chat.interrupts = [];
  chat.handoff = null;
  if (id) localStorage.setItem(CONV_STORE, id);
  clear(ui.info);
  if (id) {
    ui.info.append('conversation ', el('span', { class: 'mono', id: 'conversation-id' }, id), ' · ');
    ui.info.append(el('a', { href: `/inspector?conversation=${encodeURIComponent(id)}` }, 'inspect'));
  }
  ui.input.disabled = !id;
  ui.send.disabled = !id;
  clear(ui.transcript);
  clear(ui.pending);
}

async function loadAssistants() {
  clear(ui.assistant);
  if (!apiKey()) {
    showError(ui.error, new Error('Enter an API key (chat or admin scope) above to start.'));
    return;
  }
  const a = await api('GET', '/v1/assistants');
  const wanted = new URL(window.location.href).searchParams.get('assistant');
  const names = a.items.map((x) => x.id);
  const pick = names.includes(wanted) ? wanted : names.includes('exchange-support') ? 'exchange-support' : a.default;
  for (const n of names) ui.assistant.append(el('option', { value: n, selected: n === pick }, n));
}

async function send(text) {
  const id = chat.id;
  chat.streaming = true;
  ui.send.disabled = true;
  ui.transcript.append(bubble('user', text));
  const replyText = document.createTextNode('');
  const reply = bubble('assistant', replyText, 'streaming');
  ui.transcript.append(reply);
  scrollDown();
  const userIndex = JSON.parse(chat.shown || '[]').filter((m) => messageRole(m) === 'user').length;
  let streamed = '';
  let failed = false;
  try {
    await stream('POST', `/v1/conversations/${id}/messages`, { text }, ({ event, data }) => {
      if (event === 'token' && data && typeof data.delta === 'string') {
        streamed += data.delta;
        replyText.data = streamed;
        scrollDown();
      } else if ((event === 'update' && data && data.update) || (event === 'values' && data && data.state)) {
        const line = routingLine(data.update || data.state);
        if (line) chat.routing[userIndex] = line;
      } else if (event === 'interrupt' && data) {
        chat.interrupts = [{ node: data.node, payload: data.payload }];
        renderPending();
      } else if (event === 'result' && data) {
        if (data.reply) replyText.data = messageText(data.reply);
        chat.interrupts = data.interrupts || [];
      } else if (event === 'error' && data) {
        const err = data.error || data;
        failed = true;
        showError(ui.error, new Error(`${err.message || JSON.stringify(err)}${err.code ? ` (${err.code})` : ''}`));
      }
    });
    if (!failed) showError(ui.error, null);
  } catch (e) {
    showError(ui.error, e);
  } finally {
    reply.classList.remove('streaming');
    chat.streaming = false;
    ui.send.disabled = false;
  }
  try {
    chat.shown = '';
    await refresh();
  } catch (e) {
    showError(ui.error, e);
  }
}

$('#start').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const body = { assistant: ui.assistant.value || undefined };
    if (ui.customer.value.trim()) body.customer_id = ui.customer.value.trim();
    const conv = await api('POST', '/v1/conversations', body);
    setConversation(conv.id);
    showError(ui.error, null);
    ui.input.focus();
  } catch (err) {
    showError(ui.error, err);
  }
});

$('#composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (!text || !chat.id || chat.streaming) return;
  ui.input.value = '';
  send(text);
});

async function start() {
  try {
    await loadAssistants();
    const params = new URL(window.location.href).searchParams;
    if (params.get('customer')) ui.customer.value = params.get('customer');
    const id = params.get('conversation') || localStorage.getItem(CONV_STORE);
    if (id && apiKey()) {
      setConversation(id);
      try {
        await refresh();
        showError(ui.error, null);
      } catch (e) {
        setConversation(null);
        localStorage.removeItem(CONV_STORE);
      }
    }
  } catch (e) {
    showError(ui.error, e);
  }
}

setInterval(async () => {
  if (!chat.id || chat.streaming || document.visibilityState !== 'visible') return;
  try {
    await refresh();
  } catch (e) {
    showError(ui.error, e);
  }
}, POLL_MS);

header('/chat', () => start());
start();
