//! `dpdk-testenv`: build and run the local control plane by hand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dpdk_testenv::{ControlPlane, StartOptions, ensure_binaries};

#[derive(Parser)]
#[command(
    name = "dpdk-testenv",
    version,
    about = "A real local Kubernetes control plane (kube-apiserver + etcd built from Go modules) for dpdk-gitops"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (or find in the cache) kube-apiserver, etcd, kubectl, helm, actionlint and
    /// Flux's source-controller and kustomize-controller, and print their paths.
    Build,
    /// Start a control plane with the CRDs installed and keep it running until Ctrl-C.
    /// Run the demo: control plane, deploy/, simulated nodes and NodeENIs, the examples-repo configs, and a tour.
    Demo {
        /// Exit after converging instead of staying up until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Number of simulated DPDK nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Build both images from deploy/docker/*.Dockerfile (static binaries, buildah) into an
    /// OCI layout under the cache, and print their digests and sizes.
    Images {
        /// Build the binaries with the release profile (LTO; slow) instead of the dev one.
        #[arg(long)]
        release: bool,
    },
    Up {
        /// Keep etcd data and the kubeconfig here (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Do not install the CRDs from deploy/.
        #[arg(long)]
        no_crds: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build => tokio::task::spawn_blocking(ensure_binaries)
            .await
            .map_err(|e| dpdk_testenv::Error::Other(e.to_string()))
            .and_then(|r| r)
            .map(|b| {
                println!(
                    "kube-apiserver {} {}",
                    b.kubernetes_version,
                    b.kube_apiserver.display()
                );
                println!(
                    "kubectl        {} {}",
                    b.kubernetes_version,
                    b.kubectl.display()
                );
                println!("etcd           {} {}", b.etcd_version, b.etcd.display());
            })
            .and_then(|()| build_tools())
            .and_then(|()| build_flux()),
        Cmd::Images { release } => images(release),
        Cmd::Up { data_dir, no_crds } => up(data_dir, !no_crds).await,
        Cmd::Demo { once, nodes } => {
            dpdk_testenv::demo::run(dpdk_testenv::demo::DemoOptions { once, nodes }).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dpdk-testenv: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// helm and actionlint, built after the control plane (one build at a time on 2 cores).
fn build_tools() -> dpdk_testenv::Result<()> {
    for tool in dpdk_testenv::binaries::TOOLS {
        let exe = tool.ensure()?;
        println!("{:<14} {} {}", tool.name, tool.version()?, exe.display());
    }
    Ok(())
}

/// Flux's two controllers and their CRDs, last: the longest build after the control plane.
fn build_flux() -> dpdk_testenv::Result<()> {
    let flux = dpdk_testenv::binaries::ensure_flux()?;
    for (name, exe) in [
        ("source-ctrl", &flux.source_controller),
        ("kustomize-ctrl", &flux.kustomize_controller),
    ] {
        println!("{name:<14} {} {}", flux.version, exe.display());
    }
    println!("flux CRDs      {} {}", flux.version, flux.crd_dir.display());
    Ok(())
}

fn images(release: bool) -> dpdk_testenv::Result<()> {
    use dpdk_testenv::images::{Profile, build_images};
    let profile = if release {
        Profile::Release
    } else {
        Profile::Dev
    };
    for image in build_images(profile)? {
        println!(
            "{:<16} {} {:>6.1} MiB  {}",
            image.name,
            image.digest,
            image.size as f64 / (1024.0 * 1024.0),
            image.oci_ref()
        );
    }
    Ok(())
}

async fn up(data_dir: Option<PathBuf>, install_crds: bool) -> dpdk_testenv::Result<()> {
    eprintln!("[testenv] starting etcd and kube-apiserver...");
    let cp = ControlPlane::start(StartOptions {
        install_crds,
        data_dir,
        ..Default::default()
    })
    .await?;
    println!("control plane ready at {}", cp.server_url());
    println!("kubeconfig: {}", cp.kubeconfig_path().display());
    println!(
        "try:        KUBECONFIG={} {} get crds",
        cp.kubeconfig_path().display(),
        cp.binaries().kubectl.display()
    );
    println!("Ctrl-C stops it.");
    let _ = tokio::signal::ctrl_c().await;
    drop(cp);
    Ok(())
}
