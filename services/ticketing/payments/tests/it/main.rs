//! The payments service's integration tests, one binary (each file a module): paying
//! through the service and its settler, and the Stripe provider against a fake Stripe.

mod payments;
mod stripe;
mod support;
