//! The gateway's integration tests, one binary (each file a module): routing real requests
//! to real backends, and the two forms of an app's routing giving one table.

mod routes_kinds;
mod routing;
