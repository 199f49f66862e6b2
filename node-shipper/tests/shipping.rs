//! The shipper in process against the real collector on loopback: rotations while shipping, the
//! collector down and back, malformed lines, token and mutual TLS. What the collector stored is
//! read back from its committed Parquet files.

mod support;

use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_while_shipping_lose_and_repeat_nothing() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let served = Served::start(collector_config(&dir)).await;
    let shipper = start_shipper(shipper_config(&logs, &dir, served.grpc)).await;

    // ~20 KB per generation: rename rotations every ~45 records, keeping 5 as GKE does;
    // a copy-truncate rotation in the middle; a partially written last line at times.
    let mut log = RotatingLog::new(logs.join("policy_action.log"), 20_000, 5);
    let mut loss = RotatingLog::new(logs.join("policy_action_loss.log"), 1_000_000, 5);
    let mut written = Vec::new();
    let total = 1_500u64;
    let read = shipper.metrics().input("policy_action");
    for i in 1..=total {
        // Never more than ~3 generations ahead of the reader (5 are kept), however slow a
        // loaded machine makes it: within the node's retention nothing may be lost.
        let end = std::time::Instant::now() + DEADLINE;
        while read.records_read.get() + 130 < i {
            assert!(std::time::Instant::now() < end, "the reader is stuck");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let line = flow(i);
        if i % 97 == 0 {
            // Half a line now, the rest after the shipper has had a chance to see it.
            let (a, b) = line.split_at(line.len() / 2);
            use std::io::Write;
            let mut f = open_append(&log.path);
            f.write_all(a.as_bytes()).unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            f.write_all(format!("{b}\n").as_bytes()).unwrap();
        } else {
            log.write_line(&line);
        }
        written.push(line);
        if i % 10 == 0 {
            loss.write_line(&loss_json(NODE, BASE + i as i64, i));
        }
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i == 700 {
            // copy-truncate (logrotate's copytruncate): the tail not read yet comes from the copy.
            log.copy_truncate();
        }
    }
    assert!(log.rotations >= 20, "{} rotations", log.rotations);
    let m = shipper.metrics().input("policy_action");
    let done = tokio::time::timeout(DEADLINE, async {
        while m.records_acked.get() < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if done.is_err() {
        let rendered = shipper.metrics().render();
        shipper.shutdown().await;
        let stored = stored_flows(&served).await;
        let counts = payload_counts(&stored);
        let missing: Vec<usize> = written
            .iter()
            .enumerate()
            .filter(|(_, l)| !counts.contains_key(&canonical(l)))
            .map(|(i, _)| i + 1)
            .collect();
        let dups = served.collector.metrics().writer.records_deduplicated.get();
        panic!(
            "not everything acknowledged; missing {missing:?}; collector duplicates {dups}\n{rendered}"
        );
    }
    let lm = shipper.metrics().input("policy_action_loss");
    eventually(DEADLINE, "every loss marker acknowledged", || {
        lm.records_acked.get() >= total / 10
    })
    .await;
    shipper.shutdown().await;

    let stored = stored_flows(&served).await;
    let counts = payload_counts(&stored);
    assert_eq!(stored.len() as u64, total, "each record stored once");
    for line in &written {
        assert_eq!(
            counts.get(&canonical(line)),
            Some(&1),
            "stored once: {line}"
        );
    }
    for e in &stored {
        assert_eq!(e.resource.labels.node_name, NODE);
        assert_eq!(e.resource.labels.cluster_name, "cluster-a");
        assert_eq!(e.resource.labels.project_id, "proj");
        assert_eq!(e.log_name, "projects/proj/logs/policy-action");
    }
    let loss_rows: usize = {
        let mut n = 0;
        for b in served
            .collector
            .read_committed(verdict_collector::Table::Loss)
            .await
            .unwrap()
        {
            n += b.num_rows();
        }
        n
    };
    assert_eq!(
        loss_rows as u64,
        total / 10,
        "loss markers as their own log"
    );
    assert_eq!(
        m.dropped(verdict_shipper::metrics::DropReason::Malformed),
        0
    );
    assert_eq!(m.rotations_unaccounted.get(), 0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_for_a_while_then_back_gets_everything_in_order() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // A port nobody listens on yet; the collector will take it later.
    let grpc_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    drop(grpc_listener);
    // A small read-ahead: most of the backlog has to wait in the log files, across rotations
    // (~60 KB generations, 5 kept: the node keeps all of it).
    let mut cfg = shipper_config(&logs, &dir, grpc);
    cfg.batch.max_bytes = 16 * 1024;
    let shipper = start_shipper(cfg).await;
    let mut log = RotatingLog::new(logs.join("policy_action.log"), 60_000, 5);
    for i in 1..=400 {
        log.write_line(&flow(i));
    }
    let m = shipper.metrics().input("policy_action");
    eventually(DEADLINE, "failed attempts to reach the collector", || {
        m.stream_failures.get() >= 3
    })
    .await;
    let addr = shipper.metrics_addr().unwrap();
    assert_eq!(
        shipper_metric(
            addr,
            "verdict_shipper_records_acked_total{input=\"policy_action\"}"
        )
        .await,
        Some(0.0)
    );
    // The backlog shows as lag (the gauges are refreshed twice a second).
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let lag = shipper_metric(addr, "verdict_shipper_lag_bytes{input=\"policy_action\"}")
            .await
            .unwrap();
        if lag > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < end, "no lag shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 401..=600 {
        log.write_line(&flow(i));
    }

    // The collector comes up on the port the shipper keeps trying.
    let (collector, _) = verdict_collector::Collector::open(collector_config(&dir))
        .await
        .unwrap();
    let collector = std::sync::Arc::new(collector);
    let listeners = verdict_collector::Listeners {
        grpc: tokio::net::TcpListener::bind(grpc).await.unwrap(),
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let stop = verdict_service::shutdown::CancellationToken::new();
    let c = std::sync::Arc::clone(&collector);
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { c.serve(listeners, stop).await }
    });
    let done = tokio::time::timeout(DEADLINE, async {
        while m.records_acked.get() < 600 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "backlog not acknowledged:\n{}",
        shipper.metrics().render()
    );
    shipper.shutdown().await;
    stop.cancel();
    server.await.unwrap().unwrap();
    collector.flush().await.unwrap();
    let mut stored = Vec::new();
    for b in collector
        .read_committed(verdict_collector::Table::Flows)
        .await
        .unwrap()
    {
        stored.extend(verdict_schema::flat_schema::batch_to_log_entries(&b).unwrap());
    }
    // In order per source: the collector drops any record at or below its source's watermark,
    // so a record sent after a later one of its source would be missing here.
    let counts = payload_counts(&stored);
    assert_eq!(stored.len(), 600);
    for i in 1..=600 {
        assert_eq!(counts.get(&canonical(&flow(i))), Some(&1), "record {i}");
    }
    let rejected: u64 = collector.metrics().ingest.records_rejected_total();
    assert_eq!(rejected, 0);
    collector.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_counted_and_skipped_and_nothing_else_is_lost() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let served = Served::start(collector_config(&dir)).await;
    let mut cfg = shipper_config(&logs, &dir, served.grpc);
    cfg.max_line_bytes = 4096;
    let shipper = start_shipper(cfg).await;
    let mut log = RotatingLog::new(logs.join("policy_action.log"), 1 << 30, 5);
    let bad = [
        "this is not JSON".to_owned(),
        String::new(),
        // JSON, but not a policy-action record: only the collector can tell; the shipper
        // takes it out of the refused batch and sends the rest again.
        r#"{"connection": {"src_ip": "10.0.0.1"}}"#.to_owned(),
        // Truncated mid-record.
        flow(10_000)[..120].to_owned(),
        format!("{{\"x\": \"{}\"}}", "y".repeat(5000)),
    ];
    let mut good = Vec::new();
    for i in 1..=60u64 {
        let line = flow(i);
        log.write_line(&line);
        good.push(line);
        if i % 12 == 0 {
            log.write_line(&bad[(i / 12 - 1) as usize]);
        }
    }
    let m = shipper.metrics().input("policy_action");
    eventually(DEADLINE, "the good records acknowledged", || {
        m.records_acked.get() >= 60
    })
    .await;
    let addr = shipper.metrics_addr().unwrap();
    let exposition = collector::http_get(addr, "/metrics").await;
    shipper.shutdown().await;
    assert_eq!(
        metric(
            &exposition,
            "verdict_shipper_records_dropped_total{input=\"policy_action\",reason=\"malformed\"}"
        ),
        Some(5.0),
        "{exposition}"
    );
    let stored = stored_flows(&served).await;
    let counts = payload_counts(&stored);
    assert_eq!(stored.len(), 60);
    for line in &good {
        assert_eq!(counts.get(&canonical(line)), Some(&1));
    }
    served.stop().await;
}
