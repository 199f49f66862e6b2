//! The flat Arrow schema of stored LogEntries, and conversions LogEntry ⇄ RecordBatch.
//!
//! One column per leaf of the LogEntry (schema/README.md maps each column to its JSON path).
//! `policies` is a list of structs; low-cardinality strings are dictionary-encoded
//! (`Dictionary(Int32, Utf8)`); timestamps are nanoseconds, UTC. `timestamp` serves both the
//! envelope's `timestamp` and `jsonPayload.timestamp`, which are equal by construction.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, StringDictionaryBuilder, StructBuilder,
    TimestampNanosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayAccessor, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::log_entry::{LogEntry, MonitoredResource, ResourceLabels, Severity};
use crate::record::{
    Connection, Direction, Disposition, Endpoint, Enforcement, PodEndpoint, PolicyActionRecord,
    PolicyRef, Protocol,
};
use crate::timestamp::Timestamp;

/// Column names, in schema order.
pub mod col {
    pub const TIMESTAMP: &str = "timestamp";
    pub const RECEIVE_TIMESTAMP: &str = "receive_timestamp";
    pub const INSERT_ID: &str = "insert_id";
    pub const LOG_NAME: &str = "log_name";
    pub const SEVERITY: &str = "severity";
    pub const RESOURCE_TYPE: &str = "resource_type";
    pub const PROJECT_ID: &str = "project_id";
    pub const LOCATION: &str = "location";
    pub const CLUSTER_NAME: &str = "cluster_name";
    pub const RESOURCE_NODE_NAME: &str = "resource_node_name";
    pub const SRC_IP: &str = "src_ip";
    pub const DEST_IP: &str = "dest_ip";
    pub const SRC_PORT: &str = "src_port";
    pub const DEST_PORT: &str = "dest_port";
    pub const PROTOCOL: &str = "protocol";
    pub const DIRECTION: &str = "direction";
    pub const DISPOSITION: &str = "disposition";
    pub const POLICIES: &str = "policies";
    pub const SRC_POD_NAME: &str = "src_pod_name";
    pub const SRC_POD_NAMESPACE: &str = "src_pod_namespace";
    pub const SRC_NAMESPACE: &str = "src_namespace";
    pub const SRC_WORKLOAD_NAME: &str = "src_workload_name";
    pub const SRC_WORKLOAD_KIND: &str = "src_workload_kind";
    pub const SRC_INSTANCE: &str = "src_instance";
    pub const DEST_POD_NAME: &str = "dest_pod_name";
    pub const DEST_POD_NAMESPACE: &str = "dest_pod_namespace";
    pub const DEST_NAMESPACE: &str = "dest_namespace";
    pub const DEST_WORKLOAD_NAME: &str = "dest_workload_name";
    pub const DEST_WORKLOAD_KIND: &str = "dest_workload_kind";
    pub const DEST_INSTANCE: &str = "dest_instance";
    pub const COUNT: &str = "count";
    pub const NODE_NAME: &str = "node_name";
    pub const ENFORCEMENT: &str = "enforcement";
}

