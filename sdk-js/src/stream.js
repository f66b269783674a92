// The live stream (`GET /stream`): a Server-Sent Events decoder and an async iterator over
// `fetch` that reconnects with `Last-Event-ID`. Only web APIs (fetch, ReadableStream,
// TextDecoder, AbortController, setTimeout): it runs in Node.js 18+ and in browsers.

import { NetworkError, SwitchError, UnavailableError, errorFromResponse } from './errors.js';

/** The first wait before reconnecting, in ms (a `retry:` field of the hub replaces it). */
export const RECONNECT_DELAY_MS = 250;
/** The longest wait between two attempts to reconnect, in ms. */
export const MAX_RECONNECT_DELAY_MS = 10_000;
/** A resume the hub answers 404 (its message not logged yet) is retried this many times. */
const MAX_RESUME_NOT_FOUND = 10;

const EOL = /\r\n|\r|\n/g;

/**
 * Turns the bytes of one `text/event-stream` response into events, as the HTML standard's
 * event-stream interpretation does: lines end with CRLF, LF or CR (also across chunks); `:` starts
 * a comment; `data` lines accumulate; a blank line dispatches; an event without data is dropped; a
 * field without a colon has an empty value; one space after the colon is not part of the value. An
 * event cut off by the end of the stream is never dispatched.
 */
export class SSEDecoder {
  constructor() {
    /** @private */
    this._text = new TextDecoder('utf-8');
    /** @private */
    this._buffer = '';
    /** @private */
    this._started = false;
    /** @private */
    this._data = [];
    /** @private */
    this._event = '';
    /** @private */
    this._lastId = null;
    /** The reconnection time the stream asked for last (`retry:`, in ms), or null. */
    this.retry = null;
  }

  /**
   * The events completed by `chunk` (bytes, or text).
   * @param {Uint8Array | string} chunk
   * @returns {Array<{ event: string, data: string, id: string | null }>}
   */
  feed(chunk) {
    // TextDecoder drops a leading byte order mark by itself.
    let text = typeof chunk === 'string' ? chunk : this._text.decode(chunk, { stream: true });
    if (!this._started && text !== '') {
      this._started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    const buffer = this._buffer + text;
    const events = [];
    let start = 0;
    EOL.lastIndex = 0;
    for (;;) {
      const end = EOL.exec(buffer);
      if (end === null) break;
      // A CR ending the chunk may be the first half of a CRLF.
      if (end[0] === '\r' && EOL.lastIndex === buffer.length) break;
      this._line(buffer.slice(start, end.index), events);
      start = EOL.lastIndex;
    }
    this._buffer = buffer.slice(start);
    return events;
  }

  /** @private */
  _line(line, events) {
    if (line === '') {
      this._dispatch(events);
      return;
    }
    if (line[0] === ':') return;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (name === 'data') this._data.push(value);
    else if (name === 'event') this._event = value;
    else if (name === 'id') {
      if (!value.includes('\0')) this._lastId = value;
    } else if (name === 'retry') {
      if (/^[0-9]+$/.test(value)) this.retry = Number(value);
    }
  }

  /** @private */
  _dispatch(events) {
    const data = this._data;
    const event = this._event;
    this._data = [];
    this._event = '';
    if (data.length === 0) return;
    events.push({ event: event || 'message', data: data.join('\n'), id: this._lastId || null });
  }
}

/** The hub ended the stream on purpose (a client that fell behind): reconnect and resume. */
class Resume extends Error {}

/**
 * The async iterator of `Switch#stream`: messages as they are published. See `Switch#stream`.
 */
export class MessageStream {
  /**
   * @param {object} client a `Switch`
   * @param {(data: object) => object} parse turns the message JSON into what is handed out
   * @param {string} topic
   * @param {{ filter?: string, since?: string | null, signal?: AbortSignal }} [options]
   */
  constructor(client, parse, topic, { filter, since, signal } = {}) {
    if (typeof topic !== 'string' || topic.trim() === '') {
      throw new TypeError("topic must be a pattern such as 'orders.*' or '#'");
    }
    if (filter !== undefined && filter !== null && typeof filter !== 'string') {
      throw new TypeError('filter must be a filter expression (a string)');
    }
    if (since !== undefined && since !== null && (typeof since !== 'string' || since.trim() === '')) {
      throw new TypeError('since must be a message id');
    }
    /** @private */
    this._client = client;
    /** @private */
    this._parse = parse;
    /** @private */
    this._topic = topic;
    /** @private */
    this._filter = filter ?? null;
    /** @private */
    this._lastId = since ? since.trim() : null;
    /** @private */
    this._closed = false;
    /** @private the response opened by `connect()`, not read yet */
    this._response = null;
    /** @private the request or response being read: aborting it ends the read */
    this._attempt = null;
    /** @private ends a wait before reconnecting */
    this._wake = null;
    /** @private */
    this._gen = null;
    /** @private */
    this._baseDelay = RECONNECT_DELAY_MS;
    /** @private */
    this._delay = RECONNECT_DELAY_MS;
    /** @private */
    this._notFound = 0;
    /** @private */
    this._signal = signal ?? null;
    /** @private */
    this._onAbort = () => {
      this._stop();
    };
    if (this._signal) {
      if (this._signal.aborted) this._closed = true;
      else this._signal.addEventListener('abort', this._onAbort, { once: true });
    }
  }

