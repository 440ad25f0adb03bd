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
enum Cmd {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {}
}
