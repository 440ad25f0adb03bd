//! The README's demo: the main job on an embedded default. A local control plane with
//! the CRDs and manifests from `deploy/`, simulated DPDK nodes and NodeENIs, and the
//! examples-repo configs; then a short tour of what to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dpdk_bridge::api::{DPDKConfig, NodeENI};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

use crate::control_plane::workspace_root;
use crate::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use crate::{ControlPlane, Error, Reaper, Result, StartOptions, fixtures};

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
        Self {
            once: false,
            nodes: 3,
        }
    }
}

fn step(msg: &str) {
    eprintln!("[demo] {msg}");
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let out = cp
        .kubectl()
        .args(args)
        .output()
        .map_err(|e| Error::Other(format!("kubectl: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where the DPDK NIC (ens6) sits on every simulated node.
const DPDK_PCI_ADDRESS: &str = "0000:00:06.0";
/// The extended resource the examples-repo config advertises.
const RESOURCE: &str = "intel.com/intel_sriov_netdevice_2";
/// ServiceAccounts of the node DaemonSets in deploy/dpdk-operator.yaml.
const AGENT_SERVICE_ACCOUNT: &str = "dpdk-node-agent";
const DEVICE_PLUGIN_SERVICE_ACCOUNT: &str = "dpdk-device-plugin";

/// Simulated nodes: `ip-10-0-1-1N` in node group `multi-eni`, each with one DPDK NodeENI
/// attachment at device index 2, the way the Multi-ENI Controller records it.
async fn simulate_cluster(client: &Client, nodes: usize) -> Result<Vec<String>> {
    // The agent maps the ENI to its PCI device through spec.dpdkPCIAddress (no IMDS here);
    // every simulated node has the ENI's NIC at that address.
    fixtures::create_nodeeni_with(
        client,
        "multi-eni-dpdk",
        &[("ng", "multi-eni")],
        2,
        &["subnet-0a1b2c3d4e5f60718"],
        |spec| {
            spec.dpdk_pci_address = Some(DPDK_PCI_ADDRESS.to_string());
        },
    )
    .await?;
    let mut names = Vec::new();
    for i in 0..nodes {
        let name = format!("ip-10-0-1-{}.ec2.internal", 10 + i);
        fixtures::create_node(
            client,
            &name,
            &[("ng", "multi-eni"), ("kubernetes.io/os", "linux")],
            &format!("10.0.1.{}", 10 + i),
        )
        .await?;
        fixtures::upsert_attachment(
            client,
            "multi-eni-dpdk",
            fixtures::attachment(&name, 2, &format!("eni-0d{:015x}", i + 1)),
        )
        .await?;
        names.push(name);
    }
    Ok(names)
}

/// Runs the demo until Ctrl-C (or, with `once`, until it has converged).
pub async fn run(opts: DemoOptions) -> Result<()> {
    let root = workspace_root();
    step(
        "starting the local control plane (kube-apiserver + etcd built from Go modules; the first run builds them)",
    );
    let cp = ControlPlane::start(StartOptions::default()).await?;
    let path = |rel: &str| root.join(rel).display().to_string();
    step("installing the NodeENI CRD (stand-in for the AWS Multi-ENI Controller) and deploy/");
    kubectl(
        &cp,
        &["apply", "-f", &path("deploy/testing/nodeeni-crd.yaml")],
    )?;
    for f in [
        "deploy/dpdk-crd.yaml",
        "deploy/dpdk-operator.yaml",
        "deploy/dpdk-controller.yaml",
    ] {
        kubectl(&cp, &["apply", "-f", &path(f)])?;
    }
    kubectl(
        &cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
    )?;
    step(
        "installing deploy/dpdk-node-policy.yaml: the node agents and device plugins act for their own node only",
    );
    fixtures::install_node_policy(&cp).await?;
    let client = cp.client().await?;
    step(&format!(
        "simulating {} EC2 nodes in node group ng=multi-eni with a NodeENI at device index 2",
        opts.nodes
    ));
    let node_names = simulate_cluster(&client, opts.nodes).await?;
    step(
        "serving examples-repo as a Git repository over HTTPS (git http-backend, basic auth, a generated CA)",
    );
    let scratch = tempfile::Builder::new()
        .prefix("dpdk-demo-")
        .tempdir()
        .map_err(io_err_demo)?;
    let repo = WorkRepo::init(
        &scratch
            .path()
            .join("git")
            .join("platform")
            .join("dpdk-config"),
    )?;
    copy_tree(&root.join("examples-repo"), &repo.dir)?;
    let sha = repo.commit("examples-repo as a platform team keeps it")?;
    let server = HttpsGitServer::start(
        &scratch.path().join("git"),
        HttpAuth::Basic {
            username: "demo".into(),
            password: "demo-password".into(),
        },
    )
    .await?;
    let url = server.url("platform/dpdk-config");
    let source = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: platform-dpdk-git, namespace: dpdk-operator}}\nstringData:\n  username: demo\n  password: demo-password\n  ca.crt: |\n{ca}\n---\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfigSource\nmetadata: {{name: platform-dpdk, namespace: dpdk-operator}}\nspec:\n  url: {url}\n  ref: {{branch: main}}\n  path: clusters/production\n  interval: 30s\n  secretRef: {{name: platform-dpdk-git}}\n",
        ca = server
            .ca_pem
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let source_file = scratch.path().join("source.yaml");
    std::fs::write(&source_file, source).map_err(io_err_demo)?;
    kubectl(&cp, &["apply", "-f", &source_file.display().to_string()])?;

    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io_err_demo)?
        .port();
    let reconciler = sibling_binary("dpdk-reconciler")?;
    step(&format!(
        "starting the reconciler ({} run) against the local control plane as ServiceAccount dpdk-operator/dpdk-controller",
        reconciler.display()
    ));
    let log_path = scratch.path().join("dpdk-reconciler.log");
    let log = std::fs::File::create(&log_path).map_err(io_err_demo)?;
    // As the Deployment runs it: with its ServiceAccount's RBAC from deploy/ (Git source,
    // controller, drift and leader election all go through it).
    let controller_kubeconfig = scratch.path().join("dpdk-controller.kubeconfig");
    cp.write_service_account_kubeconfig(
        "dpdk-operator",
        "dpdk-controller",
        &controller_kubeconfig,
    )?;
    let mut cmd = Command::new(&reconciler);
    cmd.args([
        "run",
        &format!("--http-addr=127.0.0.1:{http_port}"),
        &format!(
            "--source-cache-dir={}",
            scratch.path().join("cache").display()
        ),
    ])
    .env("KUBECONFIG", &controller_kubeconfig)
    // Plain text in the log files.
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .stdout(log.try_clone().map_err(io_err_demo)?)
    .stderr(log);
    let child = Reaper::spawn(cmd, CHILD_GRACE)?;
    let mut children = vec![Watched {
        name: "dpdk-reconciler",
        child,
        log: log_path.clone(),
    }];

    // The node side, as the DaemonSets in deploy/dpdk-operator.yaml run it: one node agent
    // and one device plugin per simulated node, each on its node's fake sysfs tree and each
    // its own process acting as its DaemonSet's ServiceAccount in a pod on that node (the
    // node-name user extra its token would carry), so deploy/'s RBAC and the node-scope
    // policy of deploy/dpdk-node-policy.yaml are what it gets. The simulated kubelets write
    // Node capacity as the admin (the real kubelet's own credentials).
    let node_agent = sibling_binary("dpdk-node-agent")?;
    let work_dir = scratch.path().join("nodes");
    let mut node_logs = Vec::new();
    for (name, component, account) in [
        ("node agents", "agent", AGENT_SERVICE_ACCOUNT),
        (
            "device plugins",
            "device-plugin",
            DEVICE_PLUGIN_SERVICE_ACCOUNT,
        ),
    ] {
        step(&format!(
            "starting the {name} ({} simulate --component {component}, one per node) as ServiceAccount dpdk-operator/{account}",
            node_agent.display()
        ));
        let log_dir = scratch.path().join(name.replace(' ', "-"));
        std::fs::create_dir_all(&log_dir).map_err(io_err_demo)?;
        for node in &node_names {
            let child = spawn_simulated_node(
                &cp,
                &node_agent,
                &work_dir,
                component,
                account,
                node,
                &log_dir,
            )?;
            children.push(Watched {
                name,
                child,
                log: log_dir.join(format!("{node}.log")),
            });
        }
        node_logs.push((name, log_dir));
    }

    step(&format!(
        "waiting for the Git revision main@sha1:{sha} to be applied and the nodes to be configured"
    ));
    converge(
        &client,
        &format!("main@sha1:{sha}"),
        opts.nodes,
        &mut children,
    )
    .await?;
    step(
        "recording the DaemonSets' pods (no kubelet runs here: the simulate processes do their work)",
    );
    crate::workload_pods::record(&client, "dpdk-operator").await?;
    tour(&cp, &root, &node_names)?;
    let summary = drift_summary(http_port).await?;
    println!("$ curl -s http://127.0.0.1:{http_port}/drift | jq -c .summary");
    println!("{summary}");
    if let Ok(Some(diff)) = http_get(http_port, "/drift.diff").await {
        println!("$ curl -s http://127.0.0.1:{http_port}/drift.diff | head -20");
        for line in diff.lines().take(20) {
            println!("{line}");
        }
    }
    println!("reconciler log: {}", log_path.display());
    for (name, log) in &node_logs {
        println!(
            "{:<16}{}/<node>.log (one process per node)",
            format!("{name}:"),
            log.display()
        );
    }
    println!(
        "node trees:     {} (<node>/sys, dev, proc, state, device-plugins)",
        work_dir.display()
    );
    println!("metrics:        http://127.0.0.1:{http_port}/metrics");
    println!(
        "drift:          http://127.0.0.1:{http_port}/drift (also /drift.diff, /drift.patch?source=dpdk-operator/platform-dpdk)"
    );
    println!("git repository: {url} (user demo, password demo-password)");
    if !opts.once {
        step("running; Ctrl-C stops everything");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(server);
    Ok(())
}

/// How long the demo's children get to stop on SIGTERM when it ends.
const CHILD_GRACE: Duration = Duration::from_secs(5);

/// A child the demo depends on, and its log (shown when it dies early).
struct Watched {
    name: &'static str,
    child: Reaper,
    log: PathBuf,
}

fn io_err_demo(e: std::io::Error) -> Error {
    Error::Other(format!("demo: {e}"))
}

/// One `dpdk-node-agent simulate` process: `component` on `node`, as `account` in a pod on
/// that node; its log is `<log_dir>/<node>.log`.
fn spawn_simulated_node(
    cp: &ControlPlane,
    node_agent: &Path,
    work_dir: &Path,
    component: &str,
    account: &str,
    node: &str,
    log_dir: &Path,
) -> Result<Reaper> {
    let kubeconfig = log_dir.join(format!("{node}.kubeconfig"));
    cp.write_node_service_account_kubeconfig("dpdk-operator", account, node, &kubeconfig)?;
    let log_path = log_dir.join(format!("{node}.log"));
    let log = std::fs::File::create(&log_path).map_err(io_err_demo)?;
    let mut cmd = Command::new(node_agent);
    cmd.arg("simulate")
        .arg(format!("--work-dir={}", work_dir.display()))
        .arg(format!("--dpdk-pci-address={DPDK_PCI_ADDRESS}"))
        .arg(format!("--node={node}"))
        .arg(format!("--component={component}"))
        .arg(format!(
            "--kubelet-kubeconfig={}",
            cp.kubeconfig_path().display()
        ))
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err_demo)?)
        .stderr(log);
    Reaper::spawn(cmd, CHILD_GRACE)
}

