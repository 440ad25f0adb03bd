//! `dpdk-node-agent device-plugin`: flags and wiring (DPDKNodeState watch → plugin,
//! metrics endpoint, signals).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api::DEFAULT_PLUGIN_DIR;
use super::inventory::DesiredState;
use super::manager::{self, Config};
use super::metrics::Metrics;
use super::report::NodeReporter;
use super::source;
use crate::error::Error;

/// Serve DPDK-bound devices to the kubelet (device plugin API v1beta1), one socket per resource.
#[derive(clap::Args, Debug, Clone)]
pub struct DevicePluginArgs {
    /// This node's name: the DPDKNodeState to follow.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The kubelet's device-plugin directory (kubelet.sock and the plugin sockets).
    #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
    pub plugin_dir: PathBuf,
    /// Root of the sysfs tree to read devices from.
    #[arg(long, default_value = crate::sysfs::DEFAULT_SYSFS_ROOT)]
    pub sysfs_root: PathBuf,
    /// Where this process sees the host's /dev (vfio and uio nodes are checked there;
    /// Allocate always hands the kubelet host paths under /dev).
    #[arg(long, default_value = crate::sysfs::DEFAULT_DEV_ROOT)]
    pub dev_root: PathBuf,
    /// Domain given to resource names that come without one (`name` → `<prefix>/name`).
    #[arg(long, default_value = "intel.com")]
    pub resource_prefix: String,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9102) at /metrics.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Health poll interval (a Go duration: 50ms, 1s); inotify triggers earlier rescans.
    #[arg(long, default_value = "50ms", value_parser = dpdk_bridge::duration::parse)]
    pub health_interval: Duration,
    /// Do not write status.devicePlugin on the DPDKNodeState.
    #[arg(long)]
    pub no_status: bool,
}

/// Entry point of the subcommand.
pub fn main(args: DevicePluginArgs) -> ExitCode {
    let Some(runtime) =
        crate::runtime::build(crate::runtime::Flavor::MultiThread { workers: None })
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "device plugin failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(args: DevicePluginArgs) -> Result<(), Error> {
    let stop = CancellationToken::new();
    let signals = stop.clone();
    tokio::spawn(async move {
        dpdk_bridge::signals::shutdown().await;
        tracing::info!("shutting down");
        signals.cancel();
    });

    let client = kube::Client::try_default().await?;
    let metrics = Metrics::new();
    let (desired_tx, desired_rx) = watch::channel(DesiredState::default());
    tokio::spawn(source::watch_node_state(
        client.clone(),
        args.node_name.clone(),
        args.resource_prefix.clone(),
        desired_tx,
        stop.clone(),
    ));
    if let Some(addr) = args.metrics_addr {
        let (metrics, stop) = (metrics.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics.serve(addr, stop).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    let mut config = Config::new(&args.plugin_dir, &args.sysfs_root, &args.dev_root);
    config.health_poll = args.health_interval;
    let reporter = (!args.no_status).then(|| NodeReporter {
        client,
        node: args.node_name.clone(),
    });
    tracing::info!(node = %args.node_name, plugin_dir = %args.plugin_dir.display(), "device plugin starting");
    manager::run(config, desired_rx, metrics, reporter, stop).await
}
