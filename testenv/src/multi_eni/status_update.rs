//! The controller's NodeENI status write, as of v1.3.8: a whole-object `Status().Update`
//! that, on a conflict, copies its in-memory status over the fresh object.
//!
//! Models `pkg/controller/nodeeni_controller.go` `updateNodeENIStatusWithRetry`
//! (exponential backoff: 5 steps from 100 ms, factor 2): on `IsConflict` it gets the latest
//! NodeENI, sets `latest.Status = nodeENI.Status` (what it read before, plus its own
//! changes) and updates again. Fields someone else wrote in between, such as the
//! `dpdk*` attachment fields of the node agent, are erased.

use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::api::NodeENI;
use kube::api::PostParams;
use kube::{Api, Client};

use super::{Action, Record};

/// Updates `stale`'s status the way upstream's controller does. Returns the object written.
pub async fn update_status_with_retry(
    client: &Client,
    record: &Arc<Record>,
    mut stale: NodeENI,
) -> Result<NodeENI, kube::Error> {
    let api: Api<NodeENI> = Api::all(client.clone());
    let name = stale.metadata.name.clone().unwrap_or_default();
    let mut wait = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match api
            .replace_status(&name, &PostParams::default(), &stale)
            .await
        {
            Ok(written) => return Ok(written),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => {
                let mut latest = api.get_status(&name).await?;
                latest.status = stale.status.clone();
                stale = latest;
                record.push(Action::StatusCopiedOver {
                    nodeeni: name.clone(),
                });
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
