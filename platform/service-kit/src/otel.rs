//! OTLP export of the spans in [`crate::spans`], configured by the standard `OTEL_*`
//! variables only, and off unless an endpoint is named.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the collector's base URL (`/v1/traces` is appended); export is on when it or the next is set |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the traces URL, used as it is |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` (default) or `http/json` |
//! | `OTEL_SERVICE_NAME` | the service's name in the traces (default: its registry name) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | the sampler (default `parentbased_always_on`) |
//! | `OTEL_SDK_DISABLED` | `true` turns export off whatever else is set |
//! | `OTEL_TRACES_EXPORTER` | `otlp` (default) or `none` |
//! | `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `..._HEADERS` | batching, timeout and headers, read by the SDK |
//!
//! Off, no tracer exists: a span is an id and nothing else, so tracing costs nothing a
//! benchmark can see. On, spans go to a batch processor on its own thread, which sends
//! them over HTTP; a collector that is away loses spans, never requests. The exporter's
//! threads run at a lower CPU priority than the service's ([`crate::priority`]): on a
//! busy machine the export waits for the service's work, not the other way round.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::{ConfigError, Env};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer spans are exported with, when export is on.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Whether spans are exported (work that only describes a span can be skipped when not).
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportSettings {
    /// No endpoint, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    Off,
    On {
        /// The traces URL, `/v1/traces` appended to a base endpoint.
        endpoint: String,
        protocol: ExportProtocol,
        /// `OTEL_SERVICE_NAME`, when set.
        service_name: Option<String>,
    },
}

/// The OTLP encodings over HTTP that are built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    Protobuf,
    Json,
}

impl ExportSettings {
    /// Reads the variables; a malformed one stops the service, named.
    pub fn from_env(env: &Env) -> Result<ExportSettings, ConfigError> {
        let set = |name: &str| env.raw(name).filter(|v| !v.trim().is_empty());
        if let Some(disabled) = set("OTEL_SDK_DISABLED") {
            match disabled.trim().to_ascii_lowercase().as_str() {
                "true" => return Ok(ExportSettings::Off),
                "false" => {}
                _ => return Err(malformed("OTEL_SDK_DISABLED", &disabled, "true or false")),
            }
        }
        if let Some(exporter) = set("OTEL_TRACES_EXPORTER") {
            match exporter.trim() {
                "none" => return Ok(ExportSettings::Off),
                "otlp" => {}
                _ => {
                    return Err(malformed(
                        "OTEL_TRACES_EXPORTER",
                        &exporter,
                        "otlp or none (the exporters built in)",
                    ));
                }
            }
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref().map(str::trim) {
            None | Some("http/protobuf") => ExportProtocol::Protobuf,
            Some("http/json") => ExportProtocol::Json,
            Some(other) => {
                return Err(malformed(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    other,
                    "http/protobuf or http/json (grpc is not built in)",
                ));
            }
        };
        let endpoint = if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            crate::config::check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url, &["http"])?;
            url
        } else if let Some(base) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            crate::config::check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base, &["http"])?;
            format!("{}/v1/traces", base.trim_end_matches('/'))
        } else {
            return Ok(ExportSettings::Off);
        };
        Ok(ExportSettings::On {
            endpoint,
            protocol,
            service_name: set("OTEL_SERVICE_NAME"),
        })
    }
}

