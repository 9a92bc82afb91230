-- Shared by both dialects.
-- Orders known to be cancelled: on a bus that hands events to several handlers at once,
-- an order:cancelled can be applied before its own order:created; the creation that comes
-- after it must then not reserve the ticket.
CREATE TABLE cancelled_orders (
    order_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
