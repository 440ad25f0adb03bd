//! A simulated node for the demo and tests: a sysfs/dev/proc/host tree in a directory plus
//! a model of the kernel's driver core implementing [`Kernel`].
//!
//! Reads go straight to the tree on disk, through the same [`crate::sysfs::Sysfs`] the
//! agent uses on a real host; writes go to [`KernelModel`], which applies what writes to
//! `driver_override`, `unbind`, `bind` and `drivers_probe` do on Linux: it creates and
//! removes netdevs and `/dev/vfio/<group>` nodes, and "loads" modules into `/sys/module`.
//!
//! For tests it can also crash the agent (a panic at the N-th sysfs write, as a SIGKILL
//! would stop it), refuse module loads with an errno, and reject vfio-pci probes of
//! devices without an IOMMU group, so they exercise the paths a real kernel takes.
//!
//! [`kubelet`] is the matching stand-in for the kubelet's device manager, and [`cli`] the
//! `dpdk-node-agent simulate` subcommand that runs agents and device plugins on such
//! nodes for the demo.

pub mod cli;
pub mod kubelet;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::Error;
use crate::kernel::Kernel;
use crate::modules::{self, LoadResult, ModuleConfig, ModuleHost};
use crate::sysfs::Sysfs;

/// A NIC on the simulated node.
#[derive(Clone, Debug)]
pub struct SimNic {
    pub bdf: String,
    pub native_driver: String,
    pub ifname: String,
    pub mac: String,
    /// IOMMU group; `None` models a machine without an IOMMU.
    pub group: Option<u32>,
    pub numa_node: i32,
    /// sysfs `vendor`, `device` and `class`. Only network-class devices get a netdev.
    pub vendor: String,
    pub device: String,
    pub class: String,
}

impl SimNic {
    /// An ENA NIC at `0000:00:<slot>.0`, interface `ens<slot>`, MAC `02:00:00:00:00:<slot>`.
    pub fn ena(slot: u8) -> Self {
        Self {
            bdf: format!("0000:00:{slot:02x}.0"),
            native_driver: "ena".into(),
            ifname: format!("ens{slot}"),
            mac: format!("02:00:00:00:00:{slot:02x}"),
            group: Some(u32::from(slot)),
            numa_node: 0,
            vendor: "0x1d0f".into(),
            device: "0xec20".into(),
            class: "0x020000".into(),
        }
    }

    /// An EBS volume at `0000:00:<slot>.0`: Amazon's NVMe controller (class 0x010802),
    /// bound to `nvme`, no netdev. [`SimNode::register_driver`] `nvme` first.
    pub fn ebs_nvme(slot: u8) -> Self {
        Self {
            native_driver: "nvme".into(),
            ifname: String::new(),
            mac: String::new(),
            device: "0x8061".into(),
            class: "0x010802".into(),
            ..Self::ena(slot)
        }
    }

    fn is_network(&self) -> bool {
        self.class.starts_with("0x02")
    }
}

struct DeviceModel {
    nic: SimNic,
    driver: Option<String>,
    override_: Option<String>,
}

/// The kernel model. Reads go straight to the tree on disk; writes come here.
pub struct KernelModel {
    pub sys: PathBuf,
    pub dev: PathBuf,
    devices: Mutex<BTreeMap<String, DeviceModel>>,
    /// Every write, in order: (path relative to sysfs, value).
    pub writes: Mutex<Vec<(String, String)>>,
    /// Panic at this (1-based) write, once.
    crash_at: AtomicUsize,
    count: AtomicUsize,
    /// Fail every module load with this errno.
    pub fail_module_loads_with: Mutex<Option<i32>>,
    /// Whether vfio has `enable_unsafe_noiommu_mode` (CONFIG_VFIO_NOIOMMU).
    pub noiommu_supported: bool,
    /// Every module load, in order: (sysfs name, parameters).
    pub loaded_modules: Mutex<Vec<(String, String)>>,
}

/// The panic payload of [`KernelModel::crash_at_write`].
pub const CRASH: &str = "simulated crash (SIGKILL) in the middle of a bind";

/// The model's locks guard plain data: a panic while one was held (a simulated crash)
/// leaves nothing half-written, so a poisoned lock is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn enodev() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENODEV)
}

/// An I/O error that names the path.
fn at(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn mkdir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path).map_err(at(path))
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    std::fs::write(path, contents).map_err(at(path))
}