  /** The id of the last message handed out (`since` before the first): a later stream's `since`. */
  get lastId() {
    return this._lastId;
  }

  /** True once the stream was closed (or aborted), or ended with an error. */
  get closed() {
    return this._closed;
  }

  /**
   * Opens the connection now (if not open yet), rejecting with its error here; every message
   * published once it resolves is delivered. Resolves to the stream.
   * @returns {Promise<MessageStream>}
   */
  async connect() {
    if (this._closed) throw new Error('the stream is closed');
    if (this._response === null && this._gen === null) {
      try {
        this._response = await this._open();
      } catch (err) {
        this._finish();
        throw err;
      }
    }
    return this;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** The next message; waits as long as it takes. */
  next() {
    if (this._gen === null) {
      if (this._closed) return Promise.resolve({ done: true, value: undefined });
      this._gen = this._run();
    }
    return this._gen.next();
  }

  /** Closes the connection (what `break` in `for await` calls); iterating then ends. */
  async return(value) {
    this._stop();
    if (this._gen !== null) await this._gen.return(undefined);
    this._finish();
    return { done: true, value };
  }

  /** Closes the connection; iterating then ends. Safe to call more than once. */
  async close() {
    await this.return(undefined);
  }

  /** @private Ends reading and waiting at once; the generator cleans up. */
  _stop() {
    this._closed = true;
    this._attempt?.abort();
    this._wake?.();
  }

  /** @private */
  _finish() {
    this._closed = true;
    this._attempt?.abort();
    this._attempt = null;
    this._response = null;
    this._signal?.removeEventListener('abort', this._onAbort);
  }

  /** @private */
  async *_run() {
    let reconnect = false;
    try {
      while (!this._closed) {
        let response = this._response;
        this._response = null;
        if (response === null) {
          response = reconnect ? await this._reopen() : await this._open();
          if (response === null || this._closed) return;
        }
        reconnect = true;
        const reader = response.body.getReader();
        const decoder = new SSEDecoder();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break; // the hub closed the stream: reconnect
            const events = decoder.feed(value);
            this._reconnectionTime(decoder.retry);
            for (const event of events) {
              const message = this._take(event);
              if (message !== undefined) yield message;
            }
          }
        } catch (err) {
          if (this._closed) return;
          // Anything else that fails a read is the connection dropping: reconnect.
          if (err instanceof SwitchError) throw err;
        } finally {
          reader.cancel().catch(() => {});
          this._attempt = null;
        }
      }
    } catch (err) {
      if (this._closed && !(err instanceof SwitchError)) return;
      throw err;
    } finally {
      this._finish();
    }
  }

  /**
   * @private The message `event` carries, if any; throws `Resume` for `slow_consumer` and a
   * `SwitchError` for any other error event.
   */
  _take(event) {
    if (event.event === 'message') {
      let message;
      try {
        const data = JSON.parse(event.data);
        if (!data || typeof data !== 'object' || typeof data.id !== 'string') throw new TypeError('no message id');
        message = this._parse(data);
      } catch (err) {
        throw new SwitchError(`the hub sent a stream event that is not a message: ${err.message}`, {
          code: 'invalid_response',
          body: event.data.slice(0, 500),
          cause: err,
        });
      }
      this._lastId = event.id || message.id;
      // A connection that carried a message is a good one: start over from the shortest wait.
      this._delay = this._baseDelay;
      this._notFound = 0;
      return message;
    }
    if (event.event === 'error') {
      let data = event.data;
      try {
        data = JSON.parse(event.data);
      } catch {
        // keep the text
      }
      const code = typeof data?.code === 'string' ? data.code : typeof data?.error?.code === 'string' ? data.error.code : null;
      if (code === 'slow_consumer') throw new Resume('slow_consumer');
      throw new SwitchError(`the hub ended the stream: ${code ?? String(event.data).slice(0, 200)}`, {
        code: code ?? 'error',
        body: data,
      });
    }
    return undefined;
  }

