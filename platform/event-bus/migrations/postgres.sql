CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    appended_at BIGINT NOT NULL
);
CREATE TABLE subscriber_cursors (
    subscriber TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
CREATE TABLE dead_letters (
    subscriber TEXT NOT NULL,
    seq BIGINT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (subscriber, seq)
);
