//! The device plugin driven by a real DPDKNodeState on the local API server, running as
//! its own ServiceAccount (dpdk-device-plugin, RBAC from deploy/dpdk-operator.yaml, scoped
//! to its node by deploy/dpdk-node-policy.yaml):
//! resources appear and disappear with spec.devices, device IDs come from
//! status.devices, and what it advertises is reported in status.devicePlugin without
//! touching the agent's status fields.

mod device_plugin_support;

use std::time::Duration;

use device_plugin_support::*;
use dpdk_bridge::api::{
    DPDKNodeState, DPDKNodeStateSpec, DPDKNodeStateStatus, DesiredDevice as SpecDevice,
    DeviceStatus, DpdkDriver,
};
use dpdk_node_agent::device_plugin::report::NodeReporter;
use dpdk_node_agent::device_plugin::{self, DesiredState, Metrics, source};
use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::{fixtures, shared, unique_name};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

fn spec_device(index: i32, resource: &str) -> SpecDevice {
    SpecDevice {
        device_index: index,
        node_eni: format!("eni-{index}"),
        eni_id: None,
        pci_address: None,
        resource_name: resource.into(),
        driver: DpdkDriver::VfioPci,
    }
}

fn status_device(index: i32, bdf: &str) -> DeviceStatus {
    DeviceStatus {
        device_index: index,
        pci_address: Some(bdf.into()),
        bound: true,
        driver: Some("vfio-pci".into()),
        ..Default::default()
    }
}

/// Polls the DPDKNodeState until `pred` holds.
async fn wait_state(
    api: &Api<DPDKNodeState>,
    name: &str,
    what: &str,
    pred: impl Fn(&DPDKNodeState) -> bool,
) -> DPDKNodeState {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let state = api.get(name).await.expect("get DPDKNodeState");
        if pred(&state) {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            state.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone(path: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + T;
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still exists",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn follows_the_nodes_dpdknodestate_and_reports_what_it_advertises() {
    let cp = shared();
    let admin = cp.client().await.expect("admin client");
    // The device plugin's ServiceAccount and RBAC, as deployed.
    let out = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(workspace_root().join("deploy/dpdk-operator.yaml"))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "applying deploy/dpdk-operator.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the node-scope policy: the plugin acts as its pod on `node` would.
    fixtures::install_node_policy(cp)
        .await
        .expect("node-scope policy enforced");
    let node = unique_name("dp-node");
    let sa = cp
        .node_service_account_client("dpdk-operator", "dpdk-device-plugin", &node)
        .await
        .expect("SA client");

    let api: Api<DPDKNodeState> = Api::all(admin.clone());
    // The controller's spec: index 2 → the seed's resource. The agent's status: its BDF.
    let state = DPDKNodeState::new(
        &node,
        DPDKNodeStateSpec {
            devices: vec![spec_device(2, SEED_RESOURCE)],
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &state)
        .await
        .expect("create DPDKNodeState");
    let agent_status = |devices: Vec<DeviceStatus>| serde_json::json!({ "status": DPDKNodeStateStatus { bound_devices: devices.len() as i32, devices, ..Default::default() } });
    api.patch_status(
        &node,
        &PatchParams::default(),
        &Patch::Merge(agent_status(vec![status_device(2, "0000:00:06.0")])),
    )
    .await
    .expect("agent status");

    let host = FakeHost::new();
    host.add_device("0000:00:06.0", Some(0), Group::Iommu(36));
    host.add_device("0000:00:07.0", Some(0), Group::NoIommu(1));
    host.bind_vfio("0000:00:06.0");
    host.bind_vfio("0000:00:07.0");
    let kubelet = TestKubelet::start(&host.plugin_dir);

    // The plugin as the binary wires it, with the ServiceAccount's client.
    let stop = CancellationToken::new();
    let (desired_tx, desired_rx) = watch::channel(DesiredState::default());
    let source = tokio::spawn(source::watch_node_state(
        sa.clone(),
        node.clone(),
        "intel.com".into(),
        desired_tx,
        stop.clone(),
    ));
    let reporter = NodeReporter {
        client: sa.clone(),
        node: node.clone(),
    };
    let plugin = tokio::spawn(device_plugin::run(
        host.config(),
        desired_rx,
        Metrics::new(),
        Some(reporter),
        stop.clone(),
    ));

    let reg = kubelet.next_registration(T).await;
    assert_eq!(
        (
            reg.request.resource_name.as_str(),
            reg.request.endpoint.as_str()
        ),
        (SEED_RESOURCE, SEED_SOCKET)
    );
    assert!(reg.dial_back.is_ok(), "{:?}", reg.dial_back);
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    let devices = wait_list(&mut stream, T, |d| {
        health_of(d, "0000:00:06.0") == Some("Healthy")
    })
    .await;
    assert_eq!(devices.len(), 1);

    // status.devicePlugin, written by the plugin's own field manager; the agent's fields stay.
    let s = wait_state(&api, &node, "status.devicePlugin", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.device_plugin.as_ref())
            .is_some_and(|dp| {
                dp.resources.len() == 1
                    && dp.resources[0].advertised == 1
                    && dp.resources[0].healthy == 1
                    && dp.last_registration_time.is_some()
            })
    })
    .await;
    let status = s.status.expect("status");
    assert_eq!(
        status
            .device_plugin
            .map(|d| d.resources[0].resource_name.clone())
            .as_deref(),
        Some(SEED_RESOURCE)
    );
    assert_eq!(
        status.devices.len(),
        1,
        "the agent's status.devices survive the plugin's apply"
    );
    assert!(
        s.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("dpdk-device-plugin"))
    );

    // A DPDKConfig adds a resource name (deviceIndex 3); the agent reports its BDF.
    api.patch(&node, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": { "devices": [spec_device(2, SEED_RESOURCE), spec_device(3, "intel_dpdk_3")] } })))
        .await
        .expect("spec patch");
    api.patch_status(
        &node,
        &PatchParams::default(),
        &Patch::Merge(agent_status(vec![
            status_device(2, "0000:00:06.0"),
            status_device(3, "0000:00:07.0"),
        ])),
    )
    .await
    .expect("agent status");
    let reg = kubelet.next_registration(T).await;
    assert_eq!(
        (
            reg.request.resource_name.as_str(),
            reg.request.endpoint.as_str()
        ),
        ("intel.com/intel_dpdk_3", "intel.com_intel_dpdk_3.sock")
    );
    let mut other = kubelet.plugin("intel.com_intel_dpdk_3.sock").await;
    let mut other_stream = list_and_watch(&mut other).await;
    wait_list(&mut other_stream, T, |d| {
        health_of(d, "0000:00:07.0") == Some("Healthy")
    })
    .await;
    wait_state(&api, &node, "two resources reported", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.device_plugin.as_ref())
            .is_some_and(|dp| dp.resources.len() == 2)
    })
    .await;

    // The config drops it again: its socket goes, the seed resource's stream stays open.
    api.patch(
        &node,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({ "spec": { "devices": [spec_device(2, SEED_RESOURCE)] } }),
        ),
    )
    .await
    .expect("spec patch");
    wait_gone(&host.plugin_dir.join("intel.com_intel_dpdk_3.sock")).await;
    assert_still_open(&mut stream, Duration::from_millis(300)).await;

    // The DPDKNodeState is deleted (teardown done): no resources left.
    api.delete(&node, &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&host.plugin_dir.join(SEED_SOCKET)).await;

    stop.cancel();
    tokio::time::timeout(T, plugin)
        .await
        .expect("plugin stops")
        .expect("join")
        .expect("plugin run");
    tokio::time::timeout(T, source)
        .await
        .expect("source stops")
        .expect("join");
}

