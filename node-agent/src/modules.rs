//! Kernel modules: load `vfio` + `vfio-pci` (or `igb_uio` / `uio_pci_generic`), verify the
//! result through `/sys/module`, optionally persist the settings on the host, and report
//! write-combining as it really is.
//!
//! The agent loads modules itself (`finit_module(2)` through [`Kernel`]) in dependency
//! order from the host's `modules.dep`, so the container needs no `modprobe` and the
//! behaviour is the same on every distribution. Resolving the order is pure
//! ([`ModuleIndex`]); so is the write-combining verdict ([`write_combining_status`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dpdk_bridge::api::{DpdkDriver, ModuleStatus, WriteCombiningState, WriteCombiningStatus};
use tracing::info;

use crate::error::{Error, io_error};
use crate::kernel::Kernel;
use crate::sysfs::{Sysfs, module_sysfs_name, read_trimmed};

const NOIOMMU_PARAM: &str = "enable_unsafe_noiommu_mode";
const IGB_UIO_WC_PARAM: &str = "wc_activate";

/// What the node needs loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleConfig {
    pub driver: DpdkDriver,
    /// Ask for vfio's unsafe noiommu mode (only meaningful for vfio-pci).
    pub noiommu: bool,
    pub write_combining: bool,
}

/// One module to load, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRequest {
    pub name: &'static str,
    pub params: String,
    /// Absent on some kernels (built in, or not needed); never an error.
    pub optional: bool,
}

/// The modules a driver needs, in load order.
pub fn requests_for(config: &ModuleConfig) -> Vec<ModuleRequest> {
    let req = |name, params: &str, optional| ModuleRequest {
        name,
        params: params.to_string(),
        optional,
    };
    match config.driver {
        DpdkDriver::VfioPci => vec![
            req(
                "vfio",
                if config.noiommu {
                    "enable_unsafe_noiommu_mode=1"
                } else {
                    ""
                },
                false,
            ),
            // The type1 IOMMU backend DPDK uses with a real IOMMU; vfio only soft-depends on it.
            req("vfio_iommu_type1", "", true),
            req("vfio-pci", "", false),
        ],
        DpdkDriver::IgbUio => {
            vec![
                req("uio", "", false),
                req(
                    "igb_uio",
                    if config.write_combining {
                        "wc_activate=1"
                    } else {
                        ""
                    },
                    false,
                ),
            ]
        }
        DpdkDriver::UioPciGeneric => vec![req("uio", "", false), req("uio_pci_generic", "", false)],
    }
}

/// A module file as `modules.dep` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    /// sysfs name (`vfio_pci`).
    pub name: String,
    pub path: PathBuf,
}

impl ModuleFile {
    pub fn compressed(&self) -> bool {
        let p = self.path.to_string_lossy();
        p.ends_with(".xz") || p.ends_with(".zst") || p.ends_with(".gz")
    }
}

/// `modules.dep` and `modules.builtin` of one kernel release.
#[derive(Clone, Debug)]
pub struct ModuleIndex {
    pub release: String,
    pub dir: PathBuf,
    /// sysfs name → (file relative to `dir`, direct dependencies' sysfs names).
    deps: BTreeMap<String, (PathBuf, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// sysfs name of a module file path (`kernel/drivers/vfio/pci/vfio-pci.ko.xz` → `vfio_pci`).
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    module_sysfs_name(file.split(".ko").next().unwrap_or(file))
}

impl ModuleIndex {
    /// Reads `<host_root>/lib/modules/<release>` (or `/usr/lib/modules`).
    pub fn load(host_root: &Path, release: &str) -> Result<Self, Error> {
        let candidates = [
            host_root.join("lib/modules").join(release),
            host_root.join("usr/lib/modules").join(release),
        ];
        let Some(dir) = candidates.iter().find(|d| d.join("modules.dep").is_file()) else {
            return Err(Error::ModulesDep {
                path: candidates[0].join("modules.dep").display().to_string(),
                message: format!(
                    "not found: the host's modules for kernel {release} must be visible to the agent (mount the host's /lib/modules under --host-root) and indexed by depmod"
                ),
            });
        };
        let dep_path = dir.join("modules.dep");
        let deps = std::fs::read_to_string(&dep_path).map_err(|e| io_error(&dep_path, e))?;
        let builtin = read_trimmed(&dir.join("modules.builtin"))?.unwrap_or_default();
        Ok(Self::parse(dir, release, &deps, &builtin))
    }

