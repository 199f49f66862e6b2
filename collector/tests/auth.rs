//! Authentication of node streams: per-node bearer tokens, and mutual TLS with certificates
//! generated here (rcgen) for a throwaway CA. Either credential binds the stream to its node: a
//! batch for another node is refused.

mod support;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use verdict_collector::config::TlsConfig;
use verdict_schema::proto::v1;

fn node_batch(node: &str, batch_id: u64) -> v1::Batch {
    batch(
        node,
        "s1",
        batch_id,
        vec![json_record(
            batch_id,
            v1::LogId::PolicyAction,
            &flow_json(node, batch_id, 1_767_225_600),
        )],
    )
}

fn one_batch(batch_id: u64) -> v1::Batch {
    node_batch("n1", batch_id)
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_permission_denied(r: &v1::BatchResult, node: &str) {
    let rej = r.rejection.as_ref().expect("refused");
    assert_eq!(
        rej.code,
        v1::RejectionCode::PermissionDenied as i32,
        "{rej:?}"
    );
    assert!(rej.message.contains(node), "{rej:?}");
    assert_eq!(r.stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_node_token_and_send_only_for_its_node() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    // A token in the clear for n1, only the SHA-256 of n2's.
    let tokens = dir.join("node-tokens");
    std::fs::write(
        &tokens,
        format!(
            "# node tokens\nn1 first-token-0123456789\nn2 sha256:{}\n",
            sha256_hex("second-token-0123456789")
        ),
    )
    .unwrap();
    cfg.grpc.node_tokens_file = Some(tokens);
    let served = Served::start(cfg).await;
    let ch = channel(served.grpc).await;

    let e = Stream::open(ch.clone(), None).await.err().expect("refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(
        e.message()
            .contains("missing `authorization: Bearer TOKEN`"),
        "{e:?}"
    );
    let e = Stream::open(ch.clone(), Some("guess"))
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("not accepted"), "{e:?}");

    let mut s = Stream::open(ch.clone(), Some("second-token-0123456789"))
        .await
        .unwrap();
    // n2 cannot speak for n1 (not even to push n1's watermark to the end), and its stream
    // goes on.
    let mut forged = one_batch(1);
    forged.records[0].sequence = u64::MAX;
    assert_permission_denied(&s.call(&forged).await, "n1");
    assert_eq!(s.call(&node_batch("n2", 2)).await.stored, 1);
    let mut s = Stream::open(ch, Some("first-token-0123456789"))
        .await
        .unwrap();
    assert_eq!(s.call(&one_batch(3)).await.stored, 1);
    assert_eq!(
        s.call(&one_batch(4)).await.stored,
        1,
        "n1's source was not silenced"
    );
    let m = served.metrics().await;
    assert_eq!(
        metric(&m, "verdict_collector_auth_failures_total"),
        Some(2.0)
    );
    served.stop().await;
}

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
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

fn pki() -> Pki {
    let ca = new_ca("verdict test CA");
    let other = new_ca("someone else's CA");
    Pki {
        ca_pem: ca.pem(),
        server: leaf(&["localhost", "127.0.0.1"], &ca),
        client: leaf(&["n1"], &ca),
        stranger: leaf(&["node-x"], &other),
    }
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_of_the_configured_ca() {
    let (_guard, dir) = tempdir();
    let pki = pki();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut cfg = config(&dir);
    cfg.grpc.tls = Some(TlsConfig {
        cert_file: write("server.crt", &pki.server.0),
        key_file: write("server.key", &pki.server.1),
        client_ca_file: Some(write("ca.crt", &pki.ca_pem)),
    });
    let served = Served::start(cfg).await;

    let ch = tls_channel(served.grpc, &pki.ca_pem, Some(&pki.client))
        .await
        .expect("a client of the CA connects");
    let mut s = Stream::open(ch, None).await.unwrap();
    assert_eq!(s.call(&one_batch(1)).await.stored, 1);
    // The certificate names n1: nothing else.
    assert_permission_denied(&s.call(&node_batch("n2", 2)).await, "n2");

    for who in [None, Some(&pki.stranger)] {
        let refused = match tls_channel(served.grpc, &pki.ca_pem, who).await {
            Err(_) => true,
            Ok(ch) => Stream::open(ch, None).await.is_err(),
        };
        assert!(
            refused,
            "a client without a certificate of the CA is refused"
        );
    }
    // Plaintext is refused too.
    let plain = Endpoint::from_shared(format!("http://{}", served.grpc))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => Stream::open(ch, None).await.is_err(),
    };
    assert!(refused);
    served.stop().await;
}

#[tokio::test]
async fn unusable_tls_files_are_named_at_start() {
    let (_guard, dir) = tempdir();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut cfg = config(&dir);
    cfg.grpc.tls = Some(TlsConfig {
        cert_file: junk.clone(),
        key_file: junk,
        client_ca_file: None,
    });
    let (collector, _) = verdict_collector::Collector::open(cfg).await.unwrap();
    let listeners = verdict_collector::Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let stopped = verdict_service::shutdown::CancellationToken::new();
    stopped.cancel();
    let e = collector
        .serve(listeners, stopped)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("grpc.tls.cert_file:"), "{e}");
    assert!(e.contains("is not PEM"), "{e}");
    collector.close().await.unwrap();
}

