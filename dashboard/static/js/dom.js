// Small DOM helpers: the dashboard builds its elements once and updates
// their text, so that polling never steals focus or a click in flight.

export const $ = (sel, root = document) => root.querySelector(sel);

// h creates an element: attrs maps names to values (class, data-*, …;
// on* names add listeners), children are nodes or strings.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// setText changes an element's text only when it differs.
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

export function show(el, on) {
  el.hidden = !on;
}

const intFmt = new Intl.NumberFormat('en-US');

export function int(n) {
  return intFmt.format(Math.round(n || 0));
}

// rate formats messages per second compactly: 0, 0.4, 12, 1.2k, 34k, 1.2M.
export function rate(r) {
  if (!r || r < 0.05) return '0';
  if (r < 9.95) return r.toFixed(1);
  if (r < 1000) return String(Math.round(r));
  if (r < 1e6) return `${(r / 1000).toFixed(r < 1e4 ? 1 : 0)}k`;
  return `${(r / 1e6).toFixed(1)}M`;
}

// ms formats a duration in milliseconds.
export function ms(v) {
  if (v === undefined || v === null) return '–';
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
}

// dl builds a definition list from [label, value, attrs] rows.
export function dl(rows, cls = 'facts') {
  return h('dl', { class: cls }, rows.map(([k, v, attrs = {}]) => h('div', attrs, h('dt', {}, k), h('dd', {}, v))));
}