/// Each column with the LogEntry JSON path it holds (the table in schema/README.md).
pub const COLUMN_PATHS: &[(&str, &str)] = &[
    (col::TIMESTAMP, "timestamp, jsonPayload.timestamp"),
    (col::RECEIVE_TIMESTAMP, "receiveTimestamp"),
    (col::INSERT_ID, "insertId"),
    (col::LOG_NAME, "logName"),
    (col::SEVERITY, "severity"),
    (col::RESOURCE_TYPE, "resource.type"),
    (col::PROJECT_ID, "resource.labels.project_id"),
    (col::LOCATION, "resource.labels.location"),
    (col::CLUSTER_NAME, "resource.labels.cluster_name"),
    (col::RESOURCE_NODE_NAME, "resource.labels.node_name"),
    (col::SRC_IP, "jsonPayload.connection.src_ip"),
    (col::DEST_IP, "jsonPayload.connection.dest_ip"),
    (col::SRC_PORT, "jsonPayload.connection.src_port"),
    (col::DEST_PORT, "jsonPayload.connection.dest_port"),
    (col::PROTOCOL, "jsonPayload.connection.protocol"),
    (col::DIRECTION, "jsonPayload.connection.direction"),
    (col::DISPOSITION, "jsonPayload.disposition"),
    (
        col::POLICIES,
        "jsonPayload.policies (list of {name, namespace, kind})",
    ),
    (col::SRC_POD_NAME, "jsonPayload.src.pod_name"),
    (col::SRC_POD_NAMESPACE, "jsonPayload.src.pod_namespace"),
    (col::SRC_NAMESPACE, "jsonPayload.src.namespace"),
    (col::SRC_WORKLOAD_NAME, "jsonPayload.src.workload_name"),
    (col::SRC_WORKLOAD_KIND, "jsonPayload.src.workload_kind"),
    (col::SRC_INSTANCE, "jsonPayload.src.instance"),
    (col::DEST_POD_NAME, "jsonPayload.dest.pod_name"),
    (col::DEST_POD_NAMESPACE, "jsonPayload.dest.pod_namespace"),
    (col::DEST_NAMESPACE, "jsonPayload.dest.namespace"),
    (col::DEST_WORKLOAD_NAME, "jsonPayload.dest.workload_name"),
    (col::DEST_WORKLOAD_KIND, "jsonPayload.dest.workload_kind"),
    (col::DEST_INSTANCE, "jsonPayload.dest.instance"),
    (col::COUNT, "jsonPayload.count"),
    (col::NODE_NAME, "jsonPayload.node_name"),
    (col::ENFORCEMENT, "jsonPayload.enforcement"),
];

pub(crate) fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

pub(crate) fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Fields of one `policies` element.
pub fn policy_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("namespace", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
    ])
}

fn policies_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(policy_fields()),
        true,
    )))
}

/// The envelope columns every stored table starts with (`timestamp` … `resource_node_name`).
pub(crate) fn envelope_fields() -> Vec<Field> {
    use col::*;
    vec![
        Field::new(TIMESTAMP, ts(), false),
        Field::new(RECEIVE_TIMESTAMP, ts(), false),
        Field::new(INSERT_ID, DataType::Utf8, false),
        Field::new(LOG_NAME, dict(), false),
        Field::new(SEVERITY, dict(), false),
        Field::new(RESOURCE_TYPE, dict(), false),
        Field::new(PROJECT_ID, dict(), false),
        Field::new(LOCATION, dict(), false),
        Field::new(CLUSTER_NAME, dict(), false),
        Field::new(RESOURCE_NODE_NAME, dict(), false),
    ]
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use col::*;
    let mut fields = envelope_fields();
    fields.extend([
        Field::new(SRC_IP, DataType::Utf8, false),
        Field::new(DEST_IP, DataType::Utf8, false),
        Field::new(SRC_PORT, DataType::Int32, false),
        Field::new(DEST_PORT, DataType::Int32, false),
        Field::new(PROTOCOL, dict(), false),
        Field::new(DIRECTION, dict(), false),
        Field::new(DISPOSITION, dict(), false),
        Field::new(POLICIES, policies_type(), true),
    ]);
    for side in ["src", "dest"] {
        fields.push(Field::new(format!("{side}_pod_name"), DataType::Utf8, true));
        fields.push(Field::new(format!("{side}_pod_namespace"), dict(), true));
        fields.push(Field::new(format!("{side}_namespace"), dict(), true));
        fields.push(Field::new(format!("{side}_workload_name"), dict(), true));
        fields.push(Field::new(format!("{side}_workload_kind"), dict(), true));
        fields.push(Field::new(format!("{side}_instance"), DataType::Utf8, true));
    }
    fields.push(Field::new(COUNT, DataType::Int64, false));
    fields.push(Field::new(NODE_NAME, dict(), false));
    fields.push(Field::new(ENFORCEMENT, dict(), true));
    Arc::new(Schema::new(fields))
});

/// The flat schema of stored LogEntries.
pub fn log_entry_schema() -> SchemaRef {
    SCHEMA.clone()
}

pub(crate) type Dict = StringDictionaryBuilder<Int32Type>;

