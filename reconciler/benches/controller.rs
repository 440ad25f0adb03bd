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
use std::io::{Read, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dpdk_bridge::api::{
    DPDKConfig, DPDKConfigSpec, DpdkDriver, DriverOptions, NodeENI, NodeENISpec, NodeENIStatus,
    ResourceMapping,
};
use dpdk_testenv::{ControlPlane, Reaper, StartOptions, fixtures};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const CONTROLLER_USER: &str = "bench-dpdk-controller";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

async fn run_all<F>(futs: Vec<F>, concurrency: usize) -> Result<(), BoxErr>
where
    F: std::future::Future<Output = Result<(), BoxErr>>,
{
    let results: Vec<Result<(), BoxErr>> = futures::stream::iter(futs)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

fn node_name(i: usize) -> String {
    format!(
        "ip-10-{}-{}-{}.ec2.internal",
        i / 65536,
        (i / 256) % 256,
        i % 256
    )
}

async fn setup(client: &Client, nodes: usize, per_node: usize) -> Result<(), BoxErr> {
    let mut futs = Vec::new();
    for i in 0..nodes {
        let client = client.clone();
        futs.push(async move {
            let n = node_name(i);
            fixtures::create_node(
                &client,
                &n,
                &[("bench/group", "dpdk"), ("kubernetes.io/hostname", &n)],
                "10.0.0.1",
            )
            .await?;
            let api: Api<NodeENI> = Api::all(client.clone());
            for d in 1..=per_node as i32 {
                let spec = NodeENISpec {
                    node_selector: [("kubernetes.io/hostname".to_string(), n.clone())].into(),
                    device_index: Some(d),
                    subnet_id: Some("subnet-0123456789abcdef0".into()),
                    security_group_ids: Some(vec!["sg-0123456789abcdef0".into()]),
                    ..Default::default()
                };
                let mut eni = api
                    .create(
                        &PostParams::default(),
                        &NodeENI::new(&format!("{n}-eni{d}"), spec),
                    )
                    .await?;
                eni.status = Some(NodeENIStatus {
                    attachments: vec![fixtures::attachment(&n, d, &format!("eni-{i:08x}{d:02}"))],
                });
                api.replace_status(&format!("{n}-eni{d}"), &PostParams::default(), &eni)
                    .await?;
            }
            Ok::<(), BoxErr>(())
        });
    }
    run_all(futs, 32).await
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

/// The value `deploy/dpdk-controller.yaml` gives the controller's environment variable `name`.
fn shipped_env(name: &str) -> Option<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/dpdk-controller.yaml"
    );
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| *l == format!("- name: {name}"))?;
    let value = lines.next()?.strip_prefix("value:")?.trim();
    Some(value.trim_matches('"').to_string())
}

/// A kubeconfig that impersonates `user` (in system:masters), so the audit log names it.
fn impersonating_kubeconfig(cp: &ControlPlane, user: &str) -> Result<std::path::PathBuf, BoxErr> {
    let text = std::fs::read_to_string(cp.kubeconfig_path())?;
    let patched = text.replacen("    client-key:", &format!("    as: {user}\n    as-groups: [\"system:masters\", \"system:authenticated\"]\n    client-key:"), 1);
    let path = cp.data_dir().join(format!("kubeconfig-{user}"));
    std::fs::write(&path, patched)?;
    Ok(path)
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The controller's object writes in the audit log: (stageTimestamp, resource, verb, code).
fn controller_writes(cp: &ControlPlane) -> Vec<(Timestamp, String, String, u64)> {
    let text = std::fs::read_to_string(cp.audit_log_path()).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["stage"] != "ResponseComplete" || v["impersonatedUser"]["username"] != CONTROLLER_USER
        {
            continue;
        }
        let resource = v["objectRef"]["resource"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if resource == "leases" || resource == "events" {
            continue;
        }
        let Some(at) = v["stageTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        out.push((
            at,
            resource,
            v["verb"].as_str().unwrap_or("").to_string(),
            v["responseStatus"]["code"].as_u64().unwrap_or(0),
        ));
    }
    out
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
    setup(&client, nodes, per_node).await?;
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

    let kubeconfig = impersonating_kubeconfig(&cp, CONTROLLER_USER)?;
    let port = free_port();
    let log_path = cp.data_dir().join("controller.log");
    let log = std::fs::File::create(&log_path)?;
    // A profiler in front of the binary, e.g. DPDK_BENCH_RECONCILER_WRAPPER="heaptrack -o
    // /tmp/reconciler". The RSS figures are then the wrapper's, not the controller's.
    let wrapper = std::env::var("DPDK_BENCH_RECONCILER_WRAPPER").unwrap_or_default();
    let mut wrapper = wrapper.split_whitespace();
    let mut cmd = match wrapper.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(wrapper).arg(env!("CARGO_BIN_EXE_dpdk-reconciler"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler")),
    };
    cmd.args([
        "run",
        "--no-leader-election",
        "--log-format",
        "json",
        "--resync-interval",
        "2s",
    ])
    .arg(format!("--http-addr=127.0.0.1:{port}"))
    .arg(format!("--concurrency={concurrency}"))
    // Extra flags for side-by-side runs, e.g. DPDK_BENCH_RECONCILER_ARGS=--no-drift.
    .args(
        std::env::var("DPDK_BENCH_RECONCILER_ARGS")
            .unwrap_or_default()
            .split_whitespace(),
    )
    .env("KUBECONFIG", &kubeconfig)
    .env("RUST_LOG", "info")
    .envs(
        std::env::var_os("MALLOC_ARENA_MAX")
            .is_none()
            .then(|| shipped_env("MALLOC_ARENA_MAX").map(|v| ("MALLOC_ARENA_MAX", v)))
            .flatten(),
    )
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    // Stopped with SIGTERM (10 s to exit) when the bench is done with it.
    let controller = Reaper::spawn(cmd, Duration::from_secs(10))?;
    let pid = controller.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if matches!(http_get(port, "/readyz"), Some((200, _))) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the controller did not become ready; see {}",
                log_path.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_idle_kib = proc_status_kib(pid, "VmRSS:").unwrap_or(0);

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
    let mut count = controller_writes(&cp).len();
    loop {
        tokio::time::sleep(Duration::from_secs(7)).await;
        let now = controller_writes(&cp).len();
        if now == count {
            break;
        }
        count = now;
    }
    let writes = controller_writes(&cp);
    let last = writes
        .iter()
        .map(|w| w.0)
        .max()
        .ok_or("the controller wrote nothing")?;
    let converge = Duration::try_from(last.duration_since(created_at)).unwrap_or_default();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for w in &writes {
        *by_kind.entry(format!("{} {}", w.2, w.1)).or_default() += 1;
    }
    let failed = writes.iter().filter(|w| w.3 >= 300).count();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let resync_writes = controller_writes(&cp).len() - writes.len();
    let hwm_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let rss_kib = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    // At the end, what the RSS is made of: heap and stacks, and pages of the binary.
    let anon_kib = proc_status_kib(pid, "RssAnon:").unwrap_or(0);
    let file_kib = proc_status_kib(pid, "RssFile:").unwrap_or(0);
    let cpu = cpu_seconds(pid).unwrap_or(0.0);
    let metrics = http_get(port, "/metrics")
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
            .or_else(|| shipped_env("MALLOC_ARENA_MAX"))
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