fn link(target: &str, path: &Path) -> std::io::Result<()> {
    symlink(target, path).map_err(at(path))
}

impl KernelModel {
    /// Panics (like a kill -9) at the `n`-th write from now.
    pub fn crash_at_write(&self, n: usize) {
        self.crash_at
            .store(self.count.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }

    pub fn write_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn take_writes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *lock(&self.writes))
    }

    fn dev_dir(&self, bdf: &str) -> PathBuf {
        self.sys.join("devices/pci0000:00").join(bdf)
    }

    fn driver_registered(&self, driver: &str) -> bool {
        self.sys.join("bus/pci/drivers").join(driver).is_dir()
    }

    fn attach(&self, d: &mut DeviceModel, driver: &str) -> std::io::Result<()> {
        let dir = self.dev_dir(&d.nic.bdf);
        if driver == "vfio-pci" && d.nic.group.is_none() {
            // vfio-pci's probe fails with -EINVAL without an IOMMU group (and no noiommu).
            return Ok(());
        }
        link(
            &format!("../../../bus/pci/drivers/{driver}"),
            &dir.join("driver"),
        )?;
        link(
            &format!("../../../../devices/pci0000:00/{}", d.nic.bdf),
            &self
                .sys
                .join("bus/pci/drivers")
                .join(driver)
                .join(&d.nic.bdf),
        )?;
        d.driver = Some(driver.to_string());
        if driver == d.nic.native_driver && d.nic.is_network() {
            // The netdev comes back with the same name and MAC.
            let net = dir.join("net").join(&d.nic.ifname);
            mkdir(&net)?;
            write(&net.join("address"), format!("{}\n", d.nic.mac))?;
            symlink("../../", net.join("device")).ok();
            link(
                &format!(
                    "../../devices/pci0000:00/{}/net/{}",
                    d.nic.bdf, d.nic.ifname
                ),
                &self.sys.join("class/net").join(&d.nic.ifname),
            )?;
        }
        if driver == "vfio-pci"
            && let Some(g) = d.nic.group
        {
            mkdir(&self.dev.join("vfio"))?;
            write(&self.dev.join("vfio").join(g.to_string()), "")?;
        }
        Ok(())
    }

    fn detach(&self, d: &mut DeviceModel) -> std::io::Result<()> {
        let Some(driver) = d.driver.take() else {
            return Ok(());
        };
        let dir = self.dev_dir(&d.nic.bdf);
        let driver_link = dir.join("driver");
        std::fs::remove_file(&driver_link).map_err(at(&driver_link))?;
        let _ = std::fs::remove_file(
            self.sys
                .join("bus/pci/drivers")
                .join(&driver)
                .join(&d.nic.bdf),
        );
        if driver == d.nic.native_driver && d.nic.is_network() {
            let _ = std::fs::remove_file(self.sys.join("class/net").join(&d.nic.ifname));
            let _ = std::fs::remove_dir_all(dir.join("net"));
        }
        if driver == "vfio-pci"
            && let Some(g) = d.nic.group
        {
            let _ = std::fs::remove_file(self.dev.join("vfio").join(g.to_string()));
        }
        Ok(())
    }

    /// What `drivers_probe` does: the override decides; without one, the native driver.
    fn probe(&self, d: &mut DeviceModel) -> std::io::Result<()> {
        if d.driver.is_some() {
            return Ok(());
        }
        let candidate = match &d.override_ {
            Some(o) => o.clone(),
            None => d.nic.native_driver.clone(),
        };
        if self.driver_registered(&candidate) {
            self.attach(d, &candidate)?;
        }
        Ok(())
    }

    fn apply(&self, rel: &str, value: &str) -> std::io::Result<()> {
        let v = value.trim();
        let parts: Vec<&str> = rel.split('/').collect();
        let mut devices = lock(&self.devices);
        match parts.as_slice() {
            ["bus", "pci", "devices", bdf, "driver_override"] => {
                let d = devices.get_mut(*bdf).ok_or_else(enodev)?;
                d.override_ = (!v.is_empty()).then(|| v.to_string());
                write(
                    &self.dev_dir(bdf).join("driver_override"),
                    format!("{}\n", d.override_.as_deref().unwrap_or("(null)")),
                )
            }
            ["bus", "pci", "drivers", driver, "unbind"] => {
                let d = devices.get_mut(v).ok_or_else(enodev)?;
                if d.driver.as_deref() != Some(*driver) {
                    return Err(enodev());
                }
                self.detach(d)
            }
            ["bus", "pci", "drivers", driver, "bind"] => {
                let d = devices.get_mut(v).ok_or_else(enodev)?;
                if d.driver.is_some() {
                    return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
                }
                let allowed = match &d.override_ {
                    Some(o) => o == driver,
                    None => d.nic.native_driver == *driver,
                };
                if !allowed {
                    return Err(enodev());
                }
                self.attach(d, driver)
            }
            ["bus", "pci", "drivers_probe"] => {
                let d = devices.get_mut(v).ok_or_else(enodev)?;
                self.probe(d)
            }
            ["module", module, "parameters", param] => {
                let path = self
                    .sys
                    .join("module")
                    .join(module)
                    .join("parameters")
                    .join(param);
                if !path.exists() {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
                }
                write(&path, if v == "1" || v == "Y" { "Y\n" } else { "N\n" })
            }
            _ => Err(std::io::Error::from_raw_os_error(libc::EACCES)),
        }
    }

    /// Fakes `modprobe -r`: the module disappears from sysfs (and its PCI driver with it).
    pub fn unload_module(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.sys.join("module").join(name.replace('-', "_")));
        if let Some(d) = pci_driver_of(name) {
            let _ = std::fs::remove_dir_all(self.sys.join("bus/pci/drivers").join(d));
        }
    }
}