/// A dictionary column sized for `n` rows of few distinct values. (`dict_builder(n)` reserves room
/// for 1,024 keys and values whatever `n` is: ~10 KiB per column, which a batch spread over many
/// hours — one builder per hour — multiplied into hundreds of MiB.)
pub(crate) fn dict_builder(n: usize) -> Dict {
    let distinct = n.clamp(1, 64);
    Dict::with_capacity(n, distinct, distinct * 16)
}

struct EndpointBuilders {
    pod_name: StringBuilder,
    pod_namespace: Dict,
    namespace: Dict,
    workload_name: Dict,
    workload_kind: Dict,
    instance: StringBuilder,
}

impl EndpointBuilders {
    fn new(n: usize) -> Self {
        EndpointBuilders {
            pod_name: StringBuilder::with_capacity(n, n * 24),
            pod_namespace: dict_builder(n),
            namespace: dict_builder(n),
            workload_name: dict_builder(n),
            workload_kind: dict_builder(n),
            instance: StringBuilder::with_capacity(n, n * 8),
        }
    }

    fn append(&mut self, e: &Endpoint) {
        match e {
            Endpoint::Pod(p) => {
                self.pod_name.append_value(&p.pod_name);
                self.pod_namespace.append_value(&p.pod_namespace);
                self.namespace.append_option(p.namespace.as_deref());
                self.workload_name.append_option(p.workload_name.as_deref());
                self.workload_kind.append_option(p.workload_kind.as_deref());
                self.instance.append_null();
            }
            Endpoint::Instance { instance } => {
                use std::fmt::Write as _;
                self.pod_name.append_null();
                self.pod_namespace.append_null();
                self.namespace.append_null();
                self.workload_name.append_null();
                self.workload_kind.append_null();
                // StringBuilder is a fmt::Write: no String per value.
                let _ = write!(self.instance, "{instance}");
                self.instance.append_value("");
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(self.pod_name.finish()));
        out.push(Arc::new(self.pod_namespace.finish()));
        out.push(Arc::new(self.namespace.finish()));
        out.push(Arc::new(self.workload_name.finish()));
        out.push(Arc::new(self.workload_kind.finish()));
        out.push(Arc::new(self.instance.finish()));
    }
}

/// The envelope fields an ingest batch shares: everything of a LogEntry except the payload,
/// `timestamp` (the record's) and `insertId` (per record). Lets a writer append many records of
/// one node without building a [`LogEntry`] (and its strings) per record.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub log_name: &'a str,
    pub resource_type: &'a str,
    pub labels: &'a ResourceLabels,
    pub receive_timestamp: Timestamp,
    pub severity: Severity,
}

impl<'a, P> From<&'a LogEntry<P>> for Envelope<'a> {
    fn from(e: &'a LogEntry<P>) -> Self {
        Envelope {
            log_name: &e.log_name,
            resource_type: &e.resource.resource_type,
            labels: &e.resource.labels,
            receive_timestamp: e.receive_timestamp,
            severity: e.severity,
        }
    }
}

/// The envelope columns shared by every stored table, in schema order (`timestamp` through
/// `resource_node_name`).
pub(crate) struct EnvelopeBuilders {
    timestamp: TimestampNanosecondBuilder,
    receive: TimestampNanosecondBuilder,
    insert_id: StringBuilder,
    log_name: Dict,
    severity: Dict,
    resource_type: Dict,
    project: Dict,
    location: Dict,
    cluster: Dict,
    rnode: Dict,
}

impl EnvelopeBuilders {
    pub(crate) fn new(n: usize) -> Self {
        EnvelopeBuilders {
            timestamp: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            receive: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            insert_id: StringBuilder::with_capacity(n, n * 32),
            log_name: dict_builder(n),
            severity: dict_builder(n),
            resource_type: dict_builder(n),
            project: dict_builder(n),
            location: dict_builder(n),
            cluster: dict_builder(n),
            rnode: dict_builder(n),
        }
    }

