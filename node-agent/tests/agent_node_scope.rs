//! The node agent and the device plugin act for their own node only
//! (deploy/dpdk-node-policy.yaml on top of the RBAC of deploy/dpdk-operator.yaml), on a real
//! kube-apiserver, with real ServiceAccount tokens: a TokenRequest bound to a Pod on node A
//! (`spec.nodeName: A`) carries the user extra `authentication.kubernetes.io/node-name: A`,
//! and the requests go out with that bearer token alone.
//! - the agent's token writes A's ready label, A's DPDKNodeState status and A's NodeENI
//!   attachment, through the agent's own reporting functions;
//! - the same token is refused for node B, for any other label, annotation or taint on A,
//!   for B's attachment, for the Multi-ENI Controller's members of A's attachment, and for
//!   the device plugin's part of A's status;
//! - the device plugin's token writes `status.devicePlugin` of A only;
//! - a token of either ServiceAccount that is not bound to a pod on a node is refused;
//! - under RBAC, the policies also refuse what the ClusterRoles do not grant.

use dpdk_bridge::api::{
    AdvertisedResource, DPDKNodeState, DPDKNodeStateSpec, DevicePluginStatus, NodeENI,
};
use dpdk_bridge::labels::NODE_READY_LABEL;
use dpdk_node_agent::device_plugin::report::NodeReporter;
use dpdk_node_agent::report::{self, AttachmentFields, SyncOutcome};
use dpdk_testenv::control_plane::{NODE_NAME_EXTRA, workspace_root};
use dpdk_testenv::{ControlPlane, fixtures, shared, unique_name};
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec,
};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NAMESPACE: &str = "dpdk-operator";
const AGENT: &str = "dpdk-node-agent";
const DEVICE_PLUGIN: &str = "dpdk-device-plugin";

/// The RBAC and the node-scope policy, enforced.
async fn install(cp: &ControlPlane) {
    cp.kubectl_apply_once(&workspace_root().join("deploy/dpdk-operator.yaml"))
        .expect("RBAC applies");
    fixtures::install_node_policy(cp)
        .await
        .expect("node-scope policy enforced");
}

/// A Pod of `account` bound to `node` (no kubelet runs it; the API object is what the
/// token is bound to), and a client with a TokenRequest token bound to that Pod.
async fn pod_bound_client(cp: &ControlPlane, admin: &Client, account: &str, node: &str) -> Client {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(unique_name(account)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(account.into()),
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "agent".into(),
                image: Some("registry.invalid/dpdk-node-agent".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    token_client(cp, admin, account, &request).await
}

/// A client with a TokenRequest token of `account` made from `request`.
async fn token_client(
    cp: &ControlPlane,
    admin: &Client,
    account: &str,
    request: &TokenRequest,
) -> Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    let token = accounts
        .create_token_request(account, &PostParams::default(), request)
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token
        .expect("a token");
    cp.token_client(&token).await.expect("token client")
}

/// The node the API server reads from `client`'s token (SelfSubjectReview).
async fn node_of_token(client: &Client) -> Option<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("self subject review");
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.extra)
        .and_then(|mut e| e.remove(NODE_NAME_EXTRA))
        .and_then(|v| v.into_iter().next())
}

/// Asserts `result` is the node-scope policy's refusal (403 from `policy`, not from RBAC).
fn refused_by<T: std::fmt::Debug, E: Into<AnyError>>(
    policy: &str,
    what: &str,
    result: Result<T, E>,
) {
    let status = match result.map_err(Into::into) {
        Err(AnyError(kube::Error::Api(s))) => s,
        other => panic!("{what}: expected a refusal by {policy}, got {other:?}"),
    };
    assert!(
        status.code == 403
            && status
                .message
                .contains(&format!("ValidatingAdmissionPolicy '{policy}'")),
        "{what}: expected a refusal by {policy}, got {status:?}"
    );
}

/// A kube error from either the client or the agent's reporting functions.
#[derive(Debug)]
struct AnyError(kube::Error);

impl From<kube::Error> for AnyError {
    fn from(e: kube::Error) -> Self {
        Self(e)
    }
}

impl From<dpdk_node_agent::Error> for AnyError {
    fn from(e: dpdk_node_agent::Error) -> Self {
        match e {
            dpdk_node_agent::Error::Kube(k) => Self(k),
            other => panic!("not an API error: {other}"),
        }
    }
}

const NODES_POLICY: &str = "dpdk-node-scope-nodes";
const STATES_POLICY: &str = "dpdk-node-scope-dpdknodestates";
const ENIS_POLICY: &str = "dpdk-node-scope-nodeenis";

