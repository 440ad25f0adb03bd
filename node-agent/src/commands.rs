//! The agent's subcommands other than the device plugin: `load` (init container
//! driver-loader), `run` (container monitor), and the one-shot `bind` / `unbind` that work
//! without an API server (debugging a node, and the real-kernel test in QEMU).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use dpdk_bridge::api::{DesiredDevice, DpdkDriver};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::error::Error;
use crate::journal::Journal;
use crate::kernel::RealKernel;
use crate::mapping::{self, Imds};
use crate::modules::{self, ModuleConfig, ModuleHost};
use crate::reconcile::{self, NodeContext, Report, Target};
use crate::safety::{self, SafetyPolicy};
use crate::sysfs::{PciAddress, Sysfs};

/// Where the agent finds the host. Defaults are the host's own paths; in a pod they are
/// bind mounts; in tests they are fake trees.
#[derive(clap::Args, Debug, Clone)]
pub struct HostArgs {
    /// Root of the sysfs tree (driver_override, unbind, drivers_probe, /sys/module).
    #[arg(long, env = "DPDK_SYSFS_ROOT", default_value = crate::sysfs::DEFAULT_SYSFS_ROOT)]
    pub sysfs_root: PathBuf,
    /// The host's root filesystem: kernel modules in <host-root>/lib/modules, kernel config in
    /// <host-root>/boot, persisted settings in <host-root>/etc.
    #[arg(long, env = "DPDK_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// The host's /proc (routes in net/route, kernel release in sys/kernel/osrelease).
    #[arg(long, env = "DPDK_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The host's /dev (vfio group nodes are checked there).
    #[arg(long, env = "DPDK_DEV_ROOT", default_value = crate::sysfs::DEFAULT_DEV_ROOT)]
    pub dev_root: PathBuf,
    /// Directory of the binding journal; a hostPath, so it survives restarts and upgrades.
    #[arg(long, env = "DPDK_STATE_DIR", default_value = "/var/lib/dpdk-gitops")]
    pub state_dir: PathBuf,
    /// Kernel release whose modules to load (default: the running kernel's).
    #[arg(long)]
    pub kernel_release: Option<String>,
}

impl HostArgs {
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(&self.sysfs_root)
    }

    pub fn kernel(&self) -> RealKernel {
        RealKernel::new(&self.sysfs_root)
    }

    pub fn release(&self) -> Result<String, Error> {
        match &self.kernel_release {
            Some(r) => Ok(r.clone()),
            None => modules::kernel_release(&self.proc_root),
        }
    }
}

/// Module options given on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct ModuleArgs {
    /// DPDK driver(s) to load: vfio-pci, igb_uio, uio_pci_generic (default: the drivers the
    /// node's DPDKNodeState asks for, else vfio-pci).
    #[arg(long = "driver", value_parser = parse_driver)]
    pub drivers: Vec<DpdkDriver>,
    /// Enable vfio's unsafe noiommu mode (default: the DPDKNodeState's enableUnsafeNoIOMMU,
    /// else true as in the DPDKConfig).
    #[arg(long)]
    pub noiommu: Option<bool>,
    /// Ask for write-combining (default: the DPDKNodeState's writeCombining, else false).
    #[arg(long)]
    pub write_combining: Option<bool>,
}

fn parse_driver(s: &str) -> Result<DpdkDriver, String> {
    DpdkDriver::ALL
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not one of vfio-pci, igb_uio, uio_pci_generic"))
}

/// `load`: load and verify the kernel modules, optionally persist them, label the node ready.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub modules: ModuleArgs,
    /// This node's name (reads its DPDKNodeState, labels it dpdk.aws.k8s/ready=true).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Do not talk to the API server (no DPDKNodeState, no ready label).
    #[arg(long)]
    pub offline: bool,
    /// Also write <host-root>/etc/modules-load.d and modprobe.d so the modules load at boot.
    #[arg(long)]
    pub persist: bool,
}

/// `bind`: one-shot bind by PCI address or ENI ID, without an API server.
#[derive(clap::Args, Debug, Clone)]
pub struct BindArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// PCI address to bind (repeatable).
    #[arg(long = "pci")]
    pub pci: Vec<String>,
    /// ENI ID to bind, mapped through IMDSv2 (repeatable).
    #[arg(long = "eni")]
    pub eni: Vec<String>,
    /// Driver to bind to.
    #[arg(long, default_value = "vfio-pci", value_parser = parse_driver)]
    pub driver: DpdkDriver,
    /// Device index recorded for the devices (0 is the primary ENI and always refused).
    #[arg(long, default_value_t = 1)]
    pub device_index: i32,
    /// Resource name recorded in the journal.
    #[arg(long, default_value = "intel.com/dpdk")]
    pub resource_name: String,
    /// The node's InternalIP(s): interfaces holding one are refused.
    #[arg(long = "node-ip", env = "NODE_IP", value_delimiter = ',')]
    pub node_ips: Vec<IpAddr>,
    /// IMDS endpoint for --eni and the primary-MAC check ("none" to disable).
    #[arg(long, default_value = "none")]
    pub imds_endpoint: String,
    /// Load the driver's modules first (vfio-pci: vfio, vfio_iommu_type1, vfio-pci).
    #[arg(long)]
    pub load: bool,
    /// With --load: enable vfio's unsafe noiommu mode.
    #[arg(long)]
    pub noiommu: bool,
}

