//! A model of the AWS Multi-ENI Controller's DPDK behaviour, for tests that run it beside
//! dpdk-gitops. Written from upstream's code and docs (github.com/johnlam90/aws-multi-eni-controller),
//! not copied: each file models one behaviour and names the upstream path it follows.
//!
//! - [`eni_manager`]: the ENI manager DaemonSet's poll, skip rules, device choice, bind and
//!   unbind (`pkg/eni-manager/coordinator/manager.go`, `pkg/eni-manager/dpdk/`).
//! - [`sriov`]: the `/etc/pcidp/config.json` rewrite and the deletion of the node's
//!   device-plugin pods (`pkg/eni-manager/sriov/manager.go`).
//! - [`status_update`]: the controller's whole-status Update that copies its in-memory
//!   status over a conflict (`pkg/controller/nodeeni_controller.go`).
//! - [`deletion`]: the controller's finalizer and its move of a device back to `ena` on
//!   NodeENI deletion (`pkg/controller/nodeeni_controller.go`).
//!
//! The model acts on a simulated node the way upstream acts on a host: it reads the node's
//! sysfs tree and writes sysfs attributes through a [`SysfsWriter`] (in the tests, the
//! node agent's kernel model), and talks to the real API server. Every action it takes is
//! kept in a [`Record`], so tests can count binds, unbinds and pod deletions.

pub mod deletion;
pub mod eni_manager;
pub mod sriov;
pub mod status_update;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The upstream release a model behaves as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// v1.3.8 (HEAD `ebc2c8e`).
    V1_3_8,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_3_8 => "v1.3.8",
        }
    }
}

/// The ENI manager's default `CheckInterval` (`pkg/config/config.go`).
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);

/// The finalizer upstream's controller puts on every NodeENI.
pub const FINALIZER: &str = "nodeeni.networking.k8s.aws/finalizer";

/// Writes to sysfs. testenv sits below dpdk-node-agent, so the tests hand the model their
/// simulated node's kernel through this (the node agent's own `Kernel` trait has the same
/// `write_attr`).
pub trait SysfsWriter: Send + Sync {
    /// Writes `value` to the attribute at `rel` (relative to the sysfs root).
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()>;
}

/// One simulated host as upstream sees it: its node name, sysfs root and kernel.
#[derive(Clone)]
pub struct Host {
    pub node: String,
    pub sysfs: PathBuf,
    pub kernel: Arc<dyn SysfsWriter>,
}

/// Something the model did (or tried) to a device, a file or a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ip link set <ifname> down` before a bind by interface name.
    LinkDown { node: String, ifname: String },
    /// `dpdk-devbind.py --bind <driver> <bdf>` changed the device's driver.
    Bind {
        node: String,
        bdf: String,
        driver: String,
    },
    /// The bind was skipped: the device was already on the target driver.
    AlreadyBound { node: String, bdf: String },
    /// A bind attempt failed (no such interface, sysfs write refused).
    BindFailed { node: String, reason: String },
    /// `dpdk-devbind.py --unbind <bdf>`.
    Unbind { node: String, bdf: String },
    /// `config.json` was rewritten with new content.
    ConfigWritten { node: String, path: PathBuf },
    /// A device-plugin pod was deleted.
    PodDeleted {
        node: String,
        namespace: String,
        name: String,
        grace_seconds: i64,
    },
    /// The controller moved a device back to `ena` for a NodeENI being deleted.
    EnaRebind { node: String, bdf: String },
    /// The controller's status Update hit a conflict and copied its status over.
    StatusCopiedOver { nodeeni: String },
}

/// Every [`Action`], in order.
#[derive(Default)]
pub struct Record(Mutex<Vec<Action>>);

impl Record {
    pub fn push(&self, a: Action) {
        tracing::info!(action = ?a, "multi-eni model");
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(a);
    }

    pub fn all(&self) -> Vec<Action> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Driver changes: binds to a DPDK driver.
    pub fn binds(&self) -> usize {
        self.count(|a| matches!(a, Action::Bind { .. }))
    }

    pub fn unbinds(&self) -> usize {
        self.count(|a| matches!(a, Action::Unbind { .. }))
    }

    pub fn pod_deletions(&self) -> usize {
        self.count(|a| matches!(a, Action::PodDeleted { .. }))
    }

    pub fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.all().iter().filter(|a| f(a)).count()
    }
}

/// The driver a device is bound to, read from `<sysfs>/bus/pci/devices/<bdf>/driver`.
pub fn driver_of(sysfs: &Path, bdf: &str) -> Option<String> {
    std::fs::read_link(sysfs.join("bus/pci/devices").join(bdf).join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// A running model task; stopped when dropped.
pub struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}
