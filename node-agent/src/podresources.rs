//! Which devices pods hold, from the kubelet's PodResources API
//! (`/var/lib/kubelet/pod-resources/kubelet.sock`, `v1.PodResourcesLister/List`).
//!
//! The agent only needs one call and a few fields, so the messages are declared here with
//! prost's derive (field numbers from k8s.io/kubelet/pkg/apis/podresources/v1/api.proto)
//! instead of generating the whole API. Unknown fields are skipped by prost, so newer
//! kubelets are read fine.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::error::Error;

/// The kubelet's PodResources socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// gRPC method path of `List`.
pub const LIST_PATH: &str = "/v1.PodResourcesLister/List";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pub pod_resources: Vec<PodResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
}

/// Device IDs (PCI addresses, as the device plugin advertises them) that some container holds.
pub fn devices_in_use(resp: &ListPodResourcesResponse) -> BTreeSet<String> {
    resp.pod_resources
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
        .flat_map(|d| &d.device_ids)
        .map(|id| {
            crate::sysfs::PciAddress::parse(id)
                .map(String::from)
                .unwrap_or_else(|_| id.clone())
        })
        .collect()
}

/// Asks the kubelet which devices pods hold. `Ok(None)` when the socket does not exist
/// (no kubelet here, or the API is not mounted): then nothing blocks a restore.
pub async fn list_in_use(socket: &Path) -> Result<Option<BTreeSet<String>>, Error> {
    if !socket.exists() {
        return Ok(None);
    }
    let err = |message: String| Error::PodResources {
        socket: socket.display().to_string(),
        message,
    };
    let call = async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
                .map_err(|e| err(e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
                .map_err(|e| err(format!("connect: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| err(format!("not ready: {e}")))?;
        let codec =
            tonic_prost::ProstCodec::<ListPodResourcesRequest, ListPodResourcesResponse>::default();
        let resp = grpc
            .unary(
                tonic::Request::new(ListPodResourcesRequest {}),
                http::uri::PathAndQuery::from_static(LIST_PATH),
                codec,
            )
            .await
            .map_err(|s| err(format!("List: {s}")))?;
        Ok(Some(devices_in_use(resp.get_ref())))
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| err("no answer within 5s".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_device_ids_of_every_container_canonically() {
        let resp = ListPodResourcesResponse {
            pod_resources: vec![PodResources {
                name: "dpdk-app".into(),
                namespace: "default".into(),
                containers: vec![ContainerResources {
                    name: "app".into(),
                    devices: vec![ContainerDevices {
                        resource_name: "intel.com/intel_sriov_netdevice_2".into(),
                        device_ids: vec!["00:06.0".into(), "0000:00:07.0".into()],
                    }],
                }],
            }],
        };
        let used = devices_in_use(&resp);
        assert!(
            used.contains("0000:00:06.0") && used.contains("0000:00:07.0"),
            "{used:?}"
        );
    }
}
