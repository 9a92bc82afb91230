//! Where each Ingress backend (`service:port`) lives on this machine: one address, or
//! several for a service run as replicas.

use std::collections::HashMap;

use switchyard_ingress::{Backend, BackendPort};

/// The most replicas one backend may list.
pub const MAX_REPLICAS: usize = 16;

/// A map from `service:port` to its base URLs; a backend not listed is taken to listen on
/// `127.0.0.1:<port>` (the contract's ports are the local defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    explicit: HashMap<String, Vec<String>>,
}

impl Backends {
    /// Parses `name:port=http://host:port,...`, a backend run as replicas giving each
    /// replica's URL separated by `|` (`name:port=http://a:1|http://a:2`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut explicit = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, urls) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not service:port=url"))?;
            if !key.contains(':') {
                return Err(format!("{key:?} is not service:port"));
            }
            let mut replicas = Vec::new();
            for url in urls.split('|').map(str::trim) {
                if !(url.starts_with("http://") && url.len() > "http://".len()) {
                    return Err(format!("{url:?} is not an http:// URL"));
                }
                replicas.push(url.trim_end_matches('/').to_string());
            }
            if replicas.len() > MAX_REPLICAS {
                return Err(format!(
                    "{key} lists {} replicas, at most {MAX_REPLICAS}",
                    replicas.len()
                ));
            }
            explicit.insert(key.trim().to_string(), replicas);
        }
        Ok(Backends { explicit })
    }

    /// Adds or replaces one mapping.
    pub fn with(self, service: &str, port: u16, url: impl Into<String>) -> Self {
        self.with_replicas(service, port, vec![url.into()])
    }

    /// Adds or replaces one mapping to several replicas.
    pub fn with_replicas(mut self, service: &str, port: u16, urls: Vec<String>) -> Self {
        self.explicit.insert(format!("{service}:{port}"), urls);
        self
    }

    /// The `GATEWAY_BACKENDS` text that [`Backends::parse`] reads back as `self`.
    pub fn spec(&self) -> String {
        let mut items: Vec<String> = self
            .explicit
            .iter()
            .map(|(key, urls)| format!("{key}={}", urls.join("|")))
            .collect();
        items.sort();
        items.join(",")
    }

    /// The base URLs of `backend`'s replicas (one, unless it runs as several).
    pub fn addresses_of(&self, backend: &Backend) -> Vec<String> {
        if let Some(urls) = self.explicit.get(&backend.to_string()) {
            return urls.clone();
        }
        vec![match &backend.port {
            BackendPort::Number(n) => format!("http://127.0.0.1:{n}"),
            // A named port cannot be guessed locally; it has to be mapped.
            BackendPort::Name(_) => format!("http://{}", backend.service),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(service: &str, port: u64) -> Backend {
        Backend {
            service: service.into(),
            port: BackendPort::Number(port),
        }
    }

    #[test]
    fn defaults_to_the_contract_port_on_loopback() {
        assert_eq!(
            Backends::default().addresses_of(&backend("query-srv", 4002)),
            ["http://127.0.0.1:4002"]
        );
    }

    #[test]
    fn explicit_mappings_win() {
        let b = Backends::parse("query-srv:4002=http://127.0.0.1:14002/").expect("ok");
        assert_eq!(
            b.addresses_of(&backend("query-srv", 4002)),
            ["http://127.0.0.1:14002"]
        );
        assert_eq!(Backends::parse(&b.spec()).expect("round trip"), b);
        assert!(Backends::parse("query-srv=http://x").is_err());
        assert!(Backends::parse("query-srv:4002=ftp://x").is_err());
    }

    #[test]
    fn a_backend_run_as_replicas_lists_each() {
        let b = Backends::parse("orders-srv:3000=http://127.0.0.1:3202|http://127.0.0.1:3222/")
            .expect("ok");
        assert_eq!(
            b.addresses_of(&backend("orders-srv", 3000)),
            ["http://127.0.0.1:3202", "http://127.0.0.1:3222"]
        );
        assert_eq!(Backends::parse(&b.spec()).expect("round trip"), b);
        assert!(Backends::parse("orders-srv:3000=http://a|").is_err());
        let many = vec!["http://a"; MAX_REPLICAS + 1].join("|");
        assert!(Backends::parse(&format!("orders-srv:3000={many}")).is_err());
    }
}
