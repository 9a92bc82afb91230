//! Each app's events as an AsyncAPI 3 document, made from the contract crates (every
//! event's name and payload schema) and this registry (which service sends and which
//! receives each, and the two buses that carry them).
//!
//! The documents are committed in `docs/asyncapi/<app>.json` (a test fails when they
//! drift: `cargo run -- asyncapi <app> > docs/asyncapi/<app>.json` writes one again),
//! validated with the official parser in CI (`infra/asyncapi/validate.mjs`), and served by
//! `switchyard up` on the gateway's ops port at `/asyncapi.json`.

use serde_json::{Map, Value, json};
use switchyard_events::EventDoc;
use switchyard_events::envelope::{MAX_CORRELATION_LEN, MAX_ID_LEN, MAX_OCCURRED_AT_LEN};

use crate::{App, Consumes, Kind};

/// The AsyncAPI version the documents follow.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The document of `app`.
pub fn document(app: &App) -> Value {
    let events = (app.events)();
    let mut channels = Map::new();
    let mut messages = Map::new();
    let mut operations = Map::new();
    for event in &events {
        let channel = channel_key(event.name);
        channels.insert(
            channel.clone(),
            json!({
                "address": event.name,
                "title": event.name,
                "description": format!(
                    "Events of type `{}`: on the HTTP bus, the envelope's `type`; on NATS, the subject `{}.{}` of the stream `{}`.",
                    event.name, app.subject_prefix, event.name, app.stream
                ),
                "messages": {
                    event.message.as_str(): {"$ref": format!("#/components/messages/{}", event.message)}
                },
            }),
        );
        messages.insert(event.message.clone(), message(event));
        for service in app.services.iter().filter(|s| s.kind == Kind::App) {
            let sends = service.produces.contains(&event.name);
            let receives = match service.consumes {
                Consumes::Nothing => false,
                Consumes::Everything => true,
                Consumes::Only(types) => types.contains(&event.name),
            };
            for (action, yes, verb) in [("send", sends, "sends"), ("receive", receives, "receives")]
            {
                if !yes {
                    continue;
                }
                operations.insert(
                    format!("{}-{verb}-{channel}", service.name),
                    json!({
                        "action": action,
                        "channel": {"$ref": format!("#/channels/{channel}")},
                        "title": format!("{} {verb} {}", service.name, event.name),
                        "summary": service.about,
                        "tags": [{"name": service.name}],
                        "messages": [{"$ref": format!("#/channels/{channel}/messages/{}", event.message)}],
                    }),
                );
            }
        }
    }
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": format!("Switchyard {}: events", app.name),
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The events of {} ({}). Every event travels in one JSON envelope on either bus: `type`, `data` (the payload below), and the metadata Switchyard adds (`id`, `occurredAt`, `correlationId`; `seq` from the HTTP bus), which services written for the plain `{{type, data}}` ignore. Each operation names the service that sends or receives the event.",
                app.name, app.about
            ),
        },
        "defaultContentType": "application/json",
        "servers": servers(app),
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    })
}

/// The document of `app` as the committed file holds it: pretty JSON and a newline.
pub fn document_text(app: &App) -> String {
    let mut text = serde_json::to_string_pretty(&document(app)).expect("a JSON value serialises");
    text.push('\n');
    text
}

/// The two buses: the embedded default's HTTP bus, and NATS JetStream at scale.
fn servers(app: &App) -> Value {
    let mut servers = Map::new();
    if let Some(bus) = app.services.iter().find(|s| s.kind == Kind::EventBus) {
        servers.insert(
            "http-bus".into(),
            json!({
                "host": format!("{}:{}", bus.k8s_service.unwrap_or(bus.name), bus.contract_port),
                "protocol": "http",
                "pathname": "/events",
                "title": "The HTTP event bus",
                "description": format!(
                    "The embedded default (`switchyard up {}`, 127.0.0.1:{} there): a service publishes with `POST /events` and the bus delivers by `POST /events` to each subscriber, in order, at least once.",
                    app.name, bus.local_port
                ),
            }),
        );
    }
    servers.insert(
        "nats".into(),
        json!({
            "host": "nats:4222",
            "protocol": "nats",
            "title": "NATS JetStream",
            "description": format!(
                "At scale: the stream `{}` holds subjects `{}.<type>`; each receiving service has a durable consumer of its own.",
                app.stream, app.subject_prefix
            ),
        }),
    );
    Value::Object(servers)
}

/// The message of `event`: the envelope with its payload.
fn message(event: &EventDoc) -> Value {
    // The payload type's doc comment, its lines joined.
    let summary = event
        .payload
        .get("description")
        .and_then(Value::as_str)
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| event.name.to_string());
    json!({
        "name": event.name,
        "title": event.message,
        "summary": summary,
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["type", "data"],
            "properties": {
                "type": {"type": "string", "const": event.name},
                "data": event.payload,
                "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN, "description": "Unique per event; a redelivery carries the same id."},
                "occurredAt": {"type": "string", "maxLength": MAX_OCCURRED_AT_LEN, "description": "When the change that caused it was committed (RFC 3339)."},
                "correlationId": {"type": "string", "maxLength": MAX_CORRELATION_LEN, "description": "The request id that caused it."},
                "seq": {"type": "integer", "minimum": 1, "description": "The position in the HTTP bus's log (assigned by the bus)."},
            },
        },
    })
}

/// A channel's key: the event's name with every character a key may not hold as `-`.
fn channel_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::APPS;

    #[test]
    fn every_event_of_every_app_has_a_channel_a_sender_and_a_receiver() {
        for app in APPS {
            let doc = document(app);
            for event in (app.events)() {
                let channel = channel_key(event.name);
                assert_eq!(
                    doc["channels"][&channel]["address"], event.name,
                    "{}",
                    app.name
                );
                let ops = doc["operations"].as_object().expect("operations");
                for action in ["send", "receive"] {
                    assert!(
                        ops.values().any(|op| op["action"] == action
                            && op["channel"]["$ref"] == format!("#/channels/{channel}")),
                        "{}: nobody does {action} {}",
                        app.name,
                        event.name
                    );
                }
            }
        }
    }

    /// A payload schema states plain types: no `allOf` (utoipa makes one of an inline enum
    /// with a field comment, whose second half says "object" and so admits no value).
    #[test]
    fn payload_schemas_have_no_all_of() {
        for app in APPS {
            let text = document_text(app);
            assert!(!text.contains("allOf"), "{}: {text}", app.name);
        }
    }

    #[test]
    fn operations_follow_the_registry() {
        let doc = document(&crate::TICKETING);
        let ops = &doc["operations"];
        assert_eq!(ops["orders-sends-order-created"]["action"], "send");
        assert_eq!(
            ops["payments-receives-expiration-complete"]["action"],
            "receive"
        );
        assert!(ops.get("orders-receives-expiration-complete").is_none());
        let blog = document(&crate::BLOG);
        assert_eq!(
            blog["operations"]["moderation-receives-CommentCreated"]["action"],
            "receive"
        );
    }

    #[test]
    fn the_committed_documents_are_up_to_date() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for app in APPS {
            let path = root.join(format!("docs/asyncapi/{}.json", app.name));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == document_text(app),
                "{} is not what the contract and the registry say; write it again with `cargo run -- asyncapi {} > docs/asyncapi/{}.json`",
                path.display(),
                app.name,
                app.name
            );
        }
    }
}
