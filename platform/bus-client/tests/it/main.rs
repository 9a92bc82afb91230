//! The bus client's integration tests, one binary (each file a module): the NATS backend
//! against a real server, the outbox relay's replicas on one PostgreSQL database, and the
//! PostgreSQL pool's round trips.

mod nats;
mod nats_cluster;
mod outbox_postgres;
mod pool_postgres;
mod read_cache_postgres;
