//! The rollout phase over whole passes: a tiny API server (`tests::World`) and agents
//! that report what they are given, or fail.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::SignedDuration;

use super::rollout::{NodeRollout, RolloutNode, Wave, max_unavailable, waves};
use super::tests::{World, node, seed_world};
use super::*;
use crate::api::{DPDKNodeStateStatus, DpdkDriver, RolloutPhase, RolloutSpec, SyncStatus};
use crate::conditions;
use crate::labels::ROLLOUT_UPDATING_SINCE_ANNOTATION;

const CONFIG: &str = "default-dpdk-config";

fn spec(max: Option<IntOrString>) -> RolloutSpec {
    RolloutSpec {
        max_unavailable: max,
        ..Default::default()
    }
}

/// `n` nodes with the seed's config and `rollout`, converged with every agent reporting.
fn fleet(n: usize, rollout: Option<RolloutSpec>) -> World {
    let mut w = seed_world(n);
    w.configs[0].spec.rollout = rollout;
    drive(&mut w, &[]);
    w
}

fn change_driver(w: &mut World, driver: DpdkDriver) {
    let c = &mut w.configs[0];
    c.spec.resource_mapping[0].driver = driver;
    c.metadata.generation = Some(c.metadata.generation.unwrap_or(1) + 1);
}

/// DPDKNodeStates whose spec is ahead of what their agent reported.
fn ahead(w: &World) -> Vec<String> {
    w.states
        .iter()
        .filter(|s| s.status.as_ref().and_then(|st| st.observed_generation) < s.metadata.generation)
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect()
}

/// Passes until nothing is planned. Agents report every new spec, except those in
/// `failing`, which report Failed. Returns, per pass that changed specs, the nodes changed.
fn drive(w: &mut World, failing: &[&str]) -> Vec<Vec<String>> {
    let mut changed_per_pass = Vec::new();
    for _ in 0..60 {
        let p = w.plan();
        if p.writes.is_empty() {
            return changed_per_pass;
        }
        let before: BTreeMap<String, Option<i64>> = w
            .states
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    s.metadata.generation,
                )
            })
            .collect();
        w.apply(&p);
        let changed: Vec<String> = w
            .states
            .iter()
            .filter(|s| {
                before.get(s.metadata.name.as_deref().unwrap_or("")) != Some(&s.metadata.generation)
            })
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        if !changed.is_empty() {
            changed_per_pass.push(changed);
        }
        for name in ahead(w) {
            if failing.contains(&name.as_str()) {
                agent_fails(w, &name);
            } else {
                w.agent_reports(&name);
            }
        }
    }
    panic!("no rest after 60 passes: {:?}", w.plan().writes);
}

fn agent_fails(w: &mut World, node: &str) {
    let s = w
        .states
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some(node))
        .expect("state");
    s.status = Some(DPDKNodeStateStatus {
        observed_generation: s.metadata.generation,
        sync_status: Some(SyncStatus::Failed),
        last_sync_error: Some("modprobe igb_uio: module not found".into()),
        ..Default::default()
    });
}

fn rollout_status(w: &World) -> crate::api::RolloutStatus {
    w.cfg(CONFIG)
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.rollout.clone())
        .expect("status.rollout")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn wave_names(ws: &[Wave]) -> Vec<Vec<String>> {
    ws.iter().map(|w| w.nodes.clone()).collect()
}

#[test]
fn max_unavailable_rounds_down_and_is_at_least_one() {
    let pct = |p: &str| Some(IntOrString::String(p.into()));
    assert_eq!(max_unavailable(None, 10), 2, "25% of 10 rounds down");
    assert_eq!(max_unavailable(None, 3), 1, "25% of 3 is 0.75: at least 1");
    assert_eq!(max_unavailable(None, 0), 1);
    assert_eq!(max_unavailable(Some(&spec(pct("50%"))), 5), 2);
    assert_eq!(max_unavailable(Some(&spec(pct("0%"))), 40), 1);
    assert_eq!(max_unavailable(Some(&spec(pct("100%"))), 40), 40);
    assert_eq!(
        max_unavailable(Some(&spec(Some(IntOrString::Int(3)))), 40),
        3
    );
    assert_eq!(
        max_unavailable(Some(&spec(Some(IntOrString::Int(0)))), 40),
        1
    );
}

