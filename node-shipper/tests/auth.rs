//! The shipper authenticates to the real collector: mutual TLS with certificates generated here
//! (rcgen) for a throwaway CA, plus its node's bearer token; a wrong token is refused and retried
//! with backoff, never shipped around.

mod support;

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::*;
use verdict_collector::config::TlsConfig as CollectorTls;
use verdict_shipper::config::{Secret, TlsConfig};

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "verdict test CA");
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_a_bearer_token() {
    let (_g, dir) = tempdir();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = ca();
    let server = leaf(&["localhost"], &ca);
    let client = leaf(&["node-1"], &ca);
    let mut cc = collector_config(&dir);
    // The node's token; the certificate names the same node.
    cc.grpc.node_tokens_file = Some(write(
        "node-tokens",
        &format!("{NODE} node-token-0123456789\n"),
    ));
    cc.grpc.tls = Some(CollectorTls {
        cert_file: write("server.crt", &server.0),
        key_file: write("server.key", &server.1),
        client_ca_file: Some(write("ca.crt", &ca.pem())),
    });
    let served = Served::start(cc).await;

    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut log = RotatingLog::new(logs.join("policy_action.log"), 1 << 30, 5);
    for i in 1..=50 {
        log.write_line(&flow(i));
    }
    let tls = TlsConfig {
        ca_file: dir.join("ca.crt"),
        cert_file: Some(write("client.crt", &client.0)),
        key_file: Some(write("client.key", &client.1)),
        domain: Some("localhost".into()),
    };

    // A wrong token: refused by the collector, retried with backoff, nothing acknowledged.
    let mut cfg = shipper_config(&logs, &dir.join("wrong"), served.grpc);
    cfg.collector = format!("https://{}", served.grpc);
    cfg.tls = Some(tls.clone());
    cfg.token = Some(Secret::new("guess"));
    let wrong = start_shipper(cfg).await;
    let m = wrong.metrics().input("policy_action");
    eventually(Duration::from_secs(30), "refusals", || {
        m.stream_failures.get() >= 2
    })
    .await;
    assert_eq!(m.records_acked.get(), 0);
    wrong.shutdown().await;

    let mut cfg = shipper_config(&logs, &dir.join("right"), served.grpc);
    cfg.collector = format!("https://{}", served.grpc);
    cfg.tls = Some(tls);
    cfg.token = Some(Secret::new("node-token-0123456789"));
    let shipper = start_shipper(cfg).await;
    let m = shipper.metrics().input("policy_action");
    eventually(Duration::from_secs(30), "every record acknowledged", || {
        m.records_acked.get() >= 50
    })
    .await;
    shipper.shutdown().await;
    assert_eq!(stored_flows(&served).await.len(), 50);
    served.stop().await;
}

/// A projected ServiceAccount token is rotated by the kubelet: the shipper reads its token file
/// again before every new stream, so the rotated token is the one presented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_read_for_the_next_stream() {
    let (_g, dir) = tempdir();
    let mut cc = collector_config(&dir);
    let tokens = dir.join("node-tokens");
    std::fs::write(&tokens, format!("{NODE} rotated-token-0123456789\n")).unwrap();
    cc.grpc.node_tokens_file = Some(tokens);
    let served = Served::start(cc).await;

    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut log = RotatingLog::new(logs.join("policy_action.log"), 1 << 30, 5);
    for i in 1..=20 {
        log.write_line(&flow(i));
    }
    let token_file = dir.join("token");
    std::fs::write(&token_file, "expired-token\n").unwrap();
    let mut cfg = shipper_config(&logs, &dir.join("checkpoints"), served.grpc);
    cfg.token = Some(Secret::new("expired-token"));
    cfg.token_file = Some(token_file.clone());
    let shipper = start_shipper(cfg).await;
    let m = shipper.metrics().input("policy_action");
    eventually(Duration::from_secs(30), "the expired token refused", || {
        m.stream_failures.get() >= 2
    })
    .await;
    assert_eq!(m.records_acked.get(), 0);

    // The kubelet writes the new token (atomically, as it does: a new file renamed over).
    let next = dir.join("token.new");
    std::fs::write(&next, "rotated-token-0123456789\n").unwrap();
    std::fs::rename(&next, &token_file).unwrap();
    eventually(Duration::from_secs(30), "every record acknowledged", || {
        m.records_acked.get() >= 20
    })
    .await;
    shipper.shutdown().await;
    assert_eq!(stored_flows(&served).await.len(), 20);
    served.stop().await;
}
