//! Test support: a fake node (sysfs, /dev, /proc, host root and state dir in a temporary
//! directory) and a small model of the kernel's driver core that applies what writes to
//! `driver_override`, `unbind`, `bind` and `drivers_probe` do, creates and removes netdevs
//! and `/dev/vfio/<group>` nodes, and "loads" modules into `/sys/module`.
//!
//! It can crash the agent (a panic at the N-th sysfs write, as a SIGKILL would stop it),
//! refuse module loads with EPERM, and reject vfio-pci probes of devices without an IOMMU
//! group, so the tests exercise the same paths a real kernel takes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use dpdk_node_agent::kernel::Kernel;

pub mod imds;
pub mod podresources;

/// A NIC on the fake node.
#[derive(Clone, Debug)]
pub struct FakeNic {
    pub bdf: String,
    pub native_driver: String,
    pub ifname: String,
    pub mac: String,
    /// IOMMU group; `None` models a machine without an IOMMU.
    pub group: Option<u32>,
    pub numa_node: i32,
}

impl FakeNic {
    /// An ENA NIC at `0000:00:<slot>.0`, interface `ens<slot>`, MAC `02:00:00:00:00:<slot>`.
    pub fn ena(slot: u8) -> Self {
        Self {
            bdf: format!("0000:00:{slot:02x}.0"),
            native_driver: "ena".into(),
            ifname: format!("ens{slot}"),
            mac: format!("02:00:00:00:00:{slot:02x}"),
            group: Some(u32::from(slot)),
            numa_node: 0,
        }
    }
}

struct DeviceModel {
    nic: FakeNic,
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
    pub fail_module_loads_with: Mutex<Option<i32>>,
    /// Whether vfio has `enable_unsafe_noiommu_mode` (CONFIG_VFIO_NOIOMMU).
    pub noiommu_supported: bool,
    pub loaded_modules: Mutex<Vec<(String, String)>>,
}

pub const CRASH: &str = "simulated crash (SIGKILL) in the middle of a bind";

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
        std::mem::take(&mut *self.writes.lock().expect("lock"))
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
        symlink(
            format!("../../../bus/pci/drivers/{driver}"),
            dir.join("driver"),
        )?;
        symlink(
            format!("../../../../devices/pci0000:00/{}", d.nic.bdf),
            self.sys
                .join("bus/pci/drivers")
                .join(driver)
                .join(&d.nic.bdf),
        )?;
        d.driver = Some(driver.to_string());
        if driver == d.nic.native_driver {
            // The netdev comes back with the same name and MAC.
            let net = dir.join("net").join(&d.nic.ifname);
            std::fs::create_dir_all(&net)?;
            std::fs::write(net.join("address"), format!("{}\n", d.nic.mac))?;
            symlink("../../", net.join("device")).ok();
            symlink(
                format!(
                    "../../devices/pci0000:00/{}/net/{}",
                    d.nic.bdf, d.nic.ifname
                ),
                self.sys.join("class/net").join(&d.nic.ifname),
            )?;
        }
        if driver == "vfio-pci"
            && let Some(g) = d.nic.group
        {
            std::fs::create_dir_all(self.dev.join("vfio"))?;
            std::fs::write(self.dev.join("vfio").join(g.to_string()), "")?;
        }
        Ok(())
    }

    fn detach(&self, d: &mut DeviceModel) -> std::io::Result<()> {
        let Some(driver) = d.driver.take() else {
            return Ok(());
        };
        let dir = self.dev_dir(&d.nic.bdf);
        std::fs::remove_file(dir.join("driver"))?;
        let _ = std::fs::remove_file(
            self.sys
                .join("bus/pci/drivers")
                .join(&driver)
                .join(&d.nic.bdf),
        );
        if driver == d.nic.native_driver {
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
        let mut devices = self.devices.lock().expect("lock");
        match parts.as_slice() {
            ["bus", "pci", "devices", bdf, "driver_override"] => {
                let d = devices.get_mut(*bdf).ok_or_else(|| enodev())?;
                d.override_ = (!v.is_empty()).then(|| v.to_string());
                std::fs::write(
                    self.dev_dir(bdf).join("driver_override"),
                    format!("{}\n", d.override_.as_deref().unwrap_or("(null)")),
                )
            }
            ["bus", "pci", "drivers", driver, "unbind"] => {
                let d = devices.get_mut(v).ok_or_else(|| enodev())?;
                if d.driver.as_deref() != Some(*driver) {
                    return Err(enodev());
                }
                self.detach(d)
            }
            ["bus", "pci", "drivers", driver, "bind"] => {
                let d = devices.get_mut(v).ok_or_else(|| enodev())?;
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
                let d = devices.get_mut(v).ok_or_else(|| enodev())?;
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
                std::fs::write(path, if v == "1" || v == "Y" { "Y\n" } else { "N\n" })
            }
            _ => Err(std::io::Error::from_raw_os_error(libc::EACCES)),
        }
    }

    /// Fakes `modprobe -r`: the module disappears from sysfs (and its PCI driver with it).
    pub fn unload_module(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.sys.join("module").join(name.replace('-', "_")));
        let driver = match name {
            "vfio_pci" | "vfio-pci" => Some("vfio-pci"),
            "igb_uio" => Some("igb_uio"),
            "uio_pci_generic" => Some("uio_pci_generic"),
            _ => None,
        };
        if let Some(d) = driver {
            let _ = std::fs::remove_dir_all(self.sys.join("bus/pci/drivers").join(d));
        }
    }
}

