//! Phase 5, status: per config, its finalizer (added while live, removed once nothing of
//! it is left on any node), its status (nodes ready, NodeENIs driven, conflicts, health)
//! when it differs from the live one, and Warning events for what is new in it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::claims::{ClaimRef, Claims, NodeClaims};
use super::index::{ConfigIx, NodeIx};
use super::node_eni::NodeEnis;
use super::node_state::NodeStates;
use super::rollout::{ConfigRollout, NodeRollout, Rollouts};
use super::teardown::Teardown;
use super::{
    Kind, MAX_STATUS_CONFLICTS, PassInput, PlannedEvent, Stats, Write, list_names, reason,
};
use crate::api::{
    ConfigConflict, DPDKConfigStatus, DPDKNodeStateSpec, RolloutPhase, RolloutStatus, SyncStatus,
};
use crate::conditions::{self, Health};
use crate::labels::{CONFIG_FINALIZER, CONTROLLER_MANAGER, REVISION_ANNOTATION};
use crate::ssa;

/// What the status phase reads: the earlier phases' outputs.
pub(crate) struct Phases<'p> {
    pub(crate) claims: &'p Claims,
    pub(crate) node_enis: &'p NodeEnis,
    pub(crate) node_states: &'p NodeStates,
    pub(crate) teardown: &'p Teardown,
    pub(crate) rollouts: &'p Rollouts,
}

/// The output of the status phase.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Statuses {
    /// Finalizer and status writes.
    pub(crate) writes: Vec<Write>,
    pub(crate) events: Vec<PlannedEvent>,
    /// The config counts, `nodes_ready` and the listed conflicts by reason; the other
    /// counts are the other phases'.
    pub(crate) stats: Stats,
}

/// A config's status before it is compared with the live one.
struct Figures {
    health: Health,
    matched: i32,
    ready: Vec<String>,
    node_enis: Vec<String>,
    conflicts: Vec<ConfigConflict>,
    rollout: Option<RolloutStatus>,
}

impl Figures {
    fn tearing_down(health: Health) -> Self {
        Self {
            health,
            matched: 0,
            ready: Vec::new(),
            node_enis: Vec::new(),
            conflicts: Vec::new(),
            rollout: None,
        }
    }
}

/// `status.rollout` of a config's rollout.
fn rollout_status(r: &ConfigRollout) -> RolloutStatus {
    let count = |f: fn(&NodeRollout) -> bool| r.in_state(f).len() as i32;
    RolloutStatus {
        observed_generation: r.generation,
        phase: r.phase,
        updated_nodes: count(|s| *s == NodeRollout::Updated),
        updating_nodes: count(|s| *s == NodeRollout::Updating),
        pending_nodes: count(|s| *s == NodeRollout::Pending),
        failed_nodes: r.failed().iter().map(|(n, _)| n.to_string()).collect(),
        up_to_date: format!("{}/{}", r.updated_matched, r.matched),
    }
}

/// Runs the phase.
pub(crate) fn statuses(input: &PassInput<'_, '_>, phases: &Phases<'_>) -> Statuses {
    let mut out = Statuses::default();
    for c in input.index.config_ixs() {
        finish_config(input, phases, c, &mut out);
    }
    out
}

fn has_finalizer(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    m.finalizers.iter().flatten().any(|f| f == CONFIG_FINALIZER)
}

fn finalizer_path() -> [String; 3] {
    [
        "f:metadata".to_string(),
        "f:finalizers".to_string(),
        format!("v:\"{CONFIG_FINALIZER}\""),
    ]
}

/// Config `c`'s finalizer, status and events.
fn finish_config(input: &PassInput<'_, '_>, phases: &Phases<'_>, c: ConfigIx, out: &mut Statuses) {
    let cfg = input.index.config(c);
    let live = input.index.is_live(c);
    let ours = has_finalizer(&cfg.metadata);
    if live && !ours {
        out.writes.push(Write::AddFinalizer {
            config: input.index.cname(c).to_string(),
        });
    }
    if live {
        let figures = live_figures(input, phases, c, out);
        write_status(input, c, figures, out);
    } else if ours {
        finish_deleted(input, phases, c, out);
    }
}

