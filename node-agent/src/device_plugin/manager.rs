//! The plugin's runtime: one gRPC server per resource on `<dir>/<prefix>_<name>.sock`,
//! registration with the kubelet, and recovery when the kubelet restarts.
//!
//! Kubelet rules this follows (as the kubelet's device manager expects them):
//! - serve first, then Register (the kubelet dials the endpoint back at once);
//! - on restart the kubelet deletes every socket in the dir and creates a new
//!   kubelet.sock; the plugin must serve again and re-register. An inotify watch on the
//!   dir reacts within milliseconds; a 500 ms check of the socket identities (inode and
//!   ctime) is the safety net;
//! - ListAndWatch streams end only when the resource's server stops.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::KUBELET_SOCKET;
use super::api::v1beta1::device_plugin_server::DevicePluginServer;
use super::inventory::{DesiredState, HostPaths, Snapshot};
use super::metrics::{Metrics, ResourceLabels};
use super::report::NodeReporter;
use super::service::PluginService;
use super::{monitor, naming, registration};
use crate::error::{Error, io_error};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Runtime settings of the device plugin.
#[derive(Clone, Debug)]
pub struct Config {
    /// The kubelet's device-plugin dir (`/var/lib/kubelet/device-plugins`).
    pub plugin_dir: PathBuf,
    /// Where sysfs and `/dev` are (the host's, or fake trees in tests).
    pub paths: HostPaths,
    /// Health poll interval (inotify wakes the monitor sooner when it can).
    pub health_poll: Duration,
    /// Use inotify to rescan early. Off leaves only the poll, as on a kernel whose sysfs
    /// reports no bind events (benchmarks measure that path with it).
    pub health_inotify: bool,
    /// Safety check of the socket files, in case an inotify event is missed.
    pub socket_check: Duration,
}

impl Config {
    pub fn new(
        plugin_dir: impl Into<PathBuf>,
        sysfs_root: impl Into<PathBuf>,
        dev_root: impl Into<PathBuf>,
    ) -> Self {
        Self {
            plugin_dir: plugin_dir.into(),
            paths: HostPaths {
                sysfs_root: sysfs_root.into(),
                dev_root: dev_root.into(),
            },
            health_poll: Duration::from_millis(50),
            health_inotify: true,
            socket_check: Duration::from_millis(500),
        }
    }
}

/// Identity of a socket file, to tell a recreated file from the one we saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

/// Runs the plugin until `stop` is cancelled: resources come and go with `desired`.
/// On shutdown every server stops (ending its ListAndWatch streams) and its socket is removed.
pub async fn run(
    config: Config,
    desired: watch::Receiver<DesiredState>,
    metrics: Metrics,
    reporter: Option<NodeReporter>,
    stop: CancellationToken,
) -> Result<(), Error> {
    std::fs::create_dir_all(&config.plugin_dir).map_err(|e| io_error(&config.plugin_dir, e))?;

    let (snapshot_tx, mut snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let monitor_stop = stop.child_token();
    let monitor = tokio::spawn(monitor::run(
        config.paths.clone(),
        desired,
        snapshot_tx,
        metrics.clone(),
        config.health_poll,
        config.health_inotify,
        monitor_stop.clone(),
    ));

    // When each resource last registered, for status.devicePlugin.
    let (registrations, registrations_rx) = watch::channel(BTreeMap::<String, Time>::new());
    let reporter = reporter
        .map(|r| tokio::spawn(r.run(snapshots.clone(), registrations_rx, stop.child_token())));

    // Any change in the dir is a hint; resource tasks check the files themselves.
    let (dir_tx, mut dir_events) = mpsc::unbounded_channel::<()>();
    let mut dir_watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = dir_tx.send(());
            }
        })
        .map_err(|source| Error::Watch {
            path: config.plugin_dir.display().to_string(),
            source,
        })?;
    dir_watcher
        .watch(&config.plugin_dir, RecursiveMode::NonRecursive)
        .map_err(|source| Error::Watch {
            path: config.plugin_dir.display().to_string(),
            source,
        })?;

    let mut tasks: BTreeMap<String, ResourceTask> = BTreeMap::new();
    loop {
        let wanted: Vec<String> = snapshots
            .borrow_and_update()
            .resources
            .keys()
            .cloned()
            .collect();
        let removed: Vec<String> = tasks
            .keys()
            .filter(|r| !wanted.contains(r))
            .cloned()
            .collect();
        for resource in removed {
            if let Some(task) = tasks.remove(&resource) {
                tracing::info!(%resource, "resource removed: stopping its server");
                task.stop().await;
                registrations.send_modify(|r| {
                    r.remove(&resource);
                });
            }
        }
        for resource in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(resource) {
                let resource = slot.key().clone();
                tracing::info!(%resource, "resource added: starting its server");
                slot.insert(ResourceTask::spawn(
                    &config,
                    resource,
                    snapshots.clone(),
                    metrics.clone(),
                    registrations.clone(),
                    &stop,
                ));
            }
        }

        tokio::select! {
            () = stop.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() {
                break;
            },
            Some(()) = dir_events.recv() => {
                for task in tasks.values() {
                    let _ = task.events.send(());
                }
            }
        }
    }

    for (_, task) in std::mem::take(&mut tasks) {
        task.stop().await;
    }
    monitor_stop.cancel();
    drop(dir_watcher);
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    match monitor.await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "health monitor task failed");
            Ok(())
        }
    }
}

