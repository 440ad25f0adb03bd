//! What the plugin advertises: the desired devices per resource (from the node's
//! DPDKNodeState, or fed directly by tests) joined with what sysfs and `/dev` say
//! about each device right now.
//!
//! [`DesiredState::from_node_state`] and [`evaluate`] are pure; [`observe`] and
//! [`scan`] do the reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dpdk_bridge::api::{DPDKNodeState, DpdkDriver};

use super::naming;
use super::sysfs_view::{self, DeviceFacts};
use crate::sysfs::VfioGroup;

/// One device the plugin should offer under a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OfferedDevice {
    /// Canonical PCI address (`0000:00:06.0`): the kubelet device ID.
    pub pci_address: String,
    /// The driver the device must be bound to for a pod to use it.
    pub driver: DpdkDriver,
}

/// Desired resources and their devices. A resource with no device yet is still
/// served (kubelet shows it with capacity 0), so pods see it appear as soon as a
/// DPDKConfig names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub resources: BTreeMap<String, Vec<OfferedDevice>>,
}

impl DesiredState {
    /// Adds a device to a resource (creating the resource), keeping devices sorted and unique.
    pub fn add(&mut self, resource: impl Into<String>, device: OfferedDevice) -> &mut Self {
        let devices = self.resources.entry(resource.into()).or_default();
        if !devices.iter().any(|d| d.pci_address == device.pci_address) {
            devices.push(device);
            devices.sort();
        }
        self
    }

    /// Declares a resource with no devices (yet).
    pub fn add_resource(&mut self, resource: impl Into<String>) -> &mut Self {
        self.resources.entry(resource.into()).or_default();
        self
    }

    /// The desired state a node's DPDKNodeState describes.
    ///
    /// Resources are the distinct `spec.devices[].resourceName`s (bare names get
    /// `default_prefix`). A device's PCI address is the agent's `status.devices[]`
    /// entry with the same deviceIndex, else an explicit `spec.devices[].pciAddress`;
    /// devices with no known (or no valid) address are not offered yet.
    pub fn from_node_state(state: &DPDKNodeState, default_prefix: &str) -> Self {
        let mut out = Self::default();
        let status_devices = state
            .status
            .as_ref()
            .map(|s| s.devices.as_slice())
            .unwrap_or_default();
        for spec in &state.spec.devices {
            let resource = naming::qualify(&spec.resource_name, default_prefix);
            out.add_resource(resource.clone());
            let reported = status_devices
                .iter()
                .find(|d| d.device_index == spec.device_index)
                .and_then(|d| d.pci_address.clone());
            let Some(address) = reported.or_else(|| spec.pci_address.clone()) else {
                continue;
            };
            match crate::sysfs::PciAddress::parse(&address) {
                Ok(bdf) => {
                    out.add(
                        resource,
                        OfferedDevice {
                            pci_address: bdf.to_string(),
                            driver: spec.driver,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(node = %state.metadata.name.as_deref().unwrap_or_default(), device_index = spec.device_index, error = %e, "skipping device")
                }
            }
        }
        out
    }
}

/// The character device a container needs for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevNode {
    /// A VFIO group (`/dev/vfio/N`, or `/dev/vfio/noiommu-N` on the host in noiommu mode).
    Vfio(VfioGroup),
    /// A UIO device `/dev/uioN` (igb_uio, uio_pci_generic).
    Uio(u32),
}

impl DevNode {
    /// The node's path on the host, as the kubelet (not this process) sees it.
    pub fn host_path(&self) -> String {
        match self {
            DevNode::Vfio(g) => format!("/dev/vfio/{}", g.dev_name()),
            DevNode::Uio(n) => format!("/dev/uio{n}"),
        }
    }

    /// Where the container sees it: `/dev/vfio/N` even for noiommu (DPDK opens that path).
    pub fn container_path(&self) -> String {
        match self {
            DevNode::Vfio(g) => g.container_path(),
            DevNode::Uio(n) => format!("/dev/uio{n}"),
        }
    }

