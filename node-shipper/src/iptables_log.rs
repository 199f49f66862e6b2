//! Parsing iptables `LOG` target lines (kube-iptables-tailer's source, seed 004).
//!
//! The kernel writes one line per logged packet: the rule's `--log-prefix` followed by
//! `IN=… OUT=… [MAC=…] SRC=… DST=… LEN=… … PROTO=… [SPT=… DPT=…]` (`nf_log_syslog`; IPv6
//! lines carry `TC=`, `HOPLIMIT=`, `FLOWLBL=` instead of `TOS=`, `TTL=`, `ID=`). The line reaches
//! us through syslog (`/var/log/kern.log`: a syslog header, `kernel:`, an optional
//! `[seconds.micros]` uptime stamp) or through `/dev/kmsg` (`pri,seq,usec,flags;message`).
//!
//! Only lines that carry one of the configured prefixes are drops (`calico-drop:` for Calico's
//! log-and-drop rules; any `--log-prefix` of a plain rule). Everything else in the kernel log is
//! not ours and is ignored.

use std::net::IpAddr;

use verdict_schema::{Protocol, Timestamp};

/// One dropped packet, as the LOG target described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketDrop {
    /// The prefix that matched (as configured).
    pub prefix: String,
    /// Input interface (empty for locally generated packets).
    pub in_interface: String,
    /// Output interface (empty in INPUT and PREROUTING).
    pub out_interface: String,
    pub src_ip: IpAddr,
    pub dest_ip: IpAddr,
    pub protocol: Protocol,
    /// 0 for protocols without ports (ICMP).
    pub src_port: u16,
    pub dest_port: u16,
    /// When the packet was logged, if the line says (syslog RFC 3339 or classic header).
    pub timestamp: Option<Timestamp>,
}

/// Why a line with a drop prefix is not a LOG line we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no {0}= field after the prefix")]
    Missing(&'static str),
    #[error("{field}={value:?} is not {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Finds the first configured prefix in `line` and parses what follows. `None`: not a drop
/// line (no prefix); `Some(Err)`: a drop line that does not parse.
pub fn parse_line(line: &str, prefixes: &[String]) -> Option<Result<PacketDrop, ParseError>> {
    let (at, prefix) = prefixes
        .iter()
        .filter_map(|p| line.find(p.as_str()).map(|i| (i, p)))
        .min_by_key(|(i, _)| *i)?;
    let fields = &line[at + prefix.len()..];
    Some(parse_fields(fields, prefix).map(|mut d| {
        d.timestamp = syslog_timestamp(&line[..at]);
        d
    }))
}

fn parse_fields(fields: &str, prefix: &str) -> Result<PacketDrop, ParseError> {
    let mut in_interface = None;
    let mut out_interface = None;
    let (mut src, mut dst, mut proto, mut spt, mut dpt) = (None, None, None, None, None);
    for token in fields.split_ascii_whitespace() {
        let Some((key, value)) = token.split_once('=') else {
            continue; // flags such as DF, SYN, ACK
        };
        match key {
            // The first IN=/OUT= win: a prefix may itself contain text, never these keys twice.
            "IN" if in_interface.is_none() => in_interface = Some(value),
            "OUT" if out_interface.is_none() => out_interface = Some(value),
            "SRC" if src.is_none() => src = Some(value),
            "DST" if dst.is_none() => dst = Some(value),
            "PROTO" if proto.is_none() => proto = Some(value),
            "SPT" if spt.is_none() => spt = Some(value),
            "DPT" if dpt.is_none() => dpt = Some(value),
            _ => {}
        }
    }
    let ip = |field, v: Option<&str>| -> Result<IpAddr, ParseError> {
        let v = v.ok_or(ParseError::Missing(field))?;
        v.parse().map_err(|_| ParseError::Invalid {
            field,
            value: v.to_owned(),
            expected: "an IP address",
        })
    };
    let port = |field, v: Option<&str>| -> Result<u16, ParseError> {
        v.map_or(Ok(0), |v| {
            v.parse().map_err(|_| ParseError::Invalid {
                field,
                value: v.to_owned(),
                expected: "a port number",
            })
        })
    };
    let src_ip = ip("SRC", src)?;
    let dest_ip = ip("DST", dst)?;
    let proto = proto.ok_or(ParseError::Missing("PROTO"))?;
    let protocol = match proto.parse::<u8>() {
        // The kernel writes a number for protocols it has no name for.
        Ok(6) => Protocol::Tcp,
        Ok(17) => Protocol::Udp,
        Ok(132) => Protocol::Sctp,
        Ok(1) => Protocol::Icmp,
        Ok(58) => Protocol::Icmpv6,
        Ok(_) => Protocol::Other(proto.to_owned()),
        Err(_) => proto.parse().unwrap_or_else(|never| match never {}),
    };
    Ok(PacketDrop {
        prefix: prefix.to_owned(),
        in_interface: in_interface.ok_or(ParseError::Missing("IN"))?.to_owned(),
        out_interface: out_interface.ok_or(ParseError::Missing("OUT"))?.to_owned(),
        src_ip,
        dest_ip,
        src_port: port("SPT", spt)?,
        dest_port: port("DPT", dpt)?,
        protocol,
        timestamp: None,
    })
}

/// The time at the start of a syslog line: RFC 3339 (rsyslog's high-precision format,
/// `2026-11-21T13:15:02.123456+00:00 host kernel: …`) or the classic `Nov 21 13:15:02 host
/// kernel: …`, which has no year or zone (taken as this year, UTC).
pub fn syslog_timestamp(head: &str) -> Option<Timestamp> {
    let first = head.split_ascii_whitespace().next()?;
    if let Ok(t) = Timestamp::parse(first) {
        return Some(t);
    }
    let mut parts = head.split_ascii_whitespace();
    let (month, day, time) = (parts.next()?, parts.next()?, parts.next()?);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let day: u32 = day.parse().ok()?;
    let time = chrono::NaiveTime::parse_from_str(time, "%H:%M:%S").ok()?;
    use chrono::Datelike as _;
    let year = chrono::Utc::now().year();
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let nanos = date.and_time(time).and_utc().timestamp_nanos_opt()?;
    Some(Timestamp::from_unix_nanos(nanos))
}

/// One `/dev/kmsg` record: `PRIORITY,SEQUENCE,MICROS,FLAGS[,…];MESSAGE` (continuation lines,
/// starting with a space, are dropped by the reader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord<'a> {
    pub sequence: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC) when the kernel logged it.
    pub micros: u64,
    pub message: &'a str,
}

