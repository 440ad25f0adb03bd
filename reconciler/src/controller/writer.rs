//! Executes the planner's writes against the API server: server-side apply with field
//! manager `dpdk-controller`, UID preconditions, and apply conflicts turned into data.

use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, NodeENI};
use dpdk_bridge::json_pointer::escape_token;
use dpdk_bridge::labels::{CONFIG_FINALIZER, CONTROLLER_MANAGER, NODE_READY_LABEL};
use dpdk_bridge::plan::{Kind, TEARDOWN_SINCE_ANNOTATION, Write};
use dpdk_bridge::ssa::{self, FieldConflict};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// What one write did.
pub enum Outcome {
    /// Done; the resourceVersion it produced (`None` when the object is gone).
    Written(Option<String>),
    /// Another field manager holds a field (HTTP 409 on apply).
    Conflict(Vec<FieldConflict>),
}

/// Kind names used in metrics and logs.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Node => "node",
        Kind::NodeEni => "nodeeni",
        Kind::NodeState => "dpdknodestate",
        Kind::Config => "dpdkconfig",
    }
}

#[derive(Clone)]
pub struct Writer {
    configs: Api<DPDKConfig>,
    nodes: Api<Node>,
    node_enis: Api<NodeENI>,
    node_states: Api<DPDKNodeState>,
}

fn apply(force: bool) -> PatchParams {
    let pp = PatchParams::apply(CONTROLLER_MANAGER);
    if force { pp.force() } else { pp }
}

/// PATCHes the whole object (its spec, labels or finalizers) and decodes only the
/// metadata of the answer: a write needs the new resourceVersion, not the body. (kube's
/// `Api::patch_metadata` does exactly this; the name here says what a caller gets.)
async fn patch_returning_meta<K, P>(
    api: &Api<K>,
    name: &str,
    pp: &PatchParams,
    patch: &Patch<P>,
) -> Result<PartialObjectMeta<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    P: Serialize + std::fmt::Debug,
{
    api.patch_metadata(name, pp, patch).await
}

fn uid_or_none(uid: &str) -> Option<&str> {
    if uid.is_empty() { None } else { Some(uid) }
}

impl Writer {
    pub fn new(client: &Client) -> Self {
        Writer {
            configs: Api::all(client.clone()),
            nodes: Api::all(client.clone()),
            node_enis: Api::all(client.clone()),
            node_states: Api::all(client.clone()),
        }
    }

    /// Sends one write. `cached_finalizers` is the cached DPDKConfig's finalizer list and
    /// resourceVersion, for removing a finalizer that is not ours by SSA.
    pub async fn execute(
        &self,
        write: &Write,
        cached_finalizers: Option<(Vec<String>, Option<String>)>,
    ) -> Result<Outcome, kube::Error> {
        let res = self.send(write, cached_finalizers).await;
        match res {
            Err(kube::Error::Api(s))
                if s.code == 409 && !ssa::parse_apply_conflicts(&s).is_empty() =>
            {
                Ok(Outcome::Conflict(ssa::parse_apply_conflicts(&s)))
            }
            other => other,
        }
    }

