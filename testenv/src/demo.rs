//! The README's demo: the main job on an embedded default. A local control plane with
//! the CRDs and manifests from `deploy/`, simulated DPDK nodes and NodeENIs, and the
//! examples-repo configs; then a short tour of what to look at.

use std::path::Path;
use std::time::Duration;

use kube::Client;

use crate::control_plane::workspace_root;
use crate::{ControlPlane, Error, Result, StartOptions, fixtures};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Exit once everything has converged instead of waiting for Ctrl-C.
    pub once: bool,
    /// Number of simulated DPDK nodes.
    pub nodes: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { once: false, nodes: 3 }
    }
}

fn step(msg: &str) {
    eprintln!("[demo] {msg}");
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let out = cp.kubectl().args(args).output().map_err(|e| Error::Other(format!("kubectl: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Simulated nodes: `ip-10-0-1-1N` in node group `multi-eni`, each with one DPDK NodeENI
/// attachment at device index 2, the way the Multi-ENI Controller records it.
async fn simulate_cluster(client: &Client, nodes: usize) -> Result<Vec<String>> {
    fixtures::create_nodeeni(client, "multi-eni-dpdk", &[("ng", "multi-eni")], 2, &["subnet-0a1b2c3d4e5f60718"]).await?;
    let mut names = Vec::new();
    for i in 0..nodes {
        let name = format!("ip-10-0-1-{}.ec2.internal", 10 + i);
        fixtures::create_node(client, &name, &[("ng", "multi-eni"), ("kubernetes.io/os", "linux")], &format!("10.0.1.{}", 10 + i)).await?;
        fixtures::upsert_attachment(client, "multi-eni-dpdk", fixtures::attachment(&name, 2, &format!("eni-0d{:015x}", i + 1))).await?;
        names.push(name);
    }
    Ok(names)
}

/// Runs the demo until Ctrl-C (or, with `once`, until it has converged).
pub async fn run(opts: DemoOptions) -> Result<()> {
    let root = workspace_root();
    step("starting the local control plane (kube-apiserver + etcd built from Go modules; the first run builds them)");
    let cp = ControlPlane::start(StartOptions::default()).await?;
    let path = |rel: &str| root.join(rel).display().to_string();
    step("installing the NodeENI CRD (stand-in for the AWS Multi-ENI Controller) and deploy/");
    kubectl(&cp, &["apply", "-f", &path("deploy/testing/nodeeni-crd.yaml")])?;
    for f in ["deploy/dpdk-crd.yaml", "deploy/dpdk-operator.yaml", "deploy/dpdk-controller.yaml"] {
        kubectl(&cp, &["apply", "-f", &path(f)])?;
    }
    kubectl(&cp, &["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"])?;
    let client = cp.client().await?;
    step(&format!("simulating {} EC2 nodes in node group ng=multi-eni with a NodeENI at device index 2", opts.nodes));
    simulate_cluster(&client, opts.nodes).await?;
    step("applying the examples-repo configs (clusters/production)");
    kubectl(&cp, &["apply", "-f", &path("examples-repo/clusters/production")])?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tour(&cp, &root)?;
    if !opts.once {
        step("running; Ctrl-C stops everything");
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}

fn tour(cp: &ControlPlane, root: &Path) -> Result<()> {
    let kc = cp.kubeconfig_path().display().to_string();
    let kubectl_bin = cp.binaries().kubectl.display().to_string();
    println!();
    println!("== dpdk-gitops demo ==");
    println!("kubeconfig: {kc}");
    println!("  export KUBECONFIG={kc}; alias kubectl={kubectl_bin}");
    println!();
    println!("$ kubectl get dpdkconfigs,dpdknodestates");
    print!("{}", kubectl(cp, &["get", "dpdkconfigs,dpdknodestates"])?);
    println!("$ kubectl get nodes -l ng=multi-eni --show-labels");
    print!("{}", kubectl(cp, &["get", "nodes", "-l", "ng=multi-eni", "-L", "dpdk.aws.k8s/enabled,dpdk.aws.k8s/ready"])?);
    println!("$ kubectl get pods,daemonsets,deployments -n dpdk-operator");
    print!("{}", kubectl(cp, &["get", "daemonsets,deployments", "-n", "dpdk-operator"])?);
    println!();
    println!("examples-repo: {}", root.join("examples-repo").display());
    Ok(())
}
