//! Moving one PCI device between drivers with the kernel's own sequence:
//! `driver_override` → `unbind` → `drivers_probe`, then verify the `driver` link and clear
//! the override. The same sequence restores the original driver.
//!
//! Each step is idempotent and starts by reading where the device is, so re-running a
//! sequence that a crash interrupted at any point finishes it (the journal says which
//! sequence to re-run).

use std::path::PathBuf;

use crate::error::Error;
use crate::kernel::Kernel;
use crate::sysfs::{PciAddress, Sysfs};

/// What a bind or restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device was already where it should be (only a stale override was cleared, if any).
    Unchanged,
    /// The device moved from `from` to the target driver.
    Moved { from: Option<String> },
}

/// Binds `address` to `driver` and verifies it. A failed probe hands the device back to
/// `fallback` (normally its original driver), so a failed bind never leaves the node
/// without its NIC; the error is still returned.
pub fn bind(
    sysfs: &Sysfs,
    kernel: &dyn Kernel,
    address: &PciAddress,
    driver: &str,
    fallback: Option<&str>,
) -> Result<Outcome, Error> {
    move_to_driver(sysfs, kernel, address, Some(driver), fallback)
}

/// Gives `address` back to its original driver. With no known original driver the override
/// is cleared and the kernel picks the driver that matches, as it would at boot.
pub fn restore(
    sysfs: &Sysfs,
    kernel: &dyn Kernel,
    address: &PciAddress,
    original: Option<&str>,
) -> Result<Outcome, Error> {
    match original {
        Some(driver) => move_to_driver(sysfs, kernel, address, Some(driver), Some(driver)),
        None => release_to_kernel(sysfs, kernel, address),
    }
}

/// Unbinds from the current driver, clears the override and lets `drivers_probe` match.
fn release_to_kernel(
    sysfs: &Sysfs,
    kernel: &dyn Kernel,
    address: &PciAddress,
) -> Result<Outcome, Error> {
    ensure_exists(sysfs, address)?;
    let current = sysfs.bound_driver(address)?;
    write(kernel, sysfs, device_attr(address, "driver_override"), "\n")?;
    if let Some(driver) = &current {
        write(
            kernel,
            sysfs,
            driver_attr(driver, "unbind"),
            address.as_str(),
        )?;
    }
    // A probe that finds no driver is not an error: the device simply stays unbound.
    let _ = write(
        kernel,
        sysfs,
        PathBuf::from("bus/pci/drivers_probe"),
        address.as_str(),
    );
    Ok(Outcome::Moved { from: current })
}

fn ensure_exists(sysfs: &Sysfs, address: &PciAddress) -> Result<(), Error> {
    if sysfs.pci_device_exists(address) {
        Ok(())
    } else {
        Err(Error::PciDeviceNotFound {
            address: address.to_string(),
            path: sysfs.pci_device_dir(address).display().to_string(),
        })
    }
}

/// Moves `address` to `target` and verifies the result; on failure hands it to `fallback`.
fn move_to_driver(
    sysfs: &Sysfs,
    kernel: &dyn Kernel,
    address: &PciAddress,
    target: Option<&str>,
    fallback: Option<&str>,
) -> Result<Outcome, Error> {
    ensure_exists(sysfs, address)?;
    let current = sysfs.bound_driver(address)?;
    if current.as_deref() == target {
        clear_override(sysfs, kernel, address)?;
        return Ok(Outcome::Unchanged);
    }
    if let Some(driver) = target
        && !sysfs.pci_driver_registered(driver)
    {
        return Err(Error::DriverNotRegistered {
            driver: driver.to_string(),
            address: address.to_string(),
            path: sysfs.pci_driver_dir(driver).display().to_string(),
        });
    }

    // 1. driver_override: only `target` may claim the device on the next probe. An empty
    //    override (no target) keeps every driver away.
    write(
        kernel,
        sysfs,
        device_attr(address, "driver_override"),
        target.unwrap_or("\n"),
    )?;
    // 2. unbind from the current driver, if any.
    if let Some(driver) = &current {
        write(
            kernel,
            sysfs,
            driver_attr(driver, "unbind"),
            address.as_str(),
        )?;
    }
    // 3. drivers_probe: the kernel matches the device against the override.
    let probe = match target {
        Some(_) => write(
            kernel,
            sysfs,
            PathBuf::from("bus/pci/drivers_probe"),
            address.as_str(),
        ),
        None => Ok(()),
    };
    // 4. verify the driver link, whatever the probe write said.
    let now = sysfs.bound_driver(address)?;
    if now.as_deref() != target {
        let detail = match (&probe, &now) {
            (Err(e), _) => e.to_string(),
            (Ok(()), None) => "the driver did not claim the device (see the kernel log: for vfio-pci, usually no IOMMU group: enable the IOMMU or noiommu mode)".to_string(),
            (Ok(()), Some(other)) => format!("{other} claimed it instead"),
        };
        rollback(sysfs, kernel, address, fallback);
        return Err(Error::BindFailed {
            address: address.to_string(),
            driver: target.unwrap_or("(none)").to_string(),
            actual: now,
            detail,
        });
    }
    // 5. clear the override so the device behaves normally afterwards.
    clear_override(sysfs, kernel, address)?;
    Ok(Outcome::Moved { from: current })
}

/// Best effort after a failed probe: give the device back to `fallback`.
fn rollback(sysfs: &Sysfs, kernel: &dyn Kernel, address: &PciAddress, fallback: Option<&str>) {
    let _ = kernel.write_attr(
        &device_attr(address, "driver_override"),
        fallback.unwrap_or("\n"),
    );
    if let Ok(Some(driver)) = sysfs.bound_driver(address)
        && Some(driver.as_str()) != fallback
    {
        let _ = kernel.write_attr(&driver_attr(&driver, "unbind"), address.as_str());
    }
    if fallback.is_some() {
        let _ = kernel.write_attr(&PathBuf::from("bus/pci/drivers_probe"), address.as_str());
    }
    let _ = kernel.write_attr(&device_attr(address, "driver_override"), "\n");
}

/// Clears `driver_override` when it is set (writing a newline clears it).
fn clear_override(sysfs: &Sysfs, kernel: &dyn Kernel, address: &PciAddress) -> Result<(), Error> {
    if sysfs.driver_override(address)?.is_some() {
        write(kernel, sysfs, device_attr(address, "driver_override"), "\n")?;
    }
    Ok(())
}

fn device_attr(address: &PciAddress, attr: &str) -> PathBuf {
    PathBuf::from("bus/pci/devices")
        .join(address.as_str())
        .join(attr)
}

fn driver_attr(driver: &str, attr: &str) -> PathBuf {
    PathBuf::from("bus/pci/drivers").join(driver).join(attr)
}

fn write(kernel: &dyn Kernel, sysfs: &Sysfs, rel: PathBuf, value: &str) -> Result<(), Error> {
    kernel
        .write_attr(&rel, value)
        .map_err(|source| Error::SysfsWrite {
            path: sysfs.path(&rel).display().to_string(),
            value: value.trim().to_string(),
            source,
        })
}
