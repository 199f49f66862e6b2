//! Kubernetes Events for dropped packets (kube-iptables-tailer's output, seed 004): a
//! `core/v1` Event with reason `PacketDrop` on each affected pod, e.g. "Packet dropped when
//! receiving traffic from example-service-2 (IP: 22.222.22.222)".
//!
//! A small client: `POST /api/v1/namespaces/{namespace}/events` with a bearer token, over
//! https (the service account's CA) or plain http. Every Event has a client-chosen name
//! (`{pod}.{unix nanos in hex}`, as client-go's recorder names them), so a retry of a post
//! that did succeed gets `409 AlreadyExists` and counts as done. `429`, `5xx` and connection
//! errors are retried with exponential backoff; posts beyond the rate limit (a token bucket) are
//! dropped and counted, so a storm of drops never floods the API server.

use std::net::IpAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use verdict_schema::Timestamp;

use crate::config::{EventsConfig, SERVICE_ACCOUNT_DIR, Secret};
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

fn rfc3339_seconds(t: Timestamp) -> String {
    let (secs, _) = t.split();
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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

/// How one post ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Created,
    /// Worth trying again (429, 5xx, connection failure).
    Retry(String),
    /// Refused for good (other 4xx).
    Refused(String),
}

/// The API server connection settings.
#[derive(Debug, Clone)]
pub struct ApiClient {
    https: bool,
    host: String,
    port: u16,
    token: Option<Secret>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ApiClient {
    pub fn new(config: &EventsConfig) -> Result<Self> {
        let url = &config.api_server;
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(Error::config(
                "events-api-server",
                format!("{url:?} is not an http(s) URL"),
            ));
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && p.parse::<u16>().is_ok() => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse().unwrap_or(443),
            ),
            _ => (
                authority.trim_matches(['[', ']']).to_owned(),
                if https { 443 } else { 80 },
            ),
        };
        let sa = std::path::Path::new(SERVICE_ACCOUNT_DIR);
        let token_file = config.token_file.clone().or_else(|| {
            let p = sa.join("token");
            p.exists().then_some(p)
        });
        let token = match token_file {
            Some(p) => Some(Secret::new(
                std::fs::read_to_string(&p)
                    .map_err(|e| Error::io(&p, e))?
                    .trim()
                    .to_owned(),
            )),
            None => None,
        };
        let tls = if https {
            let ca = config.ca_file.clone().unwrap_or_else(|| sa.join("ca.crt"));
            let pem = std::fs::read(&ca).map_err(|e| Error::io(&ca, e))?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject as _;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| Error::config("events-ca", format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::config("events-ca", format!("{}: {e}", ca.display())))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let c = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::KubernetesApi(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(c))
        } else {
            None
        };
        Ok(ApiClient {
            https,
            host,
            port,
            token,
            tls,
        })
    }

    /// POSTs one Event.
    pub async fn post_event(&self, namespace: &str, event: &serde_json::Value) -> PostOutcome {
        let body = serde_json::to_vec(event).unwrap_or_default();
        let path = format!("/api/v1/namespaces/{namespace}/events");
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.post(&path, body)).await
        {
            Ok(Ok((status, text))) => match status {
                200 | 201 | 202 | 409 => PostOutcome::Created,
                429 | 500..=599 => PostOutcome::Retry(format!("HTTP {status}: {text}")),
                _ => PostOutcome::Refused(format!("HTTP {status}: {text}")),
            },
            Ok(Err(e)) => PostOutcome::Retry(e),
            Err(_) => PostOutcome::Retry("timed out after 10s".into()),
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> std::result::Result<(u16, String), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        let authority = if self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = hyper::Request::post(path)
            .header("host", authority)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", COMPONENT);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {}", t.expose()));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        if let (true, Some(tls)) = (self.https, &self.tls) {
            let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| format!("server name {}: {e}", self.host))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(hyper_util::rt::TokioIo::new(stream), req).await
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), req).await
        }
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<Full<Bytes>>,
) -> std::result::Result<(u16, String), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("HTTP body: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((
        status,
        String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    ))
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

/// Posts the Events of `notices` until the channel closes.
pub async fn run(
    mut notices: mpsc::Receiver<DropNotice>,
    client: ApiClient,
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
            match client.post_event(&n.pod.namespace, &event).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_admits_the_burst_then_the_rate() {
        let mut l = RateLimit::new(2.0, 3);
        assert_eq!((0..5).filter(|_| l.admit()).count(), 3);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(l.admit());
        assert!(!l.admit());
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert_eq!(
            (0..10).filter(|_| l.admit()).count(),
            3,
            "never more than the burst"
        );
    }
}
