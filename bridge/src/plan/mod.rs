//! The DPDK controller's planner: a pure function from what the cluster holds
//! (DPDKConfigs, Nodes, NodeENIs, DPDKNodeStates) to the writes that bring it to the
//! desired state, the conflicts that block some of them, and the DPDKConfig statuses.
//!
//! It does no I/O. The runtime (dpdk-reconciler's controller) feeds it snapshots of its
//! caches and executes [`ClusterPlan::writes`] in [`Write::stage`] order. Every write is
//! decided by comparing the desired state with the observed one, so a snapshot that is
//! already converged plans nothing.
//!
//! One pass indexes the snapshot (`index`: configs in age order, nodes by label, NodeENIs
//! by selector, typed indexes `ConfigIx`, `NodeIx`, `EniIx`), then runs these phases in
//! order, each a function from the earlier phases' named outputs to its own (see [`plan`]):
//! 1. `claims`: the nodes each config selects; per node, the device indexes it is asked
//!    for after overlap resolution, and their target NodeENIs.
//! 2. `node_eni`: per targeted NodeENI, the winning values, the checks that block it, the apply.
//! 3. `node_state`: per matched node, the desired DPDKNodeState spec and the `enabled` label.
//! 4. `teardown`: the controller's scope, the release of unclaimed NodeENIs, and the
//!    teardown steps of nodes no live config selects.
//! 5. `rollout`: per live config, which planned DPDKNodeState spec changes (and NodeENI
//!    applies reaching their nodes) are written this pass, in waves of `maxUnavailable`,
//!    canaries first, halting on a failure; the nodes' rollout marks; where it stands.
//! 6. `status`: per config, the finalizer, the status (with `status.rollout`) and its events.
//!
//! Then the writes are put in stage order and the earliest teardown, rollout deadline or
//! minReadySeconds expiry becomes the requeue. A new phase is one more module of that shape, called from [`plan`] in its
//! place, its writes and events joined to the others.
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
//! - Teardown goes in two steps: first the node's DPDKNodeState loses the devices; only
//!   when the agent reports them restored (or, for a node whose agent never reported,
//!   after the teardown timeout) are NodeENI fields released, then the node label, then
//!   the agent's `ready` label removed, then the DPDKNodeState deleted. Each step is
//!   planned only once the previous one is observed, so the order holds across restarts
//!   and leader changes.

mod claims;
mod index;
mod node_eni;
mod node_state;
mod outcome;
pub mod rollout;
#[cfg(test)]
mod rollout_tests;
mod status;
mod teardown;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::api::{DPDKConfig, DPDKConfigStatus, DPDKNodeState, DPDKNodeStateSpec, NodeENI};
use crate::ssa::{self, DpdkFields};

pub use index::age_key;
pub use outcome::{EniOutcome, Outcome, outcome};
pub use rollout::{ConfigRollout, RolloutMarks};

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
    /// Stalled reason and Warning event: a node failed or missed its deadline in a rollout.
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    /// Reconciling reason: `spec.rollout.paused` with nodes left.
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    /// Reconciling reason: every node is ready but some are still in minReadySeconds.
    pub const ROLLOUT_PROGRESSING: &str = "RolloutProgressing";
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
    /// Write a NodeENI's `enableDPDK` only once the agents report every attached
    /// attachment `dpdkBound`, and then `dpdkPCIAddress` (docs/multi-eni-controller.md).
    /// `dpdk-reconciler run` turns it on; off, `enableDPDK` is written at once.
    pub enable_after_bound: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            force_conflicts: false,
            teardown_timeout: Duration::from_secs(300),
            cluster_scope: true,
            enable_after_bound: false,
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
        /// The rollout annotations (updating-since, rollout-counted, ready-since).
        rollout: RolloutMarks,
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
pub struct ClusterPlan {
    /// Writes in stage order.
    pub writes: Vec<Write>,
    pub events: Vec<PlannedEvent>,
    /// Plan again after this long even without a change (teardown timeouts, rollout
    /// deadlines and minReadySeconds).
    pub requeue_after: Option<Duration>,
    pub stats: Stats,
    /// Per live config, where its rollout stands and the waves still to come.
    pub rollouts: Vec<ConfigRollout>,
}

/// What every phase of one pass reads: the indexed snapshot, the knobs and the clock.
pub(crate) struct PassInput<'s, 'a> {
    pub(crate) index: index::Index<'s, 'a>,
    pub(crate) settings: &'s Settings,
    /// For the teardown clock and condition times only.
    pub(crate) now: Timestamp,
}

/// What the phases before `status` produce in one pass, in call order.
pub(crate) struct PhaseOutputs {
    pub(crate) claims: claims::Claims,
    pub(crate) node_enis: node_eni::NodeEnis,
    pub(crate) node_states: node_state::NodeStates,
    pub(crate) teardown: teardown::Teardown,
    pub(crate) rollouts: rollout::Rollouts,
}

impl PhaseOutputs {
    /// Runs claims, node_eni, node_state, teardown and rollout over `input`.
    pub(crate) fn run(input: &PassInput<'_, '_>) -> Self {
        let claims = claims::claims(&input.index);
        let node_enis = node_eni::node_enis(input, &claims);
        let node_states = node_state::node_states(input, &claims, &node_enis);
        let teardown = teardown::teardown(input, &claims, &node_enis);
        let spec_writes: Vec<&Write> = node_states.writes.iter().chain(&teardown.writes).collect();
        let rollouts = rollout::rollouts(input, &claims, &spec_writes);
        Self {
            claims,
            node_enis,
            node_states,
            teardown,
            rollouts,
        }
    }

    /// The status phase's view of them.
    pub(crate) fn for_status(&self) -> status::Phases<'_> {
        status::Phases {
            claims: &self.claims,
            node_enis: &self.node_enis,
            node_states: &self.node_states,
            teardown: &self.teardown,
            rollouts: &self.rollouts,
        }
    }
}

/// Plans one pass. `now` is used for the teardown clock and condition times only.
pub fn plan(snap: &Snapshot<'_>, settings: &Settings, now: Timestamp) -> ClusterPlan {
    let input = PassInput {
        index: index::Index::new(snap),
        settings,
        now,
    };
    let phases = PhaseOutputs::run(&input);
    let statuses = status::statuses(&input, &phases.for_status());
    let PhaseOutputs {
        claims,
        node_enis,
        node_states,
        teardown,
        rollouts,
    } = phases;
    let stats = Stats {
        nodes_matched: claims.nodes.len(),
        nodes_tearing_down: teardown.nodes_tearing_down,
        node_enis_driven: node_enis.driven,
        node_enis_conflicted: node_enis.conflicted,
        node_enis_releasing: teardown.node_enis_releasing,
        ..statuses.stats
    };
    let gated = rollout::gate(
        &input.index,
        &rollouts,
        [node_enis.writes, node_states.writes, teardown.writes].concat(),
    );
    let mut writes = [gated, rollouts.writes, statuses.writes].concat();
    // Stable: within a stage, writes stay in phase order.
    writes.sort_by_key(Write::stage);
    let wake_at = [teardown.wake_at, rollouts.wake_at]
        .into_iter()
        .flatten()
        .min();
    ClusterPlan {
        writes,
        events: [teardown.events, statuses.events].concat(),
        requeue_after: wake_at.map(|at| requeue_after(at, now)),
        stats,
        rollouts: rollouts.per_config.into_iter().flatten().collect(),
    }
}

/// How long until `at`, at least 100ms.
fn requeue_after(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(100))
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

/// Full precision: the value is written once per teardown and copied after, and a
/// truncated start would let the timeout fire up to a second early.
fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}
