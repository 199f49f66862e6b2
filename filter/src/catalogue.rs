//! The field catalogue: every path a query may name, with its type, how an absent value behaves,
//! and the flat Arrow column that stores it.
//!
//! The reference distinguishes three kinds of field (§5):
//!
//! - **defaulted**: defined by the `LogEntry` type; when absent from an entry it compares as if
//!   present with its default value (`""`, `DEFAULT`, the Unix epoch).
//! - **missing**: a key of a map or Struct (`resource.labels.*`, `jsonPayload.*`) absent from an
//!   entry; every comparison on it is false, so `NOT f=x` is true and `f!=x` is false.
//! - **undefined**: anything else; an error before the query runs.
//!
//! Cloud Logging accepts any `jsonPayload.*` path, because its payloads are free-form. Verdict's
//! payload is always the GKE policy-action record, so a `jsonPayload` path outside that record
//! (a typo such as `jsonPayload.dest.pod_nmae`) is reported as **undefined** rather than silently
//! matching nothing. Known payload fields that a given record lacks (`policies` on a deny,
//! `src.instance` on a pod endpoint) are **missing**, as the reference says.
//!
//! Case: protobuf field names of the envelope (`logName`, `resource`, `type`, `labels`,
//! `severity`, `jsonPayload`, …) match in any letter case; map keys and Struct keys
//! (`resource.labels.<key>`, everything under `jsonPayload`) are case sensitive (§1).

use verdict_schema::flat_schema::col;

/// The type of a leaf field, which decides how a query value is converted and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Free text. Comparisons ignore case; `:` is a substring test; regexes see the raw text.
    String,
    /// Text with a small, mostly closed set of values (`disposition`, `direction`, …). Compared
    /// exactly like [`FieldType::String`]; the values are listed for translators and tooling
    /// (dictionary columns, completion).
    Enum(&'static [&'static str]),
    /// A whole number (ports, `count`). Compared numerically; `:` means equality.
    Integer,
    /// A point in time, compared as an instant; `:` and regexes see its RFC 3339 text.
    Timestamp,
    /// `LogSeverity`, ordered by its numeric value (`DEFAULT` 0 … `EMERGENCY` 800).
    Severity,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A scalar that can be compared.
    Leaf(FieldType),
    /// An object: only presence (`:*`), `SEARCH` and paths into it apply.
    Object,
    /// A list of objects (`jsonPayload.policies`): only presence (`:*`), `SEARCH` and paths into
    /// its elements apply. A comparison on a path through it matches if any element matches.
    ArrayOfObjects,
}

/// How a field behaves when an entry lacks it (reference §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// A `LogEntry` field: compared as if present with its default value; `:*` is still false.
    Defaulted,
    /// A map or payload key: every comparison is false (`NOT f=x` is true, `f!=x` is false).
    Missing,
}

/// One path a query may name.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    /// Canonical dotted path, as the LogEntry JSON spells it: `jsonPayload.dest.pod_name`.
    pub path: &'static str,
    /// The JSON keys along the path.
    pub segments: &'static [&'static str],
    /// How many leading segments are protobuf field names, matched in any letter case; the rest
    /// are map or Struct keys, matched exactly.
    pub case_insensitive_segments: usize,
    pub kind: FieldKind,
    pub absence: Absence,
    /// Whether the path runs through `jsonPayload.policies` (a list): comparisons are ORed over
    /// its elements.
    pub repeated: bool,
    /// The column of the flat Arrow schema ([`verdict_schema::flat_schema`]) that stores it, if
    /// any (objects have none; `jsonPayload.policies` is the `policies` list column).
    pub column: Option<&'static str>,
    /// For paths into `jsonPayload.policies` elements: the field of the list's struct.
    pub struct_field: Option<&'static str>,
}

impl Field {
    /// The leaf type, or `None` for objects and lists.
    pub fn field_type(&self) -> Option<FieldType> {
        match self.kind {
            FieldKind::Leaf(t) => Some(t),
            FieldKind::Object | FieldKind::ArrayOfObjects => None,
        }
    }

    /// Whether the value is text in the LogEntry JSON (strings, enums, timestamps, severities),
    /// which is what `SEARCH`, global restrictions and regexes look at.
    pub fn is_text(&self) -> bool {
        !matches!(self.kind, FieldKind::Leaf(FieldType::Integer))
    }
}

const DISPOSITIONS: &[&str] = &["allow", "deny"];
const DIRECTIONS: &[&str] = &["ingress", "egress"];
const PROTOCOLS: &[&str] = &["tcp", "udp", "sctp", "icmp", "icmpv6"];
const ENFORCEMENTS: &[&str] = &["audit"];
const RESOURCE_TYPES: &[&str] = &[verdict_schema::log_entry::RESOURCE_TYPE];

