//! Simulated cluster objects. No kubelet or Multi-ENI Controller runs here, so tests
//! create Nodes (labels, providerID, InternalIP) and NodeENIs, and write attachments
//! the way the Multi-ENI Controller does: a whole-status update with a resourceVersion.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dpdk_bridge::api::{
    DPDKNodeState, DPDKNodeStateSpec, ENIAttachment, NodeENI, NodeENISpec, NodeENIStatus,
};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;

use crate::control_plane::{ControlPlane, workspace_root};
use crate::{Error, Result, io_err};

const MANAGER: &str = "dpdk-testenv";

/// The seed's DPDKConfig as the project's config repository keeps it, comments included:
/// the one copy every test reads.
pub const SEED_DPDKCONFIG: &str =
    include_str!("../../examples-repo/clusters/production/default-dpdk-config.yaml");

/// [`SEED_DPDKCONFIG`] without its comment lines: the YAML the seed guide prints.
pub fn seed_dpdkconfig_as_in_the_guide() -> String {
    SEED_DPDKCONFIG
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Applies every CRD in `files` (multi-document YAML) and waits until each is Established.
pub async fn apply_crd_files(client: &Client, files: &[PathBuf]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(io_err(file))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .map_err(|e| Error::Other(format!("{}: not a CRD: {e}", file.display())))?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await?;
            names.push(name);
        }
    }
    for name in names {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "CRD {name} not Established after 30s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Creates a Node the way a kubelet would register it on EC2.
pub async fn create_node(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
    internal_ip: &str,
) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("aws:///us-east-1a/i-{:017x}", fxhash(name))),
            ..Default::default()
        }),
        status: None,
    };
    let created = api.create(&PostParams::default(), &node).await?;
    // Addresses live in status, which create ignores.
    let status = NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_string(),
            },
        ]),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": status });
    let _ = created;
    Ok(api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// Creates a NodeENI as a platform team would declare it.
pub async fn create_nodeeni(
    client: &Client,
    name: &str,
    selector: &[(&str, &str)],
    device_index: i32,
    subnets: &[&str],
) -> Result<NodeENI> {
    create_nodeeni_with(client, name, selector, device_index, subnets, |_| {}).await
}

/// [`create_nodeeni`], with `edit` setting further spec fields (e.g. `dpdk_pci_address`).
pub async fn create_nodeeni_with(
    client: &Client,
    name: &str,
    selector: &[(&str, &str)],
    device_index: i32,
    subnets: &[&str],
    edit: impl FnOnce(&mut NodeENISpec),
) -> Result<NodeENI> {
    let api: Api<NodeENI> = Api::all(client.clone());
    let mut spec = nodeeni_spec(selector, device_index, subnets);
    edit(&mut spec);
    let eni = NodeENI::new(name, spec);
    Ok(api.create(&PostParams::default(), &eni).await?)
}

/// The spec of a NodeENI as a platform team would declare it.
fn nodeeni_spec(selector: &[(&str, &str)], device_index: i32, subnets: &[&str]) -> NodeENISpec {
    let mut spec = NodeENISpec {
        node_selector: selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        device_index: Some(device_index),
        security_group_ids: Some(vec!["sg-0123456789abcdef0".into()]),
        ..Default::default()
    };
    match subnets {
        [one] => spec.subnet_id = Some(one.to_string()),
        many => spec.subnet_ids = Some(many.iter().map(|s| s.to_string()).collect()),
    }
    spec
}

/// The node agent's ServiceAccount as the node-scope probe impersonates it: RBAC lets it do
/// anything (system:masters), so only deploy/dpdk-node-policy.yaml can refuse it.
const PROBE_USER: &str = "system:serviceaccount:dpdk-operator:dpdk-node-agent";

/// Applies deploy/dpdk-node-policy.yaml (once per process, like
/// [`ControlPlane::kubectl_apply_once`]) and waits until the API server enforces each of its
/// policies: policies take effect asynchronously, and a test that ran before would prove
/// nothing. The probe is a server-side dry-run create of a Node, a DPDKNodeState and a
/// NodeENI by the node agent's user, without a node, which must be refused.
pub async fn install_node_policy(cp: &ControlPlane) -> Result<()> {
    cp.kubectl_apply_once(&workspace_root().join("deploy/dpdk-node-policy.yaml"))?;
    let probe = cp
        .client_as(PROBE_USER, &["system:masters", "system:authenticated"])
        .await?;
    let name = "dpdk-node-policy-probe";
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let outcomes = [
            refused(
                Api::<Node>::all(probe.clone())
                    .create(
                        &dry_run,
                        &Node {
                            metadata: ObjectMeta {
                                name: Some(name.into()),
                                ..Default::default()
                            },
                            ..Default::default()
                        },
                    )
                    .await,
            ),
            refused(
                Api::<DPDKNodeState>::all(probe.clone())
                    .create(
                        &dry_run,
                        &DPDKNodeState::new(name, DPDKNodeStateSpec::default()),
                    )
                    .await,
            ),
            refused(
                Api::<NodeENI>::all(probe.clone())
                    .create(
                        &dry_run,
                        &NodeENI::new(name, nodeeni_spec(&[], 1, &["subnet-a"])),
                    )
                    .await,
            ),
        ];
        if outcomes.iter().all(|r| *r) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Other(format!(
                "deploy/dpdk-node-policy.yaml not enforced after 30s (Node, DPDKNodeState, NodeENI refused: {outcomes:?})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a write was refused by the node-scope policy (403, no node association).
fn refused<T>(r: kube::Result<T>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("no node association"))
}

/// An attachment as the Multi-ENI Controller records it.
pub fn attachment(node: &str, device_index: i32, eni_id: &str) -> ENIAttachment {
    ENIAttachment {
        node_id: Some(node.to_string()),
        instance_id: Some(format!("i-{:017x}", fxhash(node))),
        eni_id: Some(eni_id.to_string()),
        attachment_id: Some(format!("eni-attach-{:017x}", fxhash(eni_id))),
        subnet_id: Some("subnet-0123456789abcdef0".into()),
        subnet_cidr: Some("10.0.1.0/24".into()),
        mtu: Some(9001),
        device_index: Some(device_index),
        status: Some("attached".into()),
        ..Default::default()
    }
}

/// Adds (or replaces, by nodeID + deviceIndex) an attachment the way the Multi-ENI
/// Controller does: read, modify, update the whole status with the resourceVersion.
/// Retries on conflict.
pub async fn upsert_attachment(
    client: &Client,
    nodeeni: &str,
    att: ENIAttachment,
) -> Result<NodeENI> {
    let api: Api<NodeENI> = Api::all(client.clone());
    for _ in 0..20 {
        let mut eni = api.get_status(nodeeni).await?;
        let status = eni.status.get_or_insert_with(NodeENIStatus::default);
        status
            .attachments
            .retain(|a| !(a.node_id == att.node_id && a.device_index == att.device_index));
        status.attachments.push(att.clone());
        match api
            .replace_status(nodeeni, &PostParams::default(), &eni)
            .await
        {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Other(format!(
        "NodeENI {nodeeni}: attachment update kept conflicting"
    )))
}

/// A small stable hash, for fake instance and ENI IDs.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