/// Two nodes, A and B, each with a DPDKNodeState; A carries a taint.
async fn two_nodes(admin: &Client) -> (String, String) {
    let (a, b) = (unique_name("node-a"), unique_name("node-b"));
    for (name, ip) in [(&a, "10.0.2.1"), (&b, "10.0.2.2")] {
        fixtures::create_node(admin, name, &[("ng", "multi-eni")], ip)
            .await
            .expect("node");
        Api::<DPDKNodeState>::all(admin.clone())
            .create(
                &PostParams::default(),
                &DPDKNodeState::new(name, DPDKNodeStateSpec::default()),
            )
            .await
            .expect("state");
    }
    let taint =
        json!({"spec": {"taints": [{"key": "dpdk", "value": "x", "effect": "NoSchedule"}]}});
    Api::<Node>::all(admin.clone())
        .patch(&a, &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .expect("taint");
    (a, b)
}

fn bound_fields() -> AttachmentFields {
    AttachmentFields {
        bound: true,
        driver: Some("vfio-pci".into()),
        pci_address: Some("0000:00:06.0".into()),
        resource_name: Some("intel.com/intel_sriov_netdevice_2".into()),
    }
}

fn agent_status(node: &DPDKNodeState) -> dpdk_bridge::api::DPDKNodeStateStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    report::build_status(
        node.status.as_ref(),
        node.metadata.generation,
        &SyncOutcome::default(),
        &now,
    )
}

fn plugin_status(advertised: i32) -> DevicePluginStatus {
    DevicePluginStatus {
        resources: vec![AdvertisedResource {
            resource_name: "intel.com/intel_sriov_netdevice_2".into(),
            advertised,
            healthy: advertised,
        }],
        last_registration_time: None,
    }
}

#[tokio::test]
async fn the_agent_token_of_a_pod_on_node_a_writes_only_node_a() {
    let cp = shared();
    install(cp).await;
    let admin = cp.client().await.expect("admin");
    let (a, b) = two_nodes(&admin).await;
    let eni = unique_name("multus-eni");
    fixtures::create_nodeeni(&admin, &eni, &[("ng", "multi-eni")], 1, &["subnet-a"])
        .await
        .expect("nodeeni");
    for (node, id) in [(&a, "eni-0aaaa"), (&b, "eni-0bbbb")] {
        fixtures::upsert_attachment(&admin, &eni, fixtures::attachment(node, 1, id))
            .await
            .expect("attachment");
    }
    let agent = pod_bound_client(cp, &admin, AGENT, &a).await;
    assert_eq!(
        node_of_token(&agent).await.as_deref(),
        Some(a.as_str()),
        "the pod-bound token names the pod's node"
    );

    // What the agent does on A, through its own reporting functions.
    report::label_ready(&agent, &a)
        .await
        .expect("A's ready label");
    let nodes: Api<Node> = Api::all(admin.clone());
    let labels = nodes.get(&a).await.expect("A").metadata.labels;
    assert_eq!(
        labels
            .unwrap_or_default()
            .get(NODE_READY_LABEL)
            .map(String::as_str),
        Some("true")
    );
    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    let state_a = states.get_status(&a).await.expect("A's state");
    report::apply_status(&agent, &a, &agent_status(&state_a))
        .await
        .expect("A's status");
    assert!(
        report::report_attachment(&agent, &eni, &a, 1, &bound_fields())
            .await
            .expect("A's attachment"),
        "A's attachment was written"
    );
    let enis: Api<NodeENI> = Api::all(admin.clone());
    let now = enis.get_status(&eni).await.expect("eni");
    let att_a = report::find_attachment(&now, &a, 1).expect("A's attachment");
    assert_eq!(att_a.dpdk_bound, Some(true));
    assert_eq!(att_a.dpdk_driver.as_deref(), Some("vfio-pci"));
    assert_eq!(
        report::find_attachment(&now, &b, 1).and_then(|x| x.dpdk_bound),
        None
    );

    // Node B: its label, its status, its attachment.
    refused_by(
        NODES_POLICY,
        "B's ready label",
        report::label_ready(&agent, &b).await,
    );
    let state_b = states.get_status(&b).await.expect("B's state");
    refused_by(
        STATES_POLICY,
        "B's status",
        report::apply_status(&agent, &b, &agent_status(&state_b)).await,
    );
    let theirs = report::attachment_patch(&now, &b, 1, &bound_fields()).expect("a patch for B");
    let agent_enis: Api<NodeENI> = Api::all(agent.clone());
    refused_by(
        ENIS_POLICY,
        "B's attachment",
        agent_enis
            .patch_status(&eni, &PatchParams::default(), &Patch::<()>::Json(theirs))
            .await,
    );

    // Anything else on A: other labels, the ready label's value, annotations, taints.
    let agent_nodes: Api<Node> = Api::all(agent.clone());
    for (what, patch) in [
        (
            "another label",
            json!({"metadata": {"labels": {"ng": "other"}}}),
        ),
        (
            "a new label",
            json!({"metadata": {"labels": {"evil": "true"}}}),
        ),
        (
            "removing a label",
            json!({"metadata": {"labels": {"ng": null}}}),
        ),
        (
            "ready=false",
            json!({"metadata": {"labels": {NODE_READY_LABEL: "false"}}}),
        ),
        (
            "an annotation",
            json!({"metadata": {"annotations": {"x": "y"}}}),
        ),
        ("removing the taint", json!({"spec": {"taints": null}})),
        (
            "a new taint",
            json!({"spec": {"taints": [{"key": "dpdk", "value": "x", "effect": "NoSchedule"}, {"key": "evil", "effect": "NoExecute"}]}}),
        ),
        ("cordoning", json!({"spec": {"unschedulable": true}})),
    ] {
        refused_by(
            NODES_POLICY,
            &format!("{what} on A"),
            agent_nodes
                .patch(&a, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
    }
    let node_a = nodes.get(&a).await.expect("A");
    assert_eq!(
        node_a.spec.and_then(|s| s.taints).map(|t| t.len()),
        Some(1),
        "A's taint is untouched"
    );
    assert_eq!(
        node_a
            .metadata
            .labels
            .unwrap_or_default()
            .get("ng")
            .map(String::as_str),
        Some("multi-eni")
    );

    // A's attachment beyond the dpdk* members: the Multi-ENI Controller's fields.
    let now = enis.get_status(&eni).await.expect("eni");
    let ix = now
        .status
        .as_ref()
        .and_then(|s| {
            s.attachments
                .iter()
                .position(|x| x.node_id.as_deref() == Some(&a))
        })
        .expect("A's index");
    let forged = json!([{"op": "replace", "path": format!("/status/attachments/{ix}/eniID"), "value": "eni-0forged"}]);
    refused_by(
        ENIS_POLICY,
        "A's eniID",
        agent_enis
            .patch_status(
                &eni,
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(forged).expect("patch")),
            )
            .await,
    );
    let claim_b = json!([{"op": "replace", "path": format!("/status/attachments/{}/nodeID", 1 - ix), "value": a}]);
    refused_by(
        ENIS_POLICY,
        "taking over B's attachment",
        agent_enis
            .patch_status(
                &eni,
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(claim_b).expect("patch")),
            )
            .await,
    );

    // The device plugin's part of A's status.
    NodeReporter {
        client: admin.clone(),
        node: a.clone(),
    }
    .apply(&plugin_status(2))
    .await
    .expect("admin writes devicePlugin");
    let forged_plugin = json!({"status": {"devicePlugin": plugin_status(9)}});
    refused_by(
        STATES_POLICY,
        "A's devicePlugin status",
        Api::<DPDKNodeState>::all(agent.clone())
            .patch_status(&a, &PatchParams::default(), &Patch::Merge(&forged_plugin))
            .await,
    );
    let state_a = states.get_status(&a).await.expect("A's state");
    assert_eq!(
        state_a.status.and_then(|s| s.device_plugin),
        Some(plugin_status(2)),
        "the agent's status writes leave devicePlugin alone"
    );
}