const fn envelope(
    path: &'static str,
    segments: &'static [&'static str],
    field_type: FieldType,
    column: &'static str,
) -> Field {
    Field {
        path,
        segments,
        case_insensitive_segments: segments.len(),
        kind: FieldKind::Leaf(field_type),
        absence: Absence::Defaulted,
        repeated: false,
        column: Some(column),
        struct_field: None,
    }
}

const fn label(
    path: &'static str,
    segments: &'static [&'static str],
    column: &'static str,
) -> Field {
    Field {
        path,
        segments,
        case_insensitive_segments: 2,
        kind: FieldKind::Leaf(FieldType::String),
        absence: Absence::Missing,
        repeated: false,
        column: Some(column),
        struct_field: None,
    }
}

const fn payload(
    path: &'static str,
    segments: &'static [&'static str],
    field_type: FieldType,
    column: &'static str,
) -> Field {
    Field {
        path,
        segments,
        case_insensitive_segments: 1,
        kind: FieldKind::Leaf(field_type),
        absence: Absence::Missing,
        repeated: false,
        column: Some(column),
        struct_field: None,
    }
}

const fn policy(
    path: &'static str,
    segments: &'static [&'static str],
    name: &'static str,
) -> Field {
    Field {
        path,
        segments,
        case_insensitive_segments: 1,
        kind: FieldKind::Leaf(FieldType::String),
        absence: Absence::Missing,
        repeated: true,
        column: Some(col::POLICIES),
        struct_field: Some(name),
    }
}

const fn object(
    path: &'static str,
    segments: &'static [&'static str],
    case_insensitive_segments: usize,
    absence: Absence,
) -> Field {
    Field {
        path,
        segments,
        case_insensitive_segments,
        kind: FieldKind::Object,
        absence,
        repeated: false,
        column: None,
        struct_field: None,
    }
}

