//! The end state a snapshot converges on, from the same phases as [`super::plan`]: per
//! node a live config selects, its desired DPDKNodeState spec; per NodeENI the planner
//! drives, the values it ends with; per config, its conflicts. `dpdk-reconciler plan`
//! compares two of them (the live configs, and the live configs with a checkout's).
//!
//! It is what the writes of every pass add up to, not one pass's writes: those come in
//! steps (enableDPDK after the agents bound, teardown in order, rollout waves). It never
//! writes.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::claims::Claims;
use super::node_eni::NodeEnis;
use super::{PassInput, PhaseOutputs, Settings, Snapshot, index, status};
use crate::api::{ConfigConflict, DPDKNodeStateSpec, DpdkDriver};

/// The values a NodeENI the planner drives ends with (`enableDPDK: true` with them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniOutcome {
    pub driver: DpdkDriver,
    pub resource_name: String,
    /// The configs whose claims it serves, oldest first.
    pub configs: Vec<String>,
}

/// What a snapshot converges on. Nodes and NodeENIs absent from it end without DPDK
/// (torn down, released) when the controller owned anything on them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Per node a live config selects: its DPDKNodeState spec.
    pub nodes: BTreeMap<String, DPDKNodeStateSpec>,
    /// Per NodeENI driven (claimed and not blocked by a conflict).
    pub node_enis: BTreeMap<String, EniOutcome>,
    /// Per config (every config in the snapshot, deleted ones too): its conflicts,
    /// sorted, before the status truncates them.
    pub conflicts: BTreeMap<String, Vec<ConfigConflict>>,
}

/// The outcome of `snap`. `now` only feeds the teardown phase, as in [`super::plan`].
pub fn outcome(snap: &Snapshot<'_>, settings: &Settings, now: Timestamp) -> Outcome {
    let input = PassInput {
        index: index::Index::new(snap),
        settings,
        now,
    };
    let phases = PhaseOutputs::run(&input);
    let status_view = phases.for_status();
    let ix = &input.index;
    Outcome {
        nodes: phases
            .node_states
            .desired
            .iter()
            .map(|(&n, spec)| (ix.node_name(n).to_string(), spec.clone()))
            .collect(),
        node_enis: driven_enis(ix, &phases.claims, &phases.node_enis),
        conflicts: ix
            .config_ixs()
            .map(|c| {
                (
                    ix.cname(c).to_string(),
                    status::conflicts_of(&status_view, c),
                )
            })
            .collect(),
    }
}

/// Each driven NodeENI with the values of the claims it kept (they all agree).
fn driven_enis(
    ix: &index::Index<'_, '_>,
    claims: &Claims,
    node_enis: &NodeEnis,
) -> BTreeMap<String, EniOutcome> {
    let mut out = BTreeMap::new();
    for (c, enis) in ix.config_ixs().zip(node_enis.driven_by.iter()) {
        for &e in enis {
            let Some(refs) = node_enis.claimed.get(&e) else {
                continue;
            };
            let Some(cl) = refs
                .iter()
                .find(|r| !node_enis.dropped.contains(r))
                .map(|&r| claims.claim(r))
            else {
                continue;
            };
            let entry = out
                .entry(ix.eni_name(e).to_string())
                .or_insert_with(|| EniOutcome {
                    driver: cl.driver,
                    resource_name: cl.resource_name.clone(),
                    configs: Vec::new(),
                });
            entry.configs.push(ix.cname(c).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{World, config, node, seed_world};

    fn outcome_of(w: &World) -> Outcome {
        outcome(&w.snapshot(), &w.settings, w.now)
    }

    #[test]
    fn the_outcome_lists_the_selected_nodes_and_the_driven_nodeenis() {
        let mut w = seed_world(2);
        w.nodes.push(node("elsewhere", &[("ng", "other")]));
        let o = outcome_of(&w);
        assert_eq!(o.nodes.keys().collect::<Vec<_>>(), vec!["node-0", "node-1"]);
        let spec = &o.nodes["node-0"];
        assert_eq!(spec.configs, vec!["default-dpdk-config".to_string()]);
        assert_eq!(spec.devices.len(), 1);
        assert_eq!(spec.devices[0].driver, DpdkDriver::VfioPci);
        assert_eq!(
            o.node_enis.get("multi-eni-dpdk"),
            Some(&EniOutcome {
                driver: DpdkDriver::VfioPci,
                resource_name: crate::plan::tests::RES2.into(),
                configs: vec!["default-dpdk-config".into()],
            })
        );
        assert_eq!(o.conflicts.get("default-dpdk-config"), Some(&Vec::new()));
    }

    #[test]
    fn an_outcome_does_not_depend_on_how_far_the_cluster_got() {
        // Converged or not, the end state is the same: it is not one pass's writes.
        let mut w = seed_world(2);
        w.settings.enable_after_bound = true;
        let before = outcome_of(&w);
        assert!(!w.converge().is_empty(), "the first passes write");
        w.agent_reports("node-0");
        w.agent_reports("node-1");
        w.converge();
        assert_eq!(outcome_of(&w), before);
    }

    #[test]
    fn a_younger_overlapping_config_gets_the_conflict_and_not_the_nodeeni() {
        let mut w = seed_world(1);
        let mut younger = config(
            "younger",
            50,
            &[("ng", "multi-eni")],
            &[(2, "example.com/other")],
        );
        // The seed's options, so the device index is the only overlap.
        younger.spec.driver_options.write_combing = Some(true);
        w.configs.push(younger);
        let o = outcome_of(&w);
        assert_eq!(
            o.node_enis["multi-eni-dpdk"].configs,
            vec!["default-dpdk-config".to_string()]
        );
        assert!(o.conflicts["default-dpdk-config"].is_empty());
        let reasons: Vec<&str> = o.conflicts["younger"]
            .iter()
            .map(|k| k.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            vec![crate::plan::reason::OVERLAPPING_CONFIG],
            "{:#?}",
            o.conflicts["younger"]
        );
    }
}
