//! dpdk-gitops beside the AWS Multi-ENI Controller's own DPDK handling, modelled as of
//! v1.3.8 (`dpdk_testenv::multi_eni`), on a real kube-apiserver: the DPDK controller
//! (in-process, `enable_dpdk_after_bound` as `dpdk-reconciler run` sets it), the node
//! agent and the device plugin on simulated nodes (fake sysfs + the sim kernel model, an
//! IMDS stub, the simulated kubelet), and the model's ENI manager and controller acting on
//! the same nodes' sysfs through the same kernel model. A test-side supervisor stands in
//! for the DaemonSet controller: a deleted device-plugin pod is re-created and its plugin
//! process restarted.
//!
//! - one binder per device: the seed scenario converges and the model binds, unbinds and
//!   deletes nothing; with the old ordering (the negative control) it binds first;
//! - an `eth<N>` that is not the ENI's device is bound by neither side;
//! - a stale whole-status Update erases the `dpdk*` fields: the agent restores them within
//!   one sync, with no DPDKNodeState spec write and no rebind;
//! - a device-plugin pod deleted with grace 0 comes back, re-registers, and leaves the
//!   running pod's device alone (the time goes to BENCHMARKS.md);
//! - deleting the NodeENI while the model moves the device back to `ena`: teardown
//!   completes without an error loop and the drift report is clean.

mod agent_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::imds::ImdsStub;
use agent_support::{FakeNic, FakeNode};
use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, NodeENI, SyncStatus};
use dpdk_node_agent::agent::Agent;
use dpdk_node_agent::commands::{HostArgs, ModuleArgs};
use dpdk_node_agent::device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use dpdk_node_agent::device_plugin::api::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use dpdk_node_agent::device_plugin::api::{HEALTHY, unix_channel};
use dpdk_node_agent::device_plugin::report::NodeReporter;
use dpdk_node_agent::device_plugin::{self, Config, DesiredState, Metrics};
use dpdk_node_agent::kernel::Kernel;
use dpdk_node_agent::mapping::Imds;
use dpdk_node_agent::sim::kubelet::{NodeStatusWriter, SimKubelet};
use dpdk_reconciler::controller::{self, Options, Telemetry};
use dpdk_testenv::multi_eni::deletion::Deletion;
use dpdk_testenv::multi_eni::eni_manager::EniManager;
use dpdk_testenv::multi_eni::{self, Action, Host, Record, Running, SysfsWriter, status_update};
use dpdk_testenv::{ControlPlane, StartOptions, fixtures};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const RESOURCE: &str = "intel.com/intel_sriov_netdevice_2";
const ENI: &str = "multi-eni-dpdk";
const PRIMARY: &str = "0000:00:05.0";
const DPDK_BDF: &str = "0000:00:06.0";
/// The model's poll in these tests (upstream: 30 s).
const POLL: Duration = Duration::from_millis(250);
/// The agent's resync: "one agent sync".
const RESYNC: Duration = Duration::from_secs(2);
/// Where the device-plugin pods live here: the first namespace upstream searches.
const PLUGIN_NS: &str = "kube-system";

/// The agent and the model reach the node's kernel model through this.
struct SimKernel(Arc<FakeNode>);

impl Kernel for SimKernel {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        self.0.kernel.write_attr(rel, value)
    }
    fn load_module(&self, file: &Path, params: &str, compressed: bool) -> std::io::Result<()> {
        self.0.kernel.load_module(file, params, compressed)
    }
}

impl SysfsWriter for SimKernel {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        self.0.kernel.write_attr(rel, value)
    }
}

/// A NIC of a simulated node: BDF, interface name, IMDS device number, ENI ID.
struct Nic {
    bdf: &'static str,
    ifname: &'static str,
    device_number: u32,
    eni_id: String,
}

fn nic_of(n: &Nic) -> FakeNic {
    let slot = u8::from_str_radix(&n.bdf[8..10], 16).expect("slot");
    FakeNic {
        bdf: n.bdf.into(),
        ifname: n.ifname.into(),
        ..FakeNic::ena(slot)
    }
}

