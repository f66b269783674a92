import { createToken } from './jwt.js';
import { NetworkError, errorFromResponse } from './errors.js';
import { MessageStream } from './stream.js';

/** `target_url` → `targetUrl`. */
export function toCamel(key) {
  return key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** `targetUrl` → `target_url`. */
export function toSnake(key) {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * Renames the top-level keys of a server object to camelCase. Nested values (a message body, its
 * headers, a stored request) are user data and are left exactly as they are.
 */
export function fromServer(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return obj;
  const out = {};
  for (const [key, value] of Object.entries(obj)) out[toCamel(key)] = value;
  return out;
}

/** Renames top-level camelCase keys to snake_case and drops `undefined` values (`null` is kept). */
export function toServer(obj) {
  const out = {};
  for (const [key, value] of Object.entries(obj ?? {})) {
    if (value !== undefined) out[toSnake(key)] = value;
  }
  return out;
}

function items(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

function pathId(id) {
  if (id === undefined || id === null || id === '') throw new TypeError('an id is required');
  return encodeURIComponent(String(id));
}

/** A bound of the message log: a `Date` becomes RFC 3339; a string is sent as is. */
function timeParam(name, value) {
  if (value === undefined || value === null) return undefined;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new TypeError(`${name} is an invalid Date`);
    return value.toISOString();
  }
  if (typeof value === 'string' && value.trim() !== '') return value.trim();
  throw new TypeError(`${name} must be an RFC 3339 string or a Date`);
}

/** Most messages in one page of `GET /messages` (and in one batch publish). */
const MAX_MESSAGES = 1000;

function checkLimit(limit) {
  if (limit === undefined || limit === null) return;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_MESSAGES) {
    throw new RangeError(`limit must be an integer from 1 to ${MAX_MESSAGES}`);
  }
}

/** Most bytes (UTF-8) of an ordering key. */
const MAX_ORDERING_KEY_BYTES = 255;
/** Control characters (Unicode category Cc: C0, DEL and C1), which an ordering key cannot hold. */
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
/** A UTF-16 surrogate without its other half: not text that UTF-8 can carry. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Throws a `TypeError` unless `key` is an ordering key the hub takes: a string of 1 to 255 bytes
 * in UTF-8 without control characters.
 */
function checkOrderingKey(key, name = 'orderingKey') {
  if (typeof key !== 'string') throw new TypeError(`${name} must be a string, not ${key === null ? 'null' : typeof key}`);
  if (LONE_SURROGATE.test(key)) throw new TypeError(`${name} must be valid Unicode text (it holds a lone surrogate)`);
  const bytes = new TextEncoder().encode(key).length;
  if (bytes < 1 || bytes > MAX_ORDERING_KEY_BYTES) {
    throw new TypeError(`${name} must be 1 to ${MAX_ORDERING_KEY_BYTES} bytes in UTF-8, not ${bytes}`);
  }
  if (CONTROL_CHARACTER.test(key)) throw new TypeError(`${name} must not contain control characters`);
  return key;
}

/** A publish body in the hub's native form (snake_case keys). */
function publishBody(topic, { body, headers, queryParams, pathParams, httpMethod, orderingKey } = {}) {
  if (typeof topic !== 'string' || topic === '') throw new TypeError('topic must be a non-empty string');
  if (given(orderingKey)) checkOrderingKey(orderingKey);
  return toServer({ topic, body, headers, queryParams, pathParams, httpMethod, orderingKey: orderingKey ?? undefined });
}

/** A logged message: top-level keys and each delivery state in camelCase; the body, headers and params as published. */
function messageFromServer(data) {
  const message = fromServer(data);
  if (Array.isArray(message.deliveries)) message.deliveries = message.deliveries.map(fromServer);
  return message;
}

/** What every API key the hub issues starts with. */
const API_KEY_PREFIX = 'sk_';

const given = (value) => value !== undefined && value !== null;

/** The API key to send: an `sk_…` key the hub issued, without surrounding whitespace. */
function checkApiKey(apiKey) {
  if (typeof apiKey !== 'string') throw new TypeError(`apiKey must be a string (sk_…), not ${typeof apiKey}`);
  const key = apiKey.trim();
  if (key === '') throw new TypeError('apiKey must not be empty');
  if (!key.startsWith(API_KEY_PREFIX) || /\s/.test(key)) {
    throw new TypeError(
      `apiKey must be a key the hub issued (${API_KEY_PREFIX}…, from POST /keys or keys.create()); ` +
        'pass a JWT as token, the hub\'s secret as jwtSecret',
    );
  }
  return key;
}

/**
 * Client of a Switch hub.
 */
export class Switch {
  /**
   * Give at most one credential: `apiKey`, or `jwtSecret` and/or `token` (as before, `jwtSecret`
   * wins over `token`). `apiKey` next to `jwtSecret` or `token`, or next to `author`, `scope` or
   * `topics` (claims of signed tokens), throws a `TypeError`.
   * @param {object} options
   * @param {string} options.baseUrl e.g. `http://localhost:8080`
   * @param {string} [options.apiKey] an API key the hub issued (`sk_…`), sent as is; its scope,
   *   topics and author (its name) were fixed when it was created
   * @param {string} [options.jwtSecret] the hub's `SWITCH_JWT_SECRET`: the client signs a fresh
   *   HS256 token for each request (valid 60 s)
   * @param {string} [options.token] a ready-made token, used as is when no `jwtSecret` is given
   * @param {string} [options.author] the `author` claim of signed tokens
   * @param {string | string[]} [options.scope] the `scope` claim of signed tokens, e.g. `"publish admin"`
   * @param {string[]} [options.topics] the `topics` claim of signed tokens
   * @param {number} [options.timeoutMs] whole-request timeout, default 10000
   */
  constructor({ baseUrl, apiKey, jwtSecret, token, author, scope, topics, timeoutMs = 10_000 } = {}) {
    if (typeof baseUrl !== 'string' || baseUrl === '') throw new TypeError('baseUrl is required');
    if (given(apiKey)) {
      const others = Object.entries({ jwtSecret, token }).filter(([, v]) => given(v)).map(([k]) => k);
      if (others.length > 0) {
        throw new TypeError(`give either apiKey or ${others.join(' or ')}, not both: an API key is the whole credential`);
      }
      const claims = Object.entries({ author, scope, topics }).filter(([, v]) => given(v)).map(([k]) => k);
      if (claims.length > 0) {
        throw new TypeError(
          `${claims.join(', ')}: claims of a signed token, not options of an API key ` +
            '(its author is its name; its scope and topics were fixed when it was created)',
        );
      }
      apiKey = checkApiKey(apiKey);
    }
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.timeoutMs = timeoutMs;
    this.author = author;
    this.scope = scope;
    this.topics = topics;
    /** @private */
    this._apiKey = given(apiKey) ? apiKey : undefined;
    /** @private */
    this._jwtSecret = jwtSecret;
    /** @private */
    this._token = token;

    this.subscribers = new Subscribers(this);
    this.keys = new Keys(this);
    this.deliveries = new Deliveries(this);
    this.deadLetters = new DeadLetters(this);
    this.messages = new Messages(this);
  }

  /**
   * The bearer credential sent with the next request: the API key or token given, or a freshly
   * signed token; null when the client has none.
   */
  token() {
    if (this._apiKey !== undefined) return this._apiKey;
    if (this._jwtSecret !== undefined && this._jwtSecret !== null) {
      return createToken(this._jwtSecret, { author: this.author, scope: this.scope, topics: this.topics });
    }
    return this._token ?? null;
  }

  /**
   * Sends one request and decodes the answer.
   * @private
   */
  async _request(method, path, { query, json, headers = {}, auth = true, accept = [] } = {}) {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null) params.append(key, String(value));
      }
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    const requestHeaders = { accept: 'application/json', ...headers };
    let body;
    if (json !== undefined) {
      requestHeaders['content-type'] = 'application/json';
      body = JSON.stringify(json);
    }
    if (auth) {
      const token = this.token();
      if (token) requestHeaders.authorization = `Bearer ${token}`;
    }

    let response;
    let text;
    try {
      response = await fetch(url, {
        method,
        headers: requestHeaders,
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await response.text();
    } catch (err) {
      if (err && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
        throw new NetworkError(`${method} ${url}: no answer within ${this.timeoutMs} ms`, {
          code: 'timeout',
          cause: err,
        });
      }
      const reason = err?.cause?.code || err?.cause?.message || err?.message || String(err);
      throw new NetworkError(`${method} ${url}: ${reason}`, { cause: err });
    }

    let data = text;
    if (text !== '') {
      try {
        data = JSON.parse(text);
      } catch {
        // Not JSON (e.g. `pong`): keep the text.
      }
    } else {
      data = undefined;
    }

    if (!response.ok && !accept.includes(response.status)) {
      throw errorFromResponse(response.status, data, response.headers);
    }
    return { status: response.status, data, headers: response.headers };
  }

  /**
   * Publishes a message to a topic. With `orderingKey` (1 to 255 bytes in UTF-8, no control
   * characters; any other key throws a `TypeError` before anything is sent), each subscriber gets
   * the messages of that key one at a time, in publish order. `spooled: true` in the answer means
   * Redis was unreachable and the hub kept the message in its database, to be queued once Redis is
   * back: it is accepted all the same. With `dryRun: true` nothing is published: it resolves to the
   * answer of `explain`.
   * @param {string} topic
   * @param {{ body?: unknown, headers?: Record<string, string>, queryParams?: Record<string, string>,
   *   pathParams?: Record<string, string>, httpMethod?: string, idempotencyKey?: string,
   *   orderingKey?: string, dryRun?: boolean }} [options]
   * @returns {Promise<{ messageId: string, matched: number | null, duplicate: boolean, spooled: boolean }>}
   */
  async publish(topic, { body, headers, queryParams, pathParams, httpMethod, idempotencyKey, orderingKey, dryRun } = {}) {
    if (dryRun) return this.explain(topic, { body, headers, queryParams, pathParams, httpMethod, orderingKey });
    const payload = publishBody(topic, { body, headers, queryParams, pathParams, httpMethod, orderingKey });
    const extra = {};
    if (idempotencyKey !== undefined && idempotencyKey !== null) extra['idempotency-key'] = String(idempotencyKey);
    const { data } = await this._request('POST', '/publish', { json: payload, headers: extra });
    return {
      messageId: data?.message_id,
      matched: typeof data?.matched === 'number' ? data.matched : null,
      duplicate: data?.duplicate === true,
      spooled: data?.spooled === true,
    };
  }

  /**
   * `POST /publish?dry_run=true`: which subscribers the message would reach, and why each whose
   * pattern matches the topic would or would not. Nothing is enqueued or logged (scope `publish`).
   * @param {string} topic
   * @param {{ body?: unknown, headers?: Record<string, string>, queryParams?: Record<string, string>,
   *   pathParams?: Record<string, string>, httpMethod?: string, orderingKey?: string }} [options]
   * @returns {Promise<{ matched: Array<number | string>, subscribers: Array<{ id: number | string,
   *   matched: boolean, reason: string, missing: string[] }> }>}
   */
  async explain(topic, { body, headers, queryParams, pathParams, httpMethod, orderingKey } = {}) {
    const payload = publishBody(topic, { body, headers, queryParams, pathParams, httpMethod, orderingKey });
    const { data } = await this._request('POST', '/publish', { query: { dry_run: 'true' }, json: payload });
    return {
      matched: Array.isArray(data?.matched) ? data.matched : [],
      subscribers: items(data?.subscribers).map((entry) => {
        const out = fromServer(entry);
        out.missing = Array.isArray(out.missing) ? out.missing : [];
        return out;
      }),
    };
  }

  /**
   * `POST /publish/batch`: publishes 1 to 1000 messages at once, all or none. Each message is a
   * publish body (`topic`, and optionally `body`, `headers`, `queryParams`, `pathParams`,
   * `httpMethod`, `orderingKey`; camelCase or snake_case keys); an ordering key is checked as
   * `publish` checks it, before anything is sent. When the hub refuses one, the error's `index`
   * names the first bad message (from 0) and nothing is published. When Redis was unreachable the
   * hub spools the whole batch: every result then has `spooled: true`.
   * @param {Array<object>} messages
   * @returns {Promise<Array<{ messageId: string, matched: number, spooled: boolean }>>} one result
   *   per message, in order
   */
  async publishBatch(messages) {
    if (!Array.isArray(messages)) throw new TypeError('messages must be an array of publish bodies');
    const payload = messages.map((message, i) => {
      if (message === null || typeof message !== 'object' || Array.isArray(message)) {
        throw new TypeError(`messages[${i}] must be an object such as { topic: 'orders.created', body: {…} }`);
      }
      const item = toServer(message);
      if (given(item.ordering_key)) checkOrderingKey(item.ordering_key, `messages[${i}].orderingKey`);
      return item;
    });
    const { data } = await this._request('POST', '/publish/batch', { json: { messages: payload } });
    // A batch is spooled as a whole: the flag sits beside the items.
    const spooled = data?.spooled === true;
    return items(data).map((item) => ({
      messageId: item?.message_id,
      matched: typeof item?.matched === 'number' ? item.matched : 0,
      spooled: spooled || item?.spooled === true,
    }));
  }

  /**
   * Evaluates a filter expression against a message without publishing it (scope `admin`).
   * @param {string} filterExpression
   * @param {{ topic?: string, body?: unknown, headers?: object, queryParams?: object,
   *   pathParams?: object, httpMethod?: string }} message a publish body; camelCase or snake_case keys
   * @returns {Promise<boolean>}
   */
  async testFilter(filterExpression, message = {}) {
    const { data } = await this._request('POST', '/filters/test', {
      json: { filter_expression: filterExpression, message: toServer(message) },
    });
    return data?.matches === true;
  }

  /** Makes the hub reload its subscriber cache at once. */
  async refresh() {
    const { data } = await this._request('POST', '/refresh');
    return data === undefined ? null : fromServer(data);
  }

  /**
   * The hub's health. Does not throw on `503`: the answer names what is down.
   * @returns {Promise<{ ok: boolean, status?: string, database?: string, redis?: string }>}
   */
  async health() {
    const { status, data } = await this._request('GET', '/health', { auth: false, accept: [503] });
    const fields = data && typeof data === 'object' ? data : { status: data };
    return { ...fields, ok: status === 200 };
  }

  /**
   * `GET /stream`: messages as they are published, as an async iterator (not awaited; `for await`)
   * of messages shaped like `messages.list`'s. `topic` is a pattern (`orders.*`, `orders.#`, `#`);
   * `filter` a filter expression in the subscribers' syntax (`body.total > 100`). With `since` (a
   * message id, such as a former stream's `lastId`) the hub first sends every logged message after
   * that one, then the live ones. Needs scope `admin`, or a token whose `topics` claim covers the
   * whole pattern.
   *
   * The connection opens on `await stream.connect()` or at the first `next()`; every message
   * published from then on is delivered. When it drops (or the hub drops a client that fell
   * behind), the stream reconnects by itself after a short wait (250 ms, doubling up to 10 s while
   * attempts fail) with `Last-Event-ID` set to the last message handed out: no message is lost or
   * repeated. Opening rejects with the SDK's errors (`UnauthorizedError`, `ForbiddenError`,
   * `InvalidRequestError`, `NotFoundError` for an unknown `since`, `NetworkError`); when
   * reconnecting, network errors and 5xx answers are retried and the others thrown. `break`,
   * `stream.close()` or aborting `signal` closes the connection and ends the iteration.
   * @param {string} [topic] default `#`
   * @param {{ filter?: string, since?: string | null, signal?: AbortSignal }} [options]
   * @returns {MessageStream}
   */
  stream(topic = '#', { filter, since, signal } = {}) {
    return new MessageStream(this, messageFromServer, topic, { filter, since, signal });
  }

  /** `GET /ping`: resolves to the hub's answer, `pong`. */
  async ping() {
    const { data } = await this._request('GET', '/ping', { auth: false });
    return typeof data === 'string' ? data : JSON.stringify(data);
  }
}

class Subscribers {
  constructor(client) {
    this._client = client;
  }

  /** `GET /subscribers[?topic=]`: every subscriber, or those whose pattern is exactly `topic`. */
  async list({ topic } = {}) {
    const { data } = await this._client._request('GET', '/subscribers', { query: { topic } });
    return items(data).map(fromServer);
  }

  /** `POST /subscribers`: answers the new subscriber, secret included. */
  async create({ topic, targetUrl, filterExpression, description, enabled, secret } = {}) {
    const { data } = await this._client._request('POST', '/subscribers', {
      json: toServer({ topic, targetUrl, filterExpression, description, enabled, secret }),
    });
    return fromServer(data);
  }

  async get(id) {
    const { data } = await this._client._request('GET', `/subscribers/${pathId(id)}`);
    return fromServer(data);
  }

  /** `PATCH /subscribers/{id}`: only the given fields change; `null` clears a nullable one. */
  async update(id, changes = {}) {
    const { data } = await this._client._request('PATCH', `/subscribers/${pathId(id)}`, {
      json: toServer(changes),
    });
    return fromServer(data);
  }

  async delete(id) {
    await this._client._request('DELETE', `/subscribers/${pathId(id)}`);
  }

  /** `POST /subscribers/{id}/rotate-secret`: answers the subscriber with its new secret. */
  async rotateSecret(id) {
    const { data } = await this._client._request('POST', `/subscribers/${pathId(id)}/rotate-secret`);
    return fromServer(data);
  }
}

/**
 * The admin API for API keys (`client.keys`, scope `admin`). An API key is the credential to hand
 * to a publisher: scoped like a token, limited to topic patterns, revocable one by one, optionally
 * expiring. The publisher uses it as `new Switch({ baseUrl, apiKey })`.
 */
class Keys {
  constructor(client) {
    this._client = client;
  }

  /**
   * `POST /keys`: resolves to `{ id, name, scope, topics, expiresAt, createdAt, key }`. `key`
   * (`sk_…`) is shown this once: the hub keeps only a hash. `name` becomes the author of the key's
   * messages; `scope` is `publish` (the default), `admin` or `publish admin` (or an array);
   * `topics` the patterns it may publish to (any topic when not given); `expiresAt` an RFC 3339
   * string or a Date.
   */
  async create({ name, scope = 'publish', topics, expiresAt } = {}) {
    if (typeof name !== 'string' || name.trim() === '') {
      throw new TypeError('name must be a non-empty string (the author of the key\'s messages)');
    }
    const words = (Array.isArray(scope) ? scope.join(' ') : String(scope ?? '')).split(/\s+/).filter(Boolean);
    if (words.length === 0) throw new TypeError("scope must be 'publish', 'admin' or 'publish admin'");
    if (given(topics) && !Array.isArray(topics)) {
      throw new TypeError("topics must be an array of topic patterns, e.g. ['orders.#']");
    }
    const { data } = await this._client._request('POST', '/keys', {
      json: toServer({
        name,
        scope: words.join(' '),
        topics: given(topics) ? topics.map(String) : undefined,
        expiresAt: timeParam('expiresAt', expiresAt),
      }),
    });
    return fromServer(data);
  }

  /** `GET /keys`: every key, without the keys themselves. */
  async list() {
    const { data } = await this._client._request('GET', '/keys');
    return items(data).map(fromServer);
  }

  /**
   * `DELETE /keys/{id}`: revokes a key (its id, or the key object); every server of the hub
   * refuses it within a second. `NotFoundError` when there is no such key.
   */
  async revoke(id) {
    if (id !== null && typeof id === 'object') id = id.id;
    await this._client._request('DELETE', `/keys/${pathId(id)}`);
  }
}

class Deliveries {
  constructor(client) {
    this._client = client;
  }

  /** One page of delivery attempts, ascending by id: `{ items, nextSince }`. */
  async list({ subscriberId, messageId, outcome, since, limit } = {}) {
    const { data } = await this._client._request('GET', '/deliveries', {
      query: toServer({ subscriberId, messageId, outcome, since, limit }),
    });
    return {
      items: items(data).map(fromServer),
      nextSince: data && typeof data === 'object' && data.next_since !== undefined ? data.next_since : null,
    };
  }

  /**
   * Every delivery attempt after `since` (or from the first), page by page: each page asks for the
   * attempts after the last id seen, until a page comes back empty.
   */
  iterate({ subscriberId, messageId, outcome, since, limit } = {}) {
    return paginate((cursor) => this.list({ subscriberId, messageId, outcome, since: cursor, limit }).then((p) => p.items), since);
  }
}

/** Yields the items of `fetchPage(cursor)` page after page, the cursor being the last id seen. */
async function* paginate(fetchPage, since) {
  let cursor = since;
  for (;;) {
    const page = await fetchPage(cursor);
    if (page.length === 0) return;
    for (const item of page) yield item;
    const last = page[page.length - 1].id;
    if (last === undefined || last === null || last === cursor) return;
    cursor = last;
  }
}

class DeadLetters {
  constructor(client) {
    this._client = client;
  }

  /** `GET /dead-letters[?subscriber_id=]`: one page (the hub's default size, or `limit`), ascending by id. */
  async list({ subscriberId, since, limit } = {}) {
    const { data } = await this._client._request('GET', '/dead-letters', {
      query: toServer({ subscriberId, since, limit }),
    });
    return items(data).map(fromServer);
  }

  /** Every dead letter after `since` (or from the first), page by page like `deliveries.iterate`. */
  iterate({ subscriberId, since, limit } = {}) {
    return paginate((cursor) => this.list({ subscriberId, since: cursor, limit }), since);
  }

  /** `POST /dead-letters/{id}/replay`: re-enqueues one dead letter. */
  async replay(id) {
    const { data } = await this._client._request('POST', `/dead-letters/${pathId(id)}/replay`);
    return data === undefined ? null : fromServer(data);
  }

  /**
   * `POST /dead-letters/replay[?subscriber_id=]`: re-enqueues every dead letter of a
   * subscriber, or of every enabled subscriber when none is given.
   */
  async replayAll(subscriberId) {
    if (subscriberId !== undefined && subscriberId !== null) pathId(subscriberId);
    else subscriberId = undefined;
    const { data } = await this._client._request('POST', '/dead-letters/replay', {
      query: toServer({ subscriberId }),
    });
    return data === undefined ? null : fromServer(data);
  }
}

/**
 * The async iterator of `messages.list`: every logged message after `since`, oldest first, page
 * after page, until a page comes back empty. `nextSince` is the cursor to poll from later.
 */
export class MessageIterator {
  constructor(fetchPage, since) {
    /** @private */
    this._fetch = fetchPage;
    /** @private */
    this._since = since === undefined || since === null ? null : String(since);
    /** @private */
    this._pending = null;
    /** @private */
    this._buffer = [];
    /** @private */
    this._done = false;
    /** @private */
    this._queue = Promise.resolve();
  }

  /**
   * Where a later poll should start (`null` while the log has nothing to show and no `since` was
   * given). It moves past a page once every message of the page has been yielded, so stopping in
   * the middle of a page and resuming repeats the rest of that page rather than skipping it.
   */
  get nextSince() {
    return this._since;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    // One call at a time, like an async generator.
    const result = this._queue.then(() => this._next());
    this._queue = result.catch(() => {});
    return result;
  }

  async return(value) {
    this._done = true;
    this._buffer = [];
    return { done: true, value };
  }

  /** @private */
  async _next() {
    while (this._buffer.length === 0) {
      if (this._done) return { done: true, value: undefined };
      const page = await this._fetch(this._since);
      const cursor = page.nextSince ?? this._since;
      const moved = cursor !== this._since;
      if (page.items.length === 0) {
        // A topic pattern may scan past messages it does not match: an empty page whose cursor
        // moved is not the end yet.
        this._since = cursor;
        if (!moved) this._done = true;
        continue;
      }
      // A cursor that does not move would read the same page forever.
      if (!moved) this._done = true;
      this._pending = cursor;
      this._buffer = page.items.slice();
    }
    const value = this._buffer.shift();
    if (this._buffer.length === 0) this._since = this._pending;
    return { done: false, value };
  }
}

class Messages {
  constructor(client) {
    this._client = client;
  }

  /**
   * `GET /messages`: one page of logged messages, oldest first, after the cursor `since` (all
   * when none), at most `limit` (1 to 1000, default 100): `{ items, nextSince }`. `topic` is a
   * pattern; `after` and `before` are exclusive bounds on `createdAt` (RFC 3339 strings or
   * Dates). Pass `nextSince` as the next `since` to get only newer messages; an empty page means
   * caught up.
   */
  async page({ topic, author, after, before, since, limit } = {}) {
    checkLimit(limit);
    const { data } = await this._client._request('GET', '/messages', {
      query: {
        topic,
        author,
        after: timeParam('after', after),
        before: timeParam('before', before),
        since,
        limit,
      },
    });
    const next = data && typeof data === 'object' ? data.next_since : null;
    return {
      items: items(data).map(messageFromServer),
      nextSince: next === undefined || next === null ? null : String(next),
    };
  }

  /**
   * Every logged message after `since`, oldest first, following the cursor page by page
   * (`limit` per request) until a page comes back empty: an async iterator (`for await`) whose
   * `nextSince` is the cursor to poll from later.
   * @returns {MessageIterator}
   */
  list({ topic, author, after, before, since, limit } = {}) {
    checkLimit(limit);
    timeParam('after', after);
    timeParam('before', before);
    return new MessageIterator((cursor) => this.page({ topic, author, after, before, since: cursor, limit }), since);
  }

  /**
   * `GET /messages/{id}`: the message and, per subscriber it matched, `deliveries`:
   * `{ subscriberId, state, attempts, lastHttpStatus }` (`NotFoundError` for an unknown id).
   */
  async get(id) {
    const { data } = await this._client._request('GET', `/messages/${pathId(id)}`);
    return messageFromServer(data);
  }

  /**
   * `POST /messages/replay`: matches every logged message in the range again against today's
   * enabled subscribers (or only `subscriberId`: a backfill) and enqueues new jobs with the
   * original message ids. With `dryRun: true` nothing is enqueued; the counts are the same.
   * @returns {Promise<{ messages: number, jobs: number, dryRun: boolean }>}
   */
  async replay({ topic, after, before, subscriberId, dryRun = false } = {}) {
    // The hub takes the subscriber id as a JSON integer.
    if (typeof subscriberId === 'string' && /^\d+$/.test(subscriberId.trim())) subscriberId = Number(subscriberId);
    const { data } = await this._client._request('POST', '/messages/replay', {
      json: toServer({
        topic,
        after: timeParam('after', after),
        before: timeParam('before', before),
        subscriberId: subscriberId ?? undefined,
        dryRun: Boolean(dryRun),
      }),
    });
    return fromServer(data);
  }
}
