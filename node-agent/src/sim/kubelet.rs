//! A simulated kubelet device manager, for the demo and tests: it serves the v1beta1
//! Registration service on `<dir>/kubelet.sock`, and for each registered plugin does what
//! the kubelet does: dials the plugin back on `<dir>/<endpoint>`, keeps its ListAndWatch
//! stream open, and (given a client) writes the Node's `status.capacity` (devices) and
//! `status.allocatable` (healthy devices) for the resource, so `kubectl describe node`
//! shows `intel.com/intel_sriov_netdevice_2: 1`.
//!
//! It does not schedule or allocate: nothing runs pods here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use crate::device_plugin::api::v1beta1::registration_server::{Registration, RegistrationServer};
use crate::device_plugin::api::v1beta1::{Device, Empty, RegisterRequest};
use crate::device_plugin::api::{HEALTHY, KUBELET_SOCKET, VERSION, unix_channel};
use crate::error::{Error, io_error};

/// Field manager of the simulated kubelet's Node status writes.
pub const FIELD_MANAGER: &str = "dpdk-sim-kubelet";
/// Pause before re-dialing a plugin whose stream ended, and between failed status writes.
const RETRY: Duration = Duration::from_secs(1);

/// What the kubelet last heard from each resource's ListAndWatch.
pub type Devices = BTreeMap<String, Vec<Device>>;

/// Where the kubelet reports capacity: a Node, through a client allowed to patch its status.
#[derive(Clone)]
pub struct NodeStatusWriter {
    pub client: Client,
    pub node: String,
}

/// A running simulated kubelet.
pub struct SimKubelet {
    dir: PathBuf,
    devices: watch::Receiver<Devices>,
    stop: CancellationToken,
    join: JoinHandle<Result<(), Error>>,
}

struct RegistrationService {
    dir: PathBuf,
    devices: watch::Sender<Devices>,
    /// One ListAndWatch task per resource; a new Register replaces the old one.
    streams: Mutex<BTreeMap<String, JoinHandle<()>>>,
    stop: CancellationToken,
    /// The caller's span (the node), for the work gRPC handlers start.
    span: tracing::Span,
}

