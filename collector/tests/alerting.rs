//! Deny-spike alerting end to end: denied flows streamed to a collector fire an alert that a
//! real Prometheus Alertmanager (Debian `prometheus-alertmanager`, on loopback) receives and
//! routes to a webhook, that is re-sent while it lasts and resolves after; the collector's own
//! webhook receiver, `/v1/alerts`, the history, a restart (no second fire, no missed resolve),
//! the log-based metrics, and receivers that fail.

#[path = "support/sink_servers.rs"]
mod sink_servers;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use sink_servers::free_port;
use support::{Served, batch, eventually, http_get, json_record, metric, require, tempdir};
use verdict_collector::Config;
use verdict_collector::config::alerts::{ReceiverConfig, ReceiverKind, RuleConfig, RuleKind};
use verdict_schema::proto::v1;

/// What a webhook endpoint received, by path.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<(String, Value)>>>);

impl Hooks {
    fn posts(&self, path: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The `status` of every alert posted to `path` for `alertname`.
    fn statuses(&self, path: &str, alertname: &str) -> Vec<String> {
        self.posts(path)
            .iter()
            .flat_map(|p| p["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["labels"]["alertname"] == alertname)
            .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// A webhook receiver on loopback: records every JSON POST; `/fail` answers 500.
async fn start_hooks() -> (Hooks, SocketAddr) {
    let hooks = Hooks::default();
    async fn record(
        State(h): State<Hooks>,
        uri: axum::http::Uri,
        body: String,
    ) -> axum::http::StatusCode {
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        h.0.lock().unwrap().push((uri.path().to_owned(), v));
        if uri.path() == "/fail" {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            axum::http::StatusCode::OK
        }
    }
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hooks, addr)
}

struct Alertmanager {
    child: Child,
    port: u16,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Alertmanager routing every alert to `webhook` quickly (group wait 0s, interval 1s).
fn start_alertmanager(dir: &Path, webhook: &str) -> Option<Alertmanager> {
    let bin = which("prometheus-alertmanager").or_else(|| which("alertmanager"));
    if !require(
        bin.is_some(),
        "Prometheus Alertmanager (Debian package prometheus-alertmanager)",
    ) {
        return None;
    }
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, dest_namespace]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(bin.unwrap())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "alertmanager did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Alertmanager { child, port })
}

fn which(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A denied flow into `ns` from `src` to `port`, standing for `count` attempts, stamped now.
fn deny_json(ns: &str, src: &str, port: u16, count: u64) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!(
        r#"{{"connection":{{"src_ip":"{src}","dest_ip":"10.1.0.7","src_port":40000,"dest_port":{port},"protocol":"tcp","direction":"ingress"}},"disposition":"deny","src":{{"instance":"{src}"}},"dest":{{"pod_name":"api-0","pod_namespace":"{ns}","namespace":"{ns}","workload_name":"api","workload_kind":"StatefulSet"}},"count":{count},"node_name":"node-a","timestamp":"{now}"}}"#
    )
}

fn flood_rule() -> RuleConfig {
    let mut r = RuleConfig::new("DenyFlood", RuleKind::Threshold);
    r.rate = Some(20.0);
    r.window = Duration::from_secs(3);
    r.keep_firing_for = Duration::from_secs(1);
    r
}

fn alerting_config(dir: &Path, receivers: Vec<ReceiverConfig>) -> Config {
    let mut c = support::config(dir);
    c.alerts.evaluation_interval = Duration::from_millis(200);
    c.alerts.resend_interval = Duration::from_secs(1);
    c.alerts.rules = vec![flood_rule()];
    c.alerts.receivers = receivers;
    c
}

fn receiver(name: &str, kind: ReceiverKind, url: String) -> ReceiverConfig {
    ReceiverConfig {
        name: name.into(),
        kind,
        url,
        bearer_token_file: None,
        bearer_token: None,
        ca_file: None,
        timeout: Duration::from_secs(5),
        rules: Vec::new(),
        kafka: None,
    }
}

/// Streams `seconds` of denies into `ns` (about 100 attempts/s from two sources) on `stream`,
/// from sequence `*seq`.
async fn flood(stream: &mut support::Stream, ns: &str, seconds: u64, seq: &mut u64) {
    for _ in 0..seconds * 5 {
        let mut records = Vec::new();
        for (src, count) in [("10.9.9.9", 15), ("10.9.9.8", 5)] {
            *seq += 1;
            records.push(json_record(
                *seq,
                v1::LogId::PolicyAction,
                &deny_json(ns, src, 5432, count),
            ));
        }
        let r = stream.call(&batch("node-a", "src-1", *seq, records)).await;
        assert!(r.rejection.is_none(), "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET as HTTP/1.0, so the answer is never chunked (Prometheus chunks larger bodies).
async fn get_json(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = out.split_once("\r\n\r\n").map_or(out.as_str(), |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body:.300}"))
}

async fn am_alerts(port: u16) -> Vec<Value> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    get_json(addr, "/api/v2/alerts?active=true")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deny_flood_fires_in_alertmanager_is_resent_and_resolves() {
    let (_t, dir) = tempdir();
    let (hooks, hook_addr) = start_hooks().await;
    let Some(am) = start_alertmanager(&dir, &format!("http://{hook_addr}/am")) else {
        return;
    };
    let config = alerting_config(
        &dir,
        vec![
            receiver(
                "am",
                ReceiverKind::Alertmanager,
                format!("http://127.0.0.1:{}", am.port),
            ),
            receiver(
                "hook",
                ReceiverKind::Webhook,
                format!("http://{hook_addr}/direct"),
            ),
        ],
    );
    let served = Served::start(config).await;
    let mut stream = served.stream().await;
    let mut seq = 0;
    flood(&mut stream, "shop", 3, &mut seq).await;

    // Fired: the collector lists it, Alertmanager holds it, and routes it to its webhook.
    let addr = served.http;
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = get_json(addr, "/v1/alerts").await;
        if listed["alerts"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = listed["alerts"][0].clone();
    assert_eq!(alert["rule"], "DenyFlood", "{listed}");
    assert_eq!(alert["labels"]["dest_namespace"], "shop");
    assert_eq!(alert["status"], "firing");
    let id = alert["id"].as_str().unwrap().to_owned();
    // The spike's top sources come from the lake, heaviest first.
    let top = alert["annotations"]["top_sources"]
        .as_str()
        .unwrap_or_default();
    assert!(top.starts_with("10.9.9.9 ("), "{alert}");
    assert!(top.contains("10.9.9.8 ("), "{alert}");
    assert!(
        alert["annotations"]["top_ports"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tcp/5432 ("),
        "{alert}"
    );
    let one = get_json(addr, &format!("/v1/alerts/{id}")).await;
    assert_eq!(one["id"], id.as_str());

    let mut am_list = Vec::new();
    for _ in 0..100 {
        am_list = am_alerts(am.port).await;
        if !am_list.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(am_list.len(), 1, "{am_list:?}");
    let a = &am_list[0];
    assert_eq!(a["labels"]["alertname"], "DenyFlood");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["labels"]["dest_namespace"], "shop");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("denied connections/s to namespace shop"),
        "{a}"
    );
    assert!(
        a["annotations"]["top_sources"]
            .as_str()
            .unwrap()
            .contains("10.9.9.9")
    );
    assert_eq!(
        a["annotations"]["filter"],
        "jsonPayload.disposition=\"deny\" AND jsonPayload.dest.pod_namespace=\"shop\""
    );
    assert_eq!(
        a["generatorURL"],
        format!("http://{addr}/v1/alerts/{id}").as_str()
    );
    eventually(
        Duration::from_secs(10),
        "Alertmanager's webhook notification",
        || {
            hooks
                .statuses("/am", "DenyFlood")
                .contains(&"firing".to_owned())
        },
    )
    .await;

    // Re-sent while it lasts (resend_interval 1s), with the same start.
    flood(&mut stream, "shop", 3, &mut seq).await;
    let direct = hooks.posts("/direct");
    let firing: Vec<&Value> = direct.iter().filter(|p| p["status"] == "firing").collect();
    assert!(firing.len() >= 2, "fired then re-sent: {direct:?}");
    assert_eq!(firing[0]["version"], "4");
    assert_eq!(firing[0]["receiver"], "hook");
    assert_eq!(firing[0]["groupLabels"]["alertname"], "DenyFlood");
    assert_eq!(
        firing[0]["alerts"][0]["startsAt"],
        firing.last().unwrap()["alerts"][0]["startsAt"]
    );
    assert_eq!(firing[0]["alerts"][0]["fingerprint"], id.as_str());

    // The flood stops: resolved (window 3s, then 1s under the clear level).
    eventually(
        Duration::from_secs(15),
        "the resolve at the direct webhook",
        || {
            hooks
                .statuses("/direct", "DenyFlood")
                .contains(&"resolved".to_owned())
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "Alertmanager's resolved notification",
        || {
            hooks
                .statuses("/am", "DenyFlood")
                .contains(&"resolved".to_owned())
        },
    )
    .await;
    assert!(am_alerts(am.port).await.is_empty());
    assert_eq!(
        get_json(addr, "/v1/alerts").await["alerts"],
        serde_json::json!([])
    );
    let history = get_json(addr, "/v1/alerts/history").await;
    let changes: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["resolved", "fired"], "newest first: {history}");
    let m = served.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"verdict_collector_alert_changes_total{rule="DenyFlood",change="fired"}"#
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &m,
            r#"verdict_collector_alert_notifications_total{receiver="am",outcome="sent"}"#
        )
        .unwrap()
            >= 3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"verdict_collector_alerts_firing{rule="DenyFlood"}"#),
        None
    );
    drop(stream);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_keeps_a_firing_alert_without_firing_it_again_and_still_resolves_it() {
    let (_t, dir) = tempdir();
    let mut config = alerting_config(&dir, Vec::new());
    // Long enough to restart within it.
    config.alerts.rules[0].keep_firing_for = Duration::from_secs(5);
    let served = Served::start(config.clone()).await;
    let mut stream = served.stream().await;
    let mut seq = 0;
    flood(&mut stream, "shop", 2, &mut seq).await;
    eventually(Duration::from_secs(10), "the alert", || {
        !served.collector.alerts().firing().is_empty()
    })
    .await;
    let before = served.collector.alerts().firing()[0].clone();
    drop(stream);
    served.stop().await;

    let served = Served::start(config).await;
    // Firing at once, from the history: the same alert, its start unchanged.
    let firing = served.collector.alerts().firing();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].id, before.id);
    assert_eq!(firing[0].started_at, before.started_at);
    let mut stream = served.stream().await;
    // Still flooding after the restart: the windows were rebuilt from the lake too, so it is
    // kept (re-sent), not resolved and fired anew.
    flood(&mut stream, "shop", 2, &mut seq).await;
    assert_eq!(served.collector.alerts().firing().len(), 1);
    eventually(
        Duration::from_secs(15),
        "the resolve after the restart",
        || served.collector.alerts().firing().is_empty(),
    )
    .await;
    let history = served.collector.alerts().history(10).unwrap();
    let changes: Vec<&str> = history.iter().map(|e| e.change.as_str()).collect();
    assert_eq!(
        changes,
        ["resolved", "fired"],
        "one fire, one resolve: {history:?}"
    );
    drop(stream);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_based_metrics_count_connections_and_fold_past_the_cap() {
    let (_t, dir) = tempdir();
    let mut config = support::config(&dir);
    config.alerts.metrics.max_series = 2;
    config.alerts.evaluation_interval = Duration::from_millis(200);
    let served = Served::start(config).await;
    let mut stream = served.stream().await;
    let mut records = Vec::new();
    for (i, ns) in ["a", "a", "b", "c", "d"].iter().enumerate() {
        records.push(json_record(
            i as u64 + 1,
            v1::LogId::PolicyAction,
            &deny_json(ns, "10.0.0.1", 80, 7),
        ));
    }
    records.push(json_record(6, v1::LogId::PolicyActionLoss, &loss_json()));
    let r = stream.call(&batch("node-a", "s", 1, records)).await;
    assert!(r.rejection.is_none(), "{r:?}");
    let series = r#"verdict_flow_connections_total{disposition="deny",direction="ingress",src_namespace="",dest_namespace="a"}"#;
    let mut m = String::new();
    for _ in 0..50 {
        m = served.metrics().await;
        if metric(&m, series).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&m, series), Some(14.0), "{m}");
    assert_eq!(metric(&m, &series.replace("\"a\"", "\"b\"")), Some(7.0));
    // c and d are past the cap of two series: counted under "other".
    assert_eq!(
        metric(
            &m,
            r#"verdict_flow_connections_total{disposition="other",direction="other",src_namespace="other",dest_namespace="other"}"#
        ),
        Some(14.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "verdict_flow_metric_series_folded_total"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, &series.replace("connections", "records")),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"verdict_flow_lost_connections_total{reason="rate_limit"}"#
        ),
        Some(9.0)
    );
    let mut m = String::new();
    for _ in 0..50 {
        m = served.metrics().await;
        if m.contains("verdict_collector_node_last_record_timestamp_seconds{node=\"node-a\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = metric(
        &m,
        r#"verdict_collector_node_last_record_timestamp_seconds{node="node-a"}"#,
    )
    .expect("node series");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - last).abs() < 30.0, "{last} vs {now}");
    drop(stream);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_unreachable_receiver_is_retried_and_never_slows_ingest() {
    let (_t, dir) = tempdir();
    let (hooks, hook_addr) = start_hooks().await;
    let dead = free_port();
    let config = alerting_config(
        &dir,
        vec![
            receiver(
                "fails",
                ReceiverKind::Webhook,
                format!("http://{hook_addr}/fail"),
            ),
            receiver(
                "dead",
                ReceiverKind::Alertmanager,
                format!("http://127.0.0.1:{dead}"),
            ),
            receiver(
                "ok",
                ReceiverKind::Webhook,
                format!("http://{hook_addr}/ok"),
            ),
        ],
    );
    let served = Served::start(config).await;
    let mut stream = served.stream().await;
    let mut seq = 0;
    let started = std::time::Instant::now();
    flood(&mut stream, "shop", 2, &mut seq).await;
    // Ten batches, each acknowledged as it came (flood() waits 200 ms between them).
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(10),
        "the healthy receiver's notification",
        || {
            hooks
                .statuses("/ok", "DenyFlood")
                .contains(&"firing".to_owned())
        },
    )
    .await;
    // The failing receiver is asked again at each evaluation.
    eventually(
        Duration::from_secs(10),
        "retries of the failing receiver",
        || hooks.posts("/fail").len() >= 3,
    )
    .await;
    let m = served.metrics().await;
    assert!(
        metric(
            &m,
            r#"verdict_collector_alert_notifications_total{receiver="fails",outcome="failed"}"#
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        metric(
            &m,
            r#"verdict_collector_alert_notifications_total{receiver="dead",outcome="failed"}"#
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &m,
            r#"verdict_collector_alert_notifications_total{receiver="ok",outcome="sent"}"#
        )
        .unwrap()
            >= 1.0
    );
    drop(stream);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_api_refuses_bad_requests_with_clear_errors() {
    let (_t, dir) = tempdir();
    let served = Served::start(support::config(&dir)).await;
    let body = http_get(served.http, "/v1/alerts/not-an-id").await;
    assert!(
        body.contains("NOT_FOUND") && body.contains("16 hex digits"),
        "{body}"
    );
    let body = http_get(served.http, "/v1/alerts/0123456789abcdef").await;
    assert!(body.contains("NOT_FOUND"), "{body}");
    let body = http_get(served.http, "/v1/alerts/history?limit=lots").await;
    assert!(body.to_lowercase().contains("limit"), "{body}");
    let body = http_get(
        served.http,
        "/v1/alerts/history?limit=99999999999999999999999",
    )
    .await;
    assert!(body.to_lowercase().contains("limit"), "{body}");
    // And the service is still up.
    let ok = get_json(served.http, "/v1/alerts").await;
    assert_eq!(ok["alerts"], serde_json::json!([]));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alert_changes_reach_a_kafka_topic_as_log_entries() {
    let Some(broker) = sink_servers::start_tansu() else {
        return;
    };
    let (_t, dir) = tempdir();
    let config = alerting_config(
        &dir,
        vec![receiver(
            "topic",
            ReceiverKind::Sink,
            format!("kafka://127.0.0.1:{}/verdict-alerts", broker.port),
        )],
    );
    let served = Served::start(config).await;
    let mut stream = served.stream().await;
    let mut seq = 0;
    flood(&mut stream, "payments", 2, &mut seq).await;
    eventually(Duration::from_secs(20), "the resolve", || {
        served
            .collector
            .alerts()
            .history(10)
            .unwrap()
            .first()
            .is_some_and(|e| e.change == "resolved")
    })
    .await;
    let got = tokio::task::spawn_blocking(move || {
        sink_servers::kafka_read(broker.port, "verdict-alerts", 100, Duration::from_secs(8))
    })
    .await
    .unwrap();
    // Keyed by the alert: its changes are in one partition, in order.
    let mut got = got;
    got.sort_by_key(|m| m["offset"].as_i64());
    assert!(
        got.iter()
            .all(|m| m["key"] == m["value"]["jsonPayload"]["alert"]["id"]),
        "{got:?}"
    );
    assert!(got.iter().all(|m| m["partition"] == got[0]["partition"]));
    let changes: Vec<&str> = got
        .iter()
        .map(|m| m["value"]["jsonPayload"]["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes.first(), Some(&"fired"), "{got:?}");
    assert_eq!(changes.last(), Some(&"resolved"), "{got:?}");
    let v = &got[0]["value"];
    assert_eq!(v["logName"], "projects/verdict-local/logs/verdict-alerts");
    assert_eq!(v["severity"], "WARNING");
    assert_eq!(v["labels"]["dest_namespace"], "payments");
    assert_eq!(v["jsonPayload"]["alert"]["rule"], "DenyFlood");
    assert!(
        got.iter()
            .all(|m| m["headers"]["insertId"] == m["value"]["insertId"])
    );
    drop(stream);
    served.stop().await;
}

#[test]
fn a_sink_receiver_is_checked_like_a_sink() {
    let (_t, dir) = tempdir();
    let mut typo = receiver(
        "topic",
        ReceiverKind::Sink,
        "kafka://127.0.0.1:9092/alerts".into(),
    );
    typo.kafka = Some(toml::from_str("compresion = \"lz4\"").unwrap());
    let pubsub = receiver(
        "pubsub",
        ReceiverKind::Sink,
        "pubsub://projects/p/topics/t".into(),
    );
    let mut http = receiver(
        "am",
        ReceiverKind::Alertmanager,
        "http://127.0.0.1:9093".into(),
    );
    http.kafka = Some(toml::from_str("compression = \"lz4\"").unwrap());
    let config = alerting_config(&dir, vec![typo, pubsub, http]);
    let problems: Vec<String> = config
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("alerts.receivers[topic].kafka") && p.contains("compresion")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("alerts.receivers[pubsub].url") && p.contains("not supported")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("alerts.receivers[am].kafka")),
        "{problems:?}"
    );
}

/// A real Prometheus (Debian `prometheus`) scraping the collector every second and evaluating
/// the chart's rule file (deploy/helm/verdict/rules/deny-spikes.yaml).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_scrapes_the_log_based_metrics_and_evaluates_the_shipped_rules() {
    let (_t, dir) = tempdir();
    let mut config = support::config(&dir);
    config.alerts.evaluation_interval = Duration::from_millis(200);
    let served = Served::start(config).await;
    let Some((prometheus, prom)) = start_prometheus(&dir, served.http).await else {
        served.stop().await;
        return;
    };

    // Denies into "shop" for a few seconds, and a loss marker.
    let mut stream = served.stream().await;
    send_loss_marker(&mut stream).await;
    let mut seq = 0;
    let query = |q: &str| {
        format!(
            "/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace(' ', "%20")
                .replace(':', "%3A")
        )
    };
    let mut denied = Value::Null;
    let mut alerts = Value::Null;
    for _ in 0..40 {
        flood(&mut stream, "shop", 1, &mut seq).await;
        denied = get_json(
            prom,
            &query("verdict:flow_denied_connections:rate1m{dest_namespace=\"shop\"}"),
        )
        .await;
        alerts = get_json(prom, "/api/v1/alerts").await;
        let loss_firing = alerts["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == "VerdictFlowLogLoss" && x["state"] == "firing")
        });
        let rate: f64 = denied["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap();
        if loss_firing && rate > 10.0 {
            break;
        }
    }
    let rate: f64 = denied["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    // flood() sends about 100 denied connections/s; a 1m rate over the first seconds of
    // samples is lower (Prometheus divides by the whole minute).
    assert!(rate > 10.0 && rate < 300.0, "{denied}");
    let loss_alert = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["labels"]["alertname"] == "VerdictFlowLogLoss")
        .cloned()
        .unwrap_or_else(|| panic!("no VerdictFlowLogLoss alert: {alerts}"));
    assert_eq!(loss_alert["labels"]["reason"], "rate_limit");
    assert_eq!(loss_alert["state"], "firing");
    // Every shipped rule evaluates without error against the real series.
    let groups = get_json(prom, "/api/v1/rules").await;
    let mut n = 0;
    for g in groups["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    assert_eq!(n, 8, "{groups}");
    drop(prometheus);
    drop(stream);
    served.stop().await;
}

/// A loss marker of node-a (9 connections dropped by the rate limit), stamped now.
fn loss_json() -> String {
    r#"{"timestamp":"TS","interval_start":"TS","node_name":"node-a","reason":"rate_limit","disposition":"deny","dropped_records":3,"dropped_connections":9}"#
        .replace("TS", &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Sends [`loss_json`] on its own source.
async fn send_loss_marker(stream: &mut support::Stream) {
    let record = json_record(1, v1::LogId::PolicyActionLoss, &loss_json());
    let r = stream
        .call(&batch("node-a", "loss-1", 1, vec![record]))
        .await;
    assert!(r.rejection.is_none(), "{r:?}");
}

/// A child process killed when dropped (also when an assertion fails first).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus on loopback scraping `target` every second and evaluating the chart's rule
/// file; None (skipped, or a panic under CI) without the Debian package `prometheus`.
async fn start_prometheus(dir: &Path, target: SocketAddr) -> Option<(KillOnDrop, SocketAddr)> {
    let bin = which("prometheus");
    if !require(bin.is_some(), "Prometheus (Debian package prometheus)") {
        return None;
    }
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/verdict/rules/deny-spikes.yaml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: verdict-collector\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display(),
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(bin.unwrap())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prom-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let child = KillOnDrop(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < end, "prometheus did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((child, addr))
}

/// Percent-encodes `s` for a URL query string: everything but the unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every panel of a Grafana dashboard, the panels of collapsed rows included.
fn grafana_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The names of the template variables `expr` uses (`$name`, `${name}`), Grafana's own
/// (`$__…`) left out.
fn grafana_variables(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.starts_with("__") {
            names.push(name);
        }
    }
    names
}

/// `expr` with its variables replaced as Grafana does before it sends a query: the interval
/// macros by durations, a multi-value variable set to All by its `.*`.
fn grafana_interpolate(expr: &str, namespace: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${namespace}", namespace)
        .replace("$namespace", namespace)
        .replace("${node}", ".*")
        .replace("$node", ".*")
}

/// The metric names in a PromQL expression (`verdict_…`, `policy_logging_…`), quoted strings
/// skipped.
fn promql_metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut flush = |word: &mut String| {
        if word.starts_with("verdict_") || word.starts_with("policy_logging_") {
            names.push(word.clone());
        }
        word.clear();
    };
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        flush(&mut word);
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    flush(&mut word);
    names
}

/// Whether `name`, as a query names it, is a metric the collector exposes (`types`: its
/// exposition's `# TYPE` lines, name to type: a counter's samples end in `_total`, a
/// histogram's in `_bucket`, `_sum`, `_count`) or one registered by name in `sources` (families
/// without series yet are not in the exposition; the node agent's are in other binaries).
fn exposed(name: &str, types: &std::collections::HashMap<String, String>, sources: &str) -> bool {
    let plain = types
        .get(name)
        .is_some_and(|t| t != "counter" && t != "histogram");
    let suffixed = [
        ("_total", "counter"),
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
    ]
    .iter()
    .any(|(suffix, kind)| {
        name.strip_suffix(suffix)
            .is_some_and(|base| types.get(base).is_some_and(|t| t == kind))
    });
    let base = ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    plain || suffixed || sources.contains(&format!("\"{base}\""))
}

/// The Grafana dashboards of deploy/grafana/dashboards: each is well formed (its uid, the
/// `datasource` variable every panel and query uses, no data source uid of one installation),
/// and every query of every panel, run as Grafana would run it against a real Prometheus that
/// scrapes a collector, is valid PromQL over metrics that exist; the deny-rate panel shows the
/// denies just sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_prometheus_query_of_the_shipped_dashboards_runs_against_a_real_prometheus() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    let mut dashboards: Vec<(String, Value)> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_stem().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    dashboards.sort_by(|a, b| a.0.cmp(&b.0));
    let stems: Vec<&str> = dashboards.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stems, ["verdict-deny-spikes", "verdict-pipeline-health"]);

    let datasource = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    // (dashboard, panel title, expression) of every query.
    let mut queries: Vec<(String, String, String)> = Vec::new();
    for (stem, d) in &dashboards {
        assert_eq!(d["uid"], stem.as_str(), "{stem}: uid");
        assert_eq!(
            d["id"],
            Value::Null,
            "{stem}: an exported dashboard has no id"
        );
        let variables = d["templating"]["list"].as_array().expect("variables");
        let ds = variables
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{stem}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{stem}");
        assert_eq!(ds["query"], "prometheus", "{stem}");
        let defined: Vec<&str> = variables
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for v in variables.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"], datasource,
                "{stem}: variable {}",
                v["name"]
            );
        }
        let ns = variables
            .iter()
            .find(|v| v["name"] == "namespace")
            .unwrap_or_else(|| panic!("{stem}: no namespace variable"));
        assert_eq!(ns["allValue"], ".*", "{stem}");
        assert_eq!(ns["multi"], true, "{stem}");

        let panels = grafana_panels(d);
        let mut ids: Vec<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
        assert_eq!(ids.len(), panels.len(), "{stem}: every panel has an id");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), panels.len(), "{stem}: panel ids are unique");
        for p in panels.iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap_or_default();
            assert_eq!(p["datasource"], datasource, "{stem}: panel {title:?}");
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{stem}: panel {title:?} has no description"
            );
            let targets = p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(!targets.is_empty(), "{stem}: panel {title:?} has no query");
            for t in targets {
                assert_eq!(t["datasource"], datasource, "{stem}: panel {title:?} query");
                let expr = t["expr"].as_str().expect("expr").to_owned();
                queries.push((stem.clone(), title.to_owned(), expr));
            }
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if let Some(expr) = a["expr"].as_str() {
                assert_eq!(
                    a["datasource"], datasource,
                    "{stem}: annotation {}",
                    a["name"]
                );
                let title = format!("annotation {}", a["name"]);
                queries.push((stem.clone(), title, expr.to_owned()));
            }
        }
        for (_, title, expr) in queries.iter().filter(|q| &q.0 == stem) {
            for v in grafana_variables(expr) {
                assert!(
                    defined.contains(&v.as_str()),
                    "{stem}: {title:?} uses ${v}: {expr}"
                );
            }
        }
        // No data source of one installation: every data source reference is the variable
        // (or Grafana's built-in annotations).
        fn datasource_uids<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        if k == "datasource" && x.is_object() {
                            out.push(&x["uid"]);
                        }
                        datasource_uids(x, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| datasource_uids(x, out)),
                _ => {}
            }
        }
        let mut uids = Vec::new();
        datasource_uids(d, &mut uids);
        for uid in uids {
            assert!(
                uid == "${datasource}" || uid == "-- Grafana --",
                "{stem}: data source uid {uid}"
            );
        }
    }
    assert!(queries.len() > 40, "{} queries", queries.len());

    // A collector and a Prometheus scraping it; denies into "shop".
    let (_t, dir) = tempdir();
    let mut config = support::config(&dir);
    config.alerts.evaluation_interval = Duration::from_millis(200);
    let served = Served::start(config).await;
    let Some((_prometheus, prom)) = start_prometheus(&dir, served.http).await else {
        served.stop().await;
        return;
    };
    let mut stream = served.stream().await;
    send_loss_marker(&mut stream).await;
    let mut seq = 0;
    flood(&mut stream, "shop", 5, &mut seq).await;
    let run = |expr: String| async move {
        get_json(
            prom,
            &format!("/api/v1/query?query={}", percent_encode(&expr)),
        )
        .await
    };
    let shop_rate = |answer: &Value| {
        answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["metric"]["dest_namespace"] == "shop")
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .fold(0.0, f64::max)
    };
    // Scraped at least twice since the first deny: a 1m rate has its two samples.
    let probe =
        r#"sum by (dest_namespace) (rate(verdict_flow_connections_total{disposition="deny"}[1m]))"#;
    let mut answer = Value::Null;
    for _ in 0..30 {
        answer = run(probe.to_owned()).await;
        if shop_rate(&answer) > 0.0 {
            break;
        }
        flood(&mut stream, "shop", 1, &mut seq).await;
    }
    assert!(
        shop_rate(&answer) > 0.0,
        "Prometheus has no denies: {answer}"
    );

    // The metrics the collector exposes (their types), and the names registered in the
    // sources: the collector's families that have no series yet, the node agent's.
    let exposition = served.metrics().await;
    let types: std::collections::HashMap<String, String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.trim().to_owned()))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources: String = [
        "collector/src/alerts/mod.rs",
        "collector/src/alerts/flow_metrics.rs",
        "collector/src/alerts/notify.rs",
        "collector/src/sinks/metrics.rs",
        "node-shipper/src/metrics.rs",
        "ebpf-probe/src/metrics.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(root.join(p)).unwrap())
    .collect();

    let mut deny_panels = Vec::new();
    for (stem, title, expr) in &queries {
        for name in promql_metric_names(expr) {
            assert!(
                exposed(&name, &types, &sources),
                "{stem}: panel {title:?} queries {name}, which nothing exposes: {expr}"
            );
        }
        let q = grafana_interpolate(expr, ".*");
        assert!(
            !q.contains('$'),
            "{stem}: {title:?}: a variable is left in {q}"
        );
        let answer = run(q.clone()).await;
        assert_eq!(
            answer["status"], "success",
            "{stem}: panel {title:?}: {q}\n{answer}"
        );
        // The deny-rate panels, with the namespace variable set to "shop".
        if expr.contains(r#"disposition="deny""#) && expr.contains("rate(") {
            let answer = run(grafana_interpolate(expr, "shop")).await;
            assert_eq!(answer["status"], "success", "{stem}: {title:?}: {answer}");
            if shop_rate(&answer) > 0.0 {
                deny_panels.push(title.clone());
            }
        }
    }
    assert!(
        deny_panels
            .iter()
            .any(|t| t == "Denied connections/s by destination namespace"),
        "the deny-rate panel shows no denies into shop; panels that do: {deny_panels:?}"
    );
    drop(stream);
    served.stop().await;
}
