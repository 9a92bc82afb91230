-- The replica of the tickets service's tickets, kept from ticket:created and
-- ticket:updated, applied in version order.
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    price DOUBLE PRECISION NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE orders (
    -- Creation order, for listing.
    ord BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    -- created, cancelled, awaiting:payment or complete.
    status TEXT NOT NULL,
    -- RFC 3339, UTC, milliseconds.
    expires_at TEXT NOT NULL,
    ticket_id TEXT NOT NULL REFERENCES tickets (id),
    -- Bumped by one on every change.
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- One live order per ticket, whatever races (several replicas on one database included):
-- a second insert for a ticket that is held fails on this index.
CREATE UNIQUE INDEX orders_one_live_order_per_ticket ON orders (ticket_id)
    WHERE status IN ('created', 'awaiting:payment', 'complete');
-- GET /api/orders: a user's orders, oldest first.
CREATE INDEX orders_by_user ON orders (user_id, ord);
