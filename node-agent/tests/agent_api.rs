//! The `run` loop against a real kube-apiserver, as the agent's ServiceAccount with the RBAC
//! of deploy/dpdk-operator.yaml, on a fake node (sysfs tree + kernel model + IMDS stub):
//! - it reports DPDKNodeState.status and the dpdk* fields of its NodeENI attachments while
//!   a simulated Multi-ENI Controller rewrites the attachments at the same time, and none of
//!   the controller's fields (nor the other node's element) is lost;
//! - the ServiceAccount can do nothing beyond its job;
//! - teardown restores the original drivers and clears the attachment fields;
//! - shutdown never unbinds, and a restart picks up from the journal without rebinding;
//! - a device a pod holds (kubelet PodResources) is reported InUse and restored once free;
//! - a dpdkPCIAddress naming the EBS root volume, or a NIC whose MAC is not the ENI's in
//!   IMDS, is refused with its reason in DPDKNodeState.status, and never unbound.

mod agent_support;

use std::sync::Arc;
use std::time::Duration;

use agent_support::imds::ImdsStub;
use agent_support::{FakeNic, FakeNode, KernelModel};
use dpdk_bridge::api::{
    DPDKNodeState, DPDKNodeStateSpec, DesiredDevice, DpdkDriver, ENIAttachment, NodeENI, SyncStatus,
};
use dpdk_bridge::conditions;
use dpdk_bridge::labels::NODE_READY_LABEL;
use dpdk_node_agent::agent::Agent;
use dpdk_node_agent::commands::{HostArgs, ModuleArgs};
use dpdk_node_agent::kernel::Kernel;
use dpdk_node_agent::mapping::Imds;
use dpdk_testenv::{ControlPlane, fixtures, shared, unique_name};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// The agent gets the fake node's kernel model through this (the node is shared with the test).
struct SharedKernel(Arc<FakeNode>);

impl Kernel for SharedKernel {
    fn write_attr(&self, rel: &std::path::Path, value: &str) -> std::io::Result<()> {
        self.0.kernel.write_attr(rel, value)
    }
    fn load_module(
        &self,
        file: &std::path::Path,
        params: &str,
        compressed: bool,
    ) -> std::io::Result<()> {
        self.0.kernel.load_module(file, params, compressed)
    }
}

fn kernel(node: &FakeNode) -> &KernelModel {
    &node.kernel
}

/// The RBAC of deploy/dpdk-operator.yaml and the node-scope policy of
/// deploy/dpdk-node-policy.yaml, enforced.
async fn apply_rbac(cp: &ControlPlane) {
    let file = dpdk_testenv::control_plane::workspace_root().join("deploy/dpdk-operator.yaml");
    cp.kubectl_apply_once(&file)
        .expect("node-agent RBAC applies");
    fixtures::install_node_policy(cp)
        .await
        .expect("node-scope policy enforced");
}

/// The node agent's ServiceAccount as its pod on `node_name` acts (impersonation with the
/// node-name user extra its token would carry).
async fn agent_client(cp: &ControlPlane, node_name: &str) -> Client {
    cp.node_service_account_client("dpdk-operator", "dpdk-node-agent", node_name)
        .await
        .expect("sa client")
}

fn agent(
    node_name: &str,
    client: Client,
    node: &Arc<FakeNode>,
    imds: Option<Imds>,
    pod_resources: Option<std::path::PathBuf>,
) -> Agent {
    Agent {
        node: node_name.to_string(),
        client,
        sysfs: dpdk_node_agent::sysfs::Sysfs::new(&node.sys),
        kernel: Arc::new(SharedKernel(node.clone())),
        host: HostArgs {
            sysfs_root: node.sys.clone(),
            host_root: node.host.clone(),
            proc_root: node.proc_.clone(),
            dev_root: node.dev.clone(),
            state_dir: node.state.clone(),
            kernel_release: Some(node.release.clone()),
        },
        module_args: ModuleArgs {
            drivers: vec![],
            noiommu: None,
            write_combining: None,
        },
        release: node.release.clone(),
        imds,
        pod_resources_socket: pod_resources,
        node_ips: vec!["10.0.0.10".parse().expect("ip")],
        resync: Duration::from_millis(800),
        retry: Duration::from_millis(200),
    }
}

