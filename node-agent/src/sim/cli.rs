//! `dpdk-node-agent simulate`: the demo's nodes. For each `--node`, a simulated node in
//! `<work-dir>/<node>/` (see [`super::SimNode`]) with a primary ENA NIC at 0000:00:05.0
//! (ens5, the default route) and a DPDK-candidate ENA NIC at `--dpdk-pci-address` (ens6,
//! its own IOMMU group). On it run, as the DaemonSets would on a real node:
//! - `agent`: what `load` does (modules, the ready label), then the `run` loop;
//! - `device-plugin`: the simulated kubelet on `<work-dir>/<node>/device-plugins` and the
//!   device plugin against it.
//!
//! All nodes share one process and one runtime until SIGINT/SIGTERM. The API identity is
//! the process's kubeconfig, so the demo runs `agent` and `device-plugin` as two processes,
//! each as its own ServiceAccount; the simulated kubelet writes Node status with
//! `--kubelet-kubeconfig`, since neither ServiceAccount may (nor should) do that.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::labels::{NODE_ENABLED_LABEL, NODE_READY_LABEL};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::kubelet::{NodeStatusWriter, SimKubelet};
use super::{SimNic, SimNode};
use crate::agent::Agent;
use crate::commands::{HostArgs, ModuleArgs, module_configs};
use crate::device_plugin::report::NodeReporter;
use crate::device_plugin::{self, Config, DesiredState, Metrics};
use crate::error::{Error, io_error};
use crate::sysfs::PciAddress;

/// Which parts to run on every simulated node.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The node agent (`load`, then `run`) and the simulated node it works on.
    Agent,
    /// The simulated kubelet and the device plugin.
    DevicePlugin,
    /// Both, in this process under one identity.
    All,
}

/// Flags of `simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// A Node to simulate (repeatable). The Node object must exist in the cluster.
    #[arg(long = "node", required = true)]
    pub nodes: Vec<String>,
    /// Each node's tree goes to <work-dir>/<node>/ (sys, dev, proc, host, state, device-plugins).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// PCI address of the DPDK-candidate NIC (ens6); the NodeENI's spec.dpdkPCIAddress.
    #[arg(long, default_value = "0000:00:06.0")]
    pub dpdk_pci_address: String,
    /// What to run on each node.
    #[arg(long, value_enum, default_value_t = Component::All)]
    pub component: Component,
    /// Kubeconfig of the simulated kubelet (it patches Node status: capacity and
    /// allocatable). Default: the process's own.
    #[arg(long)]
    pub kubelet_kubeconfig: Option<PathBuf>,
    /// The agent's retry period while something is pending (a Go duration: 500ms, 1s).
    #[arg(long, default_value = "1s", value_parser = dpdk_bridge::duration::parse)]
    pub retry: Duration,
    /// The agent's full resync period (a Go duration: 30s, 1m30s).
    #[arg(long, default_value = "30s", value_parser = dpdk_bridge::duration::parse)]
    pub resync: Duration,
}

/// The primary NIC's PCI address (ens5); it carries the default route.
pub const PRIMARY_PCI_ADDRESS: &str = "0000:00:05.0";
/// The device-plugin dir inside a node's directory.
pub const PLUGIN_DIR: &str = "device-plugins";
/// The resource prefix for names without a domain (as `device-plugin`'s default).
const RESOURCE_PREFIX: &str = "intel.com";

/// Entry point of `simulate`.
pub fn main(args: SimulateArgs) -> ExitCode {
    let Some(runtime) =
        crate::runtime::build(crate::runtime::Flavor::MultiThread { workers: Some(2) })
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((node, e)) => {
            error!(node = node.as_deref().unwrap_or_default(), error = %e, "simulate failed");
            let at = node.map(|n| format!("node {n}: ")).unwrap_or_default();
            eprintln!("dpdk-node-agent simulate: {at}{e}");
            ExitCode::FAILURE
        }
    }
}

/// An error, and the node it happened on (`None`: before any node started).
pub type SimError = (Option<String>, Error);

