//! Real traffic for the demo's eBPF mode: echo servers in the destination namespaces and
//! connections opened from the source namespaces, so the kernel programs on the pods' veths
//! decide real packets. Sockets are created with the thread switched into the right namespace
//! ([`verdict_probe::lab::in_netns`]) and then used from ordinary tokio tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use verdict_probe::datapath::Attempt;
use verdict_probe::lab::in_netns;
use verdict_schema::Protocol;

/// How long a connection attempt waits: a denied SYN is dropped, so the client only times out
/// (TCP retransmits the SYN after 1 s; one retry is enough to tell).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Attempts in flight at once (a port scan burst opens hundreds).
const MAX_IN_FLIGHT: usize = 512;

/// Which network namespace holds each address.
#[derive(Debug, Clone, Default)]
pub struct NetnsDirectory {
    by_ip: BTreeMap<IpAddr, String>,
}

impl NetnsDirectory {
    pub fn insert(&mut self, ip: IpAddr, ns: String) {
        self.by_ip.insert(ip, ns);
    }

    pub fn netns_of(&self, ip: IpAddr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }
}

/// Starts an echo server for each (address, port, protocol) in its namespace.
pub fn start_servers(
    directory: &NetnsDirectory,
    listeners: &BTreeSet<(IpAddr, u16, Protocol)>,
) -> anyhow::Result<()> {
    for (ip, port, protocol) in listeners {
        let ns = directory
            .netns_of(*ip)
            .ok_or_else(|| anyhow::anyhow!("no namespace holds {ip}"))?;
        let addr = SocketAddr::new(*ip, *port);
        match protocol {
            Protocol::Tcp => {
                let std_listener = in_netns(ns, || {
                    let l = std::net::TcpListener::bind(addr)?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .map_err(|e| anyhow::anyhow!("listening on {addr}/TCP in {ns}: {e}"))?;
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                tokio::spawn(async move {
                    while let Ok((mut conn, _)) = listener.accept().await {
                        tokio::spawn(async move {
                            let mut buf = [0u8; 64];
                            if let Ok(Ok(n)) =
                                tokio::time::timeout(ATTEMPT_TIMEOUT, conn.read(&mut buf)).await
                            {
                                let _ = conn.write_all(&buf[..n]).await;
                            }
                        });
                    }
                });
            }
            Protocol::Udp => {
                let std_socket = in_netns(ns, || {
                    let s = std::net::UdpSocket::bind(addr)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .map_err(|e| anyhow::anyhow!("listening on {addr}/UDP in {ns}: {e}"))?;
                let socket = tokio::net::UdpSocket::from_std(std_socket)?;
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                        let _ = socket.send_to(&buf[..n], from).await;
                    }
                });
            }
            other => anyhow::bail!("no demo server for protocol {}", other.as_str()),
        }
    }
    Ok(())
}

/// What the attempts got, as the clients saw it.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub answered: AtomicU64,
    pub unanswered: AtomicU64,
    pub failed_to_start: AtomicU64,
}

/// Opens connections from their source namespaces.
#[derive(Debug, Clone)]
pub struct SocketPlayer {
    directory: Arc<NetnsDirectory>,
    in_flight: Arc<Semaphore>,
    pub outcomes: Arc<Outcomes>,
}

impl SocketPlayer {
    pub fn new(directory: NetnsDirectory) -> Self {
        SocketPlayer {
            directory: Arc::new(directory),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            outcomes: Arc::new(Outcomes::default()),
        }
    }

    /// Plays `attempt` on a task: the source port is the kernel's choice (the scenario's is
    /// only a hint for the userspace datapath).
    pub async fn play(&self, attempt: Attempt) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(ns) = self.directory.netns_of(attempt.src_ip).map(str::to_owned) else {
            self.outcomes
                .failed_to_start
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answered = match attempt.protocol {
                Protocol::Tcp => tcp_exchange(&ns, &attempt).await,
                Protocol::Udp => udp_exchange(&ns, &attempt).await,
                _ => Err(std::io::Error::other("unsupported protocol")),
            };
            let counter = match answered {
                Ok(true) => &outcomes.answered,
                Ok(false) => &outcomes.unanswered,
                Err(_) => &outcomes.failed_to_start,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// Connects, sends a line and reads the echo. `Ok(false)`: no answer in time (dropped).
async fn tcp_exchange(ns: &str, a: &Attempt) -> std::io::Result<bool> {
    let socket = in_netns(ns, || {
        let s = match a.src_ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        s.bind(SocketAddr::new(a.src_ip, 0))?;
        Ok(s)
    })?;
    let exchange = async {
        let mut conn = socket
            .connect(SocketAddr::new(a.dest_ip, a.dest_port))
            .await?;
        conn.write_all(b"verdict demo\n").await?;
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await?;
        Ok::<bool, std::io::Error>(n > 0)
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, exchange).await {
        Ok(Ok(answered)) => Ok(answered),
        // Refused or reset: the packet got through and was answered by the host.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        Ok(Err(_)) | Err(_) => Ok(false),
    }
}

/// Sends a datagram and waits for the echo.
async fn udp_exchange(ns: &str, a: &Attempt) -> std::io::Result<bool> {
    let std_socket = in_netns(ns, || {
        let s = std::net::UdpSocket::bind(SocketAddr::new(a.src_ip, 0))?;
        s.set_nonblocking(true)?;
        Ok(s)
    })?;
    let socket = tokio::net::UdpSocket::from_std(std_socket)?;
    socket
        .send_to(b"verdict demo", SocketAddr::new(a.dest_ip, a.dest_port))
        .await?;
    let mut buf = [0u8; 64];
    Ok(matches!(
        tokio::time::timeout(ATTEMPT_TIMEOUT, socket.recv_from(&mut buf)).await,
        Ok(Ok(_))
    ))
}
