//! Converging the node's devices on the desired set, through the journal.
//!
//! [`recover`] runs once at start: it finishes whatever a crash interrupted (a device
//! recorded as `Binding` is bound, one recorded as `Restoring` is restored). [`converge`]
//! then runs on every change: devices that left the desired set go back to their original
//! driver (unless a pod holds them), desired devices pass the safety checks, are recorded
//! in the journal with their MAC, interface and original driver, and are bound.
//!
//! Both return data ([`DeviceStatus`] rows and errors) for the caller to report; neither
//! talks to the API server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dpdk_bridge::api::DeviceStatus;
use tracing::{info, warn};

use crate::binding::{self, Outcome};
use crate::error::Error;
use crate::journal::{Entry, Journal, Phase};
use crate::kernel::Kernel;
use crate::safety::{self, Candidate, EniMac, HostNetwork, SafetyPolicy};
use crate::sysfs::{PciAddress, Sysfs};

/// Device health values in `DPDKNodeState.status.devices[].health`.
pub mod health {
    pub const HEALTHY: &str = "Healthy";
    pub const UNHEALTHY: &str = "Unhealthy";
    pub const IN_USE: &str = "InUse";
    pub const REFUSED: &str = "Refused";
    pub const PENDING: &str = "Pending";
}

/// A desired device, resolved to its PCI address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub device_index: i32,
    pub node_eni: Option<String>,
    pub eni_id: Option<String>,
    pub address: PciAddress,
    pub driver: String,
    pub resource_name: Option<String>,
    /// What IMDS says the ENI's MAC is (checked against the device's before binding).
    pub eni_mac: EniMac,
}

/// The node as the reconcile sees it: where to read, how to write, what is safe.
pub struct NodeContext<'a> {
    pub sysfs: &'a Sysfs,
    pub dev_root: &'a Path,
    pub kernel: &'a dyn Kernel,
    pub network: &'a HostNetwork,
    pub policy: &'a SafetyPolicy,
    /// PCI addresses kubelet's PodResources API says pods hold; `None` when it is not
    /// reachable (then nothing blocks a restore).
    pub in_use: Option<&'a BTreeSet<String>>,
}

/// What a converge pass found and did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub devices: Vec<DeviceStatus>,
    /// One message per device that failed or was refused.
    pub errors: Vec<String>,
    /// Work left that only time can finish (a device in use; retry later).
    pub pending: bool,
}

impl Report {
    pub fn bound_devices(&self) -> usize {
        self.devices.iter().filter(|d| d.bound).count()
    }
}

/// Finishes what a crash interrupted. Returns the errors it could not resolve.
pub fn recover(ctx: &NodeContext<'_>, journal: &mut Journal) -> Vec<Error> {
    let mut errors = Vec::new();
    let pending: Vec<Entry> = journal
        .entries()
        .filter(|e| e.phase != Phase::Bound)
        .cloned()
        .collect();
    for entry in pending {
        let result = match entry.phase {
            Phase::Binding => {
                info!(device = %entry.address, driver = %entry.target_driver, "recovering an interrupted bind from the journal");
                binding::bind(
                    ctx.sysfs,
                    ctx.kernel,
                    &entry.address,
                    &entry.target_driver,
                    entry.original_driver.as_deref(),
                )
                .and_then(|_| journal.set_phase(&entry.address, Phase::Bound))
            }
            Phase::Restoring => {
                info!(device = %entry.address, driver = ?entry.original_driver, "recovering an interrupted restore from the journal");
                binding::restore(
                    ctx.sysfs,
                    ctx.kernel,
                    &entry.address,
                    entry.original_driver.as_deref(),
                )
                .and_then(|_| journal.remove(&entry.address))
            }
            Phase::Bound => Ok(()),
        };
        if let Err(e) = result {
            warn!(device = %entry.address, error = %e, "recovery failed");
            errors.push(e);
        }
    }
    errors
}

