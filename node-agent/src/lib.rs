//! dpdk-node-agent: kernel modules, ENI→PCI mapping, vfio-pci binding with a crash-safe
//! journal, node state reporting, and the kubelet device plugin. The binary is a thin CLI.

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
mod signals;
pub mod sim;
pub mod sysfs;

pub use error::Error;
