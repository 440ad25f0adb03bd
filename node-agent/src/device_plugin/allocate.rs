//! Allocate: what a container gets for a set of device IDs. Pure: the caller passes
//! each device's state as observed at allocation time.
//!
//! - vfio-pci: `/dev/vfio/vfio` plus each device's group node, read-write. In noiommu
//!   mode the host node is `/dev/vfio/noiommu-N` and the container sees `/dev/vfio/N`.
//! - igb_uio / uio_pci_generic: `/dev/uioN`, read-write.
//! - `PCIDEVICE_<PREFIX>_<NAME>` = the BDFs, comma-separated, and `..._INFO` = JSON in
//!   sriov-network-device-plugin's format:
//!   `{"<bdf>":{"generic":{"deviceID":"<bdf>"},"vfio":{"dev-mount":"/dev/vfio/N","mount":"/dev/vfio/vfio"}}}`.

use std::collections::BTreeMap;

use super::api::v1beta1::{ContainerAllocateResponse, DeviceSpec};
use super::inventory::{DevNode, DeviceState};
use super::naming;

/// The VFIO container node every vfio user needs.
pub const VFIO_CONTAINER_NODE: &str = "/dev/vfio/vfio";
const PERMISSIONS: &str = "rw";

/// Why an allocation was refused; each names the device ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error("unknown device ID {id:?}: resource {resource} has no such device")]
    Unknown { resource: String, id: String },
    #[error("device {id} of resource {resource} is unhealthy: {reason}")]
    Unhealthy {
        resource: String,
        id: String,
        reason: String,
    },
    #[error("no device IDs in the request for resource {resource}")]
    Empty { resource: String },
}

impl From<AllocateError> for tonic::Status {
    fn from(e: AllocateError) -> Self {
        match e {
            AllocateError::Unknown { .. } | AllocateError::Empty { .. } => {
                tonic::Status::invalid_argument(e.to_string())
            }
            AllocateError::Unhealthy { .. } => tonic::Status::failed_precondition(e.to_string()),
        }
    }
}