  /** @private Opens `GET /stream`, resuming after the last message handed out. */
  async _open() {
    const params = new URLSearchParams({ topic: this._topic });
    if (this._filter !== null) params.append('filter', this._filter);
    const url = `${this._client.baseUrl}/stream?${params}`;
    const headers = { accept: 'text/event-stream', 'cache-control': 'no-cache' };
    const token = this._client.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (this._lastId !== null) headers['last-event-id'] = this._lastId;

    const attempt = new AbortController();
    this._attempt = attempt;
    const timeoutMs = this._client.timeoutMs;
    let timedOut = false;
    // Only getting the answer's headers is bounded; reading the stream waits as long as it takes.
    const timer = setTimeout(() => {
      timedOut = true;
      attempt.abort();
    }, timeoutMs);
    let response;
    try {
      response = await fetch(url, { method: 'GET', headers, signal: attempt.signal });
    } catch (err) {
      if (this._closed) throw err;
      if (timedOut) {
        throw new NetworkError(`GET ${url}: no answer within ${timeoutMs} ms`, { code: 'timeout', cause: err });
      }
      const reason = err?.cause?.code || err?.cause?.message || err?.message || String(err);
      throw new NetworkError(`GET ${url}: ${reason}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }

    if (!response.ok) {
      let text = '';
      try {
        text = await response.text();
      } catch {
        // the answer's status tells enough
      }
      let data = text === '' ? undefined : text;
      try {
        if (data !== undefined) data = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      throw errorFromResponse(response.status, data, response.headers);
    }
    const kind = response.headers.get('content-type') ?? '';
    if (kind.split(';')[0].trim().toLowerCase() !== 'text/event-stream' || !response.body) {
      attempt.abort();
      throw new SwitchError(`the hub answered GET /stream with ${kind || 'no content type'}, not an event stream`, {
        status: response.status,
        code: 'invalid_response',
      });
    }
    return response;
  }

  /** @private The connection again, after a wait; null if closed meanwhile. */
  async _reopen() {
    let atLeast = 0;
    while (!this._closed) {
      await this._sleep(Math.max(atLeast, this._nextDelay()));
      if (this._closed) return null;
      try {
        return await this._open();
      } catch (err) {
        if (this._closed) return null;
        const retry = this._retryable(err);
        if (retry === null) throw err;
        atLeast = retry;
      }
    }
    return null;
  }

  /** @private The stream's `retry:` field (ms) replaces the first wait. */
  _reconnectionTime(retry) {
    if (retry === null) return;
    const base = Math.min(Math.max(retry, 1), MAX_RECONNECT_DELAY_MS);
    if (base !== this._baseDelay) this._baseDelay = this._delay = base;
  }

  /** @private Milliseconds before the next attempt to connect (doubling, with jitter). */
  _nextDelay() {
    const delay = this._delay;
    this._delay = Math.min(this._delay * 2, MAX_RECONNECT_DELAY_MS);
    return delay * (0.8 + Math.random() * 0.4);
  }

  /**
   * @private When reconnecting failed with `err`: null to give up and throw it, else at least how
   * many ms to wait before trying again.
   */
  _retryable(err) {
    if (err instanceof NetworkError) return 0;
    if (!(err instanceof SwitchError) || typeof err.status !== 'number') return null;
    if (err.status === 404 && this._lastId !== null) {
      // The last message may not be archived yet; the hub waits a little itself.
      this._notFound += 1;
      return this._notFound < MAX_RESUME_NOT_FOUND ? 0 : null;
    }
    if (err.status === 408 || err.status === 429 || err.status >= 500) {
      const retryAfter = err instanceof UnavailableError ? err.retryAfter : null;
      return Math.min((retryAfter ?? 0) * 1000, 60_000);
    }
    return null;
  }

  /** @private */
  _sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this._wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this._wake = done;
    });
  }
}