/// Every path a query may name, objects included, in LogEntry order.
pub static FIELDS: &[Field] = &[
    envelope("logName", &["logName"], FieldType::String, col::LOG_NAME),
    object("resource", &["resource"], 1, Absence::Defaulted),
    envelope(
        "resource.type",
        &["resource", "type"],
        FieldType::Enum(RESOURCE_TYPES),
        col::RESOURCE_TYPE,
    ),
    object(
        "resource.labels",
        &["resource", "labels"],
        2,
        Absence::Defaulted,
    ),
    label(
        "resource.labels.project_id",
        &["resource", "labels", "project_id"],
        col::PROJECT_ID,
    ),
    label(
        "resource.labels.location",
        &["resource", "labels", "location"],
        col::LOCATION,
    ),
    label(
        "resource.labels.cluster_name",
        &["resource", "labels", "cluster_name"],
        col::CLUSTER_NAME,
    ),
    label(
        "resource.labels.node_name",
        &["resource", "labels", "node_name"],
        col::RESOURCE_NODE_NAME,
    ),
    envelope(
        "timestamp",
        &["timestamp"],
        FieldType::Timestamp,
        col::TIMESTAMP,
    ),
    envelope(
        "receiveTimestamp",
        &["receiveTimestamp"],
        FieldType::Timestamp,
        col::RECEIVE_TIMESTAMP,
    ),
    envelope("insertId", &["insertId"], FieldType::String, col::INSERT_ID),
    envelope(
        "severity",
        &["severity"],
        FieldType::Severity,
        col::SEVERITY,
    ),
    object("jsonPayload", &["jsonPayload"], 1, Absence::Defaulted),
    object(
        "jsonPayload.connection",
        &["jsonPayload", "connection"],
        1,
        Absence::Missing,
    ),
    payload(
        "jsonPayload.connection.src_ip",
        &["jsonPayload", "connection", "src_ip"],
        FieldType::String,
        col::SRC_IP,
    ),
    payload(
        "jsonPayload.connection.dest_ip",
        &["jsonPayload", "connection", "dest_ip"],
        FieldType::String,
        col::DEST_IP,
    ),
    payload(
        "jsonPayload.connection.src_port",
        &["jsonPayload", "connection", "src_port"],
        FieldType::Integer,
        col::SRC_PORT,
    ),
    payload(
        "jsonPayload.connection.dest_port",
        &["jsonPayload", "connection", "dest_port"],
        FieldType::Integer,
        col::DEST_PORT,
    ),
    payload(
        "jsonPayload.connection.protocol",
        &["jsonPayload", "connection", "protocol"],
        FieldType::Enum(PROTOCOLS),
        col::PROTOCOL,
    ),
    payload(
        "jsonPayload.connection.direction",
        &["jsonPayload", "connection", "direction"],
        FieldType::Enum(DIRECTIONS),
        col::DIRECTION,
    ),
    payload(
        "jsonPayload.disposition",
        &["jsonPayload", "disposition"],
        FieldType::Enum(DISPOSITIONS),
        col::DISPOSITION,
    ),
    Field {
        path: "jsonPayload.policies",
        segments: &["jsonPayload", "policies"],
        case_insensitive_segments: 1,
        kind: FieldKind::ArrayOfObjects,
        absence: Absence::Missing,
        repeated: true,
        column: Some(col::POLICIES),
        struct_field: None,
    },
    policy(
        "jsonPayload.policies.name",
        &["jsonPayload", "policies", "name"],
        "name",
    ),
    policy(
        "jsonPayload.policies.namespace",
        &["jsonPayload", "policies", "namespace"],
        "namespace",
    ),
    policy(
        "jsonPayload.policies.kind",
        &["jsonPayload", "policies", "kind"],
        "kind",
    ),
    object(
        "jsonPayload.src",
        &["jsonPayload", "src"],
        1,
        Absence::Missing,
    ),
    payload(
        "jsonPayload.src.pod_name",
        &["jsonPayload", "src", "pod_name"],
        FieldType::String,
        col::SRC_POD_NAME,
    ),
    payload(
        "jsonPayload.src.pod_namespace",
        &["jsonPayload", "src", "pod_namespace"],
        FieldType::String,
        col::SRC_POD_NAMESPACE,
    ),
    payload(
        "jsonPayload.src.namespace",
        &["jsonPayload", "src", "namespace"],
        FieldType::String,
        col::SRC_NAMESPACE,
    ),
    payload(
        "jsonPayload.src.workload_name",
        &["jsonPayload", "src", "workload_name"],
        FieldType::String,
        col::SRC_WORKLOAD_NAME,
    ),
    payload(
        "jsonPayload.src.workload_kind",
        &["jsonPayload", "src", "workload_kind"],
        FieldType::String,
        col::SRC_WORKLOAD_KIND,
    ),
    payload(
        "jsonPayload.src.instance",
        &["jsonPayload", "src", "instance"],
        FieldType::String,
        col::SRC_INSTANCE,
    ),
    object(
        "jsonPayload.dest",
        &["jsonPayload", "dest"],
        1,
        Absence::Missing,
    ),
    payload(
        "jsonPayload.dest.pod_name",
        &["jsonPayload", "dest", "pod_name"],
        FieldType::String,
        col::DEST_POD_NAME,
    ),
    payload(
        "jsonPayload.dest.pod_namespace",
        &["jsonPayload", "dest", "pod_namespace"],
        FieldType::String,
        col::DEST_POD_NAMESPACE,
    ),
    payload(
        "jsonPayload.dest.namespace",
        &["jsonPayload", "dest", "namespace"],
        FieldType::String,
        col::DEST_NAMESPACE,
    ),
    payload(
        "jsonPayload.dest.workload_name",
        &["jsonPayload", "dest", "workload_name"],
        FieldType::String,
        col::DEST_WORKLOAD_NAME,
    ),
    payload(
        "jsonPayload.dest.workload_kind",
        &["jsonPayload", "dest", "workload_kind"],
        FieldType::String,
        col::DEST_WORKLOAD_KIND,
    ),
    payload(
        "jsonPayload.dest.instance",
        &["jsonPayload", "dest", "instance"],
        FieldType::String,
        col::DEST_INSTANCE,
    ),
    payload(
        "jsonPayload.count",
        &["jsonPayload", "count"],
        FieldType::Integer,
        col::COUNT,
    ),
    payload(
        "jsonPayload.node_name",
        &["jsonPayload", "node_name"],
        FieldType::String,
        col::NODE_NAME,
    ),
    // A string in Cloud Logging (payload values are JSON); Verdict stores it in the same
    // `timestamp` column as the envelope's and compares it as an instant (README, choice C3).
    payload(
        "jsonPayload.timestamp",
        &["jsonPayload", "timestamp"],
        FieldType::Timestamp,
        col::TIMESTAMP,
    ),
    payload(
        "jsonPayload.enforcement",
        &["jsonPayload", "enforcement"],
        FieldType::Enum(ENFORCEMENTS),
        col::ENFORCEMENT,
    ),
];

/// Cloud Logging `LogEntry` fields that Verdict entries never carry: naming one is an error
/// with a specific explanation rather than a bare "undefined field".
const FOREIGN_LOG_ENTRY_FIELDS: &[&str] = &[
    "httpRequest",
    "labels",
    "metadata",
    "operation",
    "protoPayload",
    "sourceLocation",
    "spanId",
    "split",
    "textPayload",
    "trace",
    "traceSampled",
    "errorGroups",
    "apphub",
    "apphubDestination",
];

/// Every path a query may name.
pub fn fields() -> &'static [Field] {
    FIELDS
}

