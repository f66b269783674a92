/**
 * Errors raised by the client. Every error the hub answers with (`{"error": {"code", "message"}}`)
 * becomes a `SwitchError`, or one of its subclasses when the HTTP status is one of the known ones.
 */

export class SwitchError extends Error {
  /**
   * @param {string} message
   * @param {{ status?: number | null, code?: string, body?: unknown, cause?: unknown, index?: number | null }} [options]
   */
  constructor(message, { status = null, code = 'error', body = undefined, cause = undefined, index = null } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    /** HTTP status of the answer, or null when there was no answer. */
    this.status = status;
    /** The hub's stable error code (`unauthorized`, `forbidden`, …). */
    this.code = code;
    /** The decoded answer body, when there was one. */
    this.body = body;
    /** For a batch publish, the position (from 0) of the first message the hub refused; else null. */
    this.index = index;
  }
}

/** The hub could not be reached, or did not answer within `timeoutMs` (`code` is `timeout` then). */
export class NetworkError extends SwitchError {
  constructor(message, { code = 'network', cause } = {}) {
    super(message, { status: null, code, cause });
  }
}

/** 400: bad JSON, bad topic, bad filter expression, … */
export class InvalidRequestError extends SwitchError {
  constructor(message, options = {}) {
    super(message, options);
    /** Where a filter expression failed to compile (a byte offset), when the hub says. */
    this.position = options.position ?? null;
  }
}

/** 401: missing, malformed, expired or wrongly signed token; an unknown, revoked or expired API key. */
export class UnauthorizedError extends SwitchError {}

/** 403: the token lacks the scope (e.g. `admin`) or the topic is not among its `topics`. */
export class ForbiddenError extends SwitchError {}

/** 404: no such subscriber, dead letter, … */
export class NotFoundError extends SwitchError {}

/** 409: the change conflicts with existing state. */
export class ConflictError extends SwitchError {}

/** 413: the publish request is larger than the hub's `SWITCH_MAX_BODY_BYTES`. */
export class PayloadTooLargeError extends SwitchError {}

/** 503: Redis or the database cannot be reached; nothing was published. Retry after `retryAfter` seconds. */
export class UnavailableError extends SwitchError {
  constructor(message, options = {}) {
    super(message, options);
    /** Seconds to wait before retrying (from the `Retry-After` header), or null. */
    this.retryAfter = options.retryAfter ?? null;
  }
}

/** A webhook failed verification (bad or missing signature, stale timestamp, bad secret, …). */
export class WebhookVerificationError extends Error {
  constructor(message) {
    super(message);
    this.name = 'WebhookVerificationError';
  }
}

const BY_STATUS = new Map([
  [400, InvalidRequestError],
  [401, UnauthorizedError],
  [403, ForbiddenError],
  [404, NotFoundError],
  [409, ConflictError],
  [413, PayloadTooLargeError],
  [503, UnavailableError],
]);

const DEFAULT_CODES = new Map([
  [400, 'invalid_request'],
  [401, 'unauthorized'],
  [403, 'forbidden'],
  [404, 'not_found'],
  [409, 'conflict'],
  [413, 'payload_too_large'],
  [503, 'unavailable'],
]);

/**
 * Parses a `Retry-After` value (delta seconds or an HTTP date) into seconds.
 * @param {string | null} value
 * @returns {number | null}
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === '') return null;
  const trimmed = String(value).trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(0, Math.ceil((date - now) / 1000));
}

/**
 * Builds the error for a non-2xx answer.
 * @param {number} status
 * @param {unknown} body decoded JSON body, or the raw text when it was not JSON
 * @param {Headers} headers
 */
export function errorFromResponse(status, body, headers) {
  const detail = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : null;
  const code = (detail && typeof detail.code === 'string' && detail.code) || DEFAULT_CODES.get(status) || (status >= 500 ? 'internal' : 'error');
  let message = detail && typeof detail.message === 'string' ? detail.message : null;
  if (!message) {
    message = typeof body === 'string' && body.trim() !== '' ? body.trim().slice(0, 500) : `HTTP ${status}`;
  }
  const Cls = BY_STATUS.get(status) ?? SwitchError;
  const options = { status, code, body };
  if (detail && Number.isInteger(detail.index)) options.index = detail.index;
  if (Cls === InvalidRequestError && detail && typeof detail.position === 'number') options.position = detail.position;
  if (Cls === UnavailableError) options.retryAfter = parseRetryAfter(headers?.get?.('retry-after') ?? null);
  return new Cls(message, options);
}
