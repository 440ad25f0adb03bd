//! dpdk-reconciler: the cluster side. The binary is a thin CLI over this crate.
//!
//! - [`controller`]: the DPDK controller (watches, the planner's writes, leader election).
//! - [`crdgen`]: `dpdk-reconciler crdgen`, the CRDs and their reference from the Rust types.
//! - [`drift`]: the Git ↔ cluster ↔ node report, its HTTP routes and the `diff` CLI.
//! - [`manifest`]: loading a config repository's YAML, positions, offline validation.
//! - [`metrics`]: the process's Prometheus registry and the controller's metrics.
//! - [`server`]: the HTTP server (`/metrics`, `/healthz`, `/readyz`) and its probes.
//! - [`source`]: the Git source, the DPDKConfigSource controller (fetch, apply, prune).

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
