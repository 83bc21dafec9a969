// The dashboard's entry point: asks for the admin key once (kept in this
// tab's sessionStorage), then polls /v1/stats, /v1/cluster and /v1/raft
// every POLL_MS and redraws; drain and leadership transfer are confirmed
// first.

import { $, h, setText, show, int, rate } from './dom.js';
import { get, post, describe, adminKey, setAdminKey, forgetAdminKey, ApiError } from './api.js';
import { render, record } from './topology.js';
import { confirmAction } from './confirm.js';
import { initLookup } from './lookup.js';
import { initDrills, setTargets, loadHistory } from './drill.js';

const POLL_MS = 2000;
let pollTimer = 0;
let polling = false;
let last = { cluster: null, stats: null, raft: null };
let transferFrom = ''; // the leader that handed over, until a new one is known
let self = ''; // the id of the node serving this page (GET /healthz)

// whoAmI learns which node serves the page: its health answer names it,
// without a key.
async function whoAmI() {
  try {
    const res = await fetch('/healthz', { cache: 'no-store', signal: AbortSignal.timeout(5000) });
    const body = await res.json();
    self = typeof body.node === 'string' ? body.node : '';
  } catch {
    self = '';
  }
}

// status shows the polling state, and the time of the last poll where
// there is room for it.
function status(kind, text, time = '') {
  const pill = $('#poll-status');
  pill.dataset.status = kind;
  pill.replaceChildren(text, time ? h('span', { class: 'pill-time' }, ` · ${time}`) : '');
}

let notice = { text: '', until: 0 }; // an action's outcome, shown for a few seconds

function banner(text, kind = 'error') {
  const b = $('#banner');
  b.dataset.kind = kind;
  setText(b, text || '');
  show(b, !!text);
}

// note shows an action's outcome until the polls have something more
// pressing to say (an error), or for NOTE_MS.
const NOTE_MS = 8000;
function note(text) {
  notice = { text, until: Date.now() + NOTE_MS };
  banner(text, 'info');
}

// signIn shows the key form; message says why (a refused key).
function signIn(message) {
  polling = false;
  clearTimeout(pollTimer);
  show($('#app'), false);
  show($('#sign-out'), false);
  status('idle', 'not connected');
  const err = $('#login-error');
  setText(err, message || '');
  show(err, !!message);
  const dlg = $('#login');
  if (!dlg.open) dlg.showModal();
  $('#admin-key').focus();
}

async function submitKey(e) {
  e.preventDefault();
  const key = $('#admin-key').value.trim();
  if (!key) return;
  setAdminKey(key);
  $('#login-submit').disabled = true;
  try {
    await get('/v1/cluster');
  } catch (err) {
    $('#login-submit').disabled = false;
    if (err instanceof ApiError && err.status === 401) forgetAdminKey();
    const err2 = $('#login-error');
    setText(err2, err.status === 401 ? 'This admin key was refused.' : `Cannot reach the admin API: ${describe(err)}`);
    show(err2, true);
    return;
  }
  $('#login-submit').disabled = false;
  $('#admin-key').value = '';
  $('#login').close();
  start();
}

function start() {
  show($('#app'), true);
  show($('#sign-out'), true);
  polling = true;
  loadHistory();
  whoAmI().finally(poll);
}

// poll fetches the three views at once, draws what arrived, and schedules
// the next poll; one failing view does not blank the others.
async function poll() {
  clearTimeout(pollTimer);
  if (!polling) return;
  const [stats, cluster, raft] = await Promise.allSettled([get('/v1/stats'), get('/v1/cluster'), get('/v1/raft')]);
  if (!polling) return;
  const results = { stats, cluster, raft };
  const errors = [];
  for (const [name, r] of Object.entries(results)) {
    if (r.status === 'fulfilled') last[name] = r.value;
    else {
      if (r.reason instanceof ApiError && r.reason.status === 401) {
        forgetAdminKey();
        signIn('The admin key was refused; enter it again.');
        return;
      }
      errors.push(`/v1/${name}: ${describe(r.reason)}`);
    }
  }
  if (stats.status === 'fulfilled') record(stats.value.nodes || []);
  draw();
  if (errors.length) banner(errors.join(' · '));
  else if (Date.now() < notice.until) banner(notice.text, 'info');
  else banner('');
  const now = new Date().toLocaleTimeString();
  status(errors.length ? 'error' : 'ok', errors.length ? 'degraded' : 'live', now);
  pollTimer = setTimeout(poll, POLL_MS);
}

