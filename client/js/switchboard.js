// Switchboard browser SDK: one ES module, no dependencies, no build step.
// It works in browsers and in Node 20+ (with --experimental-websocket on
// Node 20; Node 22 has WebSocket built in).
//
//   import { Client } from './switchboard.js';
//   const c = new Client({ endpoints: ['wss://a.example/v1/connect', …], token: 'JWT' or async () => 'JWT' });
//   c.on('message', m => …);            // user stream: {seq, id, ts, data}
//   c.on('state', s => …);              // 'connecting' | 'connected' | 'reconnecting' | 'closed'
//   c.on('continuity_lost', e => …);    // {channel?: name, seq}: resync
//   const sub = c.subscribe('ticker:BTC', { presence: true, joinLeave: true });
//   sub.on('message', m => …); sub.on('join', u => …); sub.on('leave', u => …);
//   await sub.presence(); sub.unsubscribe();
//   c.connect(); c.close();
//
// It does what the Go SDK does (DESIGN.md §3, §3a): a heartbeat watchdog
// (2.5 × heartbeat_ms of silence ends the connection), reconnects with
// full-jitter exponential backoff (the first retry at once and to another
// endpoint; a 4010 goes to the endpoints it names at once), resumes the
// user stream and every channel by seq, drops what it already delivered,
// refreshes the token before `exp` when `token` is a function, and has an
// application ping.

const CLOSE_MOVED = 4010;
const CLOSE_CONTINUITY_LOST = 4011;
const CLOSE_UNAUTHORIZED = 4001;

/** A tiny event emitter: on, off, and emit to a copy of the listeners. */
class Emitter {
  constructor() { this._handlers = new Map(); }
  /** on registers fn for event and returns a function that removes it. */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) { this._handlers.get(event)?.delete(fn); }
  _emit(event, value) {
    for (const fn of [...(this._handlers.get(event) ?? [])]) {
      try { fn(value); } catch (err) { queueMicrotask(() => { throw err; }); }
    }
  }
}

/** The payload of a JWT, or null: only `exp` is read, to refresh in time. */
function jwtPayload(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const pad = part + '='.repeat((4 - (part.length % 4)) % 4);
    return JSON.parse(atob(pad));
  } catch {
    return null;
  }
}

/**
 * Subscription is the client's subscription to one channel. Events:
 * 'message' {channel, seq, id, ts, data}, 'join' user, 'leave' user,
 * 'subscribed' {seq, resumed}, 'continuity_lost' {channel, seq},
 * 'error' {code, message}.
 */
export class Subscription extends Emitter {
  constructor(client, channel, opts) {
    super();
    this.client = client;
    this.channel = channel;
    this.opts = { presence: !!opts.presence, joinLeave: !!opts.joinLeave, from: opts.from };
    /** The seq of the last message delivered; the resume point. */
    this.lastSeq = 0;
    this._started = false; // a subscribed frame came: lastSeq is a position
    this._closed = false;
    this._presence = []; // pending presence() calls, answered in order
  }

  /** request is the subscribe request: the options, from lastSeq once started. */
  _request() {
    const r = { channel: this.channel };
    if (this._started) r.seq = this.lastSeq;
    else if (this.opts.from !== undefined && this.opts.from !== null) r.seq = this.opts.from;
    if (this.opts.presence) r.presence = true;
    if (this.opts.joinLeave) r.join_leave = true;
    return r;
  }

  /** presence asks the channel's presence set: {count, members: [{user, conns}]}. */
  presence() {
    return new Promise((resolve, reject) => {
      if (!this.client._send({ type: 'presence', channel: this.channel })) {
        reject(new Error('switchboard: not connected'));
        return;
      }
      this._presence.push({ resolve, reject });
    });
  }

  /** unsubscribe ends the subscription. */
  unsubscribe() {
    if (this._closed) return;
    this._closed = true;
    this.client._subs.delete(this.channel);
    this.client._send({ type: 'unsubscribe', channel: this.channel });
    this._failPresence(new Error('switchboard: unsubscribed'));
  }

  _failPresence(err) {
    for (const p of this._presence.splice(0)) p.reject(err);
  }

