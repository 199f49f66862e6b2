//! Where alerts go: Prometheus Alertmanager (API v2), webhooks (Alertmanager's webhook payload,
//! version 4) and Kafka topics (one JSON message per change, through the sinks' client). A receiver that cannot be reached is retried at the next evaluation with what it
//! missed (bounded); firing alerts are re-sent anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use verdict_schema::Timestamp;

use super::engine::{AlertEvent, Change};
use crate::config::alerts::{ReceiverConfig, ReceiverKind};
use crate::sinks::route::{Routed, TypedEntry};
use crate::sinks::sink::{BuildContext, Sink};
use crate::table::Table;

/// Events kept for a receiver that cannot be reached, at most (the oldest go first).
const MAX_PENDING: usize = 10_000;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    receiver: String,
    outcome: &'static str,
}

/// Notification counters: `verdict_collector_alert_notifications_total{receiver, outcome}`.
#[derive(Debug, Clone, Default)]
pub struct NotifyMetrics {
    notifications: Family<OutcomeLabels, Counter>,
}

impl NotifyMetrics {
    pub fn register(registry: &mut verdict_service::metrics::Registry) -> NotifyMetrics {
        let m = NotifyMetrics::default();
        registry.register(
            "verdict_collector_alert_notifications",
            "Alert notifications by receiver and outcome (sent, failed: retried, dropped: past the pending bound).",
            m.notifications.clone(),
        );
        m
    }

    fn count(&self, receiver: &str, outcome: &'static str, n: u64) {
        self.notifications
            .get_or_create(&OutcomeLabels {
                receiver: receiver.to_owned(),
                outcome,
            })
            .inc_by(n);
    }
}

enum Transport {
    Http(Box<Client<Https, Full<Bytes>>>),
    Sink(Option<Box<dyn Sink>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Http(_) => "Http",
            Transport::Sink(_) => "Sink",
        })
    }
}

#[derive(Debug)]
struct Receiver {
    config: ReceiverConfig,
    transport: Transport,
    pending: Vec<AlertEvent>,
}

/// Every configured receiver.
#[derive(Debug)]
pub struct Notifier {
    receivers: Vec<Receiver>,
    /// Set once the HTTP listener is bound (or from `alerts.external_url`).
    external_url: Arc<std::sync::OnceLock<String>>,
    resend: Duration,
    project: String,
    metrics: NotifyMetrics,
    build: Arc<BuildContext>,
}

fn https_client(ca_file: Option<&std::path::Path>) -> Result<Client<Https, Full<Bytes>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

impl Notifier {
    /// Builds the receivers (a sink receiver's client connects lazily, at its first send).
    pub fn new(
        receivers: &[ReceiverConfig],
        external_url: Arc<std::sync::OnceLock<String>>,
        resend: Duration,
        project: String,
        metrics: NotifyMetrics,
        build: BuildContext,
    ) -> Result<Notifier, String> {
        let mut out = Vec::new();
        for r in receivers {
            let transport = match r.kind {
                ReceiverKind::Alertmanager | ReceiverKind::Webhook => Transport::Http(Box::new(
                    https_client(r.ca_file.as_deref())
                        .map_err(|e| format!("alerts.receivers[{}]: {e}", r.name))?,
                )),
                ReceiverKind::Sink => Transport::Sink(None),
            };
            out.push(Receiver {
                config: r.clone(),
                transport,
                pending: Vec::new(),
            });
        }
        Ok(Notifier {
            receivers: out,
            external_url,
            resend,
            project,
            metrics,
            build: Arc::new(build),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    /// Sends `events` (and what each receiver still owes) to every receiver.
    pub async fn send(&mut self, events: &[AlertEvent]) {
        let now = Timestamp::now();
        let external = self.external_url.get().map_or("", String::as_str);
        for r in &mut self.receivers {
            for e in events {
                if r.config.rules.is_empty() || r.config.rules.contains(&e.alert.rule) {
                    r.pending.push(e.clone());
                }
            }
            if r.pending.len() > MAX_PENDING {
                let drop = r.pending.len() - MAX_PENDING;
                r.pending.drain(..drop);
                self.metrics.count(&r.config.name, "dropped", drop as u64);
                tracing::warn!(receiver = %r.config.name, dropped = drop, "alert receiver unreachable for long: dropping its oldest pending notifications");
            }
            if r.pending.is_empty() {
                continue;
            }
            let n = r.pending.len() as u64;
            let result = match &mut r.transport {
                Transport::Http(client) => {
                    let body = match r.config.kind {
                        ReceiverKind::Alertmanager => {
                            alertmanager_body(&r.pending, external, self.resend, now)
                        }
                        _ => webhook_body(&r.config.name, &r.pending, external, self.resend, now),
                    };
                    let url = match r.config.kind {
                        ReceiverKind::Alertmanager => {
                            format!("{}/api/v2/alerts", r.config.url.trim_end_matches('/'))
                        }
                        _ => r.config.url.clone(),
                    };
                    post(client, &url, &r.config, body).await
                }
                Transport::Sink(sink) => {
                    let send =
                        send_to_sink(sink, &r.config, &r.pending, &self.project, &self.build, now);
                    tokio::time::timeout(r.config.timeout, send)
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "{}: no answer within {:?}",
                                r.config.url, r.config.timeout
                            ))
                        })
                }
            };
            match result {
                Ok(()) => {
                    self.metrics.count(&r.config.name, "sent", n);
                    r.pending.clear();
                }
                Err(e) => {
                    self.metrics.count(&r.config.name, "failed", n);
                    tracing::warn!(receiver = %r.config.name, error = %e, pending = n, "alert receiver refused or unreachable; retrying at the next evaluation");
                }
            }
        }
    }
}