/// Runs every node until SIGINT/SIGTERM, or until one fails (then all stop).
pub async fn run(args: SimulateArgs) -> Result<(), SimError> {
    let dpdk = PciAddress::parse(&args.dpdk_pci_address).map_err(|e| (None, e))?;
    let client = Client::try_default().await.map_err(|e| (None, e.into()))?;
    let kubelet_client = match &args.kubelet_kubeconfig {
        Some(path) => client_from(path).await.map_err(|e| (None, e))?,
        None => client.clone(),
    };
    let stop = CancellationToken::new();
    let signals = stop.clone();
    tokio::spawn(async move {
        dpdk_bridge::signals::shutdown().await;
        info!("shutting down; devices stay bound");
        signals.cancel();
    });

    let mut tasks = tokio::task::JoinSet::new();
    for node in &args.nodes {
        let dir = args.work_dir.join(node);
        let (node, stop) = (node.clone(), stop.clone());
        let (client, kubelet_client) = (client.clone(), kubelet_client.clone());
        let (args, dpdk) = (args.clone(), dpdk.to_string());
        let span = info_span!("simulate", node = %node);
        tasks.spawn(
            async move {
                let result =
                    run_node(&args, &node, &dir, &dpdk, client, kubelet_client, stop).await;
                result.map_err(|e| (Some(node), e))
            }
            .instrument(span),
        );
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.unwrap_or_else(|e| {
            Err((
                None,
                Error::Io {
                    path: args.work_dir.display().to_string(),
                    source: std::io::Error::other(format!("node task failed: {e}")),
                },
            ))
        });
        if let Err(e) = result {
            stop.cancel();
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn client_from(path: &Path) -> Result<Client, Error> {
    let bad = |e: String| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| bad(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// One node: its parts run until `stop`; the first failure ends them all.
async fn run_node(
    args: &SimulateArgs,
    node: &str,
    dir: &Path,
    dpdk: &str,
    client: Client,
    kubelet_client: Client,
    stop: CancellationToken,
) -> Result<(), Error> {
    let kubelet_client = &kubelet_client;
    let agent = async {
        if matches!(args.component, Component::Agent | Component::All) {
            if !scheduled(kubelet_client, node, NODE_ENABLED_LABEL, &stop).await? {
                return Ok(());
            }
            let sim = Arc::new(create_node(dir, dpdk)?);
            info!(dir = %dir.display(), "simulated node ready: ens5 at {PRIMARY_PCI_ADDRESS} (default route), ens6 at {dpdk}");
            load(&client, node, &sim).await?;
            build_agent(args, &client, node, sim)
                .run(stop.clone())
                .await?;
        }
        Ok::<_, Error>(())
    };
    let plugin = async {
        if matches!(args.component, Component::DevicePlugin | Component::All) {
            if !scheduled(kubelet_client, node, NODE_READY_LABEL, &stop).await? {
                return Ok(());
            }
            run_device_plugin(&client, kubelet_client.clone(), node, dir, stop.clone()).await?;
        }
        Ok::<_, Error>(())
    };
    // Either failing stops the other.
    let (a, p) = tokio::join!(
        async {
            let r = agent.await;
            if r.is_err() {
                stop.cancel();
            }
            r
        },
        async {
            let r = plugin.await;
            if r.is_err() {
                stop.cancel();
            }
            r
        }
    );
    a.and(p)
}

/// Waits, as the scheduler would, until the Node carries `label=true`: the nodeSelector of
/// the part's DaemonSet (enabled for the agent, ready for the device plugin). Reads the Node
/// with the kubelet's client; the ServiceAccounts need not (the device plugin's cannot).
/// `false`: stopped before that.
async fn scheduled(
    client: &Client,
    node: &str,
    label: &str,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut said = false;
    while !stop.is_cancelled() {
        let labelled = api
            .get(node)
            .await?
            .metadata
            .labels
            .is_some_and(|l| l.get(label).is_some_and(|v| v == "true"));
        if labelled {
            return Ok(true);
        }
        if !said {
            info!("waiting for {label}=true on the node (the DaemonSet's nodeSelector)");
            said = true;
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    Ok(false)
}

/// A fresh simulated node under `dir` (its kernel state is rebuilt; `device-plugins/`
/// is left alone, another process may be serving in it).
pub fn create_node(dir: &Path, dpdk: &str) -> Result<SimNode, Error> {
    for sub in ["sys", "dev", "proc", "host", "state"] {
        let p = dir.join(sub);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&p, e)),
        }
    }
    let nic = |bdf: &str, ifname: &str, slot: u8| SimNic {
        bdf: bdf.to_string(),
        ifname: ifname.to_string(),
        ..SimNic::ena(slot)
    };
    let nics = [nic(PRIMARY_PCI_ADDRESS, "ens5", 5), nic(dpdk, "ens6", 6)];
    let sim = SimNode::create(dir, &nics, true).map_err(|e| io_error(dir, e))?;
    let route = |dest, mask, gw| sim.add_route("ens5", dest, mask, gw);
    route("0.0.0.0", "0.0.0.0", "10.0.1.1")
        .and_then(|()| route("10.0.1.0", "255.255.255.0", "0.0.0.0"))
        .map_err(|e| io_error(sim.proc_.join("net/route"), e))?;
    Ok(sim)
}

/// What `load` (the init container) does: modules for the node's DPDKNodeState (defaults
/// while it does not exist yet), then the ready label.
async fn load(client: &Client, node: &str, sim: &SimNode) -> Result<(), Error> {
    let spec = crate::report::get_node_state(client, node)
        .await?
        .map(|s| s.spec);
    for cfg in module_configs(&no_module_flags(), spec.as_ref()) {
        match sim.load_modules(&cfg) {
            Ok(r) => {
                for note in &r.notes {
                    warn!("{note}");
                }
                info!(driver = %cfg.driver, loaded = ?r.loaded, status = ?r.status, "modules verified");
            }
            Err(e) => {
                let _ = crate::report::report_load_failure(client, node, &e.to_string()).await;
                return Err(e);
            }
        }
    }
    crate::report::label_ready(client, node).await?;
    info!("labelled the node dpdk.aws.k8s/ready=true");
    Ok(())
}

fn no_module_flags() -> ModuleArgs {
    ModuleArgs {
        drivers: Vec::new(),
        noiommu: None,
        write_combining: None,
    }
}

/// The `run` loop on the simulated node: the node is the kernel; no IMDS, no PodResources.
fn build_agent(args: &SimulateArgs, client: &Client, node: &str, sim: Arc<SimNode>) -> Agent {
    let host = HostArgs {
        sysfs_root: sim.sys.clone(),
        host_root: sim.host.clone(),
        proc_root: sim.proc_.clone(),
        dev_root: sim.dev.clone(),
        state_dir: sim.state.clone(),
        kernel_release: Some(sim.release.clone()),
    };
    Agent {
        node: node.to_string(),
        client: client.clone(),
        sysfs: host.sysfs(),
        release: sim.release.clone(),
        kernel: sim,
        host,
        module_args: no_module_flags(),
        imds: None,
        pod_resources_socket: None,
        // The default route on ens5 is what protects the primary NIC here.
        node_ips: Vec::new(),
        resync: args.resync,
        retry: args.retry,
    }
}

/// The simulated kubelet on `<dir>/device-plugins`, and the device plugin (as
/// `device-plugin` wires it) reading the node's tree.
async fn run_device_plugin(
    client: &Client,
    kubelet_client: Client,
    node: &str,
    dir: &Path,
    stop: CancellationToken,
) -> Result<(), Error> {
    let plugin_dir = dir.join(PLUGIN_DIR);
    let kubelet = SimKubelet::start(
        &plugin_dir,
        Some(NodeStatusWriter {
            client: kubelet_client,
            node: node.to_string(),
        }),
    )?;
    let (desired_tx, desired_rx) = watch::channel(DesiredState::default());
    tokio::spawn(
        device_plugin::source::watch_node_state(
            client.clone(),
            node.to_string(),
            RESOURCE_PREFIX.to_string(),
            desired_tx,
            stop.clone(),
        )
        .in_current_span(),
    );
    let config = Config::new(&plugin_dir, dir.join("sys"), dir.join("dev"));
    let reporter = NodeReporter {
        client: client.clone(),
        node: node.to_string(),
    };
    info!(plugin_dir = %plugin_dir.display(), "device plugin starting");
    let result = device_plugin::run(config, desired_rx, Metrics::new(), Some(reporter), stop).await;
    let stopped = kubelet.shutdown().await;
    result.and(stopped)
}