  _onFrame(f) {
    switch (f.type) {
      case 'message':
        if (f.seq <= this.lastSeq) return; // had it
        this.lastSeq = f.seq;
        this._emit('message', { channel: f.channel, seq: f.seq, id: f.id, ts: f.ts, data: f.data });
        return;
      case 'subscribed': {
        const asked = this._started || (this.opts.from !== undefined && this.opts.from !== null);
        if (!f.resumed || (!this._started && (this.opts.from === undefined || this.opts.from === null))) {
          this.lastSeq = f.seq;
        } else if (!this._started) {
          this.lastSeq = this.opts.from;
        }
        this._started = true;
        if (!f.resumed && asked) {
          const e = { channel: this.channel, seq: f.seq };
          this._emit('continuity_lost', e);
          this.client._emit('continuity_lost', e);
        }
        this._emit('subscribed', { seq: f.seq, resumed: f.resumed });
        return;
      }
      case 'join':
      case 'leave':
        this._emit(f.type, f.user);
        return;
      case 'presence': {
        const p = this._presence.shift();
        if (p) p.resolve({ count: f.count, members: f.members });
        return;
      }
      case 'error': {
        const p = this._presence.shift();
        const err = Object.assign(new Error(`switchboard: ${f.channel}: ${f.code}: ${f.message}`), { code: f.code });
        if (p) p.reject(err);
        this._emit('error', { code: f.code, message: f.message });
        return;
      }
    }
  }
}

/**
 * Client is a connection to a Switchboard cluster that survives node
 * failures. Events: 'message', 'state', 'continuity_lost', 'welcome',
 * 'error' (a server error frame, before its close).
 */