fn device(index: i32, eni: &str, eni_id: &str, pci: Option<&str>) -> DesiredDevice {
    DesiredDevice {
        device_index: index,
        node_eni: eni.to_string(),
        eni_id: Some(eni_id.to_string()),
        pci_address: pci.map(String::from),
        resource_name: "intel.com/intel_sriov_netdevice_2".into(),
        driver: DpdkDriver::VfioPci,
    }
}

/// Polls `f` until it returns Some, or panics with the last state after `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} not reached within {secs}s; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn att_of<'a>(eni: &'a NodeENI, node: &str, idx: i32) -> Option<&'a ENIAttachment> {
    dpdk_node_agent::report::find_attachment(eni, node, idx)
}

/// The Multi-ENI Controller rewriting attachments: whole-status updates with a
/// resourceVersion (fixtures::upsert_attachment), as it does on every reconcile. It keeps
/// what it read of the element (as its typed Go struct would) and changes its own fields.
async fn eni_controller_writes(
    admin: &Client,
    eni: &str,
    node: &str,
    idx: i32,
    eni_id: &str,
    round: i32,
) {
    let api: Api<NodeENI> = Api::all(admin.clone());
    let current = api.get_status(eni).await.expect("get");
    let mut att = att_of(&current, node, idx)
        .cloned()
        .unwrap_or_else(|| fixtures::attachment(node, idx, eni_id));
    att.mtu = Some(9000 + round);
    att.status = Some(format!("attached-{round}"));
    fixtures::upsert_attachment(admin, eni, att)
        .await
        .expect("upsert");
}

