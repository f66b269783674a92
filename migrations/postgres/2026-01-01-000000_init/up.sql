CREATE TABLE subscribers (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    target_url TEXT NOT NULL,
    filter_expression TEXT,
    secret TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    description TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    previous_secret TEXT,
    previous_secret_expires_at TIMESTAMP
);
CREATE INDEX subscribers_topic ON subscribers (topic);
CREATE INDEX subscribers_topic_target ON subscribers (topic, target_url);
CREATE FUNCTION subscribers_touch() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at = OLD.updated_at THEN
        NEW.updated_at := now() AT TIME ZONE 'utc';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER subscribers_touch BEFORE UPDATE ON subscribers
    FOR EACH ROW EXECUTE FUNCTION subscribers_touch();

CREATE TABLE delivery_attempts (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL,
    subscriber_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    error_kind TEXT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX delivery_attempts_subscriber ON delivery_attempts (subscriber_id, id);
CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id);

CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL,
    subscriber_id BIGINT NOT NULL,
    topic TEXT NOT NULL,
    request TEXT NOT NULL,
    last_error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    replayed_at TIMESTAMP
);
CREATE INDEX dead_letters_subscriber ON dead_letters (subscriber_id, id);