/// The binary as the DaemonSet runs it (`device-plugin --node-name ... --sysfs-root ...`),
/// against the API server: it registers the node's resource, serves metrics, and on
/// SIGTERM stops cleanly and removes its socket.
#[tokio::test]
async fn the_binary_serves_its_node_and_stops_on_sigterm() {
    let cp = shared();
    let admin = cp.client().await.expect("admin client");
    let node = unique_name("dp-bin");
    let api: Api<DPDKNodeState> = Api::all(admin);
    let state = DPDKNodeState::new(
        &node,
        DPDKNodeStateSpec {
            devices: vec![spec_device(2, SEED_RESOURCE)],
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &state)
        .await
        .expect("create DPDKNodeState");
    let status = DPDKNodeStateStatus {
        devices: vec![status_device(2, "0000:00:06.0")],
        bound_devices: 1,
        ..Default::default()
    };
    api.patch_status(
        &node,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .expect("agent status");

    let host = FakeHost::new();
    host.add_device("0000:00:06.0", Some(0), Group::Iommu(36));
    host.bind_vfio("0000:00:06.0");
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = host.tmp.path().join("plugin.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dpdk-node-agent"))
        .arg("device-plugin")
        .arg(format!("--node-name={node}"))
        .arg("--plugin-dir")
        .arg(&host.plugin_dir)
        .arg("--sysfs-root")
        .arg(&host.sysfs)
        .arg("--dev-root")
        .arg(&host.dev)
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg("--log-format=json")
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(std::fs::File::create(log.with_extension("err")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dpdk-node-agent");

    let reg = match tokio::time::timeout(T, kubelet.next_registration(2 * T)).await {
        Ok(reg) => reg,
        Err(_) => panic!(
            "no registration; plugin log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    };
    assert_eq!(
        (
            reg.request.resource_name.as_str(),
            reg.request.endpoint.as_str()
        ),
        (SEED_RESOURCE, SEED_SOCKET)
    );
    assert!(reg.dial_back.is_ok(), "{:?}", reg.dial_back);
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| {
        health_of(d, "0000:00:06.0") == Some("Healthy")
    })
    .await;

    // --metrics-addr serves the plugin's metrics.
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let deadline = tokio::time::Instant::now() + T;
    let metrics = loop {
        match http_get(addr, "/metrics").await {
            Ok(r) if r.contains("dpdk_device_plugin_healthy_devices") => break r,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("no metrics on {addr}: {other:?}"),
        }
    };
    assert!(
        metrics.contains(
            r#"dpdk_device_plugin_healthy_devices{resource="intel.com/intel_sriov_netdevice_2"} 1"#
        ),
        "{metrics}"
    );

    // SIGTERM: exit 0, socket removed, the stream over.
    let pid = child.id().expect("pid") as i32;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout(T, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "exit status {exit}");
    assert!(
        !host.plugin_dir.join(SEED_SOCKET).exists(),
        "socket removed on shutdown"
    );
    let end = tokio::time::timeout(T, stream.message())
        .await
        .expect("stream ends");
    assert!(matches!(end, Ok(None) | Err(_)));
    api.delete(&node, &DeleteParams::default())
        .await
        .expect("delete");
}
