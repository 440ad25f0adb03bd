//! Phase 5, rollout: per live config, which of the DPDKNodeState spec changes the earlier
//! phases planned may be written this pass (waves of at most `maxUnavailable` counted
//! nodes, canaries first, nothing while halted or paused), the rollout marks each node
//! carries, and where each config's rollout stands. It never invents a spec: it only
//! holds back writes of `node_state` and `teardown` (and the NodeENI applies reaching a
//! held node), so a converged snapshot still plans nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::claims::Claims;
use super::index::{ConfigIx, Index, NodeIx, PerConfig, name_of};
use super::{PassInput, TEARDOWN_SINCE_ANNOTATION, Write, rfc3339};
use crate::api::{
    DEFAULT_MAX_UNAVAILABLE, DEFAULT_PROGRESS_DEADLINE_SECONDS, DPDKNodeState, RolloutPhase,
    RolloutSpec, SyncStatus,
};
use crate::labels::{
    ROLLOUT_COUNTED_ANNOTATION, ROLLOUT_READY_SINCE_ANNOTATION, ROLLOUT_UPDATING_SINCE_ANNOTATION,
};

/// The rollout annotations of a DPDKNodeState, as the controller writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutMarks {
    /// When the controller wrote the spec change the node is still rolling out.
    pub updating_since: Option<String>,
    /// That change counts against `maxUnavailable` (the node had devices to lose).
    pub counted: bool,
    /// Since when the node has been ready with it, while `minReadySeconds` runs.
    pub ready_since: Option<String>,
}

impl RolloutMarks {
    /// The marks a DPDKNodeState carries.
    pub fn of(meta: &ObjectMeta) -> Self {
        let get = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        Self {
            updating_since: get(ROLLOUT_UPDATING_SINCE_ANNOTATION),
            counted: get(ROLLOUT_COUNTED_ANNOTATION).as_deref() == Some("true"),
            ready_since: get(ROLLOUT_READY_SINCE_ANNOTATION),
        }
    }

    /// The annotations to apply; the ones left out are removed by the apply.
    pub fn annotations(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(t) = &self.updating_since {
            out.push((ROLLOUT_UPDATING_SINCE_ANNOTATION, t.as_str()));
        }
        if self.counted {
            out.push((ROLLOUT_COUNTED_ANNOTATION, "true"));
        }
        if let Some(t) = &self.ready_since {
            out.push((ROLLOUT_READY_SINCE_ANNOTATION, t.as_str()));
        }
        out
    }
}

/// Where one node stands in a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRollout {
    /// Its spec change is planned but not written: it waits its turn.
    Pending,
    /// The change is written; the node is not ready with it for minReadySeconds yet.
    Updating,
    /// It reported Failed for the change, or missed progressDeadlineSeconds.
    Failed { reason: String },
    /// Nothing left to do on it.
    Updated,
}

/// One node of a rollout, as [`waves`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutNode {
    pub name: String,
    /// Matched by `canarySelector`.
    pub canary: bool,
    /// Its change counts against `maxUnavailable`. A node that never had DPDK has
    /// nothing to lose: it is not counted and is not held back by the budget.
    pub counted: bool,
    pub state: NodeRollout,
}

/// Nodes whose specs are written together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wave {
    pub nodes: Vec<String>,
    /// A wave of canaries.
    pub canary: bool,
}

/// Where a pending node is among the remaining waves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based wave, of `waves` remaining.
    pub wave: usize,
    pub waves: usize,
    /// 1-based place among the `of` nodes still to change, in rollout order.
    pub position: usize,
    pub of: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wave {} of {}, position {} of {}",
            self.wave, self.waves, self.position, self.of
        )
    }
}

/// One config's rollout, as the status, the metrics, drift and the preview read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRollout {
    pub config: String,
    pub generation: Option<i64>,
    pub phase: RolloutPhase,
    /// `maxUnavailable` resolved against the rollout's nodes.
    pub budget: usize,
    /// Every node of the rollout (matched, or leaving with devices), by name.
    pub nodes: Vec<RolloutNode>,
    /// Matched nodes, and the updated ones among them (the Up-To-Date column).
    pub matched: usize,
    pub updated_matched: usize,
    /// The waves still to come, the first being the one written this pass when it may start.
    pub waves: Vec<Wave>,
}

