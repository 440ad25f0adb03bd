//! Names shared by the controller, the Git source, the node agent and the manifests.
//! The `dpdk.aws.k8s/*` node labels are the seed guide's and must not change.

/// Node label set by the controller on nodes a DPDKConfig selects; schedules the driver loader.
pub const NODE_ENABLED_LABEL: &str = "dpdk.aws.k8s/enabled";
/// Node label set by the node agent once modules are loaded; schedules the device plugin.
pub const NODE_READY_LABEL: &str = "dpdk.aws.k8s/ready";

/// Field manager of the DPDK controller (node labels, NodeENI DPDK fields, DPDKNodeState spec).
pub const CONTROLLER_MANAGER: &str = "dpdk-controller";
/// Field manager of the Git source applier (DPDKConfig objects).
pub const RECONCILER_MANAGER: &str = "dpdk-reconciler";
/// Field manager of the node agent (DPDKNodeState status, NodeENI attachment dpdk* fields, ready label).
pub const AGENT_MANAGER: &str = "dpdk-node-agent";

/// Label on objects applied from Git.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "dpdk-reconciler";
/// Label naming the DPDKConfigSource (`<namespace>.<name>`) an object came from.
pub const SOURCE_LABEL: &str = "dpdk.aws.k8s/source";
/// Annotation with the Git revision an object was applied from (`<ref>@sha1:<sha>`).
pub const REVISION_ANNOTATION: &str = "dpdk.aws.k8s/revision";
/// Annotation with the object's file in the repository.
pub const ORIGIN_ANNOTATION: &str = "dpdk.aws.k8s/origin";

/// Finalizer the controller puts on DPDKConfigs for two-phase teardown.
pub const CONFIG_FINALIZER: &str = "dpdk.aws.k8s/teardown";

/// Argo CD and Flux ownership markers: objects carrying them are never applied or pruned by us.
pub const ARGOCD_TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
pub const ARGOCD_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const FLUX_KUSTOMIZE_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";

/// Rollout marks on a DPDKNodeState (docs/controller.md, Rollouts). When the controller
/// wrote a spec change the node is still rolling out (RFC 3339); removed once it is updated.
pub const ROLLOUT_UPDATING_SINCE_ANNOTATION: &str = "dpdk.aws.k8s/updating-since";
/// `"true"` when that change counts against `maxUnavailable` (the node had devices).
pub const ROLLOUT_COUNTED_ANNOTATION: &str = "dpdk.aws.k8s/rollout-counted";
/// Since when the node has been ready with that change, while minReadySeconds runs.
pub const ROLLOUT_READY_SINCE_ANNOTATION: &str = "dpdk.aws.k8s/ready-since";
