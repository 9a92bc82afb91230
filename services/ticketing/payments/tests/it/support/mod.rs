//! Test support: a fake of Stripe's API, and what the payments service's tests share
//! beyond it (services in this process over real HTTP, the in-process bus, a recorder
//! subscriber, PostgreSQL databases), re-exported from `switchyard_testkit`.
#![allow(dead_code)]

pub use switchyard_testkit::fake_stripe;

// What the payments and Stripe tests use; each binary uses some of it.
#[allow(unused_imports)]
pub use switchyard_testkit::{
    Recorder, Running, bus, bus::publish, bus::subscriber, eventually, listener, listeners, now_ms,
    postgres,
};
