//! `run` (the container `monitor`): follow this node's DPDKNodeState and keep the node
//! converged on it.
//!
//! One task follows the object (get, then watch with `metadata.name=<node>`: the agent needs
//! only `get` and `watch` on DPDKNodeStates). The loop syncs on every change, on a resync
//! timer, and sooner while something is pending. A sync:
//! 1. keeps the modules loaded (reloading them if they went away);
//! 2. maps each desired device to a PCI address;
//! 3. converges the devices through the journal ([`crate::reconcile`]);
//! 4. reports `DPDKNodeState.status` (only when it changed) and the NodeENI attachments
//!    (only the ones whose fields changed).
//!
//! On shutdown it just stops: devices stay bound, so a rolling upgrade never disturbs DPDK
//! pods. Restores happen only when the spec says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::api::{DPDKNodeState, DPDKNodeStateSpec, DeviceStatus, DpdkDriver, ModuleStatus};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::commands::{HostArgs, ModuleArgs, module_configs};
use crate::error::Error;
use crate::journal::Journal;
use crate::kernel::Kernel;
use crate::mapping::{self, Imds};
use crate::modules::{self, ModuleHost};
use crate::reconcile::{self, NodeContext, Target, health};
use crate::report::{self, AttachmentFields, SyncOutcome};
use crate::safety::{self, SafetyPolicy};
use crate::sysfs::Sysfs;

/// Flags of `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub modules: ModuleArgs,
    /// This node's name: the DPDKNodeState to follow and the nodeID of its attachments.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The node's InternalIP(s) (downward API status.hostIPs): interfaces holding one are refused.
    #[arg(long = "node-ip", env = "NODE_IP", value_delimiter = ',')]
    pub node_ips: Vec<IpAddr>,
    /// IMDS endpoint for ENI → MAC mapping and the primary-MAC check ("none" to disable).
    #[arg(long, env = "DPDK_IMDS_ENDPOINT", default_value = mapping::DEFAULT_IMDS_ENDPOINT)]
    pub imds_endpoint: String,
    /// The kubelet's PodResources socket (devices pods hold are not unbound).
    #[arg(long, default_value = crate::podresources::DEFAULT_SOCKET)]
    pub pod_resources_socket: PathBuf,
    /// Full resync period (a Go duration: 500ms, 30s, 1m30s).
    #[arg(long, default_value = "30s", value_parser = dpdk_bridge::duration::parse)]
    pub resync: Duration,
    /// Retry period while something is pending or failed (a Go duration: 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = dpdk_bridge::duration::parse)]
    pub retry: Duration,
}

/// Everything a running agent uses; the CLI builds the real one, tests a fake one.
pub struct Agent {
    pub node: String,
    pub client: Client,
    pub sysfs: Sysfs,
    pub kernel: Arc<dyn Kernel>,
    pub host: HostArgs,
    pub module_args: ModuleArgs,
    pub release: String,
    pub imds: Option<Imds>,
    pub pod_resources_socket: Option<PathBuf>,
    pub node_ips: Vec<IpAddr>,
    pub resync: Duration,
    pub retry: Duration,
}

/// Entry point of `run`.
pub fn run_main(args: RunArgs) -> ExitCode {
    let Some(rt) = crate::runtime::build(crate::runtime::Flavor::MultiThread { workers: Some(2) })
    else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async move {
        let client = Client::try_default().await?;
        let release = args.host.release()?;
        let imds = match args.imds_endpoint.as_str() {
            "none" | "" => None,
            url => Some(Imds::new(url)?),
        };
        let agent = Agent {
            node: args.node_name.clone(),
            client,
            sysfs: args.host.sysfs(),
            kernel: Arc::new(args.host.kernel()),
            host: args.host.clone(),
            module_args: args.modules.clone(),
            release,
            imds,
            pod_resources_socket: Some(args.pod_resources_socket.clone()),
            node_ips: args.node_ips.clone(),
            resync: args.resync,
            retry: args.retry,
        };
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            dpdk_bridge::signals::shutdown().await;
            info!(
                "shutting down; devices stay bound (a rolling upgrade must not disturb DPDK pods)"
            );
            signal.cancel();
        });
        agent.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "run failed");
            ExitCode::FAILURE
        }
    }
}

/// What the loop remembers between syncs.
#[derive(Default)]
struct Memory {
    primary_mac: Option<Option<String>>,
    labelled: bool,
    /// The module notes of the last pass, so each is logged once, not on every sync.
    notes: Vec<String>,
}

/// The notes in `now` that `last` did not have; `last` becomes `now`.
fn new_notes(last: &mut Vec<String>, now: Vec<String>) -> Vec<String> {
    let fresh = now.iter().filter(|n| !last.contains(n)).cloned().collect();
    *last = now;
    fresh
}