#[tokio::test]
async fn the_device_plugin_token_of_a_pod_on_node_a_writes_only_a_device_plugin_status() {
    let cp = shared();
    install(cp).await;
    let admin = cp.client().await.expect("admin");
    let (a, b) = two_nodes(&admin).await;
    let plugin = pod_bound_client(cp, &admin, DEVICE_PLUGIN, &a).await;
    assert_eq!(node_of_token(&plugin).await.as_deref(), Some(a.as_str()));

    NodeReporter {
        client: plugin.clone(),
        node: a.clone(),
    }
    .apply(&plugin_status(2))
    .await
    .expect("A's devicePlugin status");
    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    assert_eq!(
        states
            .get_status(&a)
            .await
            .expect("A")
            .status
            .and_then(|s| s.device_plugin),
        Some(plugin_status(2))
    );

    refused_by(
        STATES_POLICY,
        "B's devicePlugin status",
        NodeReporter {
            client: plugin.clone(),
            node: b.clone(),
        }
        .apply(&plugin_status(2))
        .await,
    );
    let agent_part = json!({"status": {"syncStatus": "Succeeded", "boundDevices": 4}});
    refused_by(
        STATES_POLICY,
        "the agent's part of A's status",
        Api::<DPDKNodeState>::all(plugin.clone())
            .patch_status(&a, &PatchParams::default(), &Patch::Merge(&agent_part))
            .await,
    );
    assert_eq!(
        states
            .get_status(&b)
            .await
            .expect("B")
            .status
            .and_then(|s| s.device_plugin),
        None
    );
}

