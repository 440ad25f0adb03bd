//! A faithful mirror of the AWS Multi-ENI Controller's NodeENI. The Multi-ENI
//! Controller owns this CRD: production manifests never install it. The copy in
//! `deploy/testing/nodeeni-crd.yaml` serves tests and the demo only.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.k8s.aws",
    version = "v1alpha1",
    kind = "NodeENI",
    plural = "nodeenis",
    singular = "nodeeni",
    shortname = "neni",
    status = "NodeENIStatus",
    derive = "PartialEq",
    doc = "NodeENI (AWS Multi-ENI Controller) attaches ENIs to the nodes its selector matches.",
    printcolumn(
        name = "Nodes",
        type_ = "string",
        json_path = ".status.attachments[*].nodeID",
        description = "Nodes with ENIs attached"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeENISpec {
    /// Labels to select nodes that should have ENIs attached.
    pub node_selector: BTreeMap<String, String>,
    /// AWS Subnet ID where the ENI should be created.
    #[serde(default, rename = "subnetID", skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// AWS Subnet IDs; one ENI per subnet, at deviceIndex, deviceIndex+1, ...
    #[serde(default, rename = "subnetIDs", skip_serializing_if = "Option::is_none")]
    pub subnet_ids: Option<Vec<String>>,
    /// AWS Subnet Name (used if subnetID is not provided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_name: Option<String>,
    /// AWS Subnet Names (used if subnetIDs is not provided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_names: Option<Vec<String>>,
    /// AWS Security Group IDs to attach to the ENI.
    #[serde(
        default,
        rename = "securityGroupIDs",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_group_ids: Option<Vec<String>>,
    /// AWS Security Group Names (used if securityGroupIDs is not provided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_names: Option<Vec<String>>,
    /// Device index for the ENI (default 1). With several subnets the i-th gets deviceIndex+i.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 1))]
    pub device_index: Option<i32>,
    /// Whether to delete the ENI when the node is terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub delete_on_termination: Option<bool>,
    /// Description for the ENI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MTU for the ENI (system default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i32>,
    /// Bind the ENI to a DPDK driver.
    #[serde(
        default,
        rename = "enableDPDK",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_dpdk: Option<bool>,
    /// DPDK driver (vfio-pci, igb_uio, uio_pci_generic).
    #[serde(
        default,
        rename = "dpdkDriver",
        skip_serializing_if = "Option::is_none"
    )]
    pub dpdk_driver: Option<String>,
    /// Extended resource name the device is advertised under.
    #[serde(
        default,
        rename = "dpdkResourceName",
        skip_serializing_if = "Option::is_none"
    )]
    pub dpdk_resource_name: Option<String>,
    /// Explicit PCI address of the device, skipping MAC-based discovery.
    #[serde(
        default,
        rename = "dpdkPCIAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub dpdk_pci_address: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeENIStatus {
    /// Upstream declares this list atomic: never server-side-apply it; update one element
    /// with a resourceVersion precondition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<ENIAttachment>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ENIAttachment {
    #[serde(default, rename = "nodeID", skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(
        default,
        rename = "instanceID",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_id: Option<String>,
    #[serde(default, rename = "eniID", skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    #[serde(
        default,
        rename = "attachmentID",
        skip_serializing_if = "Option::is_none"
    )]
    pub attachment_id: Option<String>,
    #[serde(default, rename = "subnetID", skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(
        default,
        rename = "subnetCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    #[serde(default, rename = "dpdkBound", skip_serializing_if = "Option::is_none")]
    pub dpdk_bound: Option<bool>,
    #[serde(
        default,
        rename = "dpdkDriver",
        skip_serializing_if = "Option::is_none"
    )]
    pub dpdk_driver: Option<String>,
    #[serde(
        default,
        rename = "dpdkResourceName",
        skip_serializing_if = "Option::is_none"
    )]
    pub dpdk_resource_name: Option<String>,
    #[serde(
        default,
        rename = "dpdkPCIAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub dpdk_pci_address: Option<String>,
}