/// `unbind`: one-shot restore of journaled devices to their original drivers.
#[derive(clap::Args, Debug, Clone)]
pub struct UnbindArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// PCI address to restore (repeatable).
    #[arg(long = "pci", required_unless_present = "all")]
    pub pci: Vec<String>,
    /// Restore every device in the journal.
    #[arg(long)]
    pub all: bool,
}

/// What the one-shot commands print on stdout (JSON).
#[derive(Serialize)]
struct OneShotOutput<'a> {
    devices: &'a [dpdk_bridge::api::DeviceStatus],
    errors: &'a [String],
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    crate::runtime::build(crate::runtime::Flavor::CurrentThread)
}

fn exit(result: Result<(), Error>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "{what} failed");
            eprintln!("dpdk-node-agent {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Entry point of `load`.
pub fn load_main(args: LoadArgs) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    exit(rt.block_on(load(args)), "load")
}

/// The module configurations to load: flags first, then the DPDKNodeState, then defaults.
pub fn module_configs(
    args: &ModuleArgs,
    spec: Option<&dpdk_bridge::api::DPDKNodeStateSpec>,
) -> Vec<ModuleConfig> {
    let mut drivers: BTreeSet<DpdkDriver> = args.drivers.iter().copied().collect();
    if drivers.is_empty() {
        drivers = spec
            .map(|s| s.devices.iter().map(|d| d.driver).collect())
            .unwrap_or_default();
    }
    if drivers.is_empty() {
        drivers.insert(DpdkDriver::VfioPci);
    }
    let opts = spec.map(|s| s.driver_options.clone()).unwrap_or_default();
    drivers
        .into_iter()
        .map(|driver| ModuleConfig {
            driver,
            noiommu: args.noiommu.unwrap_or(opts.enable_unsafe_no_iommu),
            write_combining: args.write_combining.unwrap_or(opts.write_combining),
        })
        .collect()
}

async fn load(args: LoadArgs) -> Result<(), Error> {
    let client = match (&args.node_name, args.offline) {
        (Some(_), false) => Some(kube::Client::try_default().await?),
        _ => None,
    };
    let spec = match (&client, &args.node_name) {
        (Some(c), Some(node)) => crate::report::get_node_state(c, node)
            .await?
            .map(|s| s.spec),
        _ => None,
    };
    let sysfs = args.host.sysfs();
    let kernel = args.host.kernel();
    let release = args.host.release()?;
    let host = ModuleHost {
        sysfs: &sysfs,
        kernel: &kernel,
        host_root: &args.host.host_root,
        release: &release,
    };
    let mut last = None;
    for cfg in module_configs(&args.modules, spec.as_ref()) {
        let result = match modules::ensure_loaded(&host, &cfg) {
            Ok(r) => r,
            Err(e) => {
                if let (Some(c), Some(node)) = (&client, &args.node_name) {
                    let _ = crate::report::report_load_failure(c, node, &e.to_string()).await;
                }
                return Err(e);
            }
        };
        for note in &result.notes {
            warn!("{note}");
        }
        info!(driver = %cfg.driver, loaded = ?result.loaded, status = ?result.status, "modules verified");
        if args.persist {
            let changed = modules::persist(&args.host.host_root, &cfg, result.status.noiommu)?;
            info!(files = ?changed, "persisted module settings");
        }
        println!(
            "{}",
            serde_json::to_string(&result.status).unwrap_or_default()
        );
        last = Some(result);
    }
    if let (Some(c), Some(node), Some(_)) = (&client, &args.node_name, last) {
        crate::report::label_ready(c, node).await?;
        info!(node, "labelled the node dpdk.aws.k8s/ready=true");
    }
    Ok(())
}

/// Entry point of `bind`.
pub fn bind_main(args: BindArgs) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(bind(args)) {
        Ok(report) => one_shot_exit(&report),
        Err(e) => exit(Err(e), "bind"),
    }
}

