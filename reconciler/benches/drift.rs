//! Drift benchmark (issue 5), no API server needed:
//!
//! - the pure engine on 10,000 objects: 2,000 DPDKConfigs declared in Git (200 commented
//!   multi-document files) and live, 2,000 Nodes, 2,000 NodeENIs (attached), 2,000
//!   DPDKNodeStates; 1% of the configs edited live and 1% of the nodes with a device left
//!   on ena. Target: `compute` under 100 ms. Side by side in the same run: the
//!   controller's planner alone on the same objects (layer 2 runs it), and a whole snapshot
//!   (compute + JSON + diff + patch);
//! - `GET /drift` on the served snapshot of that report, over loopback HTTP/1.1 keep-alive:
//!   p50/p99/max of 5,000 sequential requests (target p99 under 10 ms), and the same
//!   while 4 clients hammer it in parallel.
//!
//! `cargo bench -p dpdk-reconciler --bench drift`
//! Env: DRIFT_BENCH_CONFIGS (2000), DRIFT_BENCH_ROUNDS (20), DRIFT_BENCH_REQUESTS (5000).

use std::time::{Duration, Instant};

use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, NodeENI};
use dpdk_bridge::plan;
use dpdk_reconciler::drift::runtime::{DriftState, Snapshot};
use dpdk_reconciler::drift::{GitSource, LiveObjects, SourceKey, compute};
use dpdk_reconciler::manifest::Manifests;
use dpdk_reconciler::manifest::load::RawFile;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const PER_FILE: usize = 10;

fn config_yaml(i: usize) -> String {
    format!(
        "# pool {i}: nodes of group g{i}\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: pool-{i}\n  labels:\n    team: net\nspec:\n  nodeSelector:\n    ng: g{i}\n  driverOptions:\n    enableUnsafeNoIOMMU: true\n  resourceMapping:\n  - deviceIndex: 2\n    resourceName: intel.com/pool_{i}   # data plane\n    driver: vfio-pci\n"
    )
}

struct World {
    source: GitSource,
    manifests: Manifests,
    live: LiveObjects,
}

