//! `dpdk-reconciler`: the GitOps engine and DPDK controller of dpdk-gitops.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dpdk_bridge::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "dpdk-reconciler",
    version,
    about = "GitOps reconciler and DPDK controller: applies DPDKConfigs from Git, drives NodeENIs and node labels, reports drift"
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
    /// Write the CRDs generated from the Rust types (deploy/dpdk-crd.yaml, deploy/testing/nodeeni-crd.yaml) and docs/crd-reference.md.
    Crdgen {
        /// Workspace root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Do not write; exit 1 when a committed file differs from the generated one.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Cmd::Crdgen { root, check } => match dpdk_reconciler::crdgen::run(&root, check) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("dpdk-reconciler crdgen: {e}");
                ExitCode::from(2)
            }
        },
    }
}