impl ConfigRollout {
    /// Names of the nodes in `state`'s variant.
    pub fn in_state(&self, f: impl Fn(&NodeRollout) -> bool) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| f(&n.state))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// Failed nodes with their reasons.
    pub fn failed(&self) -> Vec<(&str, &str)> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.state {
                NodeRollout::Failed { reason } => Some((n.name.as_str(), reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Where a pending node is in the remaining waves.
    pub fn position(&self, node: &str) -> Option<Position> {
        let of = self.waves.iter().map(|w| w.nodes.len()).sum();
        let mut before = 0;
        for (i, w) in self.waves.iter().enumerate() {
            if let Some(p) = w.nodes.iter().position(|n| n == node) {
                return Some(Position {
                    wave: i + 1,
                    waves: self.waves.len(),
                    position: before + p + 1,
                    of,
                });
            }
            before += w.nodes.len();
        }
        None
    }
}

/// `maxUnavailable` for a rollout of `nodes` nodes: a count, or a percentage rounded
/// down; at least 1 either way. Unparseable values (the schema rejects them) give 1.
pub fn max_unavailable(spec: Option<&RolloutSpec>, nodes: usize) -> usize {
    let default = IntOrString::String(DEFAULT_MAX_UNAVAILABLE.into());
    let value = spec
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let n = match value {
        IntOrString::Int(i) => usize::try_from(*i).unwrap_or(0),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(0, |p| nodes * p.min(100) / 100),
    };
    n.max(1)
}

/// The waves a rollout takes from here, if every node of each wave succeeds: the
/// nodes not counted go with the first wave (alone when a counted node is still in
/// flight), then the counted ones in rollout order (canaries first, then by name) in
/// batches of `budget`, canaries never sharing a wave with other nodes. Pure: a caller
/// can compute it from any [`ConfigRollout::nodes`].
pub fn waves(nodes: &[RolloutNode], budget: usize) -> Vec<Wave> {
    let budget = budget.max(1);
    let mut pending: Vec<&RolloutNode> = nodes
        .iter()
        .filter(|n| n.state == NodeRollout::Pending)
        .collect();
    pending.sort_by(|a, b| (!a.canary, &a.name).cmp(&(!b.canary, &b.name)));
    let free: Vec<String> = pending
        .iter()
        .filter(|n| !n.counted)
        .map(|n| n.name.clone())
        .collect();
    let mut out: Vec<Wave> = Vec::new();
    for canary in [true, false] {
        let group: Vec<String> = pending
            .iter()
            .filter(|n| n.counted && n.canary == canary)
            .map(|n| n.name.clone())
            .collect();
        out.extend(group.chunks(budget).map(|c| Wave {
            nodes: c.to_vec(),
            canary,
        }));
    }
    if free.is_empty() {
        return out;
    }
    match out.first_mut() {
        Some(first) if !blocked(nodes, first) => {
            let mut merged = free;
            merged.append(&mut first.nodes);
            merged.sort();
            first.nodes = merged;
        }
        _ => out.insert(
            0,
            Wave {
                nodes: free,
                canary: false,
            },
        ),
    }
    out
}

/// A counted wave may not start while a counted node is in flight, nor a wave of
/// other nodes while a canary is.
fn blocked(nodes: &[RolloutNode], wave: &Wave) -> bool {
    nodes
        .iter()
        .any(|n| n.state == NodeRollout::Updating && (n.counted || (n.canary && !wave.canary)))
}

/// The nodes of the first wave that may be written this pass.
fn admitted(nodes: &[RolloutNode], waves: &[Wave], halted: bool) -> BTreeSet<String> {
    let Some(first) = waves.first() else {
        return BTreeSet::new();
    };
    if halted {
        return BTreeSet::new();
    }
    let by_name: HashMap<&str, &RolloutNode> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let whole = !blocked(nodes, first);
    first
        .nodes
        .iter()
        .filter(|n| whole || by_name.get(n.as_str()).is_some_and(|r| !r.counted))
        .cloned()
        .collect()
}

/// The output of the rollout phase.
#[derive(Debug, Default)]
pub(crate) struct Rollouts {
    /// Per config; None for configs being deleted.
    pub(crate) per_config: Vec<Option<ConfigRollout>>,
    /// Nodes whose DPDKNodeState spec change is held back this pass.
    pub(crate) held: HashSet<String>,
    /// The marks each node of some rollout must carry after this pass.
    pub(crate) marks: HashMap<String, RolloutMarks>,
    /// Mark-only applies (the spec unchanged).
    pub(crate) writes: Vec<Write>,
    /// The earliest deadline or minReadySeconds expiry ahead.
    pub(crate) wake_at: Option<Timestamp>,
}

impl Rollouts {
    fn wake_at(&mut self, t: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(t, |r| r.min(t)));
    }

    /// Config `c`'s rollout.
    pub(crate) fn of(&self, c: ConfigIx) -> Option<&ConfigRollout> {
        self.per_config.get(c.0).and_then(Option::as_ref)
    }
}

/// The timing knobs that apply to a node: the strictest of its configs'.
#[derive(Clone, Copy, Debug)]
struct Timing {
    min_ready: SignedDuration,
    deadline: SignedDuration,
    paused: bool,
}

fn timing(spec: Option<&RolloutSpec>) -> Timing {
    let secs = |v: Option<i32>, d: i32| SignedDuration::from_secs(i64::from(v.unwrap_or(d).max(0)));
    Timing {
        min_ready: secs(spec.and_then(|r| r.min_ready_seconds), 0),
        deadline: secs(
            spec.and_then(|r| r.progress_deadline_seconds),
            DEFAULT_PROGRESS_DEADLINE_SECONDS,
        ),
        paused: spec.is_some_and(|r| r.paused),
    }
}

/// One node's evaluation, shared by every config listing it.
struct NodeEval {
    state: NodeRollout,
    counted: bool,
    /// The marks to carry when the node's change is not written this pass.
    marks: RolloutMarks,
}

/// Runs the phase over the spec changes the earlier phases planned (`spec_writes`).
pub(crate) fn rollouts(
    input: &PassInput<'_, '_>,
    claims: &Claims,
    spec_writes: &[&Write],
) -> Rollouts {
    let ix = &input.index;
    let changes = spec_changes(ix, spec_writes);
    let members = members(ix, claims);
    let timings = node_timings(ix, &members);
    let mut out = Rollouts::default();
    let mut evals: BTreeMap<NodeIx, NodeEval> = BTreeMap::new();
    for (&n, t) in &timings {
        let name = ix.node_name(n);
        let eval = evaluate(input, ix.state(name), changes.contains(name), *t, &mut out);
        evals.insert(n, eval);
    }
    // A node changes only when every config it is in admits it.
    let mut admitted_by_all: HashMap<NodeIx, bool> = HashMap::new();
    for c in ix.config_ixs() {
        if !ix.is_live(c) {
            out.per_config.push(None);
            continue;
        }
        let (rollout, admitted) = config_rollout(ix, claims, c, &members[c], &evals);
        for &n in &members[c] {
            let ok = admitted.contains(ix.node_name(n));
            *admitted_by_all.entry(n).or_insert(true) &= ok;
        }
        out.per_config.push(Some(rollout));
    }
    for (n, eval) in evals {
        let name = ix.node_name(n).to_string();
        let marks = if eval.state == NodeRollout::Pending {
            if !admitted_by_all.get(&n).copied().unwrap_or(true) {
                out.held.insert(name.clone());
                eval.marks
            } else if eval.counted {
                let t = timings[&n];
                if let Ok(at) = input.now.checked_add(t.deadline) {
                    out.wake_at(at);
                }
                RolloutMarks {
                    updating_since: Some(rfc3339(input.now)),
                    counted: true,
                    ready_since: None,
                }
            } else {
                RolloutMarks::default()
            }
        } else {
            eval.marks
        };
        mark_only_write(ix, &name, &marks, changes.contains(name.as_str()), &mut out);
        out.marks.insert(name, marks);
    }
    out
}

/// Node names whose planned DPDKNodeState apply changes what the agent does: the devices
/// or the driver options. A new revision or configs list alone is not staged.
fn spec_changes<'w>(ix: &Index<'_, '_>, spec_writes: &[&'w Write]) -> HashSet<&'w str> {
    spec_writes
        .iter()
        .filter_map(|w| match w {
            Write::ApplyNodeState { node, spec, .. } => {
                let same = ix.state(node).is_some_and(|s| {
                    s.spec.devices == spec.devices && s.spec.driver_options == spec.driver_options
                });
                (!same).then_some(node.as_str())
            }
            _ => None,
        })
        .collect()
}

