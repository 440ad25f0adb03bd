//! A root-relative, read-only view of `/sys` (and of `/dev/vfio`).
//!
//! Every path the agent and the device plugin read goes through [`Sysfs`], rooted at
//! `--sysfs-root`, so the same code runs against the host's `/sys`, a fake tree in a
//! temporary directory, and a real kernel in a QEMU guest. Writes (driver_override,
//! unbind, drivers_probe) are not here: they go through the `Kernel` trait (binding.rs), which
//! tests replace with a model of the kernel's semantics.
//!
//! The stable entry point for the device plugin is [`pci_device_info`]: given a sysfs
//! root, a `/dev` root and a BDF it returns the bound driver, the VFIO group (IOMMU or
//! noiommu), the NUMA node and whether the group's character device exists.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, io_error};

/// The default sysfs mount point.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";
/// The default device directory.
pub const DEFAULT_DEV_ROOT: &str = "/dev";
/// The name the kernel gives an IOMMU group that vfio created for a noiommu device.
const NOIOMMU_GROUP_NAME: &str = "vfio-noiommu";

/// A PCI address in the kernel's canonical form `dddd:bb:dd.f` (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PciAddress(String);

impl PciAddress {
    /// Parses `dddd:bb:dd.f` or the short `bb:dd.f` (domain 0000), case-insensitively.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidPciAddress {
            value: s.to_string(),
        };
        let s_trim = s.trim();
        let (domain, rest) = match s_trim.matches(':').count() {
            2 => s_trim.split_once(':').ok_or_else(invalid)?,
            1 => ("0000", s_trim),
            _ => return Err(invalid()),
        };
        let (bus, devfn) = rest.split_once(':').ok_or_else(invalid)?;
        let (dev, func) = devfn.split_once('.').ok_or_else(invalid)?;
        let hex = |part: &str, max_len: usize| -> Result<u32, Error> {
            if part.is_empty()
                || part.len() > max_len
                || !part.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(invalid());
            }
            u32::from_str_radix(part, 16).map_err(|_| invalid())
        };
        let (domain, bus, dev, func) = (hex(domain, 4)?, hex(bus, 2)?, hex(dev, 2)?, hex(func, 1)?);
        if dev > 0x1f || func > 7 {
            return Err(invalid());
        }
        Ok(Self(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PciAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PciAddress {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<PciAddress> for String {
    fn from(a: PciAddress) -> String {
        a.0
    }
}

/// The VFIO group of a device: a real IOMMU group, or one vfio made up in noiommu mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VfioGroup {
    /// An IOMMU group; its character device is `/dev/vfio/<N>`.
    Iommu(u32),
    /// A noiommu group; its character device is `/dev/vfio/noiommu-<N>` on the host.
    NoIommu(u32),
}

impl VfioGroup {
    /// The group number.
    pub fn id(self) -> u32 {
        match self {
            VfioGroup::Iommu(n) | VfioGroup::NoIommu(n) => n,
        }
    }

    /// The file name under `/dev/vfio` on the host: `N` or `noiommu-N`.
    pub fn dev_name(self) -> String {
        match self {
            VfioGroup::Iommu(n) => n.to_string(),
            VfioGroup::NoIommu(n) => format!("noiommu-{n}"),
        }
    }

    /// The group's character device under `dev_root` (normally `/dev`).
    pub fn host_path(self, dev_root: &Path) -> PathBuf {
        dev_root.join("vfio").join(self.dev_name())
    }

    /// Where a container sees the group: always `/dev/vfio/<N>` (DPDK opens that path).
    pub fn container_path(self) -> String {
        format!("/dev/vfio/{}", self.id())
    }
}

/// What sysfs says about one PCI device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PciDeviceInfo {
    pub address: PciAddress,
    /// The driver bound now (the `driver` link's target name), if any.
    pub driver: Option<String>,
    /// `driver_override`, if set.
    pub driver_override: Option<String>,
    /// The device's VFIO/IOMMU group, if it has one.
    pub vfio_group: Option<VfioGroup>,
    /// The NUMA node, or `None` when the kernel reports -1 or nothing.
    pub numa_node: Option<u32>,
    /// Whether the group's character device exists under the `/dev` root.
    pub vfio_group_dev_exists: bool,
    /// PCI vendor and device IDs as sysfs prints them (`0x8086`).
    pub vendor: Option<String>,
    pub device: Option<String>,
    /// PCI class code as sysfs prints it (`0x020000` is an Ethernet controller).
    pub class: Option<String>,
    /// Drivers of the device's children on other buses (`virtio0/driver`: virtio_net,
    /// virtio_blk).
    pub child_drivers: Vec<String>,
    /// Network interfaces the device has now (gone once a DPDK driver holds it).
    pub interfaces: Vec<String>,
}

impl PciDeviceInfo {
    /// The host path of the group's character device, when the device has a group.
    pub fn vfio_group_host_path(&self, dev_root: &Path) -> Option<PathBuf> {
        self.vfio_group.map(|g| g.host_path(dev_root))
    }
}

/// A network interface as `/sys/class/net` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetInterface {
    pub name: String,
    /// Lower-case MAC address.
    pub mac: String,
    /// The PCI device behind the interface (none for virtual interfaces).
    pub pci_address: Option<PciAddress>,
}

