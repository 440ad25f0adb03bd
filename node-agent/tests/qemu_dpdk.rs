//! AWS's own path on a real kernel: QEMU (TCG) boots a Debian kernel as a DPDK node of a
//! real cluster (the local kube-apiserver, and the IMDSv2 stub, reached from the guest
//! through QEMU `guestfwd`), and inside the guest, as on an EC2 node:
//!
//! - the statically linked agent's `load` loads vfio (`enable_unsafe_noiommu_mode=1`) and
//!   vfio-pci itself (finit_module) and verifies them through sysfs; its `run` loop maps the
//!   DPDKNodeState's ENI ID to the e1000e through IMDS (ENI → MAC → BDF), binds it to
//!   vfio-pci and reports the DPDKNodeState status;
//! - `dpdk-node-agent device-plugin` registers with the guest kubelet (examples/guest_kubelet.rs,
//!   the v1beta1 proto), which calls Allocate as the kubelet does for a pod;
//! - Debian's `dpdk-testpmd` runs in a new mount namespace whose /dev/vfio holds only the
//!   answer's device nodes at their container paths (mknod with the host nodes' major:minor,
//!   as runc does), with the answer's env and the allow-list from `PCIDEVICE_*`, probes the
//!   port through vfio and transmits to a second guest NIC on the same QEMU hub, which stays
//!   on its kernel driver: its `rx_packets` must rise by at least what testpmd sent.
//!
//! Two guests: without an IOMMU, with this kernel's vfio.ko rebuilt with
//! CONFIG_VFIO_NOIOMMU (build-vfio-noiommu.sh; EC2's kernels have it, Debian's do not), so
//! the group is `/dev/vfio/noiommu-<N>` and the container sees `/dev/vfio/<N>`; and with an
//! emulated VT-d (type1 group `/dev/vfio/<N>`). Both ask for write-combining, as the seed
//! does: the real kernel's mainline vfio-pci makes it `Unavailable`, and the drift report
//! says so.
//!
//! QEMU missing is a failure; QEMU that cannot start here skips loudly (DPDK_REQUIRE_QEMU=1
//! makes that a failure too), as in qemu_vfio.rs.

#[path = "qemu/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "agent_support/imds.rs"]
mod imds;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use dpdk_bridge::api::{
    DPDKNodeState, DPDKNodeStateSpec, DPDKNodeStateStatus, DesiredDevice, DpdkDriver,
    EffectiveDriverOptions, WriteCombiningState,
};
use dpdk_testenv::{fixtures, unique_name};
use harness::{Boot, BootSpec, Guest, NIC_MAC, PEER_MAC, PRIMARY_MAC, QemuStatus};
use imds::ImdsStub;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

const RESOURCE: &str = "intel.com/intel_sriov_netdevice_2";
const ENV: &str = "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2";
const NIC_BDF: &str = "0000:00:03.0";
const ENI_ID: &str = "eni-0e1000e0000000001";
/// Guest-side addresses of the host's API server and IMDS stub (QEMU guestfwd).
const GUEST_APISERVER: &str = "10.0.2.100:6443";
const GUEST_IMDS: &str = "10.0.2.101:80";
/// How long testpmd runs once forwarding started (its 8 bursts go out at once).
const TESTPMD_SECONDS: u32 = 2;

/// One DPDK guest per test binary; one QEMU at a time (the machine is shared).
fn guest() -> Option<&'static Guest> {
    static GUEST: OnceLock<Option<Guest>> = OnceLock::new();
    GUEST
        .get_or_init(|| match harness::qemu_status() {
            QemuStatus::Ready => {
                let (agent, kubelet) = harness::build_static_agent_and_kubelet();
                let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-dpdk-guest");
                Some(harness::build_guest_with(&agent, Some(&kubelet), &out))
            }
            QemuStatus::Missing(why) => panic!("QEMU is required for the real-kernel test and is missing: {why}"),
            QemuStatus::CannotStart(why) => {
                let banner = "!".repeat(78);
                eprintln!("\n{banner}\n!! SKIPPING the real-kernel DPDK QEMU tests: QEMU is installed but cannot start a machine here:\n!! {why}\n{banner}\n");
                if std::env::var("DPDK_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
                    panic!("DPDK_REQUIRE_QEMU=1 and QEMU cannot start: {why}");
                }
                None
            }
        })
        .as_ref()
}

