//! Test support for the device plugin: a fake host (sysfs + /dev in a tempdir) and a
//! TEST-SIDE KUBELET generated from the same proto as the plugin. The kubelet serves
//! Registration on `<dir>/kubelet.sock` over a real Unix socket and, like the real
//! kubelet's device manager, dials the plugin's endpoint back as soon as Register
//! arrives (no retry: a plugin that registers before serving fails here).
//!
//! Shared by tests/device_plugin*.rs and benches/device_plugin.rs (`#[path]`).
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use dpdk_node_agent::device_plugin::api::v1beta1::registration_server::{
    Registration, RegistrationServer,
};
use dpdk_node_agent::device_plugin::api::v1beta1::{
    Device, DevicePluginOptions, Empty, ListAndWatchResponse, RegisterRequest,
};
use dpdk_node_agent::device_plugin::api::{KUBELET_SOCKET, unix_channel};
use dpdk_node_agent::device_plugin::{self, Config, DesiredState, Metrics, OfferedDevice};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const SEED_RESOURCE: &str = "intel.com/intel_sriov_netdevice_2";
pub const SEED_SOCKET: &str = "intel.com_intel_sriov_netdevice_2.sock";

// ---------------------------------------------------------------- fake host

/// A fake sysfs tree and /dev in a tempdir, shaped like the kernel's.
pub struct FakeHost {
    pub tmp: tempfile::TempDir,
    pub sysfs: PathBuf,
    pub dev: PathBuf,
    pub plugin_dir: PathBuf,
}

/// How a fake device's VFIO group looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Iommu(u32),
    NoIommu(u32),
}

impl Group {
    fn id(self) -> u32 {
        match self {
            Group::Iommu(n) | Group::NoIommu(n) => n,
        }
    }
    fn dev_name(self) -> String {
        match self {
            Group::Iommu(n) => n.to_string(),
            Group::NoIommu(n) => format!("noiommu-{n}"),
        }
    }
}

impl FakeHost {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sysfs = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        let plugin_dir = tmp.path().join("device-plugins");
        for d in [&sysfs, &dev, &plugin_dir] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        for driver in ["ena", "vfio-pci", "igb_uio", "uio_pci_generic"] {
            std::fs::create_dir_all(sysfs.join("bus/pci/drivers").join(driver)).expect("mkdir");
        }
        Self {
            tmp,
            sysfs,
            dev,
            plugin_dir,
        }
    }

    fn device_dir(&self, bdf: &str) -> PathBuf {
        self.sysfs.join("devices/pci0000:00").join(bdf)
    }

    /// A PCI device on `numa` (None writes -1) in VFIO group `group`, bound to `ena`.
    pub fn add_device(&self, bdf: &str, numa: Option<u32>, group: Group) {
        let real = self.device_dir(bdf);
        std::fs::create_dir_all(&real).expect("mkdir");
        std::fs::create_dir_all(self.sysfs.join("bus/pci/devices")).expect("mkdir");
        symlink(
            format!("../../../devices/pci0000:00/{bdf}"),
            self.sysfs.join("bus/pci/devices").join(bdf),
        )
        .expect("symlink");
        std::fs::write(
            real.join("numa_node"),
            numa.map_or("-1".to_string(), |n| n.to_string()) + "\n",
        )
        .expect("write");
        let gdir = self
            .sysfs
            .join("kernel/iommu_groups")
            .join(group.id().to_string());
        std::fs::create_dir_all(gdir.join("devices")).expect("mkdir");
        if matches!(group, Group::NoIommu(_)) {
            std::fs::write(gdir.join("name"), "vfio-noiommu\n").expect("write");
        }
        symlink(
            format!("../../../kernel/iommu_groups/{}", group.id()),
            real.join("iommu_group"),
        )
        .expect("symlink");
        self.set_driver(bdf, Some("ena"));
    }

    /// Points the device's `driver` link at `driver` (atomically, like a rebind), or removes it.
    pub fn set_driver(&self, bdf: &str, driver: Option<&str>) {
        let link = self.device_dir(bdf).join("driver");
        match driver {
            Some(d) => {
                let tmp = self.device_dir(bdf).join(".driver.new");
                let _ = std::fs::remove_file(&tmp);
                symlink(format!("../../../bus/pci/drivers/{d}"), &tmp).expect("symlink");
                std::fs::rename(&tmp, &link).expect("rename");
            }
            None => {
                let _ = std::fs::remove_file(&link);
            }
        }
    }

    fn group_of(&self, bdf: &str) -> Group {
        let real = self.device_dir(bdf);
        let target = std::fs::read_link(real.join("iommu_group")).expect("iommu_group link");
        let id: u32 = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("group id");
        let noiommu = std::fs::read_to_string(
            self.sysfs
                .join("kernel/iommu_groups")
                .join(id.to_string())
                .join("name"),
        )
        .is_ok_and(|n| n.trim() == "vfio-noiommu");
        if noiommu {
            Group::NoIommu(id)
        } else {
            Group::Iommu(id)
        }
    }

    /// What binding to vfio-pci does: the driver link, then the group's node under /dev/vfio.
    pub fn bind_vfio(&self, bdf: &str) {
        self.set_driver(bdf, Some("vfio-pci"));
        std::fs::create_dir_all(self.dev.join("vfio")).expect("mkdir");
        std::fs::write(self.dev.join("vfio/vfio"), "").expect("write");
        std::fs::write(
            self.dev.join("vfio").join(self.group_of(bdf).dev_name()),
            "",
        )
        .expect("write");
    }

    /// Back to the kernel driver: the group node goes away with the binding.
    pub fn unbind_to_ena(&self, bdf: &str) {
        self.set_driver(bdf, Some("ena"));
        let _ = std::fs::remove_file(self.dev.join("vfio").join(self.group_of(bdf).dev_name()));
    }

    /// The group node disappears while the device stays bound.
    pub fn remove_vfio_node(&self, bdf: &str) {
        std::fs::remove_file(self.dev.join("vfio").join(self.group_of(bdf).dev_name()))
            .expect("remove node");
    }

    pub fn restore_vfio_node(&self, bdf: &str) {
        std::fs::write(
            self.dev.join("vfio").join(self.group_of(bdf).dev_name()),
            "",
        )
        .expect("write");
    }

    pub fn config(&self) -> Config {
        Config::new(&self.plugin_dir, &self.sysfs, &self.dev)
    }
}

