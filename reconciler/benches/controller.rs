//! DPDK controller benchmark (issue 3), on a private local control plane:
//!
//! - N nodes × E NodeENIs (default 1000 × 4; each NodeENI selects one node and is
//!   attached at deviceIndex 1..E), one DPDKConfig mapping indices 1..E;
//! - the real `dpdk-reconciler run` binary converges it: time to converge (config created
//!   → the controller's last write, from the API server's audit log) and its writes;
//! - in the same run, a trivial client sends the same number of server-side-apply PATCHes
//!   with the same concurrency: the API server's own time for that much work. The ratio
//!   of the two is the figure (target ≤ 1.5×);
//! - the controller's peak RSS (VmHWM from /proc; target ≤ 64 MiB at 1000 nodes, ≤ 128 MiB
//!   at 5000), and the writes made during forced resyncs after convergence (must be 0).
//!
//! The binary runs with the environment the shipped Deployment gives it
//! (`MALLOC_ARENA_MAX` as `deploy/dpdk-controller.yaml` sets it), unless the bench's own
//! environment sets that variable.
//!
//! `cargo bench -p dpdk-reconciler --bench controller`
//! Env: DPDK_BENCH_NODES (1000), DPDK_BENCH_ENIS_PER_NODE (4), DPDK_BENCH_CONCURRENCY (16),
//! DPDK_BENCH_RECONCILER_ARGS (extra `run` flags), DPDK_BENCH_RECONCILER_WRAPPER (a
//! profiler to run the binary under, e.g. `heaptrack -o /tmp/reconciler`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use dpdk_bridge::api::{
    DPDKConfig, DPDKConfigSpec, DpdkDriver, DriverOptions, NodeENI, ResourceMapping,
};
use dpdk_testenv::{ControlPlane, StartOptions};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

mod support;

use support::{BoxErr, Controller, env_usize, node_name, run_all};

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let nodes = env_usize("DPDK_BENCH_NODES", 1000);
    let per_node = env_usize("DPDK_BENCH_ENIS_PER_NODE", 4).clamp(1, 32);
    let concurrency = env_usize("DPDK_BENCH_CONCURRENCY", 16).clamp(1, 256);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("controller bench: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench(nodes, per_node, concurrency)) {
        eprintln!("controller bench failed: {e}");
        std::process::exit(1);
    }
}

/// The trivial client: `count` SSA PATCHes of the same kinds and sizes as the controller's
/// (node labels, NodeENI spec fields, DPDKNodeState creates), on fields the controller
/// never touches.
async fn raw_patches(
    client: &Client,
    nodes: usize,
    per_node: usize,
    count: usize,
    concurrency: usize,
) -> Result<Duration, BoxErr> {
    let pp = PatchParams::apply("bench-raw");
    let mut bodies: Vec<(&'static str, String, Value)> = Vec::with_capacity(count);
    for i in 0..nodes {
        let n = node_name(i);
        bodies.push(("node", n.clone(), json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"bench.raw/mark": "true"}}})));
        for d in 1..=per_node {
            let e = format!("{n}-eni{d}");
            bodies.push(("nodeeni", e.clone(), json!({"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "NodeENI", "metadata": {"name": e}, "spec": {"description": "raw bench"}})));
        }
        let s = format!("raw-{n}");
        bodies.push((
            "state",
            s.clone(),
            json!({"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKNodeState", "metadata": {"name": s},
                "spec": {"driverOptions": {"enableUnsafeNoIOMMU": true, "writeCombining": false},
                    "devices": (1..=per_node).map(|d| json!({"deviceIndex": d, "nodeENI": format!("{n}-eni{d}"), "eniID": "eni-0", "resourceName": format!("intel.com/dpdk_{d}"), "driver": "vfio-pci"})).collect::<Vec<_>>(),
                    "configs": ["bench"]}}),
        ));
    }
    bodies.truncate(count);
    while bodies.len() < count {
        let n = node_name(bodies.len() % nodes.max(1));
        bodies.push(("node", n.clone(), json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"bench.raw/extra": "true"}}})));
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    let enis: Api<NodeENI> = Api::all(client.clone());
    let states: Api<dpdk_bridge::api::DPDKNodeState> = Api::all(client.clone());
    let started = Instant::now();
    let futs: Vec<_> = bodies
        .iter()
        .map(|(kind, name, body)| {
            let (nodes_api, enis, states, pp) = (&nodes_api, &enis, &states, &pp);
            async move {
                match *kind {
                    "node" => nodes_api
                        .patch_metadata(name, pp, &Patch::Apply(body))
                        .await
                        .map(|_| ())?,
                    "nodeeni" => enis
                        .patch_metadata(name, pp, &Patch::Apply(body))
                        .await
                        .map(|_| ())?,
                    _ => states
                        .patch_metadata(name, &pp.clone().force(), &Patch::Apply(body))
                        .await
                        .map(|_| ())?,
                }
                Ok::<(), BoxErr>(())
            }
        })
        .collect();
    run_all(futs, concurrency).await?;
    Ok(started.elapsed())
}

