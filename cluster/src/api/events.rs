//! core/v1 Events through the API client, and what the agent reports about NetworkLogging.
//!
//! Posts are retried with exponential backoff on `429`, `5xx` and connection failures; a retry
//! of a post that did land gets `409 AlreadyExists` (Events carry client-chosen names, as
//! client-go's recorder names them) and counts as done. [`RateLimit`] bounds how many Events a
//! caller sends, so a storm never floods the API server.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use tokio::time::Instant;
use verdict_schema::Timestamp;

use super::crd::VALID_CONDITION;
use super::kinds::{Kind, LoggingObject};

/// GKE's component for NetworkLogging Events (seed 000: "network-logging-controller, NODE").
pub const NETWORK_LOGGING_COMPONENT: &str = "network-logging-controller";
/// The reason of the Warning Event an invalid NetworkLogging gets (GKE's).
pub const INVALID_NETWORK_LOGGING: &str = "InvalidNetworkLogging";

/// How one post ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Created,
    /// Worth trying again (429, 5xx, connection failure).
    Retry(String),
    /// Refused for good (other 4xx).
    Refused(String),
}

/// How a post is retried.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_attempts: 5,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

fn events_resource() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Event".into(),
        plural: "events".into(),
    }
}

/// POSTs one core/v1 Event (JSON, as the API reference defines it) to `namespace`, once.
pub async fn post_event(
    client: &kube::Client,
    namespace: &str,
    event: &serde_json::Value,
) -> PostOutcome {
    let object: DynamicObject = match serde_json::from_value(event.clone()) {
        Ok(o) => o,
        Err(e) => return PostOutcome::Refused(format!("not an object: {e}")),
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &events_resource());
    let created = tokio::time::timeout(
        Duration::from_secs(10),
        api.create(&PostParams::default(), &object),
    )
    .await;
    match created {
        Ok(Ok(_)) => PostOutcome::Created,
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => PostOutcome::Created,
        Ok(Err(kube::Error::Api(s))) if s.code == 429 || s.code >= 500 => {
            PostOutcome::Retry(format!("HTTP {}: {}", s.code, s.message))
        }
        Ok(Err(kube::Error::Api(s))) => {
            PostOutcome::Refused(format!("HTTP {}: {}", s.code, s.message))
        }
        Ok(Err(e)) => PostOutcome::Retry(e.to_string()),
        Err(_) => PostOutcome::Retry("timed out after 10s".into()),
    }
}

/// Posts with retries; `on_retry` is told about each failed attempt that will be retried.
pub async fn post_event_with_backoff(
    client: &kube::Client,
    namespace: &str,
    event: &serde_json::Value,
    backoff: Backoff,
    mut on_retry: impl FnMut(&str),
) -> PostOutcome {
    let mut wait = backoff.initial;
    let mut attempt = 1;
    loop {
        match post_event(client, namespace, event).await {
            PostOutcome::Retry(why) if attempt < backoff.max_attempts => {
                on_retry(&why);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(backoff.max);
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimit {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    pub fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second)
            .min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// RFC 3339 with whole seconds (what `metav1.Time` prints).
pub fn rfc3339_seconds(t: Timestamp) -> String {
    let (secs, _) = t.split();
    Timestamp::from_unix_nanos(secs.saturating_mul(1_000_000_000)).to_string()
}

/// The Warning Event GKE posts on an invalid NetworkLogging (seed 000): reason
/// `InvalidNetworkLogging`, from `network-logging-controller` on the node, GKE's message.
/// Events about a cluster-scoped object live in the `default` namespace (as `kubectl describe`
/// finds them).
pub(crate) fn invalid_network_logging_event(
    object: &LoggingObject,
    message: &str,
    node: &str,
    now: Timestamp,
) -> serde_json::Value {
    let ts = rfc3339_seconds(now);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("default.{:x}", now.unix_nanos()),
            "namespace": "default",
        },
        "involvedObject": {
            "apiVersion": verdict_schema::network_logging::API_VERSION,
            "kind": verdict_schema::network_logging::KIND,
            "name": verdict_schema::network_logging::NAME,
            "uid": object.uid,
            "resourceVersion": object.resource_version,
        },
        "reason": INVALID_NETWORK_LOGGING,
        "message": message,
        "type": "Warning",
        "source": {"component": NETWORK_LOGGING_COMPONENT, "host": node},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "reportingComponent": NETWORK_LOGGING_COMPONENT,
        "reportingInstance": node,
    })
}

/// Reports on the NetworkLogging object: the Warning Event when it is invalid, and its `Valid`
/// condition either way (a merge patch of the status subresource).
pub(crate) async fn report_network_logging(
    client: &kube::Client,
    node: &str,
    object: &LoggingObject,
) {
    let now = Timestamp::now();
    if let Err(message) = &object.parsed {
        let event = invalid_network_logging_event(object, message, node, now);
        let outcome =
            post_event_with_backoff(client, "default", &event, Backoff::default(), |why| {
                tracing::debug!(error = why, "InvalidNetworkLogging Event: retrying");
            })
            .await;
        if outcome != PostOutcome::Created {
            tracing::warn!(outcome = ?outcome, "the InvalidNetworkLogging Event was not posted");
        }
    }
    let (status, reason, message) = match &object.parsed {
        Ok(_) => ("True", "Valid", "the configuration is in force".to_owned()),
        Err(m) => ("False", INVALID_NETWORK_LOGGING, m.clone()),
    };
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": VALID_CONDITION,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": object.generation,
            "lastTransitionTime": rfc3339_seconds(now),
        }]}
    });
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &Kind::NetworkLogging.resource());
    if let Err(e) = api
        .patch_status(
            verdict_schema::network_logging::NAME,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(error = %e, "could not set the NetworkLogging status condition");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_admits_the_burst_then_the_rate() {
        let mut l = RateLimit::new(2.0, 3);
        assert_eq!((0..5).filter(|_| l.admit()).count(), 3);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(l.admit());
        assert!(!l.admit());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..10).filter(|_| l.admit()).count(),
            3,
            "never more than the burst"
        );
    }

    #[test]
    fn event_times_have_whole_seconds() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!(rfc3339_seconds(t), "2023-11-14T22:13:20Z");
    }
}
