//! The logging pipeline core (logging decision, enrichment, aggregation, rate limit, JSON
//! serialization) on the synthetic cluster's event mix, rate limit off. No IO: see
//! `examples/pipeline_load.rs` for the whole path to the file.
//!
//! Run: `cargo bench -p verdict-probe --bench pipeline`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use verdict_probe::pipeline::{LoggingPipeline, PipelineConfig};
use verdict_probe::synthetic;
use verdict_schema::Timestamp;

fn bench(c: &mut Criterion) {
    let snapshot = synthetic::snapshot();
    let start = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let events = synthetic::events(&snapshot, 20_000, start);
    let mut g = c.benchmark_group("logging_pipeline");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("handle_20k_events", |b| {
        b.iter_batched(
            || {
                (
                    LoggingPipeline::new(
                        PipelineConfig {
                            rate_limit: 0,
                            ..PipelineConfig::default()
                        },
                        snapshot.clone(),
                    ),
                    events.clone(),
                )
            },
            |(mut p, evs)| {
                for ev in evs {
                    p.handle(ev, start);
                }
                p.finish(start);
                black_box(p.take_output().records.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
