-- Shared by both dialects.
-- Bumped by every change to the read model, in the change's transaction: replicas sharing
-- the database compare it with the version their cached JSON was built at.
CREATE TABLE model_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO model_version (id, version) VALUES (1, 0);
-- The position in the bus's log of the event that created the row: the read model lists
-- posts and comments in log order, whatever order the events were applied in.
ALTER TABLE posts ADD COLUMN log_seq BIGINT;
ALTER TABLE comments ADD COLUMN log_seq BIGINT;
