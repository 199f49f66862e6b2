//! The three example records of seed 000 parse and serialize back to equal JSON (timestamps
//! compared at nanosecond precision), and survive the Arrow and protobuf forms unchanged.

use serde_json::Value;
use verdict_schema::flat_schema::{batch_to_log_entries, log_entries_to_batch, log_entry_schema};
use verdict_schema::log_entry::{LogEntry, NodeIdentity, insert_id};
use verdict_schema::proto::v1;
use verdict_schema::{Disposition, Endpoint, PolicyActionRecord, PolicyRef, Timestamp};

const SEEDS: [(&str, &str); 3] = [
    (
        "allow client-green",
        include_str!("fixtures/seed000_allow_client_green.json"),
    ),
    (
        "deny client-red",
        include_str!("fixtures/seed000_deny_client_red.json"),
    ),
    (
        "kubelet probe",
        include_str!("fixtures/seed000_kubelet_probe.json"),
    ),
];

/// Replaces `timestamp` by its nanosecond value so JSON equality compares instants.
fn normalize(mut v: Value) -> Value {
    if let Some(ts) = v.get("timestamp").and_then(Value::as_str) {
        let ns = Timestamp::parse(ts).unwrap().unix_nanos();
        v["timestamp"] = Value::from(ns);
    }
    v
}

fn parse(text: &str) -> PolicyActionRecord {
    serde_json::from_str(text).unwrap()
}

#[test]
fn seed_records_round_trip_to_equal_json() {
    for (name, text) in SEEDS {
        let record = parse(text);
        let back: Value = serde_json::to_value(&record).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(normalize(back), normalize(original), "{name}");
    }
}

#[test]
fn seed_records_have_the_documented_shapes() {
    let allow = parse(SEEDS[0].1);
    assert_eq!(allow.disposition, Disposition::Allow);
    assert_eq!(
        allow.policies,
        Some(vec![PolicyRef::network_policy("default", "allow-green")])
    );
    assert_eq!(allow.count, 1);

    let deny = parse(SEEDS[1].1);
    assert_eq!(deny.disposition, Disposition::Deny);
    assert_eq!(deny.policies, None, "deny records carry no policies field");
    assert_eq!(deny.count, 3);
    assert!(!serde_json::to_string(&deny).unwrap().contains("policies"));

    let probe = parse(SEEDS[2].1);
    assert_eq!(probe.policies, Some(vec![PolicyRef::node_local()]));
    assert!(
        matches!(probe.src, Endpoint::Instance { instance } if instance.to_string() == "10.88.1.1")
    );
    // Ten fractional digits: nanoseconds kept, the tenth digit dropped.
    assert_eq!(
        probe.timestamp.to_string(),
        "2021-04-01T12:42:32.189872094Z"
    );
}

#[test]
fn output_field_order_is_gkes() {
    let s = serde_json::to_string(&parse(SEEDS[0].1)).unwrap();
    let order = [
        "\"connection\"",
        "\"disposition\"",
        "\"policies\"",
        "\"src\"",
        "\"dest\"",
        "\"count\"",
        "\"node_name\"",
        "\"timestamp\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| s.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{s}");
}

fn entries() -> Vec<LogEntry> {
    let node = NodeIdentity {
        project_id: "demo-project".into(),
        location: "us-central1-c".into(),
        cluster_name: "demo".into(),
        node_name: "gke-demo-default-pool-5dad52ed-k0h1".into(),
    };
    SEEDS
        .iter()
        .enumerate()
        .map(|(i, (_, text))| {
            let mut r = parse(text);
            if i == 1 {
                r.enforcement = Some(verdict_schema::Enforcement::Audit);
            }
            let seq = (i as u64 + 1) * 100;
            LogEntry::policy_action(
                r,
                &node,
                Timestamp::parse("2021-04-01T12:42:33Z").unwrap(),
                insert_id(&node.node_name, "source-1", seq),
            )
        })
        .collect()
}

#[test]
fn log_entries_round_trip_through_arrow() {
    let entries = entries();
    let batch = log_entries_to_batch(&entries).unwrap();
    assert_eq!(batch.schema(), log_entry_schema());
    assert_eq!(batch.num_rows(), 3);
    assert_eq!(batch_to_log_entries(&batch).unwrap(), entries);
}

#[test]
fn arrow_reader_accepts_plain_strings_for_dictionary_columns() {
    // Another writer (or a reader that decodes dictionaries) may hand back plain Utf8.
    use arrow_array::RecordBatch;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let batch = log_entries_to_batch(&entries()).unwrap();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if let DataType::Dictionary(_, _) = f.data_type() {
            let dict = c
                .as_any()
                .downcast_ref::<arrow_array::DictionaryArray<arrow_array::types::Int32Type>>()
                .unwrap();
            let values = dict
                .values()
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap();
            let plain: arrow_array::StringArray = dict
                .keys()
                .iter()
                .map(|k| k.map(|k| values.value(k as usize)))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
            columns.push(Arc::new(plain) as arrow_array::ArrayRef);
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    let plain = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    assert_eq!(batch_to_log_entries(&plain).unwrap(), entries());
}

#[test]
fn records_round_trip_through_protobuf() {
    use prost::Message;
    for (name, text) in SEEDS {
        let record = parse(text);
        let proto = v1::FlowRecord::from(&record);
        let bytes = proto.encode_to_vec();
        let decoded = v1::FlowRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            PolicyActionRecord::try_from(&decoded).unwrap(),
            record,
            "{name}"
        );
    }
}

#[test]
fn invalid_protobuf_records_say_what_is_wrong() {
    let mut proto = v1::FlowRecord::from(&parse(SEEDS[0].1));
    proto.connection.as_mut().unwrap().dest_port = 70000;
    let e = PolicyActionRecord::try_from(&proto)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dest_port 70000"), "{e}");
    proto.connection = None;
    assert!(
        PolicyActionRecord::try_from(&proto)
            .unwrap_err()
            .to_string()
            .contains("connection is missing")
    );
}

#[test]
fn log_entry_json_uses_cloud_logging_names() {
    let v = serde_json::to_value(&entries()[0]).unwrap();
    assert_eq!(v["logName"], "projects/demo-project/logs/policy-action");
    assert_eq!(v["resource"]["type"], "k8s_node");
    assert_eq!(v["resource"]["labels"]["cluster_name"], "demo");
    assert_eq!(v["jsonPayload"]["policies"][0]["name"], "allow-green");
    assert_eq!(v["timestamp"], "2020-06-16T03:10:37.993712906Z");
    assert!(v["receiveTimestamp"].is_string() && v["insertId"].is_string());
    let back: LogEntry = serde_json::from_value(v).unwrap();
    assert_eq!(back, entries()[0]);
}