    pub(crate) fn append(&mut self, env: &Envelope<'_>, timestamp: Timestamp, insert_id: &str) {
        self.timestamp.append_value(timestamp.unix_nanos());
        self.receive
            .append_value(env.receive_timestamp.unix_nanos());
        self.insert_id.append_value(insert_id);
        self.log_name.append_value(env.log_name);
        self.severity.append_value(env.severity.as_str());
        self.resource_type.append_value(env.resource_type);
        self.project.append_value(&env.labels.project_id);
        self.location.append_value(&env.labels.location);
        self.cluster.append_value(&env.labels.cluster_name);
        self.rnode.append_value(&env.labels.node_name);
    }

    pub(crate) fn len(&self) -> usize {
        arrow_array::builder::ArrayBuilder::len(&self.insert_id)
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(self.timestamp.finish()));
        out.push(Arc::new(self.receive.finish()));
        out.push(Arc::new(self.insert_id.finish()));
        out.push(Arc::new(self.log_name.finish()));
        out.push(Arc::new(self.severity.finish()));
        out.push(Arc::new(self.resource_type.finish()));
        out.push(Arc::new(self.project.finish()));
        out.push(Arc::new(self.location.finish()));
        out.push(Arc::new(self.cluster.finish()));
        out.push(Arc::new(self.rnode.finish()));
    }
}

/// Builds RecordBatches of [`log_entry_schema`] one policy-action entry at a time.
pub struct LogEntryBatchBuilder {
    envelope: EnvelopeBuilders,
    src_ip: StringBuilder,
    dest_ip: StringBuilder,
    src_port: Int32Builder,
    dest_port: Int32Builder,
    protocol: Dict,
    direction: Dict,
    disposition: Dict,
    policies: ListBuilder<StructBuilder>,
    src: EndpointBuilders,
    dest: EndpointBuilders,
    count: Int64Builder,
    node_name: Dict,
    enforcement: Dict,
}

impl std::fmt::Debug for LogEntryBatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEntryBatchBuilder")
            .field("rows", &self.len())
            .finish_non_exhaustive()
    }
}

