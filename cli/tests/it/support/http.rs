//! The plain HTTP client of the tests, from the testkit.

pub use switchyard_testkit::plain::{Answer, Client};
