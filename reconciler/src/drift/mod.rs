//! Drift: what differs between Git, the cluster and the nodes, with the Git file and line
//! that declares each intent.
//!
//! - [`engine`]: pure functions (Git documents × live objects × ignore rules → findings)
//!   in three layers: Git ↔ cluster, cluster ↔ NodeENI, desired ↔ node.
//! - [`model`]: the inputs and the report.
//! - [`normalize`]: defaults and spellings applied before comparing.
//! - [`ignore`]: `spec.ignoreDifferences` rules.
//! - [`render`]: the JSON report and a unified diff of all layers.
//! - [`runtime`]: watches → recompute on change → the latest snapshot, and metrics.
//! - [`http`]: `GET /drift`, `/drift.diff`, `/drift.patch?source=ns/name`.
//! - [`cli`]: `dpdk-reconciler diff`.
//! - [`patch`]: layer 1 as a patch `git apply` accepts, changing only the lines that differ.

pub mod cli;
pub mod engine;
mod from_source;
pub mod http;
pub mod ignore;
pub mod model;
pub mod normalize;
pub mod patch;
pub mod render;
pub mod runtime;
pub mod yaml_render;

pub use engine::compute;
pub use model::*;