/// Converges the node on `targets`.
pub fn converge(ctx: &NodeContext<'_>, journal: &mut Journal, targets: &[Target]) -> Report {
    let mut report = Report::default();
    let wanted: BTreeMap<&PciAddress, &Target> = targets.iter().map(|t| (&t.address, t)).collect();

    // Devices that left the desired set go back to their original driver.
    let released: Vec<Entry> = journal
        .entries()
        .filter(|e| !wanted.contains_key(&e.address))
        .cloned()
        .collect();
    for entry in released {
        release(ctx, journal, &entry, &mut report);
    }
    for target in targets {
        bind_target(ctx, journal, target, &mut report);
    }
    report
        .devices
        .sort_by(|a, b| (a.device_index, &a.pci_address).cmp(&(b.device_index, &b.pci_address)));
    report
}

fn release(ctx: &NodeContext<'_>, journal: &mut Journal, entry: &Entry, report: &mut Report) {
    let mut status = status_from_entry(entry);
    let current = ctx.sysfs.bound_driver(&entry.address).ok().flatten();
    status.driver = current.clone();
    status.bound = current.as_deref() == Some(entry.target_driver.as_str());
    if ctx
        .in_use
        .is_some_and(|used| used.contains(entry.address.as_str()))
    {
        status.health = Some(health::IN_USE.into());
        status.message =
            Some("no longer desired, but a pod holds it (kubelet PodResources); it is restored once the pod is gone".into());
        report.pending = true;
        report.devices.push(status);
        return;
    }
    let result = journal
        .set_phase(&entry.address, Phase::Restoring)
        .and_then(|_| {
            binding::restore(
                ctx.sysfs,
                ctx.kernel,
                &entry.address,
                entry.original_driver.as_deref(),
            )
        })
        .and_then(|outcome| journal.remove(&entry.address).map(|_| outcome));
    match result {
        Ok(outcome) => {
            info!(device = %entry.address, driver = ?entry.original_driver, changed = matches!(outcome, Outcome::Moved { .. }), "restored the original driver");
        }
        Err(e) => {
            let msg = format!(
                "restoring {} to {}: {e}",
                entry.address,
                entry
                    .original_driver
                    .as_deref()
                    .unwrap_or("(kernel's choice)")
            );
            warn!(device = %entry.address, error = %e, "restore failed");
            status.health = Some(health::UNHEALTHY.into());
            status.message = Some(msg.clone());
            report.errors.push(msg);
            report.devices.push(status);
        }
    }
}

