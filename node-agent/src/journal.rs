//! The crash-safe binding journal, kept on a hostPath (`--state-dir`).
//!
//! Before the agent touches a device it records what it is about to do and what the device
//! looked like: MAC, interface name and original driver, which vanish once a DPDK driver
//! holds the device. Every change is written to a temporary file, fsynced, renamed over
//! `journal.json` and the directory fsynced, so after a crash (or a reboot) the file is
//! either the old or the new version, never a torn one. On start the agent replays it:
//! a device caught mid-bind is finished or rolled back, one caught mid-restore is restored.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, io_error};
use crate::sysfs::PciAddress;

/// The journal file name inside the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
const FORMAT_VERSION: u32 = 1;

/// Where a device is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Intent recorded; the bind sequence may be anywhere between untouched and done.
    Binding,
    /// Bound to the target driver and verified.
    Bound,
    /// Restoring the original driver; may be anywhere between bound and restored.
    Restoring,
}

/// What the agent knows about one device it manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub address: PciAddress,
    pub device_index: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_eni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    /// Recorded before binding: the netdev (and so its MAC) disappears once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The driver to restore; `None` when the device had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_driver: Option<String>,
    pub target_driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    pub phase: Phase,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    devices: Vec<Entry>,
}

/// The journal: an in-memory map persisted on every change.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    entries: BTreeMap<PciAddress, Entry>,
}

impl Journal {
    /// Opens (or starts) the journal in `state_dir`, creating the directory. A leftover
    /// temporary file from a crash during a write is ignored: the rename never happened.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(state_dir).map_err(|e| io_error(state_dir, e))?;
        let path = state_dir.join(JOURNAL_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| Error::Journal {
                    path: path.display().to_string(),
                    message: format!("unreadable ({e}); it records the original drivers, so it is not discarded: fix or remove it by hand"),
                })?;
                if on_disk.version != FORMAT_VERSION {
                    return Err(Error::Journal {
                        path: path.display().to_string(),
                        message: format!(
                            "format version {} is not {FORMAT_VERSION}",
                            on_disk.version
                        ),
                    });
                }
                on_disk
                    .devices
                    .into_iter()
                    .map(|e| (e.address.clone(), e))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_error(&path, e)),
        };
        Ok(Self {
            dir: state_dir.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    pub fn get(&self, address: &PciAddress) -> Option<&Entry> {
        self.entries.get(address)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose recorded MAC is `mac` (case-insensitive).
    pub fn find_by_mac(&self, mac: &str) -> Option<&Entry> {
        self.entries.values().find(|e| {
            e.mac
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(mac))
        })
    }

    /// The entry for an ENI ID.
    pub fn find_by_eni(&self, eni_id: &str) -> Option<&Entry> {
        self.entries
            .values()
            .find(|e| e.eni_id.as_deref() == Some(eni_id))
    }

    /// Inserts or replaces an entry and persists the journal before returning.
    pub fn put(&mut self, entry: Entry) -> Result<(), Error> {
        self.entries.insert(entry.address.clone(), entry);
        self.persist()
    }

    /// Sets an entry's phase and persists.
    pub fn set_phase(&mut self, address: &PciAddress, phase: Phase) -> Result<(), Error> {
        match self.entries.get_mut(address) {
            Some(e) if e.phase == phase => Ok(()),
            Some(e) => {
                e.phase = phase;
                self.persist()
            }
            None => Err(Error::Journal {
                path: self.path().display().to_string(),
                message: format!("no entry for {address}"),
            }),
        }
    }

    /// Forgets a device (restored) and persists.
    pub fn remove(&mut self, address: &PciAddress) -> Result<(), Error> {
        if self.entries.remove(address).is_some() {
            self.persist()?;
        }
        Ok(())
    }

    /// Atomic replace: write a temporary file, fsync it, rename it over the journal, fsync
    /// the directory so the rename itself survives a power cut.
    fn persist(&self) -> Result<(), Error> {
        let path = self.path();
        let tmp = self.dir.join(format!("{JOURNAL_FILE}.tmp"));
        let on_disk = OnDisk {
            version: FORMAT_VERSION,
            devices: self.entries.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&on_disk).map_err(|e| Error::Journal {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| io_error(&tmp, e))?;
        f.sync_all().map_err(|e| io_error(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        let dir = std::fs::File::open(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        dir.sync_all().map_err(|e| io_error(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bdf: &str, phase: Phase) -> Entry {
        Entry {
            address: PciAddress::parse(bdf).expect("bdf"),
            device_index: 1,
            node_eni: Some("eni-cr".into()),
            eni_id: Some("eni-0abc".into()),
            mac: Some("02:00:00:00:00:01".into()),
            interface: Some("ens6".into()),
            original_driver: Some("ena".into()),
            target_driver: "vfio-pci".into(),
            resource_name: Some("intel.com/x".into()),
            phase,
        }
    }

    #[test]
    fn survives_reopen_and_ignores_a_torn_temporary_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(tmp.path()).expect("open");
        j.put(entry("0000:00:06.0", Phase::Binding)).expect("put");
        j.set_phase(
            &PciAddress::parse("0000:00:06.0").expect("bdf"),
            Phase::Bound,
        )
        .expect("phase");
        // A crash in the middle of the next write leaves only a partial temporary file.
        std::fs::write(
            tmp.path().join("journal.json.tmp"),
            b"{\"version\":1,\"devi",
        )
        .expect("write");
        let j = Journal::open(tmp.path()).expect("reopen");
        let e = j
            .get(&PciAddress::parse("0000:00:06.0").expect("bdf"))
            .expect("entry");
        assert_eq!(e.phase, Phase::Bound);
        assert_eq!(e.original_driver.as_deref(), Some("ena"));
        assert_eq!(
            j.find_by_mac("02:00:00:00:00:01")
                .map(|e| e.address.as_str()),
            Some("0000:00:06.0")
        );
        assert_eq!(j.find_by_eni("eni-0abc").map(|e| e.device_index), Some(1));
    }

    #[test]
    fn remove_persists_and_corruption_is_an_error_not_a_reset() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(tmp.path()).expect("open");
        j.put(entry("0000:00:06.0", Phase::Bound)).expect("put");
        j.put(entry("0000:00:07.0", Phase::Bound)).expect("put");
        j.remove(&PciAddress::parse("0000:00:06.0").expect("bdf"))
            .expect("remove");
        assert_eq!(
            Journal::open(tmp.path()).expect("reopen").entries().count(),
            1
        );
        std::fs::write(tmp.path().join(JOURNAL_FILE), b"not json").expect("write");
        let err = Journal::open(tmp.path()).expect_err("corrupt journal must not be dropped");
        assert!(err.to_string().contains("journal.json"), "{err}");
    }
}