/// The field a path names, or `None` when it is undefined.
pub fn lookup<S: AsRef<str>>(segments: &[S]) -> Option<&'static Field> {
    FIELDS.iter().find(|f| {
        f.segments.len() == segments.len()
            && f.segments
                .iter()
                .zip(segments)
                .enumerate()
                .all(|(i, (known, given))| {
                    if i < f.case_insensitive_segments {
                        known.eq_ignore_ascii_case(given.as_ref())
                    } else {
                        *known == given.as_ref()
                    }
                })
    })
}

/// Why a path is undefined and what the user probably meant, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Undefined {
    pub suggestion: Option<&'static str>,
    pub reason: Option<String>,
}

pub(crate) fn explain_undefined<S: AsRef<str>>(segments: &[S]) -> Undefined {
    let names: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
    let suggestion = closest(&names);
    let first = names.first().copied().unwrap_or("");
    // The longest known prefix says most about what went wrong.
    let parent = (1..names.len()).rev().find_map(|n| lookup(&names[..n]));
    let reason = if FOREIGN_LOG_ENTRY_FIELDS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(first))
    {
        Some("a Cloud Logging LogEntry field that Verdict entries never carry".to_owned())
    } else if let Some(parent) = parent {
        if let FieldKind::Leaf(_) = parent.kind {
            Some(format!("{} is a scalar and has no subfields", parent.path))
        } else if suggestion.is_none() {
            let children: Vec<&str> = FIELDS
                .iter()
                .filter(|f| {
                    f.segments.len() == parent.segments.len() + 1
                        && f.segments.starts_with(parent.segments)
                })
                .filter_map(|f| f.segments.last().copied())
                .collect();
            Some(format!("{} has {}", parent.path, children.join(", ")))
        } else {
            None
        }
    } else {
        None
    };
    Undefined { suggestion, reason }
}

/// The known path nearest to `names` when every segment that differs is a plausible typo of
/// the known one (within a third of its length, at least one edit), ignoring case.
fn closest(names: &[&str]) -> Option<&'static str> {
    FIELDS
        .iter()
        .filter(|f| f.segments.len() == names.len())
        .filter_map(|f| {
            let mut total = 0;
            for (known, given) in f.segments.iter().zip(names) {
                let d = edit_distance(&known.to_ascii_lowercase(), &given.to_ascii_lowercase());
                if d > 1.max(known.len() / 3) {
                    return None;
                }
                total += d;
            }
            Some((total, f.path))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, path)| path)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_names_ignore_case_payload_keys_do_not() {
        assert_eq!(lookup(&["LOGNAME"]).unwrap().path, "logName");
        assert_eq!(
            lookup(&["JsonPayload", "disposition"]).unwrap().path,
            "jsonPayload.disposition"
        );
        assert!(lookup(&["jsonPayload", "Disposition"]).is_none());
        assert!(lookup(&["resource", "labels", "Cluster_Name"]).is_none());
        assert_eq!(
            lookup(&["RESOURCE", "Labels", "cluster_name"])
                .unwrap()
                .path,
            "resource.labels.cluster_name"
        );
    }

    #[test]
    fn typos_get_a_suggestion() {
        let u = explain_undefined(&["jsonPayload", "dest", "pod_nmae"]);
        assert_eq!(u.suggestion, Some("jsonPayload.dest.pod_name"));
        let u = explain_undefined(&["jsonPayload", "Disposition"]);
        assert_eq!(u.suggestion, Some("jsonPayload.disposition"));
        assert_eq!(explain_undefined(&["thud"]).suggestion, None);
        assert_eq!(explain_undefined(&["jsonPayload", "x"]).suggestion, None);
        assert_eq!(
            explain_undefined(&["jsonPaylod", "dispostion"]).suggestion,
            Some("jsonPayload.disposition")
        );
        assert!(explain_undefined(&["textPayload"]).reason.is_some());
        assert_eq!(
            explain_undefined(&["logName", "thud"]).reason.unwrap(),
            "logName is a scalar and has no subfields"
        );
        let u = explain_undefined(&["jsonPayload", "src", "thud"]);
        assert_eq!(u.suggestion, None);
        assert_eq!(
            u.reason.unwrap(),
            "jsonPayload.src has pod_name, pod_namespace, namespace, workload_name, \
             workload_kind, instance"
        );
    }

    #[test]
    fn every_flat_column_is_reachable_from_a_path() {
        for (column, _) in verdict_schema::flat_schema::COLUMN_PATHS {
            assert!(
                FIELDS.iter().any(|f| f.column == Some(column)),
                "column {column} has no path"
            );
        }
        for f in FIELDS {
            assert_eq!(f.path, f.segments.join("."));
        }
    }
}
