//! The dpdk-node-agent image (deploy/docker/node-agent.Dockerfile, built here by testenv
//! with buildah, nothing pulled) under runc with the DaemonSets' security settings:
//! `--version` as the device plugin container runs (non-root capabilities dropped,
//! read-only root), then the `load` and `bind` dry paths as the driver-loader container
//! runs (privileged), on a fake host (the sim's sysfs tree) mounted where the DaemonSet
//! mounts /sys and the host root. Dry: the modules are already loaded and the device is
//! already bound, so nothing reaches the real kernel, and the fake sysfs sees no write.

mod agent_support;

use std::sync::OnceLock;

use agent_support::{FakeNic, FakeNode};
use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::journal::Journal;
use dpdk_node_agent::modules::ModuleConfig;
use dpdk_node_agent::reconcile::{self, NodeContext, Target};
use dpdk_node_agent::safety::{HostNetwork, SafetyPolicy};
use dpdk_node_agent::sysfs::{PciAddress, Sysfs};
use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::images::{BuiltImage, Profile, VERSION, build_images};
use dpdk_testenv::runc::{BindMount, Bundle, Security, pod_spec};
use dpdk_testenv::unique_name;

fn node_agent_image() -> &'static BuiltImage {
    static IMAGE: OnceLock<BuiltImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let profile = match std::env::var("DPDK_IMAGES_PROFILE").as_deref() {
            Ok("release") => Profile::Release,
            _ => Profile::Dev,
        };
        build_images(profile)
            .expect("the images build")
            .into_iter()
            .find(|i| i.name == "dpdk-node-agent")
            .expect("the node agent image")
    })
}

/// The securityContext of a container of a DaemonSet in deploy/dpdk-operator.yaml.
fn security(daemonset: &str, container: &str) -> Security {
    let manifest = workspace_root().join("deploy/dpdk-operator.yaml");
    let spec = pod_spec(&manifest, "DaemonSet", daemonset).expect("DaemonSet");
    Security::of_container(&spec, container).expect("container")
}

/// The fake host where the driver-loader container has it: /sys, the host's modules and
/// kernel config under /host, the journal's hostPath; the fake /proc and /dev beside them.
fn host_mounts(node: &FakeNode) -> Vec<BindMount> {
    let bind = |source: &std::path::Path, destination: &str, read_only: bool| BindMount {
        source: source.to_path_buf(),
        destination: destination.into(),
        read_only,
    };
    vec![
        bind(&node.sys, "/sys", false),
        bind(&node.host.join("lib/modules"), "/host/lib/modules", true),
        bind(&node.host.join("boot"), "/host/boot", true),
        bind(&node.state, "/var/lib/dpdk-gitops", false),
        bind(&node.proc_, "/fake/proc", true),
        bind(&node.dev, "/fake/dev", true),
    ]
}

const HOST_ARGS: [&str; 5] = [
    "--sysfs-root=/sys",
    "--host-root=/host",
    "--proc-root=/fake/proc",
    "--dev-root=/fake/dev",
    "--state-dir=/var/lib/dpdk-gitops",
];

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version_as_the_device_plugin_runs_it() {
    let sec = security("sriov-device-plugin", "sriov-device-plugin");
    assert!(sec.read_only_root && sec.capabilities.is_empty() && sec.no_new_privileges);
    let bundle = Bundle::unpack(node_agent_image()).expect("umoci unpacks");
    let id = unique_name("agent-version");
    let out = bundle
        .run(&id, &["--version"], &sec, &[], &[])
        .expect("runc runs");
    bundle.delete(&id);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("dpdk-node-agent {VERSION}")
    );
}

/// vfio-pci loaded and the NIC bound to it (journaled Bound) through the sim's kernel model.
fn bound_node(nic: &FakeNic) -> FakeNode {
    let node = FakeNode::new(std::slice::from_ref(nic));
    node.load_modules(&ModuleConfig {
        driver: DpdkDriver::VfioPci,
        noiommu: true,
        write_combining: false,
    })
    .expect("modules load in the sim");
    let sysfs = Sysfs::new(&node.sys);
    let (network, policy) = (
        HostNetwork {
            routes: vec![],
            addresses: vec![],
            rules: vec![],
        },
        SafetyPolicy::default(),
    );
    let ctx = NodeContext {
        sysfs: &sysfs,
        dev_root: &node.dev,
        kernel: &node.kernel,
        network: &network,
        policy: &policy,
        in_use: None,
    };
    let mut journal = Journal::open(&node.state).expect("journal");
    let target = Target {
        device_index: 2,
        node_eni: Some("one-shot".into()),
        eni_id: None,
        address: PciAddress::parse(&nic.bdf).expect("bdf"),
        driver: "vfio-pci".into(),
        resource_name: Some("intel.com/dpdk".into()),
        eni_mac: dpdk_node_agent::safety::EniMac::Unchecked,
    };
    let report = reconcile::converge(&ctx, &mut journal, &[target]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("vfio-pci"));
    node.kernel.take_writes();
    node
}

#[test]
fn load_and_bind_dry_paths_as_the_driver_loader_runs_them_on_a_fake_sysfs() {
    let sec = security("dpdk-driver-loader", "driver-loader");
    assert!(
        sec.capabilities.iter().any(|c| c == "CAP_SYS_MODULE"),
        "privileged"
    );
    let nic = FakeNic::ena(6);
    let node = bound_node(&nic);
    let override_file = node
        .sys
        .join("bus/pci/devices")
        .join(&nic.bdf)
        .join("driver_override");
    let before = std::fs::read_to_string(&override_file).expect("driver_override");
    let bundle = Bundle::unpack(node_agent_image()).expect("umoci unpacks");
    let mounts = host_mounts(&node);

    // load: every module is already in the fake /sys/module, so it verifies them only.
    let mut args = vec!["load", "--offline"];
    args.extend(HOST_ARGS);
    let id = unique_name("agent-load");
    let out = bundle
        .run(&id, &args, &sec, &[], &mounts)
        .expect("runc runs");
    bundle.delete(&id);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("\"vfio\":true") && said.contains("\"noiommu\":true"),
        "{said}"
    );

    // bind: the device is journaled Bound and on vfio-pci, so nothing is written.
    let mut args = vec!["bind", "--pci", nic.bdf.as_str(), "--device-index=2"];
    args.extend(HOST_ARGS);
    let id = unique_name("agent-bind");
    let out = bundle
        .run(&id, &args, &sec, &[], &mounts)
        .expect("runc runs");
    bundle.delete(&id);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["devices"][0]["bound"], true, "{report}");
    assert_eq!(report["devices"][0]["driver"], "vfio-pci", "{report}");
    assert_eq!(
        std::fs::read_to_string(&override_file).expect("driver_override"),
        before,
        "the dry bind wrote driver_override"
    );
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("vfio-pci"));
}
