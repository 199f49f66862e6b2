//! Kernel map update time for a cluster of 1,000 pods × 500 policies (50 namespaces of 20 pods,
//! 10 policies each), every pod enforced on this node (the worst case): compile + write a full
//! state, then an incremental update after one policy changes; and for one pod isolated by 400
//! policies (the datapath holds 512 per pod and direction), full and after one of them changes.
//! Needs root and bpffs.
//!
//! Run: `cargo run --release -p verdict-probe --example map_update`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use verdict_cluster::PolicySnapshot;
use verdict_policy::engine::EnforcementMode;
use verdict_policy::{Engine, IpBlockMode};
use verdict_probe::kernel::compile::{NodeContext, Numbering, compile};
use verdict_probe::kernel::maps::KernelMaps;
use verdict_probe::synthetic::large_cluster_yaml;

fn main() -> anyhow::Result<()> {
    let pin_dir = Path::new("/sys/fs/bpf/verdict-map-update-bench");
    let yaml = large_cluster_yaml(50, 20, 10);
    let state = verdict_policy::manifests::load_str(&yaml, Path::new("bench.yaml"))?.state;
    let engine = Engine::build(&state, IpBlockMode::DataplaneV2)?;
    let node = NodeContext {
        node_name: "node-1".into(),
        default_mode: EnforcementMode::Enforce,
        idle_ns: 30_000_000_000,
    };
    let mut numbering = Numbering::default();
    let mut maps = KernelMaps::load(pin_dir)?;

    let t0 = Instant::now();
    let full = compile(&engine, &node, &mut numbering, None, 1);
    let compile_full = t0.elapsed();
    let t1 = Instant::now();
    let stats = maps.apply(&full)?;
    let apply_full = t1.elapsed();

    // One policy changes (a port added): only the pods it isolates are rewritten.
    let changed_yaml = yaml.replacen(
        "ports: [{port: 8080}, {port: metrics}]",
        "ports: [{port: 8080}, {port: 8443}, {port: metrics}]",
        1,
    );
    let state = verdict_policy::manifests::load_str(&changed_yaml, Path::new("bench.yaml"))?.state;
    let engine2 = Arc::new(PolicySnapshot {
        generation: 2,
        engine: Engine::build(&state, IpBlockMode::DataplaneV2)?,
    });
    let t2 = Instant::now();
    let next = compile(&engine2.engine, &node, &mut numbering, Some(&full), 2);
    let compile_inc = t2.elapsed();
    let t3 = Instant::now();
    let inc = maps.apply(&next)?;
    let apply_inc = t3.elapsed();

    let rules: usize = full.pod_dirs.values().map(|t| t.rules.len()).sum();
    let peers: usize = full.pod_dirs.values().map(|t| t.peer_masks.len()).sum();
    let cidrs: usize = full.pod_dirs.values().map(|t| t.cidr_masks.len()).sum();
    println!("| update | compile | map writes | write time | total |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| full state: 1,000 local pods × 500 policies ({} pod-directions, {rules} rules, {peers} peer masks, {cidrs} cidr prefixes, {} endpoints) | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
        full.pod_dirs.len(),
        full.endpoints.len(),
        compile_full.as_secs_f64() * 1e3,
        stats.writes,
        apply_full.as_secs_f64() * 1e3,
        (compile_full + apply_full).as_secs_f64() * 1e3
    );
    println!(
        "| one policy changed ({} pod-directions rewritten) | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
        inc.pod_dirs_changed,
        compile_inc.as_secs_f64() * 1e3,
        inc.writes,
        apply_inc.as_secs_f64() * 1e3,
        (compile_inc + apply_inc).as_secs_f64() * 1e3
    );
    drop(maps);
    verdict_probe::kernel::datapath::uninstall_everywhere(pin_dir).ok();

    // One pod selected by 400 policies, each allowing one port from the other pod.
    let mut maps = KernelMaps::load(pin_dir)?;
    let hot = |changed_port: u16| -> anyhow::Result<Engine> {
        let mut y = String::from(
            "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.0.0.0/16}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: hot}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: hot, labels: {pod: a}}\nspec: {nodeName: node-1}\nstatus: {podIP: 10.0.1.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: hot, labels: {pod: b}}\nspec: {nodeName: node-1}\nstatus: {podIP: 10.0.1.2}\n",
        );
        for i in 0..400u16 {
            let port = if i == 0 { changed_port } else { 1000 + i };
            y.push_str(&format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: hot}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}], ports: [{{port: {port}}}]}}]\n"
            ));
        }
        let state = verdict_policy::manifests::load_str(&y, Path::new("hot.yaml"))?.state;
        Ok(Engine::build(&state, IpBlockMode::DataplaneV2)?)
    };
    let mut numbering = Numbering::default();
    let engine = hot(1000)?;
    let t0 = Instant::now();
    let full = compile(&engine, &node, &mut numbering, None, 1);
    let compile_full = t0.elapsed();
    anyhow::ensure!(full.failed.is_empty(), "{:?}", full.failed);
    let t1 = Instant::now();
    let stats = maps.apply(&full)?;
    let apply_full = t1.elapsed();
    let engine = hot(999)?;
    let t2 = Instant::now();
    let next = compile(&engine, &node, &mut numbering, Some(&full), 2);
    let compile_inc = t2.elapsed();
    let t3 = Instant::now();
    let inc = maps.apply(&next)?;
    let apply_inc = t3.elapsed();
    let rules: usize = full.pod_dirs.values().map(|t| t.rules.len()).sum();
    println!(
        "| one pod isolated by 400 policies ({rules} rules) | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
        compile_full.as_secs_f64() * 1e3,
        stats.writes,
        apply_full.as_secs_f64() * 1e3,
        (compile_full + apply_full).as_secs_f64() * 1e3
    );
    println!(
        "| one of its 400 policies changed | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
        compile_inc.as_secs_f64() * 1e3,
        inc.writes,
        apply_inc.as_secs_f64() * 1e3,
        (compile_inc + apply_inc).as_secs_f64() * 1e3
    );
    drop(maps);
    verdict_probe::kernel::datapath::uninstall_everywhere(pin_dir).ok();
    Ok(())
}
