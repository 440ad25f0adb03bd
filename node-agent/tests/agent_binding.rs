//! Binding on a fake sysfs tree driven by a model of the kernel's driver core: the
//! driver_override → unbind → drivers_probe sequence, verification, restore, the journal's
//! crash recovery at every step, the safety refusals (what the device is, whose it is, what
//! the node uses) and the PodResources in-use hold.

mod agent_support;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;

use agent_support::{CRASH, FakeNic, FakeNode};
use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::journal::{Journal, Phase};
use dpdk_node_agent::modules::ModuleConfig;
use dpdk_node_agent::reconcile::{self, NodeContext, Report, Target, health};
use dpdk_node_agent::safety::{self, EniMac, HostNetwork, InterfaceAddress, SafetyPolicy};
use dpdk_node_agent::sysfs::{PciAddress, Sysfs};

fn load_vfio(node: &FakeNode) {
    let cfg = ModuleConfig {
        driver: DpdkDriver::VfioPci,
        noiommu: false,
        write_combining: false,
    };
    node.load_modules(&cfg).expect("vfio-pci loads");
    node.kernel.take_writes();
}

fn target(nic: &FakeNic, index: i32) -> Target {
    Target {
        device_index: index,
        node_eni: Some(format!("eni-cr-{index}")),
        eni_id: Some(format!("eni-{index:017x}")),
        address: PciAddress::parse(&nic.bdf).expect("bdf"),
        driver: "vfio-pci".into(),
        resource_name: Some("intel.com/intel_sriov_netdevice_2".into()),
        eni_mac: EniMac::Unchecked,
    }
}

struct Env {
    sysfs: Sysfs,
    network: HostNetwork,
    policy: SafetyPolicy,
    in_use: Option<BTreeSet<String>>,
}

impl Env {
    fn new(node: &FakeNode) -> Self {
        let network = HostNetwork {
            routes: safety::parse_ipv4_routes(
                &std::fs::read_to_string(node.proc_.join("net/route")).expect("route"),
            ),
            addresses: vec![],
            rules: vec![],
        };
        Self {
            sysfs: Sysfs::new(&node.sys),
            network,
            policy: SafetyPolicy::default(),
            in_use: None,
        }
    }

    fn ctx<'a>(&'a self, node: &'a FakeNode) -> NodeContext<'a> {
        NodeContext {
            sysfs: &self.sysfs,
            dev_root: &node.dev,
            kernel: &node.kernel,
            network: &self.network,
            policy: &self.policy,
            in_use: self.in_use.as_ref(),
        }
    }

    fn converge(&self, node: &FakeNode, targets: &[Target]) -> Report {
        let mut journal = Journal::open(&node.state).expect("journal");
        reconcile::converge(&self.ctx(node), &mut journal, targets)
    }
}

#[test]
fn binds_with_override_unbind_probe_then_verifies_and_clears_the_override() {
    let nic = FakeNic::ena(6);
    let node = FakeNode::new(std::slice::from_ref(&nic));
    load_vfio(&node);
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("ena"));

    let env = Env::new(&node);
    let report = env.converge(&node, &[target(&nic, 2)]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let writes = node.kernel.take_writes();
    let expected: Vec<(String, String)> = vec![
        (
            format!("bus/pci/devices/{}/driver_override", nic.bdf),
            "vfio-pci".into(),
        ),
        ("bus/pci/drivers/ena/unbind".into(), nic.bdf.clone()),
        ("bus/pci/drivers_probe".into(), nic.bdf.clone()),
        (
            format!("bus/pci/devices/{}/driver_override", nic.bdf),
            String::new(),
        ),
    ];
    assert_eq!(writes, expected, "the kernel's sequence, in order");
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("vfio-pci"));
    assert_eq!(
        node.override_of(&nic.bdf),
        "(null)",
        "override cleared after verification"
    );
    assert!(
        node.vfio_dev_exists(6),
        "/dev/vfio/6 exists once vfio-pci holds the device"
    );
    assert!(!node.netdev_exists(&nic.ifname), "the netdev is gone");

    // MAC, interface and original driver were recorded before binding, and survive it.
    let d = &report.devices[0];
    assert_eq!(d.mac.as_deref(), Some(nic.mac.as_str()));
    assert_eq!(d.interface_name.as_deref(), Some(nic.ifname.as_str()));
    assert_eq!(d.original_driver.as_deref(), Some("ena"));
    assert_eq!(d.driver.as_deref(), Some("vfio-pci"));
    assert!(d.bound);
    assert_eq!(d.health.as_deref(), Some(health::HEALTHY));
    let journal = Journal::open(&node.state).expect("journal");
    let e = journal
        .get(&PciAddress::parse(&nic.bdf).expect("bdf"))
        .expect("entry");
    assert_eq!(
        (e.phase, e.mac.as_deref(), e.original_driver.as_deref()),
        (Phase::Bound, Some(nic.mac.as_str()), Some("ena"))
    );

    // A second pass changes nothing.
    let again = env.converge(&node, &[target(&nic, 2)]);
    assert!(node.kernel.take_writes().is_empty(), "converged: no writes");
    assert_eq!(again.devices, report.devices);
}