/// What a pod-mode boot left: the console and the DPDKNodeState the guest's agent wrote.
struct PodRun {
    boot: Boot,
    state: DPDKNodeState,
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// The admin kubeconfig for the guest: the API server at its guestfwd address, verified
/// as `localhost` (a name its serving certificate carries); CA, certificate and key as files.
fn guest_kubeconfig(cp: &dpdk_testenv::ControlPlane) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("kubeconfig");
    let kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig yaml");
    let file = |section: &str, inner: &str, key: &str| -> Vec<u8> {
        let path = kc[section][0][inner][key]
            .as_str()
            .unwrap_or_else(|| panic!("kubeconfig has no {section}[0].{inner}.{key}"));
        std::fs::read(path).expect("kubeconfig file")
    };
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: host\n  cluster:\n    server: https://{GUEST_APISERVER}\n    tls-server-name: localhost\n    certificate-authority: /etc/dpdktest/ca.crt\nusers:\n- name: admin\n  user:\n    client-certificate: /etc/dpdktest/admin.crt\n    client-key: /etc/dpdktest/admin.key\ncontexts:\n- name: host\n  context:\n    cluster: host\n    user: admin\ncurrent-context: host\n"
    );
    vec![
        ("/etc/dpdktest/kubeconfig".into(), config.into_bytes()),
        (
            "/etc/dpdktest/ca.crt".into(),
            file("clusters", "cluster", "certificate-authority"),
        ),
        (
            "/etc/dpdktest/admin.crt".into(),
            file("users", "user", "client-certificate"),
        ),
        (
            "/etc/dpdktest/admin.key".into(),
            file("users", "user", "client-key"),
        ),
    ]
}

/// Boots `mode` as a node of the local cluster and returns what it left.
fn pod_run(mode: &str, iommu: bool) -> Option<PodRun> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guest = guest()?;
    let cp = dpdk_testenv::shared();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let node = unique_name("qemu-node");
    let (states, stub) = rt.block_on(async {
        let admin = cp.client().await.expect("client");
        fixtures::create_node(
            &admin,
            &node,
            &[("dpdk.aws.k8s/enabled", "true")],
            "10.0.2.15",
        )
        .await
        .expect("node");
        let eni = unique_name("qemu-eni");
        fixtures::create_nodeeni(
            &admin,
            &eni,
            &[("dpdk.aws.k8s/enabled", "true")],
            1,
            &["subnet-0123456789abcdef0"],
        )
        .await
        .expect("nodeeni");
        fixtures::upsert_attachment(&admin, &eni, fixtures::attachment(&node, 1, ENI_ID))
            .await
            .expect("attachment");
        // The controller's part, with the seed's driver options: noiommu and write-combining.
        let spec = DPDKNodeStateSpec {
            driver_options: EffectiveDriverOptions {
                enable_unsafe_no_iommu: true,
                write_combining: true,
            },
            devices: vec![DesiredDevice {
                device_index: 1,
                node_eni: eni.clone(),
                eni_id: Some(ENI_ID.into()),
                pci_address: None,
                resource_name: RESOURCE.into(),
                driver: DpdkDriver::VfioPci,
            }],
            configs: vec!["default-dpdk-config".into()],
            revision: None,
        };
        let states: Api<DPDKNodeState> = Api::all(admin.clone());
        states
            .create(&PostParams::default(), &DPDKNodeState::new(&node, spec))
            .await
            .expect("state");
        let stub = ImdsStub::start(&[
            (PRIMARY_MAC, "eni-0primary00000000", 0),
            (NIC_MAC, ENI_ID, 1),
        ])
        .await;
        (states, stub)
    });
    let env = format!(
        "NODE_NAME={node}\nNODE_IP=10.0.2.15\nDPDK_IMDS_ENDPOINT=http://{GUEST_IMDS}\nKUBECONFIG=/etc/dpdktest/kubeconfig\nRESOURCE={RESOURCE}\nPEER_MAC={PEER_MAC}\nTESTPMD_SECONDS={TESTPMD_SECONDS}\n"
    );
    let mut files = guest_kubeconfig(cp);
    files.push(("/etc/dpdktest/env".into(), env.into_bytes()));
    // The IMDS stub and the API server are served by `rt`'s workers while QEMU runs.
    let boot = harness::boot_with(
        guest,
        &BootSpec {
            mode: mode.into(),
            iommu,
            limit: Duration::from_secs(420),
            files,
            forwards: vec![
                (GUEST_APISERVER.into(), port_of(&cp.server_url())),
                (GUEST_IMDS.into(), stub.addr.port()),
            ],
            peer: true,
            memory_mb: 1024,
            cpu: Some("Nehalem"),
        },
    );
    // What the guest proved, on every run (the whole console only when something fails).
    for line in boot.console.lines().filter(|l| l.starts_with("DPDKTEST ")) {
        eprintln!("{mode}: {}", line.trim_end());
    }
    eprintln!(
        "{mode}: guest {} ran for {:.1}s; guest timings: {:?}",
        guest.release,
        boot.elapsed.as_secs_f64(),
        boot.times()
    );
    assert!(
        !boot.timed_out,
        "QEMU ({mode}) did not finish in time; console:\n{}",
        boot.console
    );
    assert!(
        boot.done(),
        "the guest ({mode}) did not reach the end of its script; console:\n{}",
        boot.console
    );
    let state = rt
        .block_on(states.get_status(&node))
        .expect("the guest's DPDKNodeState");
    Some(PodRun { boot, state })
}

