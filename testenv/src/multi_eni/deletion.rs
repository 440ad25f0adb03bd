//! The controller's finalizer and its move of a device back to `ena` when a NodeENI is
//! deleted, as of v1.3.8.
//!
//! Models `pkg/controller/nodeeni_controller.go`: `Reconcile` adds
//! [`super::FINALIZER`]; `handleDeletion` cleans up every attachment and then removes it.
//! Per attachment, `unbindInterfaceFromDPDK` runs shell in the node's `eni-manager` pod
//! (here: reads and writes the node's sysfs directly):
//! - `captureInterfaceState` guesses the PCI address: a device with `net/eth<N>`, or whose
//!   `uevent` mentions `eth<N>`, else `0000:00:<DeviceIndex+3>.0` (`%02d`, decimal) if it
//!   exists (`N` = the attachment's `deviceIndex`);
//! - only a device on `vfio-pci` or `igb_uio` is touched; `atomicDPDKUnbind` writes its
//!   BDF to the current driver's `unbind`, `ena` to `driver_override`, the BDF to
//!   `drivers/ena/bind`, and clears `driver_override`.
//!
//! Not modelled: the ENI detach and delete in EC2, the rollback and verification steps,
//! and the cleanup timeout. Upstream reconciles on watch events; the model polls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::api::NodeENI;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{Instrument, info_span, warn};

use super::{Action, FINALIZER, Host, Record, Running, Version, driver_of};

/// The controller's deletion handling over the simulated hosts it can exec into.
#[derive(Clone)]
pub struct Deletion {
    pub version: Version,
    pub client: Client,
    /// Hosts by node name (upstream finds the node's `eni-manager` pod).
    pub hosts: BTreeMap<String, Host>,
    pub poll: Duration,
    pub record: Arc<Record>,
}

impl Deletion {
    /// Polling as often as the ENI manager by default (upstream reacts to watch events).
    pub fn new(client: Client, hosts: BTreeMap<String, Host>, record: Arc<Record>) -> Self {
        Self {
            version: Version::V1_3_8,
            client,
            hosts,
            poll: super::DEFAULT_POLL,
            record,
        }
    }

    pub fn spawn(self) -> Running {
        let span = info_span!("multi-eni-controller", version = self.version.as_str());
        Running(tokio::spawn(
            async move {
                loop {
                    if let Err(e) = self.pass().await {
                        warn!(error = %e, "NodeENI reconcile failed");
                    }
                    tokio::time::sleep(self.poll).await;
                }
            }
            .instrument(span),
        ))
    }

    /// Adds the finalizer where missing; cleans up and releases NodeENIs being deleted.
    pub async fn pass(&self) -> Result<(), kube::Error> {
        let api: Api<NodeENI> = Api::all(self.client.clone());
        for eni in api.list(&ListParams::default()).await?.items {
            let name = eni.metadata.name.clone().unwrap_or_default();
            let mut finalizers = eni.metadata.finalizers.clone().unwrap_or_default();
            let has = finalizers.iter().any(|f| f == FINALIZER);
            if eni.metadata.deletion_timestamp.is_none() {
                if !has {
                    finalizers.push(FINALIZER.into());
                    set_finalizers(&api, &name, &finalizers).await?;
                }
                continue;
            }
            if has && self.clean_up(&eni) {
                finalizers.retain(|f| f != FINALIZER);
                set_finalizers(&api, &name, &finalizers).await?;
            }
        }
        Ok(())
    }

    /// `cleanupENIAttachmentsInParallel`, the DPDK part. Whether every attachment is done.
    fn clean_up(&self, eni: &NodeENI) -> bool {
        let atts = eni.status.iter().flat_map(|s| s.attachments.iter());
        let mut ok = true;
        for a in atts {
            let Some(host) = a.node_id.as_deref().and_then(|n| self.hosts.get(n)) else {
                continue;
            };
            let Some(bdf) = guess_pci_address(&host.sysfs, a.device_index.unwrap_or_default())
            else {
                ok = false;
                continue;
            };
            ok &= move_back_to_ena(host, &self.record, &bdf);
        }
        ok
    }
}

async fn set_finalizers(
    api: &Api<NodeENI>,
    name: &str,
    finalizers: &[String],
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"finalizers": finalizers}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// `captureInterfaceState`'s PCI address guess for `eth<device_index>`.
pub fn guess_pci_address(sysfs: &Path, device_index: i32) -> Option<String> {
    let ifname = format!("eth{device_index}");
    let devices = sysfs.join("bus/pci/devices");
    let mut names: Vec<String> = std::fs::read_dir(&devices)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let named = names.iter().find(|addr| {
        let dir = devices.join(addr);
        dir.join("net").join(&ifname).is_dir()
            || std::fs::read_to_string(dir.join("uevent")).is_ok_and(|t| t.contains(&ifname))
    });
    if let Some(addr) = named {
        return Some(addr.clone());
    }
    let potential = format!("0000:00:{:02}.0", device_index + 3);
    devices.join(&potential).exists().then_some(potential)
}

/// `atomicDPDKUnbind` for a device on a DPDK driver; other devices are left alone.
/// Whether the device is off DPDK now.
pub fn move_back_to_ena(host: &Host, record: &Record, bdf: &str) -> bool {
    let Some(current) = driver_of(&host.sysfs, bdf) else {
        return true;
    };
    if current != "vfio-pci" && current != "igb_uio" {
        return true;
    }
    let dev = PathBuf::from("bus/pci/devices").join(bdf);
    let steps = [
        (
            PathBuf::from("bus/pci/drivers")
                .join(&current)
                .join("unbind"),
            bdf.to_string(),
        ),
        (dev.join("driver_override"), "ena".to_string()),
        (PathBuf::from("bus/pci/drivers/ena/bind"), bdf.to_string()),
        (dev.join("driver_override"), String::new()),
    ];
    for (path, value) in steps {
        if let Err(e) = host.kernel.write_attr(&path, &value) {
            warn!(bdf, path = %path.display(), error = %e, "atomic DPDK unbind failed");
            return false;
        }
    }
    record.push(Action::EnaRebind {
        node: host.node.clone(),
        bdf: bdf.into(),
    });
    true
}
