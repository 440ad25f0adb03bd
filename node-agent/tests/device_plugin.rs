//! The device plugin against a test-side kubelet over real Unix sockets, on a fake
//! sysfs and /dev in a tempdir. The kubelet's rules are asserted: the plugin serves
//! before Register arrives, RegisterRequest is exact, it re-registers after the kubelet
//! wipes the socket dir, and ListAndWatch never ends while the plugin runs.
//! Timeouts are generous (the machine is shared); speed is measured in the bench.

mod device_plugin_support;

use std::time::Duration;

use device_plugin_support::*;
use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::device_plugin::OfferedDevice;
use dpdk_node_agent::device_plugin::api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest,
    DevicePluginOptions, DeviceSpec, PreferredAllocationRequest, RegisterRequest,
};

const T: Duration = Duration::from_secs(10);
const BDF: &str = "0000:00:06.0";

fn expected_request(resource: &str, endpoint: &str) -> RegisterRequest {
    RegisterRequest {
        version: "v1beta1".into(),
        endpoint: endpoint.into(),
        resource_name: resource.into(),
        options: Some(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }),
    }
}

fn spec(host: &str, container: &str) -> DeviceSpec {
    DeviceSpec {
        host_path: host.into(),
        container_path: container.into(),
        permissions: "rw".into(),
    }
}

fn allocate_one(ids: &[&str]) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    }
}

#[tokio::test]
async fn registers_after_serving_with_the_exact_request() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(0), Group::Iommu(36));
    host.bind_vfio(BDF);
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));

    let reg = kubelet.next_registration(T).await;
    assert_eq!(reg.request, expected_request(SEED_RESOURCE, SEED_SOCKET));
    let options = reg
        .dial_back
        .expect("the plugin must be serving when Register arrives");
    assert!(options.get_preferred_allocation_available && !options.pre_start_required);
    assert!(
        host.plugin_dir.join(SEED_SOCKET).exists(),
        "socket is <dir>/<prefix>_<name>.sock"
    );

    plugin.shutdown().await;
    assert!(
        !host.plugin_dir.join(SEED_SOCKET).exists(),
        "socket removed on shutdown"
    );
}

#[tokio::test]
async fn registers_once_the_kubelet_comes_up_later() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(0), Group::Iommu(36));
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));
    // Serving with no kubelet around: the socket exists and answers.
    let sock = host.plugin_dir.join(SEED_SOCKET);
    let deadline = tokio::time::Instant::now() + T;
    while !sock.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "plugin socket never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let kubelet = TestKubelet::start(&host.plugin_dir);
    let reg = kubelet.next_registration(T).await;
    assert_eq!(reg.request, expected_request(SEED_RESOURCE, SEED_SOCKET));
    assert!(reg.dial_back.is_ok(), "{:?}", reg.dial_back);
    plugin.shutdown().await;
}

