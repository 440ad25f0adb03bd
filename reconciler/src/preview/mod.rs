//! `dpdk-reconciler plan`: the impact of a config-repository checkout on the cluster,
//! before it is merged, like `terraform plan` (docs/plan.md).
//!
//! The pure parts decide: [`desired`] puts the checkout's DPDKConfigs in place of the live
//! ones (as the Git source would apply them), [`impact`] compares what the planner's
//! [`dpdk_bridge::plan::outcome`] converges on with and without them, [`render`] prints it.
//! [`cli`] is the only I/O: it reads the checkout and lists the cluster once. It never writes.

pub mod cli;
pub mod desired;
pub mod impact;
pub mod render;

/// Exit code: the checkout changes nothing.
pub const EXIT_NO_CHANGES: u8 = 0;
/// Exit code: the checkout changes DPDKConfigs (and maybe nodes and NodeENIs).
pub const EXIT_CHANGES: u8 = 1;
/// Exit code: the plan could not be made (invalid checkout, API errors, usage).
pub const EXIT_ERROR: u8 = 2;