function draw() {
  const { cluster, stats, raft } = last;
  if (cluster) {
    render($('#topology'), cluster, stats ? stats.nodes : null, drain, self);
    setTargets(cluster.nodes, self);
    const live = cluster.nodes.filter((n) => n.state === 'alive' || n.state === 'suspect' || n.state === 'draining').length;
    setText($('#sum-leader'), cluster.leader || 'none');
    setText($('#sum-term'), int(cluster.term));
    setText($('#sum-nodes'), `${live} live / ${cluster.nodes.length}`);
    setText($('#sum-durability'), cluster.durability || '–');
    $('#sum-durability').dataset.value = cluster.durability || '';
    $('#sum-leader').dataset.value = cluster.leader ? 'ok' : 'none';
    if (transferFrom && cluster.leader && cluster.leader !== transferFrom) {
      setText($('#raft-result'), `Leadership moved from ${transferFrom} to ${cluster.leader}.`);
      transferFrom = '';
    }
  }
  if (stats) {
    const sum = (k) => (stats.nodes || []).reduce((a, n) => a + (n[k] || 0), 0);
    setText($('#sum-publish'), `${rate(sum('publish_rate'))}/s`);
    setText($('#sum-delivery'), `${rate(sum('delivery_rate'))}/s`);
  }
  if (raft) drawRaft(raft);
}

function drawRaft(r) {
  setText($('#raft-leader'), r.leader || 'none');
  setText($('#raft-term'), int(r.term));
  setText($('#raft-commit'), int(r.commit_index));
  setText($('#raft-applied'), int(r.applied_index));
  const rows = (r.servers || []).map((s) => h('tr', { 'data-server': s.id, 'data-leader': String(s.id === r.leader) },
    h('td', {}, s.id, s.id === r.leader ? h('span', { class: 'badge leader' }, '★ Leader') : ''),
    h('td', {}, s.suffrage),
    h('td', {}, s.region ? `${s.region} / ${s.zone}` : '–'),
    h('td', { class: 'mono' }, s.address)));
  const body = $('#raft-servers tbody');
  const next = h('tbody', {}, rows);
  if (body.innerHTML !== next.innerHTML) body.replaceWith(next);
}

async function drain(id) {
  const ok = await confirmAction(`Drain ${id}?`,
    `${id} stops taking clients, hands its sessions and channels to other nodes, moves its connections away and leaves the cluster. Its process then exits.` +
    (id === self ? ` ${id} serves this page: open another node's /ui/ to keep watching.` : ''),
    `Drain ${id}`);
  if (!ok) return;
  try {
    const res = await post(`/v1/nodes/${encodeURIComponent(id)}/drain`);
    note(`${res.node} is ${res.state}: its clients move to other nodes, then it leaves.`);
  } catch (err) {
    banner(`Drain ${id}: ${describe(err)}`);
  }
  poll();
}

async function transfer() {
  const leader = last.cluster ? last.cluster.leader : '';
  const ok = await confirmAction('Transfer Raft leadership?',
    `${leader || 'The leader'} hands leadership to another voter. Registry writes pause for the election (typically well under a second).`,
    'Transfer leadership');
  if (!ok) return;
  const out = $('#raft-result');
  out.classList.remove('error');
  try {
    const res = await post('/v1/raft/transfer-leadership');
    if (res.leader && res.leader !== res.previous) {
      setText(out, `Leadership moved from ${res.previous} to ${res.leader}.`);
    } else {
      // The answer may come before the election ends: the polls tell
      // when a new leader is known (draw).
      transferFrom = res.previous || leader || '?';
      setText(out, `${transferFrom} handed leadership over; electing a new leader…`);
    }
  } catch (err) {
    out.classList.add('error');
    setText(out, describe(err));
  }
  show(out, true);
  poll();
}

function init() {
  $('#login-form').addEventListener('submit', submitKey);
  $('#login').addEventListener('cancel', (e) => e.preventDefault()); // the key is needed
  $('#sign-out').addEventListener('click', () => {
    forgetAdminKey();
    signIn('');
  });
  $('#transfer-leadership').addEventListener('click', transfer);
  initLookup();
  initDrills();
  if (adminKey()) start();
  else signIn('');
}

init();
