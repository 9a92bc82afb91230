//! Where each Ingress backend (`service:port`) lives on this machine.

use std::collections::HashMap;

use switchyard_ingress::{Backend, BackendPort};

/// A map from `service:port` to a base URL; a backend not listed is taken to listen on
/// `127.0.0.1:<port>` (the contract's ports are the local defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    explicit: HashMap<String, String>,
}

impl Backends {
    /// Parses `name:port=http://host:port,...`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut explicit = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, url) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not service:port=url"))?;
            if !key.contains(':') {
                return Err(format!("{key:?} is not service:port"));
            }
            if !(url.starts_with("http://") && url.len() > "http://".len()) {
                return Err(format!("{url:?} is not an http:// URL"));
            }
            explicit.insert(
                key.trim().to_string(),
                url.trim().trim_end_matches('/').to_string(),
            );
        }
        Ok(Backends { explicit })
    }

    /// Adds or replaces one mapping.
    pub fn with(mut self, service: &str, port: u16, url: impl Into<String>) -> Self {
        self.explicit
            .insert(format!("{service}:{port}"), url.into());
        self
    }

    /// The `GATEWAY_BACKENDS` text that [`Backends::parse`] reads back as `self`.
    pub fn spec(&self) -> String {
        let mut items: Vec<String> = self
            .explicit
            .iter()
            .map(|(key, url)| format!("{key}={url}"))
            .collect();
        items.sort();
        items.join(",")
    }

    /// The base URL of `backend`.
    pub fn address_of(&self, backend: &Backend) -> String {
        if let Some(url) = self.explicit.get(&backend.to_string()) {
            return url.clone();
        }
        match &backend.port {
            BackendPort::Number(n) => format!("http://127.0.0.1:{n}"),
            // A named port cannot be guessed locally; it has to be mapped.
            BackendPort::Name(_) => format!("http://{}", backend.service),
        }
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
            Backends::default().address_of(&backend("query-srv", 4002)),
            "http://127.0.0.1:4002"
        );
    }

    #[test]
    fn explicit_mappings_win() {
        let b = Backends::parse("query-srv:4002=http://127.0.0.1:14002/").expect("ok");
        assert_eq!(
            b.address_of(&backend("query-srv", 4002)),
            "http://127.0.0.1:14002"
        );
        assert_eq!(Backends::parse(&b.spec()).expect("round trip"), b);
        assert!(Backends::parse("query-srv=http://x").is_err());
        assert!(Backends::parse("query-srv:4002=ftp://x").is_err());
    }
}
