//! Test support: what the expiration service's tests share beyond `switchyard_testkit`
//! (services in this process over real HTTP, the in-process bus, a recorder subscriber,
//! PostgreSQL databases), re-exported from it.
#![allow(dead_code)]

pub use switchyard_testkit::bus::{self, publish, subscriber};
pub use switchyard_testkit::{
    Received, Recorder, Running, eventually, listener, listeners, now_ms, postgres,
};

/// RFC 3339 with milliseconds, as `Date.toISOString()` writes it.
pub fn iso(ms: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}
