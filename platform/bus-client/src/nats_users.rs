//! NATS users for an app: each service may publish its own events only and consume its
//! own durable only; nothing else the app's stream holds can be written by it.
//!
//! [`server_config`] writes the `authorization` block of a nats-server configuration,
//! passwords taken from the server's environment (`$ORDERS_NATS_PASSWORD`), so the
//! configuration holds no secret: the production overlays mount it as a ConfigMap and
//! give the server the passwords from a Secret. Each service connects as its user
//! (`NATS_USER`, `NATS_PASSWORD`) with replies under an inbox of its own
//! ([`crate::nats_bus::inbox_prefix`]), and may:
//!
//! * publish the subjects of the event types it produces, and its own dead letters;
//! * create, update and read the app's streams (it makes them when missing), read the
//!   app's stream message by message (catch-up, and dead-lettering by sequence);
//! * create, read, update and pull from its own durable consumer, acknowledge its own
//!   deliveries, keep its deferral counts under its own key prefix, hear its own
//!   max-deliveries advisories.
//!
//! An `operator` user may do everything: the dead-letter tooling's replay publishes an
//! event on its subject, which only its producer and the operator may.
//!
//! A *watcher* (the console) may read and publish nothing of its own: it reads the
//! app's streams message by message and every durable's info, reads the deferral
//! counts message by message (no consumer: it may create none), and hears every consumer's
//! max-deliveries and terminated advisories. It may create no stream, pull from no
//! durable, acknowledge nothing and publish no event or dead letter, so a replay is the
//! operator's.

use crate::nats_bus::{inbox_prefix, subject_token};
use crate::nats_deferrals::bucket_name;

/// One service's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    /// Its NATS user name (the service's name).
    pub user: String,
    /// Its durable consumer, if it consumes.
    pub durable: Option<String>,
    /// The event types it publishes.
    pub produces: Vec<String>,
    /// A watcher reads the streams and every consumer's state and writes nothing
    /// (`durable` and `produces` are then empty).
    pub watcher: bool,
}

impl ServiceUser {
    /// The read-only user `user` (the console).
    pub fn watcher(user: &str) -> ServiceUser {
        ServiceUser {
            user: user.to_string(),
            durable: None,
            produces: Vec::new(),
            watcher: true,
        }
    }
}

/// The environment variable the server reads `user`'s password from.
pub fn password_variable(user: &str) -> String {
    let name: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}_NATS_PASSWORD")
}

/// The user that may do everything (tools), and its password's variable.
pub const OPERATOR: &str = "operator";

/// What `user` may publish and subscribe to, for the app's `stream` and subject `prefix`.
pub fn permissions(stream: &str, prefix: &str, user: &ServiceUser) -> (Vec<String>, Vec<String>) {
    let dead = format!("{stream}_DEADLETTER");
    let bucket = bucket_name(stream);
    if user.watcher {
        return watcher_permissions(stream, &dead, &bucket, &user.user);
    }
    let mut publish: Vec<String> = user
        .produces
        .iter()
        .map(|t| format!("{prefix}.{}", subject_token(t)))
        .collect();
    publish.extend([
        "$JS.API.INFO".to_string(),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.STREAM.INFO.{dead}"),
        format!("$JS.API.STREAM.CREATE.{dead}"),
    ]);
    let mut subscribe = vec![format!("{}.>", inbox_prefix(&user.user))];
    if let Some(durable) = &user.durable {
        publish.extend([
            format!("{prefix}.deadletter.{}", subject_token(durable)),
            format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            format!("$JS.ACK.{stream}.{durable}.>"),
            format!("$JS.API.STREAM.INFO.KV_{bucket}"),
            format!("$JS.API.STREAM.CREATE.KV_{bucket}"),
            format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"),
            format!("$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{durable}.>"),
            format!("$KV.{bucket}.{durable}.>"),
        ]);
        subscribe.push(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"
        ));
    }
    (publish, subscribe)
}