#[test]
fn a_change_rolls_out_in_waves_of_the_budget_as_predicted() {
    let mut w = fleet(10, Some(spec(Some(IntOrString::Int(2)))));
    change_driver(&mut w, DpdkDriver::IgbUio);
    let first = w.plan();
    let r = &first.rollouts[0];
    assert_eq!(r.budget, 2);
    let predicted = wave_names(&r.waves);
    assert_eq!(predicted.len(), 5);
    assert_eq!(predicted[0], names(&["node-0", "node-1"]));
    // Only the first wave's specs are written; the shared NodeENI waits for the last.
    let spec_writes: Vec<&str> = first
        .writes
        .iter()
        .filter_map(|x| match x {
            Write::ApplyNodeState { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(spec_writes, vec!["node-0", "node-1"]);
    assert!(
        !first
            .writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { .. })),
        "the NodeENI reaches held nodes: {:?}",
        first.writes
    );
    let mut observed = Vec::new();
    for _ in 0..40 {
        let p = w.plan();
        if p.writes.is_empty() {
            break;
        }
        w.apply(&p);
        let a = ahead(&w);
        assert!(a.len() <= 2, "more than maxUnavailable in flight: {a:?}");
        if !a.is_empty() {
            observed.push(a.clone());
        }
        for n in a {
            w.agent_reports(&n);
        }
    }
    assert_eq!(
        observed, predicted,
        "the controller took the predicted waves"
    );
    let st = rollout_status(&w);
    assert_eq!(st.phase, RolloutPhase::Complete);
    assert_eq!((st.updated_nodes, st.up_to_date.as_str()), (10, "10/10"));
    assert_eq!(
        w.eni("multi-eni-dpdk").spec.dpdk_driver.as_deref(),
        Some("igb_uio")
    );
    for s in &w.states {
        assert!(
            s.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(ROLLOUT_UPDATING_SINCE_ANNOTATION)),
            "marks are gone at the end"
        );
    }
    assert!(w.plan().writes.is_empty(), "zero writes at rest");
}

#[test]
fn canaries_go_first_and_the_rest_wait_for_all_of_them() {
    let mut rollout = spec(Some(IntOrString::Int(3)));
    rollout.canary_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("canary".into(), "true".into())])),
        ..Default::default()
    });
    let mut w = fleet(6, Some(rollout));
    for n in ["node-4", "node-5"] {
        w.label_node(n, "canary", "true", "someone");
    }
    change_driver(&mut w, DpdkDriver::IgbUio);
    let p = w.plan();
    assert_eq!(
        wave_names(&p.rollouts[0].waves),
        vec![
            names(&["node-4", "node-5"]),
            names(&["node-0", "node-1", "node-2"]),
            names(&["node-3"]),
        ]
    );
    w.apply(&p);
    // One canary reports; the other is still rolling out: nobody else moves.
    w.agent_reports("node-4");
    let p = w.plan();
    assert!(
        !p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeState { node, spec, .. } if node.as_str() < "node-4" && spec.devices[0].driver == DpdkDriver::IgbUio)),
        "a non-canary changed before every canary succeeded: {:?}",
        p.writes
    );
    w.apply(&p);
    w.agent_reports("node-5");
    let waves = drive(&mut w, &[]);
    assert_eq!(
        waves,
        vec![names(&["node-0", "node-1", "node-2"]), names(&["node-3"])]
    );
}

