use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Cluster-wide DPDK settings for the nodes that match `nodeSelector`.
// kube's `printcolumn(name = .., type_ = ..)` repeats `type_` once per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "networking.k8s.aws",
    version = "v1alpha1",
    kind = "DPDKConfig",
    plural = "dpdkconfigs",
    singular = "dpdkconfig",
    shortname = "dpdk",
    status = "DPDKConfigStatus",
    derive = "PartialEq",
    doc = "DPDKConfig declares which nodes run DPDK, with which kernel driver options, and which ENI device indices are bound and exposed under which extended resource name.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "ReadyNodes",
        type_ = "integer",
        json_path = ".status.readyNodes",
        description = "Nodes whose DPDKNodeState reports Succeeded for this config's devices"
    ),
    printcolumn(
        name = "MatchedNodes",
        type_ = "integer",
        json_path = ".status.matchedNodes",
        description = "Nodes that carry every label in spec.nodeSelector"
    ),
    printcolumn(
        name = "Up-To-Date",
        type_ = "string",
        json_path = ".status.rollout.upToDate",
        description = "Matched nodes the rollout of this generation has finished, of the matched nodes (updated/matched)"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision",
        description = "Git revision this object was applied from"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DPDKConfigSpec {
    /// Labels a node must carry, all of them, to be configured for DPDK. Must not be empty.
    #[x_kube(validation = Rule::new("size(self) > 0").message("spec.nodeSelector must not be empty: an empty selector would select every node in the cluster"))]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: BTreeMap<String, String>,

    /// Kernel driver options applied on the selected nodes.
    #[serde(default)]
    pub driver_options: DriverOptions,

    /// Which ENI device indices are bound to a DPDK driver and how they are exposed to pods.
    /// A list-map keyed by deviceIndex: each index appears at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["deviceIndex".into()]))]
    #[schemars(extend("maxItems" = 32))]
    pub resource_mapping: Vec<ResourceMapping>,

    /// How a change reaches the selected nodes: in waves of at most maxUnavailable nodes,
    /// canaries first, halting on the first failure. Absent: the defaults of each field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// The default `maxUnavailable`: a quarter of the rollout's nodes, rounded down, at least 1.
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";
/// The default `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// Staged, health-gated rollout of a DPDKConfig change. Every field has a default, applied
/// by the controller and never written into the object (docs/controller.md, Rollouts).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// How many nodes may be changing (or failed) at once: a count (>= 1) or a percentage
    /// of the rollout's nodes, rounded down and at least 1 node. Default 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 1 : self.matches('^(100|[1-9]?[0-9])%$')").message("maxUnavailable must be an integer >= 1 or a percentage from 0% to 100%, e.g. 25%"))]
    pub max_unavailable: Option<IntOrString>,

    /// Nodes that go first: every canary must have finished before any other node changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_selector: Option<LabelSelector>,

    /// How long a node must report Succeeded with its devices advertised healthy before
    /// it counts as updated. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub min_ready_seconds: Option<i32>,

    /// How long a node may take, from its new spec to updated, before the rollout halts.
    /// Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: Option<i32>,

    /// No further node is changed while true; clearing it resumes the rollout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// Kernel driver options.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.writeCombining) || !has(self.writeCombing) || self.writeCombining == self.writeCombing").message("spec.driverOptions.writeCombing is a misspelling of writeCombining; when both are set they must agree"))]
pub struct DriverOptions {
    /// Load vfio with enable_unsafe_noiommu_mode=1 (EC2 instances without a vIOMMU need it).
    #[serde(rename = "enableUnsafeNoIOMMU", default = "default_true")]
    pub enable_unsafe_no_iommu: bool,

    /// Ask for write-combining on the device BARs. Defaults to false. Mainline vfio-pci has
    /// no write-combining knob; the node agent reports honestly whether it is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_combining: Option<bool>,

    /// Deprecated: the seed guide's misspelling of writeCombining. Accepted and honoured
    /// as writeCombining; the controller and `validate` warn about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_combing: Option<bool>,
}

fn default_true() -> bool {
    true
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            enable_unsafe_no_iommu: true,
            write_combining: None,
            write_combing: None,
        }
    }
}

impl DriverOptions {
    /// writeCombining as the user meant it: the correct spelling wins, then the seed's
    /// misspelling, then the default (false).
    pub fn effective_write_combining(&self) -> bool {
        self.write_combining.or(self.write_combing).unwrap_or(false)
    }

    /// True when the object uses the misspelt `writeCombing` key.
    pub fn uses_misspelt_write_combing(&self) -> bool {
        self.write_combing.is_some()
    }
}

