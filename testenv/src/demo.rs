//! The README's demo: the main job on an embedded default. A local control plane with
//! the CRDs and manifests from `deploy/`, simulated DPDK nodes and NodeENIs, and the
//! examples-repo configs; then a short tour of what to look at.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dpdk_bridge::api::{DPDKConfig, NodeENI};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

use crate::control_plane::workspace_root;
use crate::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
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
    step("serving examples-repo as a Git repository over HTTPS (git http-backend, basic auth, a generated CA)");
    let scratch = tempfile::Builder::new().prefix("dpdk-demo-").tempdir().map_err(io_err_demo)?;
    let repo = WorkRepo::init(&scratch.path().join("git").join("platform").join("dpdk-config"))?;
    copy_tree(&root.join("examples-repo"), &repo.dir)?;
    let sha = repo.commit("examples-repo as a platform team keeps it")?;
    let server = HttpsGitServer::start(&scratch.path().join("git"), HttpAuth::Basic { username: "demo".into(), password: "demo-password".into() }).await?;
    let url = server.url("platform/dpdk-config");
    let source = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: platform-dpdk-git, namespace: dpdk-operator}}\nstringData:\n  username: demo\n  password: demo-password\n  ca.crt: |\n{ca}\n---\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfigSource\nmetadata: {{name: platform-dpdk, namespace: dpdk-operator}}\nspec:\n  url: {url}\n  ref: {{branch: main}}\n  path: clusters/production\n  interval: 30s\n  secretRef: {{name: platform-dpdk-git}}\n",
        ca = server.ca_pem.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"),
    );
    let source_file = scratch.path().join("source.yaml");
    std::fs::write(&source_file, source).map_err(io_err_demo)?;
    kubectl(&cp, &["apply", "-f", &source_file.display().to_string()])?;

    let http_port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(io_err_demo)?.port();
    let reconciler = sibling_binary("dpdk-reconciler")?;
    step(&format!("starting the reconciler ({} run) against the local control plane", reconciler.display()));
    let log_path = scratch.path().join("dpdk-reconciler.log");
    let log = std::fs::File::create(&log_path).map_err(io_err_demo)?;
    let mut cmd = Command::new(&reconciler);
    cmd.args(["run", &format!("--http-addr=127.0.0.1:{http_port}"), &format!("--source-cache-dir={}", scratch.path().join("cache").display())])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err_demo)?)
        .stderr(log);
    let child = crate::process::spawn_tied(cmd)?;
    let _reconciler = Reaper(child);

    step(&format!("waiting for the Git revision main@sha1:{sha} to be applied and the nodes to be configured"));
    converge(&client, &format!("main@sha1:{sha}"), opts.nodes, &log_path).await?;
    tour(&cp, &root)?;
    println!("reconciler log: {}", log_path.display());
    println!("metrics:        http://127.0.0.1:{http_port}/metrics");
    println!("git repository: {url} (user demo, password demo-password)");
    if !opts.once {
        step("running; Ctrl-C stops everything");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(server);
    Ok(())
}

/// Kills the child when the demo ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        crate::process::stop(&mut self.0, Duration::from_secs(5));
    }
}

fn io_err_demo(e: std::io::Error) -> Error {
    Error::Other(format!("demo: {e}"))
}

/// A workspace binary next to this one (same cargo target dir); built when missing.
fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err_demo)?;
    let dirs = exe.parent().map(|d| vec![d.to_path_buf(), d.parent().map(Path::to_path_buf).unwrap_or_default()]).unwrap_or_default();
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    step(&format!("building {name} (cargo build -p {name})"));
    let status = Command::new("cargo").args(["build", "-p", name, "--bin", name]).current_dir(workspace_root()).status().map_err(io_err_demo)?;
    if !status.success() {
        return Err(Error::Other(format!("cargo build -p {name} failed")));
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| Error::Other(format!("{name} not found next to {}", exe.display())))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).map_err(io_err_demo)?.flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&target).map_err(io_err_demo)?;
            copy_tree(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target).map_err(io_err_demo)?;
        }
    }
    Ok(())
}

/// Waits until the source applied `revision`, every simulated node carries the enabled
/// label, the NodeENI carries the DPDK fields and each node has its DPDKNodeState.
async fn converge(client: &Client, revision: &str, nodes: usize, log: &Path) -> Result<()> {
    let configs: Api<DPDKConfig> = Api::all(client.clone());
    let node_api: Api<Node> = Api::all(client.clone());
    let enis: Api<NodeENI> = Api::all(client.clone());
    let states: Api<dpdk_bridge::api::DPDKNodeState> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    loop {
        let applied = configs
            .get_opt("default-dpdk-config")
            .await?
            .and_then(|c| c.metadata.annotations.and_then(|a| a.get(dpdk_bridge::labels::REVISION_ANNOTATION).cloned()));
        let enabled = node_api
            .list(&kube::api::ListParams::default().labels(&format!("{}=true", dpdk_bridge::labels::NODE_ENABLED_LABEL)))
            .await?
            .items
            .len();
        let eni = enis.get("multi-eni-dpdk").await?;
        let eni_ok = eni.spec.enable_dpdk == Some(true) && eni.spec.dpdk_driver.as_deref() == Some("vfio-pci");
        let state_count = states.list(&Default::default()).await?.items.len();
        let now = format!("revision {applied:?}, {enabled}/{nodes} nodes enabled, NodeENI DPDK fields {eni_ok}, {state_count} DPDKNodeStates");
        if now != last {
            step(&format!("  {now}"));
            last = now;
        }
        if applied.as_deref() == Some(revision) && enabled == nodes && eni_ok && state_count == nodes {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!("demo did not converge in 120s ({last}); reconciler log {} ends with:\n{}", log.display(), crate::tail_file(log, 20))));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
    println!("$ kubectl get nodes -l ng=multi-eni -L dpdk.aws.k8s/enabled,dpdk.aws.k8s/ready");
    print!("{}", kubectl(cp, &["get", "nodes", "-l", "ng=multi-eni", "-L", "dpdk.aws.k8s/enabled,dpdk.aws.k8s/ready"])?);
    println!("$ kubectl get daemonsets,deployments -n dpdk-operator");
    print!("{}", kubectl(cp, &["get", "daemonsets,deployments", "-n", "dpdk-operator"])?);
    println!();
    println!("examples-repo: {}", root.join("examples-repo").display());
    Ok(())
}
