-- Publishes accepted while Redis was unreachable, in publish order, until a
-- server moves them into the queue.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    message_id TEXT NOT NULL,
    message TEXT NOT NULL,
    subscriber_ids TEXT NOT NULL,
    idempotency_key TEXT,
    idempotency_record TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