/// The response for one container asking for `ids` of `resource`. `lookup` returns a
/// device's current state, or `None` when the resource does not offer that ID.
pub fn container_response(
    resource: &str,
    ids: &[String],
    lookup: impl Fn(&str) -> Option<DeviceState>,
) -> Result<ContainerAllocateResponse, AllocateError> {
    if ids.is_empty() {
        return Err(AllocateError::Empty {
            resource: resource.to_string(),
        });
    }
    let mut devices = Vec::with_capacity(ids.len());
    for id in ids {
        let state = lookup(id).ok_or_else(|| AllocateError::Unknown {
            resource: resource.to_string(),
            id: id.clone(),
        })?;
        if let Some(reason) = &state.problem {
            return Err(AllocateError::Unhealthy {
                resource: resource.to_string(),
                id: id.clone(),
                reason: reason.clone(),
            });
        }
        devices.push(state);
    }

    let mut specs: Vec<DeviceSpec> = Vec::new();
    let mut push = |host: String, container: String| {
        if !specs.iter().any(|s| s.host_path == host) {
            specs.push(DeviceSpec {
                container_path: container,
                host_path: host,
                permissions: PERMISSIONS.to_string(),
            });
        }
    };
    let mut info: BTreeMap<String, BTreeMap<&'static str, BTreeMap<&'static str, String>>> =
        BTreeMap::new();
    for d in &devices {
        let mut entry = BTreeMap::from([(
            "generic",
            BTreeMap::from([("deviceID", d.pci_address.clone())]),
        )]);
        match d.dev_node {
            Some(node @ DevNode::Vfio(_)) => {
                push(
                    VFIO_CONTAINER_NODE.to_string(),
                    VFIO_CONTAINER_NODE.to_string(),
                );
                push(node.host_path(), node.container_path());
                entry.insert(
                    "vfio",
                    BTreeMap::from([
                        ("dev-mount", node.container_path()),
                        ("mount", VFIO_CONTAINER_NODE.to_string()),
                    ]),
                );
            }
            Some(node @ DevNode::Uio(_)) => {
                push(node.host_path(), node.container_path());
                entry.insert("uio", BTreeMap::from([("mount", node.container_path())]));
            }
            // A healthy device always has its node; nothing to mount otherwise.
            None => {}
        }
        info.insert(d.pci_address.clone(), entry);
    }

    let bdfs: Vec<&str> = devices.iter().map(|d| d.pci_address.as_str()).collect();
    // Serialising string maps cannot fail.
    let info_json = serde_json::to_string(&info).unwrap_or_default();
    let envs = std::collections::HashMap::from([
        (naming::env_var_name(resource), bdfs.join(",")),
        (naming::info_env_var_name(resource), info_json),
    ]);
    Ok(ContainerAllocateResponse {
        envs,
        devices: specs,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::VfioGroup;
    use dpdk_bridge::api::DpdkDriver;

    const RES: &str = "intel.com/intel_sriov_netdevice_2";

    fn dev(bdf: &str, node: DevNode, problem: Option<&str>) -> DeviceState {
        DeviceState {
            pci_address: bdf.into(),
            expected_driver: DpdkDriver::VfioPci,
            bound_driver: Some("vfio-pci".into()),
            dev_node: Some(node),
            numa_node: None,
            problem: problem.map(Into::into),
        }
    }

    fn lookup(devs: Vec<DeviceState>) -> impl Fn(&str) -> Option<DeviceState> {
        move |id| devs.iter().find(|d| d.pci_address == id).cloned()
    }

    fn spec(host: &str, container: &str) -> DeviceSpec {
        DeviceSpec {
            host_path: host.into(),
            container_path: container.into(),
            permissions: "rw".into(),
        }
    }

    #[test]
    fn two_devices_sharing_a_group_mount_it_once() {
        let l = lookup(vec![
            dev("0000:00:06.0", DevNode::Vfio(VfioGroup::Iommu(36)), None),
            dev("0000:00:07.0", DevNode::Vfio(VfioGroup::Iommu(36)), None),
        ]);
        let r = container_response(RES, &["0000:00:06.0".into(), "0000:00:07.0".into()], l)
            .expect("ok");
        assert_eq!(
            r.devices,
            vec![
                spec("/dev/vfio/vfio", "/dev/vfio/vfio"),
                spec("/dev/vfio/36", "/dev/vfio/36")
            ]
        );
        assert_eq!(
            r.envs
                .get("PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2")
                .map(String::as_str),
            Some("0000:00:06.0,0000:00:07.0")
        );
    }

    #[test]
    fn uio_device_gets_its_node_and_info() {
        let mut d = dev("0000:00:08.0", DevNode::Uio(1), None);
        d.expected_driver = DpdkDriver::IgbUio;
        let r = container_response(RES, &["0000:00:08.0".into()], lookup(vec![d])).expect("ok");
        assert_eq!(r.devices, vec![spec("/dev/uio1", "/dev/uio1")]);
        let info = r
            .envs
            .get("PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2_INFO")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            info,
            r#"{"0000:00:08.0":{"generic":{"deviceID":"0000:00:08.0"},"uio":{"mount":"/dev/uio1"}}}"#
        );
    }

    #[test]
    fn errors_name_the_id_and_map_to_grpc_codes() {
        let l = lookup(vec![dev(
            "0000:00:06.0",
            DevNode::Vfio(VfioGroup::Iommu(1)),
            Some("bound to ena instead of vfio-pci"),
        )]);
        let e = container_response(RES, &["0000:00:09.0".into()], &l).expect_err("unknown");
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("0000:00:09.0"), "{}", s.message());

        let e = container_response(RES, &["0000:00:06.0".into()], &l).expect_err("unhealthy");
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message().contains("0000:00:06.0") && s.message().contains("ena"),
            "{}",
            s.message()
        );

        let s = tonic::Status::from(container_response(RES, &[], &l).expect_err("empty"));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
    }
}
