//! dpdk-bridge: the Kubernetes side of dpdk-gitops, free of Git and sysfs.
//!
//! - [`api`]: the CRD types (DPDKConfig, DPDKNodeState, DPDKConfigSource) and a mirror of
//!   the AWS Multi-ENI Controller's NodeENI.
//! - [`crd`]: CRD generation, rendered to the YAML committed under `deploy/`.
//! - [`conditions`]: kstatus-style conditions (Ready, Reconciling, Stalled).
//! - [`labels`]: the label, annotation and field-manager names shared by every component.

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