impl LogEntryBatchBuilder {
    /// A builder with room for `capacity` rows (it grows past it).
    pub fn with_capacity(n: usize) -> Self {
        LogEntryBatchBuilder {
            envelope: EnvelopeBuilders::new(n),
            src_ip: StringBuilder::with_capacity(n, n * 12),
            dest_ip: StringBuilder::with_capacity(n, n * 12),
            src_port: Int32Builder::with_capacity(n),
            dest_port: Int32Builder::with_capacity(n),
            protocol: dict_builder(n),
            direction: dict_builder(n),
            disposition: dict_builder(n),
            policies: ListBuilder::with_capacity(StructBuilder::from_fields(policy_fields(), 2), n),
            src: EndpointBuilders::new(n),
            dest: EndpointBuilders::new(n),
            count: Int64Builder::with_capacity(n),
            node_name: dict_builder(n),
            enforcement: dict_builder(n),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.envelope.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one entry: `env` and `insert_id` form its envelope, `r` its `jsonPayload`.
    pub fn append(&mut self, env: &Envelope<'_>, insert_id: &str, r: &PolicyActionRecord) {
        use std::fmt::Write as _;
        self.envelope.append(env, r.timestamp, insert_id);
        // StringBuilder is a fmt::Write: the address is formatted straight into the column.
        let _ = write!(self.src_ip, "{}", r.connection.src_ip);
        self.src_ip.append_value("");
        let _ = write!(self.dest_ip, "{}", r.connection.dest_ip);
        self.dest_ip.append_value("");
        self.src_port.append_value(i32::from(r.connection.src_port));
        self.dest_port
            .append_value(i32::from(r.connection.dest_port));
        self.protocol.append_value(r.connection.protocol.as_str());
        self.direction.append_value(r.connection.direction.as_str());
        self.disposition.append_value(r.disposition.as_str());
        match &r.policies {
            None => self.policies.append(false),
            Some(list) => {
                let s = self.policies.values();
                for p in list {
                    s.field_builder::<StringBuilder>(0)
                        .expect("name")
                        .append_value(&p.name);
                    s.field_builder::<StringBuilder>(1)
                        .expect("namespace")
                        .append_option(p.namespace.as_deref());
                    s.field_builder::<StringBuilder>(2)
                        .expect("kind")
                        .append_option(p.kind.as_deref());
                    s.append(true);
                }
                self.policies.append(true);
            }
        }
        self.src.append(&r.src);
        self.dest.append(&r.dest);
        self.count
            .append_value(i64::try_from(r.count).unwrap_or(i64::MAX));
        self.node_name.append_value(&r.node_name);
        self.enforcement
            .append_option(r.enforcement.map(Enforcement::as_str));
    }

    /// The rows appended so far as one batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(33);
        self.envelope.finish(&mut columns);
        columns.push(Arc::new(self.src_ip.finish()));
        columns.push(Arc::new(self.dest_ip.finish()));
        columns.push(Arc::new(self.src_port.finish()));
        columns.push(Arc::new(self.dest_port.finish()));
        columns.push(Arc::new(self.protocol.finish()));
        columns.push(Arc::new(self.direction.finish()));
        columns.push(Arc::new(self.disposition.finish()));
        columns.push(Arc::new(self.policies.finish()));
        self.src.finish(&mut columns);
        self.dest.finish(&mut columns);
        columns.push(Arc::new(self.count.finish()));
        columns.push(Arc::new(self.node_name.finish()));
        columns.push(Arc::new(self.enforcement.finish()));
        // The list's item field must be exactly the schema's (nullability included).
        RecordBatch::try_new(log_entry_schema(), columns)
    }
}

/// Converts LogEntries to one RecordBatch of [`log_entry_schema`].
pub fn log_entries_to_batch(entries: &[LogEntry]) -> Result<RecordBatch, ArrowError> {
    let mut b = LogEntryBatchBuilder::with_capacity(entries.len());
    for e in entries {
        b.append(&Envelope::from(e), &e.insert_id, &e.json_payload);
    }
    b.finish()
}

/// A string column read back either as plain Utf8 or dictionary-encoded (readers differ).
pub(crate) enum StrCol<'a> {
    Plain(&'a StringArray),
    Dict(arrow_array::TypedDictionaryArray<'a, Int32Type, StringArray>),
}

impl<'a> StrCol<'a> {
    pub(crate) fn of(batch: &'a RecordBatch, name: &str) -> Result<Self, ArrowError> {
        let a = column(batch, name)?;
        match a.data_type() {
            DataType::Utf8 => Ok(StrCol::Plain(a.as_string::<i32>())),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = a.as_dictionary::<Int32Type>();
                Ok(StrCol::Dict(d.downcast_dict::<StringArray>().ok_or_else(
                    || {
                        ArrowError::SchemaError(format!(
                            "column {name}: dictionary values are not Utf8"
                        ))
                    },
                )?))
            }
            other => Err(ArrowError::SchemaError(format!(
                "column {name}: expected Utf8 or Dictionary(Int32, Utf8), found {other}"
            ))),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrCol::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Dict(d) => d.is_valid(i).then(|| d.value(i)),
        }
    }

    pub(crate) fn req(&self, i: usize, name: &str) -> Result<&'a str, ArrowError> {
        self.get(i)
            .ok_or_else(|| ArrowError::InvalidArgumentError(format!("row {i}: {name} is null")))
    }
}

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("missing column {name}")))
}

fn parse_ip(s: &str, row: usize, name: &str) -> Result<IpAddr, ArrowError> {
    s.parse()
        .map_err(|e| ArrowError::InvalidArgumentError(format!("row {row}: {name}: {e}: {s:?}")))
}

struct EndpointCols<'a> {
    pod_name: StrCol<'a>,
    pod_namespace: StrCol<'a>,
    namespace: StrCol<'a>,
    workload_name: StrCol<'a>,
    workload_kind: StrCol<'a>,
    instance: StrCol<'a>,
    side: &'static str,
}