export class Client extends Emitter {
  /**
   * @param {object} opts
   * @param {string[]} opts.endpoints  ws:// or wss:// URLs of /v1/connect
   * @param {string|function(): (string|Promise<string>)} opts.token
   * @param {boolean} [opts.resumeOffline]  on the first connect, ask for what was published while offline
   * @param {number} [opts.backoffBase=100]  ms
   * @param {number} [opts.backoffMax=10000]  ms
   * @param {number} [opts.refreshBefore=30000]  ms before exp to refresh a token from a function
   * @param {typeof WebSocket} [opts.WebSocket]  the WebSocket class (default: the global one)
   */
  constructor(opts) {
    super();
    if (!opts || !Array.isArray(opts.endpoints) || opts.endpoints.length === 0) {
      throw new Error('switchboard: endpoints must be a non-empty array of ws:// or wss:// URLs');
    }
    for (const ep of opts.endpoints) {
      if (!/^wss?:\/\//.test(ep)) throw new Error(`switchboard: endpoint ${ep} is not ws:// or wss://`);
    }
    if (typeof opts.token !== 'string' && typeof opts.token !== 'function') {
      throw new Error('switchboard: token must be a string or a function returning one');
    }
    this._opts = { backoffBase: 100, backoffMax: 10000, refreshBefore: 30000, resumeOffline: false, ...opts };
    this._WS = opts.WebSocket ?? globalThis.WebSocket;
    if (!this._WS) throw new Error('switchboard: no WebSocket (Node 20 needs --experimental-websocket)');
    this._configured = [...opts.endpoints];
    this._endpoints = [...opts.endpoints];
    this._next = 0;
    /** The user stream's session id and last delivered seq: the resume point. */
    this.session = '';
    this.lastSeq = 0;
    /** The node of the current connection, once welcomed. */
    this.node = '';
    this.state = 'closed';
    this._subs = new Map();
    this._ws = null;
    this._welcomed = false;
    this._closed = true;
    this._fails = 0;
    this._retry = null;
    this._watchdog = null;
    this._refresh = null;
    this._idleMs = 0;
    this._pingId = 0;
    this._pings = new Map();
    this._moveTo = null; // endpoints a 4010 named: tried first
    this._errorFrame = null;
    this._fresh = false; // after 4011: resume from 0 without session
  }

  /** connect starts connecting (and keeps the client connected until close). */
  connect() {
    if (!this._closed) return;
    this._closed = false;
    this._setState('connecting');
    this._open();
  }

  /** close ends the connection with 1000 and stops reconnecting. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._retry);
    this._stopTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try { ws.close(1000, 'client closed'); } catch { /* already closing */ }
    }
    for (const p of this._pings.values()) p.reject(new Error('switchboard: closed'));
    this._pings.clear();
    for (const s of this._subs.values()) s._failPresence(new Error('switchboard: closed'));
    this._setState('closed');
  }

  /** subscribe subscribes to channel, now if connected and on every reconnect. */
  subscribe(channel, opts = {}) {
    if (typeof channel !== 'string' || channel.length === 0 || channel.length > 255) {
      throw new Error('switchboard: a channel name is 1-255 bytes');
    }
    const old = this._subs.get(channel);
    if (old) old._closed = true;
    const s = new Subscription(this, channel, opts);
    this._subs.set(channel, s);
    if (this._welcomed) this._send({ type: 'subscribe', ...s._request() });
    return s;
  }

  /** ping sends an application ping and resolves with the round trip in ms. */
  ping(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const id = ++this._pingId;
      const start = Date.now();
      if (!this._send({ type: 'ping', id })) {
        reject(new Error('switchboard: not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this._pings.delete(id);
        reject(new Error('switchboard: ping timed out'));
      }, timeoutMs);
      this._pings.set(id, {
        resolve: () => { clearTimeout(timer); resolve(Date.now() - start); },
        reject: (err) => { clearTimeout(timer); reject(err); },
      });
    });
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  }

  _send(frame) {
    if (!this._ws || !this._welcomed || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  async _token() {
    const t = this._opts.token;
    return typeof t === 'function' ? await t() : t;
  }

  /** _pick chooses the endpoint of the next attempt: where a 4010 sent us, else the next in turn. */
  _pick() {
    if (this._moveTo && this._moveTo.length > 0) return this._moveTo.shift();
    const ep = this._endpoints[this._next % this._endpoints.length];
    this._next++;
    return ep;
  }

  async _open() {
    if (this._closed) return;
    const ep = this._pick();
    let token;
    try {
      token = await this._token();
    } catch (err) {
      this._emit('error', { code: 'token', message: String(err) });
      this._scheduleRetry();
      return;
    }
    if (this._closed) return;
    let ws;
    try {
      ws = new this._WS(ep);
    } catch (err) {
      this._scheduleRetry();
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this._errorFrame = null;
    this._tokenSent = token;
    const hello = { type: 'hello', token };
    if (this.session) hello.resume = { session: this.session, seq: this.lastSeq };
    else if (this._fresh || this.lastSeq > 0 || this._opts.resumeOffline) hello.resume = { seq: this.lastSeq };
    const subs = [...this._subs.values()].filter((s) => !s._closed).map((s) => s._request());
    if (subs.length > 0) hello.subscriptions = subs;
    const resumeAsked = !!hello.resume && (!!hello.resume.session || hello.resume.seq > 0);
    // The hello (and the watchdog, until the welcome) start with the socket.
    ws.onopen = () => {
      if (this._ws !== ws) return;
      ws.send(JSON.stringify(hello));
      this._arm(10000);
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      if (typeof ev.data !== 'string') { ws.close(1003, 'binary'); return; }
      let f;
      try { f = JSON.parse(ev.data); } catch { ws.close(1002, 'not JSON'); return; }
      if (this._idleMs > 0) this._arm(this._idleMs);
      this._onFrame(ws, ep, f, resumeAsked);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._onClose(ep, ev.code);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  _onFrame(ws, ep, f, resumeAsked) {
    if (f.channel !== undefined && f.type !== 'welcome') {
      const s = this._subs.get(f.channel);
      if (s && !s._closed) s._onFrame(f);
      return;
    }
    switch (f.type) {
      case 'welcome':
        this._onWelcome(ep, f, resumeAsked);
        return;
      case 'message':
        if (!this._welcomed || f.seq <= this.lastSeq) return;
        this.lastSeq = f.seq;
        this._emit('message', { seq: f.seq, id: f.id, ts: f.ts, data: f.data });
        return;
      case 'heartbeat':
        return; // its arrival re-armed the watchdog
      case 'pong': {
        const p = this._pings.get(f.id);
        if (p) { this._pings.delete(f.id); p.resolve(); }
        return;
      }
      case 'refreshed':
        this._scheduleRefresh();
        return;
      case 'error':
        this._errorFrame = f;
        this._emit('error', { code: f.code, message: f.message });
        return;
    }
  }

  _onWelcome(ep, w, resumeAsked) {
    this._welcomed = true;
    this._fresh = false;
    const prev = this.lastSeq;
    this.session = w.session;
    this.node = w.node;
    if (!w.resumed) {
      this.lastSeq = w.seq;
      if (resumeAsked) this._emit('continuity_lost', { seq: w.seq, had: prev });
    }
    // Learn the cluster's endpoints: the welcome's (same region first), then ours.
    const learned = (w.endpoints ?? []).filter((u) => /^wss?:\/\//.test(u));
    this._endpoints = [...new Set([ep, ...learned, ...this._configured])];
    this._next = 1; // the next attempt goes to another endpoint
    this._idleMs = w.heartbeat_ms > 0 ? (w.heartbeat_ms * 5) / 2 : 60000;
    this._arm(this._idleMs);
    this._connectedAt = Date.now();
    this._scheduleRefresh();
    this._setState('connected');
    this._emit('welcome', w);
  }

  _onClose(ep, code) {
    this._stopTimers();
    for (const p of this._pings.values()) p.reject(new Error('switchboard: connection lost'));
    this._pings.clear();
    for (const s of this._subs.values()) s._failPresence(new Error('switchboard: connection lost'));
    if (this._closed) return;
    const welcomed = this._welcomed;
    this._welcomed = false;
    if (welcomed && Date.now() - this._connectedAt >= 1000) this._fails = 0;
    let now = false;
    if (code === CLOSE_MOVED) {
      // Go where the node said, at once.
      this._moveTo = (this._errorFrame?.endpoints ?? []).filter((u) => /^wss?:\/\//.test(u) && u !== ep);
      now = true;
    } else if (code === CLOSE_CONTINUITY_LOST) {
      this.session = '';
      this.lastSeq = 0;
      this._fresh = true;
      this._emit('continuity_lost', { seq: 0 });
      now = true;
    } else if (code === CLOSE_UNAUTHORIZED) {
      this._fails = Math.max(this._fails, 1); // a fresh token, after a pause
    }
    this._setState('reconnecting');
    if (now && welcomed) {
      this._fails = 0;
    }
    this._scheduleRetry();
  }

  /** _scheduleRetry waits the full-jitter backoff (none for the first retry) and reconnects. */
  _scheduleRetry() {
    if (this._closed) return;
    const n = this._fails++;
    const cap = Math.min(this._opts.backoffMax, this._opts.backoffBase * 2 ** Math.min(n, 20));
    const delay = n === 0 ? 0 : Math.random() * cap;
    clearTimeout(this._retry);
    this._retry = setTimeout(() => this._open(), delay);
  }

  /** _arm (re)starts the watchdog: ms of silence end the connection. */
  _arm(ms) {
    clearTimeout(this._watchdog);
    const ws = this._ws;
    this._watchdog = setTimeout(() => {
      if (this._ws !== ws || !ws) return;
      // Silence: the node or the path is dead. Do not wait for TCP.
      this._ws = null;
      try { ws.close(); } catch { /* gone */ }
      this._onClose('', 0);
    }, ms);
  }

  _stopTimers() {
    clearTimeout(this._watchdog);
    clearTimeout(this._refresh);
  }

  /**
   * _scheduleRefresh refreshes, when token is a function, the token last
   * sent (hello or refresh) refreshBefore its exp.
   */
  _scheduleRefresh() {
    clearTimeout(this._refresh);
    if (typeof this._opts.token !== 'function') return;
    const exp = jwtPayload(this._tokenSent ?? '')?.exp;
    if (!exp) return;
    const wait = Math.max(1000, exp * 1000 - Date.now() - this._opts.refreshBefore);
    this._refresh = setTimeout(async () => {
      try {
        const fresh = await this._token();
        if (this._send({ type: 'refresh', token: fresh })) this._tokenSent = fresh;
      } catch (err) {
        this._emit('error', { code: 'token', message: String(err) });
        this._refresh = setTimeout(() => this._scheduleRefresh(), 5000);
      }
    }, wait);
  }
}
