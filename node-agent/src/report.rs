//! Reporting to the API server: `DPDKNodeState.status`, the `dpdk*` fields of this node's
//! NodeENI attachments, and the node's ready label.
//!
//! - The status is written by server-side apply with the agent's field manager, so the
//!   device plugin's `status.devicePlugin` (its own manager) is never touched.
//! - NodeENI `status.attachments` is an atomic list owned by the Multi-ENI Controller. The
//!   agent changes only the four `dpdk*` members of ITS element, with a JSON patch whose
//!   `test` operations pin the resourceVersion and the element's nodeID/deviceIndex: if the
//!   ENI controller wrote in between, the patch fails and is recomputed from a fresh read.
//!   The list and every other field are left exactly as they were.
//!
//! Building the status and the patch is pure; the `async` functions are thin I/O.

use dpdk_bridge::api::{
    DPDKNodeState, DPDKNodeStateStatus, DeviceStatus, ENIAttachment, ModuleStatus, NodeENI,
    SyncStatus,
};
use dpdk_bridge::conditions::{self, Health};
use dpdk_bridge::labels::{AGENT_MANAGER, NODE_READY_LABEL};
use json_patch::{
    AddOperation, PatchOperation, RemoveOperation, TestOperation, jsonptr::PointerBuf,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::debug;

use crate::error::Error;
use crate::reconcile::health;

/// What went into one sync, for [`build_status`].
#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    pub modules: Option<ModuleStatus>,
    /// Set when the modules could not be loaded: nothing else can work.
    pub module_error: Option<String>,
    /// Every desired device's row (resolved or not) plus devices still being released.
    pub devices: Vec<DeviceStatus>,
    pub errors: Vec<String>,
}

/// The agent's part of `DPDKNodeState.status` (never `devicePlugin`).
pub fn build_status(
    prev: Option<&DPDKNodeStateStatus>,
    generation: Option<i64>,
    outcome: &SyncOutcome,
    now: &Time,
) -> DPDKNodeStateStatus {
    let count = |h: &str| {
        outcome
            .devices
            .iter()
            .filter(|d| d.health.as_deref() == Some(h))
            .count()
    };
    let bound = outcome.devices.iter().filter(|d| d.bound).count();
    let (sync, health) = if let Some(err) = &outcome.module_error {
        (
            SyncStatus::Failed,
            Health::Stalled {
                reason: "ModulesFailed".into(),
                message: err.clone(),
            },
        )
    } else if count(health::REFUSED) > 0 {
        (
            SyncStatus::Failed,
            Health::Stalled {
                reason: "Refused".into(),
                message: outcome.errors.join("; "),
            },
        )
    } else if count(health::UNHEALTHY) > 0 {
        (
            SyncStatus::Failed,
            Health::Stalled {
                reason: "BindFailed".into(),
                message: outcome.errors.join("; "),
            },
        )
    } else if count(health::IN_USE) > 0 {
        let msg = format!(
            "{} device(s) no longer desired are held by pods; restored when released",
            count(health::IN_USE)
        );
        (
            SyncStatus::InProgress,
            Health::Progressing {
                reason: "DeviceInUse".into(),
                message: msg,
            },
        )
    } else if count(health::PENDING) > 0 {
        let msg = outcome
            .devices
            .iter()
            .filter_map(|d| d.message.clone())
            .collect::<Vec<_>>()
            .join("; ");
        (
            SyncStatus::InProgress,
            Health::Progressing {
                reason: "WaitingForDevice".into(),
                message: msg,
            },
        )
    } else {
        (
            SyncStatus::Succeeded,
            Health::Ready {
                reason: "Synced".into(),
                message: format!("{bound} device(s) bound"),
            },
        )
    };
    let mut conds = prev.map(|p| p.conditions.clone()).unwrap_or_default();
    conditions::apply_health(&mut conds, &health, generation, now);
    let mut errors = outcome.errors.clone();
    if let Some(e) = &outcome.module_error {
        errors.insert(0, e.clone());
    }
    DPDKNodeStateStatus {
        observed_generation: generation,
        conditions: conds,
        sync_status: Some(sync),
        last_sync_error: (!errors.is_empty()).then(|| errors.join("; ")),
        modules: outcome.modules.clone(),
        devices: outcome.devices.clone(),
        bound_devices: i32::try_from(bound).unwrap_or(i32::MAX),
        device_plugin: None,
    }
}