/// One simulated node: the tree, its IMDS, and the plugin's kubelet.
struct SimHost {
    name: String,
    node: Arc<FakeNode>,
    _imds: ImdsStub,
    imds_endpoint: String,
    kubelet: SimKubelet,
}

impl SimHost {
    async fn create(client: &Client, name: &str, nics: &[Nic]) -> Self {
        let node = Arc::new(FakeNode::new(&nics.iter().map(nic_of).collect::<Vec<_>>()));
        // The primary NIC carries the default route, as on EC2.
        let primary = nics.iter().find(|n| n.device_number == 0).expect("primary");
        node.add_route(primary.ifname, "0.0.0.0", "0.0.0.0", "10.0.1.1");
        let stub_nics: Vec<(String, String, u32)> = nics
            .iter()
            .map(|n| (nic_of(n).mac, n.eni_id.clone(), n.device_number))
            .collect();
        let refs: Vec<(&str, &str, u32)> = stub_nics
            .iter()
            .map(|(m, e, d)| (m.as_str(), e.as_str(), *d))
            .collect();
        let imds = ImdsStub::start(&refs).await;
        let kubelet = SimKubelet::start(
            &node.root.join("device-plugins"),
            Some(NodeStatusWriter {
                client: client.clone(),
                node: name.into(),
            }),
        )
        .expect("sim kubelet");
        Self {
            name: name.into(),
            imds_endpoint: imds.endpoint(),
            _imds: imds,
            node,
            kubelet,
        }
    }

    fn host(&self) -> Host {
        Host {
            node: self.name.clone(),
            sysfs: self.node.sys.clone(),
            kernel: Arc::new(SimKernel(self.node.clone())),
        }
    }

    fn agent(&self, client: &Client) -> Agent {
        let n = &self.node;
        Agent {
            node: self.name.clone(),
            client: client.clone(),
            sysfs: dpdk_node_agent::sysfs::Sysfs::new(&n.sys),
            kernel: Arc::new(SimKernel(n.clone())),
            host: HostArgs {
                sysfs_root: n.sys.clone(),
                host_root: n.host.clone(),
                proc_root: n.proc_.clone(),
                dev_root: n.dev.clone(),
                state_dir: n.state.clone(),
                kernel_release: Some(n.release.clone()),
            },
            module_args: ModuleArgs {
                drivers: vec![],
                noiommu: None,
                write_combining: None,
            },
            release: n.release.clone(),
            imds: Some(Imds::new(&self.imds_endpoint).expect("imds")),
            pod_resources_socket: None,
            node_ips: vec![],
            resync: RESYNC,
            retry: Duration::from_millis(200),
        }
    }

