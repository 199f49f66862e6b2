//! Kernel map update time for a cluster of 1,000 pods × 500 policies (50 namespaces of 20 pods,
//! 10 policies each), every pod enforced on this node (the worst case): compile + write a full
//! state, then an incremental update after one policy changes; and for one pod isolated by 400
//! policies (the datapath holds 512 per pod and direction), full and after one of them changes.
//! Needs root and bpffs.
//!
//! Run: `cargo run --release -p verdict-probe --example map_update`

use std::path::Path;
use std::time::Instant;

use verdict_policy::engine::EnforcementMode;
use verdict_policy::{Engine, IpBlockMode};
use verdict_probe::kernel::compile::{NodeContext, Numbering, Tables, compile};
use verdict_probe::kernel::maps::{ApplyStats, KernelMaps};
use verdict_probe::synthetic::large_cluster_yaml;

/// Compiles `engine` (incrementally after `previous`) and writes it to the maps, printing one
/// table row labelled by `label(tables, stats)`.
fn update(
    maps: &mut KernelMaps,
    engine: &Engine,
    numbering: &mut Numbering,
    previous: Option<&Tables>,
    generation: u64,
    label: impl Fn(&Tables, &ApplyStats) -> String,
) -> anyhow::Result<Tables> {
    let node = NodeContext {
        node_name: "node-1".into(),
        default_mode: EnforcementMode::Enforce,
        idle_ns: 30_000_000_000,
    };
    let t0 = Instant::now();
    let tables = compile(engine, &node, numbering, previous, generation);
    let compiled = t0.elapsed();
    anyhow::ensure!(tables.failed.is_empty(), "{:?}", tables.failed);
    let t1 = Instant::now();
    let stats = maps.apply(&tables)?;
    let written = t1.elapsed();
    println!(
        "| {} | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
        label(&tables, &stats),
        compiled.as_secs_f64() * 1e3,
        stats.writes,
        written.as_secs_f64() * 1e3,
        (compiled + written).as_secs_f64() * 1e3
    );
    Ok(tables)
}

/// One pod selected by 400 policies, each allowing one port from the other pod; the first
/// policy allows `first_port`.
fn hot_pod(first_port: u16) -> anyhow::Result<Engine> {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.0.0.0/16}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: hot}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: hot, labels: {pod: a}}\nspec: {nodeName: node-1}\nstatus: {podIP: 10.0.1.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: hot, labels: {pod: b}}\nspec: {nodeName: node-1}\nstatus: {podIP: 10.0.1.2}\n",
    );
    for i in 0..400u16 {
        let port = if i == 0 { first_port } else { 1000 + i };
        y.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: hot}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}], ports: [{{port: {port}}}]}}]\n"
        ));
    }
    let state = verdict_policy::manifests::load_str(&y, Path::new("hot.yaml"))?.state;
    Ok(Engine::build(&state, IpBlockMode::DataplaneV2)?)
}

fn main() -> anyhow::Result<()> {
    let pin_dir = Path::new("/sys/fs/bpf/verdict-map-update-bench");
    let yaml = large_cluster_yaml(50, 20, 10);
    let state = verdict_policy::manifests::load_str(&yaml, Path::new("bench.yaml"))?.state;
    let engine = Engine::build(&state, IpBlockMode::DataplaneV2)?;
    println!("| update | compile | map writes | write time | total |");
    println!("|---|---:|---:|---:|---:|");

    let mut maps = KernelMaps::load(pin_dir)?;
    let mut numbering = Numbering::default();
    let full = update(&mut maps, &engine, &mut numbering, None, 1, |t, _| {
        let rules: usize = t.pod_dirs.values().map(|d| d.rules.len()).sum();
        let peers: usize = t.pod_dirs.values().map(|d| d.peer_masks.len()).sum();
        let cidrs: usize = t.pod_dirs.values().map(|d| d.cidr_masks.len()).sum();
        format!(
            "full state: 1,000 local pods × 500 policies ({} pod-directions, {rules} rules, {peers} peer masks, {cidrs} cidr prefixes, {} endpoints)",
            t.pod_dirs.len(),
            t.endpoints.len()
        )
    })?;
    // One policy changes (a port added): only the pods it isolates are rewritten.
    let changed_yaml = yaml.replacen(
        "ports: [{port: 8080}, {port: metrics}]",
        "ports: [{port: 8080}, {port: 8443}, {port: metrics}]",
        1,
    );
    let state = verdict_policy::manifests::load_str(&changed_yaml, Path::new("bench.yaml"))?.state;
    let engine = Engine::build(&state, IpBlockMode::DataplaneV2)?;
    update(
        &mut maps,
        &engine,
        &mut numbering,
        Some(&full),
        2,
        |_, s| {
            format!(
                "one policy changed ({} pod-directions rewritten)",
                s.pod_dirs_changed
            )
        },
    )?;
    drop(maps);
    verdict_probe::kernel::datapath::uninstall_everywhere(pin_dir).ok();

    let mut maps = KernelMaps::load(pin_dir)?;
    let mut numbering = Numbering::default();
    let full = update(
        &mut maps,
        &hot_pod(1000)?,
        &mut numbering,
        None,
        1,
        |t, _| {
            let rules: usize = t.pod_dirs.values().map(|d| d.rules.len()).sum();
            format!("one pod isolated by 400 policies ({rules} rules)")
        },
    )?;
    update(
        &mut maps,
        &hot_pod(999)?,
        &mut numbering,
        Some(&full),
        2,
        |_, _| "one of its 400 policies changed".into(),
    )?;
    drop(maps);
    verdict_probe::kernel::datapath::uninstall_everywhere(pin_dir).ok();
    Ok(())
}