/// The PCI driver a module registers.
fn pci_driver_of(module: &str) -> Option<&'static str> {
    match module {
        "vfio_pci" | "vfio-pci" => Some("vfio-pci"),
        "igb_uio" => Some("igb_uio"),
        "uio_pci_generic" => Some("uio_pci_generic"),
        _ => None,
    }
}

impl Kernel for KernelModel {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at.load(Ordering::SeqCst) {
            std::panic::panic_any(CRASH);
        }
        let rel = rel.to_string_lossy().into_owned();
        lock(&self.writes).push((rel.clone(), value.trim().to_string()));
        self.apply(&rel, value)
    }

    fn load_module(&self, file: &Path, params: &str, _compressed: bool) -> std::io::Result<()> {
        if let Some(errno) = *lock(&self.fail_module_loads_with) {
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        if !file.exists() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        }
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .split(".ko")
            .next()
            .unwrap_or("")
            .to_string();
        let name = stem.replace('-', "_");
        let dir = self.sys.join("module").join(&name);
        if dir.exists() {
            return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
        }
        mkdir(&dir.join("parameters"))?;
        write(&dir.join("initstate"), "live\n")?;
        let given: BTreeMap<&str, &str> = params
            .split_whitespace()
            .filter_map(|p| p.split_once('='))
            .collect();
        // Parameters the module really has; unknown ones are ignored, as the kernel does.
        let known: &[&str] = match name.as_str() {
            "vfio" if self.noiommu_supported => &["enable_unsafe_noiommu_mode"],
            "igb_uio" => &["wc_activate", "intr_mode"],
            "vfio_pci" => &["disable_idle_d3", "enable_sriov"],
            _ => &[],
        };
        for p in known {
            let wc = *p == "wc_activate";
            let v = match given.get(p) {
                Some(&v) if v == "1" || v == "Y" => {
                    if wc {
                        "1"
                    } else {
                        "Y"
                    }
                }
                Some(&v) => v,
                None if wc => "0",
                None => "N",
            };
            write(&dir.join("parameters").join(p), format!("{v}\n"))?;
        }
        if name == "vfio" {
            // vfio registers its container device, /dev/vfio/vfio.
            mkdir(&self.dev.join("vfio"))?;
            write(&self.dev.join("vfio/vfio"), "")?;
        }
        if let Some(d) = pci_driver_of(&name) {
            let ddir = self.sys.join("bus/pci/drivers").join(d);
            mkdir(&ddir)?;
            for f in ["bind", "unbind", "new_id", "remove_id"] {
                write(&ddir.join(f), "")?;
            }
        }
        lock(&self.loaded_modules).push((name, params.to_string()));
        Ok(())
    }
}

/// A simulated node on disk: `sys/`, `dev/`, `proc/`, `host/` (module files, kernel
/// config) and `state/` (the agent's journal) under one root.
pub struct SimNode {
    pub root: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc_: PathBuf,
    pub host: PathBuf,
    pub state: PathBuf,
    pub kernel: KernelModel,
    pub release: String,
}