impl Agent {
    /// Runs until `shutdown`. Never unbinds on the way out.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let span = info_span!("agent", node = %self.node);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut journal = Journal::open(&self.host.state_dir)?;
        {
            let network = safety::read_host_network(&self.host.proc_root).unwrap_or_default();
            let policy = SafetyPolicy::default();
            let ctx = self.context(&network, &policy, None);
            for e in reconcile::recover(&ctx, &mut journal) {
                warn!(error = %e, "could not finish an interrupted operation from the journal");
            }
        }
        let (tx, mut rx) = watch::channel::<Option<Option<DPDKNodeState>>>(None);
        let follower = tokio::spawn(follow(
            Api::all(self.client.clone()),
            self.node.clone(),
            tx,
            shutdown.clone(),
        ));
        let mut memory = Memory::default();
        let mut next = self.resync;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(next) => {},
            }
            let Some(state) = rx.borrow_and_update().clone() else {
                continue;
            };
            let pending = match self.sync(&mut journal, state.as_ref(), &mut memory).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "sync failed; retrying");
                    true
                }
            };
            next = if pending { self.retry } else { self.resync };
        }
        follower.abort();
        Ok(())
    }

    fn context<'a>(
        &'a self,
        network: &'a safety::HostNetwork,
        policy: &'a SafetyPolicy,
        in_use: Option<&'a BTreeSet<String>>,
    ) -> NodeContext<'a> {
        NodeContext {
            sysfs: &self.sysfs,
            dev_root: &self.host.dev_root,
            kernel: self.kernel.as_ref(),
            network,
            policy,
            in_use,
        }
    }

    /// One pass. Returns whether something is left to retry soon.
    async fn sync(
        &self,
        journal: &mut Journal,
        state: Option<&DPDKNodeState>,
        memory: &mut Memory,
    ) -> Result<bool, Error> {
        let empty = DPDKNodeStateSpec::default();
        let spec = state.map(|s| &s.spec).unwrap_or(&empty);
        let mut outcome = SyncOutcome::default();

        // 1. Modules, for every driver the spec uses (vfio-pci when it names none).
        let (modules_status, module_error, notes) = self.ensure_modules(spec);
        for note in new_notes(&mut memory.notes, notes) {
            warn!("{note}");
        }
        outcome.modules = modules_status;
        outcome.module_error = module_error;
        if outcome.module_error.is_none() && !memory.labelled {
            match report::label_ready(&self.client, &self.node).await {
                Ok(()) => memory.labelled = true,
                Err(e) => warn!(error = %e, "could not label the node ready"),
            }
        }

        // 2. ENI → PCI.
        let mut targets: Vec<Target> = Vec::new();
        let mut unresolved: Vec<DeviceStatus> = Vec::new();
        for d in &spec.devices {
            match mapping::resolve(d, &self.sysfs, journal, self.imds.as_ref()).await {
                Ok(t) => targets.push(t),
                Err(e) => {
                    let waiting = matches!(e, Error::Mapping { .. });
                    unresolved.push(DeviceStatus {
                        device_index: d.device_index,
                        pci_address: d.pci_address.clone(),
                        resource_name: Some(d.resource_name.clone()),
                        health: Some(
                            if waiting {
                                health::PENDING
                            } else {
                                health::UNHEALTHY
                            }
                            .to_string(),
                        ),
                        message: Some(e.to_string()),
                        ..Default::default()
                    });
                    if !waiting {
                        outcome.errors.push(e.to_string());
                    }
                }
            }
        }

        // 3. Converge.
        let network = safety::read_host_network(&self.host.proc_root)?;
        let mut policy = SafetyPolicy {
            node_ips: self.node_ips.clone(),
            ..Default::default()
        };
        if let Some(mac) = self.primary_mac(memory).await {
            policy.primary_macs.insert(mac);
        }
        let in_use = match &self.pod_resources_socket {
            Some(sock) => match crate::podresources::list_in_use(sock).await {
                Ok(u) => u,
                Err(e) => {
                    // Reachable but failing: hold every restore rather than risk a pod's device.
                    warn!(error = %e, "PodResources failed; holding restores this pass");
                    Some(journal.entries().map(|e| e.address.to_string()).collect())
                }
            },
            None => None,
        };
        let before: BTreeMap<String, (Option<String>, i32)> = journal
            .entries()
            .map(|e| (e.address.to_string(), (e.node_eni.clone(), e.device_index)))
            .collect();
        let report = reconcile::converge(
            &self.context(&network, &policy, in_use.as_ref()),
            journal,
            &targets,
        );
        let after: BTreeSet<String> = journal.entries().map(|e| e.address.to_string()).collect();
        let pending = report.pending
            || !unresolved.is_empty()
            || !report.errors.is_empty()
            || outcome.module_error.is_some();
        outcome.errors.extend(report.errors.iter().cloned());
        outcome.devices = report.devices.clone();
        outcome.devices.extend(unresolved);
        outcome.devices.sort_by_key(|d| d.device_index);

        // 4. Report.
        let generation = state.and_then(|s| s.metadata.generation);
        if let Some(state) = state {
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let status = report::build_status(state.status.as_ref(), generation, &outcome, &now);
            if report::status_changed(state.status.as_ref(), &status) {
                report::apply_status(&self.client, &self.node, &status).await?;
                info!(sync = ?status.sync_status, bound = status.bound_devices, "reported status");
            }
        }
        let eni_of: BTreeMap<i32, &str> = spec
            .devices
            .iter()
            .map(|d| (d.device_index, d.node_eni.as_str()))
            .collect();
        let mut wanted: Vec<((String, i32), AttachmentFields)> = outcome
            .devices
            .iter()
            .filter(|d| d.health.as_deref() != Some(health::IN_USE))
            .filter_map(|d| {
                eni_of.get(&d.device_index).map(|eni| {
                    (
                        (eni.to_string(), d.device_index),
                        AttachmentFields::from_device(d),
                    )
                })
            })
            .collect();
        for (addr, (eni, idx)) in &before {
            if !after.contains(addr)
                && let Some(eni) = eni
            {
                wanted.push(((eni.clone(), *idx), AttachmentFields::cleared()));
            }
        }
        // Read and compare every pass (the ENI controller may have rewritten the element);
        // write only what differs.
        for ((eni, idx), fields) in wanted {
            match report::report_attachment(&self.client, &eni, &self.node, idx, &fields).await {
                Ok(wrote) => {
                    debug!(nodeeni = %eni, device_index = idx, wrote, "attachment reported")
                }
                Err(e) => {
                    warn!(nodeeni = %eni, device_index = idx, error = %e, "could not report the attachment; will retry")
                }
            }
        }
        Ok(pending)
    }

    fn ensure_modules(
        &self,
        spec: &DPDKNodeStateSpec,
    ) -> (Option<ModuleStatus>, Option<String>, Vec<String>) {
        let host = ModuleHost {
            sysfs: &self.sysfs,
            kernel: self.kernel.as_ref(),
            host_root: &self.host.host_root,
            release: &self.release,
        };
        let (mut status, mut notes) = (None, Vec::new());
        for cfg in module_configs(&self.module_args, Some(spec)) {
            match modules::ensure_loaded(&host, &cfg) {
                Ok(r) => {
                    notes.extend(r.notes);
                    if !r.loaded.is_empty() {
                        info!(modules = ?r.loaded, "loaded kernel modules (they were missing)");
                    }
                    // The vfio-pci view is the one the status shows when several drivers are used.
                    if status.is_none() || cfg.driver == DpdkDriver::VfioPci {
                        status = Some(r.status);
                    }
                }
                Err(e) => return (status, Some(e.to_string()), notes),
            }
        }
        (status, None, notes)
    }

    async fn primary_mac(&self, memory: &mut Memory) -> Option<String> {
        if let Some(known) = &memory.primary_mac {
            return known.clone();
        }
        let imds = self.imds.as_ref()?;
        match imds.primary_mac().await {
            Ok(mac) => {
                memory.primary_mac = Some(mac.clone());
                mac
            }
            Err(e) => {
                warn!(error = %e, "IMDS: no primary MAC (the route and InternalIP checks still apply)");
                None
            }
        }
    }
}

