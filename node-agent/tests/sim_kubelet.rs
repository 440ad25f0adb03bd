//! The simulated kubelet (the demo's) with the real device plugin on a simulated node: the
//! plugin registers, the kubelet follows its ListAndWatch, and sees binds as they happen.

use std::path::Path;
use std::time::Duration;

use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::device_plugin::{self, Config, DesiredState, Metrics, OfferedDevice};
use dpdk_node_agent::kernel::Kernel;
use dpdk_node_agent::modules::ModuleConfig;
use dpdk_node_agent::sim::kubelet::{Devices, SimKubelet, capacity_patch};
use dpdk_node_agent::sim::{SimNic, SimNode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const RESOURCE: &str = "intel.com/intel_sriov_netdevice_2";
const BDF: &str = "0000:00:06.0";

/// The kernel's driver_override → unbind → drivers_probe sequence.
fn rebind(node: &SimNode, from: &str, to: &str) {
    let k = &node.kernel;
    let attr = format!("bus/pci/devices/{BDF}/driver_override");
    k.write_attr(Path::new(&attr), to).expect("driver_override");
    k.write_attr(Path::new(&format!("bus/pci/drivers/{from}/unbind")), BDF)
        .expect("unbind");
    k.write_attr(Path::new("bus/pci/drivers_probe"), BDF)
        .expect("drivers_probe");
    assert_eq!(node.driver_of(BDF).as_deref(), Some(to));
}

async fn wait_for(
    devices: &mut watch::Receiver<Devices>,
    what: &str,
    pred: impl Fn(&Devices) -> bool,
) -> Devices {
    tokio::time::timeout(Duration::from_secs(10), devices.wait_for(|d| pred(d)))
        .await
        .unwrap_or_else(|_| panic!("the kubelet did not see {what} within 10s"))
        .expect("kubelet alive")
        .clone()
}

#[tokio::test]
async fn plugin_registers_and_the_kubelet_sees_its_devices() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = SimNode::create(tmp.path().join("node"), &[SimNic::ena(6)], true).expect("node");
    let cfg = ModuleConfig {
        driver: DpdkDriver::VfioPci,
        noiommu: false,
        write_combining: false,
    };
    node.load_modules(&cfg).expect("vfio-pci loads");
    rebind(&node, "ena", "vfio-pci");

    let plugin_dir = tmp.path().join("device-plugins");
    let kubelet = SimKubelet::start(&plugin_dir, None).expect("kubelet");
    let mut devices = kubelet.devices();

    let mut desired = DesiredState::default();
    desired.add_resource(RESOURCE);
    desired.add(
        RESOURCE,
        OfferedDevice {
            pci_address: BDF.to_string(),
            driver: DpdkDriver::VfioPci,
        },
    );
    let (_desired_tx, desired_rx) = watch::channel(desired);
    let stop = CancellationToken::new();
    let plugin = tokio::spawn(device_plugin::run(
        Config::new(&plugin_dir, &node.sys, &node.dev),
        desired_rx,
        Metrics::new(),
        None,
        stop.clone(),
    ));

    let healthy = |d: &Devices| {
        d.get(RESOURCE)
            .is_some_and(|l| l.len() == 1 && l[0].id == BDF && l[0].health == "Healthy")
    };
    let seen = wait_for(&mut devices, "the bound device as Healthy", healthy).await;
    let patch = capacity_patch(&seen);
    assert_eq!(patch["status"]["capacity"][RESOURCE], "1", "{patch}");
    assert_eq!(patch["status"]["allocatable"][RESOURCE], "1", "{patch}");

    // Back to the kernel driver: the kubelet hears it over the open stream.
    rebind(&node, "vfio-pci", "ena");
    let seen = wait_for(&mut devices, "the device turn Unhealthy", |d| {
        d.get(RESOURCE)
            .is_some_and(|l| l.len() == 1 && l[0].health == "Unhealthy")
    })
    .await;
    let patch = capacity_patch(&seen);
    assert_eq!(patch["status"]["capacity"][RESOURCE], "1", "{patch}");
    assert_eq!(patch["status"]["allocatable"][RESOURCE], "0", "{patch}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), plugin)
        .await
        .expect("plugin stops")
        .expect("plugin task")
        .expect("plugin run");
    kubelet.shutdown().await.expect("kubelet stops");
    assert!(!plugin_dir.join("kubelet.sock").exists());
}

#[tokio::test]
async fn refuses_what_the_kubelet_refuses() {
    use dpdk_node_agent::device_plugin::api::unix_channel;
    use dpdk_node_agent::device_plugin::api::v1beta1::RegisterRequest;
    use dpdk_node_agent::device_plugin::api::v1beta1::registration_client::RegistrationClient;

    let tmp = tempfile::tempdir().expect("tempdir");
    let kubelet = SimKubelet::start(tmp.path(), None).expect("kubelet");
    let channel = unix_channel(&tmp.path().join("kubelet.sock"))
        .await
        .expect("dial kubelet");
    let mut client = RegistrationClient::new(channel);
    for (version, resource, endpoint) in [
        ("v1alpha1", RESOURCE, "p.sock"),
        ("v1beta1", "no-domain", "p.sock"),
        ("v1beta1", RESOURCE, "../p.sock"),
    ] {
        let err = client
            .register(RegisterRequest {
                version: version.into(),
                endpoint: endpoint.into(),
                resource_name: resource.into(),
                options: None,
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
    assert!(kubelet.devices().borrow().is_empty());
    kubelet.shutdown().await.expect("kubelet stops");
}