fn world(n: usize) -> World {
    let files: Vec<RawFile> = (0..n.div_ceil(PER_FILE))
        .map(|f| {
            let docs: Vec<String> = (f * PER_FILE..((f + 1) * PER_FILE).min(n))
                .map(config_yaml)
                .collect();
            RawFile {
                path: format!("clusters/prod/pools-{f:03}.yaml"),
                bytes: docs.join("---\n").into_bytes(),
            }
        })
        .collect();
    let manifests = Manifests::from_files(files);
    assert!(manifests.is_valid(), "bench manifests must validate");
    let source = GitSource::from_manifests(
        Some(SourceKey::new("dpdk-operator", "prod")),
        Some("main@sha1:0123456789abcdef0123456789abcdef01234567".into()),
        "clusters/prod",
        &manifests,
    );
    let ts = Timestamp::from_second(1_700_000_000).expect("ts");
    let mut live = LiveObjects {
        complete: true,
        ..Default::default()
    };
    for (i, o) in manifests.objects.iter().enumerate() {
        let mut cfg: DPDKConfig = serde_json::from_value(o.body.clone()).expect("config");
        let m = &mut cfg.metadata;
        m.uid = Some(format!("uid-{i}"));
        m.resource_version = Some("1".into());
        m.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts));
        m.labels.get_or_insert_default().extend([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "dpdk-reconciler".to_string(),
            ),
            (
                "dpdk.aws.k8s/source".to_string(),
                "dpdk-operator.prod".to_string(),
            ),
        ]);
        live.configs.push(cfg);

        let node = format!("node-{i}");
        live.nodes.push(ObjectMeta {
            name: Some(node.clone()),
            uid: Some(format!("node-uid-{i}")),
            labels: Some([("ng".to_string(), format!("g{i}"))].into()),
            ..Default::default()
        });
        let eni: NodeENI = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "NodeENI",
            "metadata": {"name": format!("eni-{i}"), "uid": format!("eni-uid-{i}")},
            "spec": {"nodeSelector": {"ng": format!("g{i}")}, "subnetID": "subnet-1", "deviceIndex": 2,
                     "enableDPDK": true, "dpdkDriver": "vfio-pci", "dpdkResourceName": format!("intel.com/pool_{i}")},
            "status": {"attachments": [{"nodeID": node, "deviceIndex": 2, "eniID": format!("eni-0{i:08x}"), "status": "attached"}]},
        }))
        .expect("eni");
        live.node_enis.push(eni);
        let on = "vfio-pci";
        let state: DPDKNodeState = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKNodeState",
            "metadata": {"name": node},
            "spec": {"driverOptions": {"enableUnsafeNoIOMMU": true, "writeCombining": false},
                     "devices": [{"deviceIndex": 2, "nodeENI": format!("eni-{i}"), "eniID": format!("eni-0{i:08x}"), "resourceName": format!("intel.com/pool_{i}"), "driver": "vfio-pci"}],
                     "configs": [format!("pool-{i}")]},
            "status": {"syncStatus": "Succeeded", "boundDevices": 1,
                       "modules": {"vfio": true, "vfioPci": true, "noiommu": true, "writeCombining": {"state": "Disabled"}},
                       "devices": [{"deviceIndex": 2, "driver": on, "bound": true, "pciAddress": "0000:00:06.0"}]},
        }))
        .expect("state");
        live.node_states.push(state);
    }
    let rounds = converge(
        &mut live,
        Timestamp::from_second(1_700_000_100).expect("ts"),
    );
    assert!(rounds < 8, "the planner did not converge");
    // Then 1% drift in each layer: configs edited live (which also changes what the
    // NodeENIs should carry), devices left on ena.
    for (i, cfg) in live.configs.iter_mut().enumerate() {
        if i % 100 == 7 {
            cfg.spec.resource_mapping[0].resource_name = format!("intel.com/edited_{i}");
        }
    }
    for (i, st) in live.node_states.iter_mut().enumerate() {
        if i % 100 == 13
            && let Some(d) = st.status.as_mut().and_then(|s| s.devices.first_mut())
        {
            d.driver = Some("ena".into());
            d.bound = false;
        }
    }
    World {
        source,
        manifests,
        live,
    }
}

/// Records `fields` as owned by dpdk-controller (an Apply entry), as the API server does.
fn own(meta: &mut ObjectMeta, fields: serde_json::Value) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(json!({})), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let entries = meta.managed_fields.get_or_insert_default();
    match entries
        .iter_mut()
        .find(|e| e.manager.as_deref() == Some("dpdk-controller"))
    {
        Some(e) => merge(
            &mut e.fields_v1.get_or_insert(FieldsV1(json!({}))).0,
            fields,
        ),
        None => entries.push(ManagedFieldsEntry {
            manager: Some("dpdk-controller".into()),
            operation: Some("Apply".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }),
    }
}

