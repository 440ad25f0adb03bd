//! Phase 4, teardown: what this controller may tear down (its scope), the release of
//! NodeENIs it owns that no config claims, once every node they reach has dropped their
//! devices and the agent confirmed (or timed out), and the steps of a node no live config
//! selects: empty the spec, wait for the agent, release the label, remove the agent's
//! ready label, delete the DPDKNodeState. One step per pass, each once the previous one
//! is observed.

use std::collections::{BTreeSet, HashSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::claims::Claims;
use super::index::{EniIx, Index, NodeIx, name_of};
use super::node_eni::NodeEnis;
use super::{
    Kind, PassInput, PlannedEvent, Settings, TEARDOWN_SINCE_ANNOTATION, Write, reason, rfc3339,
};
use crate::api::{DPDKNodeState, DPDKNodeStateSpec, SyncStatus};
use crate::labels::CONTROLLER_MANAGER;
use crate::ssa;

/// A NodeENI being released, and the nodes it reaches.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingRelease {
    pub(crate) eni: EniIx,
    pub(crate) reach: BTreeSet<NodeIx>,
}

/// The output of the teardown phase.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Teardown {
    /// Owned NodeENIs no config claims, released now or later.
    pub(crate) pending_release: Vec<PendingRelease>,
    /// Release, unlabel and delete writes, and the spec emptying of torn-down nodes.
    pub(crate) writes: Vec<Write>,
    /// Warnings for steps taken after the timeout, without the agent.
    pub(crate) events: Vec<PlannedEvent>,
    /// The earliest teardown deadline still ahead.
    pub(crate) wake_at: Option<Timestamp>,
    pub(crate) node_enis_releasing: usize,
    pub(crate) nodes_tearing_down: usize,
}

impl Teardown {
    fn wake_at(&mut self, t: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(t, |r| r.min(t)));
    }

    /// Some pending release still reaches node `n`.
    pub(crate) fn releasing_on(&self, n: NodeIx) -> bool {
        self.pending_release.iter().any(|p| p.reach.contains(&n))
    }
}

/// Whether a node's agent has finished with what the spec asks, for teardown gating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    Yes,
    /// The agent never reported and the timeout passed.
    TimedOut,
    /// Not yet; `Some(deadline)` when the timeout will settle it.
    No(Option<Timestamp>),
}

/// What this controller may tear down.
pub(crate) struct Scope {
    /// Nodes a config selects, nodes whose DPDKNodeState is in scope, and (cluster scope)
    /// nodes whose `enabled` label the controller owns.
    pub(crate) nodes: HashSet<NodeIx>,
    cluster_scope: bool,
    configs: HashSet<String>,
}

impl Scope {
    /// In cluster scope, every DPDKNodeState the controller applied; when sharded, those
    /// listing one of its configs.
    pub(crate) fn has_state(&self, s: &DPDKNodeState) -> bool {
        if self.cluster_scope {
            ssa::has_apply_entry(&s.metadata, CONTROLLER_MANAGER)
        } else {
            s.spec.configs.iter().any(|c| self.configs.contains(c))
        }
    }
}

/// Runs the phase.
pub(crate) fn teardown(
    input: &PassInput<'_, '_>,
    claims: &Claims,
    node_enis: &NodeEnis,
) -> Teardown {
    let scope = scope(input, claims);
    let mut out = Teardown::default();
    release_node_enis(input, claims, node_enis, &scope, &mut out);
    tear_down_nodes(input, claims, &scope, &mut out);
    out
}

pub(crate) fn scope(input: &PassInput<'_, '_>, claims: &Claims) -> Scope {
    let ix = &input.index;
    let mut scope = Scope {
        nodes: claims.matched.iter().flatten().copied().collect(),
        cluster_scope: input.settings.cluster_scope,
        configs: ix.config_ixs().map(|c| ix.cname(c).to_string()).collect(),
    };
    for s in ix.node_states() {
        if scope.has_state(s)
            && let Some(n) = ix.node_named(name_of(&s.metadata))
        {
            scope.nodes.insert(n);
        }
    }
    if input.settings.cluster_scope {
        for n in ix.node_ixs() {
            if ix.owned_label(n) {
                scope.nodes.insert(n);
            }
        }
    }
    scope
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
pub(crate) fn settled(
    settings: &Settings,
    now: Timestamp,
    s: &DPDKNodeState,
    node_exists: bool,
) -> Settled {
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
        None => match teardown_since(s) {
            None => Settled::Yes,
            Some(since) => {
                let deadline = since
                    .checked_add(
                        SignedDuration::try_from(settings.teardown_timeout).unwrap_or_default(),
                    )
                    .unwrap_or(since);
                if deadline <= now {
                    Settled::TimedOut
                } else {
                    Settled::No(Some(deadline))
                }
            }
        },
    }
}

