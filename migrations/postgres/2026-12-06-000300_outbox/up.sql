-- Publishes accepted while Redis was unreachable, in publish order, until a
-- server moves them into the queue.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL,
    message TEXT NOT NULL,
    subscriber_ids TEXT NOT NULL,
    idempotency_key TEXT,
    idempotency_record TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