    /// The device plugin process, as the DaemonSet's pod runs it.
    fn start_plugin(&self, client: &Client) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let (tx, rx) = watch::channel(DesiredState::default());
        tokio::spawn(device_plugin::source::watch_node_state(
            client.clone(),
            self.name.clone(),
            "intel.com".into(),
            tx,
            stop.clone(),
        ));
        let config = Config::new(
            self.kubelet.dir(),
            self.node.sys.clone(),
            self.node.dev.clone(),
        );
        let reporter = NodeReporter {
            client: client.clone(),
            node: self.name.clone(),
        };
        let s = stop.clone();
        let join = tokio::spawn(async move {
            let r = device_plugin::run(config, rx, Metrics::new(), Some(reporter), s).await;
            r.expect("device plugin ran");
        });
        (stop, join)
    }

    /// Healthy devices the kubelet hears of for the seed's resource.
    fn healthy(&self) -> Vec<String> {
        self.kubelet
            .devices()
            .borrow()
            .get(RESOURCE)
            .map(|l| {
                l.iter()
                    .filter(|d| d.health == HEALTHY)
                    .map(|d| d.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Everything of one test: the API server, the nodes, our parts and the model.
struct Cluster {
    _cp: ControlPlane,
    client: Client,
    hosts: Vec<Arc<SimHost>>,
    record: Arc<Record>,
    stop: CancellationToken,
    _model: Vec<Running>,
}

/// NICs of the seed's node: ens5/eth0 primary, the ENI at device index 2 at DPDK_BDF.
fn seed_nics(node: usize, eni_ifname: &'static str) -> Vec<Nic> {
    vec![
        Nic {
            bdf: PRIMARY,
            ifname: "eth0",
            device_number: 0,
            eni_id: format!("eni-primary{node}"),
        },
        Nic {
            bdf: DPDK_BDF,
            ifname: eni_ifname,
            device_number: 2,
            eni_id: eni_id(node),
        },
    ]
}

fn eni_id(node: usize) -> String {
    format!("eni-0dpdk0000000000{node}")
}

fn node_name(i: usize) -> String {
    format!("ip-10-0-1-{}.ec2.internal", 11 + i)
}

impl Cluster {
    /// The seed's objects (Nodes of `ng=multi-eni`, NodeENI `multi-eni-dpdk` attached at
    /// deviceIndex 2 on each, the seed's DPDKConfig) and simulated hosts with `nics`.
    async fn start(nics: Vec<Vec<Nic>>) -> Self {
        let cp = ControlPlane::start(StartOptions {
            install_crds: true,
            ..Default::default()
        })
        .await
        .expect("control plane");
        let client = cp.client().await.expect("client");
        let mut hosts = Vec::new();
        for (i, n) in nics.iter().enumerate() {
            let name = node_name(i);
            fixtures::create_node(
                &client,
                &name,
                &[("ng", "multi-eni")],
                &format!("10.0.1.{}", 11 + i),
            )
            .await
            .expect("node");
            hosts.push(Arc::new(SimHost::create(&client, &name, n).await));
        }
        fixtures::create_nodeeni(
            &client,
            ENI,
            &[("ng", "multi-eni")],
            2,
            &["subnet-0123456789abcdef0"],
        )
        .await
        .expect("nodeeni");
        for (i, h) in hosts.iter().enumerate() {
            fixtures::upsert_attachment(&client, ENI, fixtures::attachment(&h.name, 2, &eni_id(i)))
                .await
                .expect("attachment");
        }
        Self {
            _cp: cp,
            client,
            hosts,
            record: Arc::new(Record::default()),
            stop: CancellationToken::new(),
            _model: Vec::new(),
        }
    }

    async fn apply_seed_config(&self) {
        let c: DPDKConfig = serde_yaml::from_str(fixtures::SEED_DPDKCONFIG).expect("seed");
        Api::<DPDKConfig>::all(self.client.clone())
            .create(&PostParams::default(), &c)
            .await
            .expect("seed DPDKConfig");
    }

    /// The model beside us: an ENI manager per node and the controller's deletion handling.
    fn start_model(&mut self) {
        for h in &self.hosts {
            let m = EniManager {
                poll: POLL,
                ..EniManager::new(
                    h.host(),
                    self.client.clone(),
                    h.node.root.join("pcidp-config.json"),
                    self.record.clone(),
                )
            };
            self._model.push(m.spawn());
        }
        let hosts = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.host()))
            .collect();
        let d = Deletion {
            poll: POLL,
            ..Deletion::new(self.client.clone(), hosts, self.record.clone())
        };
        self._model.push(d.spawn());
    }

    fn start_controller(&self, after_bound: bool) {
        let opts = Options {
            debounce: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            teardown_timeout: Duration::from_secs(120),
            enable_dpdk_after_bound: after_bound,
            identity: "multi-eni-test".into(),
            ..Options::default()
        };
        tokio::spawn(controller::run_with(
            self.client.clone(),
            opts,
            Telemetry::standalone(),
            self.stop.clone(),
        ));
    }

    fn start_agents(&self) {
        for h in &self.hosts {
            let agent = h.agent(&self.client);
            let stop = self.stop.clone();
            tokio::spawn(async move { agent.run(stop).await.expect("agent ran") });
        }
    }

    /// Each node's device-plugin pod (a Pod object labelled as the seed's DaemonSet) and its
    /// process; a supervisor re-creates both when the pod is deleted. Returns, per node, the
    /// times from each deletion to the plugin advertising the device healthy again.
    async fn start_plugins(&self) -> Vec<Arc<std::sync::Mutex<Vec<Duration>>>> {
        ensure_namespace(&self.client, PLUGIN_NS).await;
        let mut restarts = Vec::new();
        for h in &self.hosts {
            let times = Arc::new(std::sync::Mutex::new(Vec::new()));
            restarts.push(times.clone());
            let (h, client, stop) = (h.clone(), self.client.clone(), self.stop.clone());
            tokio::spawn(supervise_plugin(h, client, stop, times));
        }
        restarts
    }

    async fn eni(&self) -> NodeENI {
        Api::<NodeENI>::all(self.client.clone())
            .get(ENI)
            .await
            .expect("NodeENI")
    }

    async fn state(&self, node: &str) -> Option<DPDKNodeState> {
        Api::<DPDKNodeState>::all(self.client.clone())
            .get_opt(node)
            .await
            .expect("get DPDKNodeState")
    }

    /// Converged: every node's device on vfio-pci, the NodeENI enabled with the BDF, the
    /// plugin advertising the device.
    async fn wait_converged(&self) {
        for h in &self.hosts {
            eventually(
                &format!("{} bound", h.name),
                Duration::from_secs(60),
                || async {
                    (h.node.driver_of(DPDK_BDF).as_deref() == Some("vfio-pci")).then_some(())
                },
            )
            .await;
        }
        eventually(
            "NodeENI enabled with the BDF",
            Duration::from_secs(60),
            || async {
                let e = self.eni().await;
                (e.spec.enable_dpdk == Some(true)).then_some(())
            },
        )
        .await;
        for h in &self.hosts {
            eventually(
                &format!("{} advertised", h.name),
                Duration::from_secs(60),
                || async { (!h.healthy().is_empty()).then_some(()) },
            )
            .await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn ensure_namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(ns).await.expect("get ns").is_none() {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
        api.create(&PostParams::default(), &n)
            .await
            .expect("create ns");
    }
}

fn plugin_pod_name(node: &str) -> String {
    format!("sriov-device-plugin-{}", &node[3..12])
}

async fn create_plugin_pod(client: &Client, node: &str) -> Result<Pod, kube::Error> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": plugin_pod_name(node), "namespace": PLUGIN_NS,
                     "labels": {"app": "sriov-device-plugin"}},
        "spec": {"nodeName": node, "containers": [{"name": "sriov-device-plugin",
                 "image": "dpdk-gitops/node-agent:dev"}]}
    }))
    .expect("pod");
    Api::<Pod>::namespaced(client.clone(), PLUGIN_NS)
        .create(&PostParams::default(), &pod)
        .await
}

