DROP INDEX dead_letters_created;
DROP INDEX delivery_attempts_created;
DROP TABLE messages;