/// Each live config's rollout nodes: the nodes it selects, and the existing nodes whose
/// DPDKNodeState lists it although it no longer selects them (they are leaving it).
fn members(ix: &Index<'_, '_>, claims: &Claims) -> PerConfig<Vec<NodeIx>> {
    let mut out: PerConfig<Vec<NodeIx>> = PerConfig::filled(ix.n_configs(), Vec::new());
    let by_name: HashMap<&str, ConfigIx> = ix.config_ixs().map(|c| (ix.cname(c), c)).collect();
    for c in ix.config_ixs() {
        if ix.is_live(c) {
            out[c] = claims.matched[c].clone();
        }
    }
    for s in ix.node_states() {
        let Some(n) = ix.node_named(name_of(&s.metadata)) else {
            continue;
        };
        for name in &s.spec.configs {
            if let Some(&c) = by_name.get(name.as_str())
                && ix.is_live(c)
                && !out[c].contains(&n)
            {
                out[c].push(n);
            }
        }
    }
    for c in ix.config_ixs() {
        out[c].sort_by_key(|&n| ix.node_name(n));
    }
    out
}

/// Per rollout node, the strictest timing of its configs: the longest minReadySeconds,
/// the shortest deadline, paused when any is.
fn node_timings(ix: &Index<'_, '_>, members: &PerConfig<Vec<NodeIx>>) -> BTreeMap<NodeIx, Timing> {
    let mut out: BTreeMap<NodeIx, Timing> = BTreeMap::new();
    for c in ix.config_ixs() {
        let t = timing(ix.config(c).spec.rollout.as_ref());
        for &n in &members[c] {
            out.entry(n)
                .and_modify(|o| {
                    o.min_ready = o.min_ready.max(t.min_ready);
                    o.deadline = o.deadline.min(t.deadline);
                    o.paused |= t.paused;
                })
                .or_insert(t);
        }
    }
    out
}

