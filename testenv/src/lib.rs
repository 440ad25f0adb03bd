//! dpdk-testenv: a real local Kubernetes control plane for tests, the demo and benchmarks.
//!
//! kube-apiserver, etcd and kubectl are built from Go modules (`testenv/go/`), the way
//! controller-runtime's envtest runs a real API server, and cached outside the repository
//! keyed by version. [`ControlPlane`] starts them on free loopback ports with generated
//! certificates, writes a kubeconfig and hands out admin and impersonating clients.
//!
//! Child processes are spawned from one long-lived thread with `PR_SET_PDEATHSIG`, so
//! they die with the test process even when a test panics or a shared control plane
//! (which, living in a static, is never dropped) outlives every test.
//!
//! - [`binaries`]: building and caching the Go binaries (control plane, helm, actionlint,
//!   the Argo CD Lua helper, Flux's two controllers).
//! - [`certs`]: the control plane's CA, serving and client certificates, SA signing key.
//! - [`control_plane`]: a running kube-apiserver + etcd pair on loopback.
//! - [`demo`]: the README's demo.
//! - [`flux`]: Flux's source-controller and kustomize-controller against a control plane.
//! - [`fixtures`]: simulated Nodes and NodeENIs, the seed's DPDKConfig, CRD installs.
//! - [`git_server`]: real Git servers (https, ssh, file) on loopback.
//! - `process`: children that cannot outlive the test process.
//! - [`helm`]: the helm CLI with a scratch config, cache and data home.
//! - [`images`]: the two images, built with buildah from `deploy/docker/`.
//! - [`multi_eni`]: a model of the AWS Multi-ENI Controller's DPDK behaviour (v1.3.8).
//! - [`objects`]: manifests as objects keyed by apiVersion/kind/namespace/name.
//! - [`runc`]: running an image under runc with a shipped manifest's security settings.
//! - [`workload_pods`]: the demo's stand-in for DaemonSet pods on simulated nodes.

pub mod binaries;
pub mod certs;
pub mod control_plane;
pub mod demo;
pub mod fixtures;
pub mod flux;
pub mod git_server;
pub mod helm;
pub mod images;
pub mod multi_eni;
pub mod objects;
mod process;
pub mod runc;
pub mod workload_pods;

pub use binaries::{Binaries, ensure_binaries};
pub use control_plane::{ControlPlane, StartOptions, shared, unique_name};
pub use process::Reaper;

/// Errors of the test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`go` was not found on PATH; the local control plane is built from Go modules (install Go 1.26+): {0}"
    )]
    GoMissing(#[source] std::io::Error),
    #[error("building {what} failed (exit {code:?}); last output:\n{tail}")]
    GoBuild {
        what: String,
        code: Option<i32>,
        tail: String,
    },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("{what} did not become ready within {secs}s; its log ({log}) ends with:\n{tail}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
        tail: String,
    },
    #[error("{what} exited early with {status}; its log ({log}) ends with:\n{tail}")]
    Exited {
        what: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("spawner thread is gone")]
    Spawner,
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.as_ref().display().to_string();
    move |source| Error::Io { path, source }
}

/// Last `n` lines of a log file, for error messages.
pub(crate) fn tail_file(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