#[test]
fn a_device_that_leaves_the_spec_gets_its_original_driver_back() {
    let nic = FakeNic::ena(7);
    let node = FakeNode::new(std::slice::from_ref(&nic));
    load_vfio(&node);
    let env = Env::new(&node);
    env.converge(&node, &[target(&nic, 1)]);
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("vfio-pci"));
    node.kernel.take_writes();

    let report = env.converge(&node, &[]);
    assert!(
        report.errors.is_empty() && report.devices.is_empty(),
        "{report:?}"
    );
    let writes = node.kernel.take_writes();
    assert_eq!(
        writes[0],
        (
            format!("bus/pci/devices/{}/driver_override", nic.bdf),
            "ena".into()
        )
    );
    assert_eq!(
        writes[1],
        ("bus/pci/drivers/vfio-pci/unbind".into(), nic.bdf.clone())
    );
    assert_eq!(writes[2], ("bus/pci/drivers_probe".into(), nic.bdf.clone()));
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("ena"));
    assert_eq!(node.override_of(&nic.bdf), "(null)");
    assert!(node.netdev_exists(&nic.ifname), "the netdev is back");
    assert!(!node.vfio_dev_exists(7));
    assert!(
        Journal::open(&node.state).expect("journal").is_empty(),
        "journal forgets restored devices"
    );
}

/// Kills the agent at every write of the bind sequence, restarts it, and checks that the
/// journal brings the node to the desired state with the original driver still known.
#[test]
fn crash_at_every_step_of_a_bind_recovers_from_the_journal() {
    for crash_at in 1..=4 {
        let nic = FakeNic::ena(6);
        let mut node = FakeNode::new(std::slice::from_ref(&nic));
        load_vfio(&node);
        let env = Env::new(&node);
        node.kernel.crash_at_write(crash_at);
        let died =
            std::panic::catch_unwind(AssertUnwindSafe(|| env.converge(&node, &[target(&nic, 2)])));
        let msg = died.expect_err("the agent dies mid-bind");
        assert_eq!(msg.downcast_ref::<&str>().copied(), Some(CRASH));
        let j = Journal::open(&node.state).expect("journal");
        let e = j
            .get(&PciAddress::parse(&nic.bdf).expect("bdf"))
            .expect("intent recorded before the first write");
        assert_eq!(e.phase, Phase::Binding);
        assert_eq!(
            e.original_driver.as_deref(),
            Some("ena"),
            "crash at write {crash_at}"
        );

        // Restart: recovery first, then the normal converge.
        node.restart_agent();
        let mut journal = Journal::open(&node.state).expect("journal");
        let errors = reconcile::recover(&env.ctx(&node), &mut journal);
        assert!(errors.is_empty(), "crash at write {crash_at}: {errors:?}");
        let report = reconcile::converge(&env.ctx(&node), &mut journal, &[target(&nic, 2)]);
        assert!(
            report.errors.is_empty(),
            "crash at write {crash_at}: {:?}",
            report.errors
        );
        assert_eq!(
            node.driver_of(&nic.bdf).as_deref(),
            Some("vfio-pci"),
            "crash at write {crash_at}"
        );
        assert_eq!(
            node.override_of(&nic.bdf),
            "(null)",
            "crash at write {crash_at}"
        );
        assert!(node.vfio_dev_exists(6));
        let e = journal
            .get(&PciAddress::parse(&nic.bdf).expect("bdf"))
            .expect("entry");
        assert_eq!(e.phase, Phase::Bound);
        assert_eq!(e.original_driver.as_deref(), Some("ena"));
        assert_eq!(
            e.mac.as_deref(),
            Some(nic.mac.as_str()),
            "MAC from before the bind"
        );
        assert_eq!(report.devices[0].mac.as_deref(), Some(nic.mac.as_str()));

        // And the original driver is restored on unbind, although the device had no
        // driver at all when the agent restarted (crash after the unbind write).
        let report = env.converge(&node, &[]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            node.driver_of(&nic.bdf).as_deref(),
            Some("ena"),
            "crash at write {crash_at}"
        );
        assert!(node.netdev_exists(&nic.ifname));
    }
}

