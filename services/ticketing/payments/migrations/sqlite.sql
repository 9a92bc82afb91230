-- The replica of orders, as order:created and order:cancelled describe them.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    -- The last version applied: order:cancelled applies only the next one.
    version BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    -- The ticket's price in cents (price * 100): what paying charges.
    price_cents BIGINT NOT NULL,
    status TEXT NOT NULL
);
-- Every charge tried for an order. At most one is pending or succeeded at a time (the
-- partial unique index): concurrent payment requests for one order cannot both charge.
CREATE TABLE charge_attempts (
    order_id TEXT NOT NULL,
    -- 1, 2, ...: a declined card leaves the order payable with the next number.
    attempt BIGINT NOT NULL,
    -- pending, succeeded, declined, failed (refused as invalid), refunded.
    status TEXT NOT NULL,
    -- charge-<orderId>-<attempt>: every call that may repeat this charge sends it.
    idempotency_key TEXT NOT NULL,
    -- The card token, kept while the attempt is pending so it can be replayed.
    token TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- The provider's charge, once known.
    charge_id TEXT,
    -- The provider's message of a decline or refusal.
    message TEXT,
    -- Until when (ms) the request that owns a pending attempt may still be at work on it;
    -- after that (or 0: released) the next payment request for the order replays it.
    lease_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, attempt)
);
CREATE UNIQUE INDEX charge_attempts_one_live ON charge_attempts (order_id)
    WHERE status IN ('pending', 'succeeded');
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    stripe_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