/// Modules the simulated host has on disk (igb_uio is out of tree: absent unless added).
pub const MODULES_DEP: &str = "kernel/drivers/vfio/vfio.ko:
kernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/vfio_virqfd.ko:
kernel/virt/lib/irqbypass.ko:
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko kernel/drivers/vfio/vfio_virqfd.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/uio/uio.ko:
kernel/drivers/uio/uio_pci_generic.ko: kernel/drivers/uio/uio.ko
kernel/drivers/net/ethernet/amazon/ena/ena.ko:
";

impl SimNode {
    /// A node under `root` (created if missing) whose NICs are bound to their native
    /// drivers, with `ena` loaded, the module files of [`MODULES_DEP`] on disk, and a
    /// kernel config. `noiommu_supported` models CONFIG_VFIO_NOIOMMU.
    pub fn create(
        root: impl Into<PathBuf>,
        nics: &[SimNic],
        noiommu_supported: bool,
    ) -> std::io::Result<Self> {
        let root = root.into();
        let (sys, dev, proc_, host, state) = (
            root.join("sys"),
            root.join("dev"),
            root.join("proc"),
            root.join("host"),
            root.join("state"),
        );
        for d in [&sys, &dev, &proc_, &host, &state] {
            mkdir(d)?;
        }
        for d in [
            "bus/pci/devices",
            "bus/pci/drivers",
            "class/net",
            "kernel/iommu_groups",
            "module",
            "devices/pci0000:00",
            "class/iommu",
        ] {
            mkdir(&sys.join(d))?;
        }
        write(&sys.join("bus/pci/drivers_probe"), "")?;
        let release = "6.1.0-fake-amd64".to_string();
        mkdir(&proc_.join("sys/kernel"))?;
        write(&proc_.join("sys/kernel/osrelease"), format!("{release}\n"))?;
        mkdir(&proc_.join("net"))?;
        write(
            &proc_.join("net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        )?;
        let mods = host.join("lib/modules").join(&release);
        mkdir(&mods)?;
        write(&mods.join("modules.dep"), MODULES_DEP)?;
        write(&mods.join("modules.builtin"), "")?;
        for line in MODULES_DEP.lines() {
            let file = line.split(':').next().unwrap_or_default();
            let p = mods.join(file);
            if let Some(parent) = p.parent() {
                mkdir(parent)?;
            }
            write(&p, b"\x7fELF fake module\0pci_iomap\0")?;
        }
        mkdir(&host.join("boot"))?;
        let cfg = if noiommu_supported {
            "CONFIG_VFIO_NOIOMMU=y\n"
        } else {
            "# CONFIG_VFIO_NOIOMMU is not set\n"
        };
        write(
            &host.join(format!("boot/config-{release}")),
            format!("CONFIG_VFIO=m\n{cfg}"),
        )?;

        let kernel = KernelModel {
            sys: sys.clone(),
            dev: dev.clone(),
            devices: Mutex::new(BTreeMap::new()),
            writes: Mutex::new(Vec::new()),
            crash_at: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            fail_module_loads_with: Mutex::new(None),
            noiommu_supported,
            loaded_modules: Mutex::new(Vec::new()),
        };
        // The native NIC driver is loaded.
        let ena_ko = mods.join("kernel/drivers/net/ethernet/amazon/ena/ena.ko");
        kernel
            .load_module(&ena_ko, "", false)
            .map_err(at(&ena_ko))?;
        let ena = sys.join("bus/pci/drivers/ena");
        mkdir(&ena)?;
        for f in ["bind", "unbind", "new_id", "remove_id"] {
            write(&ena.join(f), "")?;
        }
        lock(&kernel.loaded_modules).clear();

        let node = Self {
            root,
            sys,
            dev,
            proc_,
            host,
            state,
            kernel,
            release,
        };
        for nic in nics {
            node.add_nic(nic.clone())?;
        }
        Ok(node)
    }

    /// Adds a NIC, bound to its native driver when that is registered.
    pub fn add_nic(&self, nic: SimNic) -> std::io::Result<()> {
        let dir = self.sys.join("devices/pci0000:00").join(&nic.bdf);
        mkdir(&dir)?;
        link(
            &format!("../../../devices/pci0000:00/{}", nic.bdf),
            &self.sys.join("bus/pci/devices").join(&nic.bdf),
        )?;
        write(&dir.join("vendor"), format!("{}\n", nic.vendor))?;
        write(&dir.join("device"), format!("{}\n", nic.device))?;
        write(&dir.join("class"), format!("{}\n", nic.class))?;
        write(&dir.join("numa_node"), format!("{}\n", nic.numa_node))?;
        write(&dir.join("driver_override"), "(null)\n")?;
        // What a udev-less reader (the Multi-ENI Controller's ENI manager) reads the slot from.
        write(&dir.join("uevent"), format!("PCI_SLOT_NAME={}\n", nic.bdf))?;
        if let Some(g) = nic.group {
            mkdir(
                &self
                    .sys
                    .join("kernel/iommu_groups")
                    .join(g.to_string())
                    .join("devices"),
            )?;
            link(
                &format!("../../../kernel/iommu_groups/{g}"),
                &dir.join("iommu_group"),
            )?;
        }
        let mut d = DeviceModel {
            nic: nic.clone(),
            driver: None,
            override_: None,
        };
        self.kernel.probe(&mut d)?;
        lock(&self.kernel.devices).insert(nic.bdf.clone(), d);
        Ok(())
    }

    /// Registers a PCI driver that has no module here (`nvme`, built in), so devices whose
    /// native driver it is are bound to it when added.
    pub fn register_driver(&self, driver: &str) -> std::io::Result<()> {
        let dir = self.sys.join("bus/pci/drivers").join(driver);
        mkdir(&dir)?;
        for f in ["bind", "unbind", "new_id", "remove_id"] {
            write(&dir.join(f), "")?;
        }
        Ok(())
    }

    /// Adds a route line to `proc/net/route` (`dest`/`mask`/`gateway` as dotted quads).
    pub fn add_route(
        &self,
        iface: &str,
        dest: &str,
        mask: &str,
        gateway: &str,
    ) -> std::io::Result<()> {
        let hex = |ip: &str| -> std::io::Result<String> {
            let a: std::net::Ipv4Addr = ip.parse().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{ip:?}: {e}"))
            })?;
            Ok(format!("{:08X}", u32::from_ne_bytes(a.octets())))
        };
        let path = self.proc_.join("net/route");
        let mut text = std::fs::read_to_string(&path).map_err(at(&path))?;
        let flags = if gateway == "0.0.0.0" { "0001" } else { "0003" };
        text.push_str(&format!(
            "{iface}\t{}\t{}\t{flags}\t0\t0\t0\t{}\t0\t0\t0\n",
            hex(dest)?,
            hex(gateway)?,
            hex(mask)?
        ));
        write(&path, text)
    }