/// A crash mid-bind while the spec changes underneath: on restart the device is no longer
/// wanted, and the journal still knows where it came from.
#[test]
fn crash_after_unbind_then_spec_drops_the_device_restores_the_original_driver() {
    let nic = FakeNic::ena(9);
    let mut node = FakeNode::new(std::slice::from_ref(&nic));
    load_vfio(&node);
    let env = Env::new(&node);
    // Die right at drivers_probe: the device is unbound from ena and not yet on vfio-pci.
    node.kernel.crash_at_write(3);
    assert!(
        std::panic::catch_unwind(AssertUnwindSafe(|| env.converge(&node, &[target(&nic, 1)])))
            .is_err()
    );
    assert_eq!(
        node.driver_of(&nic.bdf),
        None,
        "left without a driver by the crash"
    );
    assert!(!node.netdev_exists(&nic.ifname));

    node.restart_agent();
    let mut journal = Journal::open(&node.state).expect("journal");
    assert!(reconcile::recover(&env.ctx(&node), &mut journal).is_empty());
    let report = reconcile::converge(&env.ctx(&node), &mut journal, &[]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("ena"));
    assert_eq!(node.override_of(&nic.bdf), "(null)");
    assert!(journal.is_empty());
}

#[test]
fn crash_at_every_step_of_a_restore_recovers_from_the_journal() {
    for crash_at in 1..=4 {
        let nic = FakeNic::ena(5);
        let mut node = FakeNode::new(std::slice::from_ref(&nic));
        load_vfio(&node);
        let env = Env::new(&node);
        env.converge(&node, &[target(&nic, 1)]);
        node.kernel.crash_at_write(crash_at);
        assert!(std::panic::catch_unwind(AssertUnwindSafe(|| env.converge(&node, &[]))).is_err());
        let j = Journal::open(&node.state).expect("journal");
        assert_eq!(
            j.get(&PciAddress::parse(&nic.bdf).expect("bdf"))
                .map(|e| e.phase),
            Some(Phase::Restoring)
        );

        node.restart_agent();
        let mut journal = Journal::open(&node.state).expect("journal");
        assert!(
            reconcile::recover(&env.ctx(&node), &mut journal).is_empty(),
            "crash at write {crash_at}"
        );
        assert!(journal.is_empty(), "crash at write {crash_at}");
        assert_eq!(
            node.driver_of(&nic.bdf).as_deref(),
            Some("ena"),
            "crash at write {crash_at}"
        );
        assert_eq!(
            node.override_of(&nic.bdf),
            "(null)",
            "crash at write {crash_at}"
        );
        assert!(node.netdev_exists(&nic.ifname));
    }
}

#[test]
fn refuses_interfaces_with_routes_or_the_node_ip_and_the_primary_eni() {
    let primary = FakeNic::ena(5);
    let routed = FakeNic::ena(6);
    let holds_ip = FakeNic::ena(7);
    let link_local = FakeNic::ena(8);
    let node = FakeNode::new(&[
        primary.clone(),
        routed.clone(),
        holds_ip.clone(),
        link_local.clone(),
    ]);
    load_vfio(&node);
    node.add_route(&primary.ifname, "0.0.0.0", "0.0.0.0", "10.0.0.1");
    node.add_route(&routed.ifname, "10.0.1.0", "255.255.255.0", "0.0.0.0");
    node.add_route(&link_local.ifname, "169.254.0.0", "255.255.0.0", "0.0.0.0");
    let mut env = Env::new(&node);
    env.network.addresses.push(InterfaceAddress {
        interface: holds_ip.ifname.clone(),
        address: "10.0.0.42".parse().expect("ip"),
    });
    env.policy.node_ips = vec!["10.0.0.42".parse().expect("ip")];

    let targets = [
        target(&primary, 0),
        target(&routed, 1),
        target(&holds_ip, 2),
        target(&link_local, 3),
    ];
    let report = env.converge(&node, &targets);
    let by_index = |i: i32| {
        report
            .devices
            .iter()
            .find(|d| d.device_index == i)
            .expect("device row")
    };
    for (i, needle) in [
        (0, "primary ENI"),
        (1, "10.0.1.0/24 dev ens6"),
        (2, "InternalIP 10.0.0.42"),
    ] {
        let d = by_index(i);
        assert_eq!(d.health.as_deref(), Some(health::REFUSED), "{d:?}");
        assert!(
            d.message.as_deref().is_some_and(|m| m.contains(needle)),
            "{:?} should mention {needle}",
            d.message
        );
        assert!(!d.bound);
    }
    for nic in [&primary, &routed, &holds_ip] {
        assert_eq!(
            node.driver_of(&nic.bdf).as_deref(),
            Some("ena"),
            "{} untouched",
            nic.bdf
        );
    }
    assert_eq!(
        by_index(3).health.as_deref(),
        Some(health::HEALTHY),
        "169.254/16 routes do not block"
    );
    assert_eq!(node.driver_of(&link_local.bdf).as_deref(), Some("vfio-pci"));
    assert_eq!(report.errors.len(), 3);
    let journal = Journal::open(&node.state).expect("journal");
    assert_eq!(
        journal.entries().count(),
        1,
        "refused devices are never journaled"
    );
}

