-- Per-subscriber delivery limits and why a subscriber was disabled by the hub.
ALTER TABLE subscribers ADD COLUMN max_in_flight INTEGER;
ALTER TABLE subscribers ADD COLUMN disabled_reason TEXT;