    /// Parses the two index files.
    pub fn parse(dir: &Path, release: &str, modules_dep: &str, modules_builtin: &str) -> Self {
        let mut deps = BTreeMap::new();
        for line in modules_dep.lines() {
            let Some((file, rest)) = line.split_once(':') else {
                continue;
            };
            let file = file.trim();
            if file.is_empty() {
                continue;
            }
            let list = rest.split_whitespace().map(name_of).collect();
            deps.insert(name_of(file), (PathBuf::from(file), list));
        }
        let builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(name_of)
            .collect();
        Self {
            release: release.to_string(),
            dir: dir.to_path_buf(),
            deps,
            builtin,
        }
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_sysfs_name(name))
    }

    /// The file of one module, if the index has it.
    pub fn file(&self, name: &str) -> Option<ModuleFile> {
        let name = module_sysfs_name(name);
        self.deps.get(&name).map(|(p, _)| ModuleFile {
            name,
            path: self.dir.join(p),
        })
    }

    /// The files to load for `name`, dependencies first; built-in modules are skipped.
    pub fn load_order(&self, name: &str) -> Result<Vec<ModuleFile>, Error> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.visit(&module_sysfs_name(name), &mut seen, &mut out, name)?;
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<ModuleFile>,
        root: &str,
    ) -> Result<(), Error> {
        if !seen.insert(name.to_string()) || self.builtin.contains(name) {
            return Ok(());
        }
        let Some((path, deps)) = self.deps.get(name) else {
            return Err(self.not_found(if name == module_sysfs_name(root) {
                root
            } else {
                name
            }));
        };
        for dep in deps {
            self.visit(dep, seen, out, root)?;
        }
        out.push(ModuleFile {
            name: name.to_string(),
            path: self.dir.join(path),
        });
        Ok(())
    }

    fn not_found(&self, name: &str) -> Error {
        let hint = match module_sysfs_name(name).as_str() {
            "igb_uio" => "igb_uio is not part of the Linux kernel: build and install it from dpdk-kmods (git://dpdk.org/dpdk-kmods), then run depmod".to_string(),
            _ => format!(
                "the kernel {} does not ship it: install the distribution's extra modules package for this kernel (e.g. linux-modules-extra-{})",
                self.release, self.release
            ),
        };
        Error::ModuleNotFound {
            module: name.to_string(),
            dir: self.dir.display().to_string(),
            hint,
        }
    }
}

/// Everything `load` needs to know about the host.
pub struct ModuleHost<'a> {
    pub sysfs: &'a Sysfs,
    pub kernel: &'a dyn Kernel,
    pub host_root: &'a Path,
    pub release: &'a str,
}

/// What loading found, for `DPDKNodeState.status.modules` and the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadResult {
    pub status: ModuleStatus,
    /// Modules this call loaded (in order).
    pub loaded: Vec<String>,
    /// Things the operator should know that are not errors.
    pub notes: Vec<String>,
}