fn bind_target(ctx: &NodeContext<'_>, journal: &mut Journal, target: &Target, report: &mut Report) {
    let addr = &target.address;
    let mut status = DeviceStatus {
        device_index: target.device_index,
        pci_address: Some(addr.to_string()),
        resource_name: target.resource_name.clone(),
        ..Default::default()
    };
    let fail = |status: &mut DeviceStatus, report: &mut Report, health: &str, msg: String| {
        status.health = Some(health.to_string());
        status.message = Some(msg.clone());
        report.errors.push(msg);
    };
    let info = match ctx.sysfs.pci_device_info(ctx.dev_root, addr) {
        Ok(i) => i,
        Err(e) => {
            fail(
                &mut status,
                report,
                health::UNHEALTHY,
                format!("device index {}: {e}", target.device_index),
            );
            report.devices.push(status);
            return;
        }
    };
    let entry = journal.get(addr).cloned();
    let mac_now = ctx.sysfs.net_interfaces().ok().and_then(|ifs| {
        ifs.into_iter()
            .find(|i| i.pci_address.as_ref() == Some(addr))
            .map(|i| i.mac)
    });
    status.mac = entry
        .as_ref()
        .and_then(|e| e.mac.clone())
        .or_else(|| mac_now.clone());
    status.interface_name = entry
        .as_ref()
        .and_then(|e| e.interface.clone())
        .or_else(|| info.interfaces.first().cloned());
    status.original_driver = match &entry {
        Some(e) => e.original_driver.clone(),
        None if info.driver.as_deref() != Some(target.driver.as_str()) => info.driver.clone(),
        None => None,
    };

    let settled = entry
        .as_ref()
        .is_some_and(|e| e.phase == Phase::Bound && e.target_driver == target.driver)
        && info.driver.as_deref() == Some(target.driver.as_str());
    if !settled {
        // The checks run on what the device looks like now, before anything changes.
        let drivers: Vec<String> = info
            .driver
            .iter()
            .chain(&info.child_drivers)
            .chain(status.original_driver.iter())
            .cloned()
            .collect();
        let candidate = Candidate {
            device_index: target.device_index,
            address: addr.as_str(),
            interfaces: &info.interfaces,
            mac: mac_now.as_deref().or(status.mac.as_deref()),
            class: info.class.as_deref(),
            vendor: info.vendor.as_deref(),
            drivers: &drivers,
            eni_mac: &target.eni_mac,
        };
        if let Err(refusal) = safety::check(&candidate, ctx.network, ctx.policy) {
            status.driver = info.driver.clone();
            fail(
                &mut status,
                report,
                health::REFUSED,
                format!(
                    "refusing to bind {addr} (device index {}): {refusal}",
                    target.device_index
                ),
            );
            report.devices.push(status);
            return;
        }
        if !ctx.sysfs.pci_driver_registered(&target.driver) {
            let e = Error::DriverNotRegistered {
                driver: target.driver.clone(),
                address: addr.to_string(),
                path: ctx
                    .sysfs
                    .pci_driver_dir(&target.driver)
                    .display()
                    .to_string(),
            };
            status.driver = info.driver.clone();
            fail(&mut status, report, health::UNHEALTHY, e.to_string());
            report.devices.push(status);
            return;
        }
        // Record before touching the device: the netdev, its MAC and the original driver
        // are gone from sysfs once a DPDK driver holds it.
        let recorded = Entry {
            address: addr.clone(),
            device_index: target.device_index,
            node_eni: target.node_eni.clone(),
            eni_id: target.eni_id.clone(),
            mac: status.mac.clone(),
            interface: status.interface_name.clone(),
            original_driver: status.original_driver.clone(),
            target_driver: target.driver.clone(),
            resource_name: target.resource_name.clone(),
            phase: Phase::Binding,
        };
        let result = journal
            .put(recorded)
            .and_then(|_| {
                binding::bind(
                    ctx.sysfs,
                    ctx.kernel,
                    addr,
                    &target.driver,
                    status.original_driver.as_deref(),
                )
            })
            .and_then(|outcome| journal.set_phase(addr, Phase::Bound).map(|_| outcome));
        match result {
            Ok(outcome) => info!(device = %addr, driver = %target.driver, ?outcome, "bound"),
            Err(e) => {
                status.driver = ctx.sysfs.bound_driver(addr).ok().flatten();
                // Back where it started (the failed probe was rolled back): forget it. Left
                // elsewhere: mark it for restore, so a restart does not retry the bind blindly.
                let settle = if status.driver == status.original_driver {
                    journal.remove(addr)
                } else {
                    journal.set_phase(addr, Phase::Restoring)
                };
                if let Err(je) = settle {
                    warn!(device = %addr, error = %je, "journal update after a failed bind");
                }
                fail(&mut status, report, health::UNHEALTHY, e.to_string());
                report.devices.push(status);
                return;
            }
        }
    }

    // Bound: check what a DPDK application will need.
    let info = ctx
        .sysfs
        .pci_device_info(ctx.dev_root, addr)
        .unwrap_or(info);
    status.driver = info.driver.clone();
    status.bound = info.driver.as_deref() == Some(target.driver.as_str());
    let problem = if !status.bound {
        Some(format!(
            "{addr} is on {} instead of {}",
            info.driver.as_deref().unwrap_or("no driver"),
            target.driver
        ))
    } else if target.driver == "vfio-pci" {
        match info.vfio_group {
            None => Some(format!(
                "{addr} is bound to vfio-pci but has no IOMMU group"
            )),
            Some(g) if !info.vfio_group_dev_exists => Some(format!(
                "{addr} is bound to vfio-pci but {} does not exist",
                g.host_path(ctx.dev_root).display()
            )),
            Some(_) => None,
        }
    } else {
        None
    };
    match problem {
        Some(msg) => fail(&mut status, report, health::UNHEALTHY, msg),
        None => status.health = Some(health::HEALTHY.into()),
    }
    report.devices.push(status);
}

fn status_from_entry(entry: &Entry) -> DeviceStatus {
    DeviceStatus {
        device_index: entry.device_index,
        pci_address: Some(entry.address.to_string()),
        mac: entry.mac.clone(),
        interface_name: entry.interface.clone(),
        driver: None,
        original_driver: entry.original_driver.clone(),
        bound: false,
        resource_name: entry.resource_name.clone(),
        health: None,
        message: None,
    }
}