/// Whether `new` differs from `prev` in the fields the agent owns.
pub fn status_changed(prev: Option<&DPDKNodeStateStatus>, new: &DPDKNodeStateStatus) -> bool {
    match prev {
        None => true,
        Some(p) => {
            let mut p = p.clone();
            p.device_plugin = None;
            &p != new
        }
    }
}

/// The `dpdk*` values one attachment should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentFields {
    pub bound: bool,
    pub driver: Option<String>,
    pub pci_address: Option<String>,
    pub resource_name: Option<String>,
}

impl AttachmentFields {
    /// Cleared: not bound, no driver, address or resource.
    pub fn cleared() -> Self {
        Self {
            bound: false,
            driver: None,
            pci_address: None,
            resource_name: None,
        }
    }

    /// From a device row: the fields are set only while the device is bound.
    pub fn from_device(d: &DeviceStatus) -> Self {
        if d.bound {
            Self {
                bound: true,
                driver: d.driver.clone(),
                pci_address: d.pci_address.clone(),
                resource_name: d.resource_name.clone(),
            }
        } else {
            Self::cleared()
        }
    }
}

/// The JSON patch that sets `fields` on this node's attachment at `device_index`, with
/// `test` preconditions; `None` when there is no such attachment or nothing to change.
pub fn attachment_patch(
    eni: &NodeENI,
    node: &str,
    device_index: i32,
    fields: &AttachmentFields,
) -> Option<json_patch::Patch> {
    let rv = eni.metadata.resource_version.clone()?;
    let attachments = eni
        .status
        .as_ref()
        .map(|s| s.attachments.as_slice())
        .unwrap_or_default();
    let (i, att) = attachments.iter().enumerate().find(|(_, a)| {
        a.node_id.as_deref() == Some(node) && a.device_index == Some(device_index)
    })?;
    let base = format!("/status/attachments/{i}");
    let ptr = |s: String| PointerBuf::parse(s).ok();
    let mut ops = vec![
        PatchOperation::Test(TestOperation {
            path: ptr("/metadata/resourceVersion".into())?,
            value: json!(rv),
        }),
        PatchOperation::Test(TestOperation {
            path: ptr(format!("{base}/nodeID"))?,
            value: json!(node),
        }),
        PatchOperation::Test(TestOperation {
            path: ptr(format!("{base}/deviceIndex"))?,
            value: json!(device_index),
        }),
    ];
    let tests = ops.len();
    let current = [
        ("dpdkBound", att.dpdk_bound.map(Value::from)),
        ("dpdkDriver", att.dpdk_driver.clone().map(Value::from)),
        (
            "dpdkPCIAddress",
            att.dpdk_pci_address.clone().map(Value::from),
        ),
        (
            "dpdkResourceName",
            att.dpdk_resource_name.clone().map(Value::from),
        ),
    ];
    let wanted = [
        Some(Value::from(fields.bound)),
        fields.driver.clone().map(Value::from),
        fields.pci_address.clone().map(Value::from),
        fields.resource_name.clone().map(Value::from),
    ];
    for ((name, have), want) in current.into_iter().zip(wanted) {
        let path = ptr(format!("{base}/{name}"))?;
        match (have, want) {
            (h, Some(w)) if h.as_ref() != Some(&w) => {
                ops.push(PatchOperation::Add(AddOperation { path, value: w }))
            }
            (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation { path })),
            _ => {}
        }
    }
    (ops.len() > tests).then_some(json_patch::Patch(ops))
}