/// Loads and verifies the modules for `config`. Already-loaded modules are left alone
/// (except that noiommu is switched on through its writable parameter when asked).
pub fn ensure_loaded(host: &ModuleHost<'_>, config: &ModuleConfig) -> Result<LoadResult, Error> {
    let index = ModuleIndex::load(host.host_root, host.release)?;
    let mut loaded = Vec::new();
    let mut notes = Vec::new();
    // Resolve every module first: a missing one fails before anything is loaded.
    let mut plan = Vec::new();
    for req in requests_for(config) {
        let present = host.sysfs.module_present(req.name) || index.is_builtin(req.name);
        if present {
            continue;
        }
        match index.load_order(req.name) {
            Ok(files) => plan.push((req, files)),
            Err(_) if req.optional => continue,
            Err(e) => return Err(e),
        }
    }
    for (req, files) in plan {
        for file in files {
            if host.sysfs.module_present(&file.name) {
                continue;
            }
            let params = if module_sysfs_name(req.name) == file.name {
                req.params.as_str()
            } else {
                ""
            };
            load_one(host.kernel, &file, params)?;
            info!(module = %file.name, path = %file.path.display(), params, "loaded kernel module");
            loaded.push(file.name.clone());
        }
    }
    // Verify through sysfs, which is what the kernel actually did.
    for req in requests_for(config) {
        let name = module_sysfs_name(req.name);
        let ok = host.sysfs.module_present(&name) || index.is_builtin(&name);
        if !ok && !req.optional {
            return Err(Error::ModuleNotVerified {
                module: name.clone(),
                path: host.sysfs.path("module").join(&name).display().to_string(),
            });
        }
    }
    let driver = config.driver.as_str();
    if !host.sysfs.pci_driver_registered(driver) {
        return Err(Error::ModuleNotVerified {
            module: driver.to_string(),
            path: host.sysfs.pci_driver_dir(driver).display().to_string(),
        });
    }

    let noiommu = if config.driver == DpdkDriver::VfioPci && config.noiommu {
        ensure_noiommu(host, &mut notes)?
    } else {
        host.sysfs
            .module_parameter("vfio", NOIOMMU_PARAM)?
            .is_some_and(|v| v == "Y" || v == "1")
    };
    let write_combining = write_combining_status(&wc_facts(host, &index, config)?);
    if write_combining.state == WriteCombiningState::Unavailable {
        // A note, not a log line: the agent re-verifies on every sync and logs a note once.
        notes.push(format!(
            "write-combining requested but unavailable: {}",
            write_combining
                .reason
                .as_deref()
                .unwrap_or("no reason given")
        ));
    }
    let others = ["igb_uio", "uio_pci_generic"]
        .into_iter()
        .filter(|m| host.sysfs.module_present(m))
        .map(String::from)
        .collect();
    Ok(LoadResult {
        status: ModuleStatus {
            vfio: host.sysfs.module_present("vfio") || index.is_builtin("vfio"),
            vfio_pci: host.sysfs.pci_driver_registered("vfio-pci"),
            noiommu,
            others,
            write_combining,
        },
        loaded,
        notes,
    })
}

/// Reads the module state without loading anything (the `run` loop's check).
pub fn observe(sysfs: &Sysfs, config: &ModuleConfig) -> (bool, ModuleStatus) {
    let all = requests_for(config)
        .iter()
        .filter(|r| !r.optional)
        .all(|r| sysfs.module_present(r.name) || sysfs.pci_driver_registered(r.name))
        && sysfs.pci_driver_registered(config.driver.as_str());
    let noiommu = sysfs
        .module_parameter("vfio", NOIOMMU_PARAM)
        .ok()
        .flatten()
        .is_some_and(|v| v == "Y" || v == "1");
    let status = ModuleStatus {
        vfio: sysfs.module_present("vfio"),
        vfio_pci: sysfs.pci_driver_registered("vfio-pci"),
        noiommu,
        others: ["igb_uio", "uio_pci_generic"]
            .into_iter()
            .filter(|m| sysfs.module_present(m))
            .map(String::from)
            .collect(),
        write_combining: WriteCombiningStatus::default(),
    };
    (all, status)
}

fn load_one(kernel: &dyn Kernel, file: &ModuleFile, params: &str) -> Result<(), Error> {
    match kernel.load_module(&file.path, params, file.compressed()) {
        Ok(()) => Ok(()),
        // Loaded concurrently (udev, another agent): fine.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Error::ModulePermissionDenied {
                module: file.name.clone(),
                path: file.path.display().to_string(),
                source: e,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ModuleNotFound {
            module: file.name.clone(),
            dir: file.path.display().to_string(),
            hint: "modules.dep lists it but the file is missing: run depmod on the host".into(),
        }),
        Err(e) => Err(Error::ModuleLoad {
            module: file.name.clone(),
            path: file.path.display().to_string(),
            source: e,
        }),
    }
}

