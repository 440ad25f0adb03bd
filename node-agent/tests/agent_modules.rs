//! Module loading on a fake host: dependency order from modules.dep, verification through
//! /sys/module, noiommu (on, switched on at runtime, unsupported with and without an
//! IOMMU), the three error messages operators need, write-combining honesty, persistence.

mod agent_support;

use agent_support::{FakeNic, FakeNode};
use dpdk_bridge::api::{DpdkDriver, WriteCombiningState};
use dpdk_node_agent::modules::{self, ModuleConfig};

fn load(node: &FakeNode, cfg: ModuleConfig) -> Result<modules::LoadResult, dpdk_node_agent::Error> {
    node.load_modules(&cfg)
}

const VFIO_NOIOMMU: ModuleConfig = ModuleConfig {
    driver: DpdkDriver::VfioPci,
    noiommu: true,
    write_combining: false,
};

#[test]
fn loads_vfio_pci_in_dependency_order_with_noiommu_and_verifies_in_sysfs() {
    let node = FakeNode::new(&[]);
    let r = load(&node, VFIO_NOIOMMU).expect("loads");
    let loaded = node.kernel.loaded_modules.lock().expect("lock").clone();
    let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "vfio",
            "vfio_iommu_type1",
            "vfio_virqfd",
            "irqbypass",
            "vfio_pci_core",
            "vfio_pci"
        ]
    );
    assert_eq!(
        loaded[0].1, "enable_unsafe_noiommu_mode=1",
        "vfio gets the noiommu parameter"
    );
    assert!(
        r.status.vfio && r.status.vfio_pci && r.status.noiommu,
        "{:?}",
        r.status
    );
    assert_eq!(r.loaded.len(), 6);
    assert!(node.sys.join("bus/pci/drivers/vfio-pci").is_dir());

    // Idempotent: nothing is loaded twice.
    let r = load(&node, VFIO_NOIOMMU).expect("loads again");
    assert!(r.loaded.is_empty(), "{:?}", r.loaded);
}

#[test]
fn noiommu_is_switched_on_at_runtime_when_vfio_was_loaded_without_it() {
    let node = FakeNode::new(&[]);
    load(
        &node,
        ModuleConfig {
            noiommu: false,
            ..VFIO_NOIOMMU
        },
    )
    .expect("loads");
    let param = node
        .sys
        .join("module/vfio/parameters/enable_unsafe_noiommu_mode");
    assert_eq!(std::fs::read_to_string(&param).expect("param").trim(), "N");
    let r = load(&node, VFIO_NOIOMMU).expect("loads");
    assert!(r.status.noiommu);
    assert_eq!(std::fs::read_to_string(&param).expect("param").trim(), "Y");
    let writes = node.kernel.take_writes();
    assert_eq!(
        writes,
        vec![(
            "module/vfio/parameters/enable_unsafe_noiommu_mode".to_string(),
            "1".to_string()
        )]
    );
}

#[test]
fn a_kernel_without_config_vfio_noiommu_and_no_iommu_is_named_exactly() {
    // No NIC with an IOMMU group, no /sys/class/iommu entries: no IOMMU on this node.
    let node = FakeNode::with_kernel(&[], false);
    let err = load(&node, VFIO_NOIOMMU).expect_err("cannot work");
    let msg = err.to_string();
    assert!(
        msg.contains("was built without CONFIG_VFIO_NOIOMMU"),
        "{msg}"
    );
    assert!(
        msg.contains("# CONFIG_VFIO_NOIOMMU is not set"),
        "the evidence from /boot/config: {msg}"
    );
    assert!(msg.contains(&node.release), "{msg}");
}

#[test]
fn without_config_vfio_noiommu_an_iommu_makes_noiommu_unnecessary() {
    let node = FakeNode::with_kernel(&[FakeNic::ena(6)], false);
    let r = load(&node, VFIO_NOIOMMU).expect("the IOMMU serves vfio-pci");
    assert!(
        !r.status.noiommu,
        "never claimed when the kernel cannot do it"
    );
    assert!(
        r.notes.iter().any(|n| n.contains("CONFIG_VFIO_NOIOMMU")),
        "{:?}",
        r.notes
    );
}

#[test]
fn permission_denied_says_what_capability_is_missing() {
    let node = FakeNode::new(&[]);
    *node.kernel.fail_module_loads_with.lock().expect("lock") = Some(libc::EPERM);
    let msg = load(&node, VFIO_NOIOMMU).expect_err("EPERM").to_string();
    assert!(
        msg.contains("permission denied loading kernel module vfio"),
        "{msg}"
    );
    assert!(
        msg.contains("CAP_SYS_MODULE") && msg.contains("privileged"),
        "{msg}"
    );
}