/// The DaemonSet controller and kubelet, for the plugin pod only: while the Pod exists
/// its process runs; when it is deleted, the process is killed, the Pod re-created and the
/// process started again.
async fn supervise_plugin(
    h: Arc<SimHost>,
    client: Client,
    stop: CancellationToken,
    times: Arc<std::sync::Mutex<Vec<Duration>>>,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), PLUGIN_NS);
    let name = plugin_pod_name(&h.name);
    create_plugin_pod(&client, &h.name)
        .await
        .expect("create plugin pod");
    let (mut plugin_stop, mut join) = h.start_plugin(&client);
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if api.get_opt(&name).await.ok().flatten().is_some() {
            continue;
        }
        let deleted = Instant::now();
        plugin_stop.cancel();
        let _ = join.await;
        if create_plugin_pod(&client, &h.name).await.is_err() {
            break; // the API server is gone: the test is over
        }
        (plugin_stop, join) = h.start_plugin(&client);
        let back = async {
            loop {
                if !h.healthy().is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), back)
            .await
            .is_ok()
        {
            times.lock().expect("times").push(deleted.elapsed());
        }
    }
    plugin_stop.cancel();
}

/// Polls `f` until it returns Some, or panics naming `what`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(record: &Record) -> String {
    format!("{:#?}", record.all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_converges_and_the_model_never_binds_unbinds_or_deletes() {
    // The ENI is eth2, as upstream guesses: it could bind it by name if it tried.
    let mut c = Cluster::start(vec![seed_nics(0, "eth2"), seed_nics(1, "eth2")]).await;
    c.start_model();
    c.start_plugins().await;
    c.start_controller(true);
    c.start_agents();
    c.apply_seed_config().await;
    c.wait_converged().await;
    let eni = eventually(
        "the agents' BDF on the NodeENI",
        Duration::from_secs(30),
        || async {
            let e = c.eni().await;
            e.spec.dpdk_pci_address.is_some().then_some(e)
        },
    )
    .await;
    assert_eq!(eni.spec.dpdk_pci_address.as_deref(), Some(DPDK_BDF));
    assert_eq!(eni.spec.dpdk_resource_name.as_deref(), Some(RESOURCE));
    // A fixed window of 12 model polls with enableDPDK on.
    tokio::time::sleep(POLL * 12).await;
    assert_eq!(c.record.binds(), 0, "{}", summary(&c.record));
    assert_eq!(c.record.unbinds(), 0, "{}", summary(&c.record));
    assert_eq!(c.record.pod_deletions(), 0, "{}", summary(&c.record));
    assert_eq!(
        c.record.all(),
        vec![],
        "every attachment was dpdkBound when enableDPDK appeared: nothing attempted"
    );
    for h in &c.hosts {
        assert_eq!(h.node.driver_of(DPDK_BDF).as_deref(), Some("vfio-pci"));
        assert_eq!(h.node.driver_of(PRIMARY).as_deref(), Some("ena"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_with_the_old_ordering_the_model_binds_first() {
    // enableDPDK as soon as the NodeENI is claimed, before any agent bound: the model
    // binds eth2 itself, rewrites config.json and deletes the plugin pod.
    let mut c = Cluster::start(vec![seed_nics(0, "eth2")]).await;
    // The driver-loader's init container ran (modules loaded); the agent's loop did not.
    let no_flags = ModuleArgs {
        drivers: vec![],
        noiommu: None,
        write_combining: None,
    };
    for cfg in dpdk_node_agent::commands::module_configs(&no_flags, None) {
        c.hosts[0].node.load_modules(&cfg).expect("modules load");
    }
    c.start_model();
    c.start_plugins().await;
    c.start_controller(false);
    c.apply_seed_config().await;
    eventually(
        "the model bound the device",
        Duration::from_secs(30),
        || async { (c.record.binds() == 1).then_some(()) },
    )
    .await;
    let h = &c.hosts[0];
    assert!(c.record.all().contains(&Action::Bind {
        node: h.name.clone(),
        bdf: DPDK_BDF.into(),
        driver: "vfio-pci".into()
    }));
    assert!(c.record.all().contains(&Action::LinkDown {
        node: h.name.clone(),
        ifname: "eth2".into()
    }));
    assert_eq!(h.node.driver_of(DPDK_BDF).as_deref(), Some("vfio-pci"));
    eventually(
        "the plugin pod deleted",
        Duration::from_secs(10),
        || async { (c.record.pod_deletions() == 1).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eth_name_that_is_not_the_enis_device_is_bound_by_neither_side() {
    // Names do not follow device index: the DPDK ENI (device index 2) is eth1, and eth2
    // is another ENI (device index 1) that carries pod traffic.
    const DECOY: &str = "0000:00:07.0";
    let nics = vec![
        Nic {
            bdf: PRIMARY,
            ifname: "eth0",
            device_number: 0,
            eni_id: "eni-primary0".into(),
        },
        Nic {
            bdf: DPDK_BDF,
            ifname: "eth1",
            device_number: 2,
            eni_id: eni_id(0),
        },
        Nic {
            bdf: DECOY,
            ifname: "eth2",
            device_number: 1,
            eni_id: "eni-0pods00000000000".into(),
        },
    ];
    let mut c = Cluster::start(vec![nics]).await;
    c.start_model();
    c.start_plugins().await;
    c.start_controller(true);
    c.start_agents();
    c.apply_seed_config().await;
    c.wait_converged().await;
    let h = c.hosts[0].clone();
    eventually(
        "the BDF on the NodeENI",
        Duration::from_secs(30),
        || async {
            (c.eni().await.spec.dpdk_pci_address.as_deref() == Some(DPDK_BDF)).then_some(())
        },
    )
    .await;
    // Even with dpdkBound erased (a stale status Update), upstream aims at dpdkPCIAddress.
    let mut stale = Api::<NodeENI>::all(c.client.clone())
        .get_status(ENI)
        .await
        .expect("get");
    for a in &mut stale.status.as_mut().expect("status").attachments {
        a.dpdk_bound = None;
        a.dpdk_pci_address = None;
    }
    stale.metadata.resource_version = Some("1".into());
    status_update::update_status_with_retry(&c.client, &c.record, stale)
        .await
        .expect("stale update");
    tokio::time::sleep(POLL * 12).await;
    let touched_decoy = c.record.count(|a| format!("{a:?}").contains(DECOY));
    assert_eq!(touched_decoy, 0, "{}", summary(&c.record));
    assert_eq!(c.record.binds(), 0, "{}", summary(&c.record));
    assert_eq!(h.node.driver_of(DECOY).as_deref(), Some("ena"));
    assert!(h.node.netdev_exists("eth2"));
    assert_eq!(h.node.driver_of(DPDK_BDF).as_deref(), Some("vfio-pci"));
    let decoy_writes: Vec<_> = h
        .node
        .kernel
        .writes
        .lock()
        .expect("writes")
        .iter()
        .filter(|(p, v)| p.contains(DECOY) || v.contains(DECOY))
        .cloned()
        .collect();
    assert_eq!(decoy_writes, vec![], "no sysfs write names the decoy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_status_update_erases_the_dpdk_fields_and_the_agent_restores_them_without_rebinding()
 {
    let mut c = Cluster::start(vec![seed_nics(0, "eth2")]).await;
    // What upstream's controller read before our agent reported: no dpdk* fields.
    let stale = Api::<NodeENI>::all(c.client.clone())
        .get_status(ENI)
        .await
        .expect("get");
    c.start_model();
    c.start_plugins().await;
    c.start_controller(true);
    c.start_agents();
    c.apply_seed_config().await;
    c.wait_converged().await;
    let h = c.hosts[0].clone();
    let converged = eventually(
        "attachment reported and BDF written",
        Duration::from_secs(30),
        || async {
            let e = c.eni().await;
            let a = &e.status.as_ref()?.attachments[0];
            (a.dpdk_bound == Some(true) && e.spec.dpdk_pci_address.is_some()).then_some(e)
        },
    )
    .await;
    let generation = c.state(&h.name).await.expect("state").metadata.generation;
    let writes_before = h.node.kernel.write_count();

    let written = status_update::update_status_with_retry(&c.client, &c.record, stale)
        .await
        .expect("stale update");
    let erased = Instant::now();
    let a = &written.status.as_ref().expect("status").attachments[0];
    assert_eq!(a.dpdk_bound, None, "the stale copy erased dpdkBound");
    assert_eq!(a.dpdk_pci_address, None);
    assert!(
        c.record
            .count(|a| matches!(a, Action::StatusCopiedOver { .. }))
            >= 1
    );

    let restored = eventually("dpdk* fields restored", RESYNC * 3, || async {
        let e = c.eni().await;
        let a = e.status.as_ref()?.attachments[0].clone();
        (a.dpdk_bound == Some(true)).then_some(a)
    })
    .await;
    let took = erased.elapsed();
    eprintln!("dpdk* fields restored {took:?} after the stale update (agent resync {RESYNC:?})");
    assert!(
        took <= RESYNC + Duration::from_secs(1),
        "within one agent sync: {took:?}"
    );
    assert_eq!(restored.dpdk_pci_address.as_deref(), Some(DPDK_BDF));
    assert_eq!(restored.dpdk_resource_name.as_deref(), Some(RESOURCE));
    // Settle, then: no spec write, no rebind, the spec fields as they were.
    tokio::time::sleep(RESYNC).await;
    let after = c.state(&h.name).await.expect("state");
    assert_eq!(
        after.metadata.generation, generation,
        "0 DPDKNodeState spec writes"
    );
    assert_eq!(h.node.kernel.write_count(), writes_before, "no rebind");
    let eni = c.eni().await;
    assert_eq!(eni.spec.enable_dpdk, Some(true));
    assert_eq!(eni.spec.dpdk_pci_address, converged.spec.dpdk_pci_address);
    assert_eq!(c.record.binds(), 0, "{}", summary(&c.record));
    assert_eq!(c.record.unbinds(), 0, "{}", summary(&c.record));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_pod_deleted_with_grace_0_comes_back_and_leaves_the_running_pods_device_alone() {
    let mut c = Cluster::start(vec![seed_nics(0, "eth2")]).await;
    c.start_model();
    let restarts = c.start_plugins().await;
    c.start_controller(true);
    c.start_agents();
    c.apply_seed_config().await;
    c.wait_converged().await;
    let h = c.hosts[0].clone();
    // A DPDK pod is admitted: the kubelet allocates the device through the plugin.
    let id = h.healthy()[0].clone();
    let sock = h
        .kubelet
        .dir()
        .join("intel.com_intel_sriov_netdevice_2.sock");
    let mut plugin = DevicePluginClient::new(unix_channel(&sock).await.expect("dial plugin"));
    let alloc = plugin
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id.clone()],
            }],
        })
        .await
        .expect("allocate")
        .into_inner();
    let specs = &alloc.container_responses[0].devices;
    let vfio: Vec<&str> = specs.iter().map(|d| d.host_path.as_str()).collect();
    assert!(vfio.iter().any(|p| p.starts_with("/dev/vfio/")), "{vfio:?}");
    let writes_before = h.node.kernel.write_count();
    let nodes: Api<Node> = Api::all(c.client.clone());
    let allocatable = |n: Node| {
        n.status
            .and_then(|s| s.allocatable)
            .and_then(|a| a.get(RESOURCE).map(|q| q.0.clone()))
    };
    assert_eq!(
        allocatable(nodes.get(&h.name).await.expect("node")).as_deref(),
        Some("1")
    );

    // What upstream does after a config.json change: rewrite it, delete the pods (grace 0).
    let m = EniManager::new(
        h.host(),
        c.client.clone(),
        h.node.root.join("pcidp-config.json"),
        c.record.clone(),
    );
    let deleted_at = Instant::now();
    multi_eni::sriov::apply_and_restart(
        &m,
        vec![multi_eni::sriov::ResourceUpdate::new(
            DPDK_BDF, RESOURCE, "vfio-pci",
        )],
    )
    .await;
    assert_eq!(
        c.record.all().last(),
        Some(&Action::PodDeleted {
            node: h.name.clone(),
            namespace: PLUGIN_NS.into(),
            name: plugin_pod_name(&h.name),
            grace_seconds: 0
        })
    );
    let took = eventually(
        "the plugin back and advertising",
        Duration::from_secs(30),
        || async { restarts[0].lock().expect("times").first().copied() },
    )
    .await;
    assert_eq!(h.healthy(), vec![id.clone()], "the same device, healthy");
    eventually("allocatable back to 1", Duration::from_secs(30), || async {
        (allocatable(nodes.get(&h.name).await.ok()?).as_deref() == Some("1")).then_some(())
    })
    .await;
    let allocatable_back = deleted_at.elapsed();
    eprintln!(
        "plugin pod deleted with grace 0: re-registered and healthy after {took:?}, allocatable back after {allocatable_back:?}"
    );
    // The running pod's device: still on vfio-pci, its /dev/vfio node there, untouched.
    assert_eq!(h.node.driver_of(DPDK_BDF).as_deref(), Some("vfio-pci"));
    for p in vfio
        .iter()
        .filter(|p| p.starts_with("/dev/vfio/") && **p != "/dev/vfio/vfio")
    {
        let group: u32 = p.trim_start_matches("/dev/vfio/").parse().expect("group");
        assert!(h.node.vfio_dev_exists(group), "{p} still there");
    }
    assert_eq!(h.node.kernel.write_count(), writes_before, "no sysfs write");
    let state = c.state(&h.name).await.expect("state");
    let st = state.status.expect("status");
    assert_eq!(st.bound_devices, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_nodeeni_while_the_model_moves_the_device_to_ena_tears_down_cleanly() {
    // Upstream's guess for deviceIndex 2 when eth2 is gone (bound to vfio-pci, no netdev):
    // 0000:00:05.0. Here that is the DPDK ENI, so the model does move it back.
    let nics = vec![
        Nic {
            bdf: "0000:00:03.0",
            ifname: "eth0",
            device_number: 0,
            eni_id: "eni-primary0".into(),
        },
        Nic {
            bdf: PRIMARY,
            ifname: "eth2",
            device_number: 2,
            eni_id: eni_id(0),
        },
    ];
    let mut c = Cluster::start(vec![nics]).await;
    c.start_model();
    c.start_plugins().await;
    c.start_controller(true);
    c.start_agents();
    c.apply_seed_config().await;
    let h = c.hosts[0].clone();
    eventually("bound", Duration::from_secs(60), || async {
        (h.node.driver_of(PRIMARY).as_deref() == Some("vfio-pci")).then_some(())
    })
    .await;
    eventually(
        "enabled, with the model's finalizer",
        Duration::from_secs(30),
        || async {
            let e = c.eni().await;
            let fin = e.metadata.finalizers.unwrap_or_default();
            (e.spec.enable_dpdk == Some(true) && fin.iter().any(|f| f == multi_eni::FINALIZER))
                .then_some(())
        },
    )
    .await;

    Api::<NodeENI>::all(c.client.clone())
        .delete(ENI, &DeleteParams::default())
        .await
        .expect("delete NodeENI");
    eventually("NodeENI gone", Duration::from_secs(30), || async {
        Api::<NodeENI>::all(c.client.clone())
            .get_opt(ENI)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        c.record.count(|a| matches!(a, Action::EnaRebind { .. })),
        1,
        "the model moved it back first: {}",
        summary(&c.record)
    );
    let state = eventually("teardown reported", Duration::from_secs(60), || async {
        let s = c.state(&h.name).await?;
        let st = s.status.clone()?;
        (s.spec.devices.is_empty()
            && st.observed_generation == s.metadata.generation
            && st.sync_status == Some(SyncStatus::Succeeded))
        .then_some(s)
    })
    .await;
    let st = state.status.expect("status");
    assert_eq!(st.last_sync_error, None);
    assert_eq!(st.bound_devices, 0);
    assert_eq!(h.node.driver_of(PRIMARY).as_deref(), Some("ena"));
    assert!(h.node.netdev_exists("eth2"));
    assert_eq!(h.node.override_of(PRIMARY), "(null)");
    let journal = dpdk_node_agent::journal::Journal::open(&h.node.state).expect("journal");
    assert!(journal.is_empty(), "the journal is cleared");
    // No error loop: a few more agent syncs write nothing to the kernel.
    let writes = h.node.kernel.write_count();
    tokio::time::sleep(RESYNC * 2).await;
    assert_eq!(h.node.kernel.write_count(), writes);
    // The drift report over what the cluster holds now is clean.
    let lp = ListParams::default();
    let configs = Api::<DPDKConfig>::all(c.client.clone())
        .list(&lp)
        .await
        .expect("configs")
        .items;
    let states = Api::<DPDKNodeState>::all(c.client.clone())
        .list(&lp)
        .await
        .expect("states")
        .items;
    let nodes: Vec<_> = Api::<Node>::all(c.client.clone())
        .list(&lp)
        .await
        .expect("nodes")
        .items
        .into_iter()
        .map(|n| n.metadata)
        .collect();
    let live = dpdk_reconciler::drift::LiveView {
        configs: configs.iter().collect(),
        node_enis: vec![],
        node_states: states.iter().collect(),
        nodes: nodes.iter().collect(),
        complete: true,
    };
    let report =
        dpdk_reconciler::drift::compute(&[], live, k8s_openapi::jiff::Timestamp::now(), None);
    assert!(report.is_clean(), "{:#?}", report.findings);
}
