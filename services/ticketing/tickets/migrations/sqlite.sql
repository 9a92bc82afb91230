CREATE TABLE tickets (
    -- Creation order, for listing.
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    price REAL NOT NULL,
    user_id TEXT NOT NULL,
    -- The order that reserves the ticket; NULL while it is for sale.
    order_id TEXT,
    -- Bumped by one on every change (optimistic concurrency, replicas in order).
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- GET /api/tickets lists the tickets for sale, oldest first.
CREATE INDEX tickets_for_sale ON tickets (ord) WHERE order_id IS NULL;
