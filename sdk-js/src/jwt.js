import { createHmac } from 'node:crypto';

function base64url(input) {
  return Buffer.from(input).toString('base64url');
}

/**
 * Signs an HS256 JSON Web Token.
 * @param {Record<string, unknown>} claims
 * @param {string | Uint8Array} secret
 * @returns {string}
 */
export function signJwt(claims, secret) {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = base64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

/**
 * Builds the claims of a publisher token and signs it.
 * @param {string | Uint8Array} secret
 * @param {{ author?: string, scope?: string | string[], topics?: string[], expiresIn?: number, now?: number }} [options]
 *   `expiresIn` in seconds (default 60), `now` in Unix seconds (default: the clock).
 */
export function createToken(secret, { author, scope, topics, expiresIn = 60, now } = {}) {
  const iat = now ?? Math.floor(Date.now() / 1000);
  const claims = { iat, exp: iat + expiresIn };
  if (author !== undefined && author !== null) claims.author = author;
  if (scope !== undefined && scope !== null) claims.scope = Array.isArray(scope) ? scope.join(' ') : scope;
  if (topics !== undefined && topics !== null) claims.topics = topics;
  return signJwt(claims, secret);
}
