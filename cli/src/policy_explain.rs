//! `verdict policy explain 'SRC -> DEST:PORT/PROTO'`.

use anyhow::anyhow;
use verdict_policy::engine::Flow;
use verdict_policy::model::PolicyProtocol;
use verdict_policy::{EndpointSpec, IpBlockMode};

/// Parses `SRC -> DEST:PORT[/PROTO]`.
fn parse_connection(s: &str) -> anyhow::Result<(EndpointSpec, EndpointSpec, u16, PolicyProtocol)> {
    let usage =
        "expected 'SRC -> DEST:PORT[/PROTO]', e.g. 'default/client -> default/web:8080/TCP'";
    let (src, rest) = s
        .split_once("->")
        .ok_or_else(|| anyhow!("{s:?}: missing '->'; {usage}"))?;
    let rest = rest.trim();
    let (dest, port_proto) = rest
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .ok_or_else(|| anyhow!("{s:?}: missing ':PORT' after the destination; {usage}"))?;
    let (port, proto) = match port_proto.split_once('/') {
        None => (port_proto, PolicyProtocol::Tcp),
        Some((port, p)) => (
            port,
            PolicyProtocol::parse(p)
                .ok_or_else(|| anyhow!("{s:?}: protocol {p:?} is not one of TCP, UDP, SCTP"))?,
        ),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| anyhow!("{s:?}: port {port:?} is not between 1 and 65535"))?;
    Ok((
        EndpointSpec::parse(src.trim())?,
        EndpointSpec::parse(dest.trim())?,
        port,
        proto,
    ))
}

pub fn run(
    cluster: &verdict_cluster::StateSource,
    mode: IpBlockMode,
    connection: &str,
) -> anyhow::Result<()> {
    let (src, dest, port, proto) = parse_connection(connection)?;
    let engine = super::load_engine(cluster, mode)?;
    let (s, d) = engine.resolve_pair(&src, &dest)?;
    let flow = Flow {
        src: s,
        dest: d,
        protocol: proto.to_record_protocol(),
        dest_port: port,
    };
    print!("{}", verdict_policy::explain::explain(&engine, &flow));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connections() {
        let (s, d, p, pr) = parse_connection("default/a -> kube-system/dns:53/UDP").unwrap();
        assert_eq!(s.to_string(), "default/a");
        assert_eq!(d.to_string(), "kube-system/dns");
        assert_eq!((p, pr), (53, PolicyProtocol::Udp));
        let (_, d, p, pr) = parse_connection("default/a->ip:[fd00::1]:443").unwrap();
        assert_eq!(d.to_string(), "ip:fd00::1");
        assert_eq!((p, pr), (443, PolicyProtocol::Tcp));
        assert!(parse_connection("default/a default/b:80").is_err());
        assert!(parse_connection("default/a -> default/b").is_err());
        assert!(
            parse_connection("default/a -> default/b:80/ICMP")
                .unwrap_err()
                .to_string()
                .contains("not one of")
        );
    }
}