/// A resource's task: its server, its registration, its recovery.
struct ResourceTask {
    events: mpsc::UnboundedSender<()>,
    stop: CancellationToken,
    join: JoinHandle<()>,
}

impl ResourceTask {
    fn spawn(
        config: &Config,
        resource: String,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        metrics: Metrics,
        registrations: watch::Sender<BTreeMap<String, Time>>,
        parent: &CancellationToken,
    ) -> Self {
        let (events, rx) = mpsc::unbounded_channel();
        let stop = parent.child_token();
        let span = tracing::info_span!("device_plugin", %resource);
        let ctx = ResourceCtx {
            endpoint: naming::socket_file_name(&resource),
            resource,
            config: config.clone(),
            snapshots,
            metrics,
            registrations,
        };
        let join = tokio::spawn(tracing::Instrument::instrument(
            ctx.run(rx, stop.clone()),
            span,
        ));
        Self { events, stop, join }
    }

    async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "resource task failed");
        }
    }
}

struct ResourceCtx {
    resource: String,
    /// Socket file name, also the RegisterRequest endpoint.
    endpoint: String,
    config: Config,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Metrics,
    registrations: watch::Sender<BTreeMap<String, Time>>,
}

/// First retry delay after a failed Register; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a stopping server may take to close its connections before it is aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running server generation: its own socket, stop token and task.
struct Serving {
    socket_id: Option<FileId>,
    stop: CancellationToken,
    join: JoinHandle<()>,
}

impl Serving {
    async fn shut_down(self) {
        self.stop.cancel();
        let abort = self.join.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.join)
            .await
            .is_err()
        {
            tracing::warn!(
                "server did not stop within {}s; aborting it",
                SHUTDOWN_GRACE.as_secs()
            );
            abort.abort();
        }
    }
}

impl ResourceCtx {
    fn socket_path(&self) -> PathBuf {
        self.config.plugin_dir.join(&self.endpoint)
    }

    fn kubelet_socket(&self) -> PathBuf {
        self.config.plugin_dir.join(KUBELET_SOCKET)
    }

