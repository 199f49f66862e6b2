//! The sinks' metrics (`verdict_collector_sink_*{sink="NAME"}`), read at each scrape from the
//! running sinks' states: sinks come and go with reloads, and a removed sink's series go with it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::runner::SinkState;
use super::{Sinks, lag};

/// The scrape-time collector of every sink's metrics, registered in the collector's registry.
#[derive(Debug)]
pub struct SinkMetrics {
    sinks: Arc<Sinks>,
}

impl SinkMetrics {
    pub fn new(sinks: Arc<Sinks>) -> SinkMetrics {
        SinkMetrics { sinks }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkReasonLabel {
    sink: String,
    reason: &'static str,
}

/// Encodes one family: `name` of `kind`, one sample per label set.
fn encode_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = family.encode_family(&labels)?;
        match kind {
            // Counters and gauges of sinks are whole numbers except lag seconds.
            MetricType::Counter => ConstCounter::new(value as u64).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

impl Collector for SinkMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sinks = &self.sinks;
        let head = *sinks.durable.borrow();
        let now = verdict_schema::Timestamp::now().unix_nanos();
        let states: Vec<(String, Arc<SinkState>)> = sinks
            .states
            .lock()
            .expect("sink states lock")
            .iter()
            .map(|(n, (_, s))| (n.clone(), Arc::clone(s)))
            .collect();
        let rejected: Vec<String> = sinks
            .rejected
            .lock()
            .expect("sink states lock")
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let per_sink = |get: &dyn Fn(&SinkState) -> f64| {
            states
                .iter()
                .map(|(sink, s)| (SinkLabel { sink: sink.clone() }, get(s)))
                .collect::<Vec<_>>()
        };
        let u = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        type Get = fn(&SinkState) -> f64;
        let counters: [(&str, &str, Get); 7] = [
            (
                "verdict_collector_sink_records_read",
                "Records read from the write-ahead log.",
                |s| g2(&s.records_read) as f64,
            ),
            (
                "verdict_collector_sink_records_excluded",
                "Records not selected by the sink's filter or exclusions.",
                |s| g2(&s.records_excluded) as f64,
            ),
            (
                "verdict_collector_sink_records_delivered",
                "Records the destination acknowledged.",
                |s| g2(&s.records_delivered) as f64,
            ),
            (
                "verdict_collector_sink_records_dead_lettered",
                "Records refused by the destination and written to the dead-letter file.",
                |s| g2(&s.records_dead_lettered) as f64,
            ),
            (
                "verdict_collector_sink_entries_dropped",
                "Write-ahead log entries deleted before the sink read them.",
                |s| g2(&s.entries_dropped) as f64,
            ),
            (
                "verdict_collector_sink_retries",
                "Failed sends retried (destination unavailable or records refused).",
                |s| g2(&s.retries) as f64,
            ),
            (
                "verdict_collector_sink_batches",
                "Batches handed to the destination.",
                |s| g2(&s.batches) as f64,
            ),
        ];
        for (name, help, get) in counters {
            encode_family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                per_sink(&get),
            )?;
        }
        encode_family(
            &mut encoder,
            "verdict_collector_sink_cursor_lsn",
            "The sink's durable cursor (write-ahead log sequence number).",
            MetricType::Gauge,
            per_sink(&|s| u(&s.cursor)),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_records_dropped",
            "Records a sink will never send, by reason (wal_retention: deleted from the log before the sink read them; undecodable; dead_letter_full: refused while the dead-letter file was full).",
            MetricType::Counter,
            states.iter().flat_map(|(sink, s)| {
                [
                    ("wal_retention", u(&s.records_dropped_retention)),
                    ("undecodable", u(&s.records_dropped_undecodable)),
                    ("dead_letter_full", u(&s.records_dropped_dead_letter_full)),
                ]
                .map(|(reason, v)| {
                    (
                        SinkReasonLabel {
                            sink: sink.clone(),
                            reason,
                        },
                        v,
                    )
                })
            }),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_lag_records",
            "Durable records the sink has not finished with.",
            MetricType::Gauge,
            per_sink(&|s| lag(s, head, now).0 as f64),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_lag_seconds",
            "Age (since receipt) of the oldest record the sink has read but not finished with; 0 when caught up.",
            MetricType::Gauge,
            per_sink(&|s| lag(s, head, now).1),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_up",
            "1 while the destination accepts records, 0 while it fails.",
            MetricType::Gauge,
            per_sink(&|s| {
                f64::from(u8::from(
                    s.healthy.load(Ordering::Relaxed) && !s.failed.load(Ordering::Relaxed),
                ))
            }),
        )?;
        encode_family(
            &mut encoder,
            "verdict_collector_sink_rejected",
            "1 for a sink whose definition was rejected (see the log or GET /sinks).",
            MetricType::Gauge,
            rejected.into_iter().map(|sink| (SinkLabel { sink }, 1.0)),
        )?;
        Ok(())
    }
}

fn g2(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}
