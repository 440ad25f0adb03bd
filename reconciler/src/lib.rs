//! dpdk-reconciler: Git sources, manifest loading and validation, apply and prune, the DPDK
//! controller, the drift engine and the HTTP server. The binary is a thin CLI over this crate.

pub mod crdgen;
pub mod drift;
pub mod manifest;

/// Errors of the reconciler crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bridge(#[from] dpdk_bridge::Error),
}