/// What the agent and the device plugin report for the live spec.
enum Readiness {
    Ready,
    Failed(String),
    NotYet,
}

fn readiness(s: &DPDKNodeState) -> Readiness {
    let Some(st) = s.status.as_ref() else {
        return Readiness::NotYet;
    };
    if st.observed_generation.is_none() || st.observed_generation < s.metadata.generation {
        return Readiness::NotYet;
    }
    match st.sync_status {
        Some(SyncStatus::Failed) => Readiness::Failed(format!(
            "node agent failed: {}",
            st.last_sync_error.as_deref().unwrap_or("no error given")
        )),
        Some(SyncStatus::Succeeded) if plugin_healthy(s) => Readiness::Ready,
        _ => Readiness::NotYet,
    }
}

/// The device plugin advertises, per resource the spec lists, at least as many healthy
/// devices as the spec lists for it.
fn plugin_healthy(s: &DPDKNodeState) -> bool {
    let mut wanted: BTreeMap<&str, i32> = BTreeMap::new();
    for d in &s.spec.devices {
        *wanted.entry(d.resource_name.as_str()).or_default() += 1;
    }
    let advertised = s
        .status
        .as_ref()
        .and_then(|st| st.device_plugin.as_ref())
        .map(|p| p.resources.as_slice())
        .unwrap_or_default();
    wanted.iter().all(|(name, n)| {
        advertised
            .iter()
            .any(|r| r.resource_name == *name && r.healthy >= *n)
    })
}