fn enodev() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENODEV)
}

impl Kernel for KernelModel {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at.load(Ordering::SeqCst) {
            std::panic::panic_any(CRASH);
        }
        let rel = rel.to_string_lossy().into_owned();
        self.writes
            .lock()
            .expect("lock")
            .push((rel.clone(), value.trim().to_string()));
        self.apply(&rel, value)
    }

    fn load_module(&self, file: &Path, params: &str, _compressed: bool) -> std::io::Result<()> {
        if let Some(errno) = *self.fail_module_loads_with.lock().expect("lock") {
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
        std::fs::create_dir_all(dir.join("parameters"))?;
        std::fs::write(dir.join("initstate"), "live\n")?;
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
            let v = match given.get(p) {
                Some(v) if *v == "1" || *v == "Y" => {
                    if *p == "wc_activate" {
                        "1"
                    } else {
                        "Y"
                    }
                }
                Some(v) => v,
                None => {
                    if *p == "wc_activate" {
                        "0"
                    } else {
                        "N"
                    }
                }
            };
            std::fs::write(dir.join("parameters").join(p), format!("{v}\n"))?;
        }
        let pci_driver = match name.as_str() {
            "vfio_pci" => Some("vfio-pci"),
            "igb_uio" => Some("igb_uio"),
            "uio_pci_generic" => Some("uio_pci_generic"),
            _ => None,
        };
        if let Some(d) = pci_driver {
            let ddir = self.sys.join("bus/pci/drivers").join(d);
            std::fs::create_dir_all(&ddir)?;
            for f in ["bind", "unbind", "new_id", "remove_id"] {
                std::fs::write(ddir.join(f), "")?;
            }
        }
        self.loaded_modules
            .lock()
            .expect("lock")
            .push((name, params.to_string()));
        Ok(())
    }
}

/// A fake node on disk.
pub struct FakeNode {
    pub tmp: tempfile::TempDir,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc_: PathBuf,
    pub host: PathBuf,
    pub state: PathBuf,
    pub kernel: KernelModel,
    pub release: String,
}

/// Modules the fake host has on disk (igb_uio is out of tree: absent unless added).
const MODULES_DEP: &str = "kernel/drivers/vfio/vfio.ko:
kernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/vfio_virqfd.ko:
kernel/virt/lib/irqbypass.ko:
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko kernel/drivers/vfio/vfio_virqfd.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/uio/uio.ko:
kernel/drivers/uio/uio_pci_generic.ko: kernel/drivers/uio/uio.ko
kernel/drivers/net/ethernet/amazon/ena/ena.ko:
";

impl FakeNode {
    /// A node whose NICs are bound to their native drivers, with `ena` loaded, the
    /// module files of [`MODULES_DEP`] on disk, and a kernel config.
    pub fn new(nics: &[FakeNic]) -> Self {
        Self::with_kernel(nics, true)
    }