/// Per-node identity from the Kubernetes API: agents present their pod's projected
/// ServiceAccount token, the collector asks the API server (TokenReview) whose it is and for
/// which node. The API server is the fake one of `verdict_cluster::fake_apiserver` (no real API
/// server can run on this machine); it answers TokenReview as the API reference documents it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_account_tokens_bind_streams_to_their_pods_node() {
    use verdict_cluster::fake_apiserver::FakeApiServer;
    use verdict_collector::config::KubernetesIdentityConfig;

    let (_guard, dir) = tempdir();
    let api = FakeApiServer::start("collector-sa-token").await;
    let audience = "verdict-collector";
    api.add_service_account_token(
        "n1-pod-token",
        "verdict",
        "verdict-agent",
        Some("n1"),
        &[audience],
    );
    api.add_service_account_token(
        "n2-pod-token",
        "verdict",
        "verdict-agent",
        Some("n2"),
        &[audience],
    );
    api.add_service_account_token(
        "other-audience",
        "verdict",
        "verdict-agent",
        Some("n1"),
        &["vault"],
    );
    api.add_service_account_token("other-sa", "shop", "default", Some("n1"), &[audience]);
    api.add_service_account_token(
        "not-pod-bound",
        "verdict",
        "verdict-agent",
        None,
        &[audience],
    );
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let mut cfg = config(&dir);
    cfg.grpc.kubernetes = Some(KubernetesIdentityConfig {
        audience: audience.into(),
        service_accounts: vec!["verdict:verdict-agent".into()],
        cache_ttl: std::time::Duration::from_secs(300),
        kubeconfig: Some(kubeconfig),
        context: None,
    });
    let served = Served::start(cfg).await;
    let ch = channel(served.grpc).await;
    let reviews = || {
        api.calls()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p.ends_with("/tokenreviews"))
            .count()
    };

    // A pod's token speaks for its node only.
    let mut s = Stream::open(ch.clone(), Some("n1-pod-token"))
        .await
        .unwrap();
    assert_eq!(s.call(&one_batch(1)).await.stored, 1);
    assert_permission_denied(&s.call(&node_batch("n2", 2)).await, "n2");
    let mut s2 = Stream::open(ch.clone(), Some("n2-pod-token"))
        .await
        .unwrap();
    let mut forged = one_batch(3);
    forged.records[0].sequence = u64::MAX;
    assert_permission_denied(&s2.call(&forged).await, "n1");
    assert_eq!(s2.call(&node_batch("n2", 4)).await.stored, 1);
    // Reviews are cached: a reconnecting agent does not ask the API server again.
    let before = reviews();
    let mut again = Stream::open(ch.clone(), Some("n1-pod-token"))
        .await
        .unwrap();
    assert_eq!(again.call(&one_batch(5)).await.stored, 1);
    assert_eq!(reviews(), before);

    // Refused, saying why (an oversized token without asking the API server).
    let oversized = "x".repeat(10 * 1024);
    for (token, why) in [
        (oversized.as_str(), "over the 8192"),
        ("other-audience", "not accepted"),
        ("other-sa", "is not an agent ServiceAccount"),
        ("not-pod-bound", "not bound to a pod"),
        ("forged.jwt.token", "not accepted"),
    ] {
        let e = Stream::open(ch.clone(), Some(token))
            .await
            .err()
            .expect("refused");
        let shown = &token[..token.len().min(20)];
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{shown}: {e:?}");
        assert!(e.message().contains(why), "{shown}: {e:?}");
    }
    let e = Stream::open(ch.clone(), None).await.err().expect("refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // The collector may not review: fail closed, as unavailable (the shipper retries), naming
    // the grant.
    api.set_forbidden("tokenreviews", true);
    api.add_service_account_token(
        "n3-pod-token",
        "verdict",
        "verdict-agent",
        Some("n3"),
        &[audience],
    );
    let e = Stream::open(ch.clone(), Some("n3-pod-token"))
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("grant create on tokenreviews"),
        "{e:?}"
    );
    api.set_forbidden("tokenreviews", false);
    // The API server is down: new tokens cannot be reviewed (unavailable); a reviewed one still
    // works from the cache.
    api.stop();
    let e = Stream::open(ch.clone(), Some("n3-pod-token"))
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let mut cached = Stream::open(ch.clone(), Some("n1-pod-token"))
        .await
        .unwrap();
    assert_eq!(cached.call(&one_batch(6)).await.stored, 1);
    api.resume().await;
    let mut s3 = Stream::open(ch, Some("n3-pod-token")).await.unwrap();
    assert_eq!(s3.call(&node_batch("n3", 7)).await.stored, 1);

    let m = served.metrics().await;
    assert_eq!(
        metric(&m, "verdict_collector_auth_failures_total"),
        Some(6.0)
    );
    served.stop().await;
}
