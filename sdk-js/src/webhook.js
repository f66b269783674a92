import { createHmac, timingSafeEqual } from 'node:crypto';
import { WebhookVerificationError } from './errors.js';

const SECRET_PREFIX = 'whsec_';

/**
 * Decodes a `whsec_<base64>` secret (the prefix is optional) into the HMAC key.
 * @param {string} secret
 * @returns {Buffer}
 */
function decodeSecret(secret) {
  if (typeof secret !== 'string' || secret === '') {
    throw new WebhookVerificationError('the webhook secret must be a non-empty string');
  }
  const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) {
    throw new WebhookVerificationError('the webhook secret is not valid base64');
  }
  const key = Buffer.from(encoded, 'base64');
  if (key.length === 0) throw new WebhookVerificationError('the webhook secret is empty');
  return key;
}

function bodyBytes(body) {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError('the webhook body must be the raw request body: a string, Buffer or Uint8Array');
}

function headerGetter(headers) {
  if (headers == null) return () => undefined;
  if (typeof headers.get === 'function' && typeof headers.has === 'function') {
    // A WHATWG Headers instance (or a Map-like with case-insensitive get).
    return (name) => headers.get(name) ?? undefined;
  }
  const lowered = new Map();
  for (const [key, value] of Object.entries(headers)) {
    lowered.set(key.toLowerCase(), Array.isArray(value) ? value.join(', ') : value);
  }
  return (name) => {
    const value = lowered.get(name);
    return value == null ? undefined : String(value);
  };
}

function sign(key, id, timestamp, body) {
  return createHmac('sha256', key)
    .update(`${id}.${timestamp}.`, 'utf8')
    .update(body)
    .digest();
}

/**
 * Computes the `webhook-signature` header value (`v1,<base64>`) the hub sends for a delivery.
 * Useful for testing a receiver.
 * @param {string} secret `whsec_<base64>`
 * @param {string} id the `webhook-id` (message id)
 * @param {number | string} timestamp Unix seconds
 * @param {string | Uint8Array} body the raw body
 * @returns {string}
 */
export function signWebhook(secret, id, timestamp, body) {
  return `v1,${sign(decodeSecret(secret), id, timestamp, bodyBytes(body)).toString('base64')}`;
}

/**
 * Verifies a delivery from the hub with the Standard Webhooks scheme and returns its parsed JSON body.
 *
 * @param {string} secret the subscriber's secret, `whsec_<base64>`
 * @param {Record<string, string | string[] | undefined> | Headers} headers the request headers
 *   (a plain object with names in any case, e.g. `req.headers`, or a `Headers` instance)
 * @param {string | Uint8Array} body the raw request body, exactly as received
 * @param {{ tolerance?: number, now?: number | Date }} [options] `tolerance`: largest allowed
 *   distance in seconds between `webhook-timestamp` and now (default 300); `now`: the current time
 *   (Unix seconds or a Date; default: the clock)
 * @returns {unknown} the JSON payload
 * @throws {WebhookVerificationError}
 */
export function verifyWebhook(secret, headers, body, { tolerance = 300, now } = {}) {
  const get = headerGetter(headers);
  const id = get('webhook-id');
  const timestamp = get('webhook-timestamp');
  const signatureHeader = get('webhook-signature');
  if (!id || !timestamp || !signatureHeader) {
    throw new WebhookVerificationError('missing webhook-id, webhook-timestamp or webhook-signature header');
  }
  if (!/^\d+$/.test(timestamp.trim())) {
    throw new WebhookVerificationError('invalid webhook-timestamp header');
  }
  const sentAt = Number(timestamp.trim());
  const nowSeconds =
    now instanceof Date ? Math.floor(now.getTime() / 1000) : now ?? Math.floor(Date.now() / 1000);
  if (sentAt < nowSeconds - tolerance) throw new WebhookVerificationError('webhook timestamp too old');
  if (sentAt > nowSeconds + tolerance) throw new WebhookVerificationError('webhook timestamp too new');

  const key = decodeSecret(secret);
  const raw = bodyBytes(body);
  const expected = sign(key, id, timestamp.trim(), raw);

  let matched = false;
  for (const entry of signatureHeader.split(' ')) {
    const comma = entry.indexOf(',');
    if (comma < 0) continue;
    const version = entry.slice(0, comma);
    if (version !== 'v1') continue;
    const candidate = Buffer.from(entry.slice(comma + 1), 'base64');
    if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) {
      matched = true;
      break;
    }
  }
  if (!matched) throw new WebhookVerificationError('no matching webhook signature');

  const text = raw.toString('utf8');
  if (text.trim() === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new WebhookVerificationError('the webhook body is not valid JSON');
  }
}