/// The node had DPDK devices to lose.
fn had_devices(s: Option<&DPDKNodeState>) -> bool {
    s.is_some_and(|s| {
        !s.spec.devices.is_empty()
            || s.status
                .as_ref()
                .is_some_and(|st| st.devices.iter().any(|d| d.bound))
    })
}

fn parse(t: Option<&String>) -> Option<Timestamp> {
    t.and_then(|t| t.parse().ok())
}

/// Where a node stands, and the marks it keeps when its change is not written now.
fn evaluate(
    input: &PassInput<'_, '_>,
    live: Option<&DPDKNodeState>,
    changes: bool,
    t: Timing,
    out: &mut Rollouts,
) -> NodeEval {
    let kept = live
        .map(|s| RolloutMarks::of(&s.metadata))
        .unwrap_or_default();
    if changes {
        return NodeEval {
            state: NodeRollout::Pending,
            counted: had_devices(live),
            marks: kept,
        };
    }
    let Some(s) = live else {
        return NodeEval {
            state: NodeRollout::Updated,
            counted: false,
            marks: RolloutMarks::default(),
        };
    };
    // A change that is not counted carries no marks: its node is updating until ready,
    // and never halts the rollout.
    let Some(since) = kept.updating_since.as_ref() else {
        let state = match readiness(s) {
            Readiness::Ready => NodeRollout::Updated,
            _ => NodeRollout::Updating,
        };
        return NodeEval {
            state,
            counted: false,
            marks: RolloutMarks::default(),
        };
    };
    let since = since.parse::<Timestamp>().unwrap_or(input.now);
    let counted = kept.counted;
    let eval = |state, marks| NodeEval {
        state,
        counted,
        marks,
    };
    match readiness(s) {
        Readiness::Ready => {
            if t.min_ready.is_zero() {
                return eval(NodeRollout::Updated, RolloutMarks::default());
            }
            let live_ready = parse(kept.ready_since.as_ref()).filter(|r| *r >= since);
            let ready_since = live_ready.unwrap_or(input.now);
            let until = ready_since.checked_add(t.min_ready).unwrap_or(ready_since);
            if until <= input.now {
                return eval(NodeRollout::Updated, RolloutMarks::default());
            }
            out.wake_at(until);
            let ready_since = match live_ready {
                Some(_) => kept.ready_since.clone(),
                None => Some(rfc3339(input.now)),
            };
            let marks = RolloutMarks {
                ready_since,
                ..kept
            };
            eval(NodeRollout::Updating, marks)
        }
        Readiness::Failed(reason) => failed(t, reason, kept, counted),
        Readiness::NotYet => {
            let marks = RolloutMarks {
                ready_since: None,
                ..kept
            };
            let deadline = since.checked_add(t.deadline).unwrap_or(since);
            if deadline <= input.now {
                let reason = format!(
                    "no success within progressDeadlineSeconds ({}s)",
                    t.deadline.as_secs()
                );
                return failed(t, reason, marks, counted);
            }
            out.wake_at(deadline);
            eval(NodeRollout::Updating, marks)
        }
    }
}

/// A failed node. Pausing the rollout acknowledges the failure: the marks go, so
/// clearing `paused` resumes without it (the node stays as it is).
fn failed(t: Timing, reason: String, marks: RolloutMarks, counted: bool) -> NodeEval {
    NodeEval {
        state: NodeRollout::Failed { reason },
        counted,
        marks: if t.paused {
            RolloutMarks::default()
        } else {
            marks
        },
    }
}

