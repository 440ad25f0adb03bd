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
    /// Validate the DPDKConfig YAML under a directory offline, with the source controller's
    /// loader and rules (for config-repo CI and pre-commit). Exit 0: valid (warnings printed);
    /// 1: invalid, one `file:line:col: message` line per error; 2: usage error.
    Validate {
        /// Directory (or single file) to check, recursively; it is treated as the repository
        /// root, so symlinks leaving it are refused.
        dir: PathBuf,
        /// Largest YAML file read, in bytes.
        #[arg(long, default_value_t = 1024 * 1024)]
        max_file_bytes: u64,
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
        Cmd::Validate { dir, max_file_bytes } => {
            let opts = dpdk_reconciler::manifest::load::LoadOptions { max_file_bytes, ..Default::default() };
            ExitCode::from(dpdk_reconciler::manifest::report::validate_dir(
                &dir,
                &opts,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
        }
    }
}