fn assert_checks(boot: &Boot, expected: &[&str]) {
    let checks = boot.checks();
    let failed: Vec<_> = checks.iter().filter(|c| !c.1).collect();
    assert!(
        failed.is_empty(),
        "failed in the guest: {failed:?}\nconsole:\n{}",
        boot.console
    );
    for name in expected {
        assert!(
            checks.iter().any(|c| c.0 == *name && c.1),
            "check {name} did not run; console:\n{}",
            boot.console
        );
    }
}

/// The value after `DPDKTEST <key> ` on the console.
fn console_value(boot: &Boot, key: &str) -> String {
    let tag = format!("DPDKTEST {key} ");
    boot.console
        .lines()
        .find_map(|l| l.split_once(&tag).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no `{tag}` line; console:\n{}", boot.console))
}

/// The Allocate answer the guest kubelet printed.
fn allocate_answer(boot: &Boot) -> Value {
    let line = boot
        .console
        .lines()
        .find_map(|l| l.split_once("DPDKTEST-ALLOCATE ").map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no Allocate answer; console:\n{}", boot.console));
    serde_json::from_str(line).expect("Allocate answer JSON")
}

/// What the plugin must answer for the e1000e in VFIO group `group`, whose host node is
/// `host_group_node`: the container always sees `/dev/vfio/<group>`.
fn expected_answer(group: &str, host_group_node: &str) -> (Value, Value) {
    let container_group = format!("/dev/vfio/{group}");
    let devices = json!([
        {"hostPath": "/dev/vfio/vfio", "containerPath": "/dev/vfio/vfio", "permissions": "rw"},
        {"hostPath": host_group_node, "containerPath": container_group, "permissions": "rw"},
    ]);
    let info = json!({NIC_BDF: {
        "generic": {"deviceID": NIC_BDF},
        "vfio": {"dev-mount": container_group, "mount": "/dev/vfio/vfio"},
    }});
    (devices, info)
}

fn assert_answer(boot: &Boot, host_group_node: &str) {
    let group = console_value(boot, "GROUP");
    let answer = allocate_answer(boot);
    let (devices, info) = expected_answer(&group, host_group_node);
    let mut got_devices = answer["devices"].as_array().cloned().unwrap_or_default();
    got_devices.sort_by_key(|d| d["containerPath"].to_string());
    let mut want_devices = devices.as_array().cloned().unwrap_or_default();
    want_devices.sort_by_key(|d| d["containerPath"].to_string());
    assert_eq!(got_devices, want_devices, "DeviceSpecs of {answer}");
    assert_eq!(answer["envs"][ENV], json!(NIC_BDF), "{ENV} in {answer}");
    let got_info: Value = serde_json::from_str(
        answer["envs"][format!("{ENV}_INFO")]
            .as_str()
            .unwrap_or_else(|| panic!("no {ENV}_INFO in {answer}")),
    )
    .expect("_INFO is JSON");
    assert_eq!(got_info, info, "{ENV}_INFO in {answer}");
}

/// The status the guest's agent reported: the e1000e bound, and write-combining honest.
fn assert_status(status: &DPDKNodeStateStatus, noiommu: bool) {
    let modules = status.modules.as_ref().expect("status.modules");
    assert_eq!(
        modules.noiommu, noiommu,
        "status.modules.noiommu: {status:?}"
    );
    assert!(modules.vfio && modules.vfio_pci, "{modules:?}");
    let device = status
        .devices
        .iter()
        .find(|d| d.device_index == 1)
        .unwrap_or_else(|| panic!("no device 1 in {status:?}"));
    assert_eq!(device.pci_address.as_deref(), Some(NIC_BDF), "{device:?}");
    assert_eq!(device.mac.as_deref(), Some(NIC_MAC), "{device:?}");
    assert_eq!(device.driver.as_deref(), Some("vfio-pci"), "{device:?}");
    assert_eq!(
        device.original_driver.as_deref(),
        Some("e1000e"),
        "{device:?}"
    );
    assert!(device.bound, "{device:?}");
    assert_eq!(status.bound_devices, 1);
    assert_eq!(
        modules.write_combining.state,
        WriteCombiningState::Unavailable,
        "{modules:?}"
    );
    let reason = modules.write_combining.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("mainline vfio-pci has no write-combining support"),
        "write-combining reason: {reason}"
    );
}

/// The drift report over the DPDKNodeState the guest wrote says write-combining was asked
/// for and is Unavailable, with the agent's reason (the real kernel's mainline vfio-pci).
fn assert_drift_names_write_combining(
    state: &DPDKNodeState,
) -> dpdk_reconciler::drift::DriftReport {
    let live = dpdk_reconciler::drift::LiveView {
        configs: vec![],
        node_enis: vec![],
        node_states: vec![state],
        nodes: vec![],
        complete: true,
    };
    let report =
        dpdk_reconciler::drift::compute(&[], live, k8s_openapi::jiff::Timestamp::now(), None);
    let wc: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == dpdk_reconciler::drift::FindingKind::WriteCombining)
        .collect();
    assert_eq!(
        wc.len(),
        1,
        "one write-combining finding: {:#?}",
        report.findings
    );
    let f = wc[0];
    assert_eq!(f.field_path, "/status/modules/writeCombining/state");
    assert_eq!(f.git, json!("Enabled"));
    assert_eq!(f.live, json!("Unavailable"));
    assert!(
        f.message
            .contains("write-combining was asked for and is Unavailable")
            && f.message
                .contains("mainline vfio-pci has no write-combining support"),
        "{}",
        f.message
    );
    eprintln!("drift report on the guest's status: {}", f.message);
    report
}

