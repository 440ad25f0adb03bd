//! The SR-IOV device plugin config rewrite and the device-plugin pod deletions, as of v1.3.8.
//!
//! Models (upstream paths):
//! - `pkg/eni-manager/sriov/manager.go` `ApplyBatchUpdatesWithChangeDetection`: load
//!   `config.json` (or start empty), add each resource's PCI address, and save only when the
//!   content changed; `SaveConfig` writes the file in place (truncate, then write: not
//!   atomic);
//! - `pkg/eni-manager/dpdk/coordinator.go` `applyBatchedSRIOVUpdates`: a changed config
//!   restarts the device plugin;
//! - `sriov/manager.go` `restartDevicePluginPods`: in each namespace of [`NAMESPACES`], the
//!   pods on this node (`spec.nodeName`) matching the first of [`SELECTORS`] that finds any
//!   are deleted with grace period 0; it stops at the first namespace where it deleted one.

use std::io::Write as _;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::Action;
use super::eni_manager::EniManager;

/// Where upstream looks for device-plugin pods, in order.
pub const NAMESPACES: [&str; 5] = [
    "kube-system",
    "sriov-network-operator",
    "openshift-sriov-network-operator",
    "intel-device-plugins-operator",
    "default",
];

/// The label selectors it tries, in order (the first is the seed's DaemonSet label).
pub const SELECTORS: [&str; 4] = [
    "app=sriov-device-plugin",
    "app=kube-sriov-device-plugin",
    "name=sriov-device-plugin",
    "component=sriov-device-plugin",
];

/// One `ResourceUpdate` with `Action: "add"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceUpdate {
    pub pci_address: String,
    pub driver: String,
    pub resource_name: String,
    pub resource_prefix: String,
}

impl ResourceUpdate {
    /// `collectSRIOVUpdate`: `prefix/name` is split at the first `/`.
    pub fn new(pci: &str, resource: &str, driver: &str) -> Self {
        let (prefix, name) = resource.split_once('/').unwrap_or(("", resource));
        Self {
            pci_address: pci.into(),
            driver: driver.into(),
            resource_name: name.into(),
            resource_prefix: prefix.into(),
        }
    }
}

/// `ModernSRIOVDPConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub resource_list: Vec<Resource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub resource_prefix: String,
    pub resource_name: String,
    pub selectors: Vec<Selector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drivers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci_addresses: Vec<String>,
}

/// `applyAddUpdate`: the resource gets the address (and the driver) once.
pub fn add(config: &mut Config, u: &ResourceUpdate) {
    let pos = config
        .resource_list
        .iter()
        .position(|r| r.resource_name == u.resource_name && r.resource_prefix == u.resource_prefix);
    let r = match pos {
        Some(i) => &mut config.resource_list[i],
        None => {
            config.resource_list.push(Resource {
                resource_prefix: u.resource_prefix.clone(),
                resource_name: u.resource_name.clone(),
                selectors: vec![Selector::default()],
            });
            config.resource_list.last_mut().expect("just pushed")
        }
    };
    if r.selectors.is_empty() {
        r.selectors.push(Selector::default());
    }
    let s = &mut r.selectors[0];
    if !s.pci_addresses.contains(&u.pci_address) {
        s.pci_addresses.push(u.pci_address.clone());
    }
    if !s.drivers.contains(&u.driver) {
        s.drivers.push(u.driver.clone());
    }
}

/// Applies `updates`; when the file changed, deletes the node's device-plugin pods.
pub async fn apply_and_restart(m: &EniManager, updates: Vec<ResourceUpdate>) {
    let path = &m.pcidp_config;
    let before: Config = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut after = before.clone();
    for u in &updates {
        add(&mut after, u);
    }
    if after == before {
        return;
    }
    let body = serde_json::to_vec_pretty(&after).unwrap_or_default();
    let written = std::fs::File::create(path).and_then(|mut f| f.write_all(&body));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "failed to save SR-IOV config");
        return;
    }
    m.record.push(Action::ConfigWritten {
        node: m.host.node.clone(),
        path: path.clone(),
    });
    restart_device_plugin_pods(m).await;
}

/// `restartDevicePluginPods`.
async fn restart_device_plugin_pods(m: &EniManager) {
    let node = &m.host.node;
    let mut deleted = 0;
    for ns in NAMESPACES {
        let api: Api<Pod> = Api::namespaced(m.client.clone(), ns);
        for sel in SELECTORS {
            let lp = ListParams::default()
                .labels(sel)
                .fields(&format!("spec.nodeName={node}"));
            let pods = match api.list(&lp).await {
                Ok(p) => p.items,
                Err(e) => {
                    warn!(namespace = ns, selector = sel, error = %e, "listing device-plugin pods failed");
                    continue;
                }
            };
            if pods.is_empty() {
                continue;
            }
            for pod in pods {
                let name = pod.metadata.name.unwrap_or_default();
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => {
                        deleted += 1;
                        m.record.push(Action::PodDeleted {
                            node: node.clone(),
                            namespace: ns.into(),
                            name,
                            grace_seconds: 0,
                        });
                    }
                    Err(e) => warn!(pod = %name, error = %e, "deleting a device-plugin pod failed"),
                }
            }
            break;
        }
        if deleted > 0 {
            break;
        }
    }
    if deleted == 0 {
        warn!("no SR-IOV device plugin pods found in any namespace");
    }
}