/// A deleted config: the finalizer goes once nothing of it is left on any node;
/// until then its status counts what is left.
fn finish_deleted(input: &PassInput<'_, '_>, phases: &Phases<'_>, c: ConfigIx, out: &mut Statuses) {
    let ix = &input.index;
    let cfg = ix.config(c);
    let name = ix.cname(c);
    let matched = &phases.claims.matched[c];
    let listed = ix
        .node_states()
        .iter()
        .filter(|s| s.spec.configs.iter().any(|x| x == name))
        .count();
    let matched_set: HashSet<NodeIx> = matched.iter().copied().collect();
    let enis_left = phases
        .teardown
        .pending_release
        .iter()
        .filter(|p| p.reach.iter().any(|n| matched_set.contains(n)))
        .count();
    let labels_left = matched
        .iter()
        .filter(|&&n| ix.owned_label(n) && !phases.claims.is_matched(n))
        .count();
    if listed == 0 && enis_left == 0 && labels_left == 0 {
        out.writes.push(Write::RemoveFinalizer {
            config: name.to_string(),
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
    write_status(input, c, Figures::tearing_down(health), out);
}

/// Every conflict the phases found for config `c`, sorted, without repeats.
pub(crate) fn conflicts_of(phases: &Phases<'_>, c: ConfigIx) -> Vec<ConfigConflict> {
    let mut all: Vec<ConfigConflict> = [
        &phases.claims.conflicts,
        &phases.node_enis.conflicts,
        &phases.node_states.conflicts,
    ]
    .iter()
    .flat_map(|k| k[c].iter().cloned())
    .collect();
    all.sort();
    all.dedup();
    all
}

/// A live config's nodes, NodeENIs, conflicts and health.
fn live_figures(
    input: &PassInput<'_, '_>,
    phases: &Phases<'_>,
    c: ConfigIx,
    out: &mut Statuses,
) -> Figures {
    let ix = &input.index;
    let matched = &phases.claims.matched[c];
    let mut ready: Vec<String> = Vec::new();
    let mut waiting: Vec<String> = Vec::new();
    for &n in matched {
        let Some(nc) = phases.claims.of_node(n) else {
            continue;
        };
        let Some(desired) = phases.node_states.desired.get(&n) else {
            continue;
        };
        match not_ready_reason(input, phases, c, nc, desired) {
            None => ready.push(ix.node_name(n).to_string()),
            Some(why) => waiting.push(format!("{} ({why})", ix.node_name(n))),
        }
    }
    ready.sort();
    let node_enis: Vec<String> = phases.node_enis.driven_by[c]
        .iter()
        .map(|&e| ix.eni_name(e).to_string())
        .collect();
    let mut conflicts = conflicts_of(phases, c);
    let total_conflicts = conflicts.len();
    conflicts.truncate(MAX_STATUS_CONFLICTS);
    for k in &conflicts {
        *out.stats.conflicts.entry(k.reason.clone()).or_default() += 1;
    }
    let (matched_n, ready_n) = (matched.len(), ready.len());
    out.stats.nodes_ready += ready_n;
    let rollout = phases.rollouts.of(c);
    let health = health(&conflicts, total_conflicts, &waiting, (ready_n, matched_n));
    let health = match rollout {
        Some(r) => rollout_health(health, r),
        None => health,
    };
    match &health {
        Health::Ready { .. } => out.stats.configs_ready += 1,
        Health::Progressing { .. } => out.stats.configs_reconciling += 1,
        Health::Stalled { .. } => out.stats.configs_stalled += 1,
    }
    Figures {
        health,
        matched: matched_n as i32,
        ready,
        node_enis,
        conflicts,
        rollout: rollout.map(rollout_status),
    }
}

/// The rollout's say in a config's health: a halted rollout stalls it (unless conflicts
/// already do), a paused one with nodes left and one still in minReadySeconds keep it
/// Reconciling.
fn rollout_health(health: Health, r: &ConfigRollout) -> Health {
    if matches!(health, Health::Stalled { .. }) {
        return health;
    }
    let left = r.nodes.len() - r.in_state(|s| *s == NodeRollout::Updated).len();
    let done = format!("{}/{} nodes up to date", r.updated_matched, r.matched);
    match r.phase {
        RolloutPhase::Stalled => {
            let failed: Vec<String> = r
                .failed()
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect();
            Health::Stalled {
                reason: reason::ROLLOUT_FAILED.into(),
                message: format!(
                    "rollout halted, no further node is changed: {} failed; {done}. Push a fix (a new generation) or pause and resume the rollout",
                    list_names(&failed.iter().map(String::as_str).collect::<Vec<_>>(), 5)
                ),
            }
        }
        RolloutPhase::Paused if left > 0 => Health::Progressing {
            reason: reason::ROLLOUT_PAUSED.into(),
            message: format!("rollout paused with {left} node(s) left; {done}"),
        },
        RolloutPhase::Progressing
            if matches!(health, Health::Ready { .. })
                && r.nodes
                    .iter()
                    .any(|n| n.counted && n.state != NodeRollout::Updated) =>
        {
            Health::Progressing {
                reason: reason::ROLLOUT_PROGRESSING.into(),
                message: format!("rollout in progress; {done}"),
            }
        }
        _ => health,
    }
}

/// Stalled on conflicts, else Ready without nodes, Progressing while nodes wait, Ready.
fn health(
    listed: &[ConfigConflict],
    total_conflicts: usize,
    waiting: &[String],
    (ready_n, matched_n): (usize, usize),
) -> Health {
    if total_conflicts > 0 {
        let reasons: BTreeSet<&str> = listed.iter().map(|k| k.reason.as_str()).collect();
        let reason = if reasons.len() == 1 {
            reasons.iter().next().copied().unwrap_or("Conflict")
        } else {
            "Conflicts"
        };
        Health::Stalled {
            reason: reason.to_string(),
            message: format!(
                "{total_conflicts} conflict(s), left untouched; {ready_n}/{matched_n} nodes ready. First: {}",
                listed[0].message
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
    }
}

/// Why node `nc.node` is not ready for config `c`, or None when it is.
fn not_ready_reason(
    input: &PassInput<'_, '_>,
    phases: &Phases<'_>,
    c: ConfigIx,
    nc: &NodeClaims,
    desired: &DPDKNodeStateSpec,
) -> Option<String> {
    let ix = &input.index;
    let Some(s) = ix.state(ix.node_name(nc.node)) else {
        return Some("no DPDKNodeState yet".into());
    };
    if s.spec != *desired {
        return Some("DPDKNodeState spec not written yet".into());
    }
    let mapping = &ix.config(c).spec.resource_mapping;
    for m in mapping {
        let claim = nc
            .claims
            .iter()
            .enumerate()
            .find(|(_, cl)| cl.device_index == m.device_index && cl.configs.contains(&c));
        let Some((i, cl)) = claim else {
            return Some(format!(
                "deviceIndex {} is held by an older config",
                m.device_index
            ));
        };
        if cl.target.is_none() {
            return Some(format!("no NodeENI for deviceIndex {} yet", m.device_index));
        }
        let dropped = phases.node_enis.dropped.contains(&ClaimRef {
            node: nc.node,
            claim: i,
        });
        if dropped
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
    for m in mapping {
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

/// Writes the status when it differs from the live one, with Warning events for
/// what is new in it (conflicts, the misspelt writeCombing of a new generation).
fn write_status(input: &PassInput<'_, '_>, c: ConfigIx, figures: Figures, out: &mut Statuses) {
    let cfg = input.index.config(c);
    let name = input.index.cname(c).to_string();
    let live_status = cfg.status.clone().unwrap_or_default();
    let generation = cfg.metadata.generation;
    let mut conds = live_status.conditions.clone();
    // The API server keeps whole seconds; so do we, or every pass would differ.
    let now = Time(Timestamp::from_second(input.now.as_second()).unwrap_or(input.now));
    conditions::apply_health(&mut conds, &figures.health, generation, &now);
    let status = DPDKConfigStatus {
        observed_generation: generation,
        conditions: conds,
        matched_nodes: figures.matched,
        ready_nodes: figures.ready.len() as i32,
        nodes_ready: figures.ready,
        updated_node_enis: figures.node_enis,
        last_applied_revision: cfg
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION).cloned()),
        conflicts: figures.conflicts,
        rollout: figures.rollout,
    };
    if status == live_status {
        return;
    }
    out.events
        .extend(status_events(input, c, &live_status, &status));
    out.writes.push(Write::ConfigStatus {
        config: name,
        status,
    });
}

/// Warnings for what a new status adds: conflicts by reason, and the misspelt
/// writeCombing of a new generation.
fn status_events(
    input: &PassInput<'_, '_>,
    c: ConfigIx,
    live_status: &DPDKConfigStatus,
    status: &DPDKConfigStatus,
) -> Vec<PlannedEvent> {
    let cfg = input.index.config(c);
    let name = input.index.cname(c);
    let after = Some((Kind::Config, name.to_string()));
    let event = |reason: &str, note: String| PlannedEvent {
        config: name.to_string(),
        config_uid: cfg.metadata.uid.clone(),
        warning: true,
        reason: reason.to_string(),
        note,
        after: after.clone(),
    };
    let mut events = Vec::new();
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
        events.push(event(r, truncate(note, 1000)));
    }
    if let Some(r) = &status.rollout
        && !r.failed_nodes.is_empty()
        && live_status.rollout.as_ref().map(|l| &l.failed_nodes) != Some(&r.failed_nodes)
    {
        let msg = status
            .conditions
            .iter()
            .find(|k| k.type_ == "Stalled" && k.reason == reason::ROLLOUT_FAILED)
            .map(|k| k.message.clone())
            .unwrap_or_else(|| format!("rollout halted: {} failed", r.failed_nodes.join(", ")));
        events.push(event(reason::ROLLOUT_FAILED, truncate(msg, 1000)));
    }
    if input.index.is_live(c)
        && cfg.spec.driver_options.uses_misspelt_write_combing()
        && live_status.observed_generation != status.observed_generation
    {
        let wc = cfg.spec.driver_options.effective_write_combining();
        events.push(event(
            reason::DEPRECATED_WRITE_COMBING,
            format!(
                "spec.driverOptions.writeCombing is the seed guide's misspelling of writeCombining; it is honoured as writeCombining={wc}. Rename the key to writeCombining."
            ),
        ));
    }
    events
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::plan::Settings;
    use crate::plan::index::{Conflicts, PerConfig};
    use crate::plan::tests::{Objects, RES2, config, pass, t};

    fn conflict(reason: &str, message: &str) -> ConfigConflict {
        ConfigConflict {
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn health_is_stalled_on_conflicts_then_ready_progressing_or_ready() {
        let k = vec![conflict(reason::OVERLAPPING_CONFIG, "first")];
        assert_eq!(
            health(&k, 3, &[], (1, 2)),
            Health::Stalled {
                reason: reason::OVERLAPPING_CONFIG.into(),
                message: "3 conflict(s), left untouched; 1/2 nodes ready. First: first".into(),
            }
        );
        let two = vec![
            conflict(reason::OVERLAPPING_CONFIG, "a"),
            conflict(reason::PARTIAL_MULTI_SUBNET, "b"),
        ];
        assert!(matches!(
            health(&two, 2, &[], (0, 0)),
            Health::Stalled { reason, .. } if reason == "Conflicts"
        ));
        assert!(matches!(
            health(&[], 0, &[], (0, 0)),
            Health::Ready { reason, .. } if reason == "NoMatchingNodes"
        ));
        assert_eq!(
            health(&[], 0, &["n2 (node agent is syncing)".into()], (1, 2)),
            Health::Progressing {
                reason: "Progressing".into(),
                message: "1/2 nodes ready; waiting for n2 (node agent is syncing)".into(),
            }
        );
        assert!(matches!(
            health(&[], 0, &[], (2, 2)),
            Health::Ready { reason, .. } if reason == "NodesReady"
        ));
    }

    #[test]
    fn conflicts_from_every_phase_are_listed_once_and_sorted() {
        let (a, b) = (
            conflict(reason::OVERLAPPING_CONFIG, "a"),
            conflict(reason::FIELD_MANAGER_CONFLICT, "b"),
        );
        let mut claims = Claims::new(
            PerConfig::from(vec![Vec::new()]),
            Vec::new(),
            Conflicts::none(1),
        );
        claims.conflicts.add(ConfigIx(0), a.clone());
        let mut node_enis = NodeEnis::none(1);
        node_enis.conflicts.add(ConfigIx(0), b.clone());
        node_enis.conflicts.add(ConfigIx(0), a.clone());
        let node_states = NodeStates {
            desired: Default::default(),
            writes: Vec::new(),
            conflicts: Conflicts::none(1),
        };
        let phases = Phases {
            claims: &claims,
            node_enis: &node_enis,
            node_states: &node_states,
            teardown: &Teardown::default(),
            rollouts: &Rollouts::default(),
        };
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(conflicts_of(&phases, ConfigIx(0)), want);
    }

    #[test]
    fn a_deleted_config_with_nothing_left_loses_its_finalizer_and_a_new_one_gets_it() {
        let mut gone = config("gone", 0, &[("ng", "x")], &[(2, RES2)]);
        gone.metadata.deletion_timestamp = Some(Time(t(50)));
        gone.metadata.finalizers = Some(vec![CONFIG_FINALIZER.into()]);
        let objects = Objects {
            configs: vec![gone, config("new", 10, &[("ng", "x")], &[(2, RES2)])],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let claims = Claims::new(
            PerConfig::from(vec![Vec::new(), Vec::new()]),
            Vec::new(),
            Conflicts::none(2),
        );
        let node_enis = NodeEnis::none(2);
        let node_states = NodeStates {
            desired: Default::default(),
            writes: Vec::new(),
            conflicts: Conflicts::none(2),
        };
        let out = statuses(
            &input,
            &Phases {
                claims: &claims,
                node_enis: &node_enis,
                node_states: &node_states,
                teardown: &Teardown::default(),
                rollouts: &Rollouts::default(),
            },
        );
        assert_eq!(
            out.writes[0],
            Write::RemoveFinalizer {
                config: "gone".into(),
                uid: "uid-gone".into(),
                owned: false,
            }
        );
        assert_eq!(
            out.writes[1],
            Write::AddFinalizer {
                config: "new".into()
            }
        );
        let Some(Write::ConfigStatus { config, status }) = out.writes.get(2) else {
            panic!("a status for the new config: {:?}", out.writes);
        };
        assert_eq!(config, "new");
        assert_eq!((status.matched_nodes, status.ready_nodes), (0, 0));
        assert_eq!(out.writes.len(), 3);
        assert_eq!(out.stats.configs_ready, 1, "no matching nodes is Ready");
    }
}