/// The checks both guests run (init.sh's pod modes and pod.sh).
const POD_CHECKS: &[&str] = &[
    "hugepages",
    "load_exit",
    "run_bound",
    "allocate_exit",
    "container_dev_vfio_only_allocated",
    "allow_list",
    "testpmd_probed",
    "testpmd_vfio_iommu_type",
    "testpmd_iova_mode",
    "testpmd_forwarding",
    "testpmd_stopped",
    "pod_exit",
    "testpmd_sent",
    "peer_rx_rose",
];

#[test]
fn without_an_iommu_a_noiommu_vfio_kernel_binds_allocates_noiommu_nodes_and_testpmd_transmits() {
    let Some(run) = pod_run("pod-noiommu", false) else {
        return;
    };
    let mut checks = POD_CHECKS.to_vec();
    checks.extend([
        "noiommu_param",
        "load_reports_noiommu",
        "group_is_noiommu",
        "dev_vfio_noiommu",
    ]);
    assert_checks(&run.boot, &checks);
    let group = console_value(&run.boot, "GROUP");
    assert_answer(&run.boot, &format!("/dev/vfio/noiommu-{group}"));
    assert_status(run.state.status.as_ref().expect("status"), true);
    let report = assert_drift_names_write_combining(&run.state);
    // Nothing else drifted: noiommu on as asked, the device on vfio-pci, the modules loaded.
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
}

#[test]
fn with_vt_d_the_type1_group_is_allocated_and_testpmd_transmits() {
    let Some(run) = pod_run("pod-iommu", true) else {
        return;
    };
    let mut checks = POD_CHECKS.to_vec();
    checks.extend(["noiommu_param_absent", "dev_vfio_group"]);
    assert_checks(&run.boot, &checks);
    let group = console_value(&run.boot, "GROUP");
    assert_answer(&run.boot, &format!("/dev/vfio/{group}"));
    assert_status(run.state.status.as_ref().expect("status"), false);
    assert_drift_names_write_combining(&run.state);
}