/// What a watcher may: read, never write (see the module's documentation).
fn watcher_permissions(
    stream: &str,
    dead: &str,
    bucket: &str,
    user: &str,
) -> (Vec<String>, Vec<String>) {
    let publish = vec![
        "$JS.API.INFO".to_string(),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.STREAM.INFO.{dead}"),
        format!("$JS.API.STREAM.MSG.GET.{dead}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        // The deferral counts: the bucket's subjects, then each key's last entry. No
        // consumer: one could deliver the bucket onto any subject.
        format!("$JS.API.STREAM.INFO.KV_{bucket}"),
        format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"),
    ];
    let subscribe = vec![
        format!("{}.>", inbox_prefix(user)),
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"),
        format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.*"),
    ];
    (publish, subscribe)
}

/// The `authorization` block of a nats-server configuration for `users` and the
/// operator, passwords from the server's environment ([`password_variable`]).
pub fn server_config(stream: &str, prefix: &str, users: &[ServiceUser]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("          {}", quote(i)))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    let mut out = format!(
        "# NATS users of the stream {stream} (subjects {prefix}.*): generated from the app\n\
         # registry by `switchyard nats-users`; passwords come from the server's environment.\n\
         authorization {{\n  users = [\n"
    );
    out.push_str(&format!(
        "    {{ user: {}, password: ${} }},\n",
        quote(OPERATOR),
        password_variable(OPERATOR)
    ));
    for user in users {
        let (publish, subscribe) = permissions(stream, prefix, user);
        out.push_str(&format!(
            "    {{\n      user: {}\n      password: ${}\n      permissions: {{\n        publish: {{ allow: [\n{}\n        ] }}\n        subscribe: {{ allow: [\n{}\n        ] }}\n      }}\n    }},\n",
            quote(&user.user),
            password_variable(&user.user),
            list(&publish),
            list(&subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> ServiceUser {
        ServiceUser {
            user: "orders".into(),
            durable: Some("orders-service".into()),
            produces: vec!["order:created".into(), "order:cancelled".into()],
            watcher: false,
        }
    }

    #[test]
    fn a_watcher_reads_and_writes_nothing() {
        let (publish, subscribe) =
            permissions("TICKETING", "ticketing", &ServiceUser::watcher("console"));
        assert!(publish.contains(&"$JS.API.STREAM.MSG.GET.TICKETING".to_string()));
        assert!(publish.contains(&"$JS.API.CONSUMER.INFO.TICKETING.*".to_string()));
        for p in &publish {
            assert!(!p.starts_with("ticketing."), "{p}");
            assert!(!p.starts_with("$JS.ACK"), "{p}");
            assert!(!p.contains("MSG.NEXT"), "{p}");
            assert!(
                !p.contains("STREAM.CREATE") && !p.contains("STREAM.UPDATE"),
                "{p}"
            );
            assert!(!p.contains("MSG.DELETE"), "{p}");
            assert!(!p.contains("CONSUMER.CREATE"), "{p}");
        }
        assert_eq!(subscribe[0], "_INBOX_console.>");
    }

    #[test]
    fn a_service_publishes_its_own_types_and_pulls_its_own_durable() {
        let (publish, subscribe) = permissions("TICKETING", "ticketing", &orders());
        assert!(publish.contains(&"ticketing.order:created".to_string()));
        assert!(!publish.iter().any(|p| p.contains("payment:created")));
        assert!(
            publish.contains(&"$JS.API.CONSUMER.MSG.NEXT.TICKETING.orders-service".to_string())
        );
        assert!(!publish.iter().any(|p| p.ends_with(".*") || p == ">"));
        assert_eq!(subscribe[0], "_INBOX_orders.>");
    }

    #[test]
    fn the_config_names_every_user_with_its_password_variable() {
        let text = server_config("TICKETING", "ticketing", &[orders()]);
        assert!(text.contains("password: $ORDERS_NATS_PASSWORD"), "{text}");
        assert!(text.contains("password: $OPERATOR_NATS_PASSWORD"), "{text}");
        assert_eq!(password_variable("blog-query"), "BLOG_QUERY_NATS_PASSWORD");
    }
}