impl<'a> EndpointCols<'a> {
    fn of(b: &'a RecordBatch, side: &'static str) -> Result<Self, ArrowError> {
        Ok(EndpointCols {
            pod_name: StrCol::of(b, &format!("{side}_pod_name"))?,
            pod_namespace: StrCol::of(b, &format!("{side}_pod_namespace"))?,
            namespace: StrCol::of(b, &format!("{side}_namespace"))?,
            workload_name: StrCol::of(b, &format!("{side}_workload_name"))?,
            workload_kind: StrCol::of(b, &format!("{side}_workload_kind"))?,
            instance: StrCol::of(b, &format!("{side}_instance"))?,
            side,
        })
    }

    fn get(&self, i: usize) -> Result<Endpoint, ArrowError> {
        if let Some(ip) = self.instance.get(i) {
            return Ok(Endpoint::Instance {
                instance: parse_ip(ip, i, "instance")?,
            });
        }
        let pod_name = self.pod_name.get(i).ok_or_else(|| {
            ArrowError::InvalidArgumentError(format!(
                "row {i}: {side} has neither pod_name nor instance",
                side = self.side
            ))
        })?;
        Ok(Endpoint::Pod(PodEndpoint {
            pod_name: pod_name.to_owned(),
            pod_namespace: self.pod_namespace.req(i, "pod_namespace")?.to_owned(),
            namespace: self.namespace.get(i).map(str::to_owned),
            workload_name: self.workload_name.get(i).map(str::to_owned),
            workload_kind: self.workload_kind.get(i).map(str::to_owned),
        }))
    }
}

/// Converts a RecordBatch of [`log_entry_schema`] (or a projection-compatible one with plain or
/// dictionary strings) back to LogEntries.
pub fn batch_to_log_entries(batch: &RecordBatch) -> Result<Vec<LogEntry>, ArrowError> {
    use col::*;
    let envelope = EnvelopeCols::of(batch)?;
    let src_ip = StrCol::of(batch, SRC_IP)?;
    let dest_ip = StrCol::of(batch, DEST_IP)?;
    let src_port = column(batch, SRC_PORT)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| ArrowError::SchemaError("src_port: expected Int32".into()))?;
    let dest_port = column(batch, DEST_PORT)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| ArrowError::SchemaError("dest_port: expected Int32".into()))?;
    let protocol = StrCol::of(batch, PROTOCOL)?;
    let direction = StrCol::of(batch, DIRECTION)?;
    let disposition = StrCol::of(batch, DISPOSITION)?;
    let policies = column(batch, POLICIES)?
        .as_list_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError("policies: expected List".into()))?;
    let src = EndpointCols::of(batch, "src")?;
    let dest = EndpointCols::of(batch, "dest")?;
    let count = column(batch, COUNT)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| ArrowError::SchemaError("count: expected Int64".into()))?;
    let node_name = StrCol::of(batch, NODE_NAME)?;
    let enforcement = StrCol::of(batch, ENFORCEMENT)?;

    let bad = |i: usize, what: String| ArrowError::InvalidArgumentError(format!("row {i}: {what}"));
    let port = |v: i32, i: usize, name: &str| {
        u16::try_from(v).map_err(|_| bad(i, format!("{name} {v} out of range")))
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let policies = if policies.is_valid(i) {
            let item = policies.value(i);
            let s = item.as_struct();
            let names = s.column(0).as_string::<i32>();
            let nss = s.column(1).as_string::<i32>();
            let kinds = s.column(2).as_string::<i32>();
            Some(
                (0..s.len())
                    .map(|j| PolicyRef {
                        name: names.value(j).to_owned(),
                        namespace: nss.is_valid(j).then(|| nss.value(j).to_owned()),
                        kind: kinds.is_valid(j).then(|| kinds.value(j).to_owned()),
                    })
                    .collect(),
            )
        } else {
            None
        };
        let record = PolicyActionRecord {
            connection: Connection {
                src_ip: parse_ip(src_ip.req(i, SRC_IP)?, i, SRC_IP)?,
                dest_ip: parse_ip(dest_ip.req(i, DEST_IP)?, i, DEST_IP)?,
                src_port: port(src_port.value(i), i, SRC_PORT)?,
                dest_port: port(dest_port.value(i), i, DEST_PORT)?,
                protocol: protocol
                    .req(i, PROTOCOL)?
                    .parse::<Protocol>()
                    .unwrap_or_else(|n| match n {}),
                direction: match direction.req(i, DIRECTION)? {
                    "ingress" => Direction::Ingress,
                    "egress" => Direction::Egress,
                    other => return Err(bad(i, format!("unknown direction {other:?}"))),
                },
            },
            disposition: match disposition.req(i, DISPOSITION)? {
                "allow" => Disposition::Allow,
                "deny" => Disposition::Deny,
                other => return Err(bad(i, format!("unknown disposition {other:?}"))),
            },
            policies,
            src: src.get(i)?,
            dest: dest.get(i)?,
            count: u64::try_from(count.value(i)).map_err(|_| bad(i, "negative count".into()))?,
            node_name: node_name.req(i, NODE_NAME)?.to_owned(),
            timestamp: envelope.timestamp(i),
            enforcement: match enforcement.get(i) {
                None => None,
                Some("audit") => Some(Enforcement::Audit),
                Some(other) => return Err(bad(i, format!("unknown enforcement {other:?}"))),
            },
        };
        out.push(envelope.entry(i, record)?);
    }
    Ok(out)
}

