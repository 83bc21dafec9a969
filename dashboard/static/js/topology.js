// The cluster as regions → zones → nodes: one card per node, built once
// and updated in place on every poll. Cards carry data attributes
// (data-node, data-region, data-zone, data-state, data-raft,
// data-leader) for scripts and tests.

import { h, setText, int, rate } from './dom.js';
import { sparkline, draw, HISTORY } from './sparkline.js';

const regions = new Map(); // region → {el, zones: Map(zone → {el, nodes})}
const cards = new Map(); // node id → {el, fields, spark, drain}
const history = new Map(); // node id → {pub: [], del: []}

// record adds one poll's rates to each node's history.
export function record(stats) {
  for (const s of stats) {
    let hist = history.get(s.id);
    if (!hist) history.set(s.id, (hist = { pub: [], del: [] }));
    hist.pub.push(s.publish_rate || 0);
    hist.del.push(s.delivery_rate || 0);
    if (hist.pub.length > HISTORY) {
      hist.pub.shift();
      hist.del.shift();
    }
  }
}

function region(root, name) {
  let r = regions.get(name);
  if (!r) {
    const zonesEl = h('div', { class: 'zones' });
    const count = h('span', { class: 'count' });
    const el = h('section', { class: 'region', 'data-region': name },
      h('h3', {}, h('span', { class: 'label' }, 'Region'), ' ', name, count), zonesEl);
    r = { el, zonesEl, count, zones: new Map() };
    regions.set(name, r);
  }
  return r;
}

function zone(r, regionName, name) {
  let z = r.zones.get(name);
  if (!z) {
    const nodesEl = h('div', { class: 'nodes' });
    const el = h('div', { class: 'zone', 'data-region': regionName, 'data-zone': name },
      h('h4', {}, h('span', { class: 'label' }, 'Zone'), ' ', name), nodesEl);
    z = { el, nodesEl };
    r.zones.set(name, z);
  }
  return z;
}

function card(id, onDrain) {
  let c = cards.get(id);
  if (c) return c;
  const f = {};
  const field = (name, cls = '') => (f[name] = h('dd', { 'data-field': name, class: cls }, '–'));
  const drain = h('button', { type: 'button', class: 'small warn', 'data-action': 'drain', 'data-node': id }, 'Drain');
  drain.addEventListener('click', () => onDrain(id));
  const spark = sparkline();
  const el = h('article', { class: 'node', 'data-node': id },
    h('header', {},
      h('span', { class: 'node-title' }, h('span', { class: 'node-id' }, id),
        (f.self = h('span', { class: 'badge self', 'data-field': 'self', title: 'the node serving this page', hidden: true }, 'this console'))),
      (f.leader = h('span', { class: 'badge leader', 'data-field': 'leader', hidden: true }, '★ Leader')),
      (f.raft = h('span', { class: 'badge raft', 'data-field': 'raft' }, '–')),
      (f.state = h('span', { class: 'badge state', 'data-field': 'state' }, '–'))),
    h('dl', { class: 'metrics' },
      h('div', {}, h('dt', {}, 'Conns'), field('connections')),
      h('div', {}, h('dt', {}, 'Sessions'), field('sessions')),
      h('div', {}, h('dt', {}, 'Channels'), field('channels')),
      h('div', { class: 'pub' }, h('dt', {}, 'Pub/s'), field('publish')),
      h('div', { class: 'del' }, h('dt', {}, 'Del/s'), field('delivery'))),
    spark,
    h('footer', {}, (f.note = h('span', { class: 'note', 'data-field': 'note' }, '')), drain));
  c = { el, f, spark, drain };
  cards.set(id, c);
  return c;
}

// place puts child at index i of parent, moving it only if it is elsewhere
// (moving an element would drop a hover or a focus inside it).
function place(parent, child, i) {
  if (parent.children[i] !== child) parent.insertBefore(child, parent.children[i] || null);
}

function trim(parent, n) {
  while (parent.children.length > n) parent.lastElementChild.remove();
}

const byName = (a, b) => a.localeCompare(b, 'en', { numeric: true });

// render draws the nodes of /v1/cluster with the figures of /v1/stats.
export function render(root, cluster, stats, onDrain, self) {
  const figures = new Map((stats || []).map((s) => [s.id, s]));
  const nodes = [...cluster.nodes].sort((a, b) => byName(a.region, b.region) || byName(a.zone, b.zone) || byName(a.id, b.id));
  if (root.querySelector(':scope > p')) root.replaceChildren();

  const seen = new Set();
  const layout = new Map(); // region → zone → [node]
  for (const n of nodes) {
    if (!layout.has(n.region)) layout.set(n.region, new Map());
    const zones = layout.get(n.region);
    if (!zones.has(n.zone)) zones.set(n.zone, []);
    zones.get(n.zone).push(n);
  }
  let ri = 0;
  for (const [rname, zones] of layout) {
    const r = region(root, rname);
    place(root, r.el, ri++);
    let zi = 0;
    let count = 0;
    for (const [zname, list] of zones) {
      const z = zone(r, rname, zname);
      place(r.zonesEl, z.el, zi++);
      list.forEach((n, i) => {
        const c = card(n.id, onDrain);
        place(z.nodesEl, c.el, i);
        update(c, n, figures.get(n.id), cluster.leader, self);
        seen.add(n.id);
      });
      trim(z.nodesEl, list.length);
      count += list.length;
    }
    trim(r.zonesEl, zi);
    setText(r.count, `${count} node${count === 1 ? '' : 's'}`);
  }
  trim(root, ri);
  for (const [id, c] of cards) {
    if (!seen.has(id)) {
      c.el.remove();
      cards.delete(id);
    }
  }
}

const drainable = new Set(['alive', 'suspect']);

function update(c, n, s, leader, self) {
  const isLeader = n.id === leader && leader !== '';
  const d = c.el.dataset;
  d.self = String(n.id === self);
  c.f.self.hidden = n.id !== self;
  d.region = n.region;
  d.zone = n.zone;
  d.state = n.state;
  d.raft = n.raft;
  d.leader = String(isLeader);
  c.f.leader.hidden = !isLeader;
  setText(c.f.raft, n.raft === 'leader' ? 'voter' : n.raft);
  setText(c.f.state, n.state);
  setText(c.f.connections, int(s ? s.connections : n.connections));
  setText(c.f.sessions, s ? int(s.sessions_owned) : '–');
  setText(c.f.channels, s ? int(s.channels_owned) : '–');
  setText(c.f.publish, s ? rate(s.publish_rate) : '–');
  setText(c.f.delivery, s ? rate(s.delivery_rate) : '–');
  let note = n.public_url || '';
  if (s && s.error) note = `no figures: ${s.error}`;
  else if (!s && drainable.has(n.state)) note = 'no figures';
  setText(c.f.note, note);
  c.f.note.title = note;
  c.drain.disabled = !drainable.has(n.state);
  const hist = history.get(n.id);
  if (hist && s) draw(c.spark, hist.pub, hist.del);
}