/// Writes `fields` to this node's attachment of `eni_name`. Returns whether it wrote.
/// A lost race (the ENI controller wrote in between) is retried from a fresh read.
pub async fn report_attachment(
    client: &Client,
    eni_name: &str,
    node: &str,
    device_index: i32,
    fields: &AttachmentFields,
) -> Result<bool, Error> {
    let api: Api<NodeENI> = Api::all(client.clone());
    for _ in 0..8 {
        let eni = match api.get_status(eni_name).await {
            Ok(e) => e,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let Some(patch) = attachment_patch(&eni, node, device_index, fields) else {
            return Ok(false);
        };
        match api
            .patch_status(eni_name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => return Ok(true),
            // 409: resourceVersion moved; 422/500: a `test` failed. Both mean: read again.
            Err(kube::Error::Api(s)) if matches!(s.code, 409 | 422 | 500) => {
                debug!(
                    nodeeni = eni_name,
                    code = s.code,
                    "attachment changed underneath; retrying"
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Report {
        object: format!("NodeENI {eni_name}"),
        message: "attachment kept changing; will retry on the next sync".into(),
    })
}

/// Applies the agent's status fields (server-side apply, field manager dpdk-node-agent).
pub async fn apply_status(
    client: &Client,
    node: &str,
    status: &DPDKNodeStateStatus,
) -> Result<(), Error> {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let patch = json!({
        "apiVersion": "networking.k8s.aws/v1alpha1",
        "kind": "DPDKNodeState",
        "metadata": { "name": node },
        "status": status,
    });
    api.patch_status(
        node,
        &PatchParams::apply(AGENT_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// This node's DPDKNodeState, if it exists.
pub async fn get_node_state(client: &Client, node: &str) -> Result<Option<DPDKNodeState>, Error> {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    Ok(api.get_opt(node).await?)
}

/// `load` failed: say so in the status (best effort; the container also exits non-zero).
pub async fn report_load_failure(client: &Client, node: &str, message: &str) -> Result<(), Error> {
    let Some(state) = get_node_state(client, node).await? else {
        return Ok(());
    };
    let outcome = SyncOutcome {
        module_error: Some(message.to_string()),
        ..Default::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = build_status(
        state.status.as_ref(),
        state.metadata.generation,
        &outcome,
        &now,
    );
    apply_status(client, node, &status).await
}

/// Labels the node `dpdk.aws.k8s/ready=true` (server-side apply of that one label).
pub async fn label_ready(client: &Client, node: &str) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node, "labels": { NODE_READY_LABEL: "true" } },
    });
    api.patch(
        node,
        &PatchParams::apply(AGENT_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The attachment `nodeID`/`deviceIndex` row for tests and logs.
pub fn find_attachment<'a>(
    eni: &'a NodeENI,
    node: &str,
    device_index: i32,
) -> Option<&'a ENIAttachment> {
    eni.status
        .as_ref()?
        .attachments
        .iter()
        .find(|a| a.node_id.as_deref() == Some(node) && a.device_index == Some(device_index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk_bridge::api::{NodeENISpec, NodeENIStatus};

    fn eni(atts: Vec<ENIAttachment>) -> NodeENI {
        let mut e = NodeENI::new("multus-eni", NodeENISpec::default());
        e.metadata.resource_version = Some("42".into());
        e.status = Some(NodeENIStatus { attachments: atts });
        e
    }

    fn att(node: &str, idx: i32) -> ENIAttachment {
        ENIAttachment {
            node_id: Some(node.into()),
            device_index: Some(idx),
            eni_id: Some(format!("eni-{node}-{idx}")),
            ..Default::default()
        }
    }

    #[test]
    fn patch_touches_only_our_element_with_preconditions() {
        let e = eni(vec![att("other", 2), att("me", 1), att("me", 2)]);
        let fields = AttachmentFields {
            bound: true,
            driver: Some("vfio-pci".into()),
            pci_address: Some("0000:00:06.0".into()),
            resource_name: Some("intel.com/x".into()),
        };
        let p = attachment_patch(&e, "me", 2, &fields).expect("patch");
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(
            v[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
        assert_eq!(
            v[1],
            json!({"op": "test", "path": "/status/attachments/2/nodeID", "value": "me"})
        );
        assert_eq!(
            v[2],
            json!({"op": "test", "path": "/status/attachments/2/deviceIndex", "value": 2})
        );
        let paths: Vec<&str> = v.as_array().expect("array")[3..]
            .iter()
            .map(|o| o["path"].as_str().expect("path"))
            .collect();
        assert_eq!(
            paths,
            [
                "/status/attachments/2/dpdkBound",
                "/status/attachments/2/dpdkDriver",
                "/status/attachments/2/dpdkPCIAddress",
                "/status/attachments/2/dpdkResourceName"
            ]
        );

        // Applying it changes only those four members of element 2.
        let mut doc = serde_json::to_value(&e).expect("json");
        json_patch::patch(&mut doc, &p).expect("applies");
        let after: NodeENI = serde_json::from_value(doc).expect("nodeeni");
        let atts = &after.status.as_ref().expect("status").attachments;
        assert_eq!(atts[0], e.status.as_ref().expect("status").attachments[0]);
        assert_eq!(atts[1], e.status.as_ref().expect("status").attachments[1]);
        assert_eq!(atts[2].eni_id.as_deref(), Some("eni-me-2"));
        assert_eq!(atts[2].dpdk_bound, Some(true));

        // Already so: no patch (zero writes). Cleared: dpdkBound=false and removals.
        assert!(attachment_patch(&after, "me", 2, &fields).is_none());
        let p = attachment_patch(&after, "me", 2, &AttachmentFields::cleared()).expect("patch");
        let ops: Vec<String> = serde_json::to_value(&p)
            .expect("json")
            .as_array()
            .expect("a")[3..]
            .iter()
            .map(|o| o["op"].as_str().expect("op").to_string())
            .collect();
        assert_eq!(ops, ["add", "remove", "remove", "remove"]);
        assert!(
            attachment_patch(&e, "me", 3, &fields).is_none(),
            "no attachment, nothing to write"
        );
    }

    #[test]
    fn status_reflects_the_worst_device() {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("ts"));
        let dev = |h: &str, bound: bool| DeviceStatus {
            device_index: 1,
            bound,
            health: Some(h.into()),
            ..Default::default()
        };
        let o = SyncOutcome {
            devices: vec![dev(health::HEALTHY, true)],
            ..Default::default()
        };
        let s = build_status(None, Some(3), &o, &now);
        assert_eq!(
            (s.sync_status, s.bound_devices, s.observed_generation),
            (Some(SyncStatus::Succeeded), 1, Some(3))
        );
        assert!(conditions::is_ready(&s.conditions));
        let o = SyncOutcome {
            devices: vec![dev(health::REFUSED, false)],
            errors: vec!["refusing".into()],
            ..Default::default()
        };
        let s2 = build_status(Some(&s), Some(4), &o, &now);
        assert_eq!(s2.sync_status, Some(SyncStatus::Failed));
        assert_eq!(s2.last_sync_error.as_deref(), Some("refusing"));
        assert!(conditions::find(&s2.conditions, conditions::STALLED).is_some());
        let o = SyncOutcome {
            devices: vec![dev(health::IN_USE, true)],
            ..Default::default()
        };
        assert_eq!(
            build_status(None, None, &o, &now).sync_status,
            Some(SyncStatus::InProgress)
        );
        let o = SyncOutcome {
            module_error: Some("kernel module vfio not found".into()),
            ..Default::default()
        };
        let s = build_status(None, None, &o, &now);
        assert_eq!(s.sync_status, Some(SyncStatus::Failed));
        assert!(
            s.last_sync_error
                .as_deref()
                .is_some_and(|e| e.contains("vfio not found"))
        );
        assert!(
            !status_changed(Some(&s), &build_status(Some(&s), None, &o, &now)),
            "same inputs, no write"
        );
    }
}
