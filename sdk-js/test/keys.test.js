// API keys: the `apiKey` credential and `client.keys`, against a scripted hub and against a real
// one (skipped when SWITCH_TEST_URL is unset).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';

import { Switch, ForbiddenError, NotFoundError, UnauthorizedError } from '../index.js';

const KEY = 'sk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG';
const ROW = {
  id: 3,
  name: 'shop',
  scope: 'publish',
  topics: ['orders.#'],
  expires_at: null,
  created_at: '2026-01-01T00:00:00.000Z',
};
/** How soon a revoked key must be refused (the hub promises 1 s on every server). */
const REVOKED_WITHIN_MS = 1000;

/** A scripted hub on 127.0.0.1 for keys and publishes; records every request. */
async function startHub() {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString('utf8');
    requests.push({ method: req.method, url: req.url, headers: req.headers, body });
    const send = (status, value) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(value === undefined ? '' : JSON.stringify(value));
    };
    const route = `${req.method} ${new URL(req.url, 'http://x').pathname}`;
    switch (route) {
      case 'POST /publish':
        return send(202, { message_id: 'msg_1', matched: 0 });
      case 'POST /keys':
        return send(201, { ...ROW, ...JSON.parse(body), key: KEY });
      case 'GET /keys':
        return send(200, { items: [ROW, { ...ROW, id: 4, topics: null }] });
      case 'DELETE /keys/3':
        res.writeHead(204).end();
        return;
      default:
        return send(404, { error: { code: 'not_found', message: `no route ${route}` } });
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

describe('the apiKey credential', () => {
  let hub;
  before(async () => {
    hub = await startHub();
  });
  after(() => hub.close());

  test('is sent as is, on every request', async () => {
    hub.requests.length = 0;
    const client = new Switch({ baseUrl: hub.url, apiKey: KEY });
    assert.equal(client.token(), KEY);
    await client.publish('orders.created', { body: { id: 1 } });
    await client.publish('orders.created');
    assert.deepEqual(hub.requests.map((r) => r.headers.authorization), [`Bearer ${KEY}`, `Bearer ${KEY}`]);
  });

  test('loses the whitespace around it (a file read with its newline)', async () => {
    hub.requests.length = 0;
    await new Switch({ baseUrl: hub.url, apiKey: `${KEY}\n` }).publish('t');
    assert.equal(hub.requests[0].headers.authorization, `Bearer ${KEY}`);
  });

  const refused = [
    [{ apiKey: KEY, jwtSecret: 's' }, /apiKey or jwtSecret/],
    [{ apiKey: KEY, token: 'a.b.c' }, /apiKey or token/],
    [{ apiKey: KEY, jwtSecret: 's', token: 'a.b.c' }, /apiKey or jwtSecret or token/],
    [{ apiKey: KEY, author: 'me' }, /author: claims of a signed token/],
    [{ apiKey: KEY, scope: 'admin', topics: ['x'] }, /scope, topics: claims of a signed token/],
    [{ apiKey: '' }, /empty/],
    [{ apiKey: '  ' }, /empty/],
    [{ apiKey: 'eyJhbGciOiJIUzI1NiJ9.e30.sig' }, /sk_/],
    [{ apiKey: 'sk_abc def' }, /sk_/],
    [{ apiKey: 42 }, /string/],
  ];
  for (const [options, message] of refused) {
    test(`refuses ${JSON.stringify(options)}`, () => {
      assert.throws(() => new Switch({ baseUrl: hub.url, ...options }), (err) => err instanceof TypeError && message.test(err.message));
    });
  }

  test('the other credentials work as before: jwtSecret wins over token', () => {
    const both = new Switch({ baseUrl: hub.url, jwtSecret: 's', token: 'a.b.c', author: 'x' });
    assert.notEqual(both.token(), 'a.b.c');
    assert.equal(new Switch({ baseUrl: hub.url, token: 'a.b.c' }).token(), 'a.b.c');
    assert.equal(new Switch({ baseUrl: hub.url, apiKey: null, token: 'a.b.c' }).token(), 'a.b.c');
    assert.equal(new Switch({ baseUrl: hub.url }).token(), null);
  });
});

describe('client.keys', () => {
  let hub;
  before(async () => {
    hub = await startHub();
  });
  after(() => hub.close());
  const admin = () => new Switch({ baseUrl: hub.url, jwtSecret: 's', scope: 'admin' });

  test('create sends snake_case fields and resolves to the key in camelCase', async () => {
    hub.requests.length = 0;
    const created = await admin().keys.create({
      name: 'shop',
      scope: ['publish'],
      topics: ['orders.#'],
      expiresAt: new Date(Date.UTC(2027, 5, 1, 12, 30)),
    });
    const request = hub.requests[0];
    assert.equal(`${request.method} ${request.url}`, 'POST /keys');
    assert.match(request.headers['content-type'], /^application\/json/);
    assert.deepEqual(JSON.parse(request.body), {
      name: 'shop',
      scope: 'publish',
      topics: ['orders.#'],
      expires_at: '2027-06-01T12:30:00.000Z',
    });
    assert.equal(created.key, KEY);
    assert.deepEqual(
      [created.id, created.name, created.scope, created.topics, created.expiresAt, created.createdAt],
      [3, 'shop', 'publish', ['orders.#'], '2027-06-01T12:30:00.000Z', ROW.created_at],
    );
  });

  test('create defaults to a publish key for any topic', async () => {
    hub.requests.length = 0;
    await admin().keys.create({ name: 'shop' });
    await admin().keys.create({ name: 'ops', scope: 'publish admin', expiresAt: '2027-06-01T00:00:00Z' });
    assert.deepEqual(JSON.parse(hub.requests[0].body), { name: 'shop', scope: 'publish' });
    assert.deepEqual(JSON.parse(hub.requests[1].body), { name: 'ops', scope: 'publish admin', expires_at: '2027-06-01T00:00:00Z' });
  });

  test('create refuses bad arguments before sending', async () => {
    hub.requests.length = 0;
    await assert.rejects(admin().keys.create({}), TypeError);
    await assert.rejects(admin().keys.create({ name: ' ' }), TypeError);
    await assert.rejects(admin().keys.create({ name: 'shop', scope: '' }), TypeError);
    await assert.rejects(admin().keys.create({ name: 'shop', topics: 'orders.#' }), TypeError);
    await assert.rejects(admin().keys.create({ name: 'shop', expiresAt: 1_700_000_000 }), TypeError);
    assert.equal(hub.requests.length, 0);
  });

  test('list and revoke', async () => {
    hub.requests.length = 0;
    const keys = await admin().keys.list();
    assert.deepEqual(keys.map((k) => [k.id, k.topics, k.key]), [[3, ['orders.#'], undefined], [4, null, undefined]]);
    assert.equal(await admin().keys.revoke(3), undefined);
    await admin().keys.revoke(keys[0]);
    assert.deepEqual(hub.requests.map((r) => `${r.method} ${r.url}`), ['GET /keys', 'DELETE /keys/3', 'DELETE /keys/3']);
    await assert.rejects(admin().keys.revoke(99), NotFoundError);
    await assert.rejects(admin().keys.revoke(), TypeError);
  });
});

const BASE_URL = process.env.SWITCH_TEST_URL;
const JWT_SECRET = process.env.SWITCH_TEST_JWT_SECRET;
const skip = BASE_URL ? false : 'SWITCH_TEST_URL is not set (no hub to test against)';

describe('API keys against a running hub', { skip, concurrency: false }, () => {
  let admin;
  const created = [];
  const name = `sdkjs-${randomBytes(6).toString('hex')}`;

  before(() => {
    assert.ok(JWT_SECRET, 'SWITCH_TEST_JWT_SECRET must be set along with SWITCH_TEST_URL');
    admin = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, author: 'sdk-js-tests', scope: 'publish admin' });
  });

  after(async () => {
    for (const id of created) {
      await admin.keys.revoke(id).catch((err) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    }
  });

  test('a publish key limited to orders.#: publishes there, 403 elsewhere, 401 once revoked', async () => {
    const key = await admin.keys.create({ name, scope: 'publish', topics: ['orders.#'] });
    created.push(key.id);
    assert.match(key.key, /^sk_/);
    assert.deepEqual([key.name, key.scope, key.topics, key.expiresAt], [name, 'publish', ['orders.#'], null]);

    const publisher = new Switch({ baseUrl: BASE_URL, apiKey: key.key });
    const result = await publisher.publish('orders.created', { body: { id: 42 } });
    assert.equal(typeof result.messageId, 'string');
    assert.equal(result.duplicate, false);

    const outside = await publisher.publish('billing.x', { body: { id: 42 } }).catch((e) => e);
    assert.ok(outside instanceof ForbiddenError, String(outside));
    assert.equal(outside.status, 403);
    await assert.rejects(publisher.keys.list(), ForbiddenError);

    const listed = await admin.keys.list();
    const mine = listed.filter((k) => k.id === key.id);
    assert.equal(mine.length, 1);
    assert.deepEqual([mine[0].name, mine[0].scope, mine[0].topics], [name, 'publish', ['orders.#']]);
    assert.ok(listed.every((k) => k.key === undefined));
    assert.ok(!JSON.stringify(listed).includes(key.key));

    await admin.keys.revoke(key.id);
    const revokedAt = Date.now();
    for (;;) {
      const err = await publisher.publish('orders.created', { body: { id: 43 } }).then(() => null, (e) => e);
      if (err) {
        assert.ok(err instanceof UnauthorizedError, String(err));
        assert.equal(err.status, 401);
        break;
      }
      assert.ok(Date.now() - revokedAt < REVOKED_WITHIN_MS, 'still accepted 1 s after revoke');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(!(await admin.keys.list()).some((k) => k.id === key.id));
    await assert.rejects(admin.keys.revoke(key.id), NotFoundError);
  });

  test('an admin key administers; an expired key is refused', async () => {
    const ops = await admin.keys.create({ name: `${name}-ops`, scope: 'publish admin', expiresAt: new Date(Date.now() + 86_400_000) });
    created.push(ops.id);
    assert.ok(ops.expiresAt);
    const operator = new Switch({ baseUrl: BASE_URL, apiKey: ops.key });
    const other = await operator.keys.create({ name: `${name}-other` });
    created.push(other.id);
    assert.deepEqual([other.scope, other.topics], ['publish', null]);
    await operator.keys.revoke(other);
    assert.ok((await operator.publish('anything.at.all')).messageId);

    const old = await admin.keys.create({ name: `${name}-old`, expiresAt: new Date(Date.now() - 3_600_000) });
    created.push(old.id);
    await assert.rejects(new Switch({ baseUrl: BASE_URL, apiKey: old.key }).publish('orders.created'), UnauthorizedError);
  });
});
