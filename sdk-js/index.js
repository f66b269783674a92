export { Switch, MessageIterator } from './src/client.js';
export { MessageStream } from './src/stream.js';
export { signJwt, createToken } from './src/jwt.js';
export { verifyWebhook, signWebhook } from './src/webhook.js';
export {
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
} from './src/errors.js';