fn malformed(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Malformed {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Export while it lives; [`Export::shutdown`] sends what is still batched.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Sends the spans still batched and stops the exporter (blocking up to the export
    /// timeout, so it runs off the async threads).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// The exporter and its batch processor, whose threads (the processor's and the HTTP
/// client's) start on a thread lowered to [`crate::priority::OBSERVER_NICE`] and inherit
/// it: exporting yields the CPU to the service's own work.
fn build_provider(
    endpoint: &str,
    protocol: ExportProtocol,
    resource: Resource,
) -> Result<SdkTracerProvider, ConfigError> {
    let url = endpoint.to_string();
    let build = move || {
        if let Err(e) = crate::priority::lower_this_thread() {
            tracing::debug!(error = %e, "span export keeps the service's priority");
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_protocol(match protocol {
                ExportProtocol::Protobuf => Protocol::HttpBinary,
                ExportProtocol::Json => Protocol::HttpJson,
            })
            .build()
            .map_err(|e| malformed("OTEL_EXPORTER_OTLP_ENDPOINT", &url, &e.to_string()))?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    };
    let failed = |reason: String| malformed("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, &reason);
    std::thread::Builder::new()
        .name("span-export-setup".into())
        .spawn(build)
        .map_err(|e| failed(format!("the exporter could not start: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(failed("the exporter's setup panicked".into())))
}

/// Starts export for `service` (of `app`) as `env` asks: `None` when it is off. Export is
/// per process: a second call (tests running several services in one) keeps the first.
pub fn init(env: &Env, app: &str, service: &str) -> Result<Option<Export>, ConfigError> {
    let ExportSettings::On {
        endpoint,
        protocol,
        service_name,
    } = ExportSettings::from_env(env)?
    else {
        return Ok(None);
    };
    if TRACER.get().is_some() {
        return Ok(None);
    }
    let resource = Resource::builder()
        .with_service_name(service_name.unwrap_or_else(|| service.to_string()))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.namespace",
            app.to_string(),
        ))
        .build();
    let provider = build_provider(&endpoint, protocol, resource)?;
    let tracer = provider.tracer("switchyard");
    if TRACER.set(tracer).is_err() {
        // Another service of this process got there first.
        return Ok(None);
    }
    tracing::info!(%endpoint, ?protocol, "exporting spans by OTLP");
    Ok(Some(Export { provider }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn read(vars: &[(&str, &str)]) -> ExportSettings {
        ExportSettings::from_env(&env(vars)).expect("valid")
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named() {
        assert_eq!(read(&[]), ExportSettings::Off);
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]),
            ExportSettings::On {
                endpoint: "http://collector:4318/v1/traces".into(),
                protocol: ExportProtocol::Protobuf,
                service_name: None,
            }
        );
        let traces = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:1/traces"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "mine"),
        ]);
        assert_eq!(
            traces,
            ExportSettings::On {
                endpoint: "http://c:1/traces".into(),
                protocol: ExportProtocol::Json,
                service_name: Some("mine".into()),
            }
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off];
            assert_eq!(read(&vars), ExportSettings::Off);
        }
    }

    #[test]
    fn a_malformed_variable_is_named() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ] {
            let vars = env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (name, value),
            ]);
            let e = ExportSettings::from_env(&vars).expect_err(name).to_string();
            assert!(e.contains(name), "{e}");
        }
    }

    /// The nice value of each of this process's threads whose name starts with `prefix`.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(prefix: &str) -> Vec<(String, i32)> {
        let threads = crate::priority::nice_of_threads(None).into_iter();
        threads
            .filter(|(name, _)| name.starts_with(prefix))
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_exporter_s_threads_yield_to_the_service_s() {
        let before = crate::priority::this_thread_nice().expect("nice");
        let resource = Resource::builder().with_service_name("t").build();
        let provider = build_provider(
            "http://127.0.0.1:9/v1/traces",
            ExportProtocol::Protobuf,
            resource,
        )
        .expect("provider");
        let lowered = crate::priority::OBSERVER_NICE.max(before);
        let threads = [
            nice_of_threads("OpenTelemetry"),
            nice_of_threads("reqwest-intern"),
        ];
        for (what, found) in ["the batch processor", "the HTTP client"]
            .iter()
            .zip(&threads)
        {
            assert!(!found.is_empty(), "{what}'s thread not found");
            for (name, nice) in found {
                assert_eq!(*nice, lowered, "{name}");
            }
        }
        assert_eq!(crate::priority::this_thread_nice().expect("nice"), before);
        drop(provider.shutdown());
    }
}