#[test]
fn a_device_a_pod_holds_is_not_unbound_until_it_is_free() {
    let nic = FakeNic::ena(6);
    let node = FakeNode::new(std::slice::from_ref(&nic));
    load_vfio(&node);
    let mut env = Env::new(&node);
    env.converge(&node, &[target(&nic, 1)]);
    node.kernel.take_writes();

    env.in_use = Some([nic.bdf.clone()].into_iter().collect());
    let report = env.converge(&node, &[]);
    assert!(report.pending, "retry later");
    assert_eq!(report.devices[0].health.as_deref(), Some(health::IN_USE));
    assert!(report.devices[0].bound);
    assert!(
        node.kernel.take_writes().is_empty(),
        "no sysfs write while a pod holds it"
    );
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("vfio-pci"));

    env.in_use = Some(BTreeSet::new());
    let report = env.converge(&node, &[]);
    assert!(!report.pending && report.devices.is_empty());
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("ena"));
}

#[test]
fn a_failed_vfio_probe_rolls_back_to_the_original_driver() {
    let mut nic = FakeNic::ena(6);
    nic.group = None; // no IOMMU: vfio-pci's probe fails
    let node = FakeNode::new(std::slice::from_ref(&nic));
    load_vfio(&node);
    let env = Env::new(&node);
    let report = env.converge(&node, &[target(&nic, 1)]);
    let d = &report.devices[0];
    assert_eq!(d.health.as_deref(), Some(health::UNHEALTHY));
    let msg = d.message.clone().unwrap_or_default();
    assert!(
        msg.contains("did not claim") && msg.contains("IOMMU"),
        "{msg}"
    );
    assert_eq!(
        node.driver_of(&nic.bdf).as_deref(),
        Some("ena"),
        "rolled back"
    );
    assert!(node.netdev_exists(&nic.ifname));
    assert_eq!(node.override_of(&nic.bdf), "(null)");
    assert!(
        Journal::open(&node.state).expect("journal").is_empty(),
        "back on its original driver: nothing left to recover"
    );
}

#[test]
fn binding_without_the_driver_loaded_says_to_load_it() {
    let nic = FakeNic::ena(6);
    let node = FakeNode::new(std::slice::from_ref(&nic));
    let env = Env::new(&node);
    let report = env.converge(&node, &[target(&nic, 1)]);
    let msg = report.errors.join("\n");
    assert!(
        msg.contains("vfio-pci is not registered") && msg.contains("dpdk-node-agent load"),
        "{msg}"
    );
    assert!(node.kernel.take_writes().is_empty(), "nothing written");
    assert_eq!(node.driver_of(&nic.bdf).as_deref(), Some("ena"));
}

/// Asserts the device was refused with `needle` in its row, and nothing was written,
/// journaled or unbound.
fn assert_refused_untouched(
    node: &FakeNode,
    report: &Report,
    bdf: &str,
    driver: &str,
    needle: &str,
) {
    let d = report
        .devices
        .iter()
        .find(|d| d.pci_address.as_deref() == Some(bdf))
        .expect("device row");
    assert_eq!(d.health.as_deref(), Some(health::REFUSED), "{d:?}");
    let msg = d.message.clone().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} should mention {needle}");
    assert!(
        report.errors.iter().any(|e| e.contains(needle)),
        "{:?}",
        report.errors
    );
    assert!(!d.bound);
    assert_eq!(
        d.driver.as_deref(),
        Some(driver),
        "reported where it still is"
    );
    assert_eq!(
        node.driver_of(bdf).as_deref(),
        Some(driver),
        "{bdf} never unbound from {driver}"
    );
    assert!(
        node.kernel
            .take_writes()
            .iter()
            .all(|(path, value)| !path.contains(bdf) && value != bdf),
        "no sysfs write names {bdf}"
    );
    let journal = Journal::open(&node.state).expect("journal");
    assert!(
        journal.get(&PciAddress::parse(bdf).expect("bdf")).is_none(),
        "refused devices are never journaled"
    );
}

