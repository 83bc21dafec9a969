// A sparkline of a node's publish and delivery rates: inline SVG, two
// polylines over the same scale, newest sample on the right.

const NS = 'http://www.w3.org/2000/svg';
const W = 120;
const H = 32;

export const HISTORY = 60; // samples kept per node: two minutes at one poll every 2 s

export function sparkline() {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  const base = document.createElementNS(NS, 'line');
  base.setAttribute('x1', '0');
  base.setAttribute('x2', String(W));
  base.setAttribute('y1', String(H - 0.5));
  base.setAttribute('y2', String(H - 0.5));
  base.setAttribute('class', 'base');
  svg.append(base);
  for (const cls of ['del', 'pub']) {
    const area = document.createElementNS(NS, 'polygon');
    area.setAttribute('class', `${cls}-area`);
    area.setAttribute('points', '');
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('class', cls);
    line.setAttribute('points', '');
    svg.append(area, line);
  }
  return svg;
}

// draw redraws svg from the two series (equal length, oldest first).
export function draw(svg, pub, del) {
  const peak = Math.max(1, ...pub, ...del);
  const step = W / (HISTORY - 1);
  const xy = (series) => {
    const off = HISTORY - series.length;
    return series.map((v, i) => [(off + i) * step, H - 1 - (v / peak) * (H - 4)]);
  };
  const fmt = (pts) => pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
  for (const [cls, series] of [['pub', pub], ['del', del]]) {
    const pts = xy(series);
    svg.querySelector(`.${cls}`).setAttribute('points', fmt(pts));
    // The area under the line, closed along the bottom edge.
    const area = pts.length > 1 ? [...pts, [pts[pts.length - 1][0], H], [pts[0][0], H]] : [];
    svg.querySelector(`.${cls}-area`).setAttribute('points', fmt(area));
  }
  const last = (s) => (s.length ? s[s.length - 1] : 0);
  svg.setAttribute('aria-label', `publish ${last(pub).toFixed(1)}/s, delivery ${last(del).toFixed(1)}/s, peak ${peak.toFixed(1)}/s`);
}
