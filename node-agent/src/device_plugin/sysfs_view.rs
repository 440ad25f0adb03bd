//! The few device facts the plugin reads, on top of the agent's [`crate::sysfs`] view:
//! bound driver, VFIO group, NUMA node, and for UIO drivers the `uioN` index. Only
//! what health and Allocate need, so a poll stays a handful of syscalls per device.

use std::path::Path;

use dpdk_bridge::api::DpdkDriver;

use crate::error::{Error, io_error};
use crate::sysfs::{PciAddress, Sysfs, VfioGroup};

/// What the plugin needs to know about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    pub driver: Option<String>,
    pub vfio_group: Option<VfioGroup>,
    /// `N` of `<device>/uio/uioN`, for devices held by a UIO driver.
    pub uio: Option<u32>,
    pub numa_node: Option<u32>,
    /// Whether the character device the driver calls for exists under the `/dev` root.
    pub dev_node_exists: bool,
}

/// Reads a device's facts for a device meant for `driver`.
pub fn device_facts(
    sysfs_root: &Path,
    dev_root: &Path,
    bdf: &str,
    driver: DpdkDriver,
) -> Result<DeviceFacts, Error> {
    let address = PciAddress::parse(bdf)?;
    let sysfs = Sysfs::new(sysfs_root);
    let dir = sysfs.pci_device_dir(&address);
    if !dir.exists() {
        return Err(Error::PciDeviceNotFound {
            address: address.to_string(),
            path: dir.display().to_string(),
        });
    }
    let bound = sysfs.bound_driver(&address)?;
    let numa_node = sysfs.numa_node(&address)?;
    let (vfio_group, uio, dev_node_exists) = match driver {
        DpdkDriver::VfioPci => {
            let group = sysfs.vfio_group(&address)?;
            let exists = group.is_some_and(|g| g.host_path(dev_root).exists());
            (group, None, exists)
        }
        DpdkDriver::IgbUio | DpdkDriver::UioPciGeneric => {
            let uio = uio_index(&dir.join("uio"))?;
            let exists = uio.is_some_and(|n| dev_root.join(format!("uio{n}")).exists());
            (None, uio, exists)
        }
    };
    Ok(DeviceFacts {
        driver: bound,
        vfio_group,
        uio,
        numa_node,
        dev_node_exists,
    })
}

/// The lowest `N` among `<dir>/uioN`; `None` when the directory is absent or empty.
fn uio_index(dir: &Path) -> Result<Option<u32>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut best = None;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("uio"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            best = Some(best.map_or(n, |b: u32| b.min(n)));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn uio_device_facts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        let real = sys.join("devices/pci0000:00/0000:00:07.0");
        std::fs::create_dir_all(real.join("uio/uio3")).expect("mkdir");
        std::fs::create_dir_all(sys.join("bus/pci/devices")).expect("mkdir");
        std::fs::create_dir_all(sys.join("bus/pci/drivers/igb_uio")).expect("mkdir");
        symlink(
            "../../../devices/pci0000:00/0000:00:07.0",
            sys.join("bus/pci/devices/0000:00:07.0"),
        )
        .expect("symlink");
        symlink("../../../bus/pci/drivers/igb_uio", real.join("driver")).expect("symlink");
        std::fs::create_dir_all(&dev).expect("mkdir");

        let f = device_facts(&sys, &dev, "0000:00:07.0", DpdkDriver::IgbUio).expect("facts");
        assert_eq!(
            (f.driver.as_deref(), f.uio, f.dev_node_exists),
            (Some("igb_uio"), Some(3), false)
        );
        std::fs::write(dev.join("uio3"), "").expect("write");
        let f = device_facts(&sys, &dev, "0000:00:07.0", DpdkDriver::IgbUio).expect("facts");
        assert!(f.dev_node_exists);
    }

    #[test]
    fn missing_device_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = device_facts(tmp.path(), tmp.path(), "0000:00:09.0", DpdkDriver::VfioPci)
            .expect_err("missing");
        assert!(err.to_string().contains("0000:00:09.0"), "{err}");
    }
}
