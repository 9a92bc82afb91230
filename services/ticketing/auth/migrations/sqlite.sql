CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Trimmed and lower-cased: two spellings of one address are one user.
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
-- Failed sign-ins, per email and per client address, for the sign-in limit.
CREATE TABLE signin_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX signin_failures_by_key ON signin_failures (key, at);