#[test]
fn a_missing_module_is_named_with_where_it_was_looked_for() {
    let node = FakeNode::new(&[]);
    let cfg = ModuleConfig {
        driver: DpdkDriver::IgbUio,
        noiommu: false,
        write_combining: true,
    };
    let msg = load(&node, cfg)
        .expect_err("igb_uio is not on this host")
        .to_string();
    assert!(msg.contains("kernel module igb_uio not found in"), "{msg}");
    assert!(
        msg.contains(&format!("lib/modules/{}", node.release)),
        "{msg}"
    );
    assert!(msg.contains("dpdk-kmods"), "{msg}");
    // A module file listed in modules.dep but gone from disk.
    std::fs::remove_file(node.host.join(format!(
        "lib/modules/{}/kernel/drivers/uio/uio_pci_generic.ko",
        node.release
    )))
    .expect("rm");
    let cfg = ModuleConfig {
        driver: DpdkDriver::UioPciGeneric,
        noiommu: false,
        write_combining: false,
    };
    let msg = load(&node, cfg).expect_err("file missing").to_string();
    assert!(
        msg.contains("uio_pci_generic") && msg.contains("depmod"),
        "{msg}"
    );
}

#[test]
fn write_combining_is_reported_as_it_is() {
    // Mainline vfio-pci: requested but unavailable, with the reason.
    let node = FakeNode::new(&[]);
    let r = load(
        &node,
        ModuleConfig {
            write_combining: true,
            ..VFIO_NOIOMMU
        },
    )
    .expect("loads");
    assert_eq!(
        r.status.write_combining.state,
        WriteCombiningState::Unavailable
    );
    assert!(
        r.status
            .write_combining
            .reason
            .as_deref()
            .is_some_and(|m| m.contains("amzn-drivers")),
        "{:?}",
        r.status.write_combining
    );
    assert!(
        r.notes.iter().any(
            |n| n.starts_with("write-combining requested but unavailable")
                && n.contains("amzn-drivers")
        ),
        "the note the init container logs: {:?}",
        r.notes
    );
    let r = load(&node, VFIO_NOIOMMU).expect("loads");
    assert_eq!(
        r.status.write_combining.state,
        WriteCombiningState::Disabled
    );
    assert!(r.notes.is_empty(), "not requested, no note: {:?}", r.notes);

    // A WC-patched vfio-pci-core (imports pci_iomap_wc) is detected.
    let node = FakeNode::new(&[]);
    let core = node.host.join(format!(
        "lib/modules/{}/kernel/drivers/vfio/pci/vfio-pci-core.ko",
        node.release
    ));
    std::fs::write(&core, b"\x7fELF patched\0pci_iomap_wc\0").expect("write");
    let r = load(
        &node,
        ModuleConfig {
            write_combining: true,
            ..VFIO_NOIOMMU
        },
    )
    .expect("loads");
    assert_eq!(r.status.write_combining.state, WriteCombiningState::Enabled);

    // igb_uio is loaded with wc_activate=1 and sysfs confirms it.
    let node = FakeNode::new(&[]);
    let mods = node.host.join(format!("lib/modules/{}", node.release));
    let mut dep = std::fs::read_to_string(mods.join("modules.dep")).expect("dep");
    dep.push_str("extra/dpdk/igb_uio.ko: kernel/drivers/uio/uio.ko\n");
    std::fs::write(mods.join("modules.dep"), dep).expect("dep");
    std::fs::create_dir_all(mods.join("extra/dpdk")).expect("mkdir");
    std::fs::write(mods.join("extra/dpdk/igb_uio.ko"), b"\x7fELF").expect("write");
    let r = load(
        &node,
        ModuleConfig {
            driver: DpdkDriver::IgbUio,
            noiommu: false,
            write_combining: true,
        },
    )
    .expect("loads");
    let loaded = node.kernel.loaded_modules.lock().expect("lock").clone();
    assert_eq!(
        loaded.last().map(|(n, p)| (n.as_str(), p.as_str())),
        Some(("igb_uio", "wc_activate=1"))
    );
    assert_eq!(
        r.status.write_combining.state,
        WriteCombiningState::Enabled,
        "{:?}",
        r.status.write_combining
    );
    assert_eq!(r.status.others, vec!["igb_uio".to_string()]);
}

#[test]
fn persist_writes_modules_load_and_modprobe_files_on_the_host_once() {
    let node = FakeNode::new(&[]);
    let changed = modules::persist(&node.host, &VFIO_NOIOMMU, true).expect("persist");
    assert_eq!(changed.len(), 2);
    let load = std::fs::read_to_string(node.host.join(modules::MODULES_LOAD_FILE)).expect("read");
    let opts = std::fs::read_to_string(node.host.join(modules::MODPROBE_FILE)).expect("read");
    assert!(load.lines().any(|l| l == "vfio-pci"), "{load}");
    assert!(
        opts.contains("options vfio enable_unsafe_noiommu_mode=1"),
        "{opts}"
    );
    assert!(
        modules::persist(&node.host, &VFIO_NOIOMMU, true)
            .expect("persist")
            .is_empty(),
        "unchanged content is not rewritten"
    );
}