async fn post(
    client: &Client<Https, Full<Bytes>>,
    url: &str,
    config: &ReceiverConfig,
    body: Value,
) -> Result<(), String> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("verdict-collector/", env!("CARGO_PKG_VERSION")),
        );
    let token = match (&config.bearer_token, &config.bearer_token_file) {
        (Some(t), _) => Some(t.expose().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        _ => None,
    };
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(config.timeout, async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        // The answer's body is read up to 64 KiB, for the error message.
        let body = http_body_util::Limited::new(resp.into_body(), 64 << 10)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ))
        }
    })
    .await;
    answer.unwrap_or_else(|_| Err(format!("{url}: no answer within {:?}", config.timeout)))
}

fn generator_url(external: &str, id: &str) -> String {
    format!("{}/v1/alerts/{id}", external.trim_end_matches('/'))
}

/// The annotations sent with an alert: its summary, the records' filter, the command that
/// lists them, and what enrichment found (top sources, ports, destinations).
fn annotations(e: &AlertEvent) -> BTreeMap<String, String> {
    let a = &e.alert;
    let mut out = a.annotations.clone();
    out.insert("summary".into(), a.summary.clone());
    if !a.filter.is_empty() {
        out.insert("filter".into(), a.filter.clone());
        out.insert(
            "logs_command".into(),
            format!(
                "verdict logs read '{}' --freshness 15m",
                a.filter.replace('\'', "'\\''")
            ),
        );
    }
    out
}

/// When Alertmanager should consider the alert over: its resolve time, or (firing) four
/// re-send intervals from now unless it is sent again.
fn ends_at(e: &AlertEvent, resend: Duration, now: Timestamp) -> Timestamp {
    match (e.change, e.alert.resolved_at) {
        (Change::Resolved, Some(t)) => t,
        _ => Timestamp::from_unix_nanos(now.unix_nanos() + 4 * resend.as_nanos() as i64),
    }
}

/// `POST /api/v2/alerts`: a list of postable alerts.
fn alertmanager_body(
    events: &[AlertEvent],
    external: &str,
    resend: Duration,
    now: Timestamp,
) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                json!({
                    "labels": e.alert.labels,
                    "annotations": annotations(e),
                    "startsAt": e.alert.started_at,
                    "endsAt": ends_at(e, resend, now),
                    "generatorURL": generator_url(external, &e.alert.id),
                })
            })
            .collect(),
    )
}

