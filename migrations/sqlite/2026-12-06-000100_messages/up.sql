-- The message log: every accepted message, in publish order (log_seq).
CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    log_seq BIGINT NOT NULL,
    topic TEXT NOT NULL,
    author TEXT,
    body TEXT NOT NULL,
    headers TEXT NOT NULL,
    query_params TEXT NOT NULL,
    path_params TEXT NOT NULL,
    http_method TEXT NOT NULL,
    ordering_key TEXT,
    matched INTEGER NOT NULL,
    subscriber_ids TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
-- With the topic, so scanning by publish order for a pattern reads the index alone.
CREATE UNIQUE INDEX messages_log_seq ON messages (log_seq, topic);
CREATE INDEX messages_topic ON messages (topic, log_seq);
CREATE INDEX messages_author ON messages (author, log_seq);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX delivery_attempts_created ON delivery_attempts (created_at);
CREATE INDEX dead_letters_created ON dead_letters (created_at);
