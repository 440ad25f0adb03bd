//! Test support: a fake node in a temporary directory. The node and its kernel model are
//! the library's [`dpdk_node_agent::sim`] (the demo runs the same one); this wrapper owns
//! the temporary directory and panics instead of returning errors. The IMDS and
//! PodResources stubs are test-only.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};

// Each test binary uses a different part of it.
#[allow(unused_imports)]
pub use dpdk_node_agent::sim::{CRASH, KernelModel, SimNic as FakeNic, SimNode};

pub mod imds;
pub mod podresources;

/// A fake node on disk, removed with the test.
pub struct FakeNode {
    pub tmp: tempfile::TempDir,
    node: SimNode,
}

impl Deref for FakeNode {
    type Target = SimNode;
    fn deref(&self) -> &SimNode {
        &self.node
    }
}

impl DerefMut for FakeNode {
    fn deref_mut(&mut self) -> &mut SimNode {
        &mut self.node
    }
}

impl FakeNode {
    /// A node whose NICs are bound to their native drivers, with `ena` loaded, the
    /// module files of the sim's MODULES_DEP on disk, and a kernel config.
    pub fn new(nics: &[FakeNic]) -> Self {
        Self::with_kernel(nics, true)
    }

    pub fn with_kernel(nics: &[FakeNic], noiommu_supported: bool) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let node = SimNode::create(tmp.path(), nics, noiommu_supported).expect("fake node");
        Self { tmp, node }
    }

    /// Adds a NIC, bound to its native driver when that is registered.
    pub fn add_nic(&self, nic: FakeNic) {
        self.node.add_nic(nic).expect("add NIC");
    }

    /// Adds a route line to the fake `/proc/net/route` (`dest`/`mask` as dotted quads).
    pub fn add_route(&self, iface: &str, dest: &str, mask: &str, gateway: &str) {
        self.node
            .add_route(iface, dest, mask, gateway)
            .expect("add route");
    }

    pub fn override_of(&self, bdf: &str) -> String {
        self.node.override_of(bdf).expect("read driver_override")
    }
}
