//! Keeps the [`Snapshot`] current: rescans the desired devices when the desired state
//! changes, when inotify reports a change under `/dev`, `/dev/vfio` or a device's sysfs
//! directory, and on a short poll (sysfs does not report driver binds through inotify
//! on a real kernel). Publishes only real changes, so ListAndWatch sends only those.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::inventory::{self, DesiredState, HostPaths, Snapshot};
use super::metrics::Metrics;
use crate::error::Error;

/// Paths whose changes should trigger a rescan for `desired`.
fn watch_paths(paths: &HostPaths, desired: &DesiredState) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for dir in [paths.dev_root.clone(), paths.dev_root.join("vfio")] {
        if dir.is_dir() {
            out.insert(dir);
        }
    }
    for device in desired.resources.values().flatten() {
        let dir = paths
            .sysfs_root
            .join("bus/pci/devices")
            .join(&device.pci_address);
        if dir.is_dir() {
            out.insert(dir);
        }
    }
    out
}

/// Runs until `stop` is cancelled or the desired-state sender is dropped.
pub async fn run(
    paths: HostPaths,
    mut desired: watch::Receiver<DesiredState>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    metrics: Metrics,
    poll: Duration,
    inotify: bool,
    stop: CancellationToken,
) -> Result<(), Error> {
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            waker.notify_one();
        }
    })
    .map_err(|source| Error::Watch {
        path: paths.dev_root.display().to_string(),
        source,
    })?;
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();

    loop {
        let current = desired.borrow_and_update().clone();

        let wanted = if inotify {
            watch_paths(&paths, &current)
        } else {
            BTreeSet::new()
        };
        for gone in watched.difference(&wanted) {
            // The path may already be gone, which removes the watch anyway.
            let _ = watcher.unwatch(gone);
        }
        for new in wanted.difference(&watched) {
            if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::debug!(path = %new.display(), error = %e, "cannot watch; polling covers it");
            }
        }
        watched = wanted;

        let snapshot = inventory::scan(&paths, &current);
        snapshots.send_if_modified(|published| {
            if **published == snapshot {
                return false;
            }
            metrics.observe(published, &snapshot);
            for (resource, devices) in &snapshot.resources {
                let healthy = devices.iter().filter(|d| d.healthy()).count();
                if published.resources.get(resource) != Some(devices) {
                    tracing::info!(%resource, advertised = devices.len(), healthy, "devices changed");
                    for d in devices.iter().filter(|d| !d.healthy()) {
                        tracing::info!(%resource, device = %d.pci_address, problem = d.problem.as_deref().unwrap_or_default(), "unhealthy");
                    }
                }
            }
            *published = Arc::new(snapshot);
            true
        });

        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = desired.changed() => if changed.is_err() {
                return Ok(());
            },
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}
