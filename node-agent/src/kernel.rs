//! The agent's only writes to the kernel: sysfs attributes and module loading.
//!
//! Everything else is read through [`crate::sysfs::Sysfs`]. Keeping writes behind the
//! [`Kernel`] trait lets the tests put a model of the kernel's driver-core semantics
//! (driver_override, unbind, drivers_probe) in place of the real one, while the
//! production implementation, [`RealKernel`], is a few plain system calls.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Writes into sysfs and loads modules.
pub trait Kernel: Send + Sync {
    /// Writes `value` to the sysfs attribute `rel` (relative to the sysfs root), in one
    /// `write(2)`, as `echo value > /sys/rel` does.
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()>;

    /// Loads the module in `file` with `params` (`finit_module(2)`). `compressed` asks the
    /// kernel to decompress it (`.ko.xz`/`.ko.zst`/`.ko.gz`).
    fn load_module(&self, file: &Path, params: &str, compressed: bool) -> std::io::Result<()>;
}

/// The running kernel, through a sysfs mount at `sysfs_root`.
#[derive(Clone, Debug)]
pub struct RealKernel {
    sysfs_root: PathBuf,
}

impl RealKernel {
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        Self {
            sysfs_root: sysfs_root.into(),
        }
    }
}

/// `MODULE_INIT_COMPRESSED_FILE` from `include/uapi/linux/module.h`.
const MODULE_INIT_COMPRESSED_FILE: libc::c_long = 4;

impl Kernel for RealKernel {
    fn write_attr(&self, rel: &Path, value: &str) -> std::io::Result<()> {
        // sysfs attributes take one write; no create, no truncate.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.sysfs_root.join(rel))?;
        f.write_all(value.as_bytes())
    }

    fn load_module(&self, file: &Path, params: &str, compressed: bool) -> std::io::Result<()> {
        let f = std::fs::File::open(file)?;
        let params = std::ffi::CString::new(params)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let flags = if compressed {
            MODULE_INIT_COMPRESSED_FILE
        } else {
            0
        };
        // SAFETY: finit_module(2) reads the open fd and the NUL-terminated parameter
        // string, both alive for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                f.as_raw_fd() as libc::c_long,
                params.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
