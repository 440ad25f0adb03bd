//! The drift endpoints on the real API server: node-layer findings with the Git file and
//! line of the DPDKConfig that asked for them, in `/drift` and `/drift.diff`; ignore rules
//! from the DPDKConfigSource; metrics; bad requests.

mod drift_support;

use dpdk_bridge::api::{DPDKNodeState, IgnoreRule};
use drift_support::{World, kubectl};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn wc_config(prefix: &str) -> String {
    format!(
        r#"# A pool that asks for write-combining.
apiVersion: networking.k8s.aws/v1alpha1
kind: DPDKConfig
metadata:
  name: {prefix}wc
spec:
  nodeSelector:
    ng: {prefix}wc
  driverOptions:
    writeCombining: true      # needs a WC-patched vfio-pci
  resourceMapping:
  - deviceIndex: 2
    resourceName: intel.com/intel_sriov_netdevice_2
    driver: vfio-pci
"#
    )
}

/// A DPDKNodeState as the controller writes its spec and the agent its status.
async fn node_state(w: &World, node: &str, status: Value) {
    let api: Api<DPDKNodeState> = Api::all(w.client.clone());
    let ns: DPDKNodeState = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.aws/v1alpha1",
        "kind": "DPDKNodeState",
        "metadata": {"name": node},
        "spec": {
            "driverOptions": {"enableUnsafeNoIOMMU": true, "writeCombining": true},
            "devices": [{"deviceIndex": 2, "nodeENI": format!("{}eni", w.prefix), "eniID": "eni-0abc", "resourceName": "intel.com/intel_sriov_netdevice_2", "driver": "vfio-pci"}],
            "configs": [format!("{}wc", w.prefix)],
        },
    }))
    .expect("node state json");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create DPDKNodeState");
    api.patch_status(
        node,
        &PatchParams::apply("dpdk-node-agent").force(),
        &Patch::Apply(json!({
            "apiVersion": "networking.k8s.aws/v1alpha1",
            "kind": "DPDKNodeState",
            "status": status,
        })),
    )
    .await
    .expect("write status");
}

