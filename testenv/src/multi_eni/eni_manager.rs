//! The ENI manager DaemonSet's DPDK handling, as of v1.3.8.
//!
//! Models (upstream paths):
//! - the poll: `pkg/eni-manager/coordinator/manager.go` `processLoop` (a ticker every
//!   `CheckInterval`, 30 s by default) → `processNodeENIs`: the NodeENIs whose
//!   `nodeSelector` matches this Node's labels (`pkg/eni-manager/kubernetes/client.go`),
//!   then `processDPDKBindings` for those with `spec.enableDPDK`, then `CheckForUnbinding`;
//! - change detection: `pkg/eni-manager/dpdk/coordinator.go` `hasNodeENIChanges` (the set
//!   of enabled NodeENIs or one's resourceVersion changed);
//! - the skip rules: `coordinator.go` `shouldSkipBinding` (`dpdkBound` true, or the
//!   attachment's status not `attached`); no check of the attachment's `nodeID`;
//! - the device choice: `spec.dpdkPCIAddress` when set (`bindWithExplicitPCIAddress`), else
//!   `eth<deviceIndex>` (`getInterfaceNameForAttachment`) and `PCI_SLOT_NAME` from
//!   `/sys/class/net/<if>/device/uevent` (`pkg/eni-manager/dpdk/manager.go`
//!   `getPCIAddressForInterface`);
//! - the bind: `manager.go` `bindPCIDeviceInternal` (skip when already on the target
//!   driver, else `dpdk-devbind.py --bind`: unbind, `driver_override`, bind, clear the
//!   override), preceded by a link down for binds by interface name;
//! - the SR-IOV update collected before each bind attempt (`collectSRIOVUpdate`), applied
//!   in one batch afterwards ([`super::sriov`]);
//! - `CheckForUnbinding`: a device it bound that no enabled NodeENI references any more
//!   (by ENI ID or `dpdkPCIAddress`) gets `dpdk-devbind.py --unbind`.
//!
//! Not modelled: interface configuration (MTU, addresses), the non-DPDK SR-IOV case
//! (`updateSRIOVConfiguration`, which needs `dpdkPCIAddress` without `enableDPDK`), the
//! watch that triggers extra passes, and the status write `updateNodeENIStatus` (in v1.3.8
//! it only logs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::api::{ENIAttachment, NodeENI};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};
use tracing::{Instrument, info_span, warn};

use super::sriov::{self, ResourceUpdate};
use super::{Action, Host, Record, Running, Version, driver_of};

/// One node's ENI manager.
#[derive(Clone)]
pub struct EniManager {
    pub version: Version,
    pub host: Host,
    pub client: Client,
    /// `CheckInterval` ([`super::DEFAULT_POLL`] upstream; shorter in tests).
    pub poll: Duration,
    /// The SR-IOV device plugin's config (`/etc/pcidp/config.json` upstream).
    pub pcidp_config: PathBuf,
    pub record: Arc<Record>,
}

/// A device this ENI manager bound (`DPDKBoundInterfaces`).
#[derive(Clone, Debug)]
struct Bound {
    eni_id: String,
}

/// What the ENI manager keeps between passes (in memory: lost when its pod restarts).
#[derive(Default)]
pub struct State {
    last_versions: BTreeMap<String, String>,
    bound: BTreeMap<String, Bound>,
}

impl EniManager {
    /// As upstream deploys it: the 30 s poll, `config.json` at `pcidp_config`.
    pub fn new(host: Host, client: Client, pcidp_config: PathBuf, record: Arc<Record>) -> Self {
        Self {
            version: Version::V1_3_8,
            host,
            client,
            poll: super::DEFAULT_POLL,
            pcidp_config,
            record,
        }
    }

