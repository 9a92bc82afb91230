-- Shared by both dialects.
-- The sign-in and sign-up budgets, one row per key (email:, client:, signup:): attempts
-- reserved in the current window, when it started, and when the next attempt past the
-- budget may come (0: now). The failures table of version 2 is no longer used.
CREATE TABLE attempt_budgets (
    key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    used BIGINT NOT NULL,
    next_at BIGINT NOT NULL
);
DROP TABLE signin_failures;
