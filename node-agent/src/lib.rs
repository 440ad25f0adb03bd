//! dpdk-node-agent: kernel modules, ENI→PCI mapping, vfio-pci binding with a crash-safe
//! journal, node state reporting, and the kubelet device plugin. The binary is a thin CLI.

pub mod device_plugin;
pub mod error;
pub mod sysfs;
pub mod kernel;
pub mod binding;
pub mod journal;
pub mod safety;
pub mod reconcile;
pub mod modules;
pub mod mapping;
pub mod report;
pub mod commands;
pub mod podresources;
pub mod agent;
mod runtime;
mod signals;
pub mod sim;

pub use error::Error;