/// A desired state of one resource with vfio-pci devices.
pub fn desired(resource: &str, bdfs: &[&str]) -> DesiredState {
    let mut d = DesiredState::default();
    d.add_resource(resource);
    for bdf in bdfs {
        d.add(
            resource,
            OfferedDevice {
                pci_address: bdf.to_string(),
                driver: DpdkDriver::VfioPci,
            },
        );
    }
    d
}

// ---------------------------------------------------------------- the plugin

/// A running plugin (the library's `device_plugin::run`) fed by a channel.
pub struct Plugin {
    pub desired: watch::Sender<DesiredState>,
    pub metrics: Metrics,
    stop: CancellationToken,
    join: tokio::task::JoinHandle<Result<(), dpdk_node_agent::Error>>,
}

impl Plugin {
    pub fn start(config: Config, initial: DesiredState) -> Self {
        let (desired, rx) = watch::channel(initial);
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let join = tokio::spawn(device_plugin::run(
            config,
            rx,
            metrics.clone(),
            None,
            stop.clone(),
        ));
        Self {
            desired,
            metrics,
            stop,
            join,
        }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .expect("plugin stops within 10s");
        result.expect("plugin task").expect("plugin run");
    }
}

// ---------------------------------------------------------------- the kubelet

/// One RegisterRequest as the test kubelet received it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub request: RegisterRequest,
    /// The kubelet's dial-back to `<dir>/<endpoint>` + GetDevicePluginOptions, done
    /// when Register arrived. Err means the plugin was not serving yet.
    pub dial_back: Result<DevicePluginOptions, String>,
    pub at: Instant,
}

struct KubeletRegistration {
    dir: PathBuf,
    tx: mpsc::UnboundedSender<Registered>,
}

#[tonic::async_trait]
impl Registration for KubeletRegistration {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let at = Instant::now();
        let request = request.into_inner();
        // The kubelet's own checks, shared with the demo's simulated kubelet.
        dpdk_node_agent::sim::kubelet::check_register_request(&request)?;
        let endpoint = self.dir.join(&request.endpoint);
        let dial_back = async {
            let channel = unix_channel(&endpoint)
                .await
                .map_err(|e| format!("dial {}: {e:?}", endpoint.display()))?;
            DevicePluginClient::new(channel)
                .get_device_plugin_options(Empty {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("GetDevicePluginOptions: {s}"))
        }
        .await;
        let _ = self.tx.send(Registered {
            request,
            dial_back,
            at,
        });
        Ok(tonic::Response::new(Empty {}))
    }
}

