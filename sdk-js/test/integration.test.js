// Tests against a real running hub (server + worker). They need:
//   SWITCH_TEST_URL         e.g. http://127.0.0.1:8080
//   SWITCH_TEST_JWT_SECRET  the hub's SWITCH_JWT_SECRET
// and are skipped when SWITCH_TEST_URL is not set. The hub's workers must be able to reach
// 127.0.0.1 on this machine: the tests run a webhook receiver there.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';

import {
  Switch,
  createToken,
  verifyWebhook,
  SwitchError,
  InvalidRequestError,
  UnauthorizedError,
  ForbiddenError,
  NotFoundError,
  PayloadTooLargeError,
  NetworkError,
} from '../index.js';

const BASE_URL = process.env.SWITCH_TEST_URL;
const JWT_SECRET = process.env.SWITCH_TEST_JWT_SECRET;
const skip = BASE_URL ? false : 'SWITCH_TEST_URL is not set (no hub to test against)';
const WAIT_MS = 20_000;

const RUN = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
const topicFor = (name) => `sdkjs.${RUN}.${name}`;

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
async function waitFor(what, fn, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * A webhook receiver on 127.0.0.1, port 0. Every request is recorded with its raw body. Paths
 * starting with /gone/ answer 410 while `receiver.gone` is true; everything else answers 204.
 */
async function startReceiver() {
  const received = [];
  const state = { gone: true };
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const entry = { method: req.method, url: req.url, headers: req.headers, rawBody: Buffer.concat(chunks) };
    if (req.url.startsWith('/gone/') && state.gone) {
      entry.status = 410;
      received.push(entry);
      res.writeHead(410).end();
      return;
    }
    entry.status = 204;
    received.push(entry);
    res.writeHead(204).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    received,
    state,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

describe('against a running hub', { skip, concurrency: false }, () => {
  let admin;
  let receiver;
  const created = [];

  async function createSubscriber(input) {
    const sub = await admin.subscribers.create(input);
    created.push(sub.id);
    return sub;
  }

  before(async () => {
    assert.ok(JWT_SECRET, 'SWITCH_TEST_JWT_SECRET must be set along with SWITCH_TEST_URL');
    admin = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, author: 'sdk-js-tests', scope: 'publish admin' });
    receiver = await startReceiver();
  });

  after(async () => {
    for (const id of created) {
      await admin.subscribers.delete(id).catch((err) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    }
    await receiver?.close();
  });

  test('ping, health and refresh', async () => {
    assert.equal(await admin.ping(), 'pong');
    const health = await admin.health();
    assert.equal(health.ok, true, JSON.stringify(health));
    assert.equal(health.status, 'ok');
    await admin.refresh();
  });

  let sub;
  let firstMessageId;
  test('publish to a subscriber: matched 1, delivered, signature verifies', async () => {
    const topic = topicFor('orders.created');
    sub = await createSubscriber({ topic, targetUrl: `${receiver.url}/hook/:id`, description: 'sdk-js receiver' });
    assert.match(sub.secret, /^whsec_/);
    assert.equal(sub.targetUrl, `${receiver.url}/hook/:id`);

    const body = { id: 42, total: 9.5, user: { name: 'Zoë' } };
    const result = await admin.publish(topic, {
      body,
      headers: { 'X-Trace': 'abc' },
      queryParams: { source: 'web' },
      pathParams: { id: '42' },
    });
    assert.equal(result.matched, 1);
    assert.equal(result.duplicate, false);
    assert.equal(typeof result.messageId, 'string');
    assert.ok(result.messageId.length > 0);
    firstMessageId = result.messageId;

    const delivery = await waitFor('the webhook', () =>
      receiver.received.find((r) => r.headers['webhook-id'] === result.messageId),
    );
    assert.equal(delivery.method, 'POST');
    assert.equal(delivery.url, '/hook/42?source=web');
    assert.equal(delivery.headers['x-trace'], 'abc');
    assert.equal(delivery.headers['x-switch-topic'], topic);
    assert.equal(delivery.headers['x-switch-author'], 'sdk-js-tests');
    assert.equal(delivery.headers['x-switch-attempt'], '1');
    assert.match(delivery.headers['content-type'], /^application\/json/);
    assert.deepEqual(verifyWebhook(sub.secret, delivery.headers, delivery.rawBody), body);
    assert.deepEqual(verifyWebhook(sub.secret, delivery.headers, delivery.rawBody.toString('utf8')), body);
    assert.throws(() => verifyWebhook(`whsec_${randomBytes(24).toString('base64')}`, delivery.headers, delivery.rawBody));
  });

  test('idempotency: the same key answers duplicate with the first message id', async () => {
    const topic = sub.topic;
    const key = `sdkjs-${RUN}-idem`;
    const first = await admin.publish(topic, { body: { n: 1 }, idempotencyKey: key });
    assert.equal(first.duplicate, false);
    assert.equal(first.matched, 1);
    const second = await admin.publish(topic, { body: { n: 1 }, idempotencyKey: key });
    assert.equal(second.duplicate, true);
    assert.equal(second.messageId, first.messageId);
  });

  test('deliveries: list pages and iterate walks the since cursor', async () => {
    const more = [];
    for (let i = 0; i < 3; i++) more.push((await admin.publish(sub.topic, { body: { i } })).messageId);
    const wanted = [firstMessageId, ...more];
    await waitFor('the webhooks', () =>
      wanted.every((id) => receiver.received.some((r) => r.headers['webhook-id'] === id)),
    );

    // Attempts are recorded once the delivery is done; wait until each message shows as delivered.
    const delivered = await waitFor('delivered attempts', async () => {
      const seen = [];
      for await (const attempt of admin.deliveries.iterate({ subscriberId: sub.id, outcome: 'delivered' })) seen.push(attempt);
      return wanted.every((id) => seen.some((a) => a.messageId === id)) && seen;
    });
    for (const attempt of delivered) {
      assert.equal(String(attempt.subscriberId), String(sub.id));
      assert.equal(attempt.outcome, 'delivered');
      assert.equal(attempt.httpStatus, 204);
      assert.ok(attempt.attempt >= 1);
      assert.ok(attempt.createdAt);
    }

    const byMessage = await admin.deliveries.list({ messageId: firstMessageId });
    assert.ok(byMessage.items.length >= 1);
    assert.ok(byMessage.items.every((a) => a.messageId === firstMessageId));

    // One item per page: iterate must ask page after page and see every attempt exactly once.
    const all = (await admin.deliveries.list({ subscriberId: sub.id, limit: 100 })).items;
    const ids = [];
    for await (const attempt of admin.deliveries.iterate({ subscriberId: sub.id, limit: 1 })) ids.push(attempt.id);
    assert.ok(ids.length >= wanted.length);
    assert.deepEqual(ids.slice(0, all.length).map(String), all.map((a) => String(a.id)));
    assert.equal(new Set(ids.map(String)).size, ids.length, 'no attempt twice');
    for (let i = 1; i < ids.length; i++) assert.ok(Number(ids[i]) > Number(ids[i - 1]), 'ascending ids');

    const onePage = await admin.deliveries.list({ subscriberId: sub.id, limit: 1 });
    assert.equal(onePage.items.length, 1);
    const after = await admin.deliveries.list({ subscriberId: sub.id, since: onePage.items[0].id, limit: 100 });
    assert.ok(after.items.every((a) => Number(a.id) > Number(onePage.items[0].id)));
  });

  test('a filter decides which subscribers match at publish time', async () => {
    const topic = topicFor('filtered');
    await createSubscriber({ topic, targetUrl: `${receiver.url}/filtered`, filterExpression: 'body.total > 100' });
    assert.equal((await admin.publish(topic, { body: { total: 50 } })).matched, 0);
    assert.equal((await admin.publish(topic, { body: { total: 150 } })).matched, 1);
  });

  test('a wrong JWT secret is refused with UnauthorizedError', async () => {
    const wrong = new Switch({ baseUrl: BASE_URL, jwtSecret: `${JWT_SECRET}-wrong`, author: 'sdk-js-tests', scope: 'publish admin' });
    const err = await wrong.publish(topicFor('x')).catch((e) => e);
    assert.ok(err instanceof UnauthorizedError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.code, 'unauthorized');
    const garbage = new Switch({ baseUrl: BASE_URL, token: 'not-a-jwt' });
    await assert.rejects(garbage.publish(topicFor('x')), UnauthorizedError);
    const none = new Switch({ baseUrl: BASE_URL });
    await assert.rejects(none.publish(topicFor('x')), UnauthorizedError);
  });

  test('a token without the admin scope gets ForbiddenError on admin endpoints', async () => {
    const publisher = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, author: 'sdk-js-tests', scope: 'publish' });
    const err = await publisher.subscribers.list().catch((e) => e);
    assert.ok(err instanceof ForbiddenError, String(err));
    assert.equal(err.status, 403);
    assert.equal(err.code, 'forbidden');
    await assert.rejects(publisher.deliveries.list(), ForbiddenError);
    // It may still publish.
    const ok = await publisher.publish(topicFor('nobody'));
    assert.equal(ok.matched, 0);
  });

  test('a token limited to some topics gets ForbiddenError on others', async () => {
    const limited = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, author: 'sdk-js-tests', scope: 'publish', topics: [`sdkjs.${RUN}.allowed.#`] });
    assert.equal((await limited.publish(topicFor('allowed.one'))).duplicate, false);
    await assert.rejects(limited.publish(topicFor('other')), ForbiddenError);
  });

  test('a body over 1 MiB is refused with PayloadTooLargeError', async () => {
    const err = await admin.publish(topicFor('big'), { body: { data: 'x'.repeat(1024 * 1024 + 1024) } }).catch((e) => e);
    assert.ok(err instanceof PayloadTooLargeError, String(err));
    assert.equal(err.status, 413);
    assert.equal(err.code, 'payload_too_large');
  });

  test('a bad topic is refused with InvalidRequestError', async () => {
    const err = await admin.publish('bad topic!').catch((e) => e);
    assert.ok(err instanceof InvalidRequestError, String(err));
    assert.equal(err.code, 'invalid_request');
  });

  test('a closed port is a NetworkError', async () => {
    const probe = http.createServer();
    await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address();
    await new Promise((resolve) => probe.close(resolve));
    const client = new Switch({ baseUrl: `http://127.0.0.1:${port}`, jwtSecret: JWT_SECRET, author: 'sdk-js-tests' });
    await assert.rejects(client.publish(topicFor('x')), NetworkError);
  });

  test('subscribers: create, get, list, update, rotate secret, delete', async () => {
    const topic = topicFor('crud.*');
    const secret = `whsec_${randomBytes(24).toString('base64')}`;
    const s = await createSubscriber({
      topic,
      targetUrl: 'http://127.0.0.1:9/unused/:id',
      filterExpression: 'body.total > 100',
      description: 'crud',
      enabled: false,
      secret,
    });
    assert.equal(s.topic, topic);
    assert.equal(s.targetUrl, 'http://127.0.0.1:9/unused/:id');
    assert.equal(s.filterExpression, 'body.total > 100');
    assert.equal(s.description, 'crud');
    assert.equal(s.enabled, false);
    assert.equal(s.secret, secret);
    assert.ok(s.createdAt && s.updatedAt);
    assert.equal(s.target_url, undefined, 'fields are camelCase');

    const got = await admin.subscribers.get(s.id);
    assert.equal(String(got.id), String(s.id));
    assert.equal(got.targetUrl, s.targetUrl);

    const listed = await admin.subscribers.list({ topic });
    assert.deepEqual(listed.map((x) => String(x.id)), [String(s.id)]);
    assert.ok((await admin.subscribers.list()).some((x) => String(x.id) === String(s.id)));

    const updated = await admin.subscribers.update(s.id, { description: 'changed', filterExpression: null, targetUrl: 'http://127.0.0.1:9/other' });
    assert.equal(updated.description, 'changed');
    assert.equal(updated.filterExpression ?? null, null);
    assert.equal(updated.targetUrl, 'http://127.0.0.1:9/other');
    assert.equal(updated.enabled, false, 'fields not given are unchanged');
    assert.equal((await admin.subscribers.get(s.id)).description, 'changed');

    const rotated = await admin.subscribers.rotateSecret(s.id);
    assert.match(rotated.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.notEqual(rotated.secret, secret);
    assert.equal((await admin.subscribers.get(s.id)).secret, rotated.secret);

    await assert.rejects(admin.subscribers.update(s.id, { filterExpression: '(body.total > 1' }), InvalidRequestError);
    await assert.rejects(
      admin.subscribers.create({ topic: 'bad topic!', targetUrl: 'http://127.0.0.1:9/' }),
      InvalidRequestError,
    );

    await admin.subscribers.delete(s.id);
    const gone = await admin.subscribers.get(s.id).catch((e) => e);
    assert.ok(gone instanceof NotFoundError, String(gone));
    assert.ok(gone instanceof SwitchError);
    assert.equal(gone.status, 404);
    assert.equal(gone.code, 'not_found');
    assert.ok(gone.message.length > 0);
    await assert.rejects(admin.subscribers.delete(s.id), NotFoundError);
  });

  test('testFilter evaluates an expression against a message', async () => {
    const message = { topic: 'orders.created', body: { total: 150, user: { id: 7 } }, headers: { source: 'web' }, httpMethod: 'POST' };
    assert.equal(await admin.testFilter('body.total > 100', message), true);
    assert.equal(await admin.testFilter('body.total > 1000', message), false);
    assert.equal(await admin.testFilter('body.user.id == 7 && topic == "orders.created"', message), true);
    assert.equal(await admin.testFilter('http_method == "POST"', message), true);
    assert.equal(await admin.testFilter('body.missing == 1', message), false);
    assert.equal(await admin.testFilter('', message), true);
    const err = await admin.testFilter('(body.total > 1', message).catch((e) => e);
    assert.ok(err instanceof InvalidRequestError, String(err));
    assert.equal(err.code, 'invalid_request');
    assert.ok(err.message.length > 0);
    assert.equal(typeof err.position, 'number', 'the hub names where the expression fails');
  });

  test('410 makes a dead letter; replay delivers it again', async () => {
    receiver.state.gone = true;
    const topic = topicFor('gone');
    const s = await createSubscriber({ topic, targetUrl: `${receiver.url}/gone/:id` });
    const { messageId, matched } = await admin.publish(topic, { body: { bye: true }, pathParams: { id: '1' } });
    assert.equal(matched, 1);

    const dead = await waitFor('the dead letter', async () => {
      const letters = await admin.deadLetters.list({ subscriberId: s.id });
      return letters.find((d) => d.messageId === messageId);
    });
    assert.equal(String(dead.subscriberId), String(s.id));
    assert.equal(dead.replayedAt ?? null, null);
    await waitFor('410 to disable the subscriber', async () => (await admin.subscribers.get(s.id)).enabled === false);
    assert.ok((await admin.deadLetters.list()).some((d) => String(d.id) === String(dead.id)));

    receiver.state.gone = false;
    await admin.subscribers.update(s.id, { enabled: true });
    await admin.deadLetters.replay(dead.id);

    const redelivered = await waitFor('the replayed webhook', () =>
      receiver.received.find((r) => r.headers['webhook-id'] === messageId && r.status === 204),
    );
    assert.equal(redelivered.url, '/gone/1');
    assert.deepEqual(verifyWebhook(s.secret, redelivered.headers, redelivered.rawBody), { bye: true });

    const after = await waitFor('replayed_at', async () =>
      (await admin.deadLetters.list({ subscriberId: s.id })).find((d) => String(d.id) === String(dead.id) && d.replayedAt),
    );
    assert.ok(after.replayedAt);

    // Nothing left to replay for this subscriber: replayAll still answers.
    await admin.deadLetters.replayAll(s.id);
    await assert.rejects(admin.deadLetters.replay('0'), (err) => err instanceof NotFoundError || err instanceof InvalidRequestError);
  });
  // Messages reach the log within about 2 s of their publish; allow for a slow machine.
  const ARCHIVE_WAIT_MS = 10_000;

  /** Every message `messages.list(query)` yields, once there are at least `count`. */
  async function logged(count, query) {
    return waitFor(
      `${count} message(s) in the log`,
      async () => {
        const seen = [];
        for await (const m of admin.messages.list(query)) seen.push(m);
        return seen.length >= count && seen;
      },
      ARCHIVE_WAIT_MS,
    );
  }

  test('message log: lists in publish order, pages, polls from nextSince', async () => {
    const topic = topicFor('log.created');
    const published = [];
    for (let n = 0; n < 5; n++) published.push(await admin.publish(topic, { body: { n }, headers: { 'X-N': String(n) } }));
    const messages = await logged(5, { topic, limit: 2 }); // three pages of at most 2
    assert.deepEqual(messages.map((m) => m.id), published.map((p) => p.messageId));
    messages.forEach((m, n) => {
      assert.equal(m.topic, topic);
      assert.deepEqual(m.body, { n });
      assert.deepEqual(m.headers, { 'X-N': String(n) });
      assert.equal(m.author, 'sdk-js-tests');
      assert.equal(m.httpMethod, 'POST');
      assert.equal(m.matched, 0);
      assert.match(m.createdAt, /^\d{4}-\d\d-\d\dT.*Z$/);
      assert.equal(m.deliveries, undefined);
      assert.equal(m.created_at, undefined, 'fields are camelCase');
    });

    const byPattern = [];
    for await (const m of admin.messages.list({ topic: `sdkjs.${RUN}.log.*`, author: 'sdk-js-tests' })) byPattern.push(m.id);
    assert.deepEqual(byPattern, messages.map((m) => m.id));
    const before = [];
    for await (const m of admin.messages.list({ topic, before: messages[0].createdAt })) before.push(m);
    assert.deepEqual(before, []);
    const later = [];
    for await (const m of admin.messages.list({ topic, after: new Date(messages[0].createdAt) })) later.push(m.id);
    assert.deepEqual(later, messages.filter((m) => m.createdAt !== messages[0].createdAt).map((m) => m.id));

    const it = admin.messages.list({ topic });
    let count = 0;
    for await (const m of it) count += m ? 1 : 0;
    assert.equal(count, 5);
    const cursor = it.nextSince;
    assert.equal(typeof cursor, 'string');
    assert.deepEqual(await admin.messages.page({ topic, since: cursor }), { items: [], nextSince: cursor });
    const newer = await admin.publish(topic, { body: { n: 5 } });
    const polled = await logged(1, { topic, since: cursor });
    assert.deepEqual(polled.map((m) => m.id), [newer.messageId]);

    const page = await admin.messages.page({ topic, limit: 2 });
    assert.deepEqual(page.items.map((m) => m.id), messages.slice(0, 2).map((m) => m.id));
    const rest = await admin.messages.page({ topic, since: page.nextSince, limit: 1000 });
    assert.deepEqual(rest.items.map((m) => m.id), [...messages.slice(2).map((m) => m.id), newer.messageId]);
  });

  test('messages.get shows the delivery state per subscriber', async () => {
    const topic = topicFor('log.delivered');
    const s = await createSubscriber({ topic, targetUrl: `${receiver.url}/log/:id` });
    const { messageId, matched } = await admin.publish(topic, { body: { total: 7 }, pathParams: { id: '7' } });
    assert.equal(matched, 1);
    const message = await waitFor(
      'the delivered message in the log',
      async () => {
        const m = await admin.messages.get(messageId).catch((err) => {
          if (err instanceof NotFoundError) return null;
          throw err;
        });
        return m && m.deliveries.length === 1 && m.deliveries[0].state === 'delivered' && m;
      },
      ARCHIVE_WAIT_MS,
    );
    assert.equal(message.id, messageId);
    assert.deepEqual(message.body, { total: 7 });
    assert.deepEqual(message.pathParams, { id: '7' });
    assert.equal(message.matched, 1);
    assert.deepEqual(message.deliveries, [{ subscriberId: s.id, state: 'delivered', attempts: 1, lastHttpStatus: 204 }]);

    const err = await admin.messages.get('msg_does_not_exist').catch((e) => e);
    assert.ok(err instanceof NotFoundError, String(err));
    assert.equal(err.status, 404);
    assert.equal(err.code, 'not_found');
  });

  test('explain: a false filter reports the variables the message lacks', async () => {
    const topic = topicFor('explain');
    const every = await createSubscriber({ topic, targetUrl: 'http://127.0.0.1:9/every' });
    const big = await createSubscriber({ topic, targetUrl: 'http://127.0.0.1:9/big', filterExpression: 'body.total > 100' });
    const off = await createSubscriber({ topic, targetUrl: 'http://127.0.0.1:9/off', enabled: false });
    await admin.refresh();

    const answer = await admin.explain(topic, { body: { note: 'no total' } });
    assert.deepEqual(answer.matched, [every.id]);
    const byId = new Map(answer.subscribers.map((x) => [String(x.id), x]));
    assert.equal(byId.size, 3);
    assert.deepEqual(byId.get(String(every.id)), { id: every.id, matched: true, reason: 'matched', missing: [] });
    assert.deepEqual(byId.get(String(big.id)), { id: big.id, matched: false, reason: 'filter_false', missing: ['body.total'] });
    assert.equal(byId.get(String(off.id)).reason, 'disabled');

    const dry = await admin.publish(topic, { body: { total: 150 }, dryRun: true });
    assert.deepEqual([...dry.matched].sort(), [every.id, big.id].sort());

    const publisher = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, author: 'sdk-js-tests', scope: 'publish' });
    assert.deepEqual((await publisher.explain(topic)).matched, [every.id], 'scope publish may explain');
  });

  test('publishBatch: all or nothing; a bad item is named by index', async () => {
    const base = `sdkjs.${RUN}.batch`;
    const err = await admin
      .publishBatch([{ topic: `${base}.refused`, body: { n: 0 } }, { topic: 'not a topic!', body: { n: 1 } }, { topic: `${base}.refused` }])
      .catch((e) => e);
    assert.ok(err instanceof InvalidRequestError, String(err));
    assert.equal(err.index, 1);
    assert.equal(err.status, 400);
    assert.equal(err.code, 'invalid_request');

    await createSubscriber({ topic: `${base}.ok`, targetUrl: 'http://127.0.0.1:9/batch', filterExpression: 'body.n > 0' });
    await admin.refresh();
    const results = await admin.publishBatch([
      { topic: `${base}.ok`, body: { n: 0 } },
      { topic: `${base}.ok`, body: { n: 1 }, headers: { 'X-Trace': 'b' } },
      { topic: `${base}.ok`, body: { n: 2 }, httpMethod: 'PUT' },
    ]);
    assert.deepEqual(results.map((r) => r.matched), [0, 1, 1]);
    assert.equal(new Set(results.map((r) => r.messageId)).size, 3);

    const messages = await logged(3, { topic: `${base}.#` });
    assert.deepEqual(messages.map((m) => m.id), results.map((r) => r.messageId));
    assert.deepEqual(messages.map((m) => m.body), [{ n: 0 }, { n: 1 }, { n: 2 }]);
    assert.deepEqual(messages[1].headers, { 'X-Trace': 'b' });
    assert.equal(messages[2].httpMethod, 'PUT');
    assert.ok(messages.every((m) => m.topic === `${base}.ok`), 'the refused batch logged nothing');

    const empty = await admin.publishBatch([]).catch((e) => e);
    assert.ok(empty instanceof InvalidRequestError, String(empty));
    assert.equal(empty.index, null);
  });

  /** `messages.get(id)` once the message is in the log. */
  async function loggedMessage(id) {
    return waitFor(
      `message ${id} in the log`,
      () =>
        admin.messages.get(id).catch((err) => {
          if (err instanceof NotFoundError) return null;
          throw err;
        }),
      ARCHIVE_WAIT_MS,
    );
  }

  test('orderingKey: kept with the message, delivered one at a time in publish order', async () => {
    const topic = topicFor('ordered');
    const s = await createSubscriber({ topic, targetUrl: `${receiver.url}/ordered/${RUN}` });
    await admin.refresh();
    const key = 'customer-42 ✓';
    assert.deepEqual((await admin.explain(topic, { body: { n: 0 }, orderingKey: key })).matched, [s.id]);

    const keyed = [];
    for (let n = 0; n < 4; n++) keyed.push(await admin.publish(topic, { body: { n }, orderingKey: key }));
    for (const r of keyed) assert.deepEqual({ matched: r.matched, duplicate: r.duplicate, spooled: r.spooled }, { matched: 1, duplicate: false, spooled: false });
    const plain = await admin.publish(topic, { body: { n: 4 } });
    assert.equal(plain.spooled, false);
    const longest = 'é'.repeat(127) + 'x'; // 255 bytes in UTF-8: the most the hub takes
    const atLimit = await admin.publish(topic, { body: { n: 5 }, orderingKey: longest });

    for (const r of keyed) assert.equal((await loggedMessage(r.messageId)).orderingKey, key);
    assert.equal((await loggedMessage(plain.messageId)).orderingKey, null);
    assert.equal((await loggedMessage(atLimit.messageId)).orderingKey, longest);

    const path = `/ordered/${RUN}`;
    const got = await waitFor('six deliveries', () => {
      const mine = receiver.received.filter((r) => r.url === path);
      return mine.length >= 6 && mine;
    });
    const order = got.map((r) => JSON.parse(r.rawBody.toString('utf8')).n);
    assert.deepEqual(order.filter((n) => n < 4), [0, 1, 2, 3]);
  });

  test('a bad orderingKey is refused by the SDK as by the hub', async () => {
    const topic = topicFor('ordered.bad');
    const token = createToken(JWT_SECRET, { author: 'sdk-js-tests', scope: 'publish' });
    for (const key of ['', 'x'.repeat(256), 'é'.repeat(128), 'a\nb', 'del\u007f', 'c1\u0085']) {
      await assert.rejects(admin.publish(topic, { orderingKey: key }), TypeError);
      // The same body sent without the SDK's check: the hub refuses it too.
      const answer = await fetch(`${BASE_URL}/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ topic, ordering_key: key }),
      });
      assert.equal(answer.status, 400, JSON.stringify(key));
      assert.equal((await answer.json()).error.code, 'invalid_request');
    }
    const page = await admin.messages.page({ topic });
    assert.deepEqual(page.items, []);
  });

  test('publishBatch: each message may carry its own orderingKey', async () => {
    const topic = topicFor('ordered.batch');
    const results = await admin.publishBatch([
      { topic, body: { n: 0 }, orderingKey: 'k-a' },
      { topic, body: { n: 1 } },
      { topic, body: { n: 2 }, ordering_key: 'k-b' },
      { topic, body: { n: 3 }, orderingKey: 'k-a' },
    ]);
    assert.equal(results.length, 4);
    assert.ok(results.every((r) => r.spooled === false));
    const messages = await logged(4, { topic });
    assert.deepEqual(messages.map((m) => m.id), results.map((r) => r.messageId));
    assert.deepEqual(messages.map((m) => m.orderingKey), ['k-a', null, 'k-b', 'k-a']);
    assert.equal((await loggedMessage(results[2].messageId)).orderingKey, 'k-b');

    await assert.rejects(
      admin.publishBatch([{ topic, orderingKey: 'fine' }, { topic, orderingKey: 'x'.repeat(256) }]),
      /messages\[1\]\.orderingKey/,
    );
    assert.equal((await logged(4, { topic })).length, 4, 'the refused batch sent nothing');
  });

  test('messages.replay: dry-run counts, then a backfill of one subscriber', async () => {
    const topic = topicFor('replay');
    const published = [];
    for (const total of [50, 150, 250]) published.push(await admin.publish(topic, { body: { total } }));
    const messages = await logged(3, { topic });
    assert.deepEqual(messages.map((m) => m.id), published.map((p) => p.messageId));

    const every = await createSubscriber({ topic, targetUrl: `${receiver.url}/replay-every` });
    const big = await createSubscriber({ topic, targetUrl: `${receiver.url}/replay-big`, filterExpression: 'body.total > 100' });
    await admin.refresh();

    assert.deepEqual(await admin.messages.replay({ topic, dryRun: true }), { messages: 3, jobs: 5, dryRun: true });
    assert.deepEqual(await admin.messages.replay({ topic, subscriberId: big.id, dryRun: true }), { messages: 3, jobs: 2, dryRun: true });
    const afterFirst = await admin.messages.replay({ topic, after: messages[0].createdAt, subscriberId: every.id, dryRun: true });
    assert.equal(afterFirst.messages, messages.filter((m) => m.createdAt !== messages[0].createdAt).length);
    assert.equal(afterFirst.jobs, afterFirst.messages);
    assert.deepEqual(await admin.messages.replay({ topic: `${topic}.none`, dryRun: true }), { messages: 0, jobs: 0, dryRun: true });
    await assert.rejects(admin.messages.replay({ topic, subscriberId: 999_999_999, dryRun: true }), NotFoundError);

    assert.deepEqual(await admin.messages.replay({ topic, subscriberId: big.id }), { messages: 3, jobs: 2, dryRun: false });
    const got = await waitFor('the backfilled webhooks', () => {
      const hits = receiver.received.filter((r) => r.url === '/replay-big');
      return hits.length >= 2 && hits;
    });
    assert.deepEqual(got.map((r) => r.headers['webhook-id']).sort(), published.slice(1).map((p) => p.messageId).sort());
    assert.equal(receiver.received.filter((r) => r.url === '/replay-every').length, 0, 'dry runs enqueue nothing');
  });
});
