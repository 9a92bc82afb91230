//! An export request, in either encoding, to span records.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

use crate::store::{SpanKind, SpanRecord};

/// The attributes kept per span, the bytes kept of a name or a value, and the spans taken
/// from one request (the SDK sends at most 512 at a time).
const MAX_ATTRIBUTES: usize = 16;
const MAX_TEXT_BYTES: usize = 256;
pub const MAX_SPANS_PER_REQUEST: usize = 2048;
/// Status code `ERROR` in OTLP.
const STATUS_ERROR: i32 = 2;

/// The encodings of OTLP over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf` (`http/protobuf`).
    Protobuf,
    /// `application/json` (`http/json`).
    Json,
}

impl Encoding {
    /// From a `content-type` value (parameters ignored); `None` for any other type.
    pub fn of_content_type(value: &str) -> Option<Encoding> {
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// Why a request body is not an export request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an OTLP protobuf export request: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("not an OTLP JSON export request: {0}")]
    Json(#[from] serde_json::Error),
}

/// The spans of an export request; spans with malformed ids are skipped.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<Vec<SpanRecord>, DecodeError> {
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)?,
        Encoding::Json => serde_json::from_slice(body)?,
    };
    let mut records = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(text_of)
            .unwrap_or_else(|| "unknown_service".to_string());
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let (Some(trace_id), Some(span_id)) =
                    (hex_id(&span.trace_id, 16), hex_id(&span.span_id, 8))
                else {
                    continue;
                };
                let error = span
                    .status
                    .as_ref()
                    .filter(|s| s.code == STATUS_ERROR)
                    .map(|s| truncate(&s.message));
                if records.len() == MAX_SPANS_PER_REQUEST {
                    return Ok(records);
                }
                records.push(SpanRecord {
                    trace_id,
                    span_id,
                    parent_span_id: hex_id(&span.parent_span_id, 8),
                    name: truncate(&span.name),
                    kind: SpanKind::from_otlp(span.kind),
                    service: service.clone(),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano.max(span.start_time_unix_nano),
                    attributes: attributes(&span.attributes),
                    error,
                });
            }
        }
    }
    Ok(records)
}

/// An id of `len` bytes in hex; `None` when empty, of another length, or all zero.
fn hex_id(bytes: &[u8], len: usize) -> Option<String> {
    if bytes.len() != len || bytes.iter().all(|b| *b == 0) {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * len);
    for b in bytes {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    Some(hex)
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, serde_json::Value> {
    kvs.iter()
        .take(MAX_ATTRIBUTES)
        .filter_map(|kv| {
            let value = kv.value.as_ref()?;
            let json = match &value.value {
                Some(any_value::Value::BoolValue(b)) => serde_json::Value::from(*b),
                Some(any_value::Value::IntValue(i)) => serde_json::Value::from(*i),
                Some(any_value::Value::DoubleValue(d)) => serde_json::Value::from(*d),
                _ => serde_json::Value::from(text_of(value)),
            };
            Some((truncate(&kv.key), json))
        })
        .collect()
}

fn text_of(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => truncate(s),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(_) => "(structured)".to_string(),
        None => String::new(),
    }
}

/// At most [`MAX_TEXT_BYTES`], cut at a character boundary.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn request() -> ExportTraceServiceRequest {
        let text = |s: &str| AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(text("orders")),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            trace_id: vec![0xab; 16],
                            span_id: vec![0x01; 8],
                            parent_span_id: vec![],
                            name: "POST /api/orders".into(),
                            kind: 2,
                            start_time_unix_nano: 10,
                            end_time_unix_nano: 20,
                            attributes: vec![KeyValue {
                                key: "http.response.status_code".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::IntValue(201)),
                                }),
                                ..Default::default()
                            }],
                            status: Some(Status {
                                code: STATUS_ERROR,
                                message: "boom".into(),
                            }),
                            ..Default::default()
                        },
                        Span {
                            trace_id: vec![0; 16],
                            span_id: vec![0x02; 8],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn both_encodings_read_the_same_spans_and_malformed_ids_are_skipped() {
        let proto = decode(&request().encode_to_vec(), Encoding::Protobuf).expect("protobuf");
        let json = serde_json::to_vec(&request()).expect("json");
        assert!(
            String::from_utf8_lossy(&json).contains(&"ab".repeat(16)),
            "OTLP/JSON ids are hex"
        );
        let from_json = decode(&json, Encoding::Json).expect("json");
        assert_eq!(proto, from_json);
        assert_eq!(proto.len(), 1, "the all-zero trace id is skipped");
        let span = &proto[0];
        assert_eq!(span.service, "orders");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.parent_span_id, None);
        assert_eq!(
            (span.trace_id.as_str(), span.span_id.as_str()),
            (&*"ab".repeat(16), "0101010101010101")
        );
        assert_eq!(
            hex_id(&[0x00, 0x1f, 0xa0, 0xff], 4).as_deref(),
            Some("001fa0ff")
        );
        assert_eq!(span.attributes["http.response.status_code"], 201);
        assert_eq!(span.error.as_deref(), Some("boom"));
        assert!(decode(b"{not json", Encoding::Json).is_err());
        assert!(decode(&[0xff, 0xff, 0xff], Encoding::Protobuf).is_err());
    }

    #[test]
    fn content_types_name_their_encoding() {
        assert_eq!(
            Encoding::of_content_type("application/json; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::of_content_type("application/x-protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(Encoding::of_content_type("text/plain"), None);
    }
}
