import { api, apiKey, el, clear, header, showError, $ } from '/assets/common.js';

async function load() {
  const health = $('#health');
  const list = clear($('#assistants'));
  const error = $('#error');
  showError(error, null);
  try {
    const h = await fetch('/healthz').then((r) => r.json());
    clear(health).append(`health: ${h.status}`);
  } catch (e) {
    clear(health).append('health: unreachable');
  }
  if (!apiKey()) {
    list.append(el('p', { class: 'muted' }, 'Enter an API key to list the assistants.'));
    return;
  }
  try {
    const a = await api('GET', '/v1/assistants');
    list.append(
      el('p', {}, `Assistants served (default: ${a.default}):`),
      el(
        'ul',
        { id: 'assistant-list' },
        a.items.map((x) => el('li', {}, el('strong', {}, x.id), ` ${x.version} — ${x.description}`)),
      ),
    );
  } catch (e) {
    showError(error, e);
  }
}

header('/', load);
load();
