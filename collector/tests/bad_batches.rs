//! Bad batches are refused with a clear rejection, in order, and the stream's other batches are
//! unaffected; a message above the transport limit ends its stream with a clear status.

mod support;

use bytes::Bytes;
use support::*;
use verdict_collector::Table;
use verdict_schema::proto::v1::{self, RejectionCode};

fn flows(node: &str, seqs: std::ops::Range<u64>) -> Vec<v1::Record> {
    seqs.map(|s| {
        json_record(
            s,
            v1::LogId::PolicyAction,
            &flow_json(node, s, 1_767_225_600),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_and_the_rest_of_the_stream_is_stored() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.grpc.max_batch_bytes = verdict_collector::config::ByteSize(64 << 10);
    cfg.grpc.max_record_bytes = verdict_collector::config::ByteSize(16 << 10);
    let served = Served::start(cfg).await;
    let mut s = served.stream().await;

    let src = "src-1";
    let good1 = batch("n1", src, 1, flows("n1", 1..11));
    let oversized = batch("n1", src, 2, flows("n1", 11..211));
    let mut wrong_version = batch("n1", src, 3, flows("n1", 211..221));
    wrong_version.schema_version = 7;
    let garbage = Bytes::from_static(b"\xff\xff\xff\xff this is not a protobuf Batch \x00\x01");
    let mut invalid_json = batch("n1", src, 5, flows("n1", 221..231));
    invalid_json.records[4] = json_record(
        225,
        v1::LogId::PolicyAction,
        "{\"connection\": {\"src_ip\": ",
    );
    let mut no_identity = batch("n1", src, 6, flows("n1", 231..241));
    no_identity.node = None;
    let mut out_of_order = batch("n1", src, 7, flows("n1", 241..251));
    out_of_order.records.swap(2, 3);
    let stale_batch_id = batch("n1", src, 7, flows("n1", 251..261));
    let good2 = batch("n1", src, 9, flows("n1", 261..271));

    // All sent back to back, without waiting for answers.
    s.send(&good1).await;
    s.send(&oversized).await;
    s.send(&wrong_version).await;
    s.send_raw(garbage).await;
    s.send(&invalid_json).await;
    s.send(&no_identity).await;
    s.send(&out_of_order).await;
    s.send(&stale_batch_id).await;
    s.send(&good2).await;

    let expect: [(u64, Option<RejectionCode>, &str); 9] = [
        (1, None, ""),
        (2, Some(RejectionCode::TooLarge), "grpc.max_batch_bytes"),
        (
            3,
            Some(RejectionCode::UnsupportedSchemaVersion),
            "schema_version 7 is not supported",
        ),
        (
            0,
            Some(RejectionCode::Malformed),
            "not a verdict.ingest.v1.Batch",
        ),
        (
            5,
            Some(RejectionCode::InvalidRecord),
            "record 4 (sequence 225)",
        ),
        (
            6,
            Some(RejectionCode::MissingIdentity),
            "node.node_name is missing",
        ),
        (
            7,
            Some(RejectionCode::OutOfOrder),
            "record 3 has sequence 243 after 244",
        ),
        (7, Some(RejectionCode::OutOfOrder), "batch_id 7 after 7"),
        (9, None, ""),
    ];
    for (batch_id, code, text) in expect {
        let r = s.next().await.expect("every batch is answered");
        assert_eq!(r.batch_id, batch_id, "{r:?}");
        match code {
            None => {
                assert_eq!(r.rejection, None, "{r:?}");
                assert_eq!(r.stored, 10);
            }
            Some(code) => {
                let rej = r.rejection.as_ref().unwrap_or_else(|| panic!("{r:?}"));
                assert_eq!(rej.code, code as i32, "{r:?}");
                assert!(
                    rej.message.contains(text),
                    "{:?} lacks {text:?}",
                    rej.message
                );
                assert_eq!(r.stored, 0);
            }
        }
    }
    // A rejected batch stored nothing and did not move the watermark; the good batches did.
    let r = s.call(&batch("n1", src, 10, flows("n1", 271..281))).await;
    assert_eq!((r.stored, r.duplicates, r.durable_sequence), (10, 0, 280));
    assert!(s.finish().await.is_empty(), "the stream ends cleanly");

    served.collector.flush().await.unwrap();
    let stored = committed_rows(&served.collector, Table::Flows).await;
    assert_eq!(stored, 30);
    let m = served.metrics().await;
    for (reason, batches) in [
        ("too_large", 1.0),
        ("unsupported_schema_version", 1.0),
        ("malformed", 1.0),
        ("invalid_record", 1.0),
        ("missing_identity", 1.0),
        ("out_of_order", 2.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("verdict_collector_batches_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(batches),
            "{reason}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "verdict_collector_records_rejected_total{reason=\"too_large\"}"
        ),
        Some(200.0)
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_above_the_transport_limit_ends_only_its_stream() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.grpc.max_batch_bytes = verdict_collector::config::ByteSize(256 << 10);
    cfg.grpc.max_record_bytes = verdict_collector::config::ByteSize(64 << 10);
    cfg.grpc.max_message_bytes = verdict_collector::config::ByteSize(1 << 20);
    let served = Served::start(cfg).await;
    let ch = channel(served.grpc).await;
    let mut s = Stream::open(ch.clone(), None).await.unwrap();
    let r = s.call(&batch("n1", "a", 1, flows("n1", 1..6))).await;
    assert_eq!(r.stored, 5);
    s.send_raw(Bytes::from(vec![0u8; 2 << 20])).await;
    let status = s.next().await.expect_err("the stream ends");
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    assert!(status.message().contains("limit"), "{status:?}");
    // Another stream on the same connection is unaffected; the first batch stayed stored.
    let mut other = Stream::open(ch, None).await.unwrap();
    let r = other.call(&batch("n1", "a", 1, flows("n1", 1..8))).await;
    assert_eq!((r.stored, r.duplicates, r.durable_sequence), (2, 5, 7));
    drop(other);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sequence_cannot_hide_the_records_still_to_come() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.grpc.max_sequence_gap = verdict_collector::config::ByteSize(1 << 20);
    let served = Served::start(cfg).await;
    let mut s = served.stream().await;
    let src = "src-gap";
    assert_eq!(
        s.call(&batch("n1", src, 1, flows("n1", 1..11)))
            .await
            .stored,
        10
    );
    // Before the rule, sequence 2^64-1 became the watermark and every later record a
    // "duplicate", acknowledged and discarded.
    for (id, forged) in [(2, u64::MAX), (3, 10 + (1 << 20) + 4096)] {
        let mut b = batch("n1", src, id, flows("n1", 11..12));
        b.records[0].sequence = forged;
        let r = s.call(&b).await;
        let rej = r.rejection.as_ref().unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(rej.code, RejectionCode::OutOfOrder as i32, "{rej:?}");
        assert!(rej.message.contains("grpc.max_sequence_gap"), "{rej:?}");
        assert_eq!(r.durable_sequence, 10, "the watermark did not move");
    }
    // A leap inside one batch is refused the same way.
    let mut b = batch("n1", src, 4, flows("n1", 11..14));
    b.records[2].sequence = u64::MAX;
    let r = s.call(&b).await;
    assert_eq!(
        r.rejection.as_ref().map(|r| r.code),
        Some(RejectionCode::OutOfOrder as i32),
        "{r:?}"
    );
    // The real records keep coming and are stored.
    let r = s.call(&batch("n1", src, 5, flows("n1", 11..21))).await;
    assert_eq!((r.stored, r.duplicates, r.durable_sequence), (10, 0, 20));
    // Skipped lines (a gap within the bound) are fine: a file source may skip malformed lines.
    let r = s.call(&batch("n1", src, 6, flows("n1", 5000..5010))).await;
    assert_eq!(r.stored, 10, "{r:?}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_that_is_not_one_cannot_reach_the_metrics() {
    let (_guard, dir) = tempdir();
    let served = Served::start(config(&dir)).await;
    let mut s = served.stream().await;
    for name in [
        "n1\nverdict_collector_forged_total 1",
        "N1",
        "n1\"} 1\n#",
        &"a".repeat(300),
    ] {
        let r = s.call(&batch(name, "src", 1, flows("n1", 1..2))).await;
        let rej = r
            .rejection
            .as_ref()
            .unwrap_or_else(|| panic!("{name:?}: {r:?}"));
        assert_eq!(rej.code, RejectionCode::MissingIdentity as i32, "{rej:?}");
        assert!(
            rej.message.contains("not a Kubernetes node name"),
            "{rej:?}"
        );
        s = served.stream().await;
    }
    assert_eq!(
        s.call(&batch("n1", "src", 1, flows("n1", 1..2)))
            .await
            .stored,
        1
    );
    // Every sample line of the exposition is NAME{LABELS} VALUE.
    let m = served.metrics().await;
    assert!(!m.contains("verdict_collector_forged_total"), "{m}");
    for line in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(value.parse::<f64>().is_ok(), "{line:?}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line:?}"
        );
    }
    served.stop().await;
}
