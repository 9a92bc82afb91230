//! Each consumer's position, lag, deferrals and dead letters, from the bus it reads: the
//! HTTP bus's ops listener (`/subscribers`), or JetStream's consumer info; and on NATS the
//! stream's advisories (deliveries exhausted, messages terminated).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use switchyard_bus_client::bus::Bus;
use switchyard_bus_client::dead_letters::{ConsumerNames, DeadLetters};
use switchyard_kit::Shutdown;
use switchyard_kit::clock::unix_millis;

use crate::map::MapService;

/// Advisories kept.
const KEEP_ADVISORIES: usize = 200;

/// One consumer, as the console shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub service: String,
    /// The last position it is past (HTTP: its cursor; NATS: the last stream sequence
    /// delivered to it).
    pub position: Option<i64>,
    /// Events still to reach it.
    pub lag: Option<i64>,
    /// Delivered, not yet acknowledged (NATS).
    pub in_flight: Option<i64>,
    /// Events it deferred that wait to be delivered again.
    pub deferred: Option<i64>,
    pub dead_letters: Option<i64>,
    /// Why the bus could not say, when it could not.
    pub error: Option<String>,
}

impl ConsumerView {
    fn unknown(service: &str, why: String) -> ConsumerView {
        ConsumerView {
            service: service.to_string(),
            position: None,
            lag: None,
            in_flight: None,
            deferred: None,
            dead_letters: None,
            error: Some(why),
        }
    }
}

/// Every consumer of `services`, from `bus` (and the HTTP bus's ops listener).
pub async fn views(
    services: &[MapService],
    bus: &Bus,
    bus_ops: Option<&str>,
    http: &reqwest::Client,
) -> Vec<ConsumerView> {
    let consumers = services.iter().filter(|s| !s.receives.is_empty());
    match bus {
        Bus::Http(_) => {
            let Some(ops) = bus_ops else {
                return consumers
                    .map(|s| ConsumerView::unknown(&s.name, "EVENT_BUS_OPS_URL is not set".into()))
                    .collect();
            };
            let listed = async {
                http.get(format!("{ops}/subscribers"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Vec<Value>>()
                    .await
            }
            .await;
            let subscribers = match listed {
                Ok(list) => list,
                Err(e) => {
                    return consumers
                        .map(|s| ConsumerView::unknown(&s.name, format!("the bus: {e}")))
                        .collect();
                }
            };
            consumers
                .map(|s| {
                    let name = s.subscriber.as_deref().unwrap_or(&s.name);
                    match subscribers.iter().find(|v| v["subscriber"] == name) {
                        Some(v) => ConsumerView {
                            service: s.name.clone(),
                            position: v["position"].as_i64(),
                            lag: v["behind"].as_i64(),
                            in_flight: None,
                            deferred: v["parked"].as_i64(),
                            dead_letters: v["deadLetters"].as_i64(),
                            error: None,
                        },
                        None => {
                            ConsumerView::unknown(&s.name, "not a subscriber of the bus".into())
                        }
                    }
                })
                .collect()
        }
        Bus::Nats(nats) => {
            let mut out = Vec::new();
            for s in consumers {
                let Some(durable) = s.durable.as_deref() else {
                    continue;
                };
                out.push(match nats.consumer_state(durable).await {
                    Ok(Some(state)) => ConsumerView {
                        service: s.name.clone(),
                        position: i64::try_from(state.delivered).ok(),
                        lag: i64::try_from(state.pending).ok(),
                        in_flight: i64::try_from(state.ack_pending).ok(),
                        deferred: i64::try_from(state.deferred).ok(),
                        dead_letters: i64::try_from(state.dead_letters).ok(),
                        error: None,
                    },
                    Ok(None) => {
                        ConsumerView::unknown(&s.name, "its consumer does not exist yet".into())
                    }
                    Err(e) => ConsumerView::unknown(&s.name, e.to_string()),
                });
            }
            out
        }
    }
}

/// A consumer's dead letters at the bus (the console opens no service's database).
pub fn dead_letters(service: &MapService, bus: &Bus, bus_ops: Option<&str>) -> Option<DeadLetters> {
    let (subscriber, durable) = match (&service.subscriber, &service.durable) {
        (Some(s), Some(d)) => (s.clone(), d.clone()),
        (Some(s), None) => (s.clone(), s.clone()),
        (None, Some(d)) => (service.name.clone(), d.clone()),
        (None, None) => return None,
    };
    Some(DeadLetters {
        db: None,
        bus: bus.clone(),
        consumer: Some(ConsumerNames {
            subscriber,
            durable,
        }),
        bus_ops: bus_ops.map(str::to_string),
    })
}

/// JetStream's advisories about the app's stream (NATS only), the latest kept.
#[derive(Clone, Default)]
pub struct Advisories {
    kept: Arc<Mutex<VecDeque<Value>>>,
}

impl Advisories {
    /// Listens to JetStream's advisories of deliveries exhausted and messages terminated on
    /// the app's stream, on NATS (not the API audit ones its own calls cause).
    pub fn start(bus: &Bus, shutdown: &Shutdown) -> Advisories {
        let advisories = Advisories::default();
        let Bus::Nats(nats) = bus else {
            return advisories;
        };
        let client = nats.client().clone();
        let stream = nats.stream_name().to_string();
        let kept = advisories.clone();
        let stop = shutdown.background_token();
        shutdown.spawn("console-advisories", async move {
            let mut subscriptions = Vec::new();
            for kind in ["MAX_DELIVERIES", "MSG_TERMINATED"] {
                match client
                    .subscribe(format!("$JS.EVENT.ADVISORY.CONSUMER.{kind}.{stream}.*"))
                    .await
                {
                    Ok(s) => subscriptions.push(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "the console cannot listen to JetStream's advisories");
                        return;
                    }
                }
            }
            let mut subscription = futures_util::stream::select_all(subscriptions);
            loop {
                let message = tokio::select! {
                    m = subscription.next() => m,
                    _ = stop.cancelled() => return,
                };
                let Some(message) = message else { return };
                let Ok(mut body) = serde_json::from_slice::<Value>(&message.payload) else {
                    continue;
                };
                if body["stream"].as_str() != Some(stream.as_str()) {
                    continue;
                }
                body["subject"] = Value::String(message.subject.to_string());
                body["receivedAtMs"] = Value::from(unix_millis());
                kept.add(body);
            }
        });
        advisories
    }

    fn add(&self, advisory: Value) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == KEEP_ADVISORIES {
            kept.pop_front();
        }
        kept.push_back(advisory);
    }

    /// The latest advisories, newest first.
    pub fn latest(&self) -> Vec<Value> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}
