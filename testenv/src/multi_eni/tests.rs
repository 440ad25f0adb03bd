//! Unit tests of the model's pure parts on a hand-made sysfs tree (a fake: no kernel model
//! here; the integration tests in node-agent/tests/multi_eni_coexistence.rs use the real
//! simulated node).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dpdk_bridge::api::ENIAttachment;

use super::deletion::{guess_pci_address, move_back_to_ena};
use super::eni_manager::{bind, pci_slot_of, skip_binding};
use super::sriov::{Config, ResourceUpdate, add};
use super::{Action, Host, Record, SysfsWriter};

/// Records writes instead of applying them.
#[derive(Default)]
struct Writes(Mutex<Vec<(String, String)>>);

impl SysfsWriter for Writes {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        let mut w = self.0.lock().expect("writes");
        w.push((rel.display().to_string(), value.to_string()));
        Ok(())
    }
}

/// A device at `bdf` on `driver`, with netdev `ifname` when given.
fn device(sys: &Path, bdf: &str, driver: &str, ifname: Option<&str>) {
    let dir = sys.join("devices/pci0000:00").join(bdf);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("uevent"), format!("PCI_SLOT_NAME={bdf}\n")).expect("uevent");
    std::fs::create_dir_all(sys.join("bus/pci/devices")).expect("devices");
    std::fs::create_dir_all(sys.join("bus/pci/drivers").join(driver)).expect("driver");
    symlink(&dir, sys.join("bus/pci/devices").join(bdf)).expect("link");
    symlink(sys.join("bus/pci/drivers").join(driver), dir.join("driver")).expect("driver link");
    if let Some(ifname) = ifname {
        let net = dir.join("net").join(ifname);
        std::fs::create_dir_all(&net).expect("net");
        symlink(&dir, net.join("device")).expect("device link");
        std::fs::create_dir_all(sys.join("class/net")).expect("class");
        symlink(&net, sys.join("class/net").join(ifname)).expect("class link");
    }
}

fn host(sys: &Path) -> (Host, Arc<Writes>) {
    let w = Arc::new(Writes::default());
    let h = Host {
        node: "n1".into(),
        sysfs: sys.to_path_buf(),
        kernel: w.clone(),
    };
    (h, w)
}

#[test]
fn an_attachment_is_skipped_when_bound_or_not_attached() {
    let att = |bound: Option<bool>, status: &str| ENIAttachment {
        dpdk_bound: bound,
        status: Some(status.into()),
        ..Default::default()
    };
    assert!(!skip_binding(&att(None, "attached")));
    assert!(!skip_binding(&att(Some(false), "attached")));
    assert!(skip_binding(&att(Some(true), "attached")));
    assert!(skip_binding(&att(None, "attaching")));
}

#[test]
fn eth_n_is_found_through_its_uevent_and_a_missing_one_is_none() {
    let tmp = tempfile::tempdir().expect("tmp");
    device(tmp.path(), "0000:00:07.0", "ena", Some("eth2"));
    assert_eq!(
        pci_slot_of(tmp.path(), "eth2").as_deref(),
        Some("0000:00:07.0")
    );
    assert_eq!(pci_slot_of(tmp.path(), "eth1"), None);
}

#[test]
fn devbind_skips_a_device_on_the_target_driver_and_otherwise_writes_the_sequence() {
    let tmp = tempfile::tempdir().expect("tmp");
    device(tmp.path(), "0000:00:06.0", "vfio-pci", None);
    device(tmp.path(), "0000:00:07.0", "ena", Some("eth2"));
    let (h, w) = host(tmp.path());
    let record = Record::default();
    assert!(bind(&h, &record, "0000:00:06.0", "vfio-pci"));
    assert!(w.0.lock().expect("w").is_empty(), "already bound: no write");
    assert!(bind(&h, &record, "0000:00:07.0", "vfio-pci"));
    let writes = w.0.lock().expect("w").clone();
    let expected: Vec<(String, String)> = [
        ("bus/pci/drivers/ena/unbind", "0000:00:07.0"),
        ("bus/pci/devices/0000:00:07.0/driver_override", "vfio-pci"),
        ("bus/pci/drivers/vfio-pci/bind", "0000:00:07.0"),
        ("bus/pci/devices/0000:00:07.0/driver_override", ""),
    ]
    .iter()
    .map(|(p, v)| (p.to_string(), v.to_string()))
    .collect();
    assert_eq!(writes, expected);
    assert_eq!(record.binds(), 1);
    assert_eq!(
        record.count(|a| matches!(a, Action::AlreadyBound { .. })),
        1
    );
}

#[test]
fn the_deletion_guess_falls_back_to_device_index_plus_3_and_only_dpdk_drivers_move() {
    let tmp = tempfile::tempdir().expect("tmp");
    // eth2 is bound to vfio-pci, so it has no netdev: the guess is 0000:00:05.0.
    device(tmp.path(), "0000:00:05.0", "vfio-pci", None);
    device(tmp.path(), "0000:00:06.0", "ena", Some("eth1"));
    assert_eq!(
        guess_pci_address(tmp.path(), 2).as_deref(),
        Some("0000:00:05.0")
    );
    assert_eq!(
        guess_pci_address(tmp.path(), 1).as_deref(),
        Some("0000:00:06.0"),
        "by its netdev"
    );
    assert_eq!(guess_pci_address(tmp.path(), 7), None);
    let (h, w) = host(tmp.path());
    let record = Record::default();
    assert!(move_back_to_ena(&h, &record, "0000:00:06.0"));
    assert!(w.0.lock().expect("w").is_empty(), "ena is left alone");
    assert!(move_back_to_ena(&h, &record, "0000:00:05.0"));
    let writes = w.0.lock().expect("w").clone();
    assert_eq!(writes.len(), 4);
    assert_eq!(writes[1].1, "ena");
    assert_eq!(writes[2].0, "bus/pci/drivers/ena/bind");
}

#[test]
fn the_sriov_config_gets_each_address_once() {
    let u = ResourceUpdate::new(
        "0000:00:06.0",
        "intel.com/intel_sriov_netdevice_2",
        "vfio-pci",
    );
    assert_eq!(
        (u.resource_prefix.as_str(), u.resource_name.as_str()),
        ("intel.com", "intel_sriov_netdevice_2")
    );
    let mut c = Config::default();
    add(&mut c, &u);
    let once = c.clone();
    add(&mut c, &u);
    assert_eq!(c, once, "unchanged: no rewrite, no restart");
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(
        json["resourceList"][0]["selectors"][0]["pciAddresses"][0],
        "0000:00:06.0"
    );
}