/// Turns noiommu on, or explains why it cannot be and whether that matters.
fn ensure_noiommu(host: &ModuleHost<'_>, notes: &mut Vec<String>) -> Result<bool, Error> {
    let param = host.sysfs.module_parameter_path("vfio", NOIOMMU_PARAM);
    match read_trimmed(&param)? {
        Some(v) if v == "Y" || v == "1" => Ok(true),
        Some(_) => {
            // Loaded earlier without it: the parameter is writable at runtime.
            let rel = PathBuf::from("module/vfio/parameters").join(NOIOMMU_PARAM);
            host.kernel
                .write_attr(&rel, "1")
                .map_err(|source| Error::SysfsWrite {
                    path: param.display().to_string(),
                    value: "1".into(),
                    source,
                })?;
            Ok(read_trimmed(&param)?.is_some_and(|v| v == "Y" || v == "1"))
        }
        None => {
            // vfio is loaded (verified above) yet has no such parameter: the kernel was built
            // without CONFIG_VFIO_NOIOMMU.
            let config = kernel_config_says(host.host_root, host.release, "CONFIG_VFIO_NOIOMMU");
            if iommu_present(host.sysfs) {
                notes.push(format!(
                    "noiommu requested but not needed: the platform IOMMU is on; kernel {} was built without CONFIG_VFIO_NOIOMMU{}",
                    host.release,
                    config.map(|c| format!(" ({c})")).unwrap_or_default()
                ));
                Ok(false)
            } else {
                Err(Error::NoIommuUnsupported {
                    release: host.release.to_string(),
                    evidence: config.unwrap_or_else(|| format!("{} is missing", param.display())),
                })
            }
        }
    }
}

/// Whether the platform has an IOMMU the kernel uses (then vfio needs no noiommu).
pub fn iommu_present(sysfs: &Sysfs) -> bool {
    let non_empty = |rel: &str| {
        std::fs::read_dir(sysfs.path(rel))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    non_empty("class/iommu") || non_empty("kernel/iommu_groups")
}

/// What `<host_root>/boot/config-<release>` says about `option`, e.g.
/// `"/boot/config-6.1.0-56-amd64: # CONFIG_VFIO_NOIOMMU is not set"`.
fn kernel_config_says(host_root: &Path, release: &str, option: &str) -> Option<String> {
    let path = host_root.join("boot").join(format!("config-{release}"));
    let text = std::fs::read_to_string(&path).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{option}=")) || *l == format!("# {option} is not set"))?;
    Some(format!("{}: {line}", path.display()))
}

/// The facts the write-combining verdict rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WcFacts {
    pub requested: bool,
    pub driver: DpdkDriver,
    /// igb_uio's `wc_activate` parameter as sysfs shows it.
    pub igb_uio_wc_activate: Option<String>,
    /// For vfio-pci: the WC mapping symbol the module imports, if any (`Ok(None)`: it imports
    /// none; `Err`: it could not be inspected, and why).
    pub vfio_wc_symbol: Result<Option<String>, String>,
}

/// Never claims write-combining is on when it is not.
pub fn write_combining_status(f: &WcFacts) -> WriteCombiningStatus {
    let st = |state, reason: String| WriteCombiningStatus {
        state,
        reason: Some(reason),
    };
    if !f.requested {
        return st(
            WriteCombiningState::Disabled,
            "writeCombining is false in the DPDKConfig".into(),
        );
    }
    match f.driver {
        DpdkDriver::IgbUio => match f.igb_uio_wc_activate.as_deref() {
            Some("1") | Some("Y") => st(WriteCombiningState::Enabled, "igb_uio is loaded with wc_activate=1".into()),
            Some(v) => st(
                WriteCombiningState::Unavailable,
                format!("igb_uio was loaded with wc_activate={v}; unload it (no device bound) so the agent reloads it with wc_activate=1"),
            ),
            None => st(WriteCombiningState::Unavailable, "igb_uio is not loaded or has no wc_activate parameter".into()),
        },
        DpdkDriver::VfioPci => match &f.vfio_wc_symbol {
            Ok(Some(sym)) => st(WriteCombiningState::Enabled, format!("the loaded vfio-pci is WC-capable (it maps prefetchable BARs with {sym})")),
            Ok(None) => st(
                WriteCombiningState::Unavailable,
                "mainline vfio-pci has no write-combining support (it maps BARs uncached): install the WC-patched vfio-pci from amzn-drivers (get-vfio-with-wc.sh) or use igb_uio with wc_activate=1".into(),
            ),
            Err(why) => st(WriteCombiningState::Unavailable, format!("cannot tell whether vfio-pci is WC-capable ({why}), so it is not claimed")),
        },
        DpdkDriver::UioPciGeneric => st(
            WriteCombiningState::Unavailable,
            "uio_pci_generic cannot map BARs with write-combining (use igb_uio with wc_activate=1 or a WC-patched vfio-pci)".into(),
        ),
    }
}