    async fn send(
        &self,
        write: &Write,
        cached_finalizers: Option<(Vec<String>, Option<String>)>,
    ) -> Result<Outcome, kube::Error> {
        match write {
            Write::AddFinalizer { config } => {
                let body = json!({
                    "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig",
                    "metadata": { "name": config, "finalizers": [CONFIG_FINALIZER] }
                });
                let o = patch_returning_meta(
                    &self.configs,
                    config,
                    &apply(false),
                    &Patch::Apply(&body),
                )
                .await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::RemoveFinalizer { config, uid, owned } => {
                if *owned {
                    let body = json!({
                        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig",
                        "metadata": { "name": config, "uid": uid }
                    });
                    patch_returning_meta(
                        &self.configs,
                        config,
                        &apply(false),
                        &Patch::Apply(&body),
                    )
                    .await?;
                } else if let Some((finalizers, rv)) = cached_finalizers {
                    // Added by someone else: drop it from the list, guarded by the
                    // resourceVersion so a concurrent change to the list is not lost.
                    let rest: Vec<&String> = finalizers
                        .iter()
                        .filter(|f| *f != CONFIG_FINALIZER)
                        .collect();
                    let body = json!({ "metadata": { "finalizers": rest, "resourceVersion": rv } });
                    patch_returning_meta(
                        &self.configs,
                        config,
                        &PatchParams::default(),
                        &Patch::Merge(&body),
                    )
                    .await?;
                }
                // The object goes away once no finalizer is left.
                Ok(Outcome::Written(None))
            }
            Write::ApplyNodeState {
                node,
                spec,
                teardown_since,
                rollout,
            } => {
                let mut ann: Vec<(&str, &str)> = rollout.annotations();
                if let Some(t) = teardown_since.as_deref() {
                    ann.push((TEARDOWN_SINCE_ANNOTATION, t));
                }
                let body = ssa::node_state_apply(node, spec, &ann);
                // The spec of a DPDKNodeState is the controller's by contract.
                let o = patch_returning_meta(
                    &self.node_states,
                    node,
                    &apply(true),
                    &Patch::Apply(&body),
                )
                .await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::SetNodeLabel { node, uid, force } => {
                let body = ssa::node_label_apply(node, uid_or_none(uid), true);
                let o =
                    patch_returning_meta(&self.nodes, node, &apply(*force), &Patch::Apply(&body))
                        .await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::ReleaseNodeLabel { node, uid } => {
                let body = ssa::node_label_apply(node, uid_or_none(uid), false);
                let o =
                    patch_returning_meta(&self.nodes, node, &apply(false), &Patch::Apply(&body))
                        .await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::RemoveReadyLabel { node, uid } => {
                // The agent's label, not ours: a JSON patch removes it only while it is still
                // `true` on the same node, so a label changed since the cache saw it stays.
                let path = format!("/metadata/labels/{}", escape_token(NODE_READY_LABEL));
                let mut ops = Vec::new();
                if !uid.is_empty() {
                    ops.push(json!({ "op": "test", "path": "/metadata/uid", "value": uid }));
                }
                ops.push(json!({ "op": "test", "path": path, "value": "true" }));
                ops.push(json!({ "op": "remove", "path": path }));
                let patch: json_patch::Patch =
                    serde_json::from_value(serde_json::Value::Array(ops))
                        .map_err(kube::Error::SerdeError)?;
                let pp = PatchParams {
                    field_manager: Some(CONTROLLER_MANAGER.into()),
                    ..Default::default()
                };
                let o =
                    patch_returning_meta(&self.nodes, node, &pp, &Patch::<()>::Json(patch)).await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::ApplyNodeEni {
                name,
                uid,
                fields,
                force,
            } => {
                let body = ssa::nodeeni_apply(name, uid_or_none(uid), Some(fields));
                let o = patch_returning_meta(
                    &self.node_enis,
                    name,
                    &apply(*force),
                    &Patch::Apply(&body),
                )
                .await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::ReleaseNodeEni { name, uid } => {
                let body = ssa::nodeeni_apply(name, uid_or_none(uid), None);
                let o = patch_returning_meta(
                    &self.node_enis,
                    name,
                    &apply(false),
                    &Patch::Apply(&body),
                )
                .await?;
                Ok(Outcome::Written(o.metadata.resource_version))
            }
            Write::DeleteNodeState { node, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: uid_or_none(uid).map(str::to_string),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match self.node_states.delete(node, &dp).await {
                    Ok(_) => Ok(Outcome::Written(None)),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(Outcome::Written(None)),
                    Err(e) => Err(e),
                }
            }
            Write::ConfigStatus { config, status } => {
                let body = json!({
                    "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig",
                    "status": status
                });
                // Only the controller writes this status.
                let o = self
                    .configs
                    .patch_status(config, &apply(true), &Patch::Apply(&body))
                    .await?;
                Ok(Outcome::Written(o.resource_version()))
            }
        }
    }
}