/// `TeardownWithoutAgent` warnings on each config a DPDKNodeState lists, published after
/// the write to `after` succeeds.
fn events_without_agent(
    ix: &Index<'_, '_>,
    s: &DPDKNodeState,
    note: &str,
    after: (Kind, &str),
) -> Vec<PlannedEvent> {
    s.spec
        .configs
        .iter()
        .filter_map(|config| {
            let cfg = ix.config_named(config)?;
            Some(PlannedEvent {
                config: config.clone(),
                config_uid: cfg.metadata.uid.clone(),
                warning: true,
                reason: reason::TEARDOWN_WITHOUT_AGENT.into(),
                note: note.to_string(),
                after: Some((after.0, after.1.to_string())),
            })
        })
        .collect()
}

/// NodeENIs we own that no config wants any more: release once every node they reach
/// has dropped their devices and the agent confirmed (or timed out).
fn release_node_enis(
    input: &PassInput<'_, '_>,
    claims: &Claims,
    node_enis: &NodeEnis,
    scope: &Scope,
    out: &mut Teardown,
) {
    let ix = &input.index;
    for e in ix.eni_ixs() {
        if node_enis.claimed.contains_key(&e) || !ix.owns_any_eni_field(e) {
            continue;
        }
        let reach = ix.eni_reach(e);
        if !input.settings.cluster_scope && !reach.iter().any(|n| scope.nodes.contains(n)) {
            continue;
        }
        let eni_name = ix.eni_name(e);
        let mut ready = true;
        let mut timed_out_nodes: Vec<&DPDKNodeState> = Vec::new();
        for &n in &reach {
            let Some(s) = ix.state(ix.node_name(n)) else {
                continue;
            };
            if s.spec.devices.iter().any(|d| d.node_eni == eni_name) {
                ready = false;
                continue;
            }
            match settled(input.settings, input.now, s, true) {
                Settled::Yes => {}
                Settled::TimedOut => {
                    if claims.is_matched(n) {
                        timed_out_nodes.push(s);
                    }
                }
                Settled::No(deadline) => {
                    ready = false;
                    if let Some(t) = deadline {
                        out.wake_at(t);
                    }
                }
            }
        }
        out.node_enis_releasing += 1;
        out.pending_release.push(PendingRelease { eni: e, reach });
        if !ready {
            continue;
        }
        out.writes.push(Write::ReleaseNodeEni {
            name: eni_name.to_string(),
            uid: ix.eni(e).metadata.uid.clone().unwrap_or_default(),
        });
        for s in timed_out_nodes {
            let note = format!(
                "node {}: no node agent ever reported on DPDKNodeState {}; released NodeENI {eni_name} after the {}s teardown timeout without the agent's confirmation",
                name_of(&s.metadata),
                name_of(&s.metadata),
                input.settings.teardown_timeout.as_secs()
            );
            out.events.extend(events_without_agent(
                ix,
                s,
                &note,
                (Kind::NodeEni, eni_name),
            ));
        }
    }
}

/// Nodes in scope no live config selects, and DPDKNodeStates in scope whose node is gone.
fn nodes_to_tear_down<'a>(ix: &Index<'_, 'a>, claims: &Claims, scope: &Scope) -> BTreeSet<&'a str> {
    let mut names: BTreeSet<&'a str> = BTreeSet::new();
    for &n in &scope.nodes {
        if !claims.is_matched(n) {
            names.insert(ix.node_name(n));
        }
    }
    for s in ix.node_states() {
        let name = name_of(&s.metadata);
        if ix.node_named(name).is_none() && scope.has_state(s) {
            names.insert(name);
        }
    }
    names
}

/// Nodes no live config selects any more: empty the spec, wait for the agent, then
/// release the label, remove the agent's ready label, delete the DPDKNodeState.
fn tear_down_nodes(input: &PassInput<'_, '_>, claims: &Claims, scope: &Scope, out: &mut Teardown) {
    let ix = &input.index;
    for name in nodes_to_tear_down(ix, claims, scope) {
        let n = ix.node_named(name);
        let state = ix.state(name);
        if state.is_none() && !n.is_some_and(|n| ix.owned_label(n)) {
            continue;
        }
        out.nodes_tearing_down += 1;
        tear_down_node(input, name, n, state, out);
    }
}