#[tokio::test]
async fn list_and_watch_follows_binding_and_vfio_node_without_ending() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(1), Group::Iommu(36));
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));
    kubelet
        .next_registration(T)
        .await
        .dial_back
        .expect("serving");
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;

    // Still on ena: advertised, Unhealthy; the ID is the BDF, topology the NUMA node.
    let first = next_list(&mut stream, T).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].id.as_str(), first[0].health.as_str()),
        (BDF, "Unhealthy")
    );
    assert_eq!(
        first[0]
            .topology
            .as_ref()
            .map(|t| t.nodes.iter().map(|n| n.id).collect::<Vec<_>>()),
        Some(vec![1])
    );

    // Bound to vfio-pci with its group node: an update arrives, Healthy.
    host.bind_vfio(BDF);
    wait_list(&mut stream, T, |d| health_of(d, BDF) == Some("Healthy")).await;

    // The /dev/vfio node disappears: Unhealthy, on the same stream.
    host.remove_vfio_node(BDF);
    wait_list(&mut stream, T, |d| health_of(d, BDF) == Some("Unhealthy")).await;
    host.restore_vfio_node(BDF);
    wait_list(&mut stream, T, |d| health_of(d, BDF) == Some("Healthy")).await;

    // Unbound back to the kernel driver: Unhealthy again.
    host.unbind_to_ena(BDF);
    wait_list(&mut stream, T, |d| health_of(d, BDF) == Some("Unhealthy")).await;

    // A new device for the resource: the list grows, no restart.
    host.add_device("0000:00:07.0", Some(1), Group::Iommu(37));
    host.bind_vfio("0000:00:07.0");
    plugin.desired.send_modify(|d| {
        d.add(
            SEED_RESOURCE,
            OfferedDevice {
                pci_address: "0000:00:07.0".into(),
                driver: DpdkDriver::VfioPci,
            },
        );
    });
    wait_list(&mut stream, T, |d| {
        d.len() == 2 && health_of(d, "0000:00:07.0") == Some("Healthy")
    })
    .await;

    // Nothing changes: the stream stays open and quiet.
    assert_still_open(&mut stream, Duration::from_millis(500)).await;
    // It ends on shutdown only.
    plugin.shutdown().await;
    let end = tokio::time::timeout(T, stream.message())
        .await
        .expect("stream ends after shutdown");
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "after shutdown the stream is over: {end:?}"
    );
}

#[tokio::test]
async fn resources_come_and_go_with_the_desired_state() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(0), Group::Iommu(36));
    host.bind_vfio(BDF);
    host.add_device("0000:00:08.0", Some(0), Group::Iommu(38));
    host.bind_vfio("0000:00:08.0");
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    next_list(&mut stream, T).await;

    // A DPDKConfig adds a second resource name: it is served and registered.
    let other = "amazon.com/ena_dpdk_3";
    plugin.desired.send_modify(|d| {
        d.add(
            other,
            OfferedDevice {
                pci_address: "0000:00:08.0".into(),
                driver: DpdkDriver::VfioPci,
            },
        );
    });
    let reg = kubelet.next_registration(T).await;
    assert_eq!(
        reg.request,
        expected_request(other, "amazon.com_ena_dpdk_3.sock")
    );
    assert!(reg.dial_back.is_ok());
    let mut other_client = kubelet.plugin("amazon.com_ena_dpdk_3.sock").await;
    let mut other_stream = list_and_watch(&mut other_client).await;
    assert_eq!(
        health_of(&next_list(&mut other_stream, T).await, "0000:00:08.0"),
        Some("Healthy")
    );

    // And it goes away: socket removed, its stream ends; the first resource is untouched.
    plugin.desired.send_modify(|d| {
        d.resources.remove(other);
    });
    let end = tokio::time::timeout(T, other_stream.message())
        .await
        .expect("removed resource's stream ends");
    assert!(matches!(end, Ok(None) | Err(_)));
    assert!(!host.plugin_dir.join("amazon.com_ena_dpdk_3.sock").exists());
    assert_still_open(&mut stream, Duration::from_millis(300)).await;
    plugin.shutdown().await;
}

#[tokio::test]
async fn kubelet_restart_wipes_sockets_and_the_plugin_registers_again() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(0), Group::Iommu(36));
    host.bind_vfio(BDF);
    let mut kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));
    kubelet.next_registration(T).await;

    // The kubelet restarts: every socket deleted, a new kubelet.sock.
    kubelet.restart().await;
    let reg = kubelet.next_registration(T).await;
    assert_eq!(reg.request, expected_request(SEED_RESOURCE, SEED_SOCKET));
    assert!(
        reg.dial_back.is_ok(),
        "re-registered before serving again: {:?}",
        reg.dial_back
    );
    assert!(
        host.plugin_dir.join(SEED_SOCKET).exists(),
        "socket recreated"
    );
    // The new kubelet gets a working plugin: devices and Allocate.
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    assert_eq!(
        health_of(&next_list(&mut stream, T).await, BDF),
        Some("Healthy")
    );
    client
        .allocate(allocate_one(&[BDF]))
        .await
        .expect("allocate after restart");

    // Only kubelet.sock recreated (plugin sockets left alone): register again too.
    kubelet.recreate_socket().await;
    let reg = kubelet.next_registration(T).await;
    assert_eq!(reg.request, expected_request(SEED_RESOURCE, SEED_SOCKET));
    assert!(reg.dial_back.is_ok());
    plugin.shutdown().await;
}

