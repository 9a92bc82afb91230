//! Ingress routing as ingress-nginx evaluates it: the shared implementation in
//! `switchyard-ingress`, also used by the local gateway.

pub use switchyard_ingress::*;