/// Alertmanager's webhook payload (version 4), one message for all `events`.
fn webhook_body(
    receiver: &str,
    events: &[AlertEvent],
    external: &str,
    resend: Duration,
    now: Timestamp,
) -> Value {
    let alerts: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "status": if e.change == Change::Resolved { "resolved" } else { "firing" },
                "labels": e.alert.labels,
                "annotations": annotations(e),
                "startsAt": e.alert.started_at,
                "endsAt": ends_at(e, resend, now),
                "generatorURL": generator_url(external, &e.alert.id),
                "fingerprint": e.alert.id,
            })
        })
        .collect();
    let common = |maps: Vec<BTreeMap<String, String>>| {
        let mut it = maps.into_iter();
        let mut first = it.next().unwrap_or_default();
        for m in it {
            first.retain(|k, v| m.get(k) == Some(v));
        }
        first
    };
    let common_labels = common(events.iter().map(|e| e.alert.labels.clone()).collect());
    let common_annotations = common(events.iter().map(annotations).collect());
    let firing = events.iter().any(|e| e.change != Change::Resolved);
    let group_labels: BTreeMap<&str, &str> = common_labels
        .get("alertname")
        .map(|n| ("alertname", n.as_str()))
        .into_iter()
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", group_labels.get("alertname").unwrap_or(&"")),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external,
        "alerts": alerts,
    })
}

/// An alert change as a LogEntry-shaped message (`logName …/logs/verdict-alerts`).
pub fn alert_entry(e: &AlertEvent, project: &str, now: Timestamp) -> Value {
    let severity = match e.alert.severity.as_str() {
        "critical" => "CRITICAL",
        "warning" => "WARNING",
        _ => "INFO",
    };
    let mut labels = e.alert.labels.clone();
    labels.insert("alert_id".into(), e.alert.id.clone());
    json!({
        "logName": format!("projects/{project}/logs/verdict-alerts"),
        "timestamp": now,
        "insertId": format!("{}-{}-{}", e.alert.id, change_label(e.change), now.unix_nanos()),
        "severity": severity,
        "labels": labels,
        "jsonPayload": {"change": change_label(e.change), "alert": e.alert},
    })
}

pub fn change_label(c: Change) -> &'static str {
    match c {
        Change::Fired => "fired",
        Change::Resent => "resent",
        Change::Resolved => "resolved",
    }
}

async fn send_to_sink(
    sink: &mut Option<Box<dyn Sink>>,
    config: &ReceiverConfig,
    events: &[AlertEvent],
    project: &str,
    build: &BuildContext,
    now: Timestamp,
) -> Result<(), String> {
    if sink.is_none() {
        let (definition, sections) = config.sink_definition();
        #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
        let mut destination =
            crate::sinks::registry::parse(&definition, sections).map_err(|p| {
                p.into_iter()
                    .map(|(s, m)| format!("{s}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        // Keyed by the alert (a field of alert entries only, so set here rather than through
        // `key`, which names flow fields): one alert's changes stay in order on one partition.
        #[cfg(feature = "kafka")]
        if let crate::sinks::registry::DestinationConfig::Kafka(k) = &mut destination {
            k.settings.key = "labels.alert_id".to_owned();
        }
        *sink = Some(
            destination
                .build(&definition, build)
                .await
                .map_err(|e| e.chain())?,
        );
    }
    let client = sink.as_mut().expect("built above");
    let routed: Vec<Routed> = events
        .iter()
        .map(|e| {
            let entry = alert_entry(e, project, now);
            Routed {
                lsn: 0,
                // Not a stored record: streaming destinations read only the entry and its JSON.
                table: Table::Flows,
                insert_id: entry["insertId"].as_str().unwrap_or_default().to_owned(),
                timestamp_nanos: now.unix_nanos(),
                json: Bytes::from(entry.to_string()),
                entry,
                typed: TypedEntry::Alert,
            }
        })
        .collect();
    let refs: Vec<&Routed> = routed.iter().collect();
    let sent = client.send(&refs).await;
    let broken = client.broken();
    let refused = match sent {
        Ok(r) => r,
        Err(e) => {
            if broken {
                *sink = None;
            }
            return Err(e.chain());
        }
    };
    if let Some(r) = refused.first() {
        return Err(format!(
            "{} of {} alert messages refused: {}",
            refused.len(),
            refs.len(),
            r.error
        ));
    }
    Ok(())
}
