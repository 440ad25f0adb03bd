//! Rollout benchmark (issue 19), on a private local control plane:
//!
//! - N nodes × E NodeENIs (default 1000 × 4), one DPDKConfig mapping indices 1..E, brought
//!   to Complete first (new nodes have nothing to lose, so that first pass is not staged);
//! - simulated agents watch the DPDKNodeStates and report each new generation Succeeded,
//!   with the device plugin's healthy devices, after a fixed delay (DPDK_BENCH_AGENT_DELAY_MS,
//!   default 2000), as a real agent does after a rebind;
//! - then the same driver change (vfio-pci ↔ igb_uio, every DPDKNodeState and NodeENI
//!   changes) twice: all at once (`maxUnavailable: 100%`), then `maxUnavailable: 10%`.
//!   Per mode: the time from the change to `status.rollout` Complete, the controller's
//!   writes (audit log), the most DPDKNodeStates ever ahead of their status (from the
//!   simulated agents' watch), the passes, and the planner's time per pass (the pure
//!   `plan::plan` on the snapshot right after the change, listed from the server).
//!
//! `cargo bench -p dpdk-reconciler --bench rollout`
//! Env: DPDK_BENCH_NODES (1000), DPDK_BENCH_ENIS_PER_NODE (4), DPDK_BENCH_CONCURRENCY (16),
//! DPDK_BENCH_AGENT_DELAY_MS (2000), DPDK_BENCH_RECONCILER_ARGS, DPDK_BENCH_RECONCILER_WRAPPER.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dpdk_bridge::api::{
    DPDKConfig, DPDKConfigSpec, DPDKNodeState, DpdkDriver, DriverOptions, NodeENI, ResourceMapping,
    RolloutPhase, RolloutSpec,
};
use dpdk_bridge::plan;
use dpdk_testenv::{ControlPlane, StartOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{BoxErr, Controller, env_usize};

const CONFIG: &str = "bench";

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let fleet = Fleet {
        nodes: env_usize("DPDK_BENCH_NODES", 1000),
        per_node: env_usize("DPDK_BENCH_ENIS_PER_NODE", 4).clamp(1, 32),
    };
    let concurrency = env_usize("DPDK_BENCH_CONCURRENCY", 16).clamp(1, 256);
    let delay = Duration::from_millis(env_usize("DPDK_BENCH_AGENT_DELAY_MS", 2000) as u64);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rollout bench: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench(fleet, concurrency, delay)) {
        eprintln!("rollout bench failed: {e}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy)]
struct Fleet {
    nodes: usize,
    per_node: usize,
}

/// What one mode measured.
struct ModeResult {
    label: &'static str,
    converge: Duration,
    writes: usize,
    failed_writes: usize,
    cpu: f64,
    writes_by_kind: BTreeMap<String, usize>,
    max_ahead: usize,
    passes: f64,
    mean_pass: f64,
    planner: Duration,
    waves: usize,
}

async fn bench(fleet: Fleet, concurrency: usize, delay: Duration) -> Result<(), BoxErr> {
    let cp = ControlPlane::start(StartOptions {
        install_crds: true,
        audit_log: true,
        ..Default::default()
    })
    .await?;
    let client = cp.client().await?;
    eprintln!(
        "[bench] setting up {} nodes × {} NodeENIs...",
        fleet.nodes, fleet.per_node
    );
    support::setup_fleet(&client, fleet.nodes, fleet.per_node).await?;
    // --enable-dpdk-immediately: the simulated agents report DPDKNodeState status only,
    // not NodeENI attachments' dpdkBound.
    let controller = Controller::start(
        &cp,
        &[
            "--resync-interval=30s".into(),
            format!("--concurrency={concurrency}"),
            "--enable-dpdk-immediately".into(),
        ],
    )
    .await?;
    let agents = SimAgents::start(client.clone(), delay);

    eprintln!("[bench] first rollout (new nodes, not staged)...");
    let configs: Api<DPDKConfig> = Api::all(client.clone());
    configs
        .create(&PostParams::default(), &config(fleet, DpdkDriver::VfioPci))
        .await?;
    wait_complete(&configs, fleet.nodes, Duration::from_secs(900)).await?;

    let world = World {
        cp: &cp,
        client: &client,
        controller: &controller,
        agents: &agents,
        fleet,
    };
    let mut results = Vec::new();
    for (label, max_unavailable, driver) in [
        (
            "all at once (maxUnavailable 100%)",
            "100%",
            DpdkDriver::IgbUio,
        ),
        ("maxUnavailable 10%", "10%", DpdkDriver::VfioPci),
    ] {
        eprintln!("[bench] driver change, {label}...");
        results.push(measure(&world, label, max_unavailable, driver).await?);
    }
    let hwm_kib = support::proc_status_kib(controller.pid(), "VmHWM:").unwrap_or(0);
    drop(controller);
    print_report(fleet, concurrency, delay, &results, hwm_kib);
    Ok(())
}

/// The running parts one mode measures.
struct World<'a> {
    cp: &'a ControlPlane,
    client: &'a Client,
    controller: &'a Controller,
    agents: &'a SimAgents,
    fleet: Fleet,
}

/// One mode: the driver change at `max_unavailable`, from the patch to Complete.
async fn measure(
    w: &World<'_>,
    label: &'static str,
    max_unavailable: &str,
    driver: DpdkDriver,
) -> Result<ModeResult, BoxErr> {
    let World {
        cp,
        client,
        controller,
        agents,
        fleet,
    } = *w;
    let configs: Api<DPDKConfig> = Api::all(client.clone());
    let writes_before = support::controller_writes(cp).len();
    let (sum0, count0) = pass_histogram(controller);
    let cpu0 = support::cpu_seconds(controller.pid()).unwrap_or(0.0);
    agents.max_ahead.store(0, Ordering::SeqCst);
    let started_at = Timestamp::try_from(SystemTime::now())?;
    let patch = json!({"spec": {
        "rollout": {"maxUnavailable": max_unavailable},
        "resourceMapping": mapping(fleet.per_node, driver),
    }});
    configs
        .patch(CONFIG, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let (planner, waves) = planner_time(client).await?;
    wait_complete(&configs, fleet.nodes, Duration::from_secs(1800))
        .await
        .map_err(|e| format!("{e}; see {}", controller.log_path.display()))?;
    let cpu = support::cpu_seconds(controller.pid()).unwrap_or(0.0) - cpu0;
    let writes: Vec<_> = support::controller_writes(cp)
        .into_iter()
        .skip(writes_before)
        .collect();
    let last = writes.iter().map(|w| w.at).max().ok_or("no write")?;
    let mut writes_by_kind = BTreeMap::new();
    for w in &writes {
        let kind = format!("{} {}{}", w.verb, w.resource, sub(&w.subresource));
        *writes_by_kind.entry(kind).or_default() += 1;
    }
    let (sum1, count1) = pass_histogram(controller);
    let passes = count1 - count0;
    Ok(ModeResult {
        label,
        converge: Duration::try_from(last.duration_since(started_at)).unwrap_or_default(),
        writes: writes.len(),
        failed_writes: writes.iter().filter(|w| w.code >= 300).count(),
        cpu,
        writes_by_kind,
        max_ahead: agents.max_ahead.load(Ordering::SeqCst),
        passes,
        mean_pass: if passes > 0.0 {
            (sum1 - sum0) / passes
        } else {
            0.0
        },
        planner,
        waves,
    })
}

fn sub(subresource: &str) -> String {
    if subresource.is_empty() {
        String::new()
    } else {
        format!("/{subresource}")
    }
}

fn pass_histogram(controller: &Controller) -> (f64, f64) {
    support::histogram_sum_count(
        &controller.metrics(),
        "dpdk_controller_reconcile_duration_seconds",
    )
}

fn mapping(per_node: usize, driver: DpdkDriver) -> Vec<ResourceMapping> {
    (1..=per_node as i32)
        .map(|d| ResourceMapping {
            device_index: d,
            resource_name: format!("intel.com/dpdk_{d}"),
            driver,
        })
        .collect()
}

fn config(fleet: Fleet, driver: DpdkDriver) -> DPDKConfig {
    DPDKConfig {
        metadata: ObjectMeta {
            name: Some(CONFIG.into()),
            ..Default::default()
        },
        spec: DPDKConfigSpec {
            node_selector: BTreeMap::from([("bench/group".to_string(), "dpdk".to_string())]),
            driver_options: DriverOptions::default(),
            resource_mapping: mapping(fleet.per_node, driver),
            rollout: Some(RolloutSpec {
                max_unavailable: Some(IntOrString::String("100%".into())),
                ..Default::default()
            }),
        },
        status: None,
    }
}

/// Waits for the config's rollout of its current generation to be Complete on every node.
async fn wait_complete(
    configs: &Api<DPDKConfig>,
    nodes: usize,
    timeout: Duration,
) -> Result<(), BoxErr> {
    let started = Instant::now();
    loop {
        let c = configs.get(CONFIG).await?;
        let done = c
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .is_some_and(|r| {
                r.observed_generation == c.metadata.generation
                    && r.phase == RolloutPhase::Complete
                    && r.updated_nodes as usize == nodes
            });
        if done {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!("rollout not Complete within {timeout:?}: {:?}", c.status).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pure planner's time for one pass over the snapshot right after the change (every
/// node still to update), listed from the server; the median of 9 runs. Also the number
/// of waves it predicts for the config.
async fn planner_time(client: &Client) -> Result<(Duration, usize), BoxErr> {
    let lp = ListParams::default();
    let configs = Api::<DPDKConfig>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&lp)
        .await?
        .items;
    let enis = Api::<NodeENI>::all(client.clone()).list(&lp).await?.items;
    let states = Api::<DPDKNodeState>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let snap = plan::Snapshot {
        configs: configs.iter().collect(),
        nodes: nodes.iter().map(|n| &n.metadata).collect(),
        node_enis: enis.iter().collect(),
        node_states: states.iter().collect(),
        server_conflicts: Vec::new(),
    };
    let settings = plan::Settings::default();
    let mut times = Vec::new();
    let mut waves = 0;
    for _ in 0..9 {
        let t = Instant::now();
        let planned = plan::plan(&snap, &settings, Timestamp::now());
        times.push(t.elapsed());
        waves = planned
            .rollouts
            .iter()
            .find(|r| r.config == CONFIG)
            .map_or(0, |r| r.waves.len());
    }
    times.sort();
    Ok((times[times.len() / 2], waves))
}

/// Agents that report each DPDKNodeState generation Succeeded `delay` after they see it,
/// with the device plugin's healthy devices, and track how many states are ahead of their
/// status at once.
struct SimAgents {
    max_ahead: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimAgents {
    fn start(client: Client, delay: Duration) -> Self {
        let max_ahead = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(agents_loop(client, delay, max_ahead.clone()));
        Self { max_ahead, task }
    }
}

async fn agents_loop(client: Client, delay: Duration, max_ahead: Arc<AtomicUsize>) {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let ahead: Arc<Mutex<HashSet<String>>> = Arc::default();
    let scheduled: Arc<Mutex<HashSet<(String, i64)>>> = Arc::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event else {
            continue;
        };
        let Some(name) = s.metadata.name.clone() else {
            continue;
        };
        let generation = s.metadata.generation.unwrap_or(0);
        let observed = s.status.as_ref().and_then(|st| st.observed_generation);
        {
            let mut ahead = ahead.lock().unwrap_or_else(|p| p.into_inner());
            if observed == Some(generation) {
                ahead.remove(&name);
            } else {
                ahead.insert(name.clone());
                max_ahead.fetch_max(ahead.len(), Ordering::SeqCst);
            }
        }
        if observed == Some(generation) || s.spec.devices.is_empty() {
            continue;
        }
        if !scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((name.clone(), generation))
        {
            continue;
        }
        let (client, limit) = (client.clone(), limit.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Ok(_permit) = limit.acquire().await else {
                return;
            };
            if let Err(e) = report(&client, &s).await {
                eprintln!("[bench] agent {name}: {e}");
            }
        });
    }
}

/// What the node agent and the device plugin write once the devices are bound.
async fn report(client: &Client, s: &DPDKNodeState) -> Result<(), BoxErr> {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let name = s.metadata.name.as_deref().ok_or("no name")?;
    let devices: Vec<Value> = s.spec.devices.iter().map(|d| json!({"deviceIndex": d.device_index, "bound": true, "resourceName": d.resource_name, "driver": d.driver.as_str(), "originalDriver": "ena", "health": "Healthy"})).collect();
    let agent = json!({"status": {
        "observedGeneration": s.metadata.generation,
        "syncStatus": "Succeeded",
        "devices": devices,
        "boundDevices": devices.len(),
    }});
    let pp = PatchParams {
        field_manager: Some("bench-agent".into()),
        ..Default::default()
    };
    api.patch_status(name, &pp, &Patch::Merge(&agent)).await?;
    let mut per_resource: BTreeMap<&str, i32> = BTreeMap::new();
    for d in &s.spec.devices {
        *per_resource.entry(d.resource_name.as_str()).or_default() += 1;
    }
    let resources: Vec<Value> = per_resource
        .iter()
        .map(|(r, n)| json!({"resourceName": r, "advertised": n, "healthy": n}))
        .collect();
    let plugin = json!({
        "apiVersion": "networking.k8s.aws/v1alpha1",
        "kind": "DPDKNodeState",
        "metadata": {"name": name},
        "status": {"devicePlugin": {"resources": resources}},
    });
    let pp = PatchParams::apply("bench-device-plugin").force();
    api.patch_status(name, &pp, &Patch::Apply(&plugin)).await?;
    Ok(())
}

fn print_report(
    fleet: Fleet,
    concurrency: usize,
    delay: Duration,
    results: &[ModeResult],
    hwm_kib: u64,
) {
    println!(
        "## rollout bench: {} nodes × {} NodeENIs, concurrency {concurrency}, agents succeed after {delay:?} ({})",
        fleet.nodes,
        fleet.per_node,
        Timestamp::now()
    );
    print!("| figure |");
    for r in results {
        print!(" {} |", r.label);
    }
    println!();
    println!("|---|{}", "---|".repeat(results.len()));
    let row = |name: &str, f: &dyn Fn(&ModeResult) -> String| {
        print!("| {name} |");
        for r in results {
            print!(" {} |", f(r));
        }
        println!();
    };
    row("change → last controller write (audit log)", &|r| {
        format!("{:.1} s", r.converge.as_secs_f64())
    });
    row("controller writes (failed)", &|r| {
        format!("{} ({})", r.writes, r.failed_writes)
    });
    row("writes by kind", &|r| {
        r.writes_by_kind
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    row(
        "most DPDKNodeStates ahead of their status at once (agents' watch)",
        &|r| r.max_ahead.to_string(),
    );
    row("waves predicted", &|r| r.waves.to_string());
    row("reconcile passes / mean pass (plan + writes)", &|r| {
        format!("{} / {:.1} ms", r.passes, r.mean_pass * 1000.0)
    });
    row("controller CPU (user + system)", &|r| {
        format!("{:.1} s", r.cpu)
    });
    row("planner alone, one pass (median of 9)", &|r| {
        format!("{:.1} ms", r.planner.as_secs_f64() * 1000.0)
    });
    println!(
        "| controller peak RSS (VmHWM), whole run | {:.1} MiB |",
        hwm_kib as f64 / 1024.0
    );
}
