//! The DPDK controller's planner: a pure function from what the cluster holds
//! (DPDKConfigs, Nodes, NodeENIs, DPDKNodeStates) to the writes that bring it to the
//! desired state, the conflicts that block some of them, and the DPDKConfig statuses.
//!
//! It does no I/O. The runtime (dpdk-reconciler's controller) feeds it snapshots of its
//! caches and executes [`Plan::writes`] in [`Write::stage`] order. Every write is
//! decided by comparing the desired state with the observed one, so a snapshot that is
//! already converged plans nothing.
//!
//! Rules (docs/controller.md has the user-facing version):
//! - A node matches a config when its labels contain the whole `nodeSelector`.
//! - The target NodeENI for mapping `deviceIndex = d` on node N is the NodeENI whose
//!   selector matches N and whose attachment for N has `deviceIndex == d`; without an
//!   attachment for N, its `spec.deviceIndex` (+i for the i-th subnet).
//! - Conflicts never overwrite the other party: two configs on the same node+index (the
//!   older wins, by creationTimestamp then name), a NodeENI selector reaching nodes
//!   outside the config's selector, a partly mapped multi-subnet NodeENI, and a field
//!   another manager owns with a different value (unless `force_conflicts`).
//! - Teardown has two phases: first the node's DPDKNodeState loses the devices; only
//!   when the agent reports them restored (or, for a node whose agent never reported,
//!   after the teardown timeout) are NodeENI fields released, then the node label, then
//!   the agent's `ready` label removed, then the DPDKNodeState deleted. Each step is
//!   planned only once the previous one is observed, so the order holds across restarts
//!   and leader changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    ConfigConflict, DPDKConfig, DPDKConfigStatus, DPDKNodeState, DPDKNodeStateSpec, DesiredDevice,
    DpdkDriver, EffectiveDriverOptions, NodeENI, SyncStatus,
};
use crate::conditions::{self, Health};
use crate::labels::{
    AGENT_MANAGER, CONFIG_FINALIZER, CONTROLLER_MANAGER, NODE_ENABLED_LABEL, NODE_READY_LABEL,
    REVISION_ANNOTATION,
};
use crate::ssa::{self, DpdkFields};

/// Annotation on a DPDKNodeState: when the controller last removed devices from its
/// spec (RFC 3339). The no-agent teardown timeout counts from here.
pub const TEARDOWN_SINCE_ANNOTATION: &str = "dpdk.aws.k8s/teardown-since";

/// At most this many conflicts are listed in a DPDKConfig's status; the Stalled
/// condition's message gives the total.
pub const MAX_STATUS_CONFLICTS: usize = 50;

/// Conflict reasons, as they appear in `status.conflicts[].reason` and event reasons.
pub mod reason {
    pub const OVERLAPPING_CONFIG: &str = "OverlappingConfig";
    pub const SELECTOR_REACHES_UNMATCHED_NODES: &str = "SelectorReachesUnmatchedNodes";
    pub const PARTIAL_MULTI_SUBNET: &str = "PartialMultiSubnet";
    pub const FIELD_MANAGER_CONFLICT: &str = "FieldManagerConflict";
    /// Warning event: the config uses the seed guide's misspelt `writeCombing`.
    pub const DEPRECATED_WRITE_COMBING: &str = "DeprecatedWriteCombing";
    /// Warning event: a node's teardown finished after the timeout, without an agent.
    pub const TEARDOWN_WITHOUT_AGENT: &str = "TeardownWithoutAgent";
}

/// Knobs of the planner.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Apply over other field managers' values (`--force-conflicts`).
    pub force_conflicts: bool,
    /// How long a node whose agent never reported may hold up teardown.
    pub teardown_timeout: Duration,
    /// True when the snapshot holds every DPDKConfig in the cluster. Then objects the
    /// controller owns that no config explains are torn down. False when the controller
    /// is sharded (`--config-selector`): it only touches nodes its configs select or
    /// whose DPDKNodeState names one of its configs.
    pub cluster_scope: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            force_conflicts: false,
            teardown_timeout: Duration::from_secs(300),
            cluster_scope: true,
        }
    }
}

/// Kinds of objects the controller writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    NodeEni,
    NodeState,
    Config,
}

/// An apply conflict the API server returned (HTTP 409) for an object at a resourceVersion.
/// The planner treats it as a field-manager conflict until the object changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConflict {
    pub kind: Kind,
    pub name: String,
    pub resource_version: String,
    pub conflicts: Vec<ssa::FieldConflict>,
}

/// What the planner reads.
#[derive(Default)]
pub struct Snapshot<'a> {
    /// The DPDKConfigs this controller is responsible for (all of them in cluster scope).
    pub configs: Vec<&'a DPDKConfig>,
    /// Node metadata (labels, uid, managedFields).
    pub nodes: Vec<&'a ObjectMeta>,
    pub node_enis: Vec<&'a NodeENI>,
    pub node_states: Vec<&'a DPDKNodeState>,
    pub server_conflicts: Vec<&'a ServerConflict>,
}

/// One write. The runtime runs them in [`Write::stage`] order.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// SSA `metadata.finalizers: [dpdk.aws.k8s/teardown]` on a DPDKConfig.
    AddFinalizer { config: String },
    /// SSA the DPDKNodeState's spec (created when missing).
    ApplyNodeState {
        node: String,
        spec: DPDKNodeStateSpec,
        teardown_since: Option<String>,
    },
    /// SSA the `dpdk.aws.k8s/enabled=true` label.
    SetNodeLabel {
        node: String,
        uid: String,
        force: bool,
    },
    /// SSA enableDPDK/dpdkDriver/dpdkResourceName.
    ApplyNodeEni {
        name: String,
        uid: String,
        fields: DpdkFields,
        force: bool,
    },
    /// SSA without the DPDK fields: releases the controller's ownership.
    ReleaseNodeEni { name: String, uid: String },
    /// SSA without the label: releases the controller's ownership.
    ReleaseNodeLabel { node: String, uid: String },
    /// Remove the node agent's `dpdk.aws.k8s/ready=true` label at the end of a teardown
    /// (JSON patch guarded by the UID and the value), so the device plugin leaves too.
    RemoveReadyLabel { node: String, uid: String },
    /// Delete the DPDKNodeState (UID precondition).
    DeleteNodeState { node: String, uid: String },
    /// SSA the DPDKConfig status subresource.
    ConfigStatus {
        config: String,
        status: DPDKConfigStatus,
    },
    /// Drop the finalizer: by SSA when the controller owns it, else by JSON patch.
    RemoveFinalizer {
        config: String,
        uid: String,
        owned: bool,
    },
}

impl Write {
    /// Execution order: finalizers first, then node state, label and NodeENI setup,
    /// then teardown steps, statuses, and finalizer removal last.
    pub fn stage(&self) -> u8 {
        match self {
            Write::AddFinalizer { .. } => 0,
            Write::ApplyNodeState { .. } => 1,
            Write::SetNodeLabel { .. } => 2,
            Write::ApplyNodeEni { .. } => 3,
            Write::ReleaseNodeEni { .. } => 4,
            Write::ReleaseNodeLabel { .. } => 5,
            Write::RemoveReadyLabel { .. } => 6,
            Write::DeleteNodeState { .. } => 7,
            Write::ConfigStatus { .. } => 8,
            Write::RemoveFinalizer { .. } => 9,
        }
    }

    /// The object written.
    pub fn target(&self) -> (Kind, &str) {
        match self {
            Write::AddFinalizer { config }
            | Write::RemoveFinalizer { config, .. }
            | Write::ConfigStatus { config, .. } => (Kind::Config, config),
            Write::ApplyNodeState { node, .. } | Write::DeleteNodeState { node, .. } => {
                (Kind::NodeState, node)
            }
            Write::SetNodeLabel { node, .. }
            | Write::ReleaseNodeLabel { node, .. }
            | Write::RemoveReadyLabel { node, .. } => (Kind::Node, node),
            Write::ApplyNodeEni { name, .. } | Write::ReleaseNodeEni { name, .. } => {
                (Kind::NodeEni, name)
            }
        }
    }

    /// A short verb for logs and metrics.
    pub fn op(&self) -> &'static str {
        match self {
            Write::AddFinalizer { .. } => "add_finalizer",
            Write::ApplyNodeState { .. } => "apply",
            Write::SetNodeLabel { .. } => "label",
            Write::ApplyNodeEni { .. } => "apply",
            Write::ReleaseNodeEni { .. } => "release",
            Write::ReleaseNodeLabel { .. } => "unlabel",
            Write::RemoveReadyLabel { .. } => "unready",
            Write::DeleteNodeState { .. } => "delete",
            Write::ConfigStatus { .. } => "status",
            Write::RemoveFinalizer { .. } => "remove_finalizer",
        }
    }
}

/// A Kubernetes Event to publish on a DPDKConfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub config: String,
    pub config_uid: Option<String>,
    pub warning: bool,
    pub reason: String,
    pub note: String,
    /// Publish only when the write to this object succeeded in the same pass, so a
    /// failed or skipped write does not repeat the event.
    pub after: Option<(Kind, String)>,
}

/// Counts for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub configs_ready: usize,
    pub configs_reconciling: usize,
    pub configs_stalled: usize,
    pub nodes_matched: usize,
    pub nodes_ready: usize,
    pub nodes_tearing_down: usize,
    pub node_enis_driven: usize,
    pub node_enis_conflicted: usize,
    pub node_enis_releasing: usize,
    pub conflicts: BTreeMap<String, usize>,
}

/// The planner's answer.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Writes in stage order.
    pub writes: Vec<Write>,
    pub events: Vec<PlannedEvent>,
    /// Plan again after this long even without a change (teardown timeouts).
    pub requeue_after: Option<Duration>,
    pub stats: Stats,
}

/// The config age order: creationTimestamp, then name.
fn age_key(c: &DPDKConfig) -> (Option<Timestamp>, &str) {
    (
        c.metadata.creation_timestamp.as_ref().map(|t| t.0),
        c.metadata.name.as_deref().unwrap_or(""),
    )
}

fn name_of(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn effective_options(c: &DPDKConfig) -> EffectiveDriverOptions {
    EffectiveDriverOptions {
        enable_unsafe_no_iommu: c.spec.driver_options.enable_unsafe_no_iommu,
        write_combining: c.spec.driver_options.effective_write_combining(),
    }
}

fn has_finalizer(m: &ObjectMeta) -> bool {
    m.finalizers.iter().flatten().any(|f| f == CONFIG_FINALIZER)
}

fn finalizer_path() -> [String; 3] {
    [
        "f:metadata".to_string(),
        "f:finalizers".to_string(),
        format!("v:\"{CONFIG_FINALIZER}\""),
    ]
}

fn list_names(names: &[&str], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(" and {} more", names.len() - max));
    }
    s
}

/// Whether a node's agent has finished with what the spec asks, for teardown gating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    Yes,
    /// The agent never reported and the timeout passed.
    TimedOut,
    /// Not yet; `Some(deadline)` when the timeout will settle it.
    No(Option<Timestamp>),
}

/// One device index a node is asked for, after overlap resolution.
struct Claim {
    device_index: i32,
    resource_name: String,
    driver: DpdkDriver,
    /// Configs asking for exactly this, oldest first.
    configs: Vec<usize>,
    /// The NodeENI and the ENI ID of the attachment, when found.
    target: Option<(usize, Option<String>)>,
    /// Dropped because another config won the NodeENI.
    dropped: bool,
}

struct NodeWork {
    node: usize,
    configs: Vec<usize>,
    options: EffectiveDriverOptions,
    claims: Vec<Claim>,
}

struct Ctx<'s, 'a> {
    snap: &'s Snapshot<'a>,
    settings: &'s Settings,
    now: Timestamp,
    configs: Vec<&'a DPDKConfig>,
    live: Vec<bool>,
    node_by_name: HashMap<&'a str, usize>,
    node_by_label: HashMap<(&'a str, &'a str), Vec<usize>>,
    eni_by_pair: HashMap<(&'a str, &'a str), Vec<usize>>,
    eni_match_all: Vec<usize>,
    states: HashMap<&'a str, &'a DPDKNodeState>,
    conflicts: Vec<Vec<ConfigConflict>>,
    plan: Plan,
    requeue: Option<Timestamp>,
}