/// The test-side kubelet: Registration on `<dir>/kubelet.sock`, DevicePlugin clients.
pub struct TestKubelet {
    pub dir: PathBuf,
    registrations: Mutex<mpsc::UnboundedReceiver<Registered>>,
    tx: mpsc::UnboundedSender<Registered>,
    stop: CancellationToken,
    join: Option<tokio::task::JoinHandle<()>>,
}

impl TestKubelet {
    pub fn start(dir: &Path) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut k = Self {
            dir: dir.to_path_buf(),
            registrations: Mutex::new(rx),
            tx,
            stop: CancellationToken::new(),
            join: None,
        };
        k.serve();
        k
    }

    fn serve(&mut self) {
        let path = self.dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind kubelet.sock");
        let service = KubeletRegistration {
            dir: self.dir.clone(),
            tx: self.tx.clone(),
        };
        let stop = CancellationToken::new();
        self.stop = stop.clone();
        self.join = Some(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
                .expect("kubelet registration server");
        }));
    }

    /// What the kubelet does when it restarts: stop, delete every socket in the dir
    /// (the plugins' too), and serve Registration on a fresh kubelet.sock.
    pub async fn restart(&mut self) -> Instant {
        self.stop_serving().await;
        for entry in std::fs::read_dir(&self.dir).expect("read plugin dir") {
            let path = entry.expect("entry").path();
            std::fs::remove_file(&path).expect("remove socket");
        }
        let at = Instant::now();
        self.serve();
        at
    }

    /// Recreates only kubelet.sock (plugin sockets left in place).
    pub async fn recreate_socket(&mut self) -> Instant {
        self.stop_serving().await;
        let at = Instant::now();
        self.serve();
        at
    }

    async fn stop_serving(&mut self) {
        self.stop.cancel();
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
        let _ = std::fs::remove_file(self.dir.join(KUBELET_SOCKET));
    }

    /// The next RegisterRequest, or panic after `within`.
    pub async fn next_registration(&self, within: Duration) -> Registered {
        let mut rx = self.registrations.lock().await;
        tokio::time::timeout(within, rx.recv())
            .await
            .expect("a Register call in time")
            .expect("kubelet alive")
    }

    /// Registrations already received, without waiting.
    pub async fn drain(&self) -> Vec<Registered> {
        let mut rx = self.registrations.lock().await;
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r);
        }
        out
    }

    /// A DevicePlugin client on `<dir>/<endpoint>`, as the kubelet makes one.
    pub async fn plugin(&self, endpoint: &str) -> DevicePluginClient<Channel> {
        let channel = unix_channel(&self.dir.join(endpoint))
            .await
            .expect("dial plugin");
        DevicePluginClient::new(channel)
    }
}

// ---------------------------------------------------------------- ListAndWatch

pub type Stream = tonic::Streaming<ListAndWatchResponse>;

pub async fn list_and_watch(client: &mut DevicePluginClient<Channel>) -> Stream {
    client
        .list_and_watch(Empty {})
        .await
        .expect("ListAndWatch")
        .into_inner()
}

/// The next list, or panic after `within` (or if the stream ends).
pub async fn next_list(stream: &mut Stream, within: Duration) -> Vec<Device> {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("a ListAndWatch update in time")
        .expect("stream healthy")
        .expect("stream must not end")
        .devices
}

/// Reads updates until one satisfies `pred`.
pub async fn wait_list(
    stream: &mut Stream,
    within: Duration,
    pred: impl Fn(&[Device]) -> bool,
) -> Vec<Device> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let devices = next_list(stream, left).await;
        if pred(&devices) {
            return devices;
        }
    }
}

/// Panics if the stream ends or errs within `for_`; a quiet open stream passes.
pub async fn assert_still_open(stream: &mut Stream, for_: Duration) {
    let deadline = tokio::time::Instant::now() + for_;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("ListAndWatch ended while the plugin is running"),
            Ok(Err(s)) => panic!("ListAndWatch failed while the plugin is running: {s}"),
        }
    }
}

pub fn health_of<'a>(devices: &'a [Device], id: &str) -> Option<&'a str> {
    devices
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.health.as_str())
}

// ---------------------------------------------------------------- HTTP

/// `GET <path>` over HTTP/1.1 with `Connection: close`; the raw response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await?;
    Ok(response)
}