    pub fn with_kernel(nics: &[FakeNic], noiommu_supported: bool) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let (sys, dev, proc_, host, state) = (
            root.join("sys"),
            root.join("dev"),
            root.join("proc"),
            root.join("host"),
            root.join("state"),
        );
        for d in [&sys, &dev, &proc_, &host, &state] {
            std::fs::create_dir_all(d).expect("mkdir");
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
            std::fs::create_dir_all(sys.join(d)).expect("mkdir");
        }
        std::fs::write(sys.join("bus/pci/drivers_probe"), "").expect("write");
        let release = "6.1.0-fake-amd64".to_string();
        std::fs::create_dir_all(proc_.join("sys/kernel")).expect("mkdir");
        std::fs::write(proc_.join("sys/kernel/osrelease"), format!("{release}\n")).expect("write");
        std::fs::create_dir_all(proc_.join("net")).expect("mkdir");
        std::fs::write(
            proc_.join("net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        )
        .expect("write");
        let mods = host.join("lib/modules").join(&release);
        std::fs::create_dir_all(&mods).expect("mkdir");
        std::fs::write(mods.join("modules.dep"), MODULES_DEP).expect("write");
        std::fs::write(mods.join("modules.builtin"), "").expect("write");
        for line in MODULES_DEP.lines() {
            let file = line.split(':').next().expect("file");
            let p = mods.join(file);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, b"\x7fELF fake module\0pci_iomap\0").expect("write");
        }
        std::fs::create_dir_all(host.join("boot")).expect("mkdir");
        let cfg = if noiommu_supported {
            "CONFIG_VFIO_NOIOMMU=y\n"
        } else {
            "# CONFIG_VFIO_NOIOMMU is not set\n"
        };
        std::fs::write(
            host.join(format!("boot/config-{release}")),
            format!("CONFIG_VFIO=m\n{cfg}"),
        )
        .expect("write");

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
        kernel
            .load_module(
                &mods.join("kernel/drivers/net/ethernet/amazon/ena/ena.ko"),
                "",
                false,
            )
            .expect("ena");
        let ena = sys.join("bus/pci/drivers/ena");
        std::fs::create_dir_all(&ena).expect("mkdir");
        for f in ["bind", "unbind", "new_id", "remove_id"] {
            std::fs::write(ena.join(f), "").expect("write");
        }
        kernel.loaded_modules.lock().expect("lock").clear();

        let node = Self {
            tmp,
            sys,
            dev,
            proc_,
            host,
            state,
            kernel,
            release,
        };
        for nic in nics {
            node.add_nic(nic.clone());
        }
        node
    }

    /// Adds a NIC, bound to its native driver when that is registered.
    pub fn add_nic(&self, nic: FakeNic) {
        let dir = self.sys.join("devices/pci0000:00").join(&nic.bdf);
        std::fs::create_dir_all(&dir).expect("mkdir");
        symlink(
            format!("../../../devices/pci0000:00/{}", nic.bdf),
            self.sys.join("bus/pci/devices").join(&nic.bdf),
        )
        .expect("symlink");
        std::fs::write(dir.join("vendor"), "0x1d0f\n").expect("write");
        std::fs::write(dir.join("device"), "0xec20\n").expect("write");
        std::fs::write(dir.join("numa_node"), format!("{}\n", nic.numa_node)).expect("write");
        std::fs::write(dir.join("driver_override"), "(null)\n").expect("write");
        if let Some(g) = nic.group {
            std::fs::create_dir_all(
                self.sys
                    .join("kernel/iommu_groups")
                    .join(g.to_string())
                    .join("devices"),
            )
            .expect("mkdir");
            symlink(
                format!("../../../kernel/iommu_groups/{g}"),
                dir.join("iommu_group"),
            )
            .expect("symlink");
        }
        let mut d = DeviceModel {
            nic: nic.clone(),
            driver: None,
            override_: None,
        };
        self.kernel.probe(&mut d).expect("probe");
        self.kernel
            .devices
            .lock()
            .expect("lock")
            .insert(nic.bdf.clone(), d);
    }

    /// Adds a route line to the fake `/proc/net/route` (`dest`/`mask` as dotted quads).
    pub fn add_route(&self, iface: &str, dest: &str, mask: &str, gateway: &str) {
        let hex = |ip: &str| {
            let a: std::net::Ipv4Addr = ip.parse().expect("ip");
            format!("{:08X}", u32::from_ne_bytes(a.octets()))
        };
        let path = self.proc_.join("net/route");
        let mut text = std::fs::read_to_string(&path).expect("read");
        let flags = if gateway == "0.0.0.0" { "0001" } else { "0003" };
        text.push_str(&format!(
            "{iface}\t{}\t{}\t{flags}\t0\t0\t0\t{}\t0\t0\t0\n",
            hex(dest),
            hex(gateway),
            hex(mask)
        ));
        std::fs::write(path, text).expect("write");
    }

    /// The driver the device is bound to, read from the tree (not the model).
    pub fn driver_of(&self, bdf: &str) -> Option<String> {
        std::fs::read_link(self.sys.join("bus/pci/devices").join(bdf).join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    pub fn override_of(&self, bdf: &str) -> String {
        std::fs::read_to_string(
            self.sys
                .join("bus/pci/devices")
                .join(bdf)
                .join("driver_override"),
        )
        .expect("read")
        .trim()
        .to_string()
    }

    pub fn netdev_exists(&self, ifname: &str) -> bool {
        self.sys.join("class/net").join(ifname).exists()
    }

    pub fn vfio_dev_exists(&self, group: u32) -> bool {
        self.dev.join("vfio").join(group.to_string()).exists()
    }

    /// A fresh kernel model over the same tree, as after the agent process restarted
    /// (the kernel state itself survives; only the agent died).
    pub fn restart_agent(&mut self) {
        self.kernel.crash_at.store(0, Ordering::SeqCst);
    }
}