/// The envelope columns of a stored batch, read back (any stored table).
pub(crate) struct EnvelopeCols<'a> {
    timestamps: &'a arrow_array::TimestampNanosecondArray,
    receive: &'a arrow_array::TimestampNanosecondArray,
    insert_id: StrCol<'a>,
    log_name: StrCol<'a>,
    severity: StrCol<'a>,
    resource_type: StrCol<'a>,
    project: StrCol<'a>,
    location: StrCol<'a>,
    cluster: StrCol<'a>,
    rnode: StrCol<'a>,
}

impl<'a> EnvelopeCols<'a> {
    pub(crate) fn of(batch: &'a RecordBatch) -> Result<Self, ArrowError> {
        use col::*;
        let ts = |name: &str| {
            column(batch, name)?
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name}: expected Timestamp(ns)")))
        };
        Ok(EnvelopeCols {
            timestamps: ts(TIMESTAMP)?,
            receive: ts(RECEIVE_TIMESTAMP)?,
            insert_id: StrCol::of(batch, INSERT_ID)?,
            log_name: StrCol::of(batch, LOG_NAME)?,
            severity: StrCol::of(batch, SEVERITY)?,
            resource_type: StrCol::of(batch, RESOURCE_TYPE)?,
            project: StrCol::of(batch, PROJECT_ID)?,
            location: StrCol::of(batch, LOCATION)?,
            cluster: StrCol::of(batch, CLUSTER_NAME)?,
            rnode: StrCol::of(batch, RESOURCE_NODE_NAME)?,
        })
    }

    pub(crate) fn timestamp(&self, i: usize) -> Timestamp {
        Timestamp::from_unix_nanos(self.timestamps.value(i))
    }

    /// Row `i`'s envelope around `payload`.
    pub(crate) fn entry<P>(&self, i: usize, payload: P) -> Result<LogEntry<P>, ArrowError> {
        use col::*;
        let sev = self.severity.req(i, SEVERITY)?;
        Ok(LogEntry {
            log_name: self.log_name.req(i, LOG_NAME)?.to_owned(),
            resource: MonitoredResource {
                resource_type: self.resource_type.req(i, RESOURCE_TYPE)?.to_owned(),
                labels: ResourceLabels {
                    project_id: self.project.req(i, PROJECT_ID)?.to_owned(),
                    location: self.location.req(i, LOCATION)?.to_owned(),
                    cluster_name: self.cluster.req(i, CLUSTER_NAME)?.to_owned(),
                    node_name: self.rnode.req(i, RESOURCE_NODE_NAME)?.to_owned(),
                },
            },
            timestamp: self.timestamp(i),
            receive_timestamp: Timestamp::from_unix_nanos(self.receive.value(i)),
            insert_id: self.insert_id.req(i, INSERT_ID)?.to_owned(),
            severity: Severity::from_name(sev).ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!("row {i}: unknown severity {sev:?}"))
            })?,
            json_payload: payload,
        })
    }
}
