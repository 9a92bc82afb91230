//! Test support: a fake of Stripe's API, and what the payments service's tests share
//! beyond it (services in this process over real HTTP, the in-process bus, a recorder
//! subscriber, PostgreSQL databases), re-exported from `switchyard_testkit`.
#![allow(dead_code)]

pub use switchyard_testkit::fake_stripe;

pub use switchyard_testkit::listener;
// What the payments tests use; the Stripe tests do without.
#[allow(unused_imports)]
pub use switchyard_testkit::{
    Recorder, Running, bus, bus::publish, bus::subscriber, eventually, listeners, now_ms, postgres,
};