    /// The same node under this process's view of `/dev` (`--dev-root`).
    pub fn path_under(&self, dev_root: &Path) -> PathBuf {
        match self {
            DevNode::Vfio(g) => g.host_path(dev_root),
            DevNode::Uio(n) => dev_root.join(format!("uio{n}")),
        }
    }
}

/// A desired device with its observed state and health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    pub pci_address: String,
    pub expected_driver: DpdkDriver,
    /// The driver bound now.
    pub bound_driver: Option<String>,
    /// The node the container needs, when the device has one.
    pub dev_node: Option<DevNode>,
    pub numa_node: Option<u32>,
    /// Why the device is unhealthy; `None` means Healthy.
    pub problem: Option<String>,
}

impl DeviceState {
    pub fn healthy(&self) -> bool {
        self.problem.is_none()
    }
}

/// Devices per resource, as last observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub resources: BTreeMap<String, Vec<DeviceState>>,
}

impl Snapshot {
    pub fn devices(&self, resource: &str) -> &[DeviceState] {
        self.resources
            .get(resource)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn device(&self, resource: &str, pci_address: &str) -> Option<&DeviceState> {
        self.devices(resource)
            .iter()
            .find(|d| d.pci_address == pci_address)
    }
}

/// Health rule: Healthy iff the device is bound to the expected driver AND its
/// character device (VFIO group or UIO node) exists. Pure.
pub fn evaluate(desired: &OfferedDevice, facts: Result<DeviceFacts, String>) -> DeviceState {
    let mut state = DeviceState {
        pci_address: desired.pci_address.clone(),
        expected_driver: desired.driver,
        bound_driver: None,
        dev_node: None,
        numa_node: None,
        problem: None,
    };
    let facts = match facts {
        Ok(f) => f,
        Err(problem) => {
            state.problem = Some(problem);
            return state;
        }
    };
    state.bound_driver = facts.driver.clone();
    state.numa_node = facts.numa_node;
    let expected = desired.driver.as_str();
    state.dev_node = match desired.driver {
        DpdkDriver::VfioPci => facts.vfio_group.map(DevNode::Vfio),
        DpdkDriver::IgbUio | DpdkDriver::UioPciGeneric => facts.uio.map(DevNode::Uio),
    };
    state.problem = if facts.driver.as_deref() != Some(expected) {
        Some(format!(
            "bound to {} instead of {expected}",
            facts.driver.as_deref().unwrap_or("no driver")
        ))
    } else if state.dev_node.is_none() {
        Some(match desired.driver {
            DpdkDriver::VfioPci => "has no IOMMU group (vfio cannot use it)".to_string(),
            _ => "has no uio device".to_string(),
        })
    } else if !facts.dev_node_exists {
        state
            .dev_node
            .map(|n| format!("{} does not exist", n.host_path()))
    } else {
        None
    };
    state
}

/// Where to look: the sysfs tree and this process's view of `/dev`.
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub sysfs_root: PathBuf,
    pub dev_root: PathBuf,
}

/// Reads one device's state now.
pub fn observe(paths: &HostPaths, desired: &OfferedDevice) -> DeviceState {
    let facts = sysfs_view::device_facts(
        &paths.sysfs_root,
        &paths.dev_root,
        &desired.pci_address,
        desired.driver,
    )
    .map_err(|e| e.to_string());
    evaluate(desired, facts)
}