impl SimKubelet {
    /// Serves Registration on `<dir>/kubelet.sock` (replacing a stale socket) until
    /// [`SimKubelet::shutdown`]. With `node`, capacity and allocatable follow the plugins.
    pub fn start(dir: &Path, node: Option<NodeStatusWriter>) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let socket = dir.join(KUBELET_SOCKET);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&socket, e)),
        }
        let listener = tokio::net::UnixListener::bind(&socket).map_err(|e| io_error(&socket, e))?;
        let (tx, devices) = watch::channel(Devices::new());
        let stop = CancellationToken::new();
        if let Some(writer) = node {
            tokio::spawn(
                write_node_status(writer, devices.clone(), stop.clone())
                    .instrument(info_span!("sim-kubelet")),
            );
        }
        let service = Arc::new(RegistrationService {
            dir: dir.to_path_buf(),
            devices: tx,
            streams: Mutex::new(BTreeMap::new()),
            stop: stop.clone(),
            span: tracing::Span::current(),
        });
        let server_stop = stop.clone();
        let socket_name = socket.display().to_string();
        let join = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(RegistrationServer::from_arc(service.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    server_stop.cancelled_owned(),
                )
                .await;
            for (_, task) in std::mem::take(&mut *lock(&service.streams)) {
                task.abort();
            }
            result.map_err(|source| Error::Serve {
                socket: socket_name,
                source,
            })
        });
        info!(dir = %dir.display(), "simulated kubelet serving Registration");
        Ok(Self {
            dir: dir.to_path_buf(),
            devices,
            stop,
            join,
        })
    }

    /// The device-plugin dir (kubelet.sock and the plugin sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What each resource's ListAndWatch last sent; changes as the plugins send updates.
    pub fn devices(&self) -> watch::Receiver<Devices> {
        self.devices.clone()
    }

    /// Stops serving, closes the plugin streams and removes kubelet.sock.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        let result = match self.join.await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                path: self.dir.join(KUBELET_SOCKET).display().to_string(),
                source: std::io::Error::other(format!("kubelet task failed: {e}")),
            }),
        };
        let _ = std::fs::remove_file(self.dir.join(KUBELET_SOCKET));
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kubelet's own checks of a RegisterRequest: the supported version, an extended
/// resource name (`<domain>/<name>`, not `kubernetes.io/`), and an endpoint that is a file
/// name in the device-plugin directory.
pub fn check_register_request(request: &RegisterRequest) -> Result<(), tonic::Status> {
    if request.version != VERSION {
        return Err(tonic::Status::invalid_argument(format!(
            "unsupported version {:?}",
            request.version
        )));
    }
    if !request.resource_name.contains('/') || request.resource_name.starts_with("kubernetes.io/") {
        return Err(tonic::Status::invalid_argument(format!(
            "invalid resource name {:?}",
            request.resource_name
        )));
    }
    if request.endpoint.is_empty() || request.endpoint.contains('/') {
        return Err(tonic::Status::invalid_argument(format!(
            "endpoint {:?} is not a file name",
            request.endpoint
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let request = request.into_inner();
        check_register_request(&request)?;
        let resource = request.resource_name.clone();
        let span = info_span!(parent: &self.span, "sim-kubelet", %resource);
        span.in_scope(|| info!(endpoint = %request.endpoint, "plugin registered"));
        let task = tokio::spawn(
            follow_plugin(
                self.dir.join(&request.endpoint),
                resource.clone(),
                self.devices.clone(),
                self.stop.clone(),
            )
            .instrument(span),
        );
        if let Some(old) = lock(&self.streams).insert(resource, task) {
            old.abort();
        }
        Ok(tonic::Response::new(Empty {}))
    }
}

/// Dials the plugin, keeps its ListAndWatch stream and publishes every list. When the
/// stream ends, the resource's devices count as unhealthy until it comes back.
async fn follow_plugin(
    endpoint: PathBuf,
    resource: String,
    devices: watch::Sender<Devices>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let stream = async {
            let channel = unix_channel(&endpoint)
                .await
                .map_err(|e| format!("dialing {}: {e}", endpoint.display()))?;
            DevicePluginClient::new(channel)
                .list_and_watch(Empty {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("ListAndWatch: {s}"))
        }
        .await;
        match stream {
            Ok(mut stream) => loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                match message {
                    Ok(Some(list)) => {
                        let healthy = list.devices.iter().filter(|d| d.health == HEALTHY).count();
                        debug!(devices = list.devices.len(), healthy, "ListAndWatch update");
                        devices.send_modify(|all| {
                            all.insert(resource.clone(), list.devices);
                        });
                    }
                    Ok(None) => {
                        warn!("ListAndWatch ended");
                        break;
                    }
                    Err(s) => {
                        warn!(status = %s, "ListAndWatch failed");
                        break;
                    }
                }
            },
            Err(e) => warn!(error = %e, "cannot reach the plugin"),
        }
        // As the kubelet does, the devices are unusable while the plugin is gone.
        devices.send_modify(|all| {
            if let Some(list) = all.get_mut(&resource) {
                for d in list {
                    d.health = crate::device_plugin::api::UNHEALTHY.to_string();
                }
            }
        });
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// `status.capacity` and `status.allocatable` for what the plugins advertise. Pure.
pub fn capacity_patch(devices: &Devices) -> serde_json::Value {
    let capacity: serde_json::Map<String, serde_json::Value> = devices
        .iter()
        .map(|(r, list)| (r.clone(), list.len().to_string().into()))
        .collect();
    let allocatable: serde_json::Map<String, serde_json::Value> = devices
        .iter()
        .map(|(r, list)| {
            let healthy = list.iter().filter(|d| d.health == HEALTHY).count();
            (r.clone(), healthy.to_string().into())
        })
        .collect();
    serde_json::json!({ "status": { "capacity": capacity, "allocatable": allocatable } })
}

/// Patches the Node's status whenever the advertised devices change (a merge patch only
/// touches the extended resources, as the kubelet's own status update would keep cpu etc.).
async fn write_node_status(
    writer: NodeStatusWriter,
    mut devices: watch::Receiver<Devices>,
    stop: CancellationToken,
) {
    let api: Api<Node> = Api::all(writer.client.clone());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let mut written: Option<serde_json::Value> = None;
    loop {
        let patch = capacity_patch(&devices.borrow_and_update());
        let mut retry = false;
        if written.as_ref() != Some(&patch) && !devices.borrow().is_empty() {
            match api
                .patch_status(&writer.node, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    info!(status = %patch["status"], "node capacity updated");
                    written = Some(patch);
                }
                Err(e) => {
                    warn!(error = %e, "updating the node's capacity failed; retrying");
                    retry = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = devices.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}