    /// The driver the device is bound to, read from the tree (not the model).
    pub fn driver_of(&self, bdf: &str) -> Option<String> {
        std::fs::read_link(self.sys.join("bus/pci/devices").join(bdf).join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The device's `driver_override`, as sysfs shows it (`(null)` when unset).
    pub fn override_of(&self, bdf: &str) -> std::io::Result<String> {
        let path = self
            .sys
            .join("bus/pci/devices")
            .join(bdf)
            .join("driver_override");
        Ok(std::fs::read_to_string(&path)
            .map_err(at(&path))?
            .trim()
            .to_string())
    }

    pub fn netdev_exists(&self, ifname: &str) -> bool {
        self.sys.join("class/net").join(ifname).exists()
    }

    pub fn vfio_dev_exists(&self, group: u32) -> bool {
        self.dev.join("vfio").join(group.to_string()).exists()
    }

    /// As after the agent process restarted: the kernel state survives, only a pending
    /// simulated crash is forgotten.
    pub fn restart_agent(&mut self) {
        self.kernel.crash_at.store(0, Ordering::SeqCst);
    }

    /// Loads the modules `cfg` needs on this node, as the agent's `load` does on a host.
    pub fn load_modules(&self, cfg: &ModuleConfig) -> Result<LoadResult, Error> {
        let sysfs = Sysfs::new(&self.sys);
        let host = ModuleHost {
            sysfs: &sysfs,
            kernel: self,
            host_root: &self.host,
            release: &self.release,
        };
        modules::ensure_loaded(&host, cfg)
    }
}

/// The node itself is the kernel, so an `Arc<SimNode>` can be handed to the agent as its
/// `Arc<dyn Kernel>` while the caller keeps reading the tree.
impl Kernel for SimNode {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        self.kernel.write_attr(rel, value)
    }

    fn load_module(&self, file: &Path, params: &str, compressed: bool) -> std::io::Result<()> {
        self.kernel.load_module(file, params, compressed)
    }
}
