//! Reports what the plugin advertises in `DPDKNodeState.status.devicePlugin`, by
//! server-side apply on the status subresource with its own field manager, so it
//! never touches the fields the node agent reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::api::{AdvertisedResource, DPDKNodeState, DevicePluginStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::inventory::Snapshot;
use crate::error::Error;

/// Field manager of the device plugin's status writes.
pub const FIELD_MANAGER: &str = "dpdk-device-plugin";
/// Changes closer together than this are reported once.
const SETTLE: Duration = Duration::from_millis(200);
/// Retry delay after a failed write.
const RETRY: Duration = Duration::from_secs(5);

/// Where to report: the node's DPDKNodeState.
#[derive(Clone)]
pub struct NodeReporter {
    pub client: Client,
    pub node: String,
}

/// The status the plugin reports for a snapshot. Pure.
pub fn device_plugin_status(
    snapshot: &Snapshot,
    last_registration: Option<&Time>,
) -> DevicePluginStatus {
    DevicePluginStatus {
        resources: snapshot
            .resources
            .iter()
            .map(|(name, devices)| AdvertisedResource {
                resource_name: name.clone(),
                advertised: i32::try_from(devices.len()).unwrap_or(i32::MAX),
                healthy: i32::try_from(devices.iter().filter(|d| d.healthy()).count())
                    .unwrap_or(i32::MAX),
            })
            .collect(),
        last_registration_time: last_registration.cloned(),
    }
}

impl NodeReporter {
    /// Applies `status.devicePlugin` (and nothing else) on the node's DPDKNodeState.
    pub async fn apply(&self, status: &DevicePluginStatus) -> Result<(), Error> {
        let api: Api<DPDKNodeState> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "apiVersion": DPDKNodeState::api_version(&()),
            "kind": DPDKNodeState::kind(&()),
            "metadata": { "name": self.node },
            "status": { "devicePlugin": status },
        });
        api.patch_status(
            &self.node,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Reports on every change of the snapshot or of the last registration time until `stop`.
    /// A missing DPDKNodeState (404) is retried like any other failure.
    pub async fn run(
        self,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        mut registrations: watch::Receiver<BTreeMap<String, Time>>,
        stop: CancellationToken,
    ) {
        let mut reported: Option<DevicePluginStatus> = None;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            let last = registrations
                .borrow_and_update()
                .values()
                .max_by_key(|t| t.0)
                .cloned();
            let status = device_plugin_status(&snapshot, last.as_ref());
            let mut wait = None;
            if reported.as_ref() != Some(&status) {
                match self.apply(&status).await {
                    Ok(()) => {
                        tracing::debug!(node = %self.node, "reported devicePlugin status");
                        reported = Some(status);
                    }
                    Err(Error::Kube(kube::Error::Api(status))) if status.is_not_found() => {
                        // Not created yet, or deleted at teardown: nothing to report on.
                        tracing::debug!(node = %self.node, "no DPDKNodeState to report on yet");
                        wait = Some(RETRY);
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e, "reporting devicePlugin status; retrying");
                        wait = Some(RETRY);
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = async { tokio::time::sleep(wait.unwrap_or_default()).await }, if wait.is_some() => continue,
                changed = snapshots.changed() => if changed.is_err() { return },
                changed = registrations.changed() => if changed.is_err() { return },
            }
            // Let a burst of changes settle into one write.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SETTLE) => {}
            }
        }
    }
}
