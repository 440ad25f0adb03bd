//! API types of group `networking.k8s.aws`, version `v1alpha1`.
//!
//! The CRDs in `deploy/` are generated from these types (`dpdk-reconciler crdgen`),
//! so validation lives here: schemars attributes for the structural schema and CEL
//! rules (`x-kubernetes-validations`) where the schema cannot say it.

mod config_source;
mod dpdk_config;
mod node_eni;
mod node_state;

pub use config_source::*;
pub use dpdk_config::*;
pub use node_eni::*;
pub use node_state::*;

/// API group shared by our CRDs and the AWS Multi-ENI Controller's NodeENI.
pub const GROUP: &str = "networking.k8s.aws";
/// API version of all CRDs in this module.
pub const VERSION: &str = "v1alpha1";
