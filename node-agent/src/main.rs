//! `dpdk-node-agent`: runs on every DPDK node (DaemonSets dpdk-driver-loader and sriov-device-plugin).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dpdk_bridge::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "dpdk-node-agent",
    version,
    about = "DPDK node agent: loads vfio modules, binds ENIs to DPDK drivers, reports node state, serves the kubelet device plugin"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load and verify the DPDK kernel modules, then label the node dpdk.aws.k8s/ready=true (init container driver-loader).
    Load(dpdk_node_agent::commands::LoadArgs),
    /// Keep the modules loaded, bind and unbind devices per the node's DPDKNodeState, report status (container monitor).
    Run(dpdk_node_agent::agent::RunArgs),
    /// One-shot: bind devices by PCI address or ENI ID, without an API server (debugging; the QEMU test).
    Bind(dpdk_node_agent::commands::BindArgs),
    /// One-shot: give journaled devices back to their original drivers.
    Unbind(dpdk_node_agent::commands::UnbindArgs),
    /// Serve DPDK-bound devices to the kubelet (device plugin API v1beta1, DaemonSet sriov-device-plugin).
    DevicePlugin(dpdk_node_agent::device_plugin::cli::DevicePluginArgs),
    /// Demo and tests only, never on a real node: simulated nodes (a fake sysfs tree and
    /// kernel model per --node, in <work-dir>/<node>/), each running the agent (load, then
    /// run) and the device plugin against a simulated kubelet that writes the Node's
    /// capacity and allocatable. Runs until SIGINT/SIGTERM.
    Simulate(dpdk_node_agent::sim::cli::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Cmd::Load(args) => dpdk_node_agent::commands::load_main(args),
        Cmd::Run(args) => dpdk_node_agent::agent::run_main(args),
        Cmd::Bind(args) => dpdk_node_agent::commands::bind_main(args),
        Cmd::Unbind(args) => dpdk_node_agent::commands::unbind_main(args),
        Cmd::DevicePlugin(args) => dpdk_node_agent::device_plugin::cli::main(args),
        Cmd::Simulate(args) => dpdk_node_agent::sim::cli::main(args),
    }
}
