//! Protobuf messages and the tonic service of the node → collector ingest stream
//! (`proto/verdict/ingest/v1/ingest.proto`, docs/design.md, "Contract 3: node to collector"), plus
//! conversions between the protobuf `FlowRecord` and [`PolicyActionRecord`].

#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("verdict.ingest.v1");
}

use crate::record::{
    Connection, Direction, Disposition, Endpoint, Enforcement, PodEndpoint, PolicyActionRecord,
    PolicyRef, Protocol,
};
use crate::timestamp::Timestamp;

/// The schema version this build writes and accepts.
pub const SCHEMA_VERSION: v1::SchemaVersion = v1::SchemaVersion::V1;

/// Why a protobuf FlowRecord is not a valid policy-action record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FlowRecord: {0}")]
pub struct FlowRecordError(pub String);

impl From<&PolicyActionRecord> for v1::FlowRecord {
    fn from(r: &PolicyActionRecord) -> Self {
        v1::FlowRecord {
            connection: Some(v1::Connection {
                src_ip: r.connection.src_ip.to_string(),
                dest_ip: r.connection.dest_ip.to_string(),
                src_port: u32::from(r.connection.src_port),
                dest_port: u32::from(r.connection.dest_port),
                protocol: r.connection.protocol.as_str().to_owned(),
                direction: match r.connection.direction {
                    Direction::Ingress => v1::Direction::Ingress,
                    Direction::Egress => v1::Direction::Egress,
                } as i32,
            }),
            disposition: match r.disposition {
                Disposition::Allow => v1::Disposition::Allow,
                Disposition::Deny => v1::Disposition::Deny,
            } as i32,
            policies: r
                .policies
                .iter()
                .flatten()
                .map(|p| v1::PolicyRef {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    kind: p.kind.clone(),
                })
                .collect(),
            has_policies: r.policies.is_some(),
            src: Some(endpoint_to_proto(&r.src)),
            dest: Some(endpoint_to_proto(&r.dest)),
            count: r.count,
            node_name: r.node_name.clone(),
            timestamp_unix_nanos: r.timestamp.unix_nanos(),
            enforcement: r
                .enforcement
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

fn endpoint_to_proto(e: &Endpoint) -> v1::Endpoint {
    v1::Endpoint {
        endpoint: Some(match e {
            Endpoint::Pod(p) => v1::endpoint::Endpoint::Pod(v1::PodEndpoint {
                pod_name: p.pod_name.clone(),
                pod_namespace: p.pod_namespace.clone(),
                namespace: p.namespace.clone().unwrap_or_default(),
                workload_name: p.workload_name.clone(),
                workload_kind: p.workload_kind.clone(),
            }),
            Endpoint::Instance { instance } => {
                v1::endpoint::Endpoint::Instance(instance.to_string())
            }
        }),
    }
}

fn endpoint_from_proto(e: Option<&v1::Endpoint>, side: &str) -> Result<Endpoint, FlowRecordError> {
    match e.and_then(|e| e.endpoint.as_ref()) {
        Some(v1::endpoint::Endpoint::Pod(p)) => Ok(Endpoint::Pod(PodEndpoint {
            pod_name: p.pod_name.clone(),
            pod_namespace: p.pod_namespace.clone(),
            namespace: (!p.namespace.is_empty()).then(|| p.namespace.clone()),
            workload_name: p.workload_name.clone(),
            workload_kind: p.workload_kind.clone(),
        })),
        Some(v1::endpoint::Endpoint::Instance(ip)) => Ok(Endpoint::Instance {
            instance: ip.parse().map_err(|_| {
                FlowRecordError(format!("{side}.instance {ip:?} is not an IP address"))
            })?,
        }),
        None => Err(FlowRecordError(format!("{side} is missing"))),
    }
}

impl TryFrom<&v1::FlowRecord> for PolicyActionRecord {
    type Error = FlowRecordError;

    fn try_from(r: &v1::FlowRecord) -> Result<Self, Self::Error> {
        let c = r
            .connection
            .as_ref()
            .ok_or_else(|| FlowRecordError("connection is missing".into()))?;
        let ip = |s: &str, name: &str| {
            s.parse().map_err(|_| {
                FlowRecordError(format!("connection.{name} {s:?} is not an IP address"))
            })
        };
        let port = |p: u32, name: &str| {
            u16::try_from(p).map_err(|_| FlowRecordError(format!("connection.{name} {p} > 65535")))
        };
        Ok(PolicyActionRecord {
            connection: Connection {
                src_ip: ip(&c.src_ip, "src_ip")?,
                dest_ip: ip(&c.dest_ip, "dest_ip")?,
                src_port: port(c.src_port, "src_port")?,
                dest_port: port(c.dest_port, "dest_port")?,
                protocol: c
                    .protocol
                    .parse::<Protocol>()
                    .unwrap_or_else(|n| match n {}),
                direction: match v1::Direction::try_from(c.direction) {
                    Ok(v1::Direction::Ingress) => Direction::Ingress,
                    Ok(v1::Direction::Egress) => Direction::Egress,
                    _ => {
                        return Err(FlowRecordError(format!(
                            "unknown direction {}",
                            c.direction
                        )));
                    }
                },
            },
            disposition: match v1::Disposition::try_from(r.disposition) {
                Ok(v1::Disposition::Allow) => Disposition::Allow,
                Ok(v1::Disposition::Deny) => Disposition::Deny,
                _ => {
                    return Err(FlowRecordError(format!(
                        "unknown disposition {}",
                        r.disposition
                    )));
                }
            },
            policies: r.has_policies.then(|| {
                r.policies
                    .iter()
                    .map(|p| PolicyRef {
                        name: p.name.clone(),
                        namespace: p.namespace.clone(),
                        kind: p.kind.clone(),
                    })
                    .collect()
            }),
            src: endpoint_from_proto(r.src.as_ref(), "src")?,
            dest: endpoint_from_proto(r.dest.as_ref(), "dest")?,
            count: r.count,
            node_name: r.node_name.clone(),
            timestamp: Timestamp::from_unix_nanos(r.timestamp_unix_nanos),
            enforcement: match r.enforcement.as_str() {
                "" => None,
                "audit" => Some(Enforcement::Audit),
                other => return Err(FlowRecordError(format!("unknown enforcement {other:?}"))),
            },
        })
    }
}