#[tokio::test]
async fn node_layer_findings_name_the_git_line_that_asked() {
    let w = World::start(
        "drift-node",
        |p| vec![("wc.yaml".into(), wc_config(p))],
        Vec::new(),
    )
    .await;
    w.wait_applied_and_clean().await;
    let file = format!("{}/wc.yaml", w.path);
    let node = format!("{}n1", w.prefix);
    node_state(
        &w,
        &node,
        json!({
            "syncStatus": "Failed",
            "modules": {"vfio": true, "vfioPci": false, "noiommu": true, "writeCombining": {"state": "Unavailable", "reason": "mainline vfio-pci has no write-combining; load the WC-patched module"}},
            "devices": [{"deviceIndex": 2, "pciAddress": "0000:00:06.0", "interfaceName": "eth1", "driver": "ena", "originalDriver": "ena", "bound": false, "health": "Unhealthy", "message": "vfio-pci not loaded"}],
        }),
    )
    .await;

    let report = w
        .wait_report(
            |r| r["summary"]["byLayer"]["desired-node"] == 3,
            "three node-layer findings",
        )
        .await;
    let by_kind = |k: &str| {
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["kind"] == k)
            .cloned()
            .unwrap_or(Value::Null)
    };

    let dev = by_kind("deviceDriver");
    assert_eq!(
        (dev["layer"].as_str(), dev["node"].as_str()),
        (Some("desired-node"), Some(node.as_str()))
    );
    assert_eq!(
        (dev["git"].as_str(), dev["live"].as_str()),
        (Some("vfio-pci"), Some("ena")),
        "{dev}"
    );
    assert_eq!(
        (dev["file"].as_str(), dev["line"].as_u64()),
        (Some(file.as_str()), Some(14)),
        "the `driver: vfio-pci` line"
    );
    assert!(
        dev["message"]
            .as_str()
            .is_some_and(|m| m.contains("is on ena, not vfio-pci")),
        "{dev}"
    );

    let module = by_kind("moduleUnloaded");
    assert_eq!(module["fieldPath"], "/status/modules/vfioPci");
    assert_eq!(
        (module["file"].as_str(), module["line"].as_u64()),
        (Some(file.as_str()), Some(14))
    );

    let wc = by_kind("writeCombining");
    assert_eq!(
        (wc["git"].as_str(), wc["live"].as_str()),
        (Some("Enabled"), Some("Unavailable"))
    );
    assert_eq!(
        (wc["file"].as_str(), wc["line"].as_u64()),
        (Some(file.as_str()), Some(10)),
        "the `writeCombining: true` line"
    );
    assert!(
        wc["message"]
            .as_str()
            .is_some_and(|m| m.contains("WC-patched")),
        "the agent's reason is kept: {wc}"
    );
    for f in report["findings"].as_array().expect("findings") {
        assert!(f["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{f}");
    }

    let (status, headers, diff) = w.get("/drift.diff").await;
    assert_eq!(status, 200);
    assert!(
        headers
            .get("content-type")
            .is_some_and(|c| c.starts_with("text/x-diff"))
    );
    assert!(
        diff.contains(&format!("--- node/{node}/spec\n+++ node/{node}/status\n")),
        "node-layer headers name the node:\n{diff}"
    );
    assert!(
        diff.contains(&format!(
            "-/status/devices/0/driver: vfio-pci  # {file}:14\n"
        )),
        "{diff}"
    );
    assert!(diff.contains("+/status/devices/0/driver: ena\n"), "{diff}");
    assert!(
        diff.contains(&format!(
            "-/status/modules/writeCombining/state: Enabled  # {file}:10\n"
        )),
        "{diff}"
    );

    let (_, _, metrics) = w.get("/metrics").await;
    for kind in ["deviceDriver", "moduleUnloaded", "writeCombining"] {
        let line = format!("dpdk_drift_findings{{layer=\"desired-node\",kind=\"{kind}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("dpdk_drift_findings{layer=\"git-cluster\",kind=\"modified\"} 0"),
        "{metrics}"
    );

    // The agent catches up: the findings go away.
    let api: Api<DPDKNodeState> = Api::all(w.client.clone());
    api.patch_status(&node, &PatchParams::apply("dpdk-node-agent").force(), &Patch::Apply(json!({
        "apiVersion": "networking.k8s.aws/v1alpha1",
        "kind": "DPDKNodeState",
        "status": {
            "syncStatus": "Succeeded",
            "modules": {"vfio": true, "vfioPci": true, "noiommu": true, "writeCombining": {"state": "Enabled"}},
            "devices": [{"deviceIndex": 2, "pciAddress": "0000:00:06.0", "driver": "vfio-pci", "originalDriver": "ena", "bound": true, "health": "Healthy"}],
        },
    })))
    .await
    .expect("status");
    w.wait_report(
        |r| r["summary"]["total"] == 0,
        "no drift once the node converged",
    )
    .await;
    let _ = api.delete(&node, &Default::default()).await;
    w.stop().await;
}

#[tokio::test]
async fn an_ignore_rule_on_the_source_suppresses_its_finding() {
    let ignore = vec![IgnoreRule {
        kind: Some("DPDKConfig".into()),
        name: None,
        json_pointers: vec!["/spec/nodeSelector".into()],
    }];
    let w = World::start(
        "drift-ign",
        |p| vec![("wc.yaml".into(), wc_config(p))],
        ignore,
    )
    .await;
    w.wait_applied_and_clean().await;
    let name = format!("{}wc", w.prefix);
    kubectl(
        &w,
        &[
            "patch",
            "dpdkconfig",
            &name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"nodeSelector":{"zone":"us-east-1a"}}}"#,
        ],
    );
    let r = w
        .wait_report(
            |r| r["summary"]["ignored"] == 1,
            "the nodeSelector change is ignored",
        )
        .await;
    assert_eq!(r["summary"]["total"], 0, "{r}");
    let (_, _, patch) = w
        .get(&format!("/drift.patch?source={}", w.source_param()))
        .await;
    assert_eq!(patch, "", "an ignored field is not in the patch either");

    // A field the rule does not cover is still reported.
    kubectl(
        &w,
        &[
            "patch",
            "dpdkconfig",
            &name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"driverOptions":{"writeCombining":false}}}"#,
        ],
    );
    let r = w
        .wait_report(
            |r| r["summary"]["total"] == 1,
            "the writeCombining change is reported",
        )
        .await;
    assert_eq!(
        r["findings"][0]["fieldPath"],
        "/spec/driverOptions/writeCombining"
    );
    assert_eq!(r["summary"]["ignored"], 1);
    w.stop().await;
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let w = World::start(
        "drift-bad",
        |p| vec![("wc.yaml".into(), wc_config(p))],
        Vec::new(),
    )
    .await;
    w.wait_applied_and_clean().await;
    let (status, _, body) = w.get("/drift.patch?source=no-slash").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<namespace>/<name>"), "{body}");
    let (status, _, body) = w.get("/drift.patch?source=nowhere%2Fnothing").await;
    assert_eq!(status, 404, "{body}");
    // One source in scope: the parameter may be left out.
    let (status, _, body) = w.get("/drift.patch").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, headers, body) = w.get("/drift").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        headers.get("x-drift-generated-at").map(String::as_str),
        v["generatedAt"].as_str()
    );
    w.stop().await;
}
