use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::DpdkDriver;

/// Per-node desired DPDK state (spec, written by the controller) and observed state
/// (status, written by the node agent). Named after the node. Follows the SR-IOV
/// Network Operator's SriovNetworkNodeState pattern.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.k8s.aws",
    version = "v1alpha1",
    kind = "DPDKNodeState",
    plural = "dpdknodestates",
    singular = "dpdknodestate",
    shortname = "dpdkns",
    status = "DPDKNodeStateStatus",
    derive = "PartialEq",
    doc = "DPDKNodeState is the per-node contract between the DPDK controller (spec) and the node agent (status). Its name is the node's name.",
    printcolumn(
        name = "Sync",
        type_ = "string",
        json_path = ".status.syncStatus",
        description = "Succeeded, InProgress or Failed"
    ),
    printcolumn(
        name = "Devices",
        type_ = "integer",
        json_path = ".status.boundDevices",
        description = "Devices bound to their DPDK driver"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DPDKNodeStateSpec {
    /// Effective driver options (the seed's writeCombing already folded into writeCombining).
    #[serde(default)]
    pub driver_options: EffectiveDriverOptions,
    /// Devices to bind. Empty means: restore every device to its original driver.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["deviceIndex".into()]))]
    pub devices: Vec<DesiredDevice>,
    /// The DPDKConfigs that asked for this state, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<String>,
    /// The Git revision of those configs, when they came from a DPDKConfigSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Driver options after defaults and the writeCombing alias are applied.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveDriverOptions {
    #[serde(rename = "enableUnsafeNoIOMMU")]
    pub enable_unsafe_no_iommu: bool,
    pub write_combining: bool,
}

impl Default for EffectiveDriverOptions {
    fn default() -> Self {
        Self {
            enable_unsafe_no_iommu: true,
            write_combining: false,
        }
    }
}

/// One device the node agent must bind.
#[derive(
    Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct DesiredDevice {
    #[schemars(range(min = 1))]
    pub device_index: i32,
    /// The NodeENI this device belongs to.
    #[serde(rename = "nodeENI")]
    pub node_eni: String,
    /// The ENI ID from the NodeENI attachment, once known.
    #[serde(default, rename = "eniID", skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    /// An explicit PCI address (NodeENI spec.dpdkPCIAddress), when set.
    #[serde(
        default,
        rename = "pciAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub pci_address: Option<String>,
    pub resource_name: String,
    #[serde(default)]
    pub driver: DpdkDriver,
}

/// Observed state, written by the node agent.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DPDKNodeStateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<SyncStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<ModuleStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceStatus>,
    /// Number of devices bound to their DPDK driver (for the printer column).
    #[serde(default)]
    pub bound_devices: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_plugin: Option<DevicePluginStatus>,
}

/// Overall result of the agent's last sync.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SyncStatus {
    Succeeded,
    InProgress,
    Failed,
}

/// Kernel module state on the node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    pub vfio: bool,
    pub vfio_pci: bool,
    /// vfio's enable_unsafe_noiommu_mode is on.
    pub noiommu: bool,
    /// Other DPDK modules found loaded (igb_uio, uio_pci_generic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<String>,
    pub write_combining: WriteCombiningStatus,
}

/// Write-combining as it really is on the node; never claimed when it is not on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteCombiningStatus {
    pub state: WriteCombiningState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum WriteCombiningState {
    Enabled,
    Unavailable,
    #[default]
    Disabled,
}

/// One device as the agent found and handled it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub device_index: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The kernel interface name before binding (the netdev disappears once bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// The driver the device is bound to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The driver before binding, restored on unbind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_driver: Option<String>,
    pub bound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Healthy, Unhealthy, InUse or Refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the device plugin advertises to kubelet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevicePluginStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<AdvertisedResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_registration_time: Option<Time>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvertisedResource {
    pub resource_name: String,
    pub advertised: i32,
    pub healthy: i32,
}