/// Follows one DPDKNodeState: `Some(None)` while it does not exist.
async fn follow(
    api: Api<DPDKNodeState>,
    node: String,
    tx: watch::Sender<Option<Option<DPDKNodeState>>>,
    shutdown: CancellationToken,
) {
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={node}"))
        .timeout(290);
    while !shutdown.is_cancelled() {
        let current = match api.get_opt(&node).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "reading the DPDKNodeState failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let rv = current
            .as_ref()
            .and_then(|c| c.metadata.resource_version.clone())
            .unwrap_or_else(|| "0".into());
        if tx.send(Some(current)).is_err() {
            return;
        }
        let stream = match api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "watching the DPDKNodeState failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut stream = stream.boxed();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.try_next() => ev,
            };
            match ev {
                Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    if tx.send(Some(Some(o))).is_err() {
                        return;
                    }
                }
                Ok(Some(WatchEvent::Deleted(_))) => {
                    if tx.send(Some(None)).is_err() {
                        return;
                    }
                }
                Ok(Some(WatchEvent::Bookmark(_))) => {}
                // 410 Gone and friends: start over with a fresh get.
                Ok(Some(WatchEvent::Error(e))) => {
                    debug!(code = e.code, "watch error; re-reading");
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::new_notes;

    #[test]
    fn a_module_note_is_logged_once_until_it_goes_away() {
        let wc = "write-combining requested but unavailable: mainline vfio-pci".to_string();
        let mut last = Vec::new();
        assert_eq!(new_notes(&mut last, vec![wc.clone()]), vec![wc.clone()]);
        // Every later sync verifies again and sees the same note: nothing new to log.
        assert!(new_notes(&mut last, vec![wc.clone()]).is_empty());
        assert!(new_notes(&mut last, vec![wc.clone()]).is_empty());
        // Gone (the config stopped asking), then back: logged again.
        assert!(new_notes(&mut last, Vec::new()).is_empty());
        assert_eq!(new_notes(&mut last, vec![wc.clone()]), vec![wc]);
    }
}