#[tokio::test]
async fn allocate_vfio_with_an_iommu_group_and_with_noiommu() {
    let host = FakeHost::new();
    host.add_device("0000:00:06.0", Some(0), Group::Iommu(36));
    host.add_device("0000:00:07.0", Some(0), Group::NoIommu(2));
    host.bind_vfio("0000:00:06.0");
    host.bind_vfio("0000:00:07.0");
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(
        host.config(),
        desired(SEED_RESOURCE, &["0000:00:06.0", "0000:00:07.0"]),
    );
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| {
        d.iter().filter(|x| x.health == "Healthy").count() == 2
    })
    .await;

    // IOMMU group 36: /dev/vfio/vfio + /dev/vfio/36, read-write, same path inside.
    let r = client
        .allocate(allocate_one(&["0000:00:06.0"]))
        .await
        .expect("allocate")
        .into_inner();
    assert_eq!(r.container_responses.len(), 1);
    let c = &r.container_responses[0];
    assert_eq!(
        c.devices,
        vec![
            spec("/dev/vfio/vfio", "/dev/vfio/vfio"),
            spec("/dev/vfio/36", "/dev/vfio/36")
        ]
    );
    assert_eq!(
        c.envs
            .get("PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2")
            .map(String::as_str),
        Some("0000:00:06.0")
    );
    assert_eq!(
        c.envs
            .get("PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2_INFO")
            .map(String::as_str),
        Some(
            r#"{"0000:00:06.0":{"generic":{"deviceID":"0000:00:06.0"},"vfio":{"dev-mount":"/dev/vfio/36","mount":"/dev/vfio/vfio"}}}"#
        )
    );

    // noiommu group 2: host /dev/vfio/noiommu-2, container /dev/vfio/2.
    let r = client
        .allocate(allocate_one(&["0000:00:07.0"]))
        .await
        .expect("allocate")
        .into_inner();
    let c = &r.container_responses[0];
    assert_eq!(
        c.devices,
        vec![
            spec("/dev/vfio/vfio", "/dev/vfio/vfio"),
            spec("/dev/vfio/noiommu-2", "/dev/vfio/2")
        ]
    );
    let info: serde_json::Value =
        serde_json::from_str(&c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2_INFO"])
            .expect("json");
    assert_eq!(info["0000:00:07.0"]["vfio"]["dev-mount"], "/dev/vfio/2");

    // Both in one container: comma-separated, each group once.
    let r = client
        .allocate(allocate_one(&["0000:00:06.0", "0000:00:07.0"]))
        .await
        .expect("allocate")
        .into_inner();
    let c = &r.container_responses[0];
    assert_eq!(
        c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2"],
        "0000:00:06.0,0000:00:07.0"
    );
    assert_eq!(c.devices.len(), 3);
    plugin.shutdown().await;
}