/// Plans one pass. `now` is used for the teardown clock and condition times only.
pub fn plan(snap: &Snapshot<'_>, settings: &Settings, now: Timestamp) -> Plan {
    let mut configs = snap.configs.clone();
    configs.sort_by(|a, b| age_key(a).cmp(&age_key(b)));
    let live: Vec<bool> = configs
        .iter()
        .map(|c| c.metadata.deletion_timestamp.is_none())
        .collect();

    let mut node_by_name = HashMap::new();
    let mut node_by_label: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, n) in snap.nodes.iter().enumerate() {
        node_by_name.insert(name_of(n), i);
        for (k, v) in n.labels.iter().flatten() {
            node_by_label
                .entry((k.as_str(), v.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut eni_by_pair: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    let mut eni_match_all = Vec::new();
    for (i, e) in snap.node_enis.iter().enumerate() {
        // Indexed under one selector pair; candidates are verified against the whole selector.
        match e.spec.node_selector.iter().next() {
            Some((k, v)) => eni_by_pair
                .entry((k.as_str(), v.as_str()))
                .or_default()
                .push(i),
            None => eni_match_all.push(i),
        }
    }
    let states = snap
        .node_states
        .iter()
        .map(|s| (name_of(&s.metadata), *s))
        .collect();
    let n_configs = configs.len();
    let mut ctx = Ctx {
        snap,
        settings,
        now,
        configs,
        live,
        node_by_name,
        node_by_label,
        eni_by_pair,
        eni_match_all,
        states,
        conflicts: vec![Vec::new(); n_configs],
        plan: Plan::default(),
        requeue: None,
    };
    ctx.run();
    let mut plan = ctx.plan;
    if let Some(at) = ctx.requeue {
        let d = at.duration_since(now);
        plan.requeue_after = Some(
            Duration::try_from(d)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(100)),
        );
    }
    plan.writes.sort_by_key(Write::stage);
    plan
}

impl<'s, 'a> Ctx<'s, 'a> {
    fn node(&self, i: usize) -> &'a ObjectMeta {
        self.snap.nodes[i]
    }

    fn eni(&self, i: usize) -> &'a NodeENI {
        self.snap.node_enis[i]
    }

    fn cname(&self, c: usize) -> &'a str {
        name_of(&self.configs[c].metadata)
    }

    /// Nodes whose labels contain `selector`. An empty selector selects no node here:
    /// the CRD forbids it, and selecting the whole cluster by accident is worse.
    fn select_nodes(&self, selector: &BTreeMap<String, String>) -> Vec<usize> {
        let Some(bucket) = selector
            .iter()
            .map(|(k, v)| self.node_by_label.get(&(k.as_str(), v.as_str())))
            .min_by_key(|b| b.map_or(0, |b| b.len()))
        else {
            return Vec::new();
        };
        bucket
            .map(|b| {
                b.iter()
                    .copied()
                    .filter(|&i| selector_matches(selector, self.node(i).labels.as_ref()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Nodes a NodeENI reaches: its selector's nodes plus nodes it has attachments on.
    fn eni_reach(&self, e: usize) -> BTreeSet<usize> {
        let eni = self.eni(e);
        let mut out: BTreeSet<usize> = if eni.spec.node_selector.is_empty() {
            (0..self.snap.nodes.len()).collect()
        } else {
            self.select_nodes(&eni.spec.node_selector)
                .into_iter()
                .collect()
        };
        for a in eni.status.iter().flat_map(|s| s.attachments.iter()) {
            if let Some(i) = a.node_id.as_deref().and_then(|n| self.node_by_name.get(n)) {
                out.insert(*i);
            }
        }
        out
    }

    /// NodeENIs whose selector matches node `n`, by name.
    fn eni_candidates(&self, n: usize) -> Vec<usize> {
        let node = self.node(n);
        let mut out: Vec<usize> = self.eni_match_all.clone();
        for (k, v) in node.labels.iter().flatten() {
            if let Some(b) = self.eni_by_pair.get(&(k.as_str(), v.as_str())) {
                out.extend(b.iter().copied().filter(|&e| {
                    selector_matches(&self.eni(e).spec.node_selector, node.labels.as_ref())
                }));
            }
        }
        out.sort_by_key(|&e| name_of(&self.eni(e).metadata));
        out.dedup();
        out
    }

    /// The device indexes NodeENI `e` has on node `n`, and whether they come from attachments.
    fn eni_indexes(&self, e: usize, node_name: &str) -> (BTreeSet<i32>, bool) {
        let eni = self.eni(e);
        let att: BTreeSet<i32> = eni
            .status
            .iter()
            .flat_map(|s| s.attachments.iter())
            .filter(|a| a.node_id.as_deref() == Some(node_name))
            .filter_map(|a| a.device_index)
            .collect();
        if !att.is_empty() {
            return (att, true);
        }
        let base = eni.spec.device_index.unwrap_or(1);
        let subnets = match (&eni.spec.subnet_ids, &eni.spec.subnet_names) {
            (Some(ids), _) if !ids.is_empty() => ids.len(),
            (_, Some(names)) if !names.is_empty() => names.len(),
            _ => 1,
        };
        ((0..subnets as i32).map(|i| base + i).collect(), false)
    }

    fn eni_id_for(&self, e: usize, node_name: &str, d: i32) -> Option<String> {
        self.eni(e)
            .status
            .iter()
            .flat_map(|s| s.attachments.iter())
            .find(|a| a.node_id.as_deref() == Some(node_name) && a.device_index == Some(d))
            .and_then(|a| a.eni_id.clone())
    }

    /// The NodeENI a mapping reaches on a node: attachment first, then spec.deviceIndex.
    fn resolve(
        &self,
        candidates: &[usize],
        node_name: &str,
        d: i32,
    ) -> Option<(usize, Option<String>)> {
        let mut spec_hit = None;
        for &e in candidates {
            let (idx, from_att) = self.eni_indexes(e, node_name);
            if idx.contains(&d) {
                if from_att {
                    return Some((e, self.eni_id_for(e, node_name, d)));
                }
                spec_hit.get_or_insert((e, None));
            }
        }
        spec_hit
    }

    fn conflict(&mut self, c: usize, conflict: ConfigConflict) {
        self.conflicts[c].push(conflict);
    }

    fn owned_label(&self, n: usize) -> bool {
        ssa::owned_by(self.node(n), CONTROLLER_MANAGER, &ssa::enabled_label_path())
    }

    /// The node carries the agent's `ready=true` and no `enabled` label at all: nothing
    /// schedules the agent there any more, so its label would only keep the device plugin.
    /// A `ready` label someone else set, or one on a node another party still enables, stays.
    fn stale_ready_label(&self, n: usize) -> bool {
        let meta = self.node(n);
        let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k));
        label(NODE_ENABLED_LABEL).is_none()
            && label(NODE_READY_LABEL).map(String::as_str) == Some("true")
            && ssa::owned_by(meta, AGENT_MANAGER, &ssa::ready_label_path())
    }

    fn owns_any_eni_field(&self, e: usize) -> bool {
        ssa::NODEENI_PATHS
            .iter()
            .any(|p| ssa::owned_by(&self.eni(e).metadata, CONTROLLER_MANAGER, p))
    }

    fn server_conflicts(
        &self,
        kind: Kind,
        name: &str,
        rv: Option<&str>,
    ) -> Vec<&'a ssa::FieldConflict> {
        self.snap
            .server_conflicts
            .iter()
            .filter(|c| c.kind == kind && c.name == name && Some(c.resource_version.as_str()) == rv)
            .flat_map(|c| c.conflicts.iter())
            .collect()
    }

    fn teardown_since(s: &DPDKNodeState) -> Option<Timestamp> {
        s.metadata
            .annotations
            .as_ref()?
            .get(TEARDOWN_SINCE_ANNOTATION)?
            .parse()
            .ok()
    }

    /// Has the agent restored what the spec no longer lists?
    fn settled(&self, s: &DPDKNodeState, node_exists: bool) -> Settled {
        if !node_exists {
            return Settled::Yes;
        }
        let reported = s
            .status
            .as_ref()
            .and_then(|st| st.observed_generation.map(|g| (st, g)));
        match reported {
            Some((st, observed)) => {
                let caught_up = observed >= s.metadata.generation.unwrap_or(0)
                    && st.sync_status == Some(SyncStatus::Succeeded);
                let wanted: HashSet<i32> = s.spec.devices.iter().map(|d| d.device_index).collect();
                let stray = st
                    .devices
                    .iter()
                    .any(|d| d.bound && !wanted.contains(&d.device_index));
                if caught_up && !stray {
                    Settled::Yes
                } else {
                    Settled::No(None)
                }
            }
            None => match Self::teardown_since(s) {
                None => Settled::Yes,
                Some(since) => {
                    let deadline = since
                        .checked_add(
                            k8s_openapi::jiff::SignedDuration::try_from(
                                self.settings.teardown_timeout,
                            )
                            .unwrap_or_default(),
                        )
                        .unwrap_or(since);
                    if deadline <= self.now {
                        Settled::TimedOut
                    } else {
                        Settled::No(Some(deadline))
                    }
                }
            },
        }
    }

    fn wake_at(&mut self, t: Timestamp) {
        self.requeue = Some(self.requeue.map_or(t, |r| r.min(t)));
    }

    #[allow(clippy::needless_range_loop)] // TEMP-LEAD: the planner split replaces this
    fn run(&mut self) {
        let n_configs = self.configs.len();
        // Nodes each live config selects.
        let mut matched: Vec<Vec<usize>> = vec![Vec::new(); n_configs];
        let mut node_configs: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for c in 0..n_configs {
            let nodes = self.select_nodes(&self.configs[c].spec.node_selector);
            if self.live[c] {
                for &n in &nodes {
                    node_configs.entry(n).or_default().push(c);
                }
            }
            matched[c] = nodes;
        }

        // 1. Per matched node: overlap resolution and NodeENI targets.
        let mut works: Vec<NodeWork> = Vec::with_capacity(node_configs.len());
        for (n, cfgs) in &node_configs {
            let (n, cfgs) = (*n, cfgs.clone());
            let node_name = name_of(self.node(n));
            let oldest = cfgs[0];
            let options = effective_options(self.configs[oldest]);
            let mut claims: Vec<Claim> = Vec::new();
            for &c in &cfgs {
                if c != oldest && effective_options(self.configs[c]) != options {
                    let msg = format!(
                        "node {node_name}: driverOptions differ from older DPDKConfig {}; its options apply",
                        self.cname(oldest)
                    );
                    self.conflict(
                        c,
                        ConfigConflict {
                            reason: reason::OVERLAPPING_CONFIG.into(),
                            message: msg,
                            node: Some(node_name.into()),
                            other_config: Some(self.cname(oldest).into()),
                            ..Default::default()
                        },
                    );
                }
                for m in &self.configs[c].spec.resource_mapping {
                    match claims
                        .iter_mut()
                        .find(|cl| cl.device_index == m.device_index)
                    {
                        None => claims.push(Claim {
                            device_index: m.device_index,
                            resource_name: m.resource_name.clone(),
                            driver: m.driver,
                            configs: vec![c],
                            target: None,
                            dropped: false,
                        }),
                        Some(cl)
                            if cl.resource_name == m.resource_name && cl.driver == m.driver =>
                        {
                            cl.configs.push(c)
                        }
                        Some(cl) => {
                            let winner = cl.configs[0];
                            let msg = format!(
                                "node {node_name} deviceIndex {}: older DPDKConfig {} maps it to {} ({}); this config's {} ({}) is not applied",
                                m.device_index,
                                self.cname(winner),
                                cl.resource_name,
                                cl.driver,
                                m.resource_name,
                                m.driver
                            );
                            let other = self.cname(winner).to_string();
                            self.conflict(
                                c,
                                ConfigConflict {
                                    reason: reason::OVERLAPPING_CONFIG.into(),
                                    message: msg,
                                    node: Some(node_name.into()),
                                    device_index: Some(m.device_index),
                                    other_config: Some(other),
                                    ..Default::default()
                                },
                            );
                        }
                    }
                }
            }
            claims.sort_by_key(|cl| cl.device_index);
            let candidates = self.eni_candidates(n);
            for cl in claims.iter_mut() {
                cl.target = self.resolve(&candidates, node_name, cl.device_index);
            }
            works.push(NodeWork {
                node: n,
                configs: cfgs,
                options,
                claims,
            });
        }

        // 2. Per targeted NodeENI: one set of values, reach, multi-subnet, field owners.
        let mut eni_claims: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (w, work) in works.iter().enumerate() {
            for (ci, cl) in work.claims.iter().enumerate() {
                if let Some((e, _)) = cl.target {
                    eni_claims.entry(e).or_default().push((w, ci));
                }
            }
        }
        let mut eni_usable: HashMap<usize, bool> = HashMap::new();
        let mut eni_driven_by: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n_configs];
        for (&e, refs) in &eni_claims {
            let eni_name = name_of(&self.eni(e).metadata).to_string();
            // The oldest config's values win the NodeENI; it has one dpdkResourceName.
            let winner_ref = *refs
                .iter()
                .min_by_key(|(w, ci)| {
                    (
                        works[*w].claims[*ci].configs[0],
                        works[*w].claims[*ci].device_index,
                    )
                })
                .unwrap_or(&refs[0]);
            let (win_res, win_drv, win_cfg) = {
                let cl = &works[winner_ref.0].claims[winner_ref.1];
                (cl.resource_name.clone(), cl.driver, cl.configs[0])
            };
            let mut kept: Vec<(usize, usize)> = Vec::new();
            for &(w, ci) in refs {
                let cl = &works[w].claims[ci];
                if cl.resource_name == win_res && cl.driver == win_drv {
                    kept.push((w, ci));
                    continue;
                }
                let node_name = name_of(self.node(works[w].node)).to_string();
                let (d, res, drv, cfgs) = (
                    cl.device_index,
                    cl.resource_name.clone(),
                    cl.driver,
                    cl.configs.clone(),
                );
                for c in cfgs {
                    let (r, other, msg) = if c == win_cfg {
                        (
                            reason::PARTIAL_MULTI_SUBNET,
                            None,
                            format!(
                                "NodeENI {eni_name} on node {node_name}: deviceIndex {d} is mapped to {res} ({drv}) but another index of the same NodeENI to {win_res} ({win_drv}); a NodeENI has one dpdkResourceName and dpdkDriver"
                            ),
                        )
                    } else {
                        (
                            reason::OVERLAPPING_CONFIG,
                            Some(self.cname(win_cfg).to_string()),
                            format!(
                                "NodeENI {eni_name} (node {node_name} deviceIndex {d}): older DPDKConfig {} sets it to {win_res} ({win_drv}); this config's {res} ({drv}) is not applied",
                                self.cname(win_cfg)
                            ),
                        )
                    };
                    self.conflict(
                        c,
                        ConfigConflict {
                            reason: r.into(),
                            message: msg,
                            node: Some(node_name.clone()),
                            device_index: Some(d),
                            node_eni: Some(eni_name.clone()),
                            other_config: other,
                            ..Default::default()
                        },
                    );
                }
                works[w].claims[ci].dropped = true;
            }
            let claim_configs: BTreeSet<usize> = kept
                .iter()
                .flat_map(|&(w, ci)| works[w].claims[ci].configs.iter().copied())
                .collect();
            let mut blocked = false;

            // Its selector must not reach nodes outside the claiming configs' selectors.
            let inside: HashSet<usize> = claim_configs
                .iter()
                .flat_map(|&c| matched[c].iter().copied())
                .collect();
            let outside: Vec<&str> = self
                .eni_reach(e)
                .into_iter()
                .filter(|n| !inside.contains(n))
                .map(|n| name_of(self.node(n)))
                .collect();
            if !outside.is_empty() {
                blocked = true;
                for &c in &claim_configs {
                    let msg = format!(
                        "NodeENI {eni_name} also selects node(s) outside this config's nodeSelector ({}); enabling DPDK on it would bind them too, so it is not updated",
                        list_names(&outside, 5)
                    );
                    self.conflict(
                        c,
                        ConfigConflict {
                            reason: reason::SELECTOR_REACHES_UNMATCHED_NODES.into(),
                            message: msg,
                            node: Some(outside[0].to_string()),
                            node_eni: Some(eni_name.clone()),
                            ..Default::default()
                        },
                    );
                }
            }

            // A multi-subnet NodeENI must be mapped at every index it has on each node.
            let mut per_node: BTreeMap<usize, (BTreeSet<i32>, BTreeSet<usize>)> = BTreeMap::new();
            for &(w, ci) in &kept {
                let entry = per_node.entry(w).or_default();
                entry.0.insert(works[w].claims[ci].device_index);
                entry.1.extend(works[w].claims[ci].configs.iter().copied());
            }
            for (w, (mapped, cfgs)) in per_node {
                let node_name = name_of(self.node(works[w].node));
                let (has, _) = self.eni_indexes(e, node_name);
                let missing: Vec<String> = has.difference(&mapped).map(|d| d.to_string()).collect();
                if missing.is_empty() {
                    continue;
                }
                blocked = true;
                let has_s: Vec<String> = has.iter().map(|d| d.to_string()).collect();
                let mapped_s: Vec<String> = mapped.iter().map(|d| d.to_string()).collect();
                for c in cfgs {
                    let msg = format!(
                        "NodeENI {eni_name} has ENIs at deviceIndex {} on node {node_name} but only {} is mapped; enabling DPDK on it would also bind deviceIndex {}",
                        has_s.join(","),
                        mapped_s.join(","),
                        missing.join(",")
                    );
                    self.conflict(
                        c,
                        ConfigConflict {
                            reason: reason::PARTIAL_MULTI_SUBNET.into(),
                            message: msg,
                            node: Some(node_name.into()),
                            device_index: mapped.iter().next().copied(),
                            node_eni: Some(eni_name.clone()),
                            ..Default::default()
                        },
                    );
                }
            }

            // Another field manager holding one of our fields with a different value.
            let eni = self.eni(e);
            let desired = DpdkFields {
                driver: win_drv,
                resource_name: win_res.clone(),
            };
            let live_ok = [
                eni.spec.enable_dpdk == Some(true),
                eni.spec.dpdk_driver.as_deref() == Some(win_drv.as_str()),
                eni.spec.dpdk_resource_name.as_deref() == Some(win_res.as_str()),
            ];
            let mut managers: BTreeSet<(String, String)> = BTreeSet::new();
            if !self.settings.force_conflicts {
                for (i, path) in ssa::NODEENI_PATHS.iter().enumerate() {
                    if !live_ok[i] {
                        for m in ssa::other_owners(&eni.metadata, path, CONTROLLER_MANAGER) {
                            managers.insert((m, format!(".spec.{}", &path[1][2..])));
                        }
                    }
                }
                for fc in self.server_conflicts(
                    Kind::NodeEni,
                    &eni_name,
                    eni.metadata.resource_version.as_deref(),
                ) {
                    managers.insert((fc.manager.clone(), fc.field.clone()));
                }
            }
            if !managers.is_empty() {
                blocked = true;
                let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (m, f) in &managers {
                    by_manager.entry(m.as_str()).or_default().push(f.as_str());
                }
                for (m, fields) in by_manager {
                    for &c in &claim_configs {
                        let msg = format!(
                            "NodeENI {eni_name}: field manager {m:?} owns {} with a different value; not overwritten (run with --force-conflicts to take it over)",
                            fields.join(", ")
                        );
                        self.conflict(
                            c,
                            ConfigConflict {
                                reason: reason::FIELD_MANAGER_CONFLICT.into(),
                                message: msg,
                                node_eni: Some(eni_name.clone()),
                                manager: Some(m.to_string()),
                                ..Default::default()
                            },
                        );
                    }
                }
            }

            let in_sync = live_ok.iter().all(|ok| *ok);
            if blocked {
                // Not updated. Devices stay only if the NodeENI already says exactly this.
                eni_usable.insert(e, in_sync);
                self.plan.stats.node_enis_conflicted += 1;
            } else {
                eni_usable.insert(e, true);
                self.plan.stats.node_enis_driven += 1;
                for &c in &claim_configs {
                    eni_driven_by[c].insert(e);
                }
                let owned = ssa::NODEENI_PATHS
                    .iter()
                    .all(|p| ssa::owned_by(&eni.metadata, CONTROLLER_MANAGER, p));
                if !in_sync || !owned {
                    self.plan.writes.push(Write::ApplyNodeEni {
                        name: eni_name.clone(),
                        uid: eni.metadata.uid.clone().unwrap_or_default(),
                        fields: desired,
                        force: self.settings.force_conflicts,
                    });
                }
            }
        }

        // 3. Desired DPDKNodeState spec and label per matched node.
        let mut desired_specs: HashMap<usize, DPDKNodeStateSpec> = HashMap::new();
        for work in &works {
            let n = work.node;
            let meta = self.node(n);
            let node_name = name_of(meta);
            let mut devices: Vec<DesiredDevice> = Vec::new();
            for cl in &work.claims {
                let Some((e, eni_id)) = &cl.target else {
                    continue;
                };
                if cl.dropped || !eni_usable.get(e).copied().unwrap_or(false) {
                    continue;
                }
                devices.push(DesiredDevice {
                    device_index: cl.device_index,
                    node_eni: name_of(&self.eni(*e).metadata).to_string(),
                    eni_id: eni_id.clone(),
                    pci_address: self.eni(*e).spec.dpdk_pci_address.clone(),
                    resource_name: cl.resource_name.clone(),
                    driver: cl.driver,
                });
            }
            let revision = work.configs.iter().find_map(|&c| {
                self.configs[c]
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(REVISION_ANNOTATION)
                    .cloned()
            });
            let spec = DPDKNodeStateSpec {
                driver_options: work.options.clone(),
                devices,
                configs: work
                    .configs
                    .iter()
                    .map(|&c| self.cname(c).to_string())
                    .collect(),
                revision,
            };
            self.apply_state_if_needed(node_name, &spec);
            desired_specs.insert(n, spec);

            // The enabled label.
            let value_ok = meta
                .labels
                .as_ref()
                .and_then(|l| l.get(NODE_ENABLED_LABEL))
                .map(String::as_str)
                == Some("true");
            let mut managers: BTreeSet<String> = BTreeSet::new();
            if !self.settings.force_conflicts {
                if !value_ok {
                    managers.extend(ssa::other_owners(
                        meta,
                        &ssa::enabled_label_path(),
                        CONTROLLER_MANAGER,
                    ));
                }
                for fc in
                    self.server_conflicts(Kind::Node, node_name, meta.resource_version.as_deref())
                {
                    managers.insert(fc.manager.clone());
                }
            }
            if !managers.is_empty() {
                for m in managers {
                    for &c in &work.configs {
                        let msg = format!(
                            "node {node_name}: field manager {m:?} owns label {NODE_ENABLED_LABEL} with a different value; not overwritten (run with --force-conflicts to take it over)"
                        );
                        self.conflict(
                            c,
                            ConfigConflict {
                                reason: reason::FIELD_MANAGER_CONFLICT.into(),
                                message: msg,
                                node: Some(node_name.into()),
                                manager: Some(m.clone()),
                                ..Default::default()
                            },
                        );
                    }
                }
            } else if !value_ok || !self.owned_label(n) {
                self.plan.writes.push(Write::SetNodeLabel {
                    node: node_name.to_string(),
                    uid: meta.uid.clone().unwrap_or_default(),
                    force: self.settings.force_conflicts,
                });
            }
        }
        self.plan.stats.nodes_matched = works.len();

        // Which nodes this controller may tear down.
        let my_configs: HashSet<&str> = (0..n_configs).map(|c| self.cname(c)).collect();
        let mut my_nodes: HashSet<usize> = matched.iter().flatten().copied().collect();
        let state_in_scope = |s: &DPDKNodeState| {
            if self.settings.cluster_scope {
                ssa::has_apply_entry(&s.metadata, CONTROLLER_MANAGER)
            } else {
                s.spec
                    .configs
                    .iter()
                    .any(|c| my_configs.contains(c.as_str()))
            }
        };
        for s in &self.snap.node_states {
            if state_in_scope(s)
                && let Some(&n) = self.node_by_name.get(name_of(&s.metadata))
            {
                my_nodes.insert(n);
            }
        }
        if self.settings.cluster_scope {
            for n in 0..self.snap.nodes.len() {
                if self.owned_label(n) {
                    my_nodes.insert(n);
                }
            }
        }

        // 4. NodeENIs we own that no config wants any more: release once every node
        //    they reach has dropped their devices and the agent confirmed (or timed out).
        let mut pending_release: Vec<(usize, BTreeSet<usize>)> = Vec::new();
        for e in 0..self.snap.node_enis.len() {
            if eni_claims.contains_key(&e) || !self.owns_any_eni_field(e) {
                continue;
            }
            let reach = self.eni_reach(e);
            if !self.settings.cluster_scope && !reach.iter().any(|n| my_nodes.contains(n)) {
                continue;
            }
            let eni_name = name_of(&self.eni(e).metadata).to_string();
            let mut ready = true;
            let mut timed_out_nodes: Vec<&'a DPDKNodeState> = Vec::new();
            for &n in &reach {
                let Some(s) = self.states.get(name_of(self.node(n))).copied() else {
                    continue;
                };
                if s.spec.devices.iter().any(|d| d.node_eni == eni_name) {
                    ready = false;
                    continue;
                }
                match self.settled(s, true) {
                    Settled::Yes => {}
                    Settled::TimedOut => {
                        if node_configs.contains_key(&n) {
                            timed_out_nodes.push(s);
                        }
                    }
                    Settled::No(deadline) => {
                        ready = false;
                        if let Some(t) = deadline {
                            self.wake_at(t);
                        }
                    }
                }
            }
            self.plan.stats.node_enis_releasing += 1;
            pending_release.push((e, reach));
            if ready {
                self.plan.writes.push(Write::ReleaseNodeEni {
                    name: eni_name.clone(),
                    uid: self.eni(e).metadata.uid.clone().unwrap_or_default(),
                });
                for s in timed_out_nodes {
                    let note = format!(
                        "node {}: no node agent ever reported on DPDKNodeState {}; released NodeENI {eni_name} after the {}s teardown timeout without the agent's confirmation",
                        name_of(&s.metadata),
                        name_of(&s.metadata),
                        self.settings.teardown_timeout.as_secs()
                    );
                    let evs: Vec<(String, String)> = s
                        .spec
                        .configs
                        .iter()
                        .map(|c| (c.clone(), note.clone()))
                        .collect();
                    self.push_events_after(&evs, Kind::NodeEni, &eni_name);
                }
            }
        }

        // 5. Nodes no live config selects any more: empty the spec, wait for the agent,
        //    then release the label, remove the agent's ready label, delete the DPDKNodeState.
        let mut teardown_nodes: BTreeSet<&'a str> = BTreeSet::new();
        for &n in &my_nodes {
            if !node_configs.contains_key(&n) {
                teardown_nodes.insert(name_of(self.node(n)));
            }
        }
        for s in &self.snap.node_states {
            let name = name_of(&s.metadata);
            if !self.node_by_name.contains_key(name) && state_in_scope(s) {
                teardown_nodes.insert(name);
            }
        }
        for name in teardown_nodes {
            let n = self.node_by_name.get(name).copied();
            let state = self.states.get(name).copied();
            if state.is_none() && !n.is_some_and(|n| self.owned_label(n)) {
                continue;
            }
            self.plan.stats.nodes_tearing_down += 1;
            if let Some(s) = state
                && n.is_some()
                && !s.spec.devices.is_empty()
            {
                let spec = DPDKNodeStateSpec {
                    devices: Vec::new(),
                    ..s.spec.clone()
                };
                self.plan.writes.push(Write::ApplyNodeState {
                    node: name.to_string(),
                    spec,
                    teardown_since: Some(rfc3339(self.now)),
                });
                continue;
            }
            let mut timed_out = false;
            if let Some(s) = state {
                match self.settled(s, n.is_some()) {
                    Settled::Yes => {}
                    Settled::TimedOut => timed_out = true,
                    Settled::No(deadline) => {
                        if let Some(t) = deadline {
                            self.wake_at(t);
                        }
                        continue;
                    }
                }
            }
            if let Some(n) = n {
                if pending_release.iter().any(|(_, reach)| reach.contains(&n)) {
                    continue;
                }
                if self.owned_label(n) {
                    self.plan.writes.push(Write::ReleaseNodeLabel {
                        node: name.to_string(),
                        uid: self.node(n).uid.clone().unwrap_or_default(),
                    });
                    continue;
                }
                if state.is_some() && self.stale_ready_label(n) {
                    self.plan.writes.push(Write::RemoveReadyLabel {
                        node: name.to_string(),
                        uid: self.node(n).uid.clone().unwrap_or_default(),
                    });
                    continue;
                }
            }
            if let Some(s) = state {
                self.plan.writes.push(Write::DeleteNodeState {
                    node: name.to_string(),
                    uid: s.metadata.uid.clone().unwrap_or_default(),
                });
                if timed_out {
                    let note = format!(
                        "node {name}: no node agent ever reported on DPDKNodeState {name}; teardown finished after the {}s timeout without the agent's confirmation",
                        self.settings.teardown_timeout.as_secs()
                    );
                    let evs: Vec<(String, String)> = s
                        .spec
                        .configs
                        .iter()
                        .map(|c| (c.clone(), note.clone()))
                        .collect();
                    self.push_events_after(&evs, Kind::NodeState, name);
                }
            }
        }

        // 6. Per config: finalizer, status, events.
        let work_by_node: HashMap<usize, usize> =
            works.iter().enumerate().map(|(i, w)| (w.node, i)).collect();
        for c in 0..n_configs {
            self.finish_config(
                c,
                &matched[c],
                &works,
                &work_by_node,
                &desired_specs,
                &eni_driven_by[c],
                &pending_release,
            );
        }
    }

    fn push_events_after(&mut self, evs: &[(String, String)], kind: Kind, name: &str) {
        for (config, note) in evs {
            let Some(cfg) = self.configs.iter().find(|c| name_of(&c.metadata) == config) else {
                continue;
            };
            self.plan.events.push(PlannedEvent {
                config: config.clone(),
                config_uid: cfg.metadata.uid.clone(),
                warning: true,
                reason: reason::TEARDOWN_WITHOUT_AGENT.into(),
                note: note.clone(),
                after: Some((kind, name.to_string())),
            });
        }
    }

    fn apply_state_if_needed(&mut self, node_name: &str, spec: &DPDKNodeStateSpec) {
        let live = self.states.get(node_name).copied();
        let teardown_since = match live {
            Some(s) => {
                let keep: HashSet<(i32, &str)> = spec
                    .devices
                    .iter()
                    .map(|d| (d.device_index, d.node_eni.as_str()))
                    .collect();
                let removes = s
                    .spec
                    .devices
                    .iter()
                    .any(|d| !keep.contains(&(d.device_index, d.node_eni.as_str())));
                if removes {
                    Some(rfc3339(self.now))
                } else {
                    s.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(TEARDOWN_SINCE_ANNOTATION))
                        .cloned()
                }
            }
            None => None,
        };
        let up_to_date = live.is_some_and(|s| {
            s.spec == *spec
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ssa::NODE_STATE_MANAGED_BY.0))
                    .map(String::as_str)
                    == Some(ssa::NODE_STATE_MANAGED_BY.1)
                && s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TEARDOWN_SINCE_ANNOTATION))
                    == teardown_since.as_ref()
                && ssa::has_apply_entry(&s.metadata, CONTROLLER_MANAGER)
        });
        if !up_to_date {
            self.plan.writes.push(Write::ApplyNodeState {
                node: node_name.to_string(),
                spec: spec.clone(),
                teardown_since,
            });
        }
    }

    /// Why node `n` is not ready for config `c`, or None when it is.
    fn not_ready_reason(
        &self,
        c: usize,
        work: &NodeWork,
        desired: &DPDKNodeStateSpec,
    ) -> Option<String> {
        let node_name = name_of(self.node(work.node));
        let Some(s) = self.states.get(node_name) else {
            return Some("no DPDKNodeState yet".into());
        };
        if s.spec != *desired {
            return Some("DPDKNodeState spec not written yet".into());
        }
        for m in &self.configs[c].spec.resource_mapping {
            let claim = work
                .claims
                .iter()
                .find(|cl| cl.device_index == m.device_index && cl.configs.contains(&c));
            let Some(cl) = claim else {
                return Some(format!(
                    "deviceIndex {} is held by an older config",
                    m.device_index
                ));
            };
            if cl.target.is_none() {
                return Some(format!("no NodeENI for deviceIndex {} yet", m.device_index));
            }
            if cl.dropped
                || !desired
                    .devices
                    .iter()
                    .any(|d| d.device_index == m.device_index)
            {
                return Some(format!(
                    "deviceIndex {} is blocked by a conflict",
                    m.device_index
                ));
            }
        }
        let Some(st) = s
            .status
            .as_ref()
            .filter(|st| st.observed_generation.is_some())
        else {
            return Some("node agent has not reported".into());
        };
        if st.observed_generation < s.metadata.generation {
            return Some("node agent has not seen the latest spec".into());
        }
        match st.sync_status {
            Some(SyncStatus::Succeeded) => {}
            Some(SyncStatus::Failed) => {
                return Some(format!(
                    "node agent failed: {}",
                    st.last_sync_error.as_deref().unwrap_or("no error given")
                ));
            }
            _ => return Some("node agent is syncing".into()),
        }
        for m in &self.configs[c].spec.resource_mapping {
            if !st
                .devices
                .iter()
                .any(|d| d.device_index == m.device_index && d.bound)
            {
                return Some(format!("deviceIndex {} not bound yet", m.device_index));
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_config(
        &mut self,
        c: usize,
        matched: &[usize],
        works: &[NodeWork],
        work_by_node: &HashMap<usize, usize>,
        desired_specs: &HashMap<usize, DPDKNodeStateSpec>,
        driven: &BTreeSet<usize>,
        pending_release: &[(usize, BTreeSet<usize>)],
    ) {
        let cfg = self.configs[c];
        let name = self.cname(c).to_string();
        let live = self.live[c];
        let ours = has_finalizer(&cfg.metadata);

        if live && !ours {
            self.plan.writes.push(Write::AddFinalizer {
                config: name.clone(),
            });
        }
        if !live {
            if !ours {
                return;
            }
            // The finalizer goes once nothing of this config is left on any node.
            let listed = self
                .snap
                .node_states
                .iter()
                .filter(|s| s.spec.configs.iter().any(|x| x == &name))
                .count();
            let matched_set: HashSet<usize> = matched.iter().copied().collect();
            let enis_left = pending_release
                .iter()
                .filter(|(_, reach)| reach.iter().any(|n| matched_set.contains(n)))
                .count();
            let labels_left = matched
                .iter()
                .filter(|&&n| self.owned_label(n) && !work_by_node.contains_key(&n))
                .count();
            if listed == 0 && enis_left == 0 && labels_left == 0 {
                self.plan.writes.push(Write::RemoveFinalizer {
                    config: name,
                    uid: cfg.metadata.uid.clone().unwrap_or_default(),
                    owned: ssa::owned_by(&cfg.metadata, CONTROLLER_MANAGER, &finalizer_path()),
                });
                return;
            }
            let health = Health::Progressing {
                reason: "TearingDown".into(),
                message: format!(
                    "waiting for teardown: {listed} DPDKNodeState(s), {enis_left} NodeENI(s) and {labels_left} node label(s) left"
                ),
            };
            self.write_status(c, health, 0, Vec::new(), Vec::new(), Vec::new());
            return;
        }

        let mut ready: Vec<String> = Vec::new();
        let mut waiting: Vec<String> = Vec::new();
        for &n in matched {
            let Some(work) = work_by_node.get(&n).map(|&w| &works[w]) else {
                continue;
            };
            let Some(desired) = desired_specs.get(&n) else {
                continue;
            };
            match self.not_ready_reason(c, work, desired) {
                None => ready.push(name_of(self.node(n)).to_string()),
                Some(why) => waiting.push(format!("{} ({why})", name_of(self.node(n)))),
            }
        }
        ready.sort();
        let enis: Vec<String> = driven
            .iter()
            .map(|&e| name_of(&self.eni(e).metadata).to_string())
            .collect();
        let mut conflicts = std::mem::take(&mut self.conflicts[c]);
        conflicts.sort();
        conflicts.dedup();
        let total_conflicts = conflicts.len();
        conflicts.truncate(MAX_STATUS_CONFLICTS);
        for k in &conflicts {
            *self
                .plan
                .stats
                .conflicts
                .entry(k.reason.clone())
                .or_default() += 1;
        }
        let (matched_n, ready_n) = (matched.len(), ready.len());
        self.plan.stats.nodes_ready += ready_n;
        let health = if total_conflicts > 0 {
            let reasons: BTreeSet<&str> = conflicts.iter().map(|k| k.reason.as_str()).collect();
            let reason = if reasons.len() == 1 {
                reasons.iter().next().copied().unwrap_or("Conflict")
            } else {
                "Conflicts"
            };
            Health::Stalled {
                reason: reason.to_string(),
                message: format!(
                    "{total_conflicts} conflict(s), left untouched; {ready_n}/{matched_n} nodes ready. First: {}",
                    conflicts[0].message
                ),
            }
        } else if matched_n == 0 {
            Health::Ready {
                reason: "NoMatchingNodes".into(),
                message: "no node carries every label in spec.nodeSelector".into(),
            }
        } else if ready_n < matched_n {
            Health::Progressing {
                reason: "Progressing".into(),
                message: format!(
                    "{ready_n}/{matched_n} nodes ready; waiting for {}",
                    list_names(&waiting.iter().map(String::as_str).collect::<Vec<_>>(), 5)
                ),
            }
        } else {
            Health::Ready {
                reason: "NodesReady".into(),
                message: format!("{ready_n}/{matched_n} nodes ready"),
            }
        };
        match &health {
            Health::Ready { .. } => self.plan.stats.configs_ready += 1,
            Health::Progressing { .. } => self.plan.stats.configs_reconciling += 1,
            Health::Stalled { .. } => self.plan.stats.configs_stalled += 1,
        }
        self.write_status(c, health, matched_n as i32, ready, enis, conflicts);
    }

    /// Writes the status when it differs from the live one, with Warning events for
    /// what is new in it (conflicts, the misspelt writeCombing of a new generation).
    fn write_status(
        &mut self,
        c: usize,
        health: Health,
        matched: i32,
        ready: Vec<String>,
        enis: Vec<String>,
        conflicts: Vec<ConfigConflict>,
    ) {
        let cfg = self.configs[c];
        let name = self.cname(c).to_string();
        let live_status = cfg.status.clone().unwrap_or_default();
        let generation = cfg.metadata.generation;
        let mut conds = live_status.conditions.clone();
        // The API server keeps whole seconds; so do we, or every pass would differ.
        let now = Time(Timestamp::from_second(self.now.as_second()).unwrap_or(self.now));
        conditions::apply_health(&mut conds, &health, generation, &now);
        let status = DPDKConfigStatus {
            observed_generation: generation,
            conditions: conds,
            matched_nodes: matched,
            ready_nodes: ready.len() as i32,
            nodes_ready: ready,
            updated_node_enis: enis,
            last_applied_revision: cfg
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION).cloned()),
            conflicts,
        };
        if status == live_status {
            return;
        }
        let after = Some((Kind::Config, name.clone()));
        let known = &live_status.conflicts;
        let mut new_by_reason: BTreeMap<&str, Vec<&ConfigConflict>> = BTreeMap::new();
        for k in status.conflicts.iter().filter(|k| !known.contains(k)) {
            new_by_reason.entry(k.reason.as_str()).or_default().push(k);
        }
        for (r, ks) in new_by_reason {
            let mut note = ks
                .iter()
                .take(3)
                .map(|k| k.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if ks.len() > 3 {
                note.push_str(&format!("; and {} more", ks.len() - 3));
            }
            self.plan.events.push(PlannedEvent {
                config: name.clone(),
                config_uid: cfg.metadata.uid.clone(),
                warning: true,
                reason: r.to_string(),
                note: truncate(note, 1000),
                after: after.clone(),
            });
        }
        if self.live[c]
            && cfg.spec.driver_options.uses_misspelt_write_combing()
            && live_status.observed_generation != generation
        {
            let wc = cfg.spec.driver_options.effective_write_combining();
            self.plan.events.push(PlannedEvent {
                config: name.clone(),
                config_uid: cfg.metadata.uid.clone(),
                warning: true,
                reason: reason::DEPRECATED_WRITE_COMBING.into(),
                note: format!(
                    "spec.driverOptions.writeCombing is the seed guide's misspelling of writeCombining; it is honoured as writeCombining={wc}. Rename the key to writeCombining."
                ),
                after: after.clone(),
            });
        }
        self.plan.writes.push(Write::ConfigStatus {
            config: name,
            status,
        });
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Full precision: the value is written once per teardown and copied after, and a
/// truncated start would let the timeout fire up to a second early.
fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        DPDKConfigSpec, DPDKNodeStateStatus, DeviceStatus, DriverOptions, ENIAttachment,
        NodeENISpec, NodeENIStatus, ResourceMapping,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::{Value, json};

    const RES2: &str = "intel.com/intel_sriov_netdevice_2";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config(
        name: &str,
        created: i64,
        selector: &[(&str, &str)],
        mappings: &[(i32, &str)],
    ) -> DPDKConfig {
        let mut c = DPDKConfig::new(
            name,
            DPDKConfigSpec {
                node_selector: labels(selector),
                driver_options: DriverOptions::default(),
                resource_mapping: mappings
                    .iter()
                    .map(|(d, r)| ResourceMapping {
                        device_index: *d,
                        resource_name: r.to_string(),
                        driver: DpdkDriver::VfioPci,
                    })
                    .collect(),
            },
        );
        c.metadata.uid = Some(format!("uid-{name}"));
        c.metadata.generation = Some(1);
        c.metadata.creation_timestamp = Some(Time(t(created)));
        c
    }

    fn node(name: &str, l: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(l)),
            resource_version: Some("1".into()),
            ..Default::default()
        }
    }

    fn eni(name: &str, selector: &[(&str, &str)], device_index: i32, subnets: usize) -> NodeENI {
        let mut e = NodeENI::new(
            name,
            NodeENISpec {
                node_selector: labels(selector),
                device_index: Some(device_index),
                subnet_ids: if subnets > 1 {
                    Some((0..subnets).map(|i| format!("subnet-{i}")).collect())
                } else {
                    None
                },
                subnet_id: if subnets == 1 {
                    Some("subnet-0".into())
                } else {
                    None
                },
                ..Default::default()
            },
        );
        e.metadata.uid = Some(format!("uid-{name}"));
        e.metadata.resource_version = Some("1".into());
        e
    }

    fn attach(e: &mut NodeENI, node: &str, d: i32) {
        let st = e.status.get_or_insert_with(NodeENIStatus::default);
        st.attachments.push(ENIAttachment {
            node_id: Some(node.into()),
            device_index: Some(d),
            eni_id: Some(format!("eni-{node}-{d}")),
            status: Some("attached".into()),
            ..Default::default()
        });
    }

    fn entry(manager: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn set_owner(meta: &mut ObjectMeta, manager: &str, fields: Value) {
        let entries = meta.managed_fields.get_or_insert_with(Vec::new);
        entries.retain(|e| e.manager.as_deref() != Some(manager));
        if fields.as_object().is_some_and(|o| !o.is_empty()) {
            entries.push(entry(manager, fields));
        }
    }

    fn bump(meta: &mut ObjectMeta) {
        let rv: u64 = meta
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        meta.resource_version = Some((rv + 1).to_string());
    }

    /// A tiny API server: applies the planner's writes the way SSA would, so tests can
    /// run pass after pass.
    #[derive(Default)]
    struct World {
        configs: Vec<DPDKConfig>,
        nodes: Vec<ObjectMeta>,
        enis: Vec<NodeENI>,
        states: Vec<DPDKNodeState>,
        server_conflicts: Vec<ServerConflict>,
        settings: Settings,
        now: Timestamp,
    }

    impl World {
        fn new() -> Self {
            World {
                now: t(100),
                ..Default::default()
            }
        }

        fn plan(&self) -> Plan {
            let snap = Snapshot {
                configs: self.configs.iter().collect(),
                nodes: self.nodes.iter().collect(),
                node_enis: self.enis.iter().collect(),
                node_states: self.states.iter().collect(),
                server_conflicts: self.server_conflicts.iter().collect(),
            };
            plan(&snap, &self.settings, self.now)
        }

        fn apply(&mut self, plan: &Plan) {
            for w in &plan.writes {
                self.write(w);
            }
        }

        /// Plans and applies until a pass plans nothing; returns every write made.
        fn converge(&mut self) -> Vec<Write> {
            let mut all = Vec::new();
            for _ in 0..20 {
                let p = self.plan();
                if p.writes.is_empty() {
                    return all;
                }
                self.apply(&p);
                all.extend(p.writes);
            }
            panic!(
                "no convergence after 20 passes; last writes: {:?}",
                self.plan().writes
            );
        }

        fn write(&mut self, w: &Write) {
            match w {
                Write::AddFinalizer { config } => {
                    let c = self
                        .configs
                        .iter_mut()
                        .find(|c| c.metadata.name.as_deref() == Some(config))
                        .expect("config");
                    c.metadata
                        .finalizers
                        .get_or_insert_with(Vec::new)
                        .push(CONFIG_FINALIZER.into());
                    set_owner(
                        &mut c.metadata,
                        CONTROLLER_MANAGER,
                        json!({"f:metadata": {"f:finalizers": {format!("v:\"{CONFIG_FINALIZER}\""): {}}}}),
                    );
                }
                Write::RemoveFinalizer { config, .. } => {
                    let c = self
                        .configs
                        .iter_mut()
                        .find(|c| c.metadata.name.as_deref() == Some(config))
                        .expect("config");
                    c.metadata
                        .finalizers
                        .get_or_insert_with(Vec::new)
                        .retain(|f| f != CONFIG_FINALIZER);
                    if c.metadata.deletion_timestamp.is_some()
                        && c.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty())
                    {
                        self.configs
                            .retain(|c| c.metadata.name.as_deref() != Some(config));
                    }
                }
                Write::ConfigStatus { config, status } => {
                    let c = self
                        .configs
                        .iter_mut()
                        .find(|c| c.metadata.name.as_deref() == Some(config))
                        .expect("config");
                    c.status = Some(status.clone());
                }
                Write::ApplyNodeState {
                    node,
                    spec,
                    teardown_since,
                } => {
                    let idx = self
                        .states
                        .iter()
                        .position(|s| s.metadata.name.as_deref() == Some(node));
                    let s = match idx {
                        Some(i) => &mut self.states[i],
                        None => {
                            let mut s = DPDKNodeState::new(node, spec.clone());
                            s.metadata.uid = Some(format!("uid-state-{node}"));
                            s.metadata.generation = Some(1);
                            self.states.push(s);
                            self.states.last_mut().expect("pushed")
                        }
                    };
                    if s.spec != *spec {
                        s.spec = spec.clone();
                        s.metadata.generation = Some(s.metadata.generation.unwrap_or(0) + 1);
                    }
                    s.metadata.labels = Some(labels(&[ssa::NODE_STATE_MANAGED_BY]));
                    s.metadata.annotations = teardown_since
                        .as_ref()
                        .map(|v| labels(&[(TEARDOWN_SINCE_ANNOTATION, v)]));
                    set_owner(&mut s.metadata, CONTROLLER_MANAGER, json!({"f:spec": {}}));
                }
                Write::DeleteNodeState { node, .. } => self
                    .states
                    .retain(|s| s.metadata.name.as_deref() != Some(node)),
                Write::SetNodeLabel { node, .. } => {
                    self.label_node(node, NODE_ENABLED_LABEL, "true", CONTROLLER_MANAGER)
                }
                Write::ReleaseNodeLabel { node, .. } => {
                    let n = self.node_mut(node);
                    set_owner(n, CONTROLLER_MANAGER, json!({}));
                    if ssa::other_owners(n, &ssa::enabled_label_path(), CONTROLLER_MANAGER)
                        .is_empty()
                    {
                        n.labels
                            .get_or_insert_with(BTreeMap::new)
                            .remove(NODE_ENABLED_LABEL);
                    }
                    bump(n);
                }
                Write::RemoveReadyLabel { node, .. } => {
                    let n = self.node_mut(node);
                    n.labels
                        .get_or_insert_with(BTreeMap::new)
                        .remove(NODE_READY_LABEL);
                    set_owner(n, AGENT_MANAGER, json!({}));
                    bump(n);
                }
                Write::ApplyNodeEni { name, fields, .. } => {
                    let e = self
                        .enis
                        .iter_mut()
                        .find(|e| e.metadata.name.as_deref() == Some(name))
                        .expect("eni");
                    e.spec.enable_dpdk = Some(true);
                    e.spec.dpdk_driver = Some(fields.driver.as_str().into());
                    e.spec.dpdk_resource_name = Some(fields.resource_name.clone());
                    // Force or not, the applier ends up the owner; others lose changed fields.
                    if let Some(entries) = e.metadata.managed_fields.as_mut() {
                        for en in entries.iter_mut() {
                            if let Some(f) = en
                                .fields_v1
                                .as_mut()
                                .and_then(|f| f.0.get_mut("f:spec"))
                                .and_then(|s| s.as_object_mut())
                            {
                                f.remove("f:dpdkResourceName");
                                f.remove("f:dpdkDriver");
                            }
                        }
                    }
                    set_owner(
                        &mut e.metadata,
                        CONTROLLER_MANAGER,
                        json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}, "f:dpdkResourceName": {}}}),
                    );
                    bump(&mut e.metadata);
                }
                Write::ReleaseNodeEni { name, .. } => {
                    let e = self
                        .enis
                        .iter_mut()
                        .find(|e| e.metadata.name.as_deref() == Some(name))
                        .expect("eni");
                    set_owner(&mut e.metadata, CONTROLLER_MANAGER, json!({}));
                    let owned = |p: &[&str]| {
                        !ssa::other_owners(&e.metadata, p, CONTROLLER_MANAGER).is_empty()
                    };
                    let (a, b, c) = (
                        owned(&ssa::NODEENI_ENABLE_PATH),
                        owned(&ssa::NODEENI_DRIVER_PATH),
                        owned(&ssa::NODEENI_RESOURCE_PATH),
                    );
                    if !a {
                        e.spec.enable_dpdk = None;
                    }
                    if !b {
                        e.spec.dpdk_driver = None;
                    }
                    if !c {
                        e.spec.dpdk_resource_name = None;
                    }
                    bump(&mut e.metadata);
                }
            }
        }

        fn state(&self, node: &str) -> Option<&DPDKNodeState> {
            self.states
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(node))
        }

        fn cfg(&self, name: &str) -> Option<&DPDKConfig> {
            self.configs
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
        }

        fn eni(&self, name: &str) -> &NodeENI {
            self.enis
                .iter()
                .find(|e| e.metadata.name.as_deref() == Some(name))
                .expect("eni")
        }

        /// The node's `enabled` label.
        fn node_label(&self, node: &str) -> Option<&str> {
            self.label(node, NODE_ENABLED_LABEL)
        }

        /// The node agent: reports the spec as done (bound devices) at the current generation.
        fn agent_reports(&mut self, node: &str) {
            let s = self
                .states
                .iter_mut()
                .find(|s| s.metadata.name.as_deref() == Some(node))
                .expect("state");
            s.status = Some(DPDKNodeStateStatus {
                observed_generation: s.metadata.generation,
                sync_status: Some(SyncStatus::Succeeded),
                devices: s
                    .spec
                    .devices
                    .iter()
                    .map(|d| DeviceStatus {
                        device_index: d.device_index,
                        bound: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
        }

        fn node_mut(&mut self, node: &str) -> &mut ObjectMeta {
            self.nodes
                .iter_mut()
                .find(|n| n.name.as_deref() == Some(node))
                .expect("node")
        }

        /// A label set by `manager` with server-side apply.
        fn label_node(&mut self, node: &str, key: &str, value: &str, manager: &str) {
            let n = self.node_mut(node);
            n.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(key.into(), value.into());
            set_owner(
                n,
                manager,
                json!({"f:metadata": {"f:labels": {format!("f:{key}"): {}}}}),
            );
            bump(n);
        }

        fn label(&self, node: &str, key: &str) -> Option<&str> {
            self.nodes
                .iter()
                .find(|n| n.name.as_deref() == Some(node))
                .and_then(|n| n.labels.as_ref())
                .and_then(|l| l.get(key))
                .map(String::as_str)
        }

        fn delete_config(&mut self, name: &str) {
            let now = self.now;
            let c = self
                .configs
                .iter_mut()
                .find(|c| c.metadata.name.as_deref() == Some(name))
                .expect("config");
            c.metadata.deletion_timestamp = Some(Time(now));
        }
    }

    /// The seed guide's world: nodes labelled ng=multi-eni, a NodeENI at deviceIndex 2
    /// attached on each, and the seed's DPDKConfig (writeCombing: true).
    fn seed_world(nodes: usize) -> World {
        let mut w = World::new();
        let mut e = eni("multi-eni-dpdk", &[("ng", "multi-eni")], 2, 1);
        for i in 0..nodes {
            let name = format!("node-{i}");
            w.nodes.push(node(&name, &[("ng", "multi-eni")]));
            attach(&mut e, &name, 2);
        }
        w.enis.push(e);
        let mut c = config(
            "default-dpdk-config",
            0,
            &[("ng", "multi-eni")],
            &[(2, RES2)],
        );
        c.spec.driver_options.write_combing = Some(true);
        w.configs.push(c);
        w
    }

    fn conflicts_of<'w>(w: &'w World, config: &str) -> &'w [ConfigConflict] {
        w.cfg(config)
            .and_then(|c| c.status.as_ref())
            .map(|s| s.conflicts.as_slice())
            .unwrap_or(&[])
    }

    fn ready_condition(w: &World, config: &str) -> (String, String) {
        let c = w
            .cfg(config)
            .and_then(|c| c.status.as_ref())
            .expect("status");
        let r = conditions::find(&c.conditions, conditions::READY).expect("Ready condition");
        (r.status.clone(), r.reason.clone())
    }

    #[test]
    fn seed_scenario_converges_then_plans_nothing() {
        let mut w = seed_world(2);
        let first = w.plan();
        assert!(first.writes.contains(&Write::AddFinalizer {
            config: "default-dpdk-config".into()
        }));
        assert_eq!(
            first
                .writes
                .iter()
                .filter(|x| matches!(x, Write::SetNodeLabel { .. }))
                .count(),
            2
        );
        assert_eq!(
            first
                .writes
                .iter()
                .filter(|x| matches!(x, Write::ApplyNodeEni { .. }))
                .count(),
            1
        );
        assert_eq!(
            first
                .writes
                .iter()
                .filter(|x| matches!(x, Write::ApplyNodeState { .. }))
                .count(),
            2
        );
        let stages: Vec<u8> = first.writes.iter().map(Write::stage).collect();
        assert!(
            stages.windows(2).all(|p| p[0] <= p[1]),
            "writes come in stage order: {stages:?}"
        );
        assert!(
            first
                .events
                .iter()
                .any(|e| e.reason == reason::DEPRECATED_WRITE_COMBING && e.warning)
        );
        w.apply(&first);
        // The next pass only updates the status with what it now observes.
        let second = w.plan();
        assert!(
            second
                .writes
                .iter()
                .all(|x| matches!(x, Write::ConfigStatus { .. })),
            "{:?}",
            second.writes
        );
        w.apply(&second);
        assert!(
            w.plan().writes.is_empty(),
            "a converged world plans zero writes: {:?}",
            w.plan().writes
        );

        let eni = w.eni("multi-eni-dpdk");
        assert_eq!(eni.spec.enable_dpdk, Some(true));
        assert_eq!(eni.spec.dpdk_driver.as_deref(), Some("vfio-pci"));
        assert_eq!(eni.spec.dpdk_resource_name.as_deref(), Some(RES2));
        assert_eq!(w.node_label("node-0"), Some("true"));
        let s = w.state("node-1").expect("one DPDKNodeState per node");
        assert_eq!(
            s.spec.driver_options,
            EffectiveDriverOptions {
                enable_unsafe_no_iommu: true,
                write_combining: true
            }
        );
        assert_eq!(s.spec.devices.len(), 1);
        assert_eq!(s.spec.devices[0].device_index, 2);
        assert_eq!(s.spec.devices[0].eni_id.as_deref(), Some("eni-node-1-2"));
        assert_eq!(s.spec.configs, vec!["default-dpdk-config".to_string()]);
        let st = w
            .cfg("default-dpdk-config")
            .and_then(|c| c.status.clone())
            .expect("status");
        assert_eq!((st.matched_nodes, st.ready_nodes), (2, 0));
        assert_eq!(st.updated_node_enis, vec!["multi-eni-dpdk".to_string()]);
        assert_eq!(
            ready_condition(&w, "default-dpdk-config"),
            ("False".into(), "Progressing".into())
        );

        // The agent reports; the config turns Ready with the right counts, then rests.
        w.agent_reports("node-0");
        w.agent_reports("node-1");
        let p = w.plan();
        assert_eq!(p.writes.len(), 1, "{:?}", p.writes);
        assert!(
            p.events.is_empty(),
            "writeCombing is warned once per generation: {:?}",
            p.events
        );
        w.apply(&p);
        let st = w
            .cfg("default-dpdk-config")
            .and_then(|c| c.status.clone())
            .expect("status");
        assert_eq!((st.matched_nodes, st.ready_nodes), (2, 2));
        assert_eq!(
            st.nodes_ready,
            vec!["node-0".to_string(), "node-1".to_string()]
        );
        assert_eq!(
            ready_condition(&w, "default-dpdk-config"),
            ("True".into(), "NodesReady".into())
        );
        w.now = t(5000);
        assert!(
            w.plan().writes.is_empty(),
            "time passing alone plans nothing"
        );
    }

    #[test]
    fn revision_annotation_becomes_last_applied_revision_and_state_revision() {
        let mut w = seed_world(1);
        let rev = "main@sha1:0123456789abcdef0123456789abcdef01234567";
        w.configs[0].metadata.annotations = Some(labels(&[(REVISION_ANNOTATION, rev)]));
        w.converge();
        let st = w
            .cfg("default-dpdk-config")
            .and_then(|c| c.status.clone())
            .expect("status");
        assert_eq!(st.last_applied_revision.as_deref(), Some(rev));
        assert_eq!(
            w.state("node-0")
                .and_then(|s| s.spec.revision.clone())
                .as_deref(),
            Some(rev)
        );
    }

    #[test]
    fn attachment_index_wins_over_spec_index() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        // Spec says 2, but the ENI controller attached it at 3 on n1.
        let mut a = eni("eni-a", &[("g", "a")], 2, 1);
        attach(&mut a, "n1", 3);
        // Spec says 2 and nothing is attached yet: the fallback for index 2.
        let b = eni("eni-b", &[("g", "a")], 2, 1);
        w.enis.extend([a, b]);
        w.configs.push(config(
            "c",
            0,
            &[("g", "a")],
            &[(2, "x.com/two"), (3, "x.com/three")],
        ));
        w.converge();
        let s = w.state("n1").expect("state");
        let by_index: Vec<(i32, &str, Option<&str>)> = s
            .spec
            .devices
            .iter()
            .map(|d| (d.device_index, d.node_eni.as_str(), d.eni_id.as_deref()))
            .collect();
        assert_eq!(
            by_index,
            vec![(2, "eni-b", None), (3, "eni-a", Some("eni-n1-3"))]
        );
        assert_eq!(
            w.eni("eni-a").spec.dpdk_resource_name.as_deref(),
            Some("x.com/three")
        );
        assert_eq!(
            w.eni("eni-b").spec.dpdk_resource_name.as_deref(),
            Some("x.com/two")
        );
    }

    #[test]
    fn multi_subnet_nodeeni_fully_mapped_is_enabled() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.enis.push(eni("eni-ms", &[("g", "a")], 2, 2));
        w.configs
            .push(config("c", 0, &[("g", "a")], &[(2, RES2), (3, RES2)]));
        w.converge();
        assert!(
            conflicts_of(&w, "c").is_empty(),
            "{:?}",
            conflicts_of(&w, "c")
        );
        assert_eq!(w.eni("eni-ms").spec.enable_dpdk, Some(true));
        assert_eq!(w.state("n1").map(|s| s.spec.devices.len()), Some(2));
    }

    #[test]
    fn partly_mapped_multi_subnet_nodeeni_is_not_updated() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.enis.push(eni("eni-ms", &[("g", "a")], 2, 2));
        w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
        let p = w.plan();
        assert!(
            !p.writes
                .iter()
                .any(|x| matches!(x, Write::ApplyNodeEni { .. })),
            "{:?}",
            p.writes
        );
        assert!(
            p.events
                .iter()
                .any(|e| e.reason == reason::PARTIAL_MULTI_SUBNET)
        );
        w.converge();
        let k = conflicts_of(&w, "c");
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].reason, reason::PARTIAL_MULTI_SUBNET);
        assert_eq!(k[0].node_eni.as_deref(), Some("eni-ms"));
        assert!(k[0].message.contains("deviceIndex 3"), "{}", k[0].message);
        assert_eq!(w.eni("eni-ms").spec.enable_dpdk, None);
        assert_eq!(
            w.state("n1").map(|s| s.spec.devices.len()),
            Some(0),
            "no device behind a blocked NodeENI"
        );
        assert_eq!(
            ready_condition(&w, "c"),
            ("False".into(), reason::PARTIAL_MULTI_SUBNET.into())
        );
    }

    #[test]
    fn older_config_wins_an_overlap_by_creation_time() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a"), ("h", "b")]));
        let mut e = eni("eni-2", &[("g", "a")], 2, 1);
        attach(&mut e, "n1", 2);
        w.enis.push(e);
        // "z-old" is older even though its name sorts last.
        w.configs
            .push(config("a-young", 10, &[("h", "b")], &[(2, "young.com/x")]));
        w.configs
            .push(config("z-old", 5, &[("g", "a")], &[(2, "old.com/x")]));
        w.converge();
        assert_eq!(
            w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
            Some("old.com/x")
        );
        assert!(conflicts_of(&w, "z-old").is_empty());
        let k = conflicts_of(&w, "a-young");
        assert_eq!(k.len(), 1, "{k:?}");
        assert_eq!(k[0].reason, reason::OVERLAPPING_CONFIG);
        assert_eq!(k[0].other_config.as_deref(), Some("z-old"));
        assert_eq!(k[0].node.as_deref(), Some("n1"));
        assert_eq!(k[0].device_index, Some(2));
        assert_eq!(
            ready_condition(&w, "a-young"),
            ("False".into(), reason::OVERLAPPING_CONFIG.into())
        );
        let s = w.state("n1").expect("state");
        assert_eq!(
            s.spec.configs,
            vec!["z-old".to_string(), "a-young".to_string()],
            "oldest first"
        );
    }

    #[test]
    fn equal_creation_times_are_ordered_by_name() {
        for order in [["b-cfg", "a-cfg"], ["a-cfg", "b-cfg"]] {
            let mut w = World::new();
            w.nodes.push(node("n1", &[("g", "a")]));
            w.enis.push(eni("eni-2", &[("g", "a")], 2, 1));
            for name in order {
                w.configs.push(config(
                    name,
                    7,
                    &[("g", "a")],
                    &[(2, &format!("{name}.com/x"))],
                ));
            }
            w.converge();
            assert_eq!(
                w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
                Some("a-cfg.com/x"),
                "input order {order:?}"
            );
            assert_eq!(
                conflicts_of(&w, "b-cfg")[0].other_config.as_deref(),
                Some("a-cfg")
            );
        }
    }

    #[test]
    fn configs_that_agree_do_not_conflict() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.enis.push(eni("eni-2", &[("g", "a")], 2, 1));
        w.configs
            .push(config("one", 1, &[("g", "a")], &[(2, RES2)]));
        w.configs
            .push(config("two", 2, &[("g", "a")], &[(2, RES2)]));
        w.converge();
        assert!(conflicts_of(&w, "one").is_empty() && conflicts_of(&w, "two").is_empty());
        let st = w.cfg("two").and_then(|c| c.status.clone()).expect("status");
        assert_eq!(st.updated_node_enis, vec!["eni-2".to_string()]);
    }

    #[test]
    fn nodeeni_reaching_nodes_outside_the_selector_is_not_updated() {
        let mut w = World::new();
        w.nodes
            .push(node("inside", &[("role", "dpdk"), ("ng", "t1")]));
        w.nodes.push(node("outside", &[("role", "dpdk")]));
        w.enis.push(eni("eni-wide", &[("role", "dpdk")], 2, 1));
        w.configs
            .push(config("c", 0, &[("ng", "t1")], &[(2, RES2)]));
        let p = w.plan();
        assert!(
            !p.writes
                .iter()
                .any(|x| matches!(x, Write::ApplyNodeEni { .. }))
        );
        let ev = p
            .events
            .iter()
            .find(|e| e.reason == reason::SELECTOR_REACHES_UNMATCHED_NODES)
            .expect("warning event");
        assert!(ev.note.contains("outside"), "{}", ev.note);
        w.converge();
        let k = conflicts_of(&w, "c");
        assert_eq!(k[0].reason, reason::SELECTOR_REACHES_UNMATCHED_NODES);
        assert_eq!(k[0].node.as_deref(), Some("outside"));
        assert_eq!(
            w.eni("eni-wide").spec,
            eni("eni-wide", &[("role", "dpdk")], 2, 1).spec,
            "left untouched"
        );
        assert_eq!(
            w.node_label("inside"),
            Some("true"),
            "the matched node is still labelled"
        );
        assert_eq!(w.node_label("outside"), None);
    }

    #[test]
    fn held_nodeeni_keeps_its_devices_when_a_conflict_appears_later() {
        let mut w = World::new();
        w.nodes
            .push(node("inside", &[("role", "dpdk"), ("ng", "t1")]));
        w.enis.push(eni("eni-wide", &[("role", "dpdk")], 2, 1));
        w.configs
            .push(config("c", 0, &[("ng", "t1")], &[(2, RES2)]));
        w.converge();
        assert_eq!(w.eni("eni-wide").spec.enable_dpdk, Some(true));
        // A node outside the config's selector joins the NodeENI's selector.
        w.nodes.push(node("outside", &[("role", "dpdk")]));
        let writes = w.converge();
        assert!(
            writes
                .iter()
                .all(|x| matches!(x, Write::ConfigStatus { .. })),
            "neither the NodeENI nor the running node is touched: {writes:?}"
        );
        assert_eq!(w.state("inside").map(|s| s.spec.devices.len()), Some(1));
        assert_eq!(
            conflicts_of(&w, "c")[0].reason,
            reason::SELECTOR_REACHES_UNMATCHED_NODES
        );
    }

    #[test]
    fn another_managers_value_is_reported_not_overwritten() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        let mut e = eni("eni-2", &[("g", "a")], 2, 1);
        e.spec.dpdk_resource_name = Some("other.com/theirs".into());
        set_owner(
            &mut e.metadata,
            "platform-team",
            json!({"f:spec": {"f:dpdkResourceName": {}}}),
        );
        w.enis.push(e);
        w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
        let p = w.plan();
        assert!(
            !p.writes
                .iter()
                .any(|x| matches!(x, Write::ApplyNodeEni { .. }))
        );
        let ev = p
            .events
            .iter()
            .find(|e| e.reason == reason::FIELD_MANAGER_CONFLICT)
            .expect("event");
        assert!(ev.note.contains("platform-team"), "{}", ev.note);
        w.converge();
        let k = conflicts_of(&w, "c");
        assert_eq!(k[0].manager.as_deref(), Some("platform-team"));
        assert_eq!(k[0].node_eni.as_deref(), Some("eni-2"));
        assert_eq!(
            w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
            Some("other.com/theirs")
        );

        // --force-conflicts takes it over.
        w.settings.force_conflicts = true;
        let p = w.plan();
        assert!(
            p.writes
                .iter()
                .any(|x| matches!(x, Write::ApplyNodeEni { force: true, .. })),
            "{:?}",
            p.writes
        );
        w.converge();
        assert_eq!(
            w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
            Some(RES2)
        );
        assert!(conflicts_of(&w, "c").is_empty());
    }

    #[test]
    fn another_manager_with_the_same_value_shares_ownership() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        let mut e = eni("eni-2", &[("g", "a")], 2, 1);
        e.spec.enable_dpdk = Some(true);
        set_owner(
            &mut e.metadata,
            "platform-team",
            json!({"f:spec": {"f:enableDPDK": {}}}),
        );
        w.enis.push(e);
        w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
        w.converge();
        assert!(conflicts_of(&w, "c").is_empty());
        // Teardown releases only our ownership: enableDPDK stays true, it is theirs too.
        w.delete_config("c");
        w.agent_reports("n1");
        w.converge();
        w.agent_reports("n1");
        w.converge();
        let e = w.eni("eni-2");
        assert_eq!(
            e.spec.enable_dpdk,
            Some(true),
            "never write false over someone else's value"
        );
        assert_eq!(e.spec.dpdk_resource_name, None);
    }

    #[test]
    fn server_side_conflict_blocks_until_the_object_changes() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.enis.push(eni("eni-2", &[("g", "a")], 2, 1));
        w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
        w.server_conflicts.push(ServerConflict {
            kind: Kind::NodeEni,
            name: "eni-2".into(),
            resource_version: "1".into(),
            conflicts: vec![ssa::FieldConflict {
                manager: "kubectl-edit".into(),
                field: ".spec.dpdkDriver".into(),
            }],
        });
        let p = w.plan();
        assert!(
            !p.writes
                .iter()
                .any(|x| matches!(x, Write::ApplyNodeEni { .. }))
        );
        w.apply(&p);
        assert_eq!(
            conflicts_of(&w, "c")[0].manager.as_deref(),
            Some("kubectl-edit")
        );
        bump(&mut w.enis[0].metadata);
        assert!(
            w.plan()
                .writes
                .iter()
                .any(|x| matches!(x, Write::ApplyNodeEni { .. })),
            "retried once the NodeENI changed"
        );
    }

    #[test]
    fn label_owned_by_someone_else_with_another_value_is_a_conflict() {
        let mut w = World::new();
        let mut n = node("n1", &[("g", "a"), (NODE_ENABLED_LABEL, "false")]);
        set_owner(
            &mut n,
            "kubectl-label",
            json!({"f:metadata": {"f:labels": {format!("f:{NODE_ENABLED_LABEL}"): {}}}}),
        );
        w.nodes.push(n);
        w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
        w.converge();
        assert_eq!(w.node_label("n1"), Some("false"));
        let k = conflicts_of(&w, "c");
        assert_eq!(
            (k[0].reason.as_str(), k[0].manager.as_deref()),
            (reason::FIELD_MANAGER_CONFLICT, Some("kubectl-label"))
        );
    }

    #[test]
    fn teardown_runs_in_two_phases_and_in_order() {
        let mut w = seed_world(1);
        w.converge();
        w.agent_reports("node-0");
        w.label_node("node-0", NODE_READY_LABEL, "true", AGENT_MANAGER);
        w.converge();
        assert_eq!(ready_condition(&w, "default-dpdk-config").0, "True");

        w.delete_config("default-dpdk-config");
        // Phase 1: only the devices go.
        let p = w.plan();
        let kinds: Vec<&Write> = p
            .writes
            .iter()
            .filter(|x| !matches!(x, Write::ConfigStatus { .. }))
            .collect();
        assert_eq!(kinds.len(), 1, "{kinds:?}");
        match kinds[0] {
            Write::ApplyNodeState {
                spec,
                teardown_since,
                ..
            } => {
                assert!(spec.devices.is_empty());
                assert!(teardown_since.is_some());
            }
            other => panic!("phase 1 must empty the devices first, got {other:?}"),
        }
        w.apply(&p);
        // The agent has not confirmed yet: nothing else moves, however long it takes.
        w.now = t(100_000);
        let p = w.plan();
        assert!(
            p.writes
                .iter()
                .all(|x| matches!(x, Write::ConfigStatus { .. })),
            "{:?}",
            p.writes
        );
        assert_eq!(
            p.requeue_after, None,
            "an agent that reported once is waited for"
        );
        w.apply(&p);
        assert_eq!(w.eni("multi-eni-dpdk").spec.enable_dpdk, Some(true));
        assert_eq!(w.node_label("node-0"), Some("true"));

        assert_eq!(w.label("node-0", NODE_READY_LABEL), Some("true"));

        // Phase 2: the agent restored the devices; then NodeENI, label, the agent's ready
        // label, state, finalizer, in order.
        w.agent_reports("node-0");
        let mut order = Vec::new();
        for _ in 0..10 {
            let p = w.plan();
            if p.writes.is_empty() {
                break;
            }
            order.extend(
                p.writes
                    .iter()
                    .filter(|x| !matches!(x, Write::ConfigStatus { .. }))
                    .map(|x| x.op()),
            );
            w.apply(&p);
        }
        assert_eq!(
            order,
            vec![
                "release",
                "unlabel",
                "unready",
                "delete",
                "remove_finalizer"
            ]
        );
        assert!(w.cfg("default-dpdk-config").is_none());
        assert!(w.state("node-0").is_none());
        assert_eq!(w.node_label("node-0"), None);
        assert_eq!(w.label("node-0", NODE_READY_LABEL), None);
        let e = w.eni("multi-eni-dpdk");
        assert_eq!(
            (
                e.spec.enable_dpdk.as_ref(),
                e.spec.dpdk_resource_name.as_ref()
            ),
            (None, None)
        );
    }

    #[test]
    fn teardown_keeps_a_ready_label_the_agent_does_not_own_or_another_party_still_enables() {
        let mut w = seed_world(2);
        w.converge();
        w.agent_reports("node-0");
        w.agent_reports("node-1");
        // node-0: labelled ready by hand. node-1: the agent's label, but someone else
        // enables the node too, so the agent stays scheduled there.
        w.label_node("node-0", NODE_READY_LABEL, "true", "kubectl-label");
        w.label_node("node-1", NODE_READY_LABEL, "true", AGENT_MANAGER);
        w.label_node("node-1", NODE_ENABLED_LABEL, "true", "platform-team");
        w.converge();

        w.delete_config("default-dpdk-config");
        w.apply(&w.plan());
        w.agent_reports("node-0");
        w.agent_reports("node-1");
        let writes = w.converge();
        assert!(
            !writes
                .iter()
                .any(|x| matches!(x, Write::RemoveReadyLabel { .. })),
            "{writes:?}"
        );
        assert!(w.cfg("default-dpdk-config").is_none(), "teardown finished");
        assert!(w.state("node-0").is_none() && w.state("node-1").is_none());
        assert_eq!(w.label("node-0", NODE_READY_LABEL), Some("true"));
        assert_eq!(w.label("node-1", NODE_READY_LABEL), Some("true"));
        assert_eq!(
            w.node_label("node-1"),
            Some("true"),
            "the other party's label"
        );
    }

    #[test]
    fn teardown_without_an_agent_finishes_after_the_timeout_with_an_event() {
        let mut w = seed_world(1);
        w.settings.teardown_timeout = Duration::from_secs(60);
        w.converge();
        w.delete_config("default-dpdk-config");
        w.apply(&w.plan());
        w.now = t(100 + 59);
        let p = w.plan();
        assert!(
            p.writes
                .iter()
                .all(|x| matches!(x, Write::ConfigStatus { .. })),
            "{:?}",
            p.writes
        );
        let wake = p.requeue_after.expect("a wake-up at the deadline");
        assert!(wake <= Duration::from_secs(1), "{wake:?}");
        w.apply(&p);
        w.now = t(100 + 60);
        let mut events = Vec::new();
        let mut order = Vec::new();
        for _ in 0..10 {
            let p = w.plan();
            if p.writes.is_empty() {
                break;
            }
            events.extend(p.events.clone());
            order.extend(
                p.writes
                    .iter()
                    .filter(|x| !matches!(x, Write::ConfigStatus { .. }))
                    .map(|x| x.op()),
            );
            w.apply(&p);
        }
        assert_eq!(
            order,
            vec!["release", "unlabel", "delete", "remove_finalizer"]
        );
        let ev = events
            .iter()
            .find(|e| e.reason == reason::TEARDOWN_WITHOUT_AGENT)
            .expect("event saying so");
        assert_eq!(ev.config, "default-dpdk-config");
        assert!(
            ev.note.contains("node-0") && ev.note.contains("60s"),
            "{}",
            ev.note
        );
        assert_eq!(ev.after, Some((Kind::NodeState, "node-0".to_string())));
    }

    #[test]
    fn the_teardown_clock_keeps_sub_second_precision() {
        let mut w = seed_world(1);
        w.settings.teardown_timeout = Duration::from_secs(60);
        w.converge();
        w.delete_config("default-dpdk-config");
        w.now = t(100) + Duration::from_millis(900);
        w.apply(&w.plan());
        // 59.95 s later: a start truncated to whole seconds would already have expired.
        w.now = t(100) + Duration::from_millis(900 + 59_950);
        let p = w.plan();
        assert!(
            p.writes
                .iter()
                .all(|x| matches!(x, Write::ConfigStatus { .. })),
            "{:?}",
            p.writes
        );
        w.now = t(100) + Duration::from_millis(900 + 60_000);
        assert!(
            w.plan()
                .writes
                .iter()
                .any(|x| matches!(x, Write::ReleaseNodeEni { .. }))
        );
    }

    #[test]
    fn a_node_leaving_the_selector_is_torn_down_alone() {
        let mut w = seed_world(2);
        w.converge();
        w.agent_reports("node-0");
        w.agent_reports("node-1");
        w.converge();
        w.nodes[1].labels.as_mut().expect("labels").remove("ng");
        // The NodeENI's selector no longer reaches node-1 and the ENI controller detaches.
        w.enis[0]
            .status
            .as_mut()
            .expect("status")
            .attachments
            .retain(|a| a.node_id.as_deref() != Some("node-1"));
        w.apply(&w.plan());
        assert_eq!(w.state("node-1").map(|s| s.spec.devices.len()), Some(0));
        w.agent_reports("node-1");
        w.converge();
        assert!(w.state("node-1").is_none());
        assert_eq!(w.node_label("node-1"), None);
        assert_eq!(w.node_label("node-0"), Some("true"));
        assert_eq!(
            w.eni("multi-eni-dpdk").spec.enable_dpdk,
            Some(true),
            "still used by node-0"
        );
        let st = w
            .cfg("default-dpdk-config")
            .and_then(|c| c.status.clone())
            .expect("status");
        assert_eq!((st.matched_nodes, st.ready_nodes), (1, 1));
    }

    #[test]
    fn late_changes_converge() {
        let mut w = World::new();
        w.configs
            .push(config("c", 0, &[("g", "late")], &[(2, RES2)]));
        w.converge();
        // A node labelled later.
        w.nodes.push(node("n1", &[("g", "late")]));
        w.converge();
        assert_eq!(w.node_label("n1"), Some("true"));
        assert_eq!(w.state("n1").map(|s| s.spec.devices.len()), Some(0));
        // A NodeENI created later.
        w.enis.push(eni("eni-late", &[("g", "late")], 2, 1));
        w.converge();
        assert_eq!(w.eni("eni-late").spec.enable_dpdk, Some(true));
        assert_eq!(
            w.state("n1").map(|s| s.spec.devices[0].eni_id.clone()),
            Some(None)
        );
        // An attachment appearing later fills in the ENI ID.
        attach(&mut w.enis[0], "n1", 2);
        w.converge();
        assert_eq!(
            w.state("n1").map(|s| s.spec.devices[0].eni_id.clone()),
            Some(Some("eni-n1-2".into()))
        );
    }

    #[test]
    fn sharded_controller_leaves_other_objects_alone() {
        let mut w = World::new();
        w.settings.cluster_scope = false;
        // Another shard's converged node, state and NodeENI.
        let mut other_node = node("other", &[("g", "other")]);
        set_owner(
            &mut other_node,
            CONTROLLER_MANAGER,
            json!({"f:metadata": {"f:labels": {format!("f:{NODE_ENABLED_LABEL}"): {}}}}),
        );
        other_node
            .labels
            .as_mut()
            .expect("labels")
            .insert(NODE_ENABLED_LABEL.into(), "true".into());
        w.nodes.push(other_node);
        let mut other_eni = eni("eni-other", &[("g", "other")], 2, 1);
        other_eni.spec.enable_dpdk = Some(true);
        set_owner(
            &mut other_eni.metadata,
            CONTROLLER_MANAGER,
            json!({"f:spec": {"f:enableDPDK": {}}}),
        );
        w.enis.push(other_eni);
        let mut st = DPDKNodeState::new(
            "other",
            DPDKNodeStateSpec {
                configs: vec!["other-config".into()],
                ..Default::default()
            },
        );
        set_owner(&mut st.metadata, CONTROLLER_MANAGER, json!({"f:spec": {}}));
        w.states.push(st);
        // Our config.
        w.nodes.push(node("mine", &[("g", "mine")]));
        w.configs.push(config("c", 0, &[("g", "mine")], &[]));
        let writes = w.converge();
        assert!(
            writes
                .iter()
                .all(|x| x.target().1 == "c" || x.target().1 == "mine"),
            "{writes:?}"
        );
        // In cluster scope the same leftovers are ours to tear down.
        w.settings.cluster_scope = true;
        let p = w.plan();
        assert!(
            p.writes
                .iter()
                .any(|x| matches!(x, Write::ReleaseNodeEni { name, .. } if name == "eni-other")),
            "{:?}",
            p.writes
        );
    }

    #[test]
    fn deleted_node_state_is_deleted_directly() {
        let mut w = seed_world(1);
        w.converge();
        w.nodes.clear();
        w.enis[0].status = None;
        let p = w.plan();
        assert!(
            p.writes
                .iter()
                .any(|x| matches!(x, Write::DeleteNodeState { node, .. } if node == "node-0")),
            "{:?}",
            p.writes
        );
    }

    #[test]
    fn empty_selector_matches_no_node() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.configs.push(config("c", 0, &[], &[(2, RES2)]));
        w.converge();
        assert_eq!(w.node_label("n1"), None);
        assert_eq!(
            ready_condition(&w, "c"),
            ("True".into(), "NoMatchingNodes".into())
        );
    }

    #[test]
    fn conflict_events_are_published_once() {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.enis.push(eni("eni-ms", &[("g", "a")], 2, 2));
        w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
        let p = w.plan();
        assert_eq!(
            p.events
                .iter()
                .filter(|e| e.reason == reason::PARTIAL_MULTI_SUBNET)
                .count(),
            1
        );
        assert_eq!(
            p.events[0].after,
            Some((Kind::Config, "c".to_string())),
            "tied to the status write"
        );
        w.apply(&p);
        assert!(w.plan().events.is_empty());
    }

    #[test]
    fn write_combing_is_warned_again_for_a_new_generation_only() {
        let mut w = seed_world(1);
        w.converge();
        w.configs[0].metadata.generation = Some(2);
        let p = w.plan();
        assert_eq!(
            p.events
                .iter()
                .filter(|e| e.reason == reason::DEPRECATED_WRITE_COMBING)
                .count(),
            1
        );
        w.apply(&p);
        assert!(w.plan().events.is_empty());
        w.configs[0].spec.driver_options.write_combing = None;
        w.configs[0].spec.driver_options.write_combining = Some(true);
        w.configs[0].metadata.generation = Some(3);
        assert!(
            w.plan().events.is_empty(),
            "the correct spelling is not warned about"
        );
    }

    #[test]
    fn a_large_cluster_plans_in_one_pass_and_rests() {
        let mut w = World::new();
        for i in 0..300 {
            let name = format!("n{i}");
            w.nodes.push(node(&name, &[("g", "big"), ("host", &name)]));
            for d in 1..=4 {
                let mut e = eni(&format!("eni-{i}-{d}"), &[("host", &name)], d, 1);
                attach(&mut e, &name, d);
                w.enis.push(e);
            }
        }
        w.configs.push(config(
            "big",
            0,
            &[("g", "big")],
            &[
                (1, "a.com/1"),
                (2, "a.com/2"),
                (3, "a.com/3"),
                (4, "a.com/4"),
            ],
        ));
        let p = w.plan();
        assert_eq!(p.writes.len(), 1 + 300 + 300 + 1200 + 1);
        w.apply(&p);
        let rest = w.converge();
        assert_eq!(rest.len(), 1, "only the status catches up: {rest:?}");
        assert!(w.plan().writes.is_empty());
        let st = w.cfg("big").and_then(|c| c.status.clone()).expect("status");
        assert_eq!((st.matched_nodes, st.updated_node_enis.len()), (300, 1200));
    }
}
