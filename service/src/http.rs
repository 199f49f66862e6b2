//! Serving an axum router with the limits every Verdict HTTP endpoint needs against slow or
//! many clients: at most [`HttpLimits::max_connections`] open connections (beyond it new ones
//! wait in the kernel's accept queue), and a request's head must arrive within
//! [`HttpLimits::header_read_timeout`] (a client trickling headers — slowloris — is cut off).
//! Handlers see the peer address as axum's `ConnectInfo<SocketAddr>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Time a client has to send a request's head, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may finish after shutdown before their connections are dropped.
const DRAIN: Duration = Duration::from_secs(10);

/// Limits of one HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `router` (HTTP/1.1) on `listener` within `limits` until `shutdown` is cancelled, then
/// lets open requests finish (up to 10 s; long-lived responses such as live tails end with
/// their own shutdown signal).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors are the client's doing (reset, timeout, bad request): nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {}
    }
    Ok(())
}

/// Who may call an endpoint: with tokens, a request presenting one of them
/// (`Authorization: Bearer TOKEN`, compared in constant time); without, only a client directly
/// on this machine — a loopback peer address, no proxy forwarding headers (`Forwarded`,
/// `X-Forwarded-For`, `X-Real-IP`, `Via`: a local proxy may be relaying anyone), and a `Host`
/// that names loopback (a web page of another site whose name resolves to 127.0.0.1 — DNS
/// rebinding — sends its own host name).
#[derive(Clone, Default)]
pub struct HttpAuth {
    tokens: Arc<Vec<crate::secret::Secret>>,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Tokens are configured and none (or a wrong one) was presented: 401.
    Unauthenticated(&'static str),
    /// No tokens are configured and the client is not directly on loopback: 403.
    NotLoopback,
}

const FORWARDING_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
    "via",
];

fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HttpAuth {
    pub fn new(tokens: Vec<crate::secret::Secret>) -> Self {
        HttpAuth {
            tokens: Arc::new(tokens),
        }
    }

    /// Whether tokens are required.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks a request's head (the peer comes from `ConnectInfo`, set by [`serve`]).
    pub fn check<B>(&self, request: &axum::http::Request<B>) -> Result<(), Refusal> {
        if self.tokens.is_empty() {
            let headers = request.headers();
            let peer_loopback = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|c| c.0.ip().is_loopback());
            let forwarded = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
            let host_ok = headers
                .get(axum::http::header::HOST)
                .is_none_or(|h| h.to_str().is_ok_and(loopback_host));
            return if peer_loopback && !forwarded && host_ok {
                Ok(())
            } else {
                Err(Refusal::NotLoopback)
            };
        }
        let presented = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(presented) = presented else {
            return Err(Refusal::Unauthenticated(
                "missing \"Authorization: Bearer TOKEN\"",
            ));
        };
        let presented = presented.trim().as_bytes();
        // Every token is compared, whatever matches first, so timing says nothing.
        let ok = self.tokens.iter().fold(false, |found, t| {
            found | constant_time_eq(t.expose().as_bytes(), presented)
        });
        if ok {
            Ok(())
        } else {
            Err(Refusal::Unauthenticated("the bearer token is not accepted"))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(limits: HttpLimits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        tokio::spawn(serve(listener, router, limits, stop.clone()));
        (addr, stop)
    }

    async fn get_peer(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_client_trickling_headers_is_cut_off() {
        let (addr, stop) = start(HttpLimits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(300),
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "the server closes a connection whose head never ends"
        );
        assert!(
            get_peer(addr).await.ends_with("127.0.0.1"),
            "others are served"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_their_turn() {
        let (addr, stop) = start(HttpLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(2),
        })
        .await;
        // One idle connection holds the only slot until its head times out.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let answer = get_peer(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "the second connection was served only once the first let go ({:?})",
            started.elapsed()
        );
        stop.cancel();
    }

    fn request(peer: &str, headers: &[(&str, &str)]) -> axum::http::Request<()> {
        let mut r = axum::http::Request::builder().uri("/metrics");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut r = r.body(()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        r
    }

    #[test]
    fn without_tokens_only_clients_directly_on_loopback_are_answered() {
        let open = HttpAuth::new(Vec::new());
        assert_eq!(
            open.check(&request("127.0.0.1:5000", &[("host", "127.0.0.1:8080")])),
            Ok(())
        );
        assert_eq!(
            open.check(&request("[::1]:5000", &[("host", "[::1]:8080")])),
            Ok(())
        );
        assert_eq!(
            open.check(&request("127.0.0.1:5000", &[("host", "localhost")])),
            Ok(())
        );
        for (peer, headers) in [
            ("10.0.0.7:5000", vec![("host", "127.0.0.1:8080")]),
            // A local reverse proxy relaying someone.
            (
                "127.0.0.1:5000",
                vec![
                    ("host", "127.0.0.1:8080"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
            ),
            (
                "127.0.0.1:5000",
                vec![("host", "localhost"), ("forwarded", "for=203.0.113.9")],
            ),
            // DNS rebinding: a page of evil.example resolved to 127.0.0.1.
            ("127.0.0.1:5000", vec![("host", "evil.example:8080")]),
        ] {
            assert_eq!(
                open.check(&request(peer, &headers)),
                Err(Refusal::NotLoopback),
                "{peer} {headers:?}"
            );
        }
    }

    #[test]
    fn with_tokens_every_client_needs_one() {
        let auth = HttpAuth::new(vec![crate::secret::Secret::new("t-0123456789abcdef")]);
        assert_eq!(
            auth.check(&request(
                "10.0.0.7:5000",
                &[("authorization", "Bearer t-0123456789abcdef")]
            )),
            Ok(())
        );
        assert!(matches!(
            auth.check(&request("127.0.0.1:5000", &[])),
            Err(Refusal::Unauthenticated(m)) if m.contains("missing")
        ));
        assert!(matches!(
            auth.check(&request("127.0.0.1:5000", &[("authorization", "Bearer nope")])),
            Err(Refusal::Unauthenticated(m)) if m.contains("not accepted")
        ));
    }
}