/// Reads a device's state: the stable helper for the device plugin.
///
/// `sysfs_root` is normally `/sys` and `dev_root` normally `/dev`. Fails with
/// [`Error::PciDeviceNotFound`] when sysfs has no such device.
pub fn pci_device_info(
    sysfs_root: &Path,
    dev_root: &Path,
    bdf: &str,
) -> Result<PciDeviceInfo, Error> {
    let address = PciAddress::parse(bdf)?;
    Sysfs::new(sysfs_root).pci_device_info(dev_root, &address)
}

/// A read-only view of a sysfs tree rooted anywhere.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<rel>`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// `<root>/bus/pci/devices/<bdf>`.
    pub fn pci_device_dir(&self, address: &PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(address.as_str())
    }

    /// `<root>/bus/pci/drivers/<driver>`.
    pub fn pci_driver_dir(&self, driver: &str) -> PathBuf {
        self.root.join("bus/pci/drivers").join(driver)
    }

    /// Whether sysfs has the device.
    pub fn pci_device_exists(&self, address: &PciAddress) -> bool {
        self.pci_device_dir(address).exists()
    }

    /// Whether the PCI driver is registered (its module is loaded or built in).
    pub fn pci_driver_registered(&self, driver: &str) -> bool {
        self.pci_driver_dir(driver).is_dir()
    }

    /// Everything the agent and the device plugin need to know about one device.
    pub fn pci_device_info(
        &self,
        dev_root: &Path,
        address: &PciAddress,
    ) -> Result<PciDeviceInfo, Error> {
        let dir = self.pci_device_dir(address);
        if !dir.exists() {
            return Err(Error::PciDeviceNotFound {
                address: address.to_string(),
                path: dir.display().to_string(),
            });
        }
        let vfio_group = self.vfio_group(address)?;
        let vfio_group_dev_exists = vfio_group.is_some_and(|g| g.host_path(dev_root).exists());
        Ok(PciDeviceInfo {
            address: address.clone(),
            driver: self.bound_driver(address)?,
            driver_override: self.driver_override(address)?,
            vfio_group,
            numa_node: self.numa_node(address)?,
            vfio_group_dev_exists,
            vendor: read_trimmed(&dir.join("vendor"))?,
            device: read_trimmed(&dir.join("device"))?,
            class: read_trimmed(&dir.join("class"))?,
            child_drivers: self.child_drivers(address)?,
            interfaces: self.interfaces_of(address)?,
        })
    }

    /// The bound driver: the name the device's `driver` link points at.
    pub fn bound_driver(&self, address: &PciAddress) -> Result<Option<String>, Error> {
        link_target_name(&self.pci_device_dir(address).join("driver"))
    }

    /// `driver_override`, with the kernel's "(null)" read as unset.
    pub fn driver_override(&self, address: &PciAddress) -> Result<Option<String>, Error> {
        Ok(
            read_trimmed(&self.pci_device_dir(address).join("driver_override"))?
                .filter(|v| !v.is_empty() && v != "(null)"),
        )
    }

    /// The device's group: `iommu_group` link → `kernel/iommu_groups/<N>`, noiommu when that
    /// group is named `vfio-noiommu`.
    pub fn vfio_group(&self, address: &PciAddress) -> Result<Option<VfioGroup>, Error> {
        let Some(name) = link_target_name(&self.pci_device_dir(address).join("iommu_group"))?
        else {
            return Ok(None);
        };
        let id: u32 = name.parse().map_err(|_| Error::Sysfs {
            path: self
                .pci_device_dir(address)
                .join("iommu_group")
                .display()
                .to_string(),
            message: format!("iommu_group points at {name:?}, not a group number"),
        })?;
        let group_name = read_trimmed(
            &self
                .root
                .join("kernel/iommu_groups")
                .join(&name)
                .join("name"),
        )?;
        Ok(Some(if group_name.as_deref() == Some(NOIOMMU_GROUP_NAME) {
            VfioGroup::NoIommu(id)
        } else {
            VfioGroup::Iommu(id)
        }))
    }

    /// The NUMA node; `None` for -1 (no affinity) or a missing file.
    pub fn numa_node(&self, address: &PciAddress) -> Result<Option<u32>, Error> {
        Ok(
            read_trimmed(&self.pci_device_dir(address).join("numa_node"))?
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok()),
        )
    }

    /// The drivers bound to the device's virtio children (`<device>/virtio<N>/driver`).
    pub fn child_drivers(&self, address: &PciAddress) -> Result<Vec<String>, Error> {
        let dir = self.pci_device_dir(address);
        let mut out = Vec::new();
        for name in list_dir_names(&dir)? {
            if name.starts_with("virtio")
                && let Some(driver) = link_target_name(&dir.join(&name).join("driver"))?
            {
                out.push(driver);
            }
        }
        Ok(out)
    }

    /// The network interfaces the device has now. virtio NICs put them one level down
    /// (`<device>/virtio0/net/eth1`), so this goes through `/sys/class/net`.
    pub fn interfaces_of(&self, address: &PciAddress) -> Result<Vec<String>, Error> {
        Ok(self
            .net_interfaces()?
            .into_iter()
            .filter(|i| i.pci_address.as_ref() == Some(address))
            .map(|i| i.name)
            .collect())
    }

    /// Every interface in `/sys/class/net`, with its MAC and PCI device.
    pub fn net_interfaces(&self) -> Result<Vec<NetInterface>, Error> {
        let class = self.root.join("class/net");
        let mut out = Vec::new();
        for name in list_dir_names(&class)? {
            let dir = class.join(&name);
            let Some(mac) = read_trimmed(&dir.join("address"))? else {
                continue;
            };
            let pci_address = pci_ancestor(&dir.join("device"));
            out.push(NetInterface {
                name,
                mac: mac.to_ascii_lowercase(),
                pci_address,
            });
        }
        Ok(out)
    }

    /// Whether `/sys/module/<name>` exists (loaded or built in with parameters).
    pub fn module_present(&self, name: &str) -> bool {
        self.root
            .join("module")
            .join(module_sysfs_name(name))
            .is_dir()
    }

    /// A module parameter's value, `None` when the module or the parameter is absent.
    pub fn module_parameter(&self, module: &str, param: &str) -> Result<Option<String>, Error> {
        read_trimmed(&self.module_parameter_path(module, param))
    }

    /// `<root>/module/<module>/parameters/<param>`.
    pub fn module_parameter_path(&self, module: &str, param: &str) -> PathBuf {
        self.root
            .join("module")
            .join(module_sysfs_name(module))
            .join("parameters")
            .join(param)
    }
}