fn wc_facts(
    host: &ModuleHost<'_>,
    index: &ModuleIndex,
    config: &ModuleConfig,
) -> Result<WcFacts, Error> {
    let vfio_wc_symbol = if config.write_combining && config.driver == DpdkDriver::VfioPci {
        inspect_vfio_wc(index)
    } else {
        Ok(None)
    };
    Ok(WcFacts {
        requested: config.write_combining,
        driver: config.driver,
        igb_uio_wc_activate: host.sysfs.module_parameter("igb_uio", IGB_UIO_WC_PARAM)?,
        vfio_wc_symbol,
    })
}

/// The amzn-drivers WC patch makes vfio-pci map prefetchable BARs with `pci_iomap_wc` /
/// `ioremap_wc`; mainline imports neither. Look for those imports in the module files.
fn inspect_vfio_wc(index: &ModuleIndex) -> Result<Option<String>, String> {
    let files: Vec<ModuleFile> = ["vfio_pci_core", "vfio_pci"]
        .iter()
        .filter_map(|m| index.file(m))
        .collect();
    if files.is_empty() {
        return Err("vfio-pci is built into the kernel; its symbols cannot be inspected".into());
    }
    for f in files {
        if f.compressed() {
            return Err(format!("{} is compressed", f.path.display()));
        }
        let bytes = std::fs::read(&f.path).map_err(|e| format!("{}: {e}", f.path.display()))?;
        for sym in ["pci_iomap_wc", "ioremap_wc"] {
            let needle = [b"\0", sym.as_bytes(), b"\0"].concat();
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                return Ok(Some(sym.to_string()));
            }
        }
    }
    Ok(None)
}

/// Files `load --persist` writes under the host root.
pub const MODULES_LOAD_FILE: &str = "etc/modules-load.d/dpdk-gitops.conf";
pub const MODPROBE_FILE: &str = "etc/modprobe.d/dpdk-gitops.conf";

/// The content of the two persisted files (pure).
pub fn persisted_files(config: &ModuleConfig, noiommu_active: bool) -> Vec<(&'static str, String)> {
    let header =
        "# Written by dpdk-node-agent load --persist (dpdk-gitops). Edit the DPDKConfig instead.\n";
    let mut load = String::from(header);
    let mut options = String::from(header);
    for req in requests_for(config) {
        load.push_str(req.name);
        load.push('\n');
    }
    if noiommu_active {
        options.push_str("options vfio enable_unsafe_noiommu_mode=1\n");
    }
    if config.driver == DpdkDriver::IgbUio && config.write_combining {
        options.push_str("options igb_uio wc_activate=1\n");
    }
    vec![(MODULES_LOAD_FILE, load), (MODPROBE_FILE, options)]
}

/// Writes the persisted files atomically when their content changed; returns what changed.
pub fn persist(
    host_root: &Path,
    config: &ModuleConfig,
    noiommu_active: bool,
) -> Result<Vec<PathBuf>, Error> {
    let mut changed = Vec::new();
    for (rel, content) in persisted_files(config, noiommu_active) {
        let path = host_root.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| host_root.to_path_buf());
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let tmp = path.with_extension("conf.tmp");
        std::fs::write(&tmp, &content).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        changed.push(path);
    }
    Ok(changed)
}

