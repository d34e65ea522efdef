// Shared by the Switchboard pages: the API key, JSON calls, server-sent events read from a fetch
// body, safe DOM building (data always inserted as text, never parsed as markup), and small formatting helpers.
// Everything talks to the same origin; nothing is loaded from anywhere else.

const KEY_STORE = 'switchboard.apiKey';

/** The API key: `?key=` (then stored and removed from the address bar) or the stored one. */
export function apiKey() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get('key');
  if (fromUrl) {
    localStorage.setItem(KEY_STORE, fromUrl.trim());
    url.searchParams.delete('key');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  return localStorage.getItem(KEY_STORE) || '';
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key.trim());
  else localStorage.removeItem(KEY_STORE);
}

/** An error answered by the API: `{"error":{"code","message"}}` and the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(resp) {
  const text = await resp.text();
  let err = {};
  try {
    err = JSON.parse(text).error || {};
  } catch {
    err = {};
  }
  return new ApiError(resp.status, err.code || `http_${resp.status}`, err.message || text || resp.statusText);
}

/** Calls the JSON API; resolves to the parsed body, rejects with an ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/**
 * Sends a request that answers with `text/event-stream` and calls `onEvent({event, data, id})`
 * for each event (data parsed as JSON when it is JSON). Resolves when the stream ends.
 */
export async function stream(method, path, body, onEvent, signal) {
  const extra = { Accept: 'text/event-stream' };
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  const init = { method, headers: headers(extra), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let ev = { event: 'message', data: [], id: null };
  const dispatch = () => {
    if (ev.data.length) {
      const raw = ev.data.join('\n');
      let data = raw;
      try {
        data = JSON.parse(raw);
      } catch {
        data = raw;
      }
      onEvent({ event: ev.event, data, id: ev.id });
    }
    ev = { event: 'message', data: [], id: null };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        dispatch();
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') ev.event = val;
      else if (field === 'data') ev.data.push(val);
      else if (field === 'id') ev.id = val;
    }
  }
  dispatch();
}

/** Builds an element: `el('div', {class: 'x', onclick: f}, 'text', child)`. Text is never parsed as HTML. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function $(sel) {
  return document.querySelector(sel);
}

/** A message's text, whatever the assistant calls the field. */
export function messageText(m) {
  if (m === null || m === undefined) return '';
  if (typeof m === 'string') return m;
  const c = m.content ?? m.text ?? m.message;
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return c.map((p) => (typeof p === 'string' ? p : p.text ?? '')).join('');
  return JSON.stringify(c ?? m);
}

/** The displayed role of a message: user, assistant, agent (a human), tool or system. */
export function messageRole(m) {
  const r = String((m && (m.role || m.author || m.from)) || 'assistant').toLowerCase();
  if (r === 'human' || r === 'customer') return 'user';
  if (r.includes('agent') && r !== 'assistant') return 'agent';
  if (['user', 'assistant', 'tool', 'system', 'agent'].includes(r)) return r;
  return 'assistant';
}

/** One line describing a pending interrupt (an approval request, a handoff, ...). */
export function describeInterrupt(payload) {
  if (payload === null || payload === undefined) return 'waiting for a human';
  if (typeof payload === 'string') return payload;
  const text = payload.prompt || payload.question || payload.message || payload.summary || payload.description;
  if (text) return String(text);
  const tool = payload.tool || payload.tool_name || payload.name;
  if (tool) return `${tool}(${JSON.stringify(payload.args || payload.arguments || {})})`;
  if (payload.reason) return `reason: ${payload.reason}`;
  return JSON.stringify(payload);
}

export function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** "3m 05s", "-1m 10s" for overdue. */
export function fmtDuration(ms) {
  const sign = ms < 0 ? '-' : '';
  let s = Math.floor(Math.abs(ms) / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const ss = String(s).padStart(2, '0');
  return h ? `${sign}${h}h ${String(m).padStart(2, '0')}m` : `${sign}${m}m ${ss}s`;
}

/** The shared header: navigation and the API key form. `onKey` runs when a key is saved. */
export function header(here, onKey) {
  const pages = [
    ['/', 'Home'],
    ['/chat', 'Chat'],
    ['/desk', 'Agent desk'],
    ['/inspector', 'Inspector'],
  ];
  const input = el('input', {
    id: 'api-key',
    type: 'password',
    placeholder: 'API key (sb_...)',
    autocomplete: 'off',
    value: apiKey(),
  });
  const save = el('button', { id: 'save-key', class: 'secondary', type: 'submit' }, 'Use key');
  const form = el('form', { class: 'keybar' }, input, save);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setApiKey(input.value);
    if (onKey) onKey(input.value.trim());
  });
  const bar = el(
    'header',
    { class: 'top' },
    el('h1', {}, 'Switchboard'),
    el('nav', {}, pages.map(([href, name]) => el('a', { href, class: href === here ? 'here' : '' }, name))),
    el('span', { class: 'spacer' }),
    form,
  );
  document.body.prepend(bar);
  return bar;
}

/** Shows an error (or clears it with null) in a `.notice.error` element. */
export function showError(node, err) {
  if (!err) {
    node.classList.add('hidden');
    clear(node);
    return;
  }
  node.classList.remove('hidden');
  const text = err instanceof ApiError ? `${err.message} (${err.status} ${err.code})` : String(err.message || err);
  clear(node).append(text);
}

/** JSON pretty-printed into a `<pre>`. */
export function jsonBlock(value) {
  return el('pre', { class: 'json' }, JSON.stringify(value, null, 2));
}