/// One ENI device index bound to a DPDK driver and exposed as an extended resource.
#[derive(
    KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMapping {
    /// The ENI's device index on the instance (as in NodeENI.spec.deviceIndex). Must be >= 1.
    #[x_kube(validation = Rule::new("self >= 1").message("deviceIndex must be >= 1: index 0 is the node's primary ENI, and binding it to a DPDK driver would cut the node off the network"))]
    #[schemars(extend("maximum" = 255))]
    pub device_index: i32,

    /// The extended resource pods request, `<domain>/<name>`, e.g. intel.com/intel_sriov_netdevice_2.
    #[x_kube(validation = Rule::new(r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message("resourceName must be an extended resource name of the form <domain>/<name>, e.g. intel.com/intel_sriov_netdevice_2"))]
    #[schemars(length(min = 3, max = 317))]
    pub resource_name: String,

    /// The DPDK-compatible kernel driver to bind the device to.
    #[serde(default)]
    pub driver: DpdkDriver,
}

/// A DPDK-compatible kernel driver.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
pub enum DpdkDriver {
    #[default]
    #[serde(rename = "vfio-pci")]
    VfioPci,
    #[serde(rename = "igb_uio")]
    IgbUio,
    #[serde(rename = "uio_pci_generic")]
    UioPciGeneric,
}

impl DpdkDriver {
    /// The name as the kernel and the CRD spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DpdkDriver::VfioPci => "vfio-pci",
            DpdkDriver::IgbUio => "igb_uio",
            DpdkDriver::UioPciGeneric => "uio_pci_generic",
        }
    }

    /// All drivers, in the order the CRD lists them.
    pub const ALL: [DpdkDriver; 3] = [
        DpdkDriver::VfioPci,
        DpdkDriver::IgbUio,
        DpdkDriver::UioPciGeneric,
    ];
}

impl std::fmt::Display for DpdkDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// kstatus-compatible status, written by the DPDK controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DPDKConfigStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, plus Reconciling and Stalled only while True.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Nodes that carry every label in spec.nodeSelector.
    #[serde(default)]
    pub matched_nodes: i32,
    /// Nodes whose DPDKNodeState reports Succeeded for this config's devices.
    #[serde(default)]
    pub ready_nodes: i32,
    /// Names of the ready nodes (the seed's field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes_ready: Vec<String>,
    /// NodeENIs whose DPDK fields this config drives.
    #[serde(
        default,
        rename = "updatedNodeENIs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub updated_node_enis: Vec<String>,
    /// The Git revision (`<ref>@sha1:<sha>`) this object was applied from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Conflicts found while planning; the other party's data is left untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConfigConflict>,
    /// The rollout of the current generation to the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where the rollout of a DPDKConfig generation stands.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The metadata.generation this rollout rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Progressing, Paused, Stalled or Complete.
    pub phase: RolloutPhase,
    /// Nodes that have the new spec and were ready for minReadySeconds.
    #[serde(default)]
    pub updated_nodes: i32,
    /// Nodes with the new spec that are not ready yet.
    #[serde(default)]
    pub updating_nodes: i32,
    /// Nodes waiting their turn.
    #[serde(default)]
    pub pending_nodes: i32,
    /// Nodes that reported Failed or missed progressDeadlineSeconds; they halt the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_nodes: Vec<String>,
    /// `updated/matched` over the matched nodes, for the Up-To-Date printer column.
    #[serde(default)]
    pub up_to_date: String,
}

/// The phase of a rollout.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RolloutPhase {
    /// Nodes are changing or waiting their turn.
    #[default]
    Progressing,
    /// `spec.rollout.paused`: no further node is changed.
    Paused,
    /// A node failed or missed its deadline: no further node is changed.
    Stalled,
    /// Every node has the current generation.
    Complete,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Stalled => "Stalled",
            RolloutPhase::Complete => "Complete",
        }
    }
}

/// A conflict the controller found and did not resolve by overwriting.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigConflict {
    /// OverlappingConfig, SelectorReachesUnmatchedNodes, PartialMultiSubnet or FieldManagerConflict.
    pub reason: String,
    /// Human-readable explanation naming the other party.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_index: Option<i32>,
    #[serde(default, rename = "nodeENI", skip_serializing_if = "Option::is_none")]
    pub node_eni: Option<String>,
    /// The other DPDKConfig, for OverlappingConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_config: Option<String>,
    /// The other field manager, for FieldManagerConflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
}
