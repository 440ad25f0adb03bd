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
}

/// An [`Error::Io`] naming the path.
pub fn io_error(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
    Error::Io { path: path.as_ref().display().to_string(), source }
}
