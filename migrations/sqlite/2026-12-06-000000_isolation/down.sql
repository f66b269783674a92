ALTER TABLE subscribers DROP COLUMN disabled_reason;
ALTER TABLE subscribers DROP COLUMN max_in_flight;