    /// Runs the poll until the returned handle is dropped. As Go's ticker, the first pass
    /// comes one interval after the start.
    pub fn spawn(self) -> Running {
        let span = info_span!("multi-eni-manager", node = %self.host.node, version = self.version.as_str());
        Running(tokio::spawn(
            async move {
                let mut state = State::default();
                loop {
                    tokio::time::sleep(self.poll).await;
                    if let Err(e) = self.pass(&mut state).await {
                        warn!(error = %e, "processing NodeENIs failed");
                    }
                }
            }
            .instrument(span),
        ))
    }

    /// One `processNodeENIs`.
    pub async fn pass(&self, state: &mut State) -> Result<(), kube::Error> {
        let enis = self.node_enis().await?;
        let enabled: Vec<&NodeENI> = enis
            .iter()
            .filter(|e| e.spec.enable_dpdk == Some(true))
            .collect();
        if !enabled.is_empty() && changed(state, &enabled) {
            let mut updates: BTreeMap<String, ResourceUpdate> = BTreeMap::new();
            for eni in &enabled {
                let atts = eni.status.iter().flat_map(|s| s.attachments.iter());
                for att in atts {
                    self.process_attachment(state, eni, att, &mut updates);
                }
            }
            if !updates.is_empty() {
                sriov::apply_and_restart(self, updates.into_values().collect()).await;
            }
            state.last_versions = versions(&enabled);
        }
        self.check_for_unbinding(state, &enis);
        Ok(())
    }

