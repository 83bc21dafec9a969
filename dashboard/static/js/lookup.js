// Session and channel lookups: GET /v1/sessions/{user} and
// GET /v1/channels/{channel}.

import { $, h, dl, int, show } from './dom.js';
import { get, describe } from './api.js';

function wire(form, input, out, path, rows) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = input.value.trim();
    if (!name) return;
    out.replaceChildren(h('span', { class: 'muted' }, 'Looking up…'));
    out.classList.remove('error');
    show(out, true);
    try {
      const v = await get(path(encodeURIComponent(name)));
      out.replaceChildren(dl(rows(v)));
    } catch (err) {
      out.classList.add('error');
      out.replaceChildren(describe(err));
    }
  });
}

const node = (id) => id || '–';

export function initLookup() {
  wire($('#session-form'), $('#session-user'), $('#session-result'), (u) => `/v1/sessions/${u}`, (s) => [
    ['User', s.user],
    ['Owner', node(s.owner), { 'data-field': 'owner', id: 'session-owner' }],
    ['Backup', node(s.backup), { 'data-field': 'backup' }],
    ['State', s.state, { 'data-field': 'state' }],
    ['Epoch', int(s.epoch)],
    ['Seq', int(s.seq)],
    ['Session', h('code', {}, s.session)],
  ]);
  wire($('#channel-form'), $('#channel-name'), $('#channel-result'), (c) => `/v1/channels/${c}`, (c) => [
    ['Channel', c.channel],
    ['Owner', node(c.owner), { 'data-field': 'owner', id: 'channel-owner' }],
    ['Backup', node(c.backup), { 'data-field': 'backup' }],
    ['Epoch', int(c.epoch)],
    ['Seq', int(c.seq)],
    ['Subscribers', int(c.subscribers), { 'data-field': 'subscribers' }],
    ['On nodes', (c.nodes || []).join(', ') || '–'],
  ]);
}