fn one_shot_exit(report: &Report) -> ExitCode {
    let out = OneShotOutput {
        devices: &report.devices,
        errors: &report.errors,
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    for e in &report.errors {
        eprintln!("dpdk-node-agent: {e}");
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Targets for the devices the journal already holds, so a one-shot command leaves them be.
fn journaled_targets(journal: &Journal, except: &BTreeSet<PciAddress>) -> Vec<Target> {
    journal
        .entries()
        .filter(|e| !except.contains(&e.address))
        .map(|e| Target {
            device_index: e.device_index,
            node_eni: e.node_eni.clone(),
            eni_id: e.eni_id.clone(),
            address: e.address.clone(),
            driver: e.target_driver.clone(),
            resource_name: e.resource_name.clone(),
            eni_mac: Default::default(),
        })
        .collect()
}

async fn bind(args: BindArgs) -> Result<Report, Error> {
    let sysfs = args.host.sysfs();
    let kernel = args.host.kernel();
    if args.load {
        let release = args.host.release()?;
        let host = ModuleHost {
            sysfs: &sysfs,
            kernel: &kernel,
            host_root: &args.host.host_root,
            release: &release,
        };
        let cfg = ModuleConfig {
            driver: args.driver,
            noiommu: args.noiommu,
            write_combining: false,
        };
        let r = modules::ensure_loaded(&host, &cfg)?;
        info!(loaded = ?r.loaded, "modules verified");
    }
    let imds = match args.imds_endpoint.as_str() {
        "none" | "" => None,
        url => Some(Imds::new(url)?),
    };
    let mut journal = Journal::open(&args.host.state_dir)?;
    let network = safety::read_host_network(&args.host.proc_root)?;
    let mut policy = SafetyPolicy {
        node_ips: args.node_ips.clone(),
        ..Default::default()
    };
    if let Some(imds) = &imds
        && let Some(mac) = imds.primary_mac().await?
    {
        policy.primary_macs.insert(mac);
    }
    let ctx = NodeContext {
        sysfs: &sysfs,
        dev_root: &args.host.dev_root,
        kernel: &kernel,
        network: &network,
        policy: &policy,
        in_use: None,
    };
    let recovered = reconcile::recover(&ctx, &mut journal);
    let mut wanted = Vec::new();
    let mut errors: Vec<String> = recovered.iter().map(|e| e.to_string()).collect();
    let requests = args
        .pci
        .iter()
        .map(|p| (Some(p.clone()), None))
        .chain(args.eni.iter().map(|e| (None, Some(e.clone()))));
    for (pci, eni) in requests {
        let desired = DesiredDevice {
            device_index: args.device_index,
            node_eni: "one-shot".into(),
            eni_id: eni,
            pci_address: pci,
            resource_name: args.resource_name.clone(),
            driver: args.driver,
        };
        match mapping::resolve(&desired, &sysfs, &journal, imds.as_ref()).await {
            Ok(t) => wanted.push(t),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let new: BTreeSet<PciAddress> = wanted.iter().map(|t| t.address.clone()).collect();
    let mut targets = journaled_targets(&journal, &new);
    targets.extend(wanted);
    let mut report = reconcile::converge(&ctx, &mut journal, &targets);
    errors.append(&mut report.errors);
    report.errors = errors;
    Ok(report)
}

/// Entry point of `unbind`.
pub fn unbind_main(args: UnbindArgs) -> ExitCode {
    match unbind(&args) {
        Ok(report) => one_shot_exit(&report),
        Err(e) => exit(Err(e), "unbind"),
    }
}

fn unbind(args: &UnbindArgs) -> Result<Report, Error> {
    let sysfs = args.host.sysfs();
    let kernel = args.host.kernel();
    let mut journal = Journal::open(&args.host.state_dir)?;
    let release: BTreeSet<PciAddress> = if args.all {
        journal.entries().map(|e| e.address.clone()).collect()
    } else {
        args.pci
            .iter()
            .map(|p| PciAddress::parse(p))
            .collect::<Result<_, _>>()?
    };
    for addr in &release {
        if journal.get(addr).is_none() {
            return Err(Error::Journal {
                path: journal.path().display().to_string(),
                message: format!(
                    "{addr} is not in the journal: the agent did not bind it, so it does not know its original driver"
                ),
            });
        }
    }
    let network = safety::HostNetwork::default();
    let policy = SafetyPolicy::default();
    let ctx = NodeContext {
        sysfs: &sysfs,
        dev_root: &args.host.dev_root,
        kernel: &kernel,
        network: &network,
        policy: &policy,
        in_use: None,
    };
    let mut errors: Vec<String> = reconcile::recover(&ctx, &mut journal)
        .iter()
        .map(|e| e.to_string())
        .collect();
    let keep = journaled_targets(&journal, &release);
    let mut report = reconcile::converge(&ctx, &mut journal, &keep);
    errors.append(&mut report.errors);
    report.errors = errors;
    Ok(report)
}
