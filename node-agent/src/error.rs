//! The node agent's one error enum.

/// Errors of the node agent crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    // --- sysfs, binding, modules (node agent) ---
    #[error("{value:?} is not a PCI address (expected dddd:bb:dd.f)")]
    InvalidPciAddress { value: String },
    #[error("PCI device {address} not found ({path} does not exist)")]
    PciDeviceNotFound { address: String, path: String },
    #[error("{path}: {message}")]
    Sysfs { path: String, message: String },
    // --- kubelet device plugin ---
    #[error("registering {resource} with the kubelet at {kubelet_socket}: {message}")]
    Register {
        resource: String,
        kubelet_socket: String,
        message: String,
    },
    #[error("watching {path}: {source}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
    #[error("device plugin server on {socket}: {source}")]
    Serve {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    // --- binding, journal (node agent) ---
    #[error("writing {value:?} to {path}: {source}{hint}", hint = permission_hint(source))]
    SysfsWrite {
        path: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "driver {driver} is not registered ({path} is missing), so {address} cannot be bound to it: load its module first (`dpdk-node-agent load`)"
    )]
    DriverNotRegistered {
        driver: String,
        address: String,
        path: String,
    },
    #[error("binding {address} to {driver} failed: {detail} (driver now: {})", actual.as_deref().unwrap_or("none"))]
    BindFailed {
        address: String,
        driver: String,
        actual: Option<String>,
        detail: String,
    },
    #[error("journal {path}: {message}")]
    Journal { path: String, message: String },
    // --- kernel modules (node agent) ---
    #[error("{path}: {message}")]
    ModulesDep { path: String, message: String },
    #[error("kernel module {module} not found in {dir}: {hint}")]
    ModuleNotFound {
        module: String,
        dir: String,
        hint: String,
    },
    #[error(
        "permission denied loading kernel module {module} ({path}): loading modules needs CAP_SYS_MODULE, so run the driver-loader container privileged ({source})"
    )]
    ModulePermissionDenied {
        module: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading kernel module {module} from {path}: {source} (the kernel log says why: dmesg)"
    )]
    ModuleLoad {
        module: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel module {module} is not active after loading: {path} is missing")]
    ModuleNotVerified { module: String, path: String },
    #[error(
        "kernel {release} was built without CONFIG_VFIO_NOIOMMU, so vfio has no enable_unsafe_noiommu_mode parameter (Debian's kernels lack it; {evidence}), and this node has no IOMMU for vfio-pci to use: enable the IOMMU (intel_iommu=on or amd_iommu=on), run a kernel built with CONFIG_VFIO_NOIOMMU=y, or use igb_uio / uio_pci_generic"
    )]
    NoIommuUnsupported { release: String, evidence: String },
    // --- ENI mapping (node agent) ---
    #[error("IMDS {url}: {message}")]
    Imds { url: String, message: String },
    #[error("device index {device_index}: {message}")]
    Mapping { device_index: i32, message: String },
    // --- reporting (node agent) ---
    #[error("reporting to {object}: {message}")]
    Report { object: String, message: String },
    #[error("kubelet PodResources API at {socket}: {message}")]
    PodResources { socket: String, message: String },
}

/// An [`Error::Io`] naming the path.
pub fn io_error(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
    Error::Io {
        path: path.as_ref().display().to_string(),
        source,
    }
}

/// Explains EACCES/EPERM the way an operator needs to hear it.
fn permission_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (permission denied: the agent needs a privileged container with /sys mounted read-write)"
        }
        _ => "",
    }
}
