//! The `dpdk-node-agent load` binary on a fake host: a missing module fails with its
//! message and exit code; with the modules present it verifies them, persists the settings,
//! and labels its node ready as the ServiceAccount; a failure lands in the DPDKNodeState
//! status. (Loading real modules is the QEMU test's job: here every module is already
//! present, so the binary never calls finit_module on the test machine.)

mod agent_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agent_support::{FakeNic, FakeNode};
use dpdk_bridge::api::{DPDKNodeState, DPDKNodeStateSpec, DesiredDevice, DpdkDriver, SyncStatus};
use dpdk_bridge::labels::NODE_READY_LABEL;
use dpdk_node_agent::modules::{self, ModuleConfig};
use dpdk_testenv::{ControlPlane, fixtures, shared, unique_name};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;

fn agent(node: &FakeNode, args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpdk-node-agent"));
    cmd.args(args)
        .arg("--sysfs-root")
        .arg(&node.sys)
        .arg("--host-root")
        .arg(&node.host)
        .arg("--proc-root")
        .arg(&node.proc_)
        .arg("--dev-root")
        .arg(&node.dev)
        .arg("--state-dir")
        .arg(&node.state)
        .env_remove("NODE_NAME")
        .env_remove("KUBECONFIG");
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd.output().expect("the agent binary runs")
}

/// The modules are already loaded on this fake host (through the kernel model).
fn preload(node: &FakeNode) {
    node.load_modules(&ModuleConfig {
        driver: DpdkDriver::VfioPci,
        noiommu: true,
        write_combining: false,
    })
    .expect("preload");
}

/// A kubeconfig that acts as the node agent's ServiceAccount in a pod on `node_name`
/// (impersonation with the node-name user extra its token would carry).
fn service_account_kubeconfig(cp: &ControlPlane, dir: &Path, node_name: &str) -> PathBuf {
    let path = dir.join("sa-kubeconfig");
    cp.write_node_service_account_kubeconfig("dpdk-operator", "dpdk-node-agent", node_name, &path)
        .expect("write kubeconfig");
    path
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

#[test]
fn load_names_a_missing_module_and_exits_non_zero() {
    let node = FakeNode::new(&[]);
    let out = agent(&node, &["load", "--offline", "--driver", "igb_uio"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kernel module igb_uio not found in") && stderr.contains("dpdk-kmods"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_name_themselves() {
    let node = FakeNode::new(&[]);
    let out = agent(&node, &["load", "--driver", "e1000"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("--driver") && stderr.contains("vfio-pci, igb_uio, uio_pci_generic"),
        "{stderr}"
    );
}

#[tokio::test]
async fn load_verifies_persists_and_labels_the_node_as_its_service_account() {
    let cp = shared();
    apply_rbac(cp).await;
    let admin = cp.client().await.expect("admin");
    let name = unique_name("dpdk-node");
    fixtures::create_node(&admin, &name, &[], "10.0.0.20")
        .await
        .expect("node");
    let node = FakeNode::new(&[FakeNic::ena(6)]);
    preload(&node);
    let kubeconfig = service_account_kubeconfig(cp, node.tmp.path(), &name);

    let out = agent(
        &node,
        &["load", "--node-name", &name, "--persist"],
        Some(&kubeconfig),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"vfio\":true") && stdout.contains("\"noiommu\":true"),
        "{stdout}"
    );
    // The binary's own loads would go to the real kernel (and fail here); success means it
    // found every module already present.
    let conf =
        std::fs::read_to_string(node.host.join(modules::MODULES_LOAD_FILE)).expect("persisted");
    assert!(conf.lines().any(|l| l == "vfio-pci"), "{conf}");
    let labels = Api::<Node>::all(admin.clone())
        .get(&name)
        .await
        .expect("node")
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels.get(NODE_READY_LABEL).map(String::as_str),
        Some("true")
    );
}

#[tokio::test]
async fn a_failed_load_is_reported_in_the_node_state_and_the_node_is_not_labelled() {
    let cp = shared();
    apply_rbac(cp).await;
    let admin = cp.client().await.expect("admin");
    let name = unique_name("dpdk-node");
    fixtures::create_node(&admin, &name, &[], "10.0.0.21")
        .await
        .expect("node");
    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    let spec = DPDKNodeStateSpec {
        devices: vec![DesiredDevice {
            device_index: 1,
            node_eni: "eni".into(),
            eni_id: None,
            pci_address: Some("0000:00:06.0".into()),
            resource_name: "intel.com/dpdk".into(),
            driver: DpdkDriver::IgbUio,
        }],
        ..Default::default()
    };
    states
        .create(&PostParams::default(), &DPDKNodeState::new(&name, spec))
        .await
        .expect("state");
    let node = FakeNode::new(&[]);
    let kubeconfig = service_account_kubeconfig(cp, node.tmp.path(), &name);
    let out = agent(&node, &["load", "--node-name", &name], Some(&kubeconfig));
    assert_eq!(
        out.status.code(),
        Some(1),
        "igb_uio (from the DPDKNodeState) is not on this host"
    );
    let status = states
        .get_status(&name)
        .await
        .expect("state")
        .status
        .unwrap_or_default();
    assert_eq!(status.sync_status, Some(SyncStatus::Failed));
    assert!(
        status
            .last_sync_error
            .as_deref()
            .is_some_and(|e| e.contains("kernel module igb_uio not found")),
        "{status:?}"
    );
    let labels = Api::<Node>::all(admin.clone())
        .get(&name)
        .await
        .expect("node")
        .metadata
        .labels
        .unwrap_or_default();
    assert!(
        !labels.contains_key(NODE_READY_LABEL),
        "not ready when the modules failed"
    );
}
