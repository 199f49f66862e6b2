//! `verdict policy check`: one JSON verdict per input line, in input order.
//!
//! The whole input is judged before anything is printed, so a bad line (reported with its file,
//! line and field; exit status 2) never leaves half an answer on stdout.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use verdict_policy::engine::{Flow, SideVerdict};
use verdict_policy::{EndpointSpec, Engine, IpBlockMode};
use verdict_schema::{PolicyActionRecord, PolicyRef, Protocol, Timestamp};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionLine {
    src: String,
    dest: String,
    protocol: String,
    port: u32,
    #[serde(default)]
    src_port: Option<u32>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Serialize)]
struct VerdictLine<'a> {
    src: &'a str,
    dest: &'a str,
    protocol: &'static str,
    port: u16,
    verdict: &'static str,
    egress: SideLine,
    ingress: SideLine,
}

#[derive(Debug, Serialize)]
struct SideLine {
    isolated: bool,
    verdict: &'static str,
    policies: Vec<PolicyRef>,
    isolated_by: Vec<PolicyRef>,
    logged: bool,
    record: Option<PolicyActionRecord>,
}

fn verdict_word(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

fn side_line(
    engine: &Engine,
    flow: &Flow,
    side: &SideVerdict,
    src_port: u16,
    ts: Timestamp,
) -> SideLine {
    let refs = |ids: &[u32]| {
        ids.iter()
            .map(|&id| engine.policy(id).policy_ref())
            .collect()
    };
    let record = engine.record(flow, src_port, side, ts);
    SideLine {
        isolated: side.isolated,
        verdict: verdict_word(side.allowed),
        policies: refs(&side.allowing),
        isolated_by: refs(&side.isolating),
        logged: record.is_some(),
        record,
    }
}

pub fn run(
    cluster: &verdict_cluster::StateSource,
    mode: IpBlockMode,
    connections: &Path,
) -> anyhow::Result<()> {
    let engine = super::load_engine(cluster, mode)?;
    let (name, reader): (String, Box<dyn BufRead>) = if connections == Path::new("-") {
        ("<stdin>".into(), Box::new(std::io::stdin().lock()))
    } else {
        let f = std::fs::File::open(connections)
            .with_context(|| format!("opening {}", connections.display()))?;
        (
            connections.display().to_string(),
            Box::new(std::io::BufReader::new(f)),
        )
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let verdict = check_line(&engine, &line).map_err(|e| anyhow!("{at}: {e}"))?;
        out.extend_from_slice(verdict.as_bytes());
        out.push(b'\n');
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// Judges one input line; errors name the field.
fn check_line(engine: &Engine, line: &str) -> Result<String, String> {
    let c: ConnectionLine =
        serde_json::from_str(line).map_err(|e| format!("invalid connection: {e}"))?;
    let src = EndpointSpec::parse(&c.src).map_err(|e| format!("field `src`: {e}"))?;
    let dest = EndpointSpec::parse(&c.dest).map_err(|e| format!("field `dest`: {e}"))?;
    let protocol = verdict_policy::model::PolicyProtocol::parse(&c.protocol).ok_or_else(|| {
        format!(
            "field `protocol`: {:?} is not one of TCP, UDP, SCTP",
            c.protocol
        )
    })?;
    let port = u16::try_from(c.port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("field `port`: {} is not between 1 and 65535", c.port))?;
    let src_port = u16::try_from(c.src_port.unwrap_or(0)).map_err(|_| {
        format!(
            "field `src_port`: {} is not between 0 and 65535",
            c.src_port.unwrap_or(0)
        )
    })?;
    let ts = match &c.timestamp {
        None => Timestamp::now(),
        Some(t) => Timestamp::parse(t).map_err(|e| format!("field `timestamp`: {e}"))?,
    };
    let (s, d) = engine.resolve_pair(&src, &dest).map_err(|e| {
        let field = match &e {
            verdict_policy::Error::UnknownPod { namespace, name } if matches!(&src, EndpointSpec::Pod { namespace: n, name: p } if n == namespace && p == name) => "src",
            verdict_policy::Error::UnknownNamespace(ns) if matches!(&src, EndpointSpec::Pod { namespace: n, .. } if n == ns) => "src",
            verdict_policy::Error::UnknownNode(_) if matches!(src, EndpointSpec::Node(_)) => "src",
            _ if matches!(&e, verdict_policy::Error::Endpoint(m) if m.starts_with(&src.to_string())) => "src",
            _ => "dest",
        };
        format!("field `{field}`: {e}")
    })?;
    let flow = Flow {
        src: s,
        dest: d,
        protocol: protocol.to_record_protocol(),
        dest_port: port,
    };
    debug_assert!(matches!(
        flow.protocol,
        Protocol::Tcp | Protocol::Udp | Protocol::Sctp
    ));
    let v = engine.evaluate(&flow);
    let out = VerdictLine {
        src: &c.src,
        dest: &c.dest,
        protocol: protocol.as_str(),
        port,
        verdict: verdict_word(v.allowed()),
        egress: side_line(engine, &flow, &v.egress, src_port, ts),
        ingress: side_line(engine, &flow, &v.ingress, src_port, ts),
    };
    serde_json::to_string(&out).map_err(|e| e.to_string())
}