/// Config `c`'s rollout and the nodes it lets change this pass.
fn config_rollout(
    ix: &Index<'_, '_>,
    claims: &Claims,
    c: ConfigIx,
    members: &[NodeIx],
    evals: &BTreeMap<NodeIx, NodeEval>,
) -> (ConfigRollout, BTreeSet<String>) {
    let cfg = ix.config(c);
    let spec = cfg.spec.rollout.as_ref();
    let selector = spec.and_then(|r| r.canary_selector.as_ref());
    let nodes: Vec<RolloutNode> = members
        .iter()
        .filter_map(|&n| {
            let e = evals.get(&n)?;
            Some(RolloutNode {
                name: ix.node_name(n).to_string(),
                canary: selector.is_some_and(|s| selects(s, ix.node(n))),
                counted: e.counted,
                state: e.state.clone(),
            })
        })
        .collect();
    let budget = max_unavailable(spec, nodes.len());
    let waves = waves(&nodes, budget);
    let has_failed = nodes
        .iter()
        .any(|n| matches!(n.state, NodeRollout::Failed { .. }));
    let paused = spec.is_some_and(|r| r.paused);
    let admitted = admitted(&nodes, &waves, has_failed || paused);
    let settled = nodes.iter().all(|n| n.state == NodeRollout::Updated);
    let phase = if has_failed && !paused {
        RolloutPhase::Stalled
    } else if paused {
        RolloutPhase::Paused
    } else if settled {
        RolloutPhase::Complete
    } else {
        RolloutPhase::Progressing
    };
    let matched: HashSet<&str> = claims.matched[c].iter().map(|&n| ix.node_name(n)).collect();
    let updated_matched = nodes
        .iter()
        .filter(|n| n.state == NodeRollout::Updated && matched.contains(n.name.as_str()))
        .count();
    let rollout = ConfigRollout {
        config: ix.cname(c).to_string(),
        generation: cfg.metadata.generation,
        phase,
        budget,
        nodes,
        matched: matched.len(),
        updated_matched,
        waves,
    };
    (rollout, admitted)
}

/// A label selector (matchLabels and matchExpressions) against a node's labels.
pub fn selects(selector: &LabelSelector, node: &ObjectMeta) -> bool {
    let empty = BTreeMap::new();
    let labels = node.labels.as_ref().unwrap_or(&empty);
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// An apply that only changes a node's marks, when no spec change carries them.
fn mark_only_write(
    ix: &Index<'_, '_>,
    name: &str,
    marks: &RolloutMarks,
    changes: bool,
    out: &mut Rollouts,
) {
    if changes {
        return;
    }
    let Some(s) = ix.state(name) else {
        return;
    };
    if RolloutMarks::of(&s.metadata) == *marks {
        return;
    }
    out.writes.push(Write::ApplyNodeState {
        node: name.to_string(),
        spec: s.spec.clone(),
        teardown_since: s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TEARDOWN_SINCE_ANNOTATION))
            .cloned(),
        rollout: marks.clone(),
    });
}

/// The writes of the earlier phases, less the held-back spec changes and the NodeENI
/// applies that reach a held node, with every DPDKNodeState apply carrying its marks.
pub(crate) fn gate(ix: &Index<'_, '_>, rollouts: &Rollouts, writes: Vec<Write>) -> Vec<Write> {
    let held_ixs: HashSet<NodeIx> = rollouts
        .held
        .iter()
        .filter_map(|n| ix.node_named(n))
        .collect();
    let held_enis: HashSet<&str> = if held_ixs.is_empty() {
        HashSet::new()
    } else {
        ix.eni_ixs()
            .filter(|&e| ix.eni_reach(e).iter().any(|n| held_ixs.contains(n)))
            .map(|e| ix.eni_name(e))
            .collect()
    };
    writes
        .into_iter()
        .filter_map(|w| match w {
            Write::ApplyNodeState {
                node,
                spec,
                teardown_since,
                ..
            } => {
                if rollouts.held.contains(&node) {
                    return None;
                }
                let rollout = rollouts.marks.get(&node).cloned().unwrap_or_default();
                Some(Write::ApplyNodeState {
                    node,
                    spec,
                    teardown_since,
                    rollout,
                })
            }
            Write::ApplyNodeEni { ref name, .. } => {
                (!held_enis.contains(name.as_str())).then_some(w)
            }
            w => Some(w),
        })
        .collect()
}
