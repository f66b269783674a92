// The live stream: the event-stream decoder, reconnecting against a scripted hub (node:http), and
// the real hub when SWITCH_TEST_URL and SWITCH_TEST_JWT_SECRET are set.

import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { randomBytes } from 'node:crypto';

import {
  Switch,
  MessageStream,
  createToken,
  SwitchError,
  NetworkError,
  InvalidRequestError,
  UnauthorizedError,
  ForbiddenError,
  NotFoundError,
} from '../index.js';
import { SSEDecoder } from '../src/stream.js';

const BASE_URL = process.env.SWITCH_TEST_URL;
const JWT_SECRET = process.env.SWITCH_TEST_JWT_SECRET;
const STREAM_WAIT_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// the decoder

function decode(...chunks) {
  const decoder = new SSEDecoder();
  const events = [];
  for (const chunk of chunks) events.push(...decoder.feed(typeof chunk === 'string' ? new TextEncoder().encode(chunk) : chunk));
  return events;
}

describe('SSEDecoder', () => {
  test('fields, comments and multi-line data', () => {
    const events = decode(
      ': live\n\n' +
        'id: msg_1\nevent: message\ndata: {"a":\ndata: 1}\n\n' +
        ': keep-alive\n\n' +
        'event: error\ndata: {"code":"slow_consumer"}\n\n',
    );
    assert.deepEqual(events, [
      { event: 'message', data: '{"a":\n1}', id: 'msg_1' },
      { event: 'error', data: '{"code":"slow_consumer"}', id: 'msg_1' },
    ]);
  });

  test('every line ending, split anywhere', () => {
    const text = 'id: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\rid: 3\ndata: c\n\n';
    const whole = decode(text);
    assert.deepEqual(whole.map((e) => [e.id, e.data]), [['1', 'a'], ['2', 'b'], ['3', 'c']]);
    const raw = new TextEncoder().encode(text);
    for (const size of [1, 2, 3, 5, 7]) {
      const chunks = [];
      for (let i = 0; i < raw.length; i += size) chunks.push(raw.subarray(i, i + size));
      assert.deepEqual(decode(...chunks), whole);
    }
    // A CR that ends a chunk is not a line of its own when an LF follows.
    assert.deepEqual(decode('data: x\r', '\n\r', '\n'), [{ event: 'message', data: 'x', id: null }]);
  });

  test('corners of the format', () => {
    // A byte order mark, a field without a colon, no space after the colon, an extra space kept.
    assert.deepEqual(decode('\ufeffdata\n\n'), [{ event: 'message', data: '', id: null }]);
    assert.equal(decode('data:x\ndata:  y\n\n')[0].data, 'x\n y');
    // An event without data is dropped, but its id is remembered; unknown fields are ignored.
    assert.deepEqual(decode('id: 7\nevent: ping\n\nfoo: bar\ndata: z\n\n'), [{ event: 'message', data: 'z', id: '7' }]);
    // retry takes digits only, with or without an event; an id with NUL is ignored.
    const decoder = new SSEDecoder();
    assert.deepEqual(decoder.feed(new TextEncoder().encode('retry: 1500\n\n')), []);
    assert.equal(decoder.retry, 1500);
    decoder.feed(new TextEncoder().encode('retry: 1.5\n\n'));
    assert.equal(decoder.retry, 1500);
    assert.equal(decode('id: a\0b\ndata: a\n\n')[0].id, null);
    // A multi-byte character split across chunks; an event cut off at the end is not dispatched.
    const raw = new TextEncoder().encode('data: café\n\n');
    assert.equal(decode(raw.subarray(0, 9), raw.subarray(9))[0].data, 'café');
    assert.deepEqual(decode('data: complete\n\ndata: cut off'), [{ event: 'message', data: 'complete', id: null }]);
  });
});

// ---------------------------------------------------------------------------------------------
// a scripted hub

function message(n) {
  return {
    id: `msg_${n}`,
    topic: 'orders.created',
    author: 'a',
    body: { n },
    headers: {},
    query_params: {},
    path_params: {},
    http_method: 'POST',
    ordering_key: null,
    matched: 0,
    created_at: '2026-01-01T00:00:00.000Z',
  };
}

const event = (n) => `id: msg_${n}\nevent: message\ndata: ${JSON.stringify(message(n))}\n\n`;
const SLOW = 'event: error\ndata: {"code":"slow_consumer"}\n\n';
// `retry: 1` makes the client's waits before reconnecting start at 1 ms.
const OPENING = 'retry: 1\n: live\n\n';

