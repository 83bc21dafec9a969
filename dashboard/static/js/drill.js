// The drill panel: start a failover drill on the node (POST /v1/drills,
// the engine of `sbctl drill`), watch its progress (GET /v1/drills/{id})
// and read its report. Errors (a 400 or 409, or a node without drills)
// are shown with the node's message.

import { $, h, setText, show, int, ms } from './dom.js';
import { get, post, describe } from './api.js';
import { confirmAction } from './confirm.js';

const WATCH_MS = 1000;
let watching = null; // id of the drill being watched
let timer = 0;

// setTargets offers the live nodes as drill targets, keeping the choice.
// The node serving this page runs the drill, so it cannot be the target.
export function setTargets(nodes, self) {
  const sel = $('#drill-target');
  const live = nodes.filter((n) => n.state === 'alive' && n.id !== self).map((n) => n.id).sort();
  const hint = $('#drill-hint');
  setText(hint, self ? `The drill runs on ${self}, the node serving this page, so ${self} cannot be its target.` : '');
  show(hint, !!self);
  const have = [...sel.options].map((o) => o.value);
  if (have.join() === live.join()) return;
  const keep = sel.value;
  sel.replaceChildren(...live.map((id) => h('option', { value: id }, id)));
  if (live.includes(keep)) sel.value = keep;
}

function fail(err) {
  const box = $('#drill-error');
  let msg = describe(err);
  if (err && err.status === 404 && !watching) msg = `Drills are not available on this node (${msg}).`;
  setText(box, msg);
  show(box, true);
}

async function start(e) {
  e.preventDefault();
  show($('#drill-error'), false);
  const f = e.target;
  const body = {
    target: f.target.value,
    fault: f.fault.value,
    users: Number(f.users.value),
    rate: Number(f.rate.value),
    duration_ms: Math.round(Number(f.duration.value) * 1000),
  };
  if (!body.target) {
    fail(new Error('pick a target node'));
    return;
  }
  const ok = await confirmAction(`Run a ${body.fault} drill on ${body.target}?`,
    `${body.users} users, ${body.rate} msg/s for ${body.duration_ms / 1000} s. ` +
    (body.fault === 'drain' ? `${body.target} will drain and leave the cluster.` :
      `${body.target} will ${body.fault === 'crash' ? 'crash' : 'be cut off from the cluster'}; its clients must fail over.`),
    'Start drill');
  if (!ok) return;
  $('#drill-start').disabled = true;
  try {
    const d = await post('/v1/drills', body);
    watch(d);
  } catch (err) {
    $('#drill-start').disabled = false;
    fail(err);
  }
}

function watch(d) {
  watching = d.id;
  show($('#drill-report'), false);
  renderDrill(d);
  clearTimeout(timer);
  const tick = async () => {
    if (watching !== d.id) return;
    try {
      const cur = await get(`/v1/drills/${encodeURIComponent(d.id)}`);
      renderDrill(cur);
      if (cur.state === 'running') timer = setTimeout(tick, WATCH_MS);
      else finish();
    } catch (err) {
      fail(err);
      timer = setTimeout(tick, WATCH_MS * 3);
    }
  };
  timer = setTimeout(tick, WATCH_MS);
}

function finish() {
  watching = null;
  $('#drill-start').disabled = false;
  loadHistory();
}

function stat(label, value, field) {
  return h('div', { class: 'stat', 'data-field': field }, h('span', { class: 'v' }, value), h('span', { class: 'k' }, label));
}

// renderDrill shows a drill's progress and, once it ended, its report.
export function renderDrill(d) {
  const box = $('#drill-progress');
  const p = d.progress || {};
  const total = d.duration_ms || 1;
  const pct = Math.min(100, Math.round(((p.elapsed_ms || 0) / total) * 100));
  const bar = h('div', { class: 'bar' }, h('span', {}));
  bar.firstChild.style.width = `${d.state === 'running' ? pct : 100}%`;
  box.replaceChildren(
    h('div', { class: 'drill-head' },
      h('strong', {}, `${d.fault || '?'} · ${d.target || '?'}`),
      h('span', { class: 'badge', 'data-drill-state': d.state, id: 'drill-state' }, d.state),
      h('span', { class: 'muted' }, p.phase ? `phase: ${p.phase}` : ''),
      h('span', { class: 'muted' }, `${ms(p.elapsed_ms || 0)} / ${ms(total)}`)),
    bar,
    h('div', { class: 'stats' },
      stat('connected', int(p.connected), 'connected'),
      stat('sent', int(p.sent), 'sent'),
      stat('acked', int(p.acked), 'acked'),
      stat('delivered', int(p.delivered), 'delivered'),
      stat('errors', int(p.errors), 'errors')));
  box.dataset.drill = d.id;
  show(box, true);
  if (d.error) fail(new Error(`drill ${d.state}: ${d.error}`));
  else show($('#drill-error'), false);
  if (d.report && d.state !== 'running') renderReport(d.report);
  else show($('#drill-report'), false);
}

