//! dpdk-node-agent: the node side. The binary is a thin CLI over this crate.
//!
//! - [`agent`]: `run` (container `monitor`): keep the node converged on its DPDKNodeState.
//! - [`binding`]: moving one PCI device between drivers with the kernel's own sequence.
//! - [`commands`]: `load`, `bind` and `unbind`.
//! - [`device_plugin`]: the kubelet device plugin (`device-plugin`).
//! - [`error`]: the crate's one error enum.
//! - [`journal`]: the crash-safe binding journal on a hostPath.
//! - [`kernel`]: the agent's only writes to the kernel (sysfs attributes, module loading).
//! - [`mapping`]: ENI → MAC → PCI address, through IMDS and sysfs.
//! - [`modules`]: loading and verifying vfio / vfio-pci (or igb_uio, uio_pci_generic).
//! - [`netlink`]: every route of every table and every policy rule, from rtnetlink.
//! - [`podresources`]: which devices pods hold, from the kubelet's PodResources API.
//! - [`reconcile`]: converging the node's devices on the desired set, through the journal.
//! - [`report`]: DPDKNodeState status, NodeENI `dpdk*` attachment fields, the ready label.
//! - `runtime`: the tokio runtimes the subcommands run on.
//! - [`safety`]: the checks that keep the agent from cutting its node off the network.
//! - [`sim`]: a simulated node (fake sysfs + kernel model) for the demo and tests.
//! - [`sysfs`]: a root-relative, read-only view of `/sys` and `/dev/vfio`.

pub mod agent;
pub mod binding;
pub mod commands;
pub mod device_plugin;
pub mod error;
pub mod journal;
pub mod kernel;
pub mod mapping;
pub mod modules;
pub mod netlink;
pub mod podresources;
pub mod reconcile;
pub mod report;
mod runtime;
pub mod safety;
pub mod sim;
pub mod sysfs;

pub use error::Error;