async fn bench(nodes: usize, per_node: usize, concurrency: usize) -> Result<(), BoxErr> {
    let cp = ControlPlane::start(StartOptions {
        install_crds: true,
        audit_log: true,
        ..Default::default()
    })
    .await?;
    let client = cp.client().await?;
    eprintln!("[bench] setting up {nodes} nodes × {per_node} NodeENIs (with attachments)...");
    let t = Instant::now();
    support::setup_fleet(&client, nodes, per_node).await?;
    let setup_time = t.elapsed();
    eprintln!("[bench] setup took {setup_time:.1?}");

    // What the controller will write: label, NodeENIs and state per node, the finalizer
    // and the status.
    let expected_writes = nodes * (2 + per_node) + 2;
    eprintln!(
        "[bench] raw API server time for {expected_writes} SSA PATCHes at concurrency {concurrency}..."
    );
    let raw = raw_patches(&client, nodes, per_node, expected_writes, concurrency).await?;
    eprintln!("[bench] raw: {raw:.2?}");
    // The raw run's DPDKNodeStates go before the controller lists them.
    let states: Api<dpdk_bridge::api::DPDKNodeState> = Api::all(client.clone());
    states
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;

    let controller = Controller::start(
        &cp,
        &[
            "--resync-interval=2s".into(),
            format!("--concurrency={concurrency}"),
        ],
    )
    .await?;
    let (pid, port) = (controller.pid(), controller.port);
    let rss_idle_kib = support::proc_status_kib(pid, "VmRSS:").unwrap_or(0);

    let mapping: Vec<ResourceMapping> = (1..=per_node as i32)
        .map(|d| ResourceMapping {
            device_index: d,
            resource_name: format!("intel.com/dpdk_{d}"),
            driver: DpdkDriver::VfioPci,
        })
        .collect();
    let cfg = DPDKConfig {
        metadata: ObjectMeta {
            name: Some("bench".into()),
            ..Default::default()
        },
        spec: DPDKConfigSpec {
            node_selector: BTreeMap::from([("bench/group".to_string(), "dpdk".to_string())]),
            driver_options: DriverOptions::default(),
            resource_mapping: mapping,
            rollout: None,
        },
        status: None,
    };
    let configs: Api<DPDKConfig> = Api::all(client.clone());
    let created_at = Timestamp::try_from(SystemTime::now())?;
    let started = Instant::now();
    configs.create(&PostParams::default(), &cfg).await?;
    let want_enis = nodes * per_node;
    loop {
        let c = configs.get("bench").await?;
        if c.status.as_ref().is_some_and(|s| {
            s.matched_nodes as usize == nodes && s.updated_node_enis.len() == want_enis
        }) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("no convergence within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let observed = started.elapsed();
    // Quiet: at least three forced resyncs (every 2 s) with no new write.
    let mut count = support::controller_writes(&cp).len();
    loop {
        tokio::time::sleep(Duration::from_secs(7)).await;
        let now = support::controller_writes(&cp).len();
        if now == count {
            break;
        }
        count = now;
    }
    let writes = support::controller_writes(&cp);
    let last = writes
        .iter()
        .map(|w| w.at)
        .max()
        .ok_or("the controller wrote nothing")?;
    let converge = Duration::try_from(last.duration_since(created_at)).unwrap_or_default();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for w in &writes {
        *by_kind
            .entry(format!("{} {}", w.verb, w.resource))
            .or_default() += 1;
    }
    let failed = writes.iter().filter(|w| w.code >= 300).count();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let resync_writes = support::controller_writes(&cp).len() - writes.len();
    let hwm_kib = support::proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let rss_kib = support::proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    // At the end, what the RSS is made of: heap and stacks, and pages of the binary.
    let anon_kib = support::proc_status_kib(pid, "RssAnon:").unwrap_or(0);
    let file_kib = support::proc_status_kib(pid, "RssFile:").unwrap_or(0);
    let cpu = support::cpu_seconds(pid).unwrap_or(0.0);
    let metrics = support::http_get(port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let passes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("dpdk_controller_reconciles_total"))
        .collect();
    drop(controller);

    // Verify the result independently of the controller's own status.
    let labelled = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default().labels("dpdk.aws.k8s/enabled=true"))
        .await?
        .items
        .len();
    let enabled = Api::<NodeENI>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        // `run` writes enableDPDK only once the agents report the devices dpdkBound
        // (docs/multi-eni-controller.md); this bench runs no agents, so the driver and
        // resource name are what the controller writes.
        .filter(|e| e.spec.dpdk_driver.is_some() && e.spec.dpdk_resource_name.is_some())
        .count();
    let state_count = states
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();

    let ratio = converge.as_secs_f64() / raw.as_secs_f64();
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "## controller bench: {nodes} nodes × {per_node} NodeENIs, concurrency {concurrency} (kernel {uname}, {}, MALLOC_ARENA_MAX={})",
        Timestamp::now(),
        std::env::var("MALLOC_ARENA_MAX")
            .ok()
            .or_else(|| support::shipped_env("MALLOC_ARENA_MAX"))
            .unwrap_or_else(|| "unset".into())
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| setup (nodes, NodeENIs, attachments) | {:.1} s |",
        setup_time.as_secs_f64()
    );
    println!(
        "| raw API server: {expected_writes} SSA PATCHes | {:.2} s |",
        raw.as_secs_f64()
    );
    println!(
        "| controller: config created → last write (audit log) | {:.2} s |",
        converge.as_secs_f64()
    );
    println!(
        "| controller: config created → status seen converged | {:.2} s |",
        observed.as_secs_f64()
    );
    println!("| ratio controller / raw | {ratio:.2}× (target ≤ 1.5×) |");
    println!(
        "| controller writes (expected {expected_writes}) | {} ({failed} failed) |",
        writes.len()
    );
    println!(
        "| writes by kind | {} |",
        by_kind
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| writes during forced resyncs after convergence | {resync_writes} |");
    println!(
        "| controller peak RSS (VmHWM) | {:.1} MiB (target ≤ {} MiB) |",
        hwm_kib as f64 / 1024.0,
        if nodes > 1000 { 128 } else { 64 }
    );
    println!(
        "| controller RSS idle after sync / at end | {:.1} / {:.1} MiB |",
        rss_idle_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0
    );
    println!(
        "| of the RSS at end: anonymous / file-backed (the binary) | {:.1} / {:.1} MiB |",
        anon_kib as f64 / 1024.0,
        file_kib as f64 / 1024.0
    );
    println!("| controller CPU time, whole run (user + system) | {cpu:.1} s |");
    println!(
        "| verified: nodes labelled, NodeENIs with the DPDK fields, DPDKNodeStates | {labelled}, {enabled}, {state_count} |"
    );
    println!("| reconcile passes | {} |", passes.join("; "));
    if labelled != nodes || enabled != want_enis || state_count != nodes {
        return Err(format!(
            "not converged: {labelled} labelled, {enabled} enabled, {state_count} states"
        )
        .into());
    }
    Ok(())
}