/// The running kernel's release, from `<proc_root>/sys/kernel/osrelease`.
pub fn kernel_release(proc_root: &Path) -> Result<String, Error> {
    let path = proc_root.join("sys/kernel/osrelease");
    read_trimmed(&path)?
        .ok_or_else(|| io_error(&path, std::io::Error::from(std::io::ErrorKind::NotFound)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/vfio/vfio.ko:
kernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko kernel/drivers/vfio/vfio_virqfd.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/vfio_virqfd.ko:
kernel/virt/lib/irqbypass.ko:
kernel/drivers/uio/uio_pci_generic.ko.xz: kernel/drivers/uio/uio.ko.xz
";

    #[test]
    fn load_order_puts_dependencies_first_and_skips_builtins() {
        let idx = ModuleIndex::parse(Path::new("/m"), "6.1.0", DEP, "kernel/drivers/uio/uio.ko\n");
        let order: Vec<String> = idx
            .load_order("vfio-pci")
            .expect("order")
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            order,
            [
                "vfio",
                "vfio_virqfd",
                "irqbypass",
                "vfio_pci_core",
                "vfio_pci"
            ]
        );
        let uio = idx.load_order("uio_pci_generic").expect("order");
        assert_eq!(uio.len(), 1, "uio is built in: {uio:?}");
        assert!(uio[0].compressed());
        let err = idx
            .load_order("igb_uio")
            .expect_err("igb_uio is out of tree");
        assert!(err.to_string().contains("dpdk-kmods"), "{err}");
    }

    #[test]
    fn write_combining_is_never_claimed_without_evidence() {
        let facts =
            |driver, requested, igb: Option<&str>, sym: Result<Option<String>, String>| WcFacts {
                requested,
                driver,
                igb_uio_wc_activate: igb.map(String::from),
                vfio_wc_symbol: sym,
            };
        let s = write_combining_status(&facts(DpdkDriver::VfioPci, false, None, Ok(None)));
        assert_eq!(s.state, WriteCombiningState::Disabled);
        let s = write_combining_status(&facts(DpdkDriver::VfioPci, true, None, Ok(None)));
        assert_eq!(s.state, WriteCombiningState::Unavailable);
        assert!(
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains("mainline vfio-pci has no write-combining")),
            "{s:?}"
        );
        let s = write_combining_status(&facts(
            DpdkDriver::VfioPci,
            true,
            None,
            Ok(Some("pci_iomap_wc".into())),
        ));
        assert_eq!(s.state, WriteCombiningState::Enabled);
        let s = write_combining_status(&facts(
            DpdkDriver::VfioPci,
            true,
            None,
            Err("x.ko.xz is compressed".into()),
        ));
        assert_eq!(s.state, WriteCombiningState::Unavailable);
        let s = write_combining_status(&facts(DpdkDriver::IgbUio, true, Some("1"), Ok(None)));
        assert_eq!(s.state, WriteCombiningState::Enabled);
        let s = write_combining_status(&facts(DpdkDriver::IgbUio, true, Some("0"), Ok(None)));
        assert_eq!(s.state, WriteCombiningState::Unavailable);
        let s = write_combining_status(&facts(DpdkDriver::UioPciGeneric, true, None, Ok(None)));
        assert_eq!(s.state, WriteCombiningState::Unavailable);
    }

    #[test]
    fn persisted_files_name_modules_and_options() {
        let cfg = ModuleConfig {
            driver: DpdkDriver::VfioPci,
            noiommu: true,
            write_combining: false,
        };
        let files = persisted_files(&cfg, true);
        assert!(
            files[0].1.contains("\nvfio\nvfio_iommu_type1\nvfio-pci\n"),
            "{}",
            files[0].1
        );
        assert!(
            files[1]
                .1
                .contains("options vfio enable_unsafe_noiommu_mode=1"),
            "{}",
            files[1].1
        );
        let files = persisted_files(&cfg, false);
        assert!(
            !files[1].1.contains("noiommu"),
            "noiommu not active, not persisted"
        );
    }
}
