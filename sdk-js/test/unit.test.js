import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac } from 'node:crypto';

import {
  Switch,
  MessageIterator,
  signJwt,
  createToken,
  verifyWebhook,
  signWebhook,
  SwitchError,
  NetworkError,
  InvalidRequestError,
  UnauthorizedError,
  ForbiddenError,
  NotFoundError,
  ConflictError,
  PayloadTooLargeError,
  UnavailableError,
  WebhookVerificationError,
} from '../index.js';

// ---------------------------------------------------------------------------------------------
// helpers

/** Checks an HS256 JWT with an independent HMAC computation and returns its header and claims. */
function decodeAndCheckJwt(token, secret) {
  const parts = token.split('.');
  assert.equal(parts.length, 3, 'a JWT has three parts');
  const [h, p, s] = parts;
  const expected = createHmac('sha256', secret).update(`${h}.${p}`).digest();
  const given = Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  assert.ok(expected.equals(given), 'signature must be HMAC-SHA256 of header.payload');
  assert.ok(!/[=+/]/.test(token), 'JWT parts are unpadded base64url');
  const header = JSON.parse(Buffer.from(h, 'base64').toString('utf8'));
  const claims = JSON.parse(Buffer.from(p, 'base64').toString('utf8'));
  return { header, claims };
}

/** Runs a node:http server on 127.0.0.1, port 0. `handler(req, body, res)` gets the read body. */
async function startServer(handler, { readBody = true } = {}) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let body = '';
    if (readBody) {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      body = Buffer.concat(chunks).toString('utf8');
    }
    const record = { method: req.method, url: req.url, headers: req.headers, body };
    requests.push(record);
    try {
      await handler(req, body, res, record);
    } catch (err) {
      res.writeHead(599).end(String(err));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

function sendJson(res, status, value, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(value));
}

const SECRET = 'whsec_' + Buffer.from('0123456789abcdefghijklmn').toString('base64');

function signedDelivery({ secret = SECRET, id = 'msg_1', timestamp = Math.floor(Date.now() / 1000), body = '{"a":1}' } = {}) {
  return {
    headers: {
      'webhook-id': id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signWebhook(secret, id, timestamp, body),
    },
    body,
  };
}

// ---------------------------------------------------------------------------------------------
// JWT

