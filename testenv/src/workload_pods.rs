//! The demo's stand-in for the DaemonSet controller and the kubelet's pod status.
//!
//! The local control plane runs no controller-manager, scheduler or kubelet, so the
//! DaemonSets from `deploy/` would have no pods. In the demo each simulated node's agent and
//! device plugin really run (as `dpdk-node-agent simulate` processes); this module records
//! them as the pods a cluster would show: one per DaemonSet and matching node, owned by the
//! DaemonSet, bound to the node, and Running with the template's containers. The
//! DaemonSet's status counts them. So the seed's `kubectl get pods -n dpdk-operator` lists
//! them. Every pod carries [`SIMULATED_ANNOTATION`]: nothing here runs a container, and
//! `kubectl logs` cannot reach them (the processes' logs are files; the demo prints where).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::{Error, Result};

/// Marks the pod objects this module writes.
pub const SIMULATED_ANNOTATION: &str = "dpdk.aws.k8s/simulated";
const FIELD_MANAGER: &str = "dpdk-demo-simulated-kubelet";

/// Records a Running pod for every node each DaemonSet of `namespace` selects (nodeSelector
/// only: that is all `deploy/` uses), and sets the DaemonSets' status. Idempotent: a node
/// that already has its pod is left alone. Returns the pod names.
pub async fn record(client: &Client, namespace: &str) -> Result<Vec<String>> {
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for ds in daemonsets.list(&ListParams::default()).await?.items {
        let ds_name = ds.name_any();
        let template = ds.spec.template.clone();
        let selector = template
            .spec
            .as_ref()
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default();
        let selected = nodes
            .list(&ListParams::default().labels(&label_selector(&selector)))
            .await?
            .items;
        let existing: BTreeMap<String, String> = pods
            .list(
                &ListParams::default().labels(&label_selector(
                    &template
                        .metadata
                        .clone()
                        .unwrap_or_default()
                        .labels
                        .unwrap_or_default(),
                )),
            )
            .await?
            .items
            .into_iter()
            .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p.name_any())))
            .collect();
        let mut ready = 0;
        for node in &selected {
            let node_name = node.name_any();
            let pod_name = match existing.get(&node_name) {
                Some(name) => name.clone(),
                None => create_pod(&pods, &ds, &template, &node_name).await?,
            };
            set_running(&pods, &pod_name, node, &template).await?;
            names.push(pod_name);
            ready += 1;
        }
        let status = json!({"status": {
            "currentNumberScheduled": ready, "desiredNumberScheduled": ready, "numberMisscheduled": 0,
            "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": ready,
            "observedGeneration": ds.metadata.generation,
        }});
        daemonsets
            .patch_status(&ds_name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(names)
}

fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn create_pod(
    pods: &Api<Pod>,
    ds: &DaemonSet,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    node: &str,
) -> Result<String> {
    let ds_name = ds.name_any();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone().ok_or_else(|| {
        Error::Other(format!("DaemonSet {ds_name}: the pod template has no spec"))
    })?;
    spec.node_name = Some(node.to_string());
    let pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{ds_name}-")),
            labels: meta.labels,
            annotations: Some(BTreeMap::from([(
                SIMULATED_ANNOTATION.to_string(),
                "the demo's dpdk-node-agent simulate process runs this pod's work; no container runs".to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name: ds_name.clone(),
                uid: ds.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    let created = pods.create(&PostParams::default(), &pod).await?;
    Ok(created.name_any())
}

/// What a kubelet reports for a started pod: init containers completed, containers running
/// and ready.
async fn set_running(
    pods: &Api<Pod>,
    name: &str,
    node: &Node,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let host_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .unwrap_or_default();
    let spec = template.spec.clone().unwrap_or_default();
    let status = |c: &k8s_openapi::api::core::v1::Container, state: Value, ready: bool| json!({"name": c.name, "image": c.image, "imageID": "", "ready": ready, "started": ready, "restartCount": 0, "state": state});
    let init: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| status(c, json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}), true))
        .collect();
    let main: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| status(c, json!({"running": {"startedAt": now}}), true))
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let body = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "hostIP": host_ip, "podIP": host_ip,
            "startTime": now,
            "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
            "initContainerStatuses": init,
            "containerStatuses": main,
        }
    });
    pods.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}
