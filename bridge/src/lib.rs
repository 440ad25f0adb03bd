//! dpdk-bridge: what every component agrees on, free of Git, sysfs and network I/O.
//!
//! - [`api`]: the CRD types (DPDKConfig, DPDKNodeState, DPDKConfigSource) and a mirror of
//!   the AWS Multi-ENI Controller's NodeENI.
//! - [`conditions`]: kstatus-style conditions (Ready, Reconciling, Stalled) and health.
//! - [`crd`]: CRD generation, rendered to the YAML committed under `deploy/`.
//! - [`crd_docs`]: the Markdown field reference (`docs/crd-reference.md`) from the schemas.
//! - [`duration`]: the one Go-style duration parser (`500ms`, `30s`, `1m30s`).
//! - [`json_pointer`]: RFC 6901 pointers and their escaping.
//! - [`labels`]: the label, annotation and field-manager names shared by every component.
//! - [`logging`]: `--log-format text|json` for every binary.
//! - [`plan`]: the DPDK controller's pure planner, in phases: index, claims, node_eni,
//!   node_state, teardown, status.
//! - [`signals`]: the SIGTERM/SIGINT shutdown signal of every long-running subcommand.
//! - [`ssa`]: server-side apply helpers: field ownership, conflicts, apply bodies.

pub mod api;
pub mod conditions;
pub mod crd;
pub mod crd_docs;
pub mod duration;
pub mod json_pointer;
pub mod labels;
pub mod logging;
pub mod plan;
pub mod signals;
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
    #[error(
        "invalid duration {input:?}: {reason}; write {}",
        duration::ACCEPTED_FORMS
    )]
    InvalidDuration { input: String, reason: &'static str },
}
