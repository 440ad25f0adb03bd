//! Where the desired devices come from in a cluster: the node's DPDKNodeState
//! (spec.devices: resourceName and driver; status.devices: pciAddress), watched
//! through the API server. Tests can instead feed a `watch::Sender<DesiredState>`.

use dpdk_bridge::api::DPDKNodeState;
use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::inventory::DesiredState;

/// Follows DPDKNodeState `<node>` and publishes the desired state it implies; a
/// missing or deleted object means no resources. Returns when `stop` is cancelled
/// or every receiver is gone. Watch errors are retried with backoff.
pub async fn watch_node_state(
    client: Client,
    node: String,
    default_prefix: String,
    desired: watch::Sender<DesiredState>,
    stop: CancellationToken,
) {
    let api: Api<DPDKNodeState> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    // During a relist, whether the object is still there.
    let mut seen_in_relist = false;
    let publish = |state: DesiredState| {
        desired.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            tracing::info!(%node, resources = ?state.resources.keys().collect::<Vec<_>>(), "desired devices changed");
            *current = state;
            true
        });
    };
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            () = desired.closed() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(%node, error = %e, "watching DPDKNodeState; retrying"),
            Some(Ok(Event::Init)) => seen_in_relist = false,
            Some(Ok(Event::InitApply(obj))) => {
                seen_in_relist = true;
                publish(DesiredState::from_node_state(&obj, &default_prefix));
            }
            Some(Ok(Event::InitDone)) => {
                if !seen_in_relist {
                    publish(DesiredState::default());
                }
            }
            Some(Ok(Event::Apply(obj))) => {
                publish(DesiredState::from_node_state(&obj, &default_prefix))
            }
            Some(Ok(Event::Delete(_))) => publish(DesiredState::default()),
        }
    }
}