// The report's figures of sbctl drill (DESIGN.md §6), in its order. A
// "must" figure above 0 breaks a guarantee (G1–G3), as sbctl drill's exit
// status says; a "warn" one is worth a look.
const REPORT = [
  ['users', 'Users', int],
  ['affected', 'On the target at the fault', int],
  ['acked', 'Acked', int],
  ['lost', 'Lost', int, 'must'],
  ['duplicated', 'Duplicated', int, 'must'],
  ['gaps', 'Gaps', int, 'must'],
  ['out_of_order', 'Out of order', int, 'must'],
  ['resumed', 'Resumed', int],
  ['continuity_lost', 'Continuity lost', int, 'warn'],
  ['rto_p50_ms', 'RTO p50', ms],
  ['rto_p99_ms', 'RTO p99', ms],
  ['rto_max_ms', 'RTO max', ms],
  ['new_owner_ms', 'Time to a new owner', ms],
];

const scalar = (v) => typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean';

function row(k, label, value, cls = '') {
  return h('tr', { 'data-field': k, class: cls }, h('th', {}, label), h('td', {}, value));
}

function renderReport(r) {
  const broken = REPORT.filter(([k, , , level]) => level === 'must' && r[k] > 0).map(([, label]) => label.toLowerCase());
  let verdict = broken.length ? `FAIL: ${broken.join(', ')}` : 'PASS: nothing lost, duplicated, gapped or out of order';
  if (!broken.length && r.continuity_lost > 0) verdict += ` · ${r.continuity_lost} users lost continuity`;
  const known = new Set(REPORT.map(([k]) => k));
  const main = REPORT.filter(([k]) => k in r).map(([k, label, fmt, level]) =>
    row(k, label, fmt(r[k]), r[k] > 0 && level === 'must' ? 'bad' : r[k] > 0 && level === 'warn' ? 'warn' : ''));
  // The engine's other figures, as they come, out of the way.
  const rest = Object.entries(r).filter(([k, v]) => !known.has(k) && scalar(v))
    .map(([k, v]) => row(k, k.replaceAll('_', ' '), typeof v === 'number' && k.endsWith('_ms') ? ms(v) : String(v)));
  const box = $('#drill-report');
  box.replaceChildren(
    h('p', { class: `verdict ${broken.length ? 'bad' : 'good'}`, 'data-verdict': broken.length ? 'fail' : 'pass' }, verdict),
    h('table', {}, h('tbody', {}, main)),
    rest.length ? h('details', {}, h('summary', {}, 'All figures'), h('table', {}, h('tbody', {}, rest))) : '');
  show(box, true);
}

export async function loadHistory() {
  const box = $('#drill-history');
  try {
    const { drills = [] } = (await get('/v1/drills')) || {};
    if (!drills.length) {
      box.replaceChildren(h('p', { class: 'muted' }, 'No drills yet.'));
      return;
    }
    const running = drills.find((d) => d.state === 'running');
    if (running && !watching) watch(running);
    box.replaceChildren(h('ul', { class: 'history' }, drills.map((d) =>
      h('li', {},
        h('button', { type: 'button', class: 'link', onclick: () => { renderDrill(d); } },
          `${d.started_at ? new Date(d.started_at).toLocaleTimeString() : ''} ${d.fault} ${d.target}`),
        h('span', { class: 'badge', 'data-drill-state': d.state }, d.state)))));
  } catch (err) {
    const msg = err && err.status === 404 ? `Drills are not available on this node (${describe(err)}).` : describe(err);
    box.replaceChildren(h('p', { class: 'error' }, msg));
  }
}

export function initDrills() {
  $('#drill-form').addEventListener('submit', start);
}