#[test]
fn a_failed_node_halts_the_rollout_until_a_new_generation() {
    let mut w = fleet(8, Some(spec(Some(IntOrString::Int(2)))));
    change_driver(&mut w, DpdkDriver::IgbUio);
    let waves = drive(&mut w, &["node-3"]);
    assert_eq!(
        waves,
        vec![names(&["node-0", "node-1"]), names(&["node-2", "node-3"])],
        "no node changes after node-3 fails"
    );
    let st = rollout_status(&w);
    assert_eq!(st.phase, RolloutPhase::Stalled);
    assert_eq!(st.failed_nodes, names(&["node-3"]));
    assert_eq!(st.pending_nodes, 4);
    let status = w
        .cfg(CONFIG)
        .and_then(|c| c.status.as_ref())
        .expect("status");
    let stalled = conditions::find(&status.conditions, "Stalled").expect("Stalled");
    assert_eq!(stalled.reason, reason::ROLLOUT_FAILED);
    assert!(stalled.message.contains("node-3"), "{}", stalled.message);
    // The fix: a new generation with a driver that works.
    change_driver(&mut w, DpdkDriver::UioPciGeneric);
    let waves = drive(&mut w, &[]);
    assert_eq!(waves[0], names(&["node-0", "node-1"]));
    assert_eq!(rollout_status(&w).phase, RolloutPhase::Complete);
    assert!(
        w.states
            .iter()
            .all(|s| s.spec.devices[0].driver == DpdkDriver::UioPciGeneric)
    );
}

#[test]
fn the_halt_event_names_the_node_once() {
    let mut w = fleet(4, Some(spec(Some(IntOrString::Int(1)))));
    change_driver(&mut w, DpdkDriver::IgbUio);
    let p = w.plan();
    w.apply(&p);
    agent_fails(&mut w, "node-0");
    let p = w.plan();
    let events: Vec<&PlannedEvent> = p
        .events
        .iter()
        .filter(|e| e.reason == reason::ROLLOUT_FAILED)
        .collect();
    assert_eq!(events.len(), 1, "{:?}", p.events);
    assert!(events[0].warning && events[0].note.contains("node-0"));
    w.apply(&p);
    assert!(w.plan().events.is_empty(), "published once");
    assert!(w.plan().writes.is_empty(), "halted: nothing moves");
}

#[test]
fn a_node_that_never_reports_halts_after_the_deadline() {
    let mut rollout = spec(Some(IntOrString::Int(1)));
    rollout.progress_deadline_seconds = Some(30);
    let mut w = fleet(3, Some(rollout));
    change_driver(&mut w, DpdkDriver::IgbUio);
    let p = w.plan();
    w.apply(&p);
    let p = w.plan();
    assert_eq!(rollout_status(&w).phase, RolloutPhase::Progressing);
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(30)));
    w.now = w
        .now
        .checked_add(SignedDuration::from_secs(31))
        .expect("time");
    let p = w.plan();
    w.apply(&p);
    let st = rollout_status(&w);
    assert_eq!(st.phase, RolloutPhase::Stalled);
    assert_eq!(st.failed_nodes, names(&["node-0"]));
    assert!(
        !p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeState { node, .. } if node != "node-0")),
        "{:?}",
        p.writes
    );
}

#[test]
fn paused_changes_no_node_and_clearing_it_resumes() {
    let mut w = fleet(3, Some(spec(Some(IntOrString::Int(1)))));
    w.configs[0].spec.rollout.as_mut().expect("rollout").paused = true;
    change_driver(&mut w, DpdkDriver::IgbUio);
    let waves = drive(&mut w, &[]);
    assert!(waves.is_empty(), "paused: {waves:?}");
    let st = rollout_status(&w);
    assert_eq!((st.phase, st.pending_nodes), (RolloutPhase::Paused, 3));
    w.configs[0].spec.rollout.as_mut().expect("rollout").paused = false;
    let waves = drive(&mut w, &[]);
    assert_eq!(waves.len(), 3);
    assert_eq!(rollout_status(&w).phase, RolloutPhase::Complete);
}

#[test]
fn pausing_a_halted_rollout_acknowledges_the_failure_and_unpausing_resumes() {
    let mut w = fleet(3, Some(spec(Some(IntOrString::Int(1)))));
    change_driver(&mut w, DpdkDriver::IgbUio);
    drive(&mut w, &["node-0"]);
    assert_eq!(rollout_status(&w).phase, RolloutPhase::Stalled);
    w.configs[0].spec.rollout.as_mut().expect("rollout").paused = true;
    drive(&mut w, &[]);
    assert_eq!(rollout_status(&w).phase, RolloutPhase::Paused);
    w.configs[0].spec.rollout.as_mut().expect("rollout").paused = false;
    let waves = drive(&mut w, &[]);
    assert_eq!(waves, vec![names(&["node-1"]), names(&["node-2"])]);
}