#[tokio::test]
async fn reports_status_and_attachments_as_its_service_account_without_clobbering_the_eni_controller()
 {
    let cp = shared();
    apply_rbac(cp).await;
    let admin = cp.client().await.expect("admin");
    let node_name = unique_name("dpdk-node");
    let other = unique_name("other-node");
    let sel = unique_name("multi-eni");
    fixtures::create_node(&admin, &node_name, &[("ng", &sel)], "10.0.0.10")
        .await
        .expect("node");
    let eni2 = unique_name("multus-eni-2");
    let eni3 = unique_name("multus-eni-3");
    fixtures::create_nodeeni(&admin, &eni2, &[("ng", &sel)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::create_nodeeni(&admin, &eni3, &[("ng", &sel)], 3, &["subnet-b"])
        .await
        .expect("nodeeni");
    fixtures::upsert_attachment(&admin, &eni2, fixtures::attachment(&other, 2, "eni-0other"))
        .await
        .expect("att");
    fixtures::upsert_attachment(
        &admin,
        &eni2,
        fixtures::attachment(&node_name, 2, "eni-0aaaa"),
    )
    .await
    .expect("att");
    fixtures::upsert_attachment(
        &admin,
        &eni3,
        fixtures::attachment(&node_name, 3, "eni-0bbbb"),
    )
    .await
    .expect("att");

    // The node: ens5 is the primary ENI (default route), ens6 and ens7 the DPDK ENIs.
    let (primary, nic2, nic3) = (FakeNic::ena(5), FakeNic::ena(6), FakeNic::ena(7));
    let node = Arc::new(FakeNode::new(&[
        primary.clone(),
        nic2.clone(),
        nic3.clone(),
    ]));
    node.add_route(&primary.ifname, "0.0.0.0", "0.0.0.0", "10.0.0.1");
    let stub = ImdsStub::start(&[
        (&primary.mac, "eni-0primary", 0),
        (&nic2.mac, "eni-0aaaa", 2),
        (&nic3.mac, "eni-0bbbb", 3),
    ])
    .await;

    // The controller's part: the DPDKNodeState spec. Device 2 has an explicit PCI address,
    // device 3 only its ENI ID (mapped through IMDS).
    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    let spec = DPDKNodeStateSpec {
        devices: vec![
            device(2, &eni2, "eni-0aaaa", Some(&nic2.bdf)),
            device(3, &eni3, "eni-0bbbb", None),
        ],
        configs: vec!["default-dpdk-config".into()],
        ..Default::default()
    };
    let created = states
        .create(
            &PostParams::default(),
            &DPDKNodeState::new(&node_name, spec),
        )
        .await
        .expect("create state");

    let sa = agent_client(cp, &node_name).await;
    let token = CancellationToken::new();
    let imds = Imds::new(&stub.endpoint()).expect("imds");
    let run =
        tokio::spawn(agent(&node_name, sa.clone(), &node, Some(imds), None).run(token.clone()));

    // Meanwhile the Multi-ENI Controller keeps rewriting both nodes' attachments.
    let sim = {
        let (admin, eni2, eni3, node_name, other) = (
            admin.clone(),
            eni2.clone(),
            eni3.clone(),
            node_name.clone(),
            other.clone(),
        );
        tokio::spawn(async move {
            for round in 1..=15 {
                eni_controller_writes(&admin, &eni2, &other, 2, "eni-0other", round).await;
                eni_controller_writes(&admin, &eni2, &node_name, 2, "eni-0aaaa", round).await;
                eni_controller_writes(&admin, &eni3, &node_name, 3, "eni-0bbbb", round).await;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };

    let status = eventually(60, "status Succeeded with both devices bound", || {
        let states = states.clone();
        let node_name = node_name.clone();
        async move {
            let s = states
                .get_status(&node_name)
                .await
                .map_err(|e| e.to_string())?;
            let st = s.status.clone().unwrap_or_default();
            (st.sync_status == Some(SyncStatus::Succeeded) && st.bound_devices == 2)
                .then_some(st)
                .ok_or(format!("{:?}", s.status))
        }
    })
    .await;
    sim.await.expect("simulator");
    assert_eq!(status.observed_generation, created.metadata.generation);
    assert!(
        conditions::is_ready(&status.conditions),
        "{:?}",
        status.conditions
    );
    let modules = status.modules.clone().expect("modules");
    assert!(modules.vfio && modules.vfio_pci, "{modules:?}");
    let d2 = status
        .devices
        .iter()
        .find(|d| d.device_index == 2)
        .expect("device 2");
    let d3 = status
        .devices
        .iter()
        .find(|d| d.device_index == 3)
        .expect("device 3");
    assert_eq!(d2.pci_address.as_deref(), Some(nic2.bdf.as_str()));
    assert_eq!(
        d3.pci_address.as_deref(),
        Some(nic3.bdf.as_str()),
        "mapped through IMDS"
    );
    assert_eq!(
        (d3.mac.as_deref(), d3.interface_name.as_deref()),
        (Some(nic3.mac.as_str()), Some(nic3.ifname.as_str()))
    );
    assert_eq!(d3.original_driver.as_deref(), Some("ena"));
    assert_eq!(d3.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(node.driver_of(&nic2.bdf).as_deref(), Some("vfio-pci"));
    assert_eq!(node.driver_of(&nic3.bdf).as_deref(), Some("vfio-pci"));
    assert_eq!(
        node.driver_of(&primary.bdf).as_deref(),
        Some("ena"),
        "the primary ENI is never touched"
    );

    // Both the agent's fields and every field the ENI controller wrote last are there.
    let enis: Api<NodeENI> = Api::all(admin.clone());
    let e2 = eventually(30, "dpdk* fields on eni2", || {
        let enis = enis.clone();
        let (eni2, node_name) = (eni2.clone(), node_name.clone());
        async move {
            let e = enis.get_status(&eni2).await.map_err(|e| e.to_string())?;
            let ok = att_of(&e, &node_name, 2).is_some_and(|a| a.dpdk_bound == Some(true));
            ok.then_some(e.clone()).ok_or(format!("{:?}", e.status))
        }
    })
    .await;
    let mine = att_of(&e2, &node_name, 2).expect("our attachment");
    assert_eq!(mine.dpdk_driver.as_deref(), Some("vfio-pci"));
    assert_eq!(mine.dpdk_pci_address.as_deref(), Some(nic2.bdf.as_str()));
    assert_eq!(
        mine.dpdk_resource_name.as_deref(),
        Some("intel.com/intel_sriov_netdevice_2")
    );
    assert_eq!(
        (mine.mtu, mine.status.as_deref()),
        (Some(9015), Some("attached-15")),
        "the ENI controller's last write survives"
    );
    assert_eq!(mine.eni_id.as_deref(), Some("eni-0aaaa"));
    assert!(mine.attachment_id.is_some() && mine.subnet_id.is_some());
    let theirs = att_of(&e2, &other, 2).expect("other node's attachment");
    assert_eq!(
        (theirs.mtu, theirs.status.as_deref()),
        (Some(9015), Some("attached-15"))
    );
    assert_eq!(
        (theirs.dpdk_bound, theirs.dpdk_driver.as_ref()),
        (None, None),
        "another node's element is not ours"
    );
    assert_eq!(
        e2.status.as_ref().map(|s| s.attachments.len()),
        Some(2),
        "the list is never replaced"
    );
    let e3 = enis.get_status(&eni3).await.expect("eni3");
    let a3 = att_of(&e3, &node_name, 3).expect("att 3");
    assert_eq!(
        (a3.dpdk_bound, a3.dpdk_pci_address.as_deref()),
        (Some(true), Some(nic3.bdf.as_str()))
    );
    assert_eq!(a3.mtu, Some(9015));

    let nodes: Api<Node> = Api::all(admin.clone());
    let labels = nodes
        .get(&node_name)
        .await
        .expect("node")
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels.get(NODE_READY_LABEL).map(String::as_str),
        Some("true")
    );

    // The modules go away (someone ran modprobe -r): the monitor loads them again.
    let loads_before = kernel(&node).loaded_modules.lock().expect("lock").len();
    kernel(&node).unload_module("vfio_pci");
    assert!(!node.sys.join("bus/pci/drivers/vfio-pci").exists());
    eventually(30, "vfio-pci reloaded by the monitor", || {
        let node = node.clone();
        async move {
            let reloaded = node.sys.join("bus/pci/drivers/vfio-pci").is_dir()
                && node.sys.join("module/vfio_pci").is_dir();
            reloaded.then_some(()).ok_or("not yet".to_string())
        }
    })
    .await;
    let loads = kernel(&node).loaded_modules.lock().expect("lock").clone();
    assert_eq!(
        loads.len(),
        loads_before + 1,
        "only vfio_pci was loaded again: {loads:?}"
    );
    assert_eq!(loads.last().map(|(n, _)| n.as_str()), Some("vfio_pci"));

    // Least privilege: the ServiceAccount cannot touch NodeENI specs, Secrets, or other kinds.
    let sa_enis: Api<NodeENI> = Api::all(sa.clone());
    let forbidden =
        |r: Result<NodeENI, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let spec_patch = serde_json::json!({"spec": {"enableDPDK": false}});
    assert!(
        forbidden(
            sa_enis
                .patch(&eni2, &PatchParams::default(), &Patch::Merge(&spec_patch))
                .await
        ),
        "NodeENI spec is not the agent's"
    );
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "dpdk-operator");
    assert!(
        matches!(secrets.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
    let sa_states: Api<DPDKNodeState> = Api::all(sa.clone());
    assert!(
        matches!(sa_states.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403),
        "get/watch only, no list"
    );
    let spec_change = serde_json::json!({"spec": {"devices": []}});
    assert!(
        matches!(sa_states.patch(&node_name, &PatchParams::default(), &Patch::Merge(&spec_change)).await, Err(kube::Error::Api(s)) if s.code == 403),
        "the spec is the controller's"
    );

    // Teardown phase 1: the controller empties the devices; the agent restores the drivers,
    // reports clean and clears its attachment fields.
    states
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(&spec_change),
        )
        .await
        .expect("empty devices");
    eventually(60, "clean status after teardown", || {
        let states = states.clone();
        let node_name = node_name.clone();
        async move {
            let s = states
                .get_status(&node_name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            (s.devices.is_empty()
                && s.bound_devices == 0
                && s.sync_status == Some(SyncStatus::Succeeded))
            .then_some(())
            .ok_or(format!("{s:?}"))
        }
    })
    .await;
    assert_eq!(node.driver_of(&nic2.bdf).as_deref(), Some("ena"));
    assert_eq!(node.driver_of(&nic3.bdf).as_deref(), Some("ena"));
    assert!(node.netdev_exists(&nic3.ifname));
    let e2 = eventually(30, "attachment fields cleared", || {
        let enis = enis.clone();
        let (eni2, node_name) = (eni2.clone(), node_name.clone());
        async move {
            let e = enis.get_status(&eni2).await.map_err(|e| e.to_string())?;
            att_of(&e, &node_name, 2)
                .is_some_and(|a| a.dpdk_bound == Some(false))
                .then_some(e.clone())
                .ok_or(format!("{:?}", e.status))
        }
    })
    .await;
    let mine = att_of(&e2, &node_name, 2).expect("att");
    assert_eq!(
        (
            mine.dpdk_driver.as_ref(),
            mine.dpdk_pci_address.as_ref(),
            mine.dpdk_resource_name.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(
        (mine.mtu, mine.eni_id.as_deref()),
        (Some(9015), Some("eni-0aaaa"))
    );

    // Bind again, then stop the agent: nothing is unbound on shutdown.
    let spec_back =
        serde_json::json!({"spec": {"devices": [device(2, &eni2, "eni-0aaaa", Some(&nic2.bdf))]}});
    states
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(&spec_back),
        )
        .await
        .expect("devices back");
    eventually(60, "device 2 bound again", || {
        let node = node.clone();
        let bdf = nic2.bdf.clone();
        async move {
            (node.driver_of(&bdf).as_deref() == Some("vfio-pci"))
                .then_some(())
                .ok_or("not yet".to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel();
    run.await.expect("join").expect("agent ends cleanly");
    let writes_at_stop = kernel(&node).write_count();
    assert_eq!(
        node.driver_of(&nic2.bdf).as_deref(),
        Some("vfio-pci"),
        "never unbind on shutdown"
    );

    // A new agent (rolling upgrade) finds the device in the journal and leaves it alone.
    let token = CancellationToken::new();
    let run = tokio::spawn(
        agent(
            &node_name,
            sa.clone(),
            &node,
            Some(Imds::new(&stub.endpoint()).expect("imds")),
            None,
        )
        .run(token.clone()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    token.cancel();
    run.await.expect("join").expect("agent ends cleanly");
    assert_eq!(
        kernel(&node).write_count(),
        writes_at_stop,
        "no sysfs write after a restart on a converged node"
    );
    assert_eq!(node.driver_of(&nic2.bdf).as_deref(), Some("vfio-pci"));
}

#[tokio::test]
async fn a_device_a_pod_holds_is_reported_in_use_and_restored_once_released() {
    let cp = shared();
    apply_rbac(cp).await;
    let admin = cp.client().await.expect("admin");
    let node_name = unique_name("dpdk-node");
    let sel = unique_name("multi-eni");
    fixtures::create_node(&admin, &node_name, &[("ng", &sel)], "10.0.0.11")
        .await
        .expect("node");
    let eni = unique_name("multus-eni");
    fixtures::create_nodeeni(&admin, &eni, &[("ng", &sel)], 1, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::upsert_attachment(
        &admin,
        &eni,
        fixtures::attachment(&node_name, 1, "eni-0cccc"),
    )
    .await
    .expect("att");
    let nic = FakeNic::ena(6);
    let node = Arc::new(FakeNode::new(std::slice::from_ref(&nic)));
    let socket = node.tmp.path().join("kubelet.sock");
    let held = agent_support::podresources::serve(&socket).await;

    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    let spec = DPDKNodeStateSpec {
        devices: vec![device(1, &eni, "eni-0cccc", Some(&nic.bdf))],
        ..Default::default()
    };
    states
        .create(
            &PostParams::default(),
            &DPDKNodeState::new(&node_name, spec),
        )
        .await
        .expect("create");
    let sa = agent_client(cp, &node_name).await;
    let token = CancellationToken::new();
    let run = tokio::spawn(agent(&node_name, sa, &node, None, Some(socket)).run(token.clone()));
    eventually(60, "bound", || {
        let states = states.clone();
        let node_name = node_name.clone();
        async move {
            let s = states
                .get_status(&node_name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            (s.bound_devices == 1).then_some(()).ok_or(format!("{s:?}"))
        }
    })
    .await;

    // A pod gets the device; then the config stops asking for it.
    held.lock().expect("lock").push(nic.bdf.clone());
    states
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"devices": []}})),
        )
        .await
        .expect("patch");
    let s = eventually(60, "InUse reported", || {
        let states = states.clone();
        let node_name = node_name.clone();
        async move {
            let s = states
                .get_status(&node_name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let in_use = s
                .devices
                .iter()
                .any(|d| d.health.as_deref() == Some("InUse"));
            in_use.then_some(s.clone()).ok_or(format!("{s:?}"))
        }
    })
    .await;
    assert_eq!(s.sync_status, Some(SyncStatus::InProgress));
    assert!(
        conditions::find(&s.conditions, conditions::RECONCILING).is_some(),
        "{:?}",
        s.conditions
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        node.driver_of(&nic.bdf).as_deref(),
        Some("vfio-pci"),
        "not unbound under a running pod"
    );

    // The pod ends: the device goes back to ena on the next retry.
    held.lock().expect("lock").clear();
    eventually(60, "restored after the pod released it", || {
        let states = states.clone();
        let node_name = node_name.clone();
        let node = node.clone();
        let bdf = nic.bdf.clone();
        async move {
            let s = states
                .get_status(&node_name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            (s.devices.is_empty() && node.driver_of(&bdf).as_deref() == Some("ena"))
                .then_some(())
                .ok_or(format!("{s:?}"))
        }
    })
    .await;
    token.cancel();
    run.await.expect("join").expect("clean end");
}

/// The preconditions are what keeps the agent from clobbering: a patch computed before the
/// ENI controller's write is refused by the API server, and the retry re-reads.
#[tokio::test]
async fn a_stale_attachment_patch_is_refused_and_the_retry_keeps_both_writers_fields() {
    let cp = shared();
    apply_rbac(cp).await;
    let admin = cp.client().await.expect("admin");
    let (node_name, other) = (unique_name("dpdk-node"), unique_name("other-node"));
    let sa = agent_client(cp, &node_name).await;
    let eni = unique_name("multus-eni");
    fixtures::create_nodeeni(&admin, &eni, &[("ng", "x")], 1, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::upsert_attachment(
        &admin,
        &eni,
        fixtures::attachment(&node_name, 1, "eni-0dddd"),
    )
    .await
    .expect("att");
    fixtures::upsert_attachment(&admin, &eni, fixtures::attachment(&other, 1, "eni-0eeee"))
        .await
        .expect("att");
    let fields = dpdk_node_agent::report::AttachmentFields {
        bound: true,
        driver: Some("vfio-pci".into()),
        pci_address: Some("0000:00:06.0".into()),
        resource_name: Some("intel.com/intel_sriov_netdevice_2".into()),
    };
    let sa_enis: Api<NodeENI> = Api::all(sa.clone());
    let read = sa_enis.get_status(&eni).await.expect("read");
    let stale =
        dpdk_node_agent::report::attachment_patch(&read, &node_name, 1, &fields).expect("a patch");

    // The ENI controller writes in between (whole status, with its resourceVersion).
    let mut theirs = fixtures::attachment(&other, 1, "eni-0eeee");
    theirs.mtu = Some(1500);
    fixtures::upsert_attachment(&admin, &eni, theirs)
        .await
        .expect("controller write");

    let refused = sa_enis
        .patch_status(&eni, &PatchParams::default(), &Patch::<()>::Json(stale))
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if matches!(s.code, 409 | 422)),
        "a stale patch must be refused: {refused:?}"
    );
    let now = sa_enis.get_status(&eni).await.expect("read");
    assert_eq!(att_of(&now, &other, 1).and_then(|a| a.mtu), Some(1500));
    assert_eq!(
        att_of(&now, &node_name, 1).and_then(|a| a.dpdk_bound),
        None,
        "nothing of the stale patch landed"
    );

    assert!(
        dpdk_node_agent::report::report_attachment(&sa, &eni, &node_name, 1, &fields)
            .await
            .expect("report")
    );
    let now = sa_enis.get_status(&eni).await.expect("read");
    assert_eq!(
        att_of(&now, &other, 1).and_then(|a| a.mtu),
        Some(1500),
        "the controller's write survives"
    );
    assert_eq!(
        att_of(&now, &node_name, 1).and_then(|a| a.dpdk_bound),
        Some(true)
    );
    assert!(
        !dpdk_node_agent::report::report_attachment(&sa, &eni, &node_name, 1, &fields)
            .await
            .expect("report"),
        "no write when nothing changed"
    );
}

/// The reasons of refusals reach DPDKNodeState.status on the real API server: the EBS root
/// volume (an NVMe controller with no netdev) named as dpdkPCIAddress, and a NIC whose MAC
/// IMDS lists for another ENI. Neither is unbound.
#[tokio::test]
async fn refused_targets_are_reported_with_their_reason_and_never_unbound() {
    let cp = shared();
    apply_rbac(cp).await;
    let admin = cp.client().await.expect("admin");
    let node_name = unique_name("dpdk-node");
    fixtures::create_node(&admin, &node_name, &[], "10.0.0.10")
        .await
        .expect("node");
    let (primary, nic6, nic7) = (FakeNic::ena(5), FakeNic::ena(6), FakeNic::ena(7));
    let ebs = FakeNic::ebs_nvme(4);
    let node = FakeNode::new(&[primary.clone(), nic6.clone(), nic7.clone()]);
    node.register_driver("nvme").expect("nvme");
    node.add_nic(ebs.clone());
    let node = Arc::new(node);
    node.add_route(&primary.ifname, "0.0.0.0", "0.0.0.0", "10.0.0.1");
    let stub = ImdsStub::start(&[
        (&primary.mac, "eni-0primary", 0),
        (&nic6.mac, "eni-0aaaa", 2),
        (&nic7.mac, "eni-0bbbb", 3),
    ])
    .await;
    // A NodeENI whose dpdkPCIAddress was forged to the root volume, and one whose address
    // names ens7 although its ENI is ens6.
    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    let spec = DPDKNodeStateSpec {
        devices: vec![
            device(1, "forged-eni", "eni-0bbbb", Some(&ebs.bdf)),
            device(2, "swapped-eni", "eni-0aaaa", Some(&nic7.bdf)),
        ],
        configs: vec!["default-dpdk-config".into()],
        ..Default::default()
    };
    states
        .create(
            &PostParams::default(),
            &DPDKNodeState::new(&node_name, spec),
        )
        .await
        .expect("create state");
    let sa = agent_client(cp, &node_name).await;
    let token = CancellationToken::new();
    let imds = Imds::new(&stub.endpoint()).expect("imds");
    let run = tokio::spawn(agent(&node_name, sa, &node, Some(imds), None).run(token.clone()));

    let status = eventually(60, "both devices Refused in the status", || {
        let (states, node_name) = (states.clone(), node_name.clone());
        async move {
            let s = states
                .get_status(&node_name)
                .await
                .map_err(|e| e.to_string())?;
            let st = s.status.clone().unwrap_or_default();
            let refused = st
                .devices
                .iter()
                .filter(|d| d.health.as_deref() == Some("Refused"))
                .count();
            (refused == 2)
                .then_some(st)
                .ok_or(format!("{:?}", s.status))
        }
    })
    .await;
    token.cancel();
    run.await.expect("join").expect("agent");
    assert_eq!(status.sync_status, Some(SyncStatus::Failed));
    let row = |i: i32| {
        status
            .devices
            .iter()
            .find(|d| d.device_index == i)
            .expect("device row")
    };
    let volume = row(1);
    let reason = volume.message.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("refusing to bind {}", ebs.bdf))
            && reason.contains("not a network controller (PCI class 0x010802"),
        "{reason}"
    );
    assert_eq!(volume.driver.as_deref(), Some("nvme"));
    let swapped = row(2).message.clone().unwrap_or_default();
    assert!(
        swapped.contains(&format!(
            "its MAC {} is not the MAC of eni-0aaaa: IMDS lists {}",
            nic7.mac, nic6.mac
        )),
        "{swapped}"
    );
    let last = status.last_sync_error.clone().unwrap_or_default();
    assert!(
        last.contains("0x010802") && last.contains("eni-0aaaa"),
        "{last}"
    );
    assert!(
        conditions::find(&status.conditions, conditions::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == "Refused"),
        "{:?}",
        status.conditions
    );
    assert_eq!(
        node.driver_of(&ebs.bdf).as_deref(),
        Some("nvme"),
        "the root volume keeps nvme"
    );
    assert_eq!(node.driver_of(&nic7.bdf).as_deref(), Some("ena"));
    assert!(
        kernel(&node)
            .writes
            .lock()
            .expect("lock")
            .iter()
            .all(|(p, v)| !p.contains(&ebs.bdf) && v != &ebs.bdf && v != &nic7.bdf),
        "no sysfs write ever named either device"
    );
}
