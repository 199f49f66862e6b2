//! Kubernetes Events for dropped packets (kube-iptables-tailer's output, seed 004): a
//! `core/v1` Event with reason `PacketDrop` on each affected pod, e.g. "Packet dropped when
//! receiving traffic from example-service-2 (IP: 22.222.22.222)".
//!
//! Posted through the Kubernetes API client (in-cluster configuration with the service
//! account's token, re-read as kubelet rotates it; or a kubeconfig). Every Event has a
//! client-chosen name (`{pod}.{unix nanos in hex}`, as client-go's recorder names them), so a
//! retry of a post that did succeed gets `409 AlreadyExists` and counts as done. `429`, `5xx`
//! and connection errors are retried here with exponential backoff (and counted); posts beyond
//! the rate limit (a token bucket) are dropped and counted, so a storm of drops never floods the
//! API server.

use std::sync::Arc;

use tokio::sync::mpsc;
use verdict_cluster::api::events::{PostOutcome, RateLimit, post_event, rfc3339_seconds};

use crate::config::EventsConfig;
use crate::error::{Error, Result};
use crate::iptables_input::DropNotice;
use crate::metrics::Metrics;
use crate::pod_directory::ReverseDns;

/// The component name Events carry (`source.component`, `reportingComponent`).
pub const COMPONENT: &str = "verdict-shipper";

/// The Event's message.
pub fn message(n: &DropNotice, peer: &str) -> String {
    let (verb, dir) = if n.receiving {
        ("receiving", "from")
    } else {
        ("sending", "to")
    };
    format!(
        "Packet dropped when {verb} traffic {dir} {peer} (IP: {})",
        n.peer_ip
    )
}

/// The `core/v1` Event object for a notice (Kubernetes API reference, Event v1 core).
pub fn event_object(n: &DropNotice, peer: &str, node: &str) -> serde_json::Value {
    let ts = rfc3339_seconds(n.timestamp);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{}.{:x}", n.pod.name, n.timestamp.unix_nanos()),
            "namespace": n.pod.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": n.pod.name,
            "namespace": n.pod.namespace,
        },
        "reason": "PacketDrop",
        "message": message(n, peer),
        "type": "Warning",
        "source": {"component": COMPONENT, "host": node},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
    })
}

/// The API client Events are posted with. kube's own retries are off: this module retries
/// (and counts retries) itself.
pub async fn client(options: &verdict_cluster::api::ApiOptions) -> Result<kube::Client> {
    let mut config = verdict_cluster::api::config(options)
        .await
        .map_err(|e| Error::KubernetesApi(e.to_string()))?;
    config.default_retry = false;
    verdict_cluster::api::client_for(config).map_err(|e| Error::KubernetesApi(e.to_string()))
}

/// Posts the Events of `notices` until the channel closes.
pub async fn run(
    mut notices: mpsc::Receiver<DropNotice>,
    client: kube::Client,
    config: EventsConfig,
    node: String,
    dns: Option<Arc<ReverseDns>>,
    metrics: Arc<Metrics>,
) {
    let mut limit = RateLimit::new(config.per_second, config.burst);
    let m = &metrics.events;
    while let Some(n) = notices.recv().await {
        if !limit.admit() {
            m.dropped_rate_limit.inc();
            continue;
        }
        let peer = match &n.peer_name {
            Some(name) => name.clone(),
            None => match &dns {
                Some(d) => d
                    .lookup(n.peer_ip)
                    .await
                    .unwrap_or_else(|| "unknown".into()),
                None => "unknown".into(),
            },
        };
        let event = event_object(&n, &peer, &node);
        let mut wait = config.initial_backoff;
        for attempt in 1..=config.max_attempts {
            match post_event(&client, &n.pod.namespace, &event).await {
                PostOutcome::Created => {
                    m.posted.inc();
                    break;
                }
                PostOutcome::Refused(why) => {
                    m.dropped_api_error.inc();
                    tracing::warn!(
                        "Event for pod {}/{} refused: {why}",
                        n.pod.namespace,
                        n.pod.name
                    );
                    break;
                }
                PostOutcome::Retry(why) if attempt == config.max_attempts => {
                    m.dropped_api_error.inc();
                    tracing::warn!(
                        "Event for pod {}/{} dropped after {attempt} attempts: {why}",
                        n.pod.namespace,
                        n.pod.name
                    );
                }
                PostOutcome::Retry(why) => {
                    m.retries.inc();
                    tracing::debug!("Event post failed (retry in {wait:?}): {why}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(config.max_backoff);
                }
            }
        }
    }
}