    /// Binds the socket (replacing a stale file) and starts serving on it.
    fn serve(&self, parent: &CancellationToken) -> Result<Serving, Error> {
        let path = self.socket_path();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        let listener = UnixListener::bind(&path).map_err(|e| io_error(&path, e))?;
        let socket_id = file_id(&path);
        let stop = parent.child_token();
        let service = PluginService::new(
            self.resource.clone(),
            self.config.paths.clone(),
            self.snapshots.clone(),
            stop.clone(),
            self.metrics.clone(),
        );
        let shutdown = stop.clone().cancelled_owned();
        let socket = path.display().to_string();
        let join = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(super::authority::incoming(listener), shutdown)
                .await;
            if let Err(source) = served {
                tracing::error!(error = %Error::Serve { socket, source }, "server failed");
            }
        });
        tracing::info!(socket = %path.display(), "serving");
        Ok(Serving {
            socket_id,
            stop,
            join,
        })
    }

    async fn run(self, mut events: mpsc::UnboundedReceiver<()>, stop: CancellationToken) {
        'serve: loop {
            let serving = match self.serve(&stop) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serve; retrying in 1s");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue 'serve,
                    }
                }
            };
            // The kubelet.sock we registered with; None = (re-)registration due.
            let mut registered_with: Option<FileId> = None;
            // The kubelet.sock of the last attempt, to retry at once when a new one appears.
            let mut tried_with: Option<FileId> = None;
            let mut backoff = MIN_BACKOFF;
            let mut next_attempt = Instant::now();
            loop {
                if registered_with.is_none() && Instant::now() >= next_attempt {
                    match file_id(&self.kubelet_socket()) {
                        None => {
                            tried_with = None;
                            next_attempt = Instant::now() + self.config.socket_check;
                        }
                        Some(kubelet) => {
                            tried_with = Some(kubelet);
                            // Cancellable: a stop during a slow Register is handled below.
                            let attempt = tokio::select! {
                                r = registration::register(&self.config.plugin_dir, &self.resource, &self.endpoint) => Some(r),
                                () = stop.cancelled() => None,
                            };
                            match attempt {
                                None => {}
                                Some(Ok(())) => {
                                    tracing::info!(endpoint = %self.endpoint, "registered with the kubelet");
                                    self.metrics
                                        .registrations
                                        .get_or_create(&ResourceLabels {
                                            resource: self.resource.clone(),
                                        })
                                        .inc();
                                    registered_with = Some(kubelet);
                                    let now = Time(k8s_openapi::jiff::Timestamp::now());
                                    self.registrations.send_modify(|r| {
                                        r.insert(self.resource.clone(), now);
                                    });
                                    backoff = MIN_BACKOFF;
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "registration failed");
                                    next_attempt = Instant::now() + backoff;
                                    backoff = (backoff * 2).min(MAX_BACKOFF);
                                }
                            }
                        }
                    }
                }
                let wake_at = if registered_with.is_none() {
                    next_attempt.min(Instant::now() + self.config.socket_check)
                } else {
                    Instant::now() + self.config.socket_check
                };
                tokio::select! {
                    () = stop.cancelled() => {
                        // Remove our socket (unless someone replaced it), then stop serving.
                        if serving.socket_id.is_some() && file_id(&self.socket_path()) == serving.socket_id {
                            let _ = std::fs::remove_file(self.socket_path());
                        }
                        serving.shut_down().await;
                        tracing::info!("stopped");
                        return;
                    }
                    event = events.recv() => if event.is_none() {
                        serving.shut_down().await;
                        return;
                    },
                    () = tokio::time::sleep_until(wake_at) => {}
                }
                // Our socket gone or replaced: the kubelet restarted and wiped the dir.
                if file_id(&self.socket_path()) != serving.socket_id {
                    tracing::info!(socket = %self.socket_path().display(), "socket removed (kubelet restart?): serving again");
                    // The new socket must not wait for the old server's connections to drain.
                    tokio::spawn(serving.shut_down());
                    continue 'serve;
                }
                // A new kubelet.sock: register again, at once.
                let kubelet = file_id(&self.kubelet_socket());
                if registered_with.is_some() && kubelet != registered_with {
                    tracing::info!("kubelet.sock recreated: registering again");
                    registered_with = None;
                    backoff = MIN_BACKOFF;
                    next_attempt = Instant::now();
                } else if registered_with.is_none() && kubelet.is_some() && kubelet != tried_with {
                    // A kubelet.sock not tried yet (the kubelet came up): no need to wait out a backoff.
                    backoff = MIN_BACKOFF;
                    next_attempt = Instant::now();
                }
            }
        }
    }
}
