//! dpdk-bridge: the Kubernetes side of dpdk-gitops, free of Git and sysfs.
//!
//! - [`api`]: the CRD types (DPDKConfig, DPDKNodeState, DPDKConfigSource) and a NodeENI mirror.
//! - [`conditions`]: kstatus-style conditions (Ready, Reconciling, Stalled).
//! - [`crd`]: CRD generation, rendered to the YAML committed under `deploy/`.
//! - [`crd_docs`]: the Markdown CRD field reference, rendered from the CRD schemas.
//! - [`labels`]: the label, annotation and field-manager names shared by every component.
//! - [`logging`]: log setup shared by every binary (`--log-format`, `RUST_LOG`).
//! - [`plan`]: the pure planner, in phases: index, claims, node_eni, node_state, teardown, status.
//! - [`ssa`]: server-side apply helpers: field ownership, apply conflicts, apply bodies.

pub mod api;
pub mod conditions;
pub mod crd;
pub mod crd_docs;
pub mod labels;
pub mod logging;
pub mod plan;
pub mod ssa;

/// Errors of the bridge crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rendering CRD {name} as YAML: {source}")]
    RenderCrd {
        name: String,
        #[source]
        source: serde_yaml::Error,
    },
}