/// A workspace binary next to this one (same cargo target dir); built when missing.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err_demo)?;
    let dirs = exe
        .parent()
        .map(|d| {
            vec![
                d.to_path_buf(),
                d.parent().map(Path::to_path_buf).unwrap_or_default(),
            ]
        })
        .unwrap_or_default();
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    step(&format!("building {name} (cargo build -p {name})"));
    let status = Command::new("cargo")
        .args(["build", "-p", name, "--bin", name])
        .current_dir(workspace_root())
        .status()
        .map_err(io_err_demo)?;
    if !status.success() {
        return Err(Error::Other(format!("cargo build -p {name} failed")));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Other(format!("{name} not found next to {}", exe.display())))
}

/// Copies a directory tree (files and directories).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
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
/// label, the NodeENI carries the DPDK fields and each node has its DPDKNodeState; then
/// until the node agents report every DPDKNodeState Succeeded, label every node ready, and
/// the device plugins get every node's allocatable resource to 1 through the kubelets,
/// and the config's rollout counts every node up to date.
async fn converge(
    client: &Client,
    revision: &str,
    nodes: usize,
    children: &mut [Watched],
) -> Result<()> {
    let configs: Api<DPDKConfig> = Api::all(client.clone());
    let node_api: Api<Node> = Api::all(client.clone());
    let enis: Api<NodeENI> = Api::all(client.clone());
    let states: Api<dpdk_bridge::api::DPDKNodeState> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    loop {
        let config = configs.get_opt("default-dpdk-config").await?;
        // The controller's view of the agents' work: nodes it counts as ready for the config.
        let config_ready = config
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .map_or(0, |s| s.nodes_ready.len());
        // The rollout's view: the UP-TO-DATE printer column.
        let up_to_date = config
            .as_ref()
            .and_then(|c| c.status.as_ref()?.rollout.as_ref())
            .map(|r| r.up_to_date.clone())
            .unwrap_or_default();
        let applied = config.and_then(|c| {
            c.metadata
                .annotations
                .and_then(|a| a.get(dpdk_bridge::labels::REVISION_ANNOTATION).cloned())
        });
        let count_labelled = |label: &str| {
            let lp = kube::api::ListParams::default().labels(&format!("{label}=true"));
            let api = node_api.clone();
            async move { Ok::<_, Error>(api.list(&lp).await?.items) }
        };
        let enabled = count_labelled(dpdk_bridge::labels::NODE_ENABLED_LABEL)
            .await?
            .len();
        let eni = enis.get("multi-eni-dpdk").await?;
        let eni_ok = eni.spec.enable_dpdk == Some(true)
            && eni.spec.dpdk_driver.as_deref() == Some("vfio-pci");
        let state_list = states.list(&Default::default()).await?.items;
        let state_count = state_list.len();
        let succeeded = state_list
            .iter()
            .filter(|s| {
                s.status.as_ref().and_then(|st| st.sync_status)
                    == Some(dpdk_bridge::api::SyncStatus::Succeeded)
            })
            .count();
        // status.devicePlugin, written by the device plugins as their ServiceAccount.
        let plugins = state_list
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.device_plugin.as_ref())
                    .is_some_and(|p| {
                        p.resources.iter().any(|r| {
                            r.resource_name == RESOURCE && r.advertised == 1 && r.healthy == 1
                        })
                    })
            })
            .count();
        let ready = count_labelled(dpdk_bridge::labels::NODE_READY_LABEL)
            .await?
            .len();
        let advertised = node_api
            .list(&kube::api::ListParams::default().labels("ng=multi-eni"))
            .await?
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.allocatable.as_ref())
                    .and_then(|a| a.get(RESOURCE))
                    .is_some_and(|q| q.0 == "1")
            })
            .count();
        let now = format!(
            "revision {applied:?}, {enabled}/{nodes} nodes enabled, NodeENI DPDK fields {eni_ok}, {state_count} DPDKNodeStates; \
             {succeeded}/{nodes} DPDKNodeStates Succeeded, {ready}/{nodes} nodes ready, {advertised}/{nodes} nodes allocatable {RESOURCE}: 1, \
             {plugins}/{nodes} device plugins reporting, default-dpdk-config ready on {config_ready}/{nodes} nodes, up to date {up_to_date:?}"
        );
        if now != last {
            step(&format!("  {now}"));
            last = now;
        }
        if applied.as_deref() == Some(revision)
            && enabled == nodes
            && eni_ok
            && state_count == nodes
            && succeeded == nodes
            && ready == nodes
            && advertised == nodes
            && config_ready == nodes
            && plugins == nodes
            && up_to_date == format!("{nodes}/{nodes}")
        {
            return Ok(());
        }
        for w in children.iter_mut() {
            if let Ok(Some(status)) = w.child.try_wait() {
                return Err(Error::Other(format!(
                    "{} exited ({status}) before the demo converged; {} ends with:\n{}",
                    w.name,
                    w.log.display(),
                    crate::tail_file(&w.log, 20)
                )));
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = children
                .iter()
                .map(|w| {
                    format!(
                        "{} log {} ends with:\n{}",
                        w.name,
                        w.log.display(),
                        crate::tail_file(&w.log, 20)
                    )
                })
                .collect();
            return Err(Error::Other(format!(
                "demo did not converge in 180s ({last});\n{}",
                logs.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tour(cp: &ControlPlane, root: &Path, nodes: &[String]) -> Result<()> {
    let kc = cp.kubeconfig_path().display().to_string();
    let kubectl_bin = cp.binaries().kubectl.display().to_string();
    println!();
    println!("== dpdk-gitops demo ==");
    println!("kubeconfig: {kc}");
    println!("  export KUBECONFIG={kc}; alias kubectl={kubectl_bin}");
    println!();
    println!("$ kubectl get dpdkconfigs,dpdknodestates");
    print!("{}", kubectl(cp, &["get", "dpdkconfigs,dpdknodestates"])?);
    println!("$ kubectl get nodes -l dpdk.aws.k8s/ready=true");
    print!(
        "{}",
        kubectl(cp, &["get", "nodes", "-l", "dpdk.aws.k8s/ready=true"])?
    );
    println!("$ kubectl get nodes -l ng=multi-eni -L dpdk.aws.k8s/enabled,dpdk.aws.k8s/ready");
    print!(
        "{}",
        kubectl(
            cp,
            &[
                "get",
                "nodes",
                "-l",
                "ng=multi-eni",
                "-L",
                "dpdk.aws.k8s/enabled,dpdk.aws.k8s/ready"
            ]
        )?
    );
    // What a pod asking for the seed's resource is scheduled against (`kubectl describe node` shows it too).
    let column = format!(
        "NAME:.metadata.name,ALLOCATABLE:.status.allocatable.{}",
        RESOURCE.replace('.', "\\.")
    );
    println!("$ kubectl get nodes -l ng=multi-eni -o custom-columns={column}");
    print!(
        "{}",
        kubectl(
            cp,
            &[
                "get",
                "nodes",
                "-l",
                "ng=multi-eni",
                "-o",
                &format!("custom-columns={column}")
            ]
        )?
    );
    if let Some(first) = nodes.first() {
        println!("$ kubectl describe node {first} | grep {RESOURCE}");
        let described = kubectl(cp, &["describe", "node", first])?;
        for line in described.lines().filter(|l| l.contains(RESOURCE)) {
            println!("{line}");
        }
    }
    println!("$ kubectl describe dpdkconfig default-dpdk-config");
    print!(
        "{}",
        kubectl(cp, &["describe", "dpdkconfig", "default-dpdk-config"])?
    );
    // The seed's check. No kubelet runs here: the pods are recorded by the demo
    // (workload_pods) for the simulated agents and device plugins, whose logs are below.
    println!("$ kubectl get pods -n dpdk-operator -o wide");
    print!(
        "{}",
        kubectl(cp, &["get", "pods", "-n", "dpdk-operator", "-o", "wide"])?
    );
    println!("$ kubectl get daemonsets,deployments -n dpdk-operator");
    print!(
        "{}",
        kubectl(
            cp,
            &["get", "daemonsets,deployments", "-n", "dpdk-operator"]
        )?
    );
    println!();
    println!("examples-repo: {}", root.join("examples-repo").display());
    Ok(())
}

/// The drift report's summary from the reconciler's endpoint, once its snapshot has seen
/// the converged cluster (it recomputes on watch events, so this waits briefly). The node
/// layer may still report what a node cannot do (the seed asks for write-combining, which
/// the simulated vfio-pci, like mainline, does not have).
async fn drift_summary(port: u16) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(port, "/drift").await;
        if let Ok(Some(body)) = &body
            && let Ok(report) = serde_json::from_str::<serde_json::Value>(body)
        {
            let summary = report.get("summary").cloned().unwrap_or_default();
            let layer = |l: &str| {
                summary
                    .pointer(&format!("/byLayer/{l}"))
                    .and_then(serde_json::Value::as_u64)
            };
            if (layer("git-cluster") == Some(0) && layer("cluster-nodeeni") == Some(0))
                || Instant::now() > deadline
            {
                return Ok(summary.to_string());
            }
        } else if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "GET http://127.0.0.1:{port}/drift: {body:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A plain HTTP/1.1 GET on loopback (one request, then close): the body on 200, None on
/// another status.
async fn http_get(port: u16, path: &str) -> std::io::Result<Option<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Ok(None);
    };
    Ok(head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}