/// Fake sysfs: the EBS root volume (Amazon NVMe controller, class 0x010802, driver nvme,
/// no netdev, so no route or address check could see it) named as dpdkPCIAddress.
#[test]
fn an_nvme_volume_named_as_the_pci_address_is_refused_and_keeps_nvme() {
    let nic = FakeNic::ena(6);
    let node = FakeNode::new(std::slice::from_ref(&nic));
    node.register_driver("nvme").expect("nvme");
    let ebs = FakeNic::ebs_nvme(4);
    node.add_nic(ebs.clone());
    load_vfio(&node);
    assert_eq!(node.driver_of(&ebs.bdf).as_deref(), Some("nvme"));
    let env = Env::new(&node);

    let report = env.converge(&node, &[target(&ebs, 1), target(&nic, 2)]);
    assert_refused_untouched(
        &node,
        &report,
        &ebs.bdf,
        "nvme",
        "not a network controller (PCI class 0x010802",
    );
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(
        node.driver_of(&nic.bdf).as_deref(),
        Some("vfio-pci"),
        "the real NIC next to it still binds"
    );
}

/// Fake sysfs: a network-class device held by a storage driver, and a device on ena whose
/// vendor is not Amazon's, are refused; an Intel NIC on e1000e (the QEMU guest's) binds.
#[test]
fn a_storage_driver_or_an_ena_device_without_amazons_vendor_is_refused() {
    let node = FakeNode::new(&[]);
    for d in ["virtio_blk", "e1000e"] {
        node.register_driver(d).expect("driver");
    }
    let disguised = FakeNic {
        native_driver: "virtio_blk".into(),
        ..FakeNic::ena(3)
    };
    let spoofed = FakeNic {
        vendor: "0x8086".into(),
        ..FakeNic::ena(4)
    };
    let intel = FakeNic {
        native_driver: "e1000e".into(),
        vendor: "0x8086".into(),
        device: "0x10d3".into(),
        ..FakeNic::ena(5)
    };
    for n in [&disguised, &spoofed, &intel] {
        node.add_nic(n.clone());
    }
    load_vfio(&node);
    let env = Env::new(&node);
    let report = env.converge(
        &node,
        &[
            target(&disguised, 1),
            target(&spoofed, 2),
            target(&intel, 3),
        ],
    );
    let intel_row = report
        .devices
        .iter()
        .find(|d| d.device_index == 3)
        .expect("row");
    assert_eq!(
        intel_row.health.as_deref(),
        Some(health::HEALTHY),
        "{intel_row:?}"
    );
    assert_eq!(node.driver_of(&intel.bdf).as_deref(), Some("vfio-pci"));
    assert_refused_untouched(
        &node,
        &report,
        &disguised.bdf,
        "virtio_blk",
        "storage driver virtio_blk",
    );
    assert_refused_untouched(
        &node,
        &report,
        &spoofed.bdf,
        "ena",
        "PCI vendor is 0x8086, not Amazon's 0x1d0f",
    );
}

/// Fake sysfs: dpdkPCIAddress names ens7, but IMDS lists ens6's MAC for the NodeENI's ENI.
#[test]
fn a_device_whose_mac_is_not_the_enis_is_refused() {
    let (mine, other) = (FakeNic::ena(6), FakeNic::ena(7));
    let node = FakeNode::new(&[mine.clone(), other.clone()]);
    load_vfio(&node);
    let env = Env::new(&node);
    let listed = EniMac::Listed {
        eni: "eni-0aaaa".into(),
        mac: mine.mac.clone(),
    };
    let wrong = Target {
        eni_mac: listed.clone(),
        ..target(&other, 2)
    };
    let report = env.converge(&node, &[wrong]);
    assert_refused_untouched(
        &node,
        &report,
        &other.bdf,
        "ena",
        &format!(
            "its MAC {} is not the MAC of eni-0aaaa: IMDS lists {}",
            other.mac, mine.mac
        ),
    );
    let right = Target {
        eni_mac: listed,
        ..target(&mine, 2)
    };
    let report = env.converge(&node, &[right]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(node.driver_of(&mine.bdf).as_deref(), Some("vfio-pci"));
}
