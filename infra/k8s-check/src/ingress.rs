//! Ingress paths as ingress-nginx evaluates them, and HTTPRoutes as Envoy Gateway does: the
//! implementation shared with the local gateway (`switchyard-ingress`).

pub use switchyard_ingress::*;