/** A complete event stream, then the end of the response. */
const sse = (...parts) => (req, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.end(OPENING + parts.join(''));
};
/** Part of an event stream, then the connection drops. */
const dropAfter = (...parts) => (req, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.write(OPENING + parts.join(''));
  setTimeout(() => res.socket.destroy(), 20);
};
/** An event stream that stays open. */
const hold = (...parts) => (req, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.write(OPENING + parts.join(''));
};
const refuse = (status, code) => (req, res) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { code, message: `refused: ${code}` } }));
};
const hangUp = () => (req) => req.socket.destroy();

/** Answers the n-th request with the n-th answer (401 once they run out). */
async function scriptedHub(...answers) {
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push({ url: new URL(req.url, 'http://hub.test'), headers: req.headers });
    (answers.shift() ?? refuse(401, 'unauthorized'))(req, res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    requests,
    client: () => new Switch({ baseUrl: url, jwtSecret: 's', author: 'a', scope: 'admin' }),
    resumedFrom: () => requests.map((r) => r.headers['last-event-id'] ?? null),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** The next `count` messages of `stream`, closing it if they do not come within `timeoutMs`. */
async function take(stream, count, timeoutMs = STREAM_WAIT_MS) {
  const got = [];
  if (count === 0) return got;
  const timer = setTimeout(() => stream.close(), timeoutMs);
  try {
    for (;;) {
      const { done, value } = await stream.next();
      if (done) break;
      got.push(value);
      if (got.length === count) break;
    }
  } finally {
    clearTimeout(timer);
  }
  assert.equal(got.length, count, `${got.length} of ${count} messages within ${timeoutMs} ms`);
  return got;
}

describe('stream against a scripted hub', () => {
  test('messages and keep-alives; a reconnect when the hub ends the response', async () => {
    const hub = await scriptedHub(sse(event(1), ': keep-alive\n\n', event(2)), refuse(401, 'unauthorized'));
    try {
      const stream = hub.client().stream('orders.*', { filter: 'body.n > 0' });
      assert.ok(stream instanceof MessageStream);
      assert.equal(hub.requests.length, 0, 'nothing is sent before connecting or iterating');
      const got = [];
      await assert.rejects(async () => {
        for await (const m of stream) got.push(m);
      }, UnauthorizedError);
      assert.deepEqual(got.map((m) => m.id), ['msg_1', 'msg_2']);
      assert.deepEqual(got[0], {
        id: 'msg_1',
        topic: 'orders.created',
        author: 'a',
        body: { n: 1 },
        headers: {},
        queryParams: {},
        pathParams: {},
        httpMethod: 'POST',
        orderingKey: null,
        matched: 0,
        createdAt: '2026-01-01T00:00:00.000Z',
      });
      const first = hub.requests[0];
      assert.equal(first.url.pathname, '/stream');
      assert.deepEqual(Object.fromEntries(first.url.searchParams), { topic: 'orders.*', filter: 'body.n > 0' });
      assert.equal(first.headers.accept, 'text/event-stream');
      assert.match(first.headers.authorization, /^Bearer ey/);
      // The hub ended the response: the stream came back for what follows msg_2.
      assert.deepEqual(hub.resumedFrom(), [null, 'msg_2']);
      assert.equal(stream.closed, true);
      assert.equal(stream.lastId, 'msg_2');
    } finally {
      await hub.close();
    }
  });

  test('slow_consumer, a dropped connection and failed attempts resume from the last message', async () => {
    const hub = await scriptedHub(
      sse(event(1), SLOW, event(99)), // nothing after the error event is read
      dropAfter(event(2), event(3).slice(0, 20)),
      hangUp(), // the hub is away for a moment: retried
      refuse(503, 'unavailable'),
      refuse(404, 'not_found'), // msg_2 not logged yet: retried
      sse(event(3), event(4)),
    );
    try {
      const stream = hub.client().stream('#', { since: 'msg_0' });
      const ids = [];
      for await (const m of stream) {
        ids.push(m.id);
        if (ids.length === 4) break;
      }
      assert.deepEqual(ids, ['msg_1', 'msg_2', 'msg_3', 'msg_4']);
      assert.deepEqual(hub.resumedFrom(), ['msg_0', 'msg_1', 'msg_2', 'msg_2', 'msg_2', 'msg_2']);
      assert.equal(stream.closed, true);
    } finally {
      await hub.close();
    }
  });

  test('errors on connect are typed and not retried', async () => {
    const cases = [
      [refuse(403, 'forbidden'), ForbiddenError],
      [refuse(400, 'invalid_request'), InvalidRequestError],
      [refuse(404, 'not_found'), NotFoundError],
      [hangUp(), NetworkError],
      [(req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), SwitchError],
    ];
    for (const [answer, Cls] of cases) {
      const hub = await scriptedHub(answer, sse(event(1)));
      try {
        const stream = hub.client().stream('#', { since: 'msg_0' });
        const err = await stream.connect().catch((e) => e);
        assert.ok(err instanceof Cls, `${Cls.name}: ${err}`);
        assert.equal(err.constructor, Cls);
        assert.equal(hub.requests.length, 1);
        assert.equal(stream.closed, true);
        assert.deepEqual(await stream.next(), { done: true, value: undefined });
      } finally {
        await hub.close();
      }
    }
  });

  test('an unknown error event ends the stream', async () => {
    const hub = await scriptedHub(sse(event(1), 'event: error\ndata: {"code":"shutting_down"}\n\n'));
    try {
      const stream = await hub.client().stream().connect();
      assert.equal((await stream.next()).value.id, 'msg_1');
      const err = await stream.next().catch((e) => e);
      assert.ok(err instanceof SwitchError);
      assert.equal(err.code, 'shutting_down');
      assert.equal(stream.closed, true);
      assert.deepEqual(await stream.next(), { done: true, value: undefined });
      assert.deepEqual(Object.fromEntries(hub.requests[0].url.searchParams), { topic: '#' });
    } finally {
      await hub.close();
    }
  });

  test('return(), close() and an aborted signal end a waiting read', async () => {
    const hub = await scriptedHub(hold(event(1)), hold(), hold());
    try {
      const client = hub.client();
      const stream = client.stream('orders.#');
      assert.equal((await stream.next()).value.id, 'msg_1');
      const pending = stream.next();
      setTimeout(() => stream.return(), 50);
      assert.deepEqual(await pending, { done: true, value: undefined });
      assert.equal(stream.closed, true);
      await assert.rejects(stream.connect(), /closed/);

      const controller = new AbortController();
      const aborted = client.stream('orders.#', { signal: controller.signal });
      await aborted.connect();
      setTimeout(() => controller.abort(), 50);
      const got = [];
      for await (const m of aborted) got.push(m);
      assert.deepEqual(got, []);

      const closed = await client.stream('orders.#').connect();
      await closed.close();
      await closed.close();
      assert.deepEqual(await closed.next(), { done: true, value: undefined });

      const already = client.stream('#', { signal: AbortSignal.abort() });
      assert.deepEqual(await already.next(), { done: true, value: undefined });
      assert.equal(hub.requests.length, 3);

      assert.throws(() => client.stream(''), TypeError);
      assert.throws(() => client.stream('#', { since: '' }), TypeError);
      assert.throws(() => client.stream('#', { filter: 1 }), TypeError);
    } finally {
      await hub.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// against the hub

/** A TCP proxy on 127.0.0.1 in front of the hub, whose connections a test can cut. */
async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const requests = [];
  const state = { refuse: false };
  const server = net.createServer((client) => {
    if (state.refuse) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    const index = requests.push('') - 1;
    client.on('data', (data) => {
      if (requests[index].length < 8192) requests[index] += data.toString('latin1');
    });
    client.pipe(upstream);
    upstream.pipe(client);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    state,
    /** Drops every open connection, as a network failure would. */
    cut() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const RUN = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
let serial = 0;
const newBase = () => `sdkjs.${RUN}.stream${serial++}`;

describe('stream against a running hub', { skip: BASE_URL ? false : 'SWITCH_TEST_URL is not set (no hub to test against)' }, () => {
  let admin;
  before(() => {
    assert.ok(JWT_SECRET, 'SWITCH_TEST_JWT_SECRET must be set along with SWITCH_TEST_URL');
    admin = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, author: 'sdk-js-tests', scope: 'publish admin' });
  });

  const publish = async (topic, body, options = {}) => (await admin.publish(topic, { body, ...options })).messageId;

  test('a stream gets exactly the matching messages, in order', async () => {
    const base = newBase();
    const stream = await admin.stream(`${base}.*`, { filter: 'body.total > 100' }).connect();
    try {
      const sent = [
        await publish(`${base}.created`, { total: 50 }),
        await publish(`${base}.created`, { total: 150 }, { headers: { 'X-N': '1' } }),
        await publish(`${base}.other.deep`, { total: 500 }), // outside the pattern
        await publish(`${base}x.created`, { total: 500 }), // outside the pattern
        await publish(`${base}.updated`, { total: 250 }, { httpMethod: 'PUT' }),
        await publish(`${base}.created`, { note: 'no total' }),
        await publish(`${base}.created`, { total: 300 }),
      ];
      const got = await take(stream, 3);
      assert.deepEqual(got.map((m) => m.id), [sent[1], sent[4], sent[6]]);
      assert.deepEqual(got.map((m) => m.body), [{ total: 150 }, { total: 250 }, { total: 300 }]);
      assert.deepEqual(got.map((m) => m.topic), [`${base}.created`, `${base}.updated`, `${base}.created`]);
      assert.deepEqual(got[0].headers, { 'X-N': '1' });
      assert.equal(got[1].httpMethod, 'PUT');
      assert.ok(got.every((m) => m.author === 'sdk-js-tests' && m.createdAt && m.deliveries === undefined));
      // Nothing else was in between: the next one is the next match.
      const last = await publish(`${base}.created`, { total: 101 });
      assert.deepEqual((await take(stream, 1)).map((m) => m.id), [last]);
      assert.equal(stream.lastId, last);
    } finally {
      await stream.close();
    }
    assert.equal(stream.closed, true);
  });

  test('a stream resumes after the last id', async () => {
    const topic = `${newBase()}.created`;
    const stream = await admin.stream(topic).connect();
    const first = [await publish(topic, { n: 0 }), await publish(topic, { n: 1 })];
    assert.deepEqual((await take(stream, 2)).map((m) => m.id), first);
    await stream.close();
    assert.equal(stream.lastId, first[1]);

    const missed = [];
    for (let n = 2; n < 5; n++) missed.push(await publish(topic, { n }));
    // The log has the messages within about a second; the hub waits for the resume point.
    const resumed = admin.stream(topic, { since: stream.lastId });
    try {
      assert.deepEqual((await take(resumed, 3)).map((m) => m.id), missed);
      const live = await publish(topic, { n: 5 });
      assert.deepEqual((await take(resumed, 1)).map((m) => m.id), [live]);
    } finally {
      await resumed.close();
    }
    await assert.rejects(admin.stream(topic, { since: 'msg_does_not_exist' }).connect(), NotFoundError);
  });

  test('a token must cover the pattern', async () => {
    const base = newBase();
    const token = createToken(JWT_SECRET, { author: 'sdk-js-tests', scope: 'publish', topics: [`${base}.*`] });
    const limited = new Switch({ baseUrl: BASE_URL, token });
    for (const pattern of ['#', `${base}.#`, 'other.*']) {
      const err = await limited.stream(pattern).connect().catch((e) => e);
      assert.ok(err instanceof ForbiddenError, String(err));
      assert.equal(err.status, 403);
      assert.equal(err.code, 'forbidden');
    }
    const stream = await limited.stream(`${base}.*`).connect();
    try {
      const sent = await limited.publish(`${base}.created`, { body: { n: 1 } });
      assert.deepEqual((await take(stream, 1)).map((m) => m.id), [sent.messageId]);
    } finally {
      await stream.close();
    }
    await assert.rejects(limited.stream(`${base}.*`, { filter: 'body.n >' }).connect(), InvalidRequestError);
    const wrong = new Switch({ baseUrl: BASE_URL, jwtSecret: 'not-the-hub-secret' });
    await assert.rejects(wrong.stream(`${base}.*`).connect(), UnauthorizedError);
  });

  test('a stream reconnects when the connection drops, and misses nothing', async () => {
    const topic = `${newBase()}.created`;
    const proxy = await startProxy(BASE_URL);
    const watcher = new Switch({ baseUrl: proxy.url, jwtSecret: JWT_SECRET, scope: 'admin' });
    const stream = await watcher.stream(topic).connect();
    try {
      const before = [await publish(topic, { n: 0 }), await publish(topic, { n: 1 })];
      assert.deepEqual((await take(stream, 2)).map((m) => m.id), before);

      proxy.state.refuse = true;
      proxy.cut();
      const during = [];
      for (let n = 2; n < 5; n++) during.push(await publish(topic, { n }));
      proxy.state.refuse = false;

      assert.deepEqual((await take(stream, 3)).map((m) => m.id), during);
      const after = await publish(topic, { n: 5 });
      assert.deepEqual((await take(stream, 1)).map((m) => m.id), [after]);
      const resumes = proxy.requests.filter((r) => r.toLowerCase().includes(`last-event-id: ${before[1]}`));
      assert.ok(resumes.length >= 1, 'the stream came back with Last-Event-ID');
    } finally {
      await stream.close();
      await proxy.close();
    }
  });
});