pub fn parse_kmsg(record: &str) -> Option<KmsgRecord<'_>> {
    let (head, message) = record.split_once(';')?;
    let mut fields = head.split(',');
    let _priority = fields.next()?;
    let sequence = fields.next()?.parse().ok()?;
    let micros = fields.next()?.parse().ok()?;
    let message = message.split('\n').next().unwrap_or("");
    Some(KmsgRecord {
        sequence,
        micros,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes() -> Vec<String> {
        vec!["calico-drop:".into()]
    }

    #[test]
    fn lines_without_a_prefix_are_not_ours() {
        assert_eq!(
            parse_line(
                "Nov 21 13:15:02 node-1 kernel: [ 1.0] eth0: link up",
                &prefixes()
            ),
            None
        );
    }

    #[test]
    fn drop_lines_without_addresses_say_what_is_missing() {
        let e = parse_line("kernel: calico-drop: IN=eth0 OUT= PROTO=TCP", &prefixes())
            .unwrap()
            .unwrap_err();
        assert_eq!(e.to_string(), "no SRC= field after the prefix");
        let e = parse_line(
            "calico-drop: IN=eth0 OUT= SRC=10.0.0.300 DST=10.0.0.1 PROTO=TCP",
            &prefixes(),
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.to_string(), "SRC=\"10.0.0.300\" is not an IP address");
    }

    #[test]
    fn kmsg_records_split_into_sequence_time_and_message() {
        let r =
            parse_kmsg("4,1234,5678901,-;calico-drop: IN=eth0 OUT= SRC=1.2.3.4\n SUBSYSTEM=net")
                .unwrap();
        assert_eq!((r.sequence, r.micros), (1234, 5_678_901));
        assert_eq!(r.message, "calico-drop: IN=eth0 OUT= SRC=1.2.3.4");
        assert_eq!(parse_kmsg("garbage"), None);
    }

    #[test]
    fn syslog_headers_give_the_time() {
        let t = syslog_timestamp("2026-11-21T13:15:02.123456+00:00 node-1 kernel: ").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T13:15:02.123456Z");
        let t = syslog_timestamp("Nov  2 03:04:05 node-1 kernel: [ 5.1] ").unwrap();
        assert!(t.to_string().ends_with("-11-02T03:04:05Z"), "{t}");
        assert_eq!(syslog_timestamp("[ 5.1] "), None);
    }
}