#[tokio::test]
async fn allocate_refuses_unknown_and_unhealthy_ids_by_name() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(0), Group::Iommu(36));
    host.bind_vfio(BDF);
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| health_of(d, BDF) == Some("Healthy")).await;

    let err = client
        .allocate(allocate_one(&["0000:00:1f.0"]))
        .await
        .expect_err("unknown ID");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("0000:00:1f.0"), "{}", err.message());

    // Unbound between the last poll and Allocate: Allocate reads sysfs again.
    host.unbind_to_ena(BDF);
    let err = client
        .allocate(allocate_one(&[BDF]))
        .await
        .expect_err("unhealthy ID");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains(BDF) && err.message().contains("ena"),
        "{}",
        err.message()
    );

    let text = plugin.metrics.encode();
    assert!(text.contains(r#"dpdk_device_plugin_allocations_total{resource="intel.com/intel_sriov_netdevice_2",outcome="Unknown"} 1"#), "{text}");
    assert!(text.contains(r#"dpdk_device_plugin_allocations_total{resource="intel.com/intel_sriov_netdevice_2",outcome="Unhealthy"} 1"#), "{text}");
    plugin.shutdown().await;
}

#[tokio::test]
async fn preferred_allocation_keeps_a_pod_on_one_numa_node() {
    let host = FakeHost::new();
    let devs = [
        ("0000:00:06.0", 0),
        ("0000:00:07.0", 1),
        ("0000:00:08.0", 0),
        ("0000:00:09.0", 1),
        ("0000:00:0a.0", 1),
    ];
    for (i, (bdf, numa)) in devs.iter().enumerate() {
        host.add_device(bdf, Some(*numa), Group::Iommu(40 + i as u32));
        host.bind_vfio(bdf);
    }
    let ids: Vec<&str> = devs.iter().map(|(b, _)| *b).collect();
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &ids));
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| d.len() == 5).await;

    let ask = |must: &[&str], size: i32| PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: ids.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: size,
        }],
    };
    let pick = |r: tonic::Response<
        dpdk_node_agent::device_plugin::api::v1beta1::PreferredAllocationResponse,
    >| {
        r.into_inner()
            .container_responses
            .into_iter()
            .next()
            .map(|c| c.device_i_ds)
            .unwrap_or_default()
    };
    // Two devices: node 0 has exactly two.
    assert_eq!(
        pick(
            client
                .get_preferred_allocation(ask(&[], 2))
                .await
                .expect("pref")
        ),
        vec!["0000:00:06.0", "0000:00:08.0"]
    );
    // Three: only node 1 fits.
    assert_eq!(
        pick(
            client
                .get_preferred_allocation(ask(&[], 3))
                .await
                .expect("pref")
        ),
        vec!["0000:00:07.0", "0000:00:09.0", "0000:00:0a.0"]
    );
    // must_include on node 1 pulls the rest there.
    assert_eq!(
        pick(
            client
                .get_preferred_allocation(ask(&["0000:00:09.0"], 2))
                .await
                .expect("pref")
        ),
        vec!["0000:00:09.0", "0000:00:07.0"]
    );
    plugin.shutdown().await;
}

