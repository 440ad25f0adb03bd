//! The kubelet device plugin (`dpdk-node-agent device-plugin`, DaemonSet
//! `sriov-device-plugin`): advertises DPDK-bound NICs to the kubelet over the device
//! plugin API v1beta1, one gRPC server per resource name.
//!
//! - [`inventory`]: desired devices (from DPDKNodeState) joined with sysfs → health.
//! - [`allocate`], [`preferred`], [`naming`]: the pure decisions.
//! - [`service`]: the DevicePlugin gRPC service of one resource.
//! - [`manager`]: sockets, Register, kubelet restarts; [`monitor`]: live health updates.
//! - [`authority`] (with [`hpack`]): accepts clients whatever `:authority` they send.
//! - [`source`]: the DPDKNodeState watch feeding the desired state.
//! - [`metrics`]: advertised/healthy devices and allocations.

pub mod allocate;
pub mod api;
pub mod authority;
pub mod cli;
pub mod hpack;
pub mod inventory;
pub mod manager;
pub mod metrics;
pub mod monitor;
pub mod naming;
pub mod preferred;
pub mod registration;
pub mod report;
pub mod service;
pub mod source;
pub mod sysfs_view;

pub use inventory::{DesiredState, HostPaths, OfferedDevice, Snapshot};
pub use manager::{Config, run};
pub use metrics::Metrics;
