//! The real kernel: QEMU (TCG) boots a Debian kernel with two emulated NICs (e1000e and
//! virtio-net) and the statically linked agent inside the guest
//! - loads vfio + vfio-pci and binds the e1000e NIC: its driver link points to vfio-pci and
//!   /dev/vfio/<group> exists (emulated Intel VT-d, `intel_iommu=on`);
//! - refuses the virtio NIC, which carries the default route;
//! - restores e1000e on unbind;
//! - refuses the e1000e when its only route is in table 100 (policy routing, as the VPC CNI
//!   sets up a secondary ENI): the route check reads every table through rtnetlink;
//! - without an IOMMU, on this Debian kernel (no CONFIG_VFIO_NOIOMMU), `load` says exactly
//!   that, and a failed vfio-pci probe hands the NIC back to e1000e.
//!
//! QEMU missing is a failure (CI installs it from .ci/apt-packages.txt). Only when QEMU is
//! installed but cannot start a machine on this host do the tests skip, loudly; set
//! DPDK_REQUIRE_QEMU=1 to make that a failure too.

#[path = "qemu/harness.rs"]
mod harness;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use harness::{Boot, Guest, QemuStatus};

/// One guest per test binary; one QEMU at a time (the machine is shared).
fn guest() -> Option<&'static Guest> {
    static GUEST: OnceLock<Option<Guest>> = OnceLock::new();
    GUEST
        .get_or_init(|| match harness::qemu_status() {
            QemuStatus::Ready => {
                let agent = harness::build_static_agent();
                let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-guest");
                Some(harness::build_guest(&agent, &out))
            }
            QemuStatus::Missing(why) => panic!("QEMU is required for the real-kernel test and is missing: {why}"),
            QemuStatus::CannotStart(why) => {
                let banner = "!".repeat(78);
                eprintln!("\n{banner}\n!! SKIPPING the real-kernel QEMU tests: QEMU is installed but cannot start a machine here:\n!! {why}\n{banner}\n");
                if std::env::var("DPDK_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
                    panic!("DPDK_REQUIRE_QEMU=1 and QEMU cannot start: {why}");
                }
                None
            }
        })
        .as_ref()
}

fn run(mode: &str, iommu: bool) -> Option<Boot> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guest = guest()?;
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let boot = harness::boot(guest, mode, iommu, Duration::from_secs(240));
    eprintln!(
        "{mode}: guest {} ran for {:.1}s",
        guest.release,
        boot.elapsed.as_secs_f64()
    );
    assert!(
        !boot.timed_out,
        "QEMU ({mode}) did not finish in time; console:\n{}",
        boot.console
    );
    assert!(
        boot.done(),
        "the guest ({mode}) did not reach the end of its script; console:\n{}",
        boot.console
    );
    Some(boot)
}

fn assert_checks(boot: &Boot, expected: &[&str]) {
    let checks = boot.checks();
    let failed: Vec<_> = checks.iter().filter(|c| !c.1).collect();
    assert!(
        failed.is_empty(),
        "failed in the guest: {failed:?}\nconsole:\n{}",
        boot.console
    );
    for name in expected {
        assert!(
            checks.iter().any(|c| c.0 == *name && c.1),
            "check {name} did not run; console:\n{}",
            boot.console
        );
    }
}

#[test]
fn binds_to_vfio_pci_refuses_the_default_route_nic_and_restores_on_a_real_kernel() {
    let Some(boot) = run("iommu", true) else {
        return;
    };
    assert_checks(
        &boot,
        &[
            "load_exit",
            "vfio_module",
            "vfio_pci_driver",
            "noiommu_not_claimed",
            "bind_exit",
            "driver_link_vfio",
            "dev_vfio_group",
            "override_cleared",
            "netdev_gone",
            "journal_original_driver",
            "journal_mac",
            "refuse_exit",
            "refuse_names_default_route",
            "primary_untouched",
            "primary_still_routes",
            "other_device_kept",
            "unbind_exit",
            "driver_restored",
            "netdev_back",
            "dev_vfio_group_gone",
            "journal_empty",
        ],
    );
    eprintln!("guest timings: {:?}", boot.times());
}

#[test]
fn without_iommu_a_debian_kernel_is_named_for_lacking_config_vfio_noiommu_and_the_nic_is_rolled_back()
 {
    let Some(boot) = run("noiommu", false) else {
        return;
    };
    assert_checks(
        &boot,
        &[
            "load_fails",
            "load_names_config_vfio_noiommu",
            "bind_fails",
            "bind_says_why",
            "rolled_back",
            "override_cleared",
        ],
    );
}

#[test]
fn refuses_a_nic_whose_only_route_is_in_table_100_on_a_real_kernel() {
    let Some(boot) = run("route-table", true) else {
        return;
    };
    assert_checks(
        &boot,
        &[
            "route_added",
            "route_in_table_100",
            "main_table_does_not_name_nic",
            "load_exit",
            "vfio_pci_driver",
            "refuse_exit",
            "refuse_names_table_100",
            "report_refused",
            "nic_untouched",
            "netdev_kept",
            "override_cleared",
            "route_still_in_table_100",
        ],
    );
    // The guest's own view: table 100 and the agent's refusal.
    for line in boot
        .console
        .lines()
        .filter(|l| l.contains("DPDKTEST-LOG table100") || l.contains("DPDKTEST-LOG bind"))
    {
        eprintln!("{line}");
    }
}
