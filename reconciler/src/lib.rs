//! dpdk-reconciler: Git sources, manifest loading and validation, apply and prune, the DPDK
//! controller, the drift engine and the HTTP server. The binary is a thin CLI over this crate.

pub mod controller;
pub mod crdgen;
pub mod drift;
pub mod manifest;
pub mod metrics;
pub mod server;
pub mod source;

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
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("HTTP server on {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Flag(String),
    #[error("DPDK controller: {0}")]
    Controller(String),
    #[error("DPDKConfigSource {key}: {message}")]
    Source { key: String, message: String },
}
