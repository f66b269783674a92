CREATE TABLE subscribers (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    topic TEXT NOT NULL,
    target_url TEXT NOT NULL,
    filter_expression TEXT,
    secret TEXT,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    description TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    previous_secret TEXT,
    previous_secret_expires_at TIMESTAMP
);
CREATE INDEX subscribers_topic ON subscribers (topic);
CREATE INDEX subscribers_topic_target ON subscribers (topic, target_url);
CREATE TRIGGER subscribers_touch AFTER UPDATE ON subscribers
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE subscribers SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    message_id TEXT NOT NULL,
    subscriber_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    error_kind TEXT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX delivery_attempts_subscriber ON delivery_attempts (subscriber_id, id);
CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id);

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    message_id TEXT NOT NULL,
    subscriber_id BIGINT NOT NULL,
    topic TEXT NOT NULL,
    request TEXT NOT NULL,
    last_error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    replayed_at TIMESTAMP
);
CREATE INDEX dead_letters_subscriber ON dead_letters (subscriber_id, id);
