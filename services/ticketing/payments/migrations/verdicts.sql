-- Shared by both dialects.
-- Paid or expired, decided once per order, here: `verdict` is NULL until then, 'paid'
-- when a charge succeeded (in the transaction that publishes payment:created), 'expired'
-- when its time ran out unpaid (in the transaction that publishes payment:expired).
-- `expires_at` is the order's expiresAt in milliseconds (NULL if it could not be read).
ALTER TABLE orders ADD COLUMN expires_at BIGINT;
ALTER TABLE orders ADD COLUMN verdict TEXT;
CREATE INDEX orders_undecided ON orders (expires_at) WHERE verdict IS NULL;
