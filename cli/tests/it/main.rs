//! The binary's integration and end-to-end tests, one test binary (each file a module, the
//! support shared): real services on port 0 over real HTTP, `up` as a newcomer runs it, the
//! pages in a real browser, outages and faults. Run one file's tests by its module:
//! `cargo test -p switchyard --test it ticketing::`.

mod support;

mod auth;
mod bad_input_campaign;
mod blog;
mod browser;
mod browser_ticketing;
mod commands;
mod console;
mod event_bus;
mod failures;
mod fault_injection;
mod openapi;
mod scale_out;
mod ticketing;
mod traces;
mod up;
mod up_ticketing;
