DROP TABLE dead_letters;
DROP TABLE delivery_attempts;
DROP TRIGGER subscribers_touch;
DROP TABLE subscribers;