#[tokio::test]
async fn a_token_not_bound_to_a_pod_on_a_node_is_refused() {
    let cp = shared();
    install(cp).await;
    let admin = cp.client().await.expect("admin");
    let (a, _b) = two_nodes(&admin).await;
    let unbound = TokenRequest {
        spec: Some(TokenRequestSpec {
            bound_object_ref: None,
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let agent = token_client(cp, &admin, AGENT, &unbound).await;
    assert_eq!(node_of_token(&agent).await, None, "no node in the token");
    refused_by(
        NODES_POLICY,
        "ready label",
        report::label_ready(&agent, &a).await,
    );
    let state_a = Api::<DPDKNodeState>::all(admin.clone())
        .get_status(&a)
        .await
        .expect("A's state");
    refused_by(
        STATES_POLICY,
        "status",
        report::apply_status(&agent, &a, &agent_status(&state_a)).await,
    );
    let plugin = token_client(cp, &admin, DEVICE_PLUGIN, &unbound).await;
    refused_by(
        STATES_POLICY,
        "devicePlugin status",
        NodeReporter {
            client: plugin,
            node: a.clone(),
        }
        .apply(&plugin_status(1))
        .await,
    );
}

/// The node ServiceAccount `account` of a pod on `node`, impersonated in system:masters, so
/// RBAC allows everything and only the node-scope policy can refuse.
async fn without_rbac(cp: &ControlPlane, account: &str, node: &str) -> Client {
    let mut config = cp.config().await.expect("config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{NAMESPACE}:{account}"));
    config.auth_info.impersonate_groups =
        Some(vec!["system:masters".into(), "system:authenticated".into()]);
    config.auth_info.impersonate_user_extra = Some(
        [(NODE_NAME_EXTRA.to_string(), vec![node.to_string()])]
            .into_iter()
            .collect(),
    );
    Client::try_from(config).expect("client")
}

/// The policies are a second layer under RBAC: writes the ClusterRoles do not grant (Node
/// status, DPDKNodeState and NodeENI specs, creates, deletes) are refused even on the
/// caller's own node when RBAC would allow them.
#[tokio::test]
async fn the_policies_refuse_what_rbac_does_not_grant_even_on_the_own_node() {
    let cp = shared();
    install(cp).await;
    let admin = cp.client().await.expect("admin");
    let (a, _b) = two_nodes(&admin).await;
    let eni = unique_name("multus-eni");
    fixtures::create_nodeeni(&admin, &eni, &[("ng", "multi-eni")], 1, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::upsert_attachment(&admin, &eni, fixtures::attachment(&a, 1, "eni-0aaaa"))
        .await
        .expect("attachment");
    let dry_delete = kube::api::DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    for account in [AGENT, DEVICE_PLUGIN] {
        let client = without_rbac(cp, account, &a).await;
        let nodes: Api<Node> = Api::all(client.clone());
        let states: Api<DPDKNodeState> = Api::all(client.clone());
        let enis: Api<NodeENI> = Api::all(client.clone());
        let capacity = json!({"status": {"capacity": {"example.com/x": "1"}}});
        refused_by(
            NODES_POLICY,
            &format!("{account}: A's node status"),
            nodes
                .patch_status(&a, &PatchParams::default(), &Patch::Merge(&capacity))
                .await,
        );
        refused_by(
            NODES_POLICY,
            &format!("{account}: deleting A"),
            nodes.delete(&a, &dry_delete).await,
        );
        let devices = json!({"spec": {"devices": []}});
        refused_by(
            STATES_POLICY,
            &format!("{account}: A's DPDKNodeState spec"),
            states
                .patch(&a, &PatchParams::default(), &Patch::Merge(&devices))
                .await,
        );
        refused_by(
            STATES_POLICY,
            &format!("{account}: deleting A's DPDKNodeState"),
            states.delete(&a, &dry_delete).await,
        );
        let spec = json!({"spec": {"enableDPDK": false}});
        refused_by(
            ENIS_POLICY,
            &format!("{account}: the NodeENI spec"),
            enis.patch(&eni, &PatchParams::default(), &Patch::Merge(&spec))
                .await,
        );
    }
    // The device plugin writes no Node and no NodeENI, not even its own node's.
    let plugin = without_rbac(cp, DEVICE_PLUGIN, &a).await;
    refused_by(
        NODES_POLICY,
        "the plugin: A's ready label",
        report::label_ready(&plugin, &a).await,
    );
    let now = Api::<NodeENI>::all(admin.clone())
        .get_status(&eni)
        .await
        .expect("eni");
    let patch = report::attachment_patch(&now, &a, 1, &bound_fields()).expect("a patch");
    refused_by(
        ENIS_POLICY,
        "the plugin: A's attachment",
        Api::<NodeENI>::all(plugin)
            .patch_status(&eni, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await,
    );
}
