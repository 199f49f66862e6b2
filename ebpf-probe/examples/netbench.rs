//! Traffic tools for `load-tests/ebpf-datapath.sh`, run inside the script's network namespaces:
//!
//! - `serve PORT`: TCP echo server.
//! - `latency IP PORT N`: N TCP connects (connect + close) and N request/response round trips
//!   on one connection; prints `connect_p50_us connect_p99_us rr_p50_us rr_p99_us`.
//! - `rr IP PORT N`: only the N round trips on one connection (established-path traffic, for
//!   the programs' own run time); prints `rr_p50_us rr_p99_us`.
//! - `flood IP RATE SECONDS RUN`: UDP datagrams at RATE/s, each a new 5-tuple (64 source ports
//!   of their own per RUN × cycling destination ports), so every datagram is a new connection for
//!   the datapath, across runs too; prints the number sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `n` request/response round trips of 8 bytes on one connection, in µs.
fn round_trips(addr: SocketAddr, n: usize) -> std::io::Result<Vec<f64>> {
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut rr = Vec::with_capacity(n);
    let mut buf = [0u8; 8];
    for i in 0..n {
        let t = Instant::now();
        c.write_all(&(i as u64).to_le_bytes())?;
        c.read_exact(&mut buf)?;
        rr.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(rr)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let l = TcpListener::bind(("0.0.0.0", args[1].parse::<u16>().expect("port")))?;
            println!("ready");
            for c in l.incoming() {
                let mut c = c?;
                std::thread::spawn(move || {
                    let _ = c.set_nodelay(true);
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(())
        }
        Some("latency") => {
            let addr: SocketAddr = format!("{}:{}", args[1], args[2]).parse().expect("address");
            let n: usize = args[3].parse().expect("count");
            let mut connects = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                connects.push(t.elapsed().as_secs_f64() * 1e6);
                drop(c);
            }
            let mut rr = round_trips(addr, n)?;
            println!(
                "{:.1} {:.1} {:.1} {:.1}",
                percentile(&mut connects, 0.5),
                percentile(&mut connects, 0.99),
                percentile(&mut rr, 0.5),
                percentile(&mut rr, 0.99)
            );
            Ok(())
        }
        Some("rr") => {
            let addr: SocketAddr = format!("{}:{}", args[1], args[2]).parse().expect("address");
            let n: usize = args[3].parse().expect("count");
            let mut rr = round_trips(addr, n)?;
            println!(
                "{:.1} {:.1}",
                percentile(&mut rr, 0.5),
                percentile(&mut rr, 0.99)
            );
            Ok(())
        }
        Some("flood") => {
            let ip = &args[1];
            let rate: f64 = args[2].parse().expect("rate");
            let seconds: f64 = args[3].parse().expect("seconds");
            let sockets: Vec<UdpSocket> = (0..64)
                .map(|i| UdpSocket::bind(("0.0.0.0", 40_000 + i as u16)))
                .collect::<Result<_, _>>()?;
            let start = Instant::now();
            let dest: std::net::IpAddr = ip.parse().expect("IP");
            let (mut offered, mut sent): (u64, u64) = (0, 0);
            let mut port: u16 = 1024;
            while start.elapsed().as_secs_f64() < seconds {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while offered < due {
                    let s = &sockets[(offered % 64) as usize];
                    if offered % 64 == 63 {
                        port = if port == u16::MAX { 1024 } else { port + 1 };
                    }
                    // Only datagrams the kernel accepted count as sent.
                    if s.send_to(b"x", SocketAddr::new(dest, port)).is_ok() {
                        sent += 1;
                    }
                    offered += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            println!("{sent}");
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: netbench serve PORT | latency IP PORT N | rr IP PORT N | flood IP RATE SECONDS"
            );
            std::process::exit(2)
        }
    }
}