#[test]
fn new_nodes_are_not_counted_and_join_at_once() {
    let mut w = fleet(2, Some(spec(Some(IntOrString::Int(1)))));
    for i in 2..6 {
        let name = format!("node-{i}");
        w.nodes.push(node(&name, &[("ng", "multi-eni")]));
        super::tests::attach(&mut w.enis[0], &name, 2);
    }
    let waves = drive(&mut w, &[]);
    assert_eq!(
        waves[0],
        names(&["node-2", "node-3", "node-4", "node-5"]),
        "nodes that never had DPDK have nothing to lose"
    );
    assert_eq!(rollout_status(&w).up_to_date, "6/6");
}

#[test]
fn teardown_of_nodes_leaving_the_selector_is_counted() {
    let mut w = fleet(4, Some(spec(Some(IntOrString::Int(1)))));
    for n in ["node-1", "node-2"] {
        w.node_mut(n).labels.as_mut().expect("labels").remove("ng");
    }
    let p = w.plan();
    let emptied: Vec<&str> = p
        .writes
        .iter()
        .filter_map(|x| match x {
            Write::ApplyNodeState { node, spec, .. } if spec.devices.is_empty() => {
                Some(node.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(emptied, vec!["node-1"], "one teardown at a time");
    drive(&mut w, &[]);
    assert!(w.state("node-2").is_none(), "the second one follows");
}

#[test]
fn min_ready_seconds_holds_the_next_wave() {
    let mut rollout = spec(Some(IntOrString::Int(1)));
    rollout.min_ready_seconds = Some(20);
    let mut w = fleet(2, Some(rollout));
    change_driver(&mut w, DpdkDriver::IgbUio);
    let p = w.plan();
    w.apply(&p);
    w.agent_reports("node-0");
    let p = w.plan();
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(20)));
    w.apply(&p);
    assert!(
        w.plan().writes.is_empty(),
        "node-1 waits for minReadySeconds"
    );
    w.now = w
        .now
        .checked_add(SignedDuration::from_secs(20))
        .expect("time");
    let p = w.plan();
    assert!(p.writes.iter().any(
        |x| matches!(x, Write::ApplyNodeState { node, spec, .. } if node == "node-1" && spec.devices[0].driver == DpdkDriver::IgbUio)
    ));
}

#[test]
fn waves_are_a_pure_function_of_the_nodes() {
    let n = |name: &str, canary, counted, state| RolloutNode {
        name: name.into(),
        canary,
        counted,
        state,
    };
    let nodes = vec![
        n("a", false, true, NodeRollout::Pending),
        n("b", false, true, NodeRollout::Updated),
        n("c", true, true, NodeRollout::Pending),
        n("d", false, false, NodeRollout::Pending),
        n("e", false, true, NodeRollout::Pending),
    ];
    assert_eq!(
        waves(&nodes, 1),
        vec![
            Wave {
                nodes: names(&["c", "d"]),
                canary: true
            },
            Wave {
                nodes: names(&["a"]),
                canary: false
            },
            Wave {
                nodes: names(&["e"]),
                canary: false
            },
        ]
    );
    let mut busy = nodes.clone();
    busy[1].state = NodeRollout::Updating;
    assert_eq!(
        wave_names(&waves(&busy, 2)),
        vec![names(&["d"]), names(&["c"]), names(&["a", "e"])],
        "with a counted node in flight the free nodes go alone"
    );
}

#[test]
fn a_new_revision_alone_is_not_staged() {
    let mut w = fleet(4, Some(spec(Some(IntOrString::Int(1)))));
    w.configs[0]
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            crate::labels::REVISION_ANNOTATION.into(),
            "main@sha1:abc".into(),
        );
    let waves = drive(&mut w, &[]);
    assert_eq!(
        waves,
        vec![names(&["node-0", "node-1", "node-2", "node-3"])],
        "the agent has nothing to redo"
    );
}