    /// The NodeENIs whose `nodeSelector` matches this Node's labels.
    async fn node_enis(&self) -> Result<Vec<NodeENI>, kube::Error> {
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.host.node)
            .await?;
        let labels = node.metadata.labels.unwrap_or_default();
        let all = Api::<NodeENI>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        Ok(all
            .items
            .into_iter()
            .filter(|e| {
                e.spec
                    .node_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect())
    }

    /// `processAttachmentBinding`.
    fn process_attachment(
        &self,
        state: &mut State,
        eni: &NodeENI,
        att: &ENIAttachment,
        updates: &mut BTreeMap<String, ResourceUpdate>,
    ) {
        if skip_binding(att) {
            return;
        }
        let driver = eni
            .spec
            .dpdk_driver
            .clone()
            .unwrap_or_else(|| "vfio-pci".into());
        let node = self.host.node.clone();
        let (bdf, by_name) = match eni.spec.dpdk_pci_address.as_deref() {
            Some(pci) if !pci.is_empty() => {
                if !(pci.contains(':') && pci.contains('.')) {
                    let reason = format!("invalid PCI address format: {pci}");
                    self.record.push(Action::BindFailed { node, reason });
                    return;
                }
                (pci.to_string(), None)
            }
            _ => {
                let ifname = format!("eth{}", att.device_index.unwrap_or_default());
                match pci_slot_of(&self.host.sysfs, &ifname) {
                    Some(bdf) => (bdf, Some(ifname)),
                    None => {
                        let reason = format!("failed to get link for interface {ifname}");
                        self.record.push(Action::BindFailed { node, reason });
                        return;
                    }
                }
            }
        };
        if let Some(res) = eni
            .spec
            .dpdk_resource_name
            .as_deref()
            .filter(|r| !r.is_empty())
        {
            let u = ResourceUpdate::new(&bdf, res, &driver);
            updates.insert(u.resource_name.clone(), u);
        }
        if let Some(ifname) = by_name {
            self.record.push(Action::LinkDown {
                node: node.clone(),
                ifname,
            });
        }
        if bind(&self.host, &self.record, &bdf, &driver) {
            let eni_id = att.eni_id.clone().unwrap_or_default();
            state.bound.insert(bdf, Bound { eni_id });
        }
    }

    /// `CheckForUnbinding`.
    fn check_for_unbinding(&self, state: &mut State, enis: &[NodeENI]) {
        let keep = |bdf: &str, b: &Bound| {
            enis.iter()
                .filter(|e| e.spec.enable_dpdk == Some(true))
                .any(|e| {
                    let by_eni = e
                        .status
                        .iter()
                        .flat_map(|s| s.attachments.iter())
                        .any(|a| a.eni_id.as_deref() == Some(b.eni_id.as_str()));
                    by_eni || e.spec.dpdk_pci_address.as_deref() == Some(bdf)
                })
        };
        let gone: Vec<String> = state
            .bound
            .iter()
            .filter(|(bdf, b)| !keep(bdf, b))
            .map(|(bdf, _)| bdf.clone())
            .collect();
        for bdf in gone {
            if unbind(&self.host, &self.record, &bdf) {
                state.bound.remove(&bdf);
            }
        }
    }
}

/// `shouldSkipBinding`.
pub fn skip_binding(att: &ENIAttachment) -> bool {
    att.dpdk_bound == Some(true) || att.status.as_deref() != Some("attached")
}

fn changed(state: &State, enabled: &[&NodeENI]) -> bool {
    versions(enabled) != state.last_versions
}

fn versions(enabled: &[&NodeENI]) -> BTreeMap<String, String> {
    enabled
        .iter()
        .map(|e| {
            (
                e.metadata.name.clone().unwrap_or_default(),
                e.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// `PCI_SLOT_NAME` from `<sysfs>/class/net/<ifname>/device/uevent`; `None` when the
/// interface does not exist (`LinkByName` fails) or names no slot.
pub fn pci_slot_of(sysfs: &Path, ifname: &str) -> Option<String> {
    let uevent = sysfs.join("class/net").join(ifname).join("device/uevent");
    let text = std::fs::read_to_string(uevent).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PCI_SLOT_NAME="))
        .map(|s| s.trim().to_string())
}

/// `bindPCIDeviceInternal`: skip a device already on `driver`, else what
/// `dpdk-devbind.py --bind` writes. Returns whether the device is on `driver` now.
pub fn bind(host: &Host, record: &Record, bdf: &str, driver: &str) -> bool {
    let node = host.node.clone();
    let current = driver_of(&host.sysfs, bdf);
    if !host.sysfs.join("bus/pci/devices").join(bdf).exists() {
        let reason = format!("PCI device {bdf} does not exist");
        record.push(Action::BindFailed { node, reason });
        return false;
    }
    if current.as_deref() == Some(driver) {
        record.push(Action::AlreadyBound {
            node,
            bdf: bdf.into(),
        });
        return true;
    }
    let dev = PathBuf::from("bus/pci/devices").join(bdf);
    let mut steps: Vec<(PathBuf, String)> = Vec::new();
    if let Some(cur) = &current {
        steps.push((
            PathBuf::from("bus/pci/drivers").join(cur).join("unbind"),
            bdf.into(),
        ));
    }
    steps.push((dev.join("driver_override"), driver.into()));
    steps.push((
        PathBuf::from("bus/pci/drivers").join(driver).join("bind"),
        bdf.into(),
    ));
    steps.push((dev.join("driver_override"), String::new()));
    for (path, value) in steps {
        if let Err(e) = host.kernel.write_attr(&path, &value) {
            let reason = format!("dpdk-devbind.py failed: {}: {e}", path.display());
            record.push(Action::BindFailed { node, reason });
            return false;
        }
    }
    record.push(Action::Bind {
        node,
        bdf: bdf.into(),
        driver: driver.into(),
    });
    true
}

/// `dpdk-devbind.py --unbind`. Returns whether the device is unbound now.
pub fn unbind(host: &Host, record: &Record, bdf: &str) -> bool {
    let Some(cur) = driver_of(&host.sysfs, bdf) else {
        return true;
    };
    let path = PathBuf::from("bus/pci/drivers").join(cur).join("unbind");
    match host.kernel.write_attr(&path, bdf) {
        Ok(()) => {
            record.push(Action::Unbind {
                node: host.node.clone(),
                bdf: bdf.into(),
            });
            true
        }
        Err(e) => {
            warn!(bdf, error = %e, "dpdk-devbind.py --unbind failed");
            false
        }
    }
}
