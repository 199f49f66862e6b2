//! Engine throughput on a cluster of 1,000 pods × 500 policies (50 namespaces of 20 pods, 10
//! policies each mixing pod/namespace selectors, expressions, ports, ranges, named ports and
//! ipBlocks). Reports evaluations per second of full connection verdicts (both directions), and
//! the time to compile the engine.
//!
//! Run: `cargo bench -p verdict-policy --bench evaluate`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_policy::engine::Flow;
use verdict_policy::manifests::load_str;
use verdict_policy::{EndpointSpec, Engine, IpBlockMode};
use verdict_schema::Protocol;

const NAMESPACES: usize = 50;
const PODS_PER_NS: usize = 20;
const POLICIES_PER_NS: usize = 10;

fn cluster_yaml() -> String {
    verdict_policy::synthetic::cluster_yaml(NAMESPACES, PODS_PER_NS, POLICIES_PER_NS)
}

fn flows(e: &Engine) -> Vec<Flow> {
    // A fixed pseudo-random walk over pod pairs and ports (xorshift, no RNG dependency).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..4096)
        .map(|_| {
            let s = next() as usize;
            let d = next() as usize;
            let src = EndpointSpec::Pod {
                namespace: format!("ns{}", s % NAMESPACES),
                name: format!("pod{}", (s / 64) % PODS_PER_NS),
            };
            let dest = EndpointSpec::Pod {
                namespace: format!("ns{}", d % NAMESPACES),
                name: format!("pod{}", (d / 64) % PODS_PER_NS),
            };
            let (src, dest) = e.resolve_pair(&src, &dest).unwrap();
            let port = [80, 8080, 8050, 9090, 53][next() as usize % 5];
            Flow {
                src,
                dest,
                protocol: Protocol::Tcp,
                dest_port: port,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let loaded = load_str(&cluster_yaml(), Path::new("bench.yaml")).unwrap();
    assert_eq!(loaded.state.pods.len(), NAMESPACES * PODS_PER_NS);
    assert_eq!(loaded.state.policies.len(), NAMESPACES * POLICIES_PER_NS);
    let engine = Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap();
    let flows = flows(&engine);
    let allowed = flows
        .iter()
        .filter(|f| engine.evaluate(f).allowed())
        .count();
    assert!(
        allowed > 0 && allowed < flows.len(),
        "a useful mix of verdicts ({allowed}/{})",
        flows.len()
    );

    let mut g = c.benchmark_group("engine_1000_pods_500_policies");
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.bench_function("evaluate", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for f in &flows {
                n += usize::from(black_box(engine.evaluate(f)).allowed());
            }
            n
        })
    });
    g.bench_function("evaluate_and_log_decision", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for f in &flows {
                let v = engine.evaluate(f);
                n += usize::from(engine.log_decision(&v.ingress).is_logged());
                n += usize::from(engine.log_decision(&v.egress).is_logged());
            }
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("engine_compile");
    g.sample_size(10);
    g.bench_function("build_1000_pods_500_policies", |b| {
        b.iter(|| Engine::build(black_box(&loaded.state), IpBlockMode::DataplaneV2).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
