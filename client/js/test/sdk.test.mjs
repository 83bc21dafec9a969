// The browser SDK against a real three-node cluster, driven by
// cmd/switchboard's TestJSSDKAgainstRealCluster, which starts the
// processes and passes them in the environment:
//   SB_ENDPOINTS  ws:// URLs of the nodes, comma-separated
//   SB_BASES      http:// base URLs, same order
//   SB_PIDS       process ids, same order
//   SB_API_KEY, SB_TOKEN_SECRET
// Run: node --experimental-websocket --test client/js/test/sdk.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { Client } from '../switchboard.js';

const endpoints = process.env.SB_ENDPOINTS.split(',');
const bases = process.env.SB_BASES.split(',');
const pids = process.env.SB_PIDS.split(',').map(Number);
const apiKey = process.env.SB_API_KEY;
const secret = process.env.SB_TOKEN_SECRET;

const b64url = (s) => Buffer.from(s).toString('base64url');

// mint makes an HS256 token for user allowing every channel.
function mint(user, ttlSec = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub: user, iat: now, exp: now + ttlSec, channels: ['*'] }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// publish posts to a user or a channel through bases[i], retrying with the
// same id until it is acknowledged; it returns the seq.
async function publish(target, data, via = 0) {
  const id = randomUUID();
  const deadline = Date.now() + 20000;
  for (let i = via; ; i++) {
    const base = bases[i % bases.length];
    try {
      const r = await fetch(`${base}/v1/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...target, data, id }),
      });
      if (r.status === 200) return (await r.json()).seq;
    } catch { /* a dead node: the next one */ }
    if (Date.now() > deadline) throw new Error(`publish ${id} not acknowledged in 20s`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

// until resolves when cond() holds, polling, or rejects after ms.
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

// once resolves with the next `event` of emitter, or rejects after ms.
function once(emitter, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    const off = emitter.on(event, (v) => { clearTimeout(timer); off(); resolve(v); });
  });
}

function collect(emitter, event = 'message') {
  const got = [];
  emitter.on(event, (m) => got.push(m));
  return got;
}

const seqs = (ms) => ms.map((m) => m.seq);
const oneToN = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('connects, receives its user stream, pings', { timeout: 60000 }, async () => {
  const c = new Client({ endpoints: [endpoints[1]], token: mint('js-alice') });
  const states = collect(c, 'state');
  const msgs = collect(c);
  c.connect();
  await until(() => c.state === 'connected', 10000, 'connected');
  for (let i = 0; i < 5; i++) await publish({ user: 'js-alice' }, { i }, 0);
  await until(() => msgs.length === 5, 10000, '5 messages');
  assert.deepEqual(seqs(msgs), oneToN(5));
  assert.deepEqual(msgs[0].data, { i: 0 });
  assert.ok((await c.ping()) >= 0);
  c.close();
  assert.deepEqual(states, ['connecting', 'connected', 'closed']);
});

test('subscribes to a channel, sees presence and join/leave', { timeout: 60000 }, async () => {
  const a = new Client({ endpoints: [endpoints[0]], token: mint('js-a') });
  const b = new Client({ endpoints: [endpoints[2]], token: async () => mint('js-b') });
  // Subscribed before connecting: the hello carries it.
  const sa = a.subscribe('js:room', { presence: true, joinLeave: true });
  const got = collect(sa);
  const joins = collect(sa, 'join');
  const leaves = collect(sa, 'leave');
  const subscribedA = once(sa, 'subscribed');
  a.connect();
  b.connect();
  await subscribedA;
  await until(() => b.state === 'connected', 10000, 'b connected');
  // Subscribed once connected: a subscribe frame.
  const sb = b.subscribe('js:room', { presence: true });
  await once(sb, 'subscribed');
  await until(() => joins.includes('js-b'), 10000, 'js-b joins');
  const p = await sa.presence();
  assert.equal(p.count, 2);
  assert.deepEqual(p.members.map((m) => m.user), ['js-a', 'js-b']);
  for (let i = 0; i < 10; i++) await publish({ channel: 'js:room' }, { i }, i);
  await until(() => got.length === 10, 10000, '10 channel messages');
  assert.equal(got[0].channel, 'js:room');
  sb.unsubscribe();
  await until(() => leaves.includes('js-b'), 10000, 'js-b leaves');
  a.close();
  b.close();
});

test('a token from a function is refreshed before it expires, and the connection outlives it', { timeout: 60000 }, async () => {
  let minted = 0;
  // Tokens valid for 4 s, refreshed 3 s before exp: the first refresh
  // goes out about 1 s after the welcome.
  const c = new Client({ endpoints: [endpoints[0]], token: () => { minted++; return mint('js-dave', 4); }, refreshBefore: 3000 });
  const states = collect(c, 'state');
  const errors = collect(c, 'error');
  c.connect();
  await until(() => c.state === 'connected', 10000, 'connected');
  await new Promise((res) => setTimeout(res, 6000)); // past the first token's exp (+1 s grace)
  assert.deepEqual(states, ['connecting', 'connected'], 'never disconnected');
  assert.ok(minted >= 3, `tokens minted: ${minted}`);
  assert.deepEqual(errors, []);
  assert.ok((await c.ping()) >= 0);
  c.close();
});

test('a node is killed: the client resumes its user stream and its channel elsewhere, losing nothing', { timeout: 120000 }, async () => {
  // Connected to node 2 first; node 2 is the one that dies.
  const order = [endpoints[2], endpoints[0], endpoints[1]];
  const c = new Client({ endpoints: order, token: () => mint('js-carol'), backoffBase: 50, backoffMax: 500 });
  const states = collect(c, 'state');
  const lost = collect(c, 'continuity_lost');
  const msgs = collect(c);
  const sub = c.subscribe('js:ticker', { from: 0 });
  const chan = collect(sub);
  const subscribed = once(sub, 'subscribed');
  c.connect();
  await subscribed;
  assert.equal(c.node, 'n3');

  let stop = false;
  const acked = { user: [], channel: [] };
  const publisher = (async () => {
    for (let i = 0; !stop; i++) {
      acked.user.push(await publish({ user: 'js-carol' }, { i }, i % 2));
      acked.channel.push(await publish({ channel: 'js:ticker' }, { i }, i % 2));
    }
  })();
  await until(() => acked.user.length >= 20, 20000, '20 publishes');
  process.kill(pids[2], 'SIGKILL');
  await until(() => states.includes('reconnecting'), 15000, 'the client notices');
  const before = acked.user.length;
  await until(() => acked.user.length >= before + 20, 30000, '20 more publishes');
  stop = true;
  await publisher;
  const topUser = Math.max(...acked.user);
  const topChan = Math.max(...acked.channel);
  await until(() => msgs.length >= topUser && chan.length >= topChan, 30000, 'everything delivered');
  assert.deepEqual(seqs(msgs), oneToN(topUser), 'user stream: every seq once, in order');
  assert.deepEqual(seqs(chan), oneToN(topChan), 'channel: every seq once, in order');
  assert.deepEqual(lost, [], 'no continuity lost');
  assert.notEqual(c.node, 'n3');
  c.close();
});