/// Reads every desired device.
pub fn scan(paths: &HostPaths, desired: &DesiredState) -> Snapshot {
    Snapshot {
        resources: desired
            .resources
            .iter()
            .map(|(resource, devices)| {
                (
                    resource.clone(),
                    devices.iter().map(|d| observe(paths, d)).collect(),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk_bridge::api::{
        DPDKNodeStateSpec, DPDKNodeStateStatus, DesiredDevice as SpecDevice, DeviceStatus,
    };

    fn vfio(bdf: &str) -> OfferedDevice {
        OfferedDevice {
            pci_address: bdf.into(),
            driver: DpdkDriver::VfioPci,
        }
    }

    fn facts(driver: Option<&str>, group: Option<VfioGroup>, exists: bool) -> DeviceFacts {
        DeviceFacts {
            driver: driver.map(Into::into),
            vfio_group: group,
            uio: None,
            numa_node: Some(0),
            dev_node_exists: exists,
        }
    }

    #[test]
    fn healthy_needs_expected_driver_and_dev_node() {
        let d = vfio("0000:00:06.0");
        assert!(
            evaluate(
                &d,
                Ok(facts(Some("vfio-pci"), Some(VfioGroup::Iommu(7)), true))
            )
            .healthy()
        );

        let wrong = evaluate(&d, Ok(facts(Some("ena"), Some(VfioGroup::Iommu(7)), true)));
        assert_eq!(
            wrong.problem.as_deref(),
            Some("bound to ena instead of vfio-pci")
        );

        let unbound = evaluate(&d, Ok(facts(None, None, false)));
        assert_eq!(
            unbound.problem.as_deref(),
            Some("bound to no driver instead of vfio-pci")
        );

        let no_node = evaluate(
            &d,
            Ok(facts(Some("vfio-pci"), Some(VfioGroup::NoIommu(3)), false)),
        );
        assert_eq!(
            no_node.problem.as_deref(),
            Some("/dev/vfio/noiommu-3 does not exist")
        );

        let no_group = evaluate(&d, Ok(facts(Some("vfio-pci"), None, false)));
        assert!(no_group.problem.is_some_and(|p| p.contains("IOMMU group")));

        let missing = evaluate(&d, Err("PCI device 0000:00:06.0 not found".into()));
        assert!(!missing.healthy());
    }

    #[test]
    fn uio_devices_need_their_uio_node() {
        let d = OfferedDevice {
            pci_address: "0000:00:07.0".into(),
            driver: DpdkDriver::IgbUio,
        };
        let f = DeviceFacts {
            driver: Some("igb_uio".into()),
            vfio_group: None,
            uio: Some(2),
            numa_node: None,
            dev_node_exists: true,
        };
        let s = evaluate(&d, Ok(f.clone()));
        assert!(s.healthy());
        assert_eq!(
            s.dev_node.map(|n| n.host_path()).as_deref(),
            Some("/dev/uio2")
        );
        let gone = evaluate(
            &d,
            Ok(DeviceFacts {
                dev_node_exists: false,
                ..f
            }),
        );
        assert_eq!(gone.problem.as_deref(), Some("/dev/uio2 does not exist"));
    }

    #[test]
    fn noiommu_paths() {
        let n = DevNode::Vfio(VfioGroup::NoIommu(4));
        assert_eq!(n.host_path(), "/dev/vfio/noiommu-4");
        assert_eq!(n.container_path(), "/dev/vfio/4");
        let i = DevNode::Vfio(VfioGroup::Iommu(36));
        assert_eq!(
            (i.host_path(), i.container_path()),
            ("/dev/vfio/36".into(), "/dev/vfio/36".into())
        );
    }

    #[test]
    fn desired_state_from_node_state_joins_spec_and_status_by_device_index() {
        let mut ns = DPDKNodeState::new(
            "node-a",
            DPDKNodeStateSpec {
                devices: vec![
                    SpecDevice {
                        device_index: 2,
                        node_eni: "eni-a".into(),
                        eni_id: None,
                        pci_address: None,
                        resource_name: "intel.com/intel_sriov_netdevice_2".into(),
                        driver: DpdkDriver::VfioPci,
                    },
                    SpecDevice {
                        device_index: 3,
                        node_eni: "eni-b".into(),
                        eni_id: None,
                        pci_address: Some("00:07.0".into()),
                        resource_name: "bare_name".into(),
                        driver: DpdkDriver::IgbUio,
                    },
                    SpecDevice {
                        device_index: 4,
                        node_eni: "eni-c".into(),
                        eni_id: None,
                        pci_address: None,
                        resource_name: "intel.com/intel_sriov_netdevice_2".into(),
                        driver: DpdkDriver::VfioPci,
                    },
                ],
                ..Default::default()
            },
        );
        ns.status = Some(DPDKNodeStateStatus {
            devices: vec![DeviceStatus {
                device_index: 2,
                pci_address: Some("0000:00:06.0".into()),
                bound: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        let desired = DesiredState::from_node_state(&ns, "intel.com");
        let mut want = DesiredState::default();
        want.add("intel.com/intel_sriov_netdevice_2", vfio("0000:00:06.0"));
        want.add(
            "intel.com/bare_name",
            OfferedDevice {
                pci_address: "0000:00:07.0".into(),
                driver: DpdkDriver::IgbUio,
            },
        );
        assert_eq!(
            desired, want,
            "index 4 has no address yet: the resource is there, the device is not"
        );

        ns.spec.devices.clear();
        assert_eq!(
            DesiredState::from_node_state(&ns, "intel.com"),
            DesiredState::default()
        );
    }
}