/// The seed's pod (examples-repo/workloads/dpdk-app.yaml) asks for
/// `intel.com/intel_sriov_netdevice_2: 1`. The test kubelet does for it what the kubelet
/// does: check capacity from ListAndWatch, GetPreferredAllocation, Allocate, and hand the
/// response to the runtime (here: checked).
#[tokio::test]
async fn the_seed_pod_gets_its_device_end_to_end() {
    let pod_yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples-repo/workloads/dpdk-app.yaml"
    ))
    .expect("seed pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&pod_yaml).expect("pod yaml");
    let pod_spec = pod.spec.expect("pod spec");
    let limits = pod_spec.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    let (resource, quantity) = limits.iter().next().expect("one extended resource");
    let wanted: usize = quantity.0.parse().expect("integer quantity");
    assert_eq!(
        (resource.as_str(), wanted),
        (SEED_RESOURCE, 1),
        "the seed pod's request"
    );

    let host = FakeHost::new();
    host.add_device("0000:00:06.0", Some(0), Group::NoIommu(0));
    host.add_device("0000:00:07.0", Some(0), Group::NoIommu(1));
    host.bind_vfio("0000:00:06.0");
    host.bind_vfio("0000:00:07.0");
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(
        host.config(),
        desired(resource, &["0000:00:06.0", "0000:00:07.0"]),
    );

    // Registration → the kubelet opens ListAndWatch on the endpoint it was given.
    let reg = kubelet.next_registration(T).await;
    assert_eq!(reg.request.resource_name, *resource);
    let mut client = kubelet.plugin(&reg.request.endpoint).await;
    let mut stream = list_and_watch(&mut client).await;
    let devices = wait_list(&mut stream, T, |d| {
        d.iter().filter(|x| x.health == "Healthy").count() >= wanted
    })
    .await;
    let available: Vec<String> = devices
        .iter()
        .filter(|d| d.health == "Healthy")
        .map(|d| d.id.clone())
        .collect();

    // Admission: preferred allocation (advertised in the options), then Allocate.
    assert!(
        reg.dial_back
            .expect("serving")
            .get_preferred_allocation_available
    );
    let preferred = client
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: available.clone(),
                must_include_device_i_ds: vec![],
                allocation_size: wanted as i32,
            }],
        })
        .await
        .expect("GetPreferredAllocation")
        .into_inner();
    let chosen = preferred.container_responses[0].device_i_ds.clone();
    assert_eq!(chosen.len(), wanted);
    assert!(chosen.iter().all(|id| available.contains(id)));

    let response = client
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: chosen.clone(),
            }],
        })
        .await
        .expect("Allocate")
        .into_inner();
    // What the runtime gets for container dpdk-app.
    assert_eq!(response.container_responses.len(), 1);
    let c = &response.container_responses[0];
    let group = if chosen[0] == "0000:00:06.0" { 0 } else { 1 };
    assert_eq!(
        c.devices,
        vec![
            spec("/dev/vfio/vfio", "/dev/vfio/vfio"),
            spec(
                &format!("/dev/vfio/noiommu-{group}"),
                &format!("/dev/vfio/{group}")
            )
        ]
    );
    assert_eq!(
        c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2"],
        chosen[0]
    );
    let info: serde_json::Value =
        serde_json::from_str(&c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2_INFO"])
            .expect("INFO json");
    assert_eq!(info[&chosen[0]]["generic"]["deviceID"], chosen[0].as_str());
    assert_eq!(info[&chosen[0]]["vfio"]["mount"], "/dev/vfio/vfio");

    let text = plugin.metrics.encode();
    for line in [
        r#"dpdk_device_plugin_advertised_devices{resource="intel.com/intel_sriov_netdevice_2"} 2"#,
        r#"dpdk_device_plugin_healthy_devices{resource="intel.com/intel_sriov_netdevice_2"} 2"#,
        r#"dpdk_device_plugin_allocations_total{resource="intel.com/intel_sriov_netdevice_2",outcome="Ok"} 1"#,
        r#"dpdk_device_plugin_registrations_total{resource="intel.com/intel_sriov_netdevice_2"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    plugin.shutdown().await;
}

/// `--metrics-addr`: the text exposition over HTTP, with the per-resource gauges.
#[tokio::test]
async fn metrics_are_served_over_http() {
    let host = FakeHost::new();
    host.add_device(BDF, Some(0), Group::Iommu(36));
    host.bind_vfio(BDF);
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF]));
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| health_of(d, BDF) == Some("Healthy")).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(plugin.metrics.clone().serve_on(listener, stop.clone()));
    let response = http_get(addr, "/metrics").await.expect("GET /metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for line in [
        r#"dpdk_device_plugin_advertised_devices{resource="intel.com/intel_sriov_netdevice_2"} 1"#,
        r#"dpdk_device_plugin_healthy_devices{resource="intel.com/intel_sriov_netdevice_2"} 1"#,
        r#"dpdk_device_plugin_registrations_total{resource="intel.com/intel_sriov_netdevice_2"} 1"#,
    ] {
        assert!(response.contains(line), "missing {line} in\n{response}");
    }
    stop.cancel();
    server.await.expect("join").expect("metrics server");
    plugin.shutdown().await;
}
