//! The DevicePlugin gRPC service of one resource. Thin glue: the decisions are in
//! [`allocate`](super::allocate), [`preferred`](super::preferred) and
//! [`inventory`](super::inventory).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::allocate::{self, AllocateError};
use super::api::v1beta1::device_plugin_server::DevicePlugin;
use super::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
    TopologyInfo,
};
use super::api::{HEALTHY, UNHEALTHY};
use super::inventory::{self, HostPaths, OfferedDevice, Snapshot};
use super::metrics::{AllocationLabels, Metrics, Outcome, ResourceLabels};
use super::preferred;

/// The options this plugin registers with and reports.
pub fn plugin_options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// The device list of `resource` as ListAndWatch sends it.
pub fn advertised_devices(snapshot: &Snapshot, resource: &str) -> Vec<Device> {
    snapshot
        .devices(resource)
        .iter()
        .map(|d| Device {
            id: d.pci_address.clone(),
            health: if d.healthy() { HEALTHY } else { UNHEALTHY }.to_string(),
            topology: d.numa_node.map(|n| TopologyInfo {
                nodes: vec![NumaNode { id: i64::from(n) }],
            }),
        })
        .collect()
}

/// DevicePlugin for one resource.
#[derive(Clone)]
pub struct PluginService {
    resource: String,
    paths: HostPaths,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Cancelled when this resource's server shuts down: ends every ListAndWatch stream.
    stop: CancellationToken,
    metrics: Metrics,
}

impl PluginService {
    pub fn new(
        resource: String,
        paths: HostPaths,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
        metrics: Metrics,
    ) -> Self {
        Self {
            resource,
            paths,
            snapshots,
            stop,
            metrics,
        }
    }

    fn count(&self, outcome: Outcome) {
        self.metrics
            .allocations
            .get_or_create(&AllocationLabels {
                resource: self.resource.clone(),
                outcome,
            })
            .inc();
    }
}

type ListAndWatchStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(plugin_options()))
    }

    type ListAndWatchStream = ListAndWatchStream;

    /// Sends the list at once, then again on every change of this resource's devices
    /// (health, binding, devices added or removed). Ends only when the server stops.
    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        tracing::info!(resource = %self.resource, "ListAndWatch opened");
        let state = (
            self.snapshots.clone(),
            None::<Vec<Device>>,
            self.stop.clone(),
            self.resource.clone(),
        );
        let stream = futures::stream::unfold(state, |(mut rx, last, stop, resource)| async move {
            loop {
                // A resource gone from the snapshot is about to be stopped: send nothing.
                let devices = {
                    let snapshot = rx.borrow_and_update();
                    snapshot
                        .resources
                        .contains_key(&resource)
                        .then(|| advertised_devices(&snapshot, &resource))
                };
                if let Some(devices) = devices.filter(|d| last.as_ref() != Some(d)) {
                    tracing::debug!(%resource, devices = devices.len(), "ListAndWatch update");
                    let response = ListAndWatchResponse {
                        devices: devices.clone(),
                    };
                    return Some((Ok(response), (rx, Some(devices), stop, resource)));
                }
                tokio::select! {
                    () = stop.cancelled() => {
                        tracing::info!(%resource, "ListAndWatch closed: server stopping");
                        return None;
                    }
                    changed = rx.changed() => if changed.is_err() {
                        return None;
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let snapshot = self.snapshots.borrow().clone();
        let numa = |id: &str| {
            snapshot
                .device(&self.resource, id)
                .and_then(|d| d.numa_node)
        };
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|c| {
                let size = usize::try_from(c.allocation_size).unwrap_or(0);
                let device_i_ds = preferred::preferred_allocation(
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    size,
                    numa,
                );
                ContainerPreferredAllocationResponse { device_i_ds }
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    /// Checks each device as it is NOW (sysfs and /dev read again), not as last polled.
    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let snapshot = self.snapshots.borrow().clone();
        let lookup = |id: &str| {
            let known = snapshot.device(&self.resource, id)?;
            let desired = OfferedDevice {
                pci_address: known.pci_address.clone(),
                driver: known.expected_driver,
            };
            Some(inventory::observe(&self.paths, &desired))
        };
        let mut container_responses = Vec::new();
        for container in request.into_inner().container_requests {
            match allocate::container_response(&self.resource, &container.devices_ids, lookup) {
                Ok(response) => {
                    tracing::info!(resource = %self.resource, devices = ?container.devices_ids, "allocated");
                    self.count(Outcome::Ok);
                    self.metrics
                        .allocated_devices
                        .get_or_create(&ResourceLabels {
                            resource: self.resource.clone(),
                        })
                        .inc_by(container.devices_ids.len() as u64);
                    container_responses.push(response);
                }
                Err(e) => {
                    tracing::warn!(resource = %self.resource, error = %e, "Allocate refused");
                    self.count(match e {
                        AllocateError::Unknown { .. } => Outcome::Unknown,
                        AllocateError::Unhealthy { .. } => Outcome::Unhealthy,
                        AllocateError::Empty { .. } => Outcome::Invalid,
                    });
                    return Err(e.into());
                }
            }
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