/// Module names use `_` in sysfs (`vfio_pci`), whatever the file is called (`vfio-pci.ko`).
pub fn module_sysfs_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads a sysfs attribute, trimmed; `None` when it does not exist.
pub fn read_trimmed(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The last component of a symlink's target; `None` when there is no link.
fn link_target_name(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The PCI device a sysfs device path belongs to: the nearest path component that is a
/// PCI address once links are resolved (`.../0000:00:04.0/virtio0` → `0000:00:04.0`).
fn pci_ancestor(device_link: &Path) -> Option<PciAddress> {
    let resolved = std::fs::canonicalize(device_link).ok()?;
    resolved.components().rev().find_map(|c| {
        let name = c.as_os_str().to_str()?;
        // Only full `dddd:bb:dd.f` names: `pci0000:00` and `virtio0` are not devices.
        (name.len() == 12)
            .then(|| PciAddress::parse(name).ok())
            .flatten()
    })
}

/// Sorted entry names of a directory; empty when it does not exist.
fn list_dir_names(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn pci_address_canonical_form() {
        assert_eq!(
            PciAddress::parse("0000:00:05.0").map(String::from).ok(),
            Some("0000:00:05.0".into())
        );
        assert_eq!(
            PciAddress::parse("00:1F.7").map(String::from).ok(),
            Some("0000:00:1f.7".into())
        );
        assert_eq!(
            PciAddress::parse(" 0001:0a:00.1\n").map(String::from).ok(),
            Some("0001:0a:00.1".into())
        );
        for bad in [
            "",
            "0000:00:05",
            "00:20.0",
            "00:05.8",
            "x0:05.0",
            "0000:00:05.0:1",
            "00000:00:05.0",
        ] {
            assert!(PciAddress::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    fn device(root: &Path, bdf: &str) -> PathBuf {
        let real = root.join("devices/pci0000:00").join(bdf);
        std::fs::create_dir_all(&real).expect("mkdir");
        std::fs::create_dir_all(root.join("bus/pci/devices")).expect("mkdir");
        symlink(
            format!("../../../devices/pci0000:00/{bdf}"),
            root.join("bus/pci/devices").join(bdf),
        )
        .expect("symlink");
        std::fs::write(real.join("vendor"), "0x8086\n").expect("write");
        std::fs::write(real.join("device"), "0x10d3\n").expect("write");
        real
    }

    #[test]
    fn device_info_reads_driver_group_numa_and_dev_node() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        let real = device(&sys, "0000:00:03.0");
        std::fs::create_dir_all(sys.join("bus/pci/drivers/vfio-pci")).expect("mkdir");
        symlink("../../../bus/pci/drivers/vfio-pci", real.join("driver")).expect("symlink");
        std::fs::create_dir_all(sys.join("kernel/iommu_groups/7")).expect("mkdir");
        symlink("../../../kernel/iommu_groups/7", real.join("iommu_group")).expect("symlink");
        std::fs::write(real.join("numa_node"), "1\n").expect("write");
        std::fs::write(real.join("driver_override"), "(null)\n").expect("write");

        let info = pci_device_info(&sys, &dev, "00:03.0").expect("info");
        assert_eq!(info.driver.as_deref(), Some("vfio-pci"));
        assert_eq!(info.vfio_group, Some(VfioGroup::Iommu(7)));
        assert_eq!(info.numa_node, Some(1));
        assert_eq!(info.driver_override, None);
        assert!(!info.vfio_group_dev_exists, "no /dev/vfio/7 yet");
        std::fs::create_dir_all(dev.join("vfio")).expect("mkdir");
        std::fs::write(dev.join("vfio/7"), "").expect("write");
        let info = pci_device_info(&sys, &dev, "0000:00:03.0").expect("info");
        assert!(info.vfio_group_dev_exists);
        assert_eq!(info.vfio_group_host_path(&dev), Some(dev.join("vfio/7")));
    }

    #[test]
    fn noiommu_group_is_recognised_by_its_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path().join("sys");
        let real = device(&sys, "0000:00:04.0");
        std::fs::create_dir_all(sys.join("kernel/iommu_groups/0")).expect("mkdir");
        std::fs::write(sys.join("kernel/iommu_groups/0/name"), "vfio-noiommu\n").expect("write");
        symlink("../../../kernel/iommu_groups/0", real.join("iommu_group")).expect("symlink");
        std::fs::write(real.join("numa_node"), "-1\n").expect("write");
        let info = pci_device_info(&sys, tmp.path(), "0000:00:04.0").expect("info");
        assert_eq!(info.vfio_group, Some(VfioGroup::NoIommu(0)));
        assert_eq!(
            info.vfio_group.map(VfioGroup::dev_name).as_deref(),
            Some("noiommu-0")
        );
        assert_eq!(
            info.vfio_group.map(VfioGroup::container_path).as_deref(),
            Some("/dev/vfio/0")
        );
        assert_eq!(info.numa_node, None, "-1 means no NUMA affinity");
        assert_eq!(info.driver, None);
    }

    #[test]
    fn interfaces_are_found_below_virtio_children() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path();
        let real = device(sys, "0000:00:04.0");
        let netdir = real.join("virtio0/net/eth1");
        std::fs::create_dir_all(&netdir).expect("mkdir");
        std::fs::write(netdir.join("address"), "52:54:00:12:34:02\n").expect("write");
        symlink("../../../virtio0", netdir.join("device")).expect("symlink");
        std::fs::create_dir_all(sys.join("class/net")).expect("mkdir");
        symlink(
            "../../devices/pci0000:00/0000:00:04.0/virtio0/net/eth1",
            sys.join("class/net/eth1"),
        )
        .expect("symlink");
        let ifs = Sysfs::new(sys).net_interfaces().expect("list");
        assert_eq!(ifs.len(), 1);
        assert_eq!(
            ifs[0].pci_address.as_ref().map(PciAddress::as_str),
            Some("0000:00:04.0")
        );
        let addr = PciAddress::parse("0000:00:04.0").expect("addr");
        assert_eq!(
            Sysfs::new(sys).interfaces_of(&addr).expect("ifs"),
            vec!["eth1".to_string()]
        );
    }

    #[test]
    fn missing_device_names_its_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = pci_device_info(tmp.path(), tmp.path(), "0000:00:09.0").expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("0000:00:09.0") && msg.contains("bus/pci/devices"),
            "{msg}"
        );
    }
}
