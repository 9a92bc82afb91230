//! Test support: services started in-process on port 0, each with its own data directory,
//! talking over real HTTP; and the real binary for process-level tests.
#![allow(dead_code)]

pub mod backend;
pub mod blog;
pub mod console_view;
pub mod faults;
pub mod http;
pub mod load;
pub mod nats_server;
pub mod nemesis;
pub mod process;
pub mod recorder;
pub mod shop;
pub mod ticketing;
pub mod ticketing_load;
pub mod up;
pub mod webdriver;

pub use switchyard_testkit::fake_stripe;

pub use switchyard_testkit::{DEADLINE, Running, eventually, listener, listeners};

use std::future::Future;

use switchyard_kit::Shutdown;
use switchyard_kit::server::Listeners;

/// Starts a service's `launch` on `listeners` ([`Running::start`]).
pub fn start<F, Fut>(listeners: Listeners, launch: F) -> Running
where
    F: FnOnce(Listeners, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Running::start(listeners, launch)
}