/// Runs the controller's planner and applies its writes in memory until it plans nothing:
/// the cluster as a running controller leaves it.
fn converge(live: &mut LiveObjects, now: Timestamp) -> usize {
    for round in 0..8 {
        let writes = {
            let snap = plan::Snapshot {
                configs: live.configs.iter().collect(),
                nodes: live.nodes.iter().collect(),
                node_enis: live.node_enis.iter().collect(),
                node_states: live.node_states.iter().collect(),
                server_conflicts: Vec::new(),
            };
            plan::plan(&snap, &plan::Settings::default(), now).writes
        };
        if writes.is_empty() {
            return round;
        }

        for w in writes {
            match w {
                plan::Write::AddFinalizer { config } => {
                    if let Some(c) = live
                        .configs
                        .iter_mut()
                        .find(|c| c.metadata.name.as_deref() == Some(config.as_str()))
                    {
                        c.metadata
                            .finalizers
                            .get_or_insert_default()
                            .push("dpdk.aws.k8s/teardown".into());
                        own(
                            &mut c.metadata,
                            json!({"f:metadata": {"f:finalizers": {"v:\"dpdk.aws.k8s/teardown\"": {}}}}),
                        );
                    }
                }
                plan::Write::ConfigStatus { config, status } => {
                    if let Some(c) = live
                        .configs
                        .iter_mut()
                        .find(|c| c.metadata.name.as_deref() == Some(config.as_str()))
                    {
                        c.status = Some(status);
                    }
                }
                plan::Write::SetNodeLabel { node, .. } => {
                    if let Some(n) = live
                        .nodes
                        .iter_mut()
                        .find(|n| n.name.as_deref() == Some(node.as_str()))
                    {
                        n.labels
                            .get_or_insert_default()
                            .insert("dpdk.aws.k8s/enabled".into(), "true".into());
                        own(
                            n,
                            json!({"f:metadata": {"f:labels": {"f:dpdk.aws.k8s/enabled": {}}}}),
                        );
                    }
                }
                plan::Write::ApplyNodeEni { name, fields, .. } => {
                    if let Some(e) = live
                        .node_enis
                        .iter_mut()
                        .find(|e| e.metadata.name.as_deref() == Some(name.as_str()))
                    {
                        e.spec.enable_dpdk = Some(true);
                        e.spec.dpdk_driver = Some(fields.driver.as_str().into());
                        e.spec.dpdk_resource_name = Some(fields.resource_name.clone());
                        own(
                            &mut e.metadata,
                            json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}, "f:dpdkResourceName": {}}}),
                        );
                    }
                }
                plan::Write::ApplyNodeState { node, spec, .. } => {
                    if let Some(st) = live
                        .node_states
                        .iter_mut()
                        .find(|s| s.metadata.name.as_deref() == Some(node.as_str()))
                    {
                        st.spec = spec;
                        st.metadata.labels.get_or_insert_default().insert(
                            "app.kubernetes.io/managed-by".into(),
                            "dpdk-controller".into(),
                        );
                        own(&mut st.metadata, json!({"f:spec": {}}));
                    }
                }
                _ => {}
            }
        }
    }
    8
}

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut samples = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let t = Instant::now();
        last = Some(f());
        samples.push(t.elapsed());
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() - 1],
        last.expect("at least one round"),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One keep-alive GET: status and body length.
async fn get(conn: &mut BufReader<tokio::net::TcpStream>, path: &str) -> (u16, usize) {
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut status = 0;
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("read header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
            status = rest
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        } else if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.expect("read body");
    (status, len)
}

