//! Test support shared by the services' integration tests: services in this process on
//! port 0 over real HTTP, the in-process event bus, a recording subscriber, an HTTP client
//! with cookies, JSON error assertions, waiting with deadlines, PostgreSQL databases per
//! test (skipped without a server, failing under CI via
//! [`switchyard_kit::testing::skip_or_fail`]).
//!
//! One module a job; a service's `tests/support` keeps what is its own (how its stack
//! starts) and re-exports from here what its tests use.
//!
//! * [`running`]: a service started in this process ([`Running`]), listeners, a service's
//!   replicas ([`Replicas`]).
//! * [`bus`]: the event bus in this process, publishing to it, reading its log.
//! * [`recorder`]: a subscriber that records what it is delivered ([`Recorder`]).
//! * [`http`]: a client of a service and its bus, with session cookies ([`Client`]), and
//!   its answers with the contract's JSON error assertions ([`Answer`]).
//! * [`wait`]: waiting on a condition with a deadline, never a fixed sleep.
//! * [`postgres`]: a PostgreSQL database for one test ([`TestDatabase`]).
//! * [`fake_stripe`]: a local stand-in for Stripe's charges and refunds ([`FakeStripe`]),
//!   counting the real charges, for the payments tests and the fault-injection checker.
//! * [`nats_cluster`]: three NATS servers forming one JetStream cluster ([`NatsCluster`]),
//!   any of them SIGKILLed and started again.

pub mod bus;
pub mod fake_stripe;
pub mod http;
pub mod nats_cluster;
pub mod on_bus;
pub mod plain;
pub mod postgres;
pub mod recorder;
pub mod running;
pub mod wait;

pub use fake_stripe::FakeStripe;
pub use http::{Answer, Client};
pub use on_bus::OnBus;
pub use postgres::TestDatabase;
pub use recorder::{Received, Recorder, now_ms};
pub use running::{Replicas, Running, listener, listeners};
pub use wait::{DEADLINE, eventually};

/// Declares, for each `async fn name(database_url: Option<&str>)` given, two tests:
/// `sqlite::name` (the service's own SQLite file, `None`) and `postgres::name` (a fresh
/// PostgreSQL database of its own, skipped with a message when no server answers and a
/// failure under `CI=true`).
#[macro_export]
macro_rules! on_each_database {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(None).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    // A database's name is at most 63 bytes; the purpose is a prefix of it.
                    let purpose = stringify!($name);
                    let purpose = &purpose[..purpose.len().min(32)];
                    let Some(db) = $crate::postgres::database_or_skip(purpose).await else {
                        return;
                    };
                    super::$name(Some(&db.url)).await;
                }
            )*
        }
    };
}