/// The next teardown step of one node, if its previous step is done.
fn tear_down_node(
    input: &PassInput<'_, '_>,
    name: &str,
    n: Option<NodeIx>,
    state: Option<&DPDKNodeState>,
    out: &mut Teardown,
) {
    let ix = &input.index;
    if let Some(s) = state
        && n.is_some()
        && !s.spec.devices.is_empty()
    {
        let spec = DPDKNodeStateSpec {
            devices: Vec::new(),
            ..s.spec.clone()
        };
        out.writes.push(Write::ApplyNodeState {
            node: name.to_string(),
            spec,
            teardown_since: Some(rfc3339(input.now)),
            rollout: Default::default(),
        });
        return;
    }
    let mut timed_out = false;
    if let Some(s) = state {
        match settled(input.settings, input.now, s, n.is_some()) {
            Settled::Yes => {}
            Settled::TimedOut => timed_out = true,
            Settled::No(deadline) => {
                if let Some(t) = deadline {
                    out.wake_at(t);
                }
                return;
            }
        }
    }
    if let Some(n) = n {
        if out.releasing_on(n) {
            return;
        }
        if ix.owned_label(n) {
            out.writes.push(Write::ReleaseNodeLabel {
                node: name.to_string(),
                uid: ix.node(n).uid.clone().unwrap_or_default(),
            });
            return;
        }
        if state.is_some() && ix.stale_ready_label(n) {
            out.writes.push(Write::RemoveReadyLabel {
                node: name.to_string(),
                uid: ix.node(n).uid.clone().unwrap_or_default(),
            });
            return;
        }
    }
    let Some(s) = state else {
        return;
    };
    out.writes.push(Write::DeleteNodeState {
        node: name.to_string(),
        uid: s.metadata.uid.clone().unwrap_or_default(),
    });
    if timed_out {
        let note = format!(
            "node {name}: no node agent ever reported on DPDKNodeState {name}; teardown finished after the {}s timeout without the agent's confirmation",
            input.settings.teardown_timeout.as_secs()
        );
        out.events
            .extend(events_without_agent(ix, s, &note, (Kind::NodeState, name)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::api::{
        DPDKNodeStateStatus, DesiredDevice, DeviceStatus, DpdkDriver, EffectiveDriverOptions,
    };
    use crate::labels::NODE_ENABLED_LABEL;
    use crate::plan::index::{Conflicts, PerConfig};
    use crate::plan::tests::{Objects, RES2, eni, node, pass, set_owner, t};

    /// A DPDKNodeState the controller applied for config `c`, one device per NodeENI named.
    fn state(node: &str, devices: &[&str]) -> DPDKNodeState {
        let mut s = DPDKNodeState::new(
            node,
            DPDKNodeStateSpec {
                driver_options: EffectiveDriverOptions::default(),
                devices: devices
                    .iter()
                    .map(|e| DesiredDevice {
                        device_index: 2,
                        node_eni: e.to_string(),
                        eni_id: None,
                        pci_address: None,
                        resource_name: RES2.into(),
                        driver: DpdkDriver::VfioPci,
                    })
                    .collect(),
                configs: vec!["c".into()],
                revision: None,
            },
        );
        s.metadata.uid = Some(format!("uid-state-{node}"));
        s.metadata.generation = Some(1);
        set_owner(&mut s.metadata, CONTROLLER_MANAGER, json!({"f:spec": {}}));
        s
    }

    fn reported(s: &mut DPDKNodeState) {
        s.status = Some(DPDKNodeStateStatus {
            observed_generation: s.metadata.generation,
            sync_status: Some(SyncStatus::Succeeded),
            devices: Vec::new(),
            ..Default::default()
        });
    }

    fn since(s: &mut DPDKNodeState, at: Timestamp) {
        s.metadata.annotations = Some(BTreeMap::from([(
            TEARDOWN_SINCE_ANNOTATION.to_string(),
            rfc3339(at),
        )]));
    }

    fn nothing_claimed() -> Claims {
        Claims::new(PerConfig::from(Vec::new()), Vec::new(), Conflicts::none(0))
    }

    /// A node labelled `enabled=true` by the controller.
    fn labelled_node(name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        let mut n = node(name, &[(NODE_ENABLED_LABEL, "true")]);
        set_owner(
            &mut n,
            CONTROLLER_MANAGER,
            json!({"f:metadata": {"f:labels": {format!("f:{NODE_ENABLED_LABEL}"): {}}}}),
        );
        n
    }

    #[test]
    fn an_agent_report_settles_and_a_missing_one_times_out() {
        let settings = Settings {
            teardown_timeout: Duration::from_secs(300),
            ..Default::default()
        };
        let mut s = state("n1", &[]);
        assert_eq!(
            settled(&settings, t(100), &s, true),
            Settled::Yes,
            "no clock"
        );
        since(&mut s, t(0));
        assert_eq!(
            settled(&settings, t(100), &s, true),
            Settled::No(Some(t(300)))
        );
        assert_eq!(settled(&settings, t(300), &s, true), Settled::TimedOut);
        assert_eq!(
            settled(&settings, t(100), &s, false),
            Settled::Yes,
            "node gone"
        );
        reported(&mut s);
        assert_eq!(settled(&settings, t(100), &s, true), Settled::Yes);
        s.status
            .as_mut()
            .expect("status")
            .devices
            .push(DeviceStatus {
                device_index: 7,
                bound: true,
                ..Default::default()
            });
        assert_eq!(
            settled(&settings, t(100), &s, true),
            Settled::No(None),
            "stray"
        );
    }

    #[test]
    fn a_node_no_config_selects_loses_its_devices_first() {
        let objects = Objects {
            nodes: vec![labelled_node("n1")],
            states: vec![state("n1", &["e"])],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let out = teardown(&input, &nothing_claimed(), &NodeEnis::none(0));
        let spec = DPDKNodeStateSpec {
            devices: Vec::new(),
            ..objects.states[0].spec.clone()
        };
        assert_eq!(
            out.writes,
            vec![Write::ApplyNodeState {
                node: "n1".into(),
                spec,
                teardown_since: Some(rfc3339(t(100))),
                rollout: Default::default(),
            }]
        );
        assert_eq!(out.nodes_tearing_down, 1);
        assert_eq!(out.wake_at, None);
    }

    #[test]
    fn a_node_waits_for_its_agent_then_loses_the_label() {
        let mut s = state("n1", &[]);
        since(&mut s, t(50));
        let mut objects = Objects {
            nodes: vec![labelled_node("n1")],
            states: vec![s],
            ..Default::default()
        };
        let settings = Settings::default();
        {
            let snap = objects.snapshot();
            let input = pass(&snap, &settings);
            let out = teardown(&input, &nothing_claimed(), &NodeEnis::none(0));
            assert!(out.writes.is_empty());
            assert_eq!(out.wake_at, Some(t(350)), "the timeout from teardown-since");
        }
        reported(&mut objects.states[0]);
        let snap = objects.snapshot();
        let input = pass(&snap, &settings);
        let out = teardown(&input, &nothing_claimed(), &NodeEnis::none(0));
        assert_eq!(
            out.writes,
            vec![Write::ReleaseNodeLabel {
                node: "n1".into(),
                uid: "uid-n1".into(),
            }]
        );
    }

    #[test]
    fn an_unclaimed_nodeeni_is_released_once_no_node_lists_it() {
        let mut e = eni("e", &[("ng", "x")], 2, 1);
        set_owner(
            &mut e.metadata,
            CONTROLLER_MANAGER,
            json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}, "f:dpdkResourceName": {}}}),
        );
        let mut listing = state("n1", &["e"]);
        reported(&mut listing);
        let mut objects = Objects {
            nodes: vec![node("n1", &[("ng", "x")])],
            enis: vec![e],
            states: vec![listing],
            ..Default::default()
        };
        let settings = Settings::default();
        let pending = PendingRelease {
            eni: EniIx(0),
            reach: BTreeSet::from([NodeIx(0)]),
        };
        {
            let snap = objects.snapshot();
            let input = pass(&snap, &settings);
            let out = teardown(&input, &nothing_claimed(), &NodeEnis::none(0));
            assert_eq!(out.pending_release, vec![pending.clone()]);
            assert!(
                !out.writes
                    .iter()
                    .any(|w| matches!(w, Write::ReleaseNodeEni { .. }))
            );
            assert!(out.releasing_on(NodeIx(0)));
        }
        objects.states[0].spec.devices.clear();
        let snap = objects.snapshot();
        let input = pass(&snap, &settings);
        let out = teardown(&input, &nothing_claimed(), &NodeEnis::none(0));
        assert_eq!(out.pending_release, vec![pending]);
        assert_eq!(out.node_enis_releasing, 1);
        assert!(out.writes.contains(&Write::ReleaseNodeEni {
            name: "e".into(),
            uid: "uid-e".into(),
        }));
    }
}
