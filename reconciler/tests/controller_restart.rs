//! The API server restarts while the controller is converging a cluster: it finishes the
//! job when the server is back, and a change made just before the crash is not lost.

mod controller_common;

use std::time::Duration;

use controller_common::*;
use dpdk_bridge::api::{DPDKNodeState, NodeENI};
use dpdk_reconciler::controller::Options;
use dpdk_testenv::{ControlPlane, StartOptions, fixtures};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

const GROUP: &str = "dpdk-test/group";
const NODES: usize = 60;

async fn labelled(client: &kube::Client) -> usize {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels("dpdk.aws.k8s/enabled=true"))
        .await;
    nodes.map(|l| l.items.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_mid_convergence_loses_no_update() {
    let cp = ControlPlane::start(StartOptions {
        install_crds: true,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let admin = cp.client().await.expect("client");
    // One NodeENI per node, as when every node gets its own ENI definition.
    for i in 0..NODES {
        let (node, eni) = (format!("node-{i:03}"), format!("eni-{i:03}"));
        fixtures::create_nodeeni(
            &admin,
            &eni,
            &[("kubernetes.io/hostname", &node)],
            2,
            &["subnet-a"],
        )
        .await
        .expect("nodeeni");
        fixtures::upsert_attachment(
            &admin,
            &eni,
            fixtures::attachment(&node, 2, &format!("eni-{i:017x}")),
        )
        .await
        .expect("attachment");
        fixtures::create_node(
            &admin,
            &node,
            &[(GROUP, "g"), ("kubernetes.io/hostname", &node)],
            &format!("10.0.2.{i}"),
        )
        .await
        .expect("node");
    }
    fixtures::create_node(
        &admin,
        "node-late",
        &[("kubernetes.io/hostname", "node-late")],
        "10.0.3.1",
    )
    .await
    .expect("node");
    create_config(
        &admin,
        &config(
            "restart",
            "restart",
            &[(GROUP, "g")],
            &[(2, "intel.com/intel_sriov_netdevice_2")],
        ),
    )
    .await;

    // Slow writes (one at a time) leave a wide window to crash the API server in.
    let opts = Options {
        concurrency: 1,
        ..test_options("restart")
    };
    let ctrl = start(cp.client().await.expect("client"), opts);
    eventually(
        "convergence under way",
        Duration::from_secs(120),
        || async {
            let n = labelled(&admin).await;
            (n >= 5).then_some(n)
        },
    )
    .await;
    // A change right before the crash.
    set_node_labels(&admin, "node-late", json!({ GROUP: "g" })).await;
    let at_crash = labelled(&admin).await;
    assert!(
        at_crash < NODES,
        "converged before the crash ({at_crash}); the test needs a slower controller"
    );
    // Stopping waits for the process to exit; keep the controller's worker free meanwhile.
    tokio::task::block_in_place(|| cp.stop_apiserver());
    tokio::time::sleep(Duration::from_secs(3)).await;
    cp.start_apiserver().await.expect("API server restarts");

    eventually("every node labelled", Duration::from_secs(180), || async {
        (labelled(&admin).await == NODES + 1).then_some(())
    })
    .await;
    let c = wait_status(&admin, "restart", "all nodes counted", |s| {
        s.matched_nodes == NODES as i32 + 1
    })
    .await;
    assert_eq!(
        c.status.as_ref().map(|s| s.updated_node_enis.len()),
        Some(NODES)
    );
    let enis = Api::<NodeENI>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    let enabled = enis
        .iter()
        .filter(|e| e.spec.enable_dpdk == Some(true))
        .count();
    assert_eq!(enabled, NODES, "every NodeENI enabled");
    let states = Api::<DPDKNodeState>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(states.len(), NODES + 1);
    let late = states
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("node-late"))
        .expect("the late node's state");
    assert!(late.spec.devices.is_empty(), "no NodeENI selects node-late");
    for s in states
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("node-late"))
    {
        assert_eq!(s.spec.devices.len(), 1, "{:?}", s.metadata.name);
        assert!(s.spec.devices[0].eni_id.is_some());
    }
    assert!(
        ctrl.telemetry.metrics.reconcile_count("error") > 0,
        "some passes failed while the API server was down"
    );
    ctrl.stop().await;
}