describe('JWT signing', () => {
  test('signJwt produces an HS256 token verifiable independently', () => {
    const token = signJwt({ author: 'alice', n: 1 }, 'top-secret');
    const { header, claims } = decodeAndCheckJwt(token, 'top-secret');
    assert.deepEqual(header, { alg: 'HS256', typ: 'JWT' });
    assert.deepEqual(claims, { author: 'alice', n: 1 });
  });

  test('a token signed with another secret does not verify', () => {
    const token = signJwt({ author: 'alice' }, 'one');
    assert.throws(() => decodeAndCheckJwt(token, 'two'));
  });

  test('createToken sets author, scope, iat and exp = now + 60 s', () => {
    const token = createToken('s3', { author: 'svc', scope: ['publish', 'admin'], now: 1_700_000_000 });
    const { claims } = decodeAndCheckJwt(token, 's3');
    assert.deepEqual(claims, { iat: 1_700_000_000, exp: 1_700_000_060, author: 'svc', scope: 'publish admin' });
  });

  test('createToken omits claims that were not given', () => {
    const { claims } = decodeAndCheckJwt(createToken('s3'), 's3');
    assert.deepEqual(Object.keys(claims).sort(), ['exp', 'iat']);
  });

  test('the client signs a fresh token for every request from jwtSecret', async () => {
    const server = await startServer((req, body, res) => sendJson(res, 202, { message_id: 'm1', matched: 0 }));
    try {
      const client = new Switch({ baseUrl: server.url, jwtSecret: 'hub-secret', author: 'billing', scope: 'publish' });
      const before = Math.floor(Date.now() / 1000);
      await client.publish('orders.created');
      const auth = server.requests[0].headers.authorization;
      assert.match(auth, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
      const { header, claims } = decodeAndCheckJwt(auth.slice('Bearer '.length), 'hub-secret');
      assert.equal(header.alg, 'HS256');
      assert.equal(claims.author, 'billing');
      assert.equal(claims.scope, 'publish');
      assert.ok(claims.exp >= before + 60 && claims.exp <= before + 62, `exp ${claims.exp} ≈ now + 60`);
    } finally {
      await server.close();
    }
  });

  test('the client sends a given token as is', async () => {
    const server = await startServer((req, body, res) => sendJson(res, 202, { message_id: 'm1', matched: 0 }));
    try {
      const client = new Switch({ baseUrl: server.url, token: 'abc.def.ghi' });
      await client.publish('t');
      assert.equal(server.requests[0].headers.authorization, 'Bearer abc.def.ghi');
    } finally {
      await server.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// verifyWebhook

describe('verifyWebhook', () => {
  test('matches the Standard Webhooks reference signature', () => {
    // Test vector published with the Standard Webhooks / Svix libraries.
    const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const id = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
    const timestamp = 1614265330;
    const body = '{"test": 2432232314}';
    const expected = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
    assert.equal(signWebhook(secret, id, timestamp, body), expected);
    const headers = { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': expected };
    assert.deepEqual(verifyWebhook(secret, headers, body, { now: timestamp + 10 }), { test: 2432232314 });
  });

  test('a valid delivery returns the parsed JSON payload', () => {
    const { headers, body } = signedDelivery({ body: '{"id":42,"total":9.5}' });
    assert.deepEqual(verifyWebhook(SECRET, headers, body), { id: 42, total: 9.5 });
  });

  test('accepts a Buffer, a Uint8Array, upper-case header names and a Headers instance', () => {
    const { headers, body } = signedDelivery({ body: '{"ü":"ß"}' });
    assert.deepEqual(verifyWebhook(SECRET, headers, Buffer.from(body)), { ü: 'ß' });
    assert.deepEqual(verifyWebhook(SECRET, headers, new TextEncoder().encode(body)), { ü: 'ß' });
    const upper = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), v]));
    assert.deepEqual(verifyWebhook(SECRET, upper, body), { ü: 'ß' });
    assert.deepEqual(verifyWebhook(SECRET, new Headers(headers), body), { ü: 'ß' });
  });

  test('a tampered body, id or timestamp is refused', () => {
    const { headers, body } = signedDelivery({ body: '{"amount":1}' });
    assert.throws(() => verifyWebhook(SECRET, headers, '{"amount":100}'), WebhookVerificationError);
    assert.throws(() => verifyWebhook(SECRET, { ...headers, 'webhook-id': 'msg_2' }, body), WebhookVerificationError);
    const ts = Number(headers['webhook-timestamp']) + 1;
    assert.throws(
      () => verifyWebhook(SECRET, { ...headers, 'webhook-timestamp': String(ts) }, body),
      WebhookVerificationError,
    );
  });

  test('a tampered signature is refused', () => {
    const { headers, body } = signedDelivery();
    const sig = headers['webhook-signature'];
    const flipped = sig.slice(0, 5) + (sig[5] === 'A' ? 'B' : 'A') + sig.slice(6);
    assert.throws(() => verifyWebhook(SECRET, { ...headers, 'webhook-signature': flipped }, body), WebhookVerificationError);
    assert.throws(() => verifyWebhook(SECRET, { ...headers, 'webhook-signature': 'v1,' }, body), WebhookVerificationError);
    assert.throws(() => verifyWebhook(SECRET, { ...headers, 'webhook-signature': 'v1,abc' }, body), WebhookVerificationError);
    assert.throws(
      () => verifyWebhook(SECRET, { ...headers, 'webhook-signature': sig.replace('v1,', 'v2,') }, body),
      WebhookVerificationError,
    );
  });

  test('the wrong secret is refused', () => {
    const { headers, body } = signedDelivery();
    const other = 'whsec_' + Buffer.from('another-key-of-24-bytes!').toString('base64');
    assert.throws(() => verifyWebhook(other, headers, body), WebhookVerificationError);
  });

  test('a secret that is not base64 is refused', () => {
    const { headers, body } = signedDelivery();
    assert.throws(() => verifyWebhook('whsec_not base64!', headers, body), WebhookVerificationError);
    assert.throws(() => verifyWebhook('', headers, body), WebhookVerificationError);
  });

  test('the secret works without its whsec_ prefix', () => {
    const { headers, body } = signedDelivery();
    assert.deepEqual(verifyWebhook(SECRET.slice('whsec_'.length), headers, body), { a: 1 });
  });

  test('a stale or future timestamp is refused, within tolerance accepted', () => {
    const now = 1_700_000_000;
    const old = signedDelivery({ timestamp: now - 301 });
    assert.throws(() => verifyWebhook(SECRET, old.headers, old.body, { now }), /too old/);
    const future = signedDelivery({ timestamp: now + 301 });
    assert.throws(() => verifyWebhook(SECRET, future.headers, future.body, { now }), /too new/);
    const edge = signedDelivery({ timestamp: now - 300 });
    assert.deepEqual(verifyWebhook(SECRET, edge.headers, edge.body, { now }), { a: 1 });
    assert.deepEqual(verifyWebhook(SECRET, old.headers, old.body, { now, tolerance: 600 }), { a: 1 });
    assert.throws(() => verifyWebhook(SECRET, edge.headers, edge.body, { now, tolerance: 10 }), WebhookVerificationError);
    assert.deepEqual(verifyWebhook(SECRET, edge.headers, edge.body, { now: new Date(now * 1000) }), { a: 1 });
    const garbage = { ...edge.headers, 'webhook-timestamp': 'yesterday' };
    assert.throws(() => verifyWebhook(SECRET, garbage, edge.body, { now }), WebhookVerificationError);
  });

  test('any one of several space-separated signatures may match', () => {
    const { headers, body } = signedDelivery();
    const good = headers['webhook-signature'];
    const other = signWebhook('whsec_' + Buffer.from('x'.repeat(24)).toString('base64'), 'msg_1', headers['webhook-timestamp'], body);
    for (const value of [`${other} ${good}`, `${good} ${other}`, `v2,abcd ${good}`, `garbage ${good}`]) {
      assert.deepEqual(verifyWebhook(SECRET, { ...headers, 'webhook-signature': value }, body), { a: 1 });
    }
    assert.throws(() => verifyWebhook(SECRET, { ...headers, 'webhook-signature': `${other} v2,abcd` }, body), WebhookVerificationError);
  });

  test('missing headers are refused', () => {
    const { headers, body } = signedDelivery();
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const partial = { ...headers };
      delete partial[name];
      assert.throws(() => verifyWebhook(SECRET, partial, body), /missing/);
    }
    assert.throws(() => verifyWebhook(SECRET, {}, body), WebhookVerificationError);
    assert.throws(() => verifyWebhook(SECRET, undefined, body), WebhookVerificationError);
  });

  test('a verified body that is not JSON is refused; a parsed object is a TypeError', () => {
    const bad = signedDelivery({ body: 'not json' });
    assert.throws(() => verifyWebhook(SECRET, bad.headers, bad.body), /not valid JSON/);
    const { headers } = signedDelivery();
    assert.throws(() => verifyWebhook(SECRET, headers, { a: 1 }), TypeError);
  });
});

// ---------------------------------------------------------------------------------------------
// requests and error mapping, against a local HTTP server

describe('requests and answers', () => {
  let server;
  before(async () => {
    server = await startServer((req, body, res) => {
      const url = new URL(req.url, 'http://x');
      const route = `${req.method} ${url.pathname}`;
      switch (route) {
        case 'POST /publish':
          if (req.headers['idempotency-key'] === 'dup') return sendJson(res, 200, { message_id: 'm-first', duplicate: true });
          return sendJson(res, 202, { message_id: 'm-new', matched: 2 });
        case 'POST /subscribers':
          return sendJson(res, 201, { id: 7, ...JSON.parse(body), secret: 'whsec_AAAA', enabled: true, created_at: 'c', updated_at: 'u' });
        case 'GET /subscribers':
          return sendJson(res, 200, { items: [{ id: 1, topic: 'a.*', target_url: 'http://t', filter_expression: null, filter_error: 'x' }] });
        case 'PATCH /subscribers/7':
          return sendJson(res, 200, { id: 7, ...JSON.parse(body) });
        case 'DELETE /subscribers/7':
          res.writeHead(204).end();
          return;
        case 'POST /subscribers/7/rotate-secret':
          return sendJson(res, 200, { id: 7, secret: 'whsec_BBBB', target_url: 'http://t' });
        case 'POST /filters/test':
          if (JSON.parse(body).filter_expression === 'a >') {
            return sendJson(res, 400, { error: { code: 'invalid_request', message: 'filter_expression: unexpected end', position: 3 } });
          }
          return sendJson(res, 200, { matches: JSON.parse(body).filter_expression === 'true' });
        case 'GET /deliveries': {
          const since = Number(url.searchParams.get('since') ?? 0);
          const limit = Number(url.searchParams.get('limit') ?? 100);
          const all = [1, 2, 3, 4, 5].map((id) => ({ id, message_id: 'm', subscriber_id: 7, attempt: 1, outcome: 'delivered', http_status: 200, error_kind: null, duration_ms: 3, created_at: 'c' }));
          const page = all.filter((d) => d.id > since).slice(0, limit);
          return sendJson(res, 200, { items: page, next_since: page.length ? page[page.length - 1].id : null });
        }
        case 'GET /dead-letters': {
          const since = Number(url.searchParams.get('since') ?? 0);
          const limit = Number(url.searchParams.get('limit') ?? 100);
          const all = [3, 8, 9].map((id) => ({ id, message_id: 'm', subscriber_id: 7, request: { query_params: {} }, last_error: 'boom', replayed_at: null }));
          const page = all.filter((d) => d.id > since).slice(0, limit);
          return sendJson(res, 200, { items: page, next_since: page.length ? page[page.length - 1].id : since || null });
        }
        case 'POST /dead-letters/3/replay':
          return sendJson(res, 200, { id: 3, replayed_at: 'now' });
        case 'POST /dead-letters/replay':
          return sendJson(res, 200, { replayed: 2 });
        case 'GET /ping':
          res.writeHead(200, { 'content-type': 'text/plain' }).end('pong');
          return;
        case 'GET /health':
          return sendJson(res, 503, { status: 'degraded', database: 'ok', redis: 'down' });
        case 'POST /refresh':
          return sendJson(res, 200, { subscribers: 3 });
        default:
          return sendJson(res, 404, { error: { code: 'not_found', message: `no route ${route}` } });
      }
    });
  });
  after(() => server.close());

  const client = () => new Switch({ baseUrl: server.url + '/', jwtSecret: 's', scope: 'publish admin' });

  test('publish sends the native form and the Idempotency-Key header', async () => {
    server.requests.length = 0;
    const result = await client().publish('orders.created', {
      body: { id: 42 },
      headers: { 'X-Trace': 'abc' },
      queryParams: { source: 'web' },
      pathParams: { id: '42' },
      httpMethod: 'PUT',
      idempotencyKey: 'k1',
    });
    assert.deepEqual(result, { messageId: 'm-new', matched: 2, duplicate: false, spooled: false });
    const sent = server.requests[0];
    assert.equal(sent.url, '/publish');
    assert.equal(sent.headers['content-type'], 'application/json');
    assert.equal(sent.headers['idempotency-key'], 'k1');
    assert.deepEqual(JSON.parse(sent.body), {
      topic: 'orders.created',
      body: { id: 42 },
      headers: { 'X-Trace': 'abc' },
      query_params: { source: 'web' },
      path_params: { id: '42' },
      http_method: 'PUT',
    });
  });

  test('publish sends only the topic when nothing else is given', async () => {
    server.requests.length = 0;
    await client().publish('t.x');
    assert.deepEqual(JSON.parse(server.requests[0].body), { topic: 't.x' });
    assert.equal(server.requests[0].headers['idempotency-key'], undefined);
  });

  test('a duplicate publish answers duplicate: true', async () => {
    const result = await client().publish('t', { idempotencyKey: 'dup' });
    assert.deepEqual(result, { messageId: 'm-first', matched: null, duplicate: true, spooled: false });
  });

  test('subscribers convert between camelCase and snake_case', async () => {
    server.requests.length = 0;
    const created = await client().subscribers.create({ topic: 'a.*', targetUrl: 'http://t/:id', filterExpression: 'body.x == 1', description: undefined });
    assert.deepEqual(JSON.parse(server.requests[0].body), { topic: 'a.*', target_url: 'http://t/:id', filter_expression: 'body.x == 1' });
    assert.equal(created.targetUrl, 'http://t/:id');
    assert.equal(created.filterExpression, 'body.x == 1');
    assert.equal(created.createdAt, 'c');
    assert.equal(created.target_url, undefined);

    const list = await client().subscribers.list({ topic: 'a.*' });
    assert.equal(server.requests[1].url, '/subscribers?topic=a.*');
    assert.deepEqual(list, [{ id: 1, topic: 'a.*', targetUrl: 'http://t', filterExpression: null, filterError: 'x' }]);

    const updated = await client().subscribers.update(7, { enabled: false, filterExpression: null });
    assert.deepEqual(JSON.parse(server.requests[2].body), { enabled: false, filter_expression: null });
    assert.equal(server.requests[2].method, 'PATCH');
    assert.deepEqual(updated, { id: 7, enabled: false, filterExpression: null });

    assert.equal(await client().subscribers.delete(7), undefined);
    const rotated = await client().subscribers.rotateSecret(7);
    assert.deepEqual(rotated, { id: 7, secret: 'whsec_BBBB', targetUrl: 'http://t' });
  });

  test('testFilter sends filter_expression and a snake_case message', async () => {
    server.requests.length = 0;
    assert.equal(await client().testFilter('true', { topic: 't', body: { a: { b_c: 1 } }, httpMethod: 'GET' }), true);
    assert.deepEqual(JSON.parse(server.requests[0].body), {
      filter_expression: 'true',
      message: { topic: 't', body: { a: { b_c: 1 } }, http_method: 'GET' },
    });
    assert.equal(await client().testFilter('false', { topic: 't' }), false);
    const err = await client().testFilter('a >', { topic: 't' }).catch((e) => e);
    assert.ok(err instanceof InvalidRequestError);
    assert.equal(err.position, 3);
    assert.equal(err.message, 'filter_expression: unexpected end');
  });

  test('deliveries.list returns one page; iterate follows the since cursor to an empty page', async () => {
    server.requests.length = 0;
    const page = await client().deliveries.list({ subscriberId: 7, limit: 2, outcome: 'delivered' });
    assert.equal(server.requests[0].url, '/deliveries?subscriber_id=7&outcome=delivered&limit=2');
    assert.deepEqual(page.items.map((d) => d.id), [1, 2]);
    assert.equal(page.nextSince, 2);
    assert.equal(page.items[0].httpStatus, 200);
    assert.equal(page.items[0].messageId, 'm');

    server.requests.length = 0;
    const ids = [];
    for await (const d of client().deliveries.iterate({ subscriberId: 7, limit: 2 })) ids.push(d.id);
    assert.deepEqual(ids, [1, 2, 3, 4, 5]);
    assert.deepEqual(
      server.requests.map((r) => new URL(r.url, 'http://x').searchParams.get('since')),
      [null, '2', '4', '5'],
    );

    const after3 = [];
    for await (const d of client().deliveries.iterate({ since: 3 })) after3.push(d.id);
    assert.deepEqual(after3, [4, 5]);
  });

  test('dead letters', async () => {
    server.requests.length = 0;
    const list = await client().deadLetters.list({ subscriberId: 7 });
    assert.equal(server.requests[0].url, '/dead-letters?subscriber_id=7');
    assert.equal(list[0].lastError, 'boom');
    assert.deepEqual(list[0].request, { query_params: {} }, 'nested user data is not renamed');
    assert.equal(list.length, 3);
    const ids = [];
    for await (const d of client().deadLetters.iterate({ subscriberId: 7, limit: 2 })) ids.push(d.id);
    assert.deepEqual(ids, [3, 8, 9]);
    assert.deepEqual(await client().deadLetters.replay(3), { id: 3, replayedAt: 'now' });
    await assert.rejects(client().deadLetters.replayAll(''), TypeError);
    assert.deepEqual(await client().deadLetters.replayAll(7), { replayed: 2 });
    assert.equal(server.requests.at(-1).url, '/dead-letters/replay?subscriber_id=7');
    await client().deadLetters.replayAll();
    assert.equal(server.requests.at(-1).url, '/dead-letters/replay', 'no subscriber: all of them');
  });

  test('ping, health and refresh', async () => {
    server.requests.length = 0;
    assert.equal(await client().ping(), 'pong');
    assert.equal(server.requests[0].headers.authorization, undefined, 'ping needs no token');
    assert.deepEqual(await client().health(), { ok: false, status: 'degraded', database: 'ok', redis: 'down' });
    assert.deepEqual(await client().refresh(), { subscribers: 3 });
    assert.match(server.requests[2].headers.authorization, /^Bearer /);
  });

  test('an unknown route maps to NotFoundError with the server message', async () => {
    await assert.rejects(client().subscribers.get('nope/x'), (err) => {
      assert.ok(err instanceof NotFoundError);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'not_found');
      assert.match(err.message, /no route GET \/subscribers\/nope%2Fx/);
      return true;
    });
  });
});

describe('error mapping', () => {
  const cases = [
    [400, 'invalid_request', InvalidRequestError],
    [401, 'unauthorized', UnauthorizedError],
    [403, 'forbidden', ForbiddenError],
    [404, 'not_found', NotFoundError],
    [409, 'conflict', ConflictError],
    [413, 'payload_too_large', PayloadTooLargeError],
    [503, 'unavailable', UnavailableError],
    [500, 'internal', SwitchError],
    [422, 'something_else', SwitchError],
  ];
  let server;
  before(async () => {
    server = await startServer((req, body, res) => {
      const [, kind, code] = req.url.match(/^\/(json|plain)(\d+)\//);
      const status = Number(code);
      const extra = status === 503 ? { 'retry-after': '7' } : {};
      if (kind === 'plain') {
        res.writeHead(status, { 'content-type': 'text/plain' }).end('upstream broke');
        return;
      }
      sendJson(res, status, { error: { code: cases.find((c) => c[0] === status)[1], message: `message for ${status}` } }, extra);
    });
  });
  after(() => server.close());

  for (const [status, code, Cls] of cases) {
    test(`${status} → ${Cls.name}`, async () => {
      const client = new Switch({ baseUrl: `${server.url}/json${status}`, jwtSecret: 's' });
      const err = await client.subscribers.list().catch((e) => e);
      assert.ok(err instanceof Cls, `${err?.constructor?.name} is ${Cls.name}`);
      assert.ok(err instanceof SwitchError);
      assert.ok(err instanceof Error);
      assert.equal(err.status, status);
      assert.equal(err.code, code);
      assert.equal(err.message, `message for ${status}`);
      assert.equal(err.name, Cls.name);
      if (Cls === UnavailableError) assert.equal(err.retryAfter, 7);
    });
  }

  test('a non-JSON error answer keeps its text and a default code', async () => {
    const err = await new Switch({ baseUrl: `${server.url}/plain502`, token: 't' }).refresh().catch((e) => e);
    assert.ok(err instanceof SwitchError);
    assert.equal(err.status, 502);
    assert.equal(err.code, 'internal');
    assert.equal(err.message, 'upstream broke');
    const err503 = await new Switch({ baseUrl: `${server.url}/plain503`, token: 't' }).refresh().catch((e) => e);
    assert.ok(err503 instanceof UnavailableError);
    assert.equal(err503.code, 'unavailable');
    assert.equal(err503.retryAfter, null);
  });

  test('413 sent before a large body is read still maps to PayloadTooLargeError', async () => {
    const early = await startServer(
      (req, body, res) => {
        sendJson(res, 413, { error: { code: 'payload_too_large', message: 'body larger than 1048576 bytes' } }, { connection: 'close' });
        req.destroy();
      },
      { readBody: false },
    );
    try {
      const client = new Switch({ baseUrl: early.url, jwtSecret: 's' });
      const err = await client.publish('big', { body: { data: 'x'.repeat(4 * 1024 * 1024) } }).catch((e) => e);
      assert.ok(err instanceof PayloadTooLargeError, String(err));
      assert.equal(err.code, 'payload_too_large');
    } finally {
      await early.close();
    }
  });

  test('a closed port is a NetworkError', async () => {
    const probe = http.createServer();
    await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address();
    await new Promise((resolve) => probe.close(resolve));
    const client = new Switch({ baseUrl: `http://127.0.0.1:${port}`, jwtSecret: 's' });
    const err = await client.publish('t').catch((e) => e);
    assert.ok(err instanceof NetworkError, String(err));
    assert.ok(err instanceof SwitchError);
    assert.equal(err.status, null);
    assert.equal(err.code, 'network');
    assert.match(err.message, /ECONNREFUSED/);
  });

  test('no answer within timeoutMs is a NetworkError with code timeout', async () => {
    const slow = await startServer(() => new Promise(() => {}));
    try {
      const client = new Switch({ baseUrl: slow.url, jwtSecret: 's', timeoutMs: 200 });
      const err = await client.publish('t').catch((e) => e);
      assert.ok(err instanceof NetworkError, String(err));
      assert.equal(err.code, 'timeout');
    } finally {
      await slow.close();
    }
  });
});

describe('message log, explain and batch publish', () => {
  const message = (i) => ({
    id: `msg_${i}`, topic: 'orders.created', author: 'a', body: { n: i, some_key: 1 },
    headers: { 'X-Trace': 't' }, query_params: { a_b: 'c' }, path_params: { id: String(i) },
    http_method: 'POST', ordering_key: null, matched: 1, created_at: `2024-01-01T00:00:0${i}.000Z`,
  });
  const explained = {
    matched: [7],
    subscribers: [
      { id: 7, matched: true, reason: 'matched' },
      { id: 8, matched: false, reason: 'filter_false', missing: ['body.total'] },
    ],
  };
  // A log of five messages whose cursor is position × 10; `emptyMoved` first answers that many
  // empty pages whose cursor moved (what a topic pattern scanning past other topics answers).
  let emptyMoved = 0;
  let server;
  before(async () => {
    server = await startServer((req, body, res) => {
      const url = new URL(req.url, 'http://x');
      const route = `${req.method} ${url.pathname}`;
      switch (route) {
        case 'GET /messages': {
          const since = Number(url.searchParams.get('since') ?? 0);
          const limit = Number(url.searchParams.get('limit') ?? 100);
          if (emptyMoved > 0) {
            emptyMoved -= 1;
            return sendJson(res, 200, { items: [], next_since: String(since + 1) });
          }
          const rows = [1, 2, 3, 4, 5].filter((i) => i * 10 > since).slice(0, limit);
          const next = rows.length ? String(rows.at(-1) * 10) : url.searchParams.get('since');
          return sendJson(res, 200, { items: rows.map(message), next_since: next });
        }
        case 'GET /messages/msg_3':
          return sendJson(res, 200, {
            ...message(3),
            deliveries: [
              { subscriber_id: 7, state: 'delivered', attempts: 1, last_http_status: 200 },
              { subscriber_id: 8, state: 'dead', attempts: 3, last_http_status: null },
            ],
          });
        case 'POST /messages/replay':
          return sendJson(res, 200, { messages: 3, jobs: 5, dry_run: JSON.parse(body).dry_run });
        case 'POST /publish':
          if (url.searchParams.get('dry_run') === 'true') return sendJson(res, 200, explained);
          return sendJson(res, 202, { message_id: 'm-new', matched: 2 });
        case 'POST /publish/batch': {
          const { messages } = JSON.parse(body);
          const bad = messages.findIndex((m) => m.topic.includes(' '));
          if (bad >= 0) return sendJson(res, 400, { error: { code: 'invalid_request', message: `messages[${bad}]: bad topic`, index: bad } });
          return sendJson(res, 202, { items: messages.map((m, i) => ({ message_id: `m${i}`, matched: i })) });
        }
        default:
          return sendJson(res, 404, { error: { code: 'not_found', message: `no route ${route}` } });
      }
    });
  });
  after(() => server.close());

  const client = () => new Switch({ baseUrl: server.url, jwtSecret: 's', scope: 'publish admin' });
  const sinces = () => server.requests.map((r) => new URL(r.url, 'http://x').searchParams.get('since'));

  test('messages.list follows next_since page by page until a page is empty', async () => {
    server.requests.length = 0;
    const it = client().messages.list({ topic: 'orders.*', author: 'a', limit: 2 });
    assert.ok(it instanceof MessageIterator);
    assert.equal(server.requests.length, 0, 'nothing is fetched before iterating');
    const got = [];
    for await (const m of it) got.push(m);
    assert.deepEqual(got.map((m) => m.id), ['msg_1', 'msg_2', 'msg_3', 'msg_4', 'msg_5']);
    assert.deepEqual(sinces(), [null, '20', '40', '50']);
    assert.equal(server.requests[0].url, '/messages?topic=orders.*&author=a&limit=2');
    assert.equal(it.nextSince, '50');
    assert.deepEqual(got[0], {
      id: 'msg_1', topic: 'orders.created', author: 'a', body: { n: 1, some_key: 1 },
      headers: { 'X-Trace': 't' }, queryParams: { a_b: 'c' }, pathParams: { id: '1' },
      httpMethod: 'POST', orderingKey: null, matched: 1, createdAt: '2024-01-01T00:00:01.000Z',
    });
  });

  test('nextSince moves past a page only once the whole page is yielded', async () => {
    const it = client().messages.list({ limit: 2 });
    assert.equal((await it.next()).value.id, 'msg_1');
    assert.equal(it.nextSince, null);
    assert.equal((await it.next()).value.id, 'msg_2');
    assert.equal(it.nextSince, '20');
    const ids = [];
    for await (const m of it) {
      ids.push(m.id);
      break;
    }
    assert.deepEqual(ids, ['msg_3']);
    assert.deepEqual(await it.next(), { done: true, value: undefined }, 'a for-await break ends it');
    const rest = [];
    for await (const m of client().messages.list({ since: it.nextSince })) rest.push(m.id);
    assert.deepEqual(rest, ['msg_3', 'msg_4', 'msg_5'], 'resuming repeats the unfinished page, skips nothing');
  });

  test('messages.list reads on past empty pages whose cursor moved', async () => {
    server.requests.length = 0;
    emptyMoved = 2;
    const ids = [];
    for await (const m of client().messages.list({ topic: 'orders.#', since: 30 })) ids.push(m.id);
    assert.deepEqual(ids, ['msg_4', 'msg_5']);
    assert.deepEqual(sinces(), ['30', '31', '32', '50']);
  });

  test('concurrent next() calls are answered in order', async () => {
    const it = client().messages.list({ limit: 1 });
    const results = await Promise.all([it.next(), it.next(), it.next()]);
    assert.deepEqual(results.map((r) => r.value.id), ['msg_1', 'msg_2', 'msg_3']);
  });

  test('messages.page, time bounds and limits', async () => {
    server.requests.length = 0;
    const page = await client().messages.page({
      after: new Date(Date.UTC(2024, 0, 1, 12)),
      before: '2024-01-02T00:00:00+01:00',
      since: 30,
      limit: 1000,
    });
    assert.deepEqual(page.items.map((m) => m.id), ['msg_4', 'msg_5']);
    assert.equal(page.nextSince, '50');
    const params = Object.fromEntries(new URL(server.requests[0].url, 'http://x').searchParams);
    assert.deepEqual(params, { after: '2024-01-01T12:00:00.000Z', before: '2024-01-02T00:00:00+01:00', since: '30', limit: '1000' });
    assert.deepEqual(await client().messages.page({ since: 50 }), { items: [], nextSince: '50' });
    const n = server.requests.length;
    for (const limit of [0, 1001, 2.5]) {
      await assert.rejects(client().messages.page({ limit }), RangeError);
      assert.throws(() => client().messages.list({ limit }), RangeError);
    }
    assert.throws(() => client().messages.list({ after: 12 }), TypeError);
    assert.throws(() => client().messages.list({ before: new Date('nope') }), TypeError);
    assert.equal(server.requests.length, n);
  });

  test('messages.get converts the deliveries; an unknown id is NotFoundError', async () => {
    const got = await client().messages.get('msg_3');
    assert.equal(got.id, 'msg_3');
    assert.deepEqual(got.queryParams, { a_b: 'c' }, 'user data keeps its keys');
    assert.deepEqual(got.deliveries, [
      { subscriberId: 7, state: 'delivered', attempts: 1, lastHttpStatus: 200 },
      { subscriberId: 8, state: 'dead', attempts: 3, lastHttpStatus: null },
    ]);
    const err = await client().messages.get('msg/none').catch((e) => e);
    assert.ok(err instanceof NotFoundError);
    assert.equal(err.code, 'not_found');
    assert.equal(server.requests.at(-1).url, '/messages/msg%2Fnone');
    await assert.rejects(client().messages.get(''), TypeError);
  });

  test('messages.replay sends the range and answers the counts', async () => {
    server.requests.length = 0;
    const result = await client().messages.replay({
      topic: 'orders.#', after: new Date(Date.UTC(2024, 0, 1)), subscriberId: '7', dryRun: true,
    });
    assert.deepEqual(result, { messages: 3, jobs: 5, dryRun: true });
    assert.deepEqual(JSON.parse(server.requests[0].body), {
      topic: 'orders.#', after: '2024-01-01T00:00:00.000Z', subscriber_id: 7, dry_run: true,
    });
    assert.deepEqual(await client().messages.replay(), { messages: 3, jobs: 5, dryRun: false });
    assert.deepEqual(JSON.parse(server.requests[1].body), { dry_run: false });
  });

  test('explain and publish with dryRun', async () => {
    server.requests.length = 0;
    const answer = await client().explain('orders.created', { body: { x: 1 }, queryParams: { a: 'b' } });
    assert.deepEqual(answer, {
      matched: [7],
      subscribers: [
        { id: 7, matched: true, reason: 'matched', missing: [] },
        { id: 8, matched: false, reason: 'filter_false', missing: ['body.total'] },
      ],
    });
    assert.equal(server.requests[0].url, '/publish?dry_run=true');
    assert.deepEqual(JSON.parse(server.requests[0].body), { topic: 'orders.created', body: { x: 1 }, query_params: { a: 'b' } });
    assert.deepEqual(await client().publish('orders.created', { body: { x: 1 }, dryRun: true, idempotencyKey: 'k' }), answer);
    assert.equal(server.requests[1].url, '/publish?dry_run=true');
    assert.equal(server.requests[1].headers['idempotency-key'], undefined);
    assert.deepEqual(await client().publish('orders.created', { dryRun: false }), { messageId: 'm-new', matched: 2, duplicate: false, spooled: false });
    await assert.rejects(client().explain(''), TypeError);
  });

  test('publishBatch sends native bodies and answers one result per message', async () => {
    server.requests.length = 0;
    const results = await client().publishBatch([
      { topic: 'a.b', body: { id: 1 }, queryParams: { x: 'y' }, httpMethod: 'PUT' },
      { topic: 'a.c', path_params: { id: '2' } },
    ]);
    assert.deepEqual(results, [{ messageId: 'm0', matched: 0, spooled: false }, { messageId: 'm1', matched: 1, spooled: false }]);
    assert.deepEqual(JSON.parse(server.requests[0].body), {
      messages: [
        { topic: 'a.b', body: { id: 1 }, query_params: { x: 'y' }, http_method: 'PUT' },
        { topic: 'a.c', path_params: { id: '2' } },
      ],
    });
    const err = await client().publishBatch([{ topic: 'a' }, { topic: 'bad topic' }]).catch((e) => e);
    assert.ok(err instanceof InvalidRequestError, String(err));
    assert.equal(err.index, 1);
    assert.equal(err.code, 'invalid_request');
    assert.equal(err.status, 400);
    const n = server.requests.length;
    await assert.rejects(client().publishBatch({ topic: 'a' }), TypeError);
    await assert.rejects(client().publishBatch([{ topic: 'a' }, 'b']), TypeError);
    assert.equal(server.requests.length, n);
  });

  test('errors without an index have index null', async () => {
    const err = await client().messages.get('nope').catch((e) => e);
    assert.equal(err.index, null);
    assert.equal(new SwitchError('x').index, null);
  });
});

describe('ordering keys and spooled publishes', () => {
  // Keys the hub takes: 1 to 255 bytes in UTF-8, no control characters.
  const goodKeys = ['k', 'customer-42', 'x'.repeat(255), 'é'.repeat(127) + 'x', 'заказ 42 ✓', 'a b\u00a0c', '😀'.repeat(63)];
  // Keys it refuses: empty, over 255 bytes, control characters (C0, DEL, C1), not text.
  const badKeys = ['', 'x'.repeat(256), 'é'.repeat(128), '😀'.repeat(64), 'a\nb', 'tab\there', 'nul\u0000', 'del\u007f', 'c1\u0085', '\ud800', 'x\udc00', 42, {}];

  // Answers like the hub: `spooled` while `state.spooled` is set (Redis unreachable).
  const state = { spooled: false };
  let server;
  before(async () => {
    server = await startServer((req, body, res) => {
      const url = new URL(req.url, 'http://x');
      const spooled = state.spooled ? { spooled: true } : {};
      if (url.pathname === '/publish' && url.searchParams.get('dry_run') === 'true') {
        return sendJson(res, 200, { matched: [], subscribers: [] });
      }
      if (url.pathname === '/publish') return sendJson(res, 202, { message_id: 'm1', matched: 2, ...spooled });
      if (url.pathname === '/publish/batch') {
        const { messages } = JSON.parse(body);
        return sendJson(res, 202, { items: messages.map((m, i) => ({ message_id: `b${i}`, matched: 1 })), ...spooled });
      }
      return sendJson(res, 404, { error: { code: 'not_found', message: url.pathname } });
    });
  });
  after(() => server.close());
  const client = () => new Switch({ baseUrl: server.url, jwtSecret: 's', scope: 'publish' });
  const sent = () => JSON.parse(server.requests.at(-1).body);

  test('publish, explain and dryRun send orderingKey as ordering_key', async () => {
    for (const key of goodKeys) {
      await client().publish('orders.created', { body: { id: 1 }, orderingKey: key });
      assert.deepEqual(sent(), { topic: 'orders.created', body: { id: 1 }, ordering_key: key });
      assert.equal(server.requests.at(-1).headers['ordering-key'], undefined);
    }
    await client().explain('orders.created', { orderingKey: 'customer-7' });
    assert.deepEqual(sent(), { topic: 'orders.created', ordering_key: 'customer-7' });
    await client().publish('orders.created', { orderingKey: 'customer-8', dryRun: true });
    assert.equal(server.requests.at(-1).url, '/publish?dry_run=true');
    assert.deepEqual(sent(), { topic: 'orders.created', ordering_key: 'customer-8' });
    await client().publish('orders.created', { orderingKey: null });
    assert.deepEqual(sent(), { topic: 'orders.created' });
  });

  test('a bad ordering key is a TypeError before anything is sent', async () => {
    const n = server.requests.length;
    for (const key of badKeys) {
      await assert.rejects(client().publish('t', { orderingKey: key }), (err) => err instanceof TypeError && /orderingKey/.test(err.message), JSON.stringify(key));
      await assert.rejects(client().explain('t', { orderingKey: key }), TypeError);
      await assert.rejects(client().publish('t', { orderingKey: key, dryRun: true }), TypeError);
      await assert.rejects(
        client().publishBatch([{ topic: 't' }, { topic: 't', orderingKey: key }]),
        (err) => err instanceof TypeError && /messages\[1\]\.orderingKey/.test(err.message),
      );
      await assert.rejects(client().publishBatch([{ topic: 't', ordering_key: key }]), /messages\[0\]/);
    }
    assert.equal(server.requests.length, n);
  });

  test('publishBatch sends each message\'s ordering key, in either spelling', async () => {
    const results = await client().publishBatch([
      { topic: 'a', orderingKey: 'k1' },
      { topic: 'a' },
      { topic: 'a', ordering_key: 'k2' },
      { topic: 'a', orderingKey: null },
    ]);
    assert.deepEqual(sent(), {
      messages: [{ topic: 'a', ordering_key: 'k1' }, { topic: 'a' }, { topic: 'a', ordering_key: 'k2' }, { topic: 'a', ordering_key: null }],
    });
    assert.deepEqual(results.map((r) => r.spooled), [false, false, false, false]);
  });

  test('a spooled answer (202, spooled: true) is a result, not an error', async () => {
    state.spooled = true;
    try {
      assert.deepEqual(await client().publish('orders.created', { orderingKey: 'k' }), {
        messageId: 'm1',
        matched: 2,
        duplicate: false,
        spooled: true,
      });
      assert.deepEqual(await client().publishBatch([{ topic: 'a', orderingKey: 'k' }, { topic: 'b' }]), [
        { messageId: 'b0', matched: 1, spooled: true },
        { messageId: 'b1', matched: 1, spooled: true },
      ]);
    } finally {
      state.spooled = false;
    }
    assert.equal((await client().publish('orders.created')).spooled, false);
    assert.equal((await client().publishBatch([{ topic: 'a' }]))[0].spooled, false);
  });
});

describe('constructor', () => {
  test('baseUrl is required', () => {
    assert.throws(() => new Switch({}), TypeError);
  });
  test('publish needs a topic', async () => {
    await assert.rejects(new Switch({ baseUrl: 'http://127.0.0.1:1' }).publish(''), TypeError);
  });
});