async fn latencies(addr: std::net::SocketAddr, n: usize) -> Vec<Duration> {
    let mut conn = BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = get(&mut conn, "/drift").await;
        out.push(t.elapsed());
        assert_eq!(status, 200);
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n = env_usize("DRIFT_BENCH_CONFIGS", 2000);
    let rounds = env_usize("DRIFT_BENCH_ROUNDS", 20).max(1);
    let requests = env_usize("DRIFT_BENCH_REQUESTS", 5000).max(100);
    let w = world(n);
    let objects = w.source.documents.len()
        + w.live.configs.len()
        + w.live.nodes.len()
        + w.live.node_enis.len()
        + w.live.node_states.len();
    let now = Timestamp::now();
    let sources = std::slice::from_ref(&w.source);

    let (engine_p50, engine_max, report) = time(rounds, || compute(sources, &w.live, now, None));
    let (planner_p50, _, _) = time(rounds, || {
        let snap = plan::Snapshot {
            configs: w.live.configs.iter().collect(),
            nodes: w.live.nodes.iter().collect(),
            node_enis: w.live.node_enis.iter().collect(),
            node_states: w.live.node_states.iter().collect(),
            server_conflicts: Vec::new(),
        };
        plan::plan(&snap, &plan::Settings::default(), now)
    });
    // The whole snapshot as every endpoint would serve it: compute, then the JSON, the
    // diff and the patch (the runtime renders these on the first request for each).
    let (snap_p50, _, snap) = time(rounds.min(5), || {
        let snap = Snapshot::build(sources, &w.live, now, Some(&report));
        let sizes = (
            snap.json().len(),
            snap.diff().len(),
            snap.patch_sources()
                .iter()
                .filter_map(|k| snap.patch(k))
                .map(|p| p.text.len())
                .sum::<usize>(),
        );
        (snap, sizes)
    });
    let (snap, (json_bytes, diff_bytes, patch_bytes)) = snap;
    // What the first `GET /drift` after a change pays: rendering that snapshot's JSON.
    let mut first_render: Vec<Duration> = (0..rounds)
        .map(|_| {
            let fresh = Snapshot::build(sources, &w.live, now, Some(&report));
            let t = Instant::now();
            std::hint::black_box(fresh.json());
            t.elapsed()
        })
        .collect();
    first_render.sort();
    // Per layer: layer 1 alone (configs only, so the planner has no nodes to plan), layer
    // 3 alone (node states only).
    let l1_live = LiveObjects {
        configs: w.live.configs.clone(),
        ..Default::default()
    };
    let (l1_p50, _, _) = time(rounds, || compute(sources, &l1_live, now, None));
    let l3_live = LiveObjects {
        node_states: w.live.node_states.clone(),
        ..Default::default()
    };
    let (l3_p50, _, _) = time(rounds, || compute(&[], &l3_live, now, None));
    let (conv_p50, _, _) = time(rounds, || {
        GitSource::from_manifests(
            w.source.key.clone(),
            w.source.revision.clone(),
            &w.source.path,
            &w.manifests,
        )
    });
    println!(
        "drift engine bench: {objects} objects ({n} Git DPDKConfigs in {} files, {n} live DPDKConfigs, {n} Nodes, {n} NodeENIs, {n} DPDKNodeStates)",
        n.div_ceil(PER_FILE)
    );
    println!(
        "  findings: {} ({:?})",
        report.summary.total, report.summary.by_layer
    );
    println!(
        "  compute (3 layers):            p50 {}  max {}  over {rounds} rounds   target < 100 ms",
        ms(engine_p50),
        ms(engine_max)
    );
    println!(
        "  of which the planner (layer 2): p50 {}  ({:.0}% of compute)",
        ms(planner_p50),
        100.0 * planner_p50.as_secs_f64() / engine_p50.as_secs_f64()
    );
    println!(
        "  layer 1 alone (configs only): p50 {}; layer 3 alone (node states only): p50 {}",
        ms(l1_p50),
        ms(l3_p50)
    );
    println!(
        "  Git side from the source store (GitSource::from_manifests, per recompute): p50 {}",
        ms(conv_p50)
    );
    println!(
        "  snapshot (compute + JSON + diff + patch): p50 {}  ({:.2}x compute); JSON {} KiB, diff {} KiB, patch {} KiB",
        ms(snap_p50),
        snap_p50.as_secs_f64() / engine_p50.as_secs_f64(),
        json_bytes / 1024,
        diff_bytes / 1024,
        patch_bytes / 1024
    );
    println!(
        "  first GET /drift after a change renders the JSON: p50 {}  max {}",
        ms(pct(&first_render, 0.5)),
        ms(pct(&first_render, 1.0))
    );
    assert!(
        !report.findings.is_empty() && report.findings.iter().all(|f| f.file.is_some()),
        "every finding names its Git file"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let state = DriftState::new();
        let json_len = json_bytes;
        state.publish(snap, snap_p50, now);
        let app = dpdk_reconciler::drift::http::routes(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        // Warm up.
        latencies(addr, 200).await;
        let mut solo = latencies(addr, requests).await;
        solo.sort();
        let mut busy_tasks = Vec::new();
        for _ in 0..4 {
            busy_tasks.push(tokio::spawn(latencies(addr, requests)));
        }
        let mut busy = Vec::new();
        for t in busy_tasks {
            busy.extend(t.await.expect("client"));
        }
        busy.sort();
        println!("GET /drift ({} KiB body), {requests} sequential keep-alive requests: p50 {}  p99 {}  max {}   target p99 < 10 ms",
            json_len / 1024, ms(pct(&solo, 0.5)), ms(pct(&solo, 0.99)), ms(pct(&solo, 1.0)));
        println!("GET /drift, 4 concurrent clients × {requests}: p50 {}  p99 {}  max {}",
            ms(pct(&busy, 0.5)), ms(pct(&busy, 0.99)), ms(pct(&busy, 1.0)));
    });
}
