-- One expiry timer per order: the database is the timer, so a timer survives a restart.
CREATE TABLE expiration_timers (
    order_id TEXT PRIMARY KEY,
    -- When it comes due: milliseconds since the Unix epoch (the order's expiresAt).
    due_at BIGINT NOT NULL,
    -- 0 pending, 1 fired (expiration:complete committed to the outbox).
    fired INTEGER NOT NULL DEFAULT 0,
    -- The order:created's correlation id, carried to expiration:complete.
    correlation_id TEXT,
    created_at BIGINT NOT NULL,
    fired_at BIGINT
);
-- The loop looks for the earliest pending timers only.
CREATE INDEX expiration_timers_pending ON expiration_timers (due_at) WHERE fired = 0;
