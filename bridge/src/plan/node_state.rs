//! Phase 3, node states: per node a live config selects, the desired DPDKNodeState spec
//! (the claims whose NodeENI is usable), its apply when the live one differs, and the
//! `enabled` label unless another field manager holds it with another value.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::claims::{ClaimRef, Claims, NodeClaims};
use super::index::{Conflicts, NodeIx};
use super::{Kind, PassInput, TEARDOWN_SINCE_ANNOTATION, Write, reason, rfc3339};
use crate::api::{ConfigConflict, DPDKNodeStateSpec, DesiredDevice};
use crate::labels::{CONTROLLER_MANAGER, NODE_ENABLED_LABEL, REVISION_ANNOTATION};
use crate::ssa;

use super::node_eni::NodeEnis;

/// The output of the node-state phase.
pub(crate) struct NodeStates {
    /// The desired spec of each node a live config selects.
    pub(crate) desired: HashMap<NodeIx, DPDKNodeStateSpec>,
    /// `ApplyNodeState` and `SetNodeLabel` writes.
    pub(crate) writes: Vec<Write>,
    /// Label conflicts.
    pub(crate) conflicts: Conflicts,
}

/// Runs the phase.
pub(crate) fn node_states(
    input: &PassInput<'_, '_>,
    claims: &Claims,
    node_enis: &NodeEnis,
) -> NodeStates {
    let mut out = NodeStates {
        desired: HashMap::new(),
        writes: Vec::new(),
        conflicts: Conflicts::none(input.index.n_configs()),
    };
    for nc in &claims.nodes {
        let node_name = input.index.node_name(nc.node);
        let spec = desired_spec(input, nc, node_enis);
        out.writes
            .extend(apply_state_if_needed(input, node_name, &spec));
        out.desired.insert(nc.node, spec);
        match enabled_label(input, nc) {
            Ok(write) => out.writes.extend(write),
            Err(conflicts) => {
                for (c, conflict) in conflicts {
                    out.conflicts.add(c, conflict);
                }
            }
        }
    }
    out
}

/// The spec a node is asked for: one device per claim whose NodeENI is usable.
fn desired_spec(
    input: &PassInput<'_, '_>,
    nc: &NodeClaims,
    node_enis: &NodeEnis,
) -> DPDKNodeStateSpec {
    let ix = &input.index;
    let mut devices: Vec<DesiredDevice> = Vec::new();
    for (claim, cl) in nc.claims.iter().enumerate() {
        let Some((e, eni_id)) = &cl.target else {
            continue;
        };
        if !node_enis.device_usable(
            ClaimRef {
                node: nc.node,
                claim,
            },
            *e,
        ) {
            continue;
        }
        devices.push(DesiredDevice {
            device_index: cl.device_index,
            node_eni: ix.eni_name(*e).to_string(),
            eni_id: eni_id.clone(),
            pci_address: super::node_eni::user_pci_address(ix.eni(*e)),
            resource_name: cl.resource_name.clone(),
            driver: cl.driver,
        });
    }
    let revision = nc.configs.iter().find_map(|&c| {
        ix.config(c)
            .metadata
            .annotations
            .as_ref()?
            .get(REVISION_ANNOTATION)
            .cloned()
    });
    DPDKNodeStateSpec {
        driver_options: nc.options.clone(),
        devices,
        configs: nc
            .configs
            .iter()
            .map(|&c| ix.cname(c).to_string())
            .collect(),
        revision,
    }
}

/// The apply of a node's DPDKNodeState, unless the live one already matches. Removing a
/// device (re)starts the teardown clock; otherwise the live annotation is kept.
fn apply_state_if_needed(
    input: &PassInput<'_, '_>,
    node_name: &str,
    spec: &DPDKNodeStateSpec,
) -> Option<Write> {
    let live = input.index.state(node_name);
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
                Some(rfc3339(input.now))
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
    (!up_to_date).then(|| Write::ApplyNodeState {
        node: node_name.to_string(),
        spec: spec.clone(),
        teardown_since,
        rollout: Default::default(),
    })
}

/// The `enabled` label's write (None when in place and ours), or the conflicts, one per
/// config on the node, when another field manager holds it with another value.
fn enabled_label(
    input: &PassInput<'_, '_>,
    nc: &NodeClaims,
) -> Result<Option<Write>, Vec<(super::index::ConfigIx, ConfigConflict)>> {
    let ix = &input.index;
    let meta = ix.node(nc.node);
    let node_name = ix.node_name(nc.node);
    let value_ok = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(NODE_ENABLED_LABEL))
        .map(String::as_str)
        == Some("true");
    let mut managers: BTreeSet<String> = BTreeSet::new();
    if !input.settings.force_conflicts {
        if !value_ok {
            managers.extend(ssa::other_owners(
                meta,
                &ssa::enabled_label_path(),
                CONTROLLER_MANAGER,
            ));
        }
        for fc in ix.server_conflicts(Kind::Node, node_name, meta.resource_version.as_deref()) {
            managers.insert(fc.manager.clone());
        }
    }
    if !managers.is_empty() {
        let mut conflicts = Vec::new();
        for m in managers {
            for &c in &nc.configs {
                let msg = format!(
                    "node {node_name}: field manager {m:?} owns label {NODE_ENABLED_LABEL} with a different value; not overwritten (run with --force-conflicts to take it over)"
                );
                conflicts.push((
                    c,
                    ConfigConflict {
                        reason: reason::FIELD_MANAGER_CONFLICT.into(),
                        message: msg,
                        node: Some(node_name.into()),
                        manager: Some(m.clone()),
                        ..Default::default()
                    },
                ));
            }
        }
        return Err(conflicts);
    }
    let write = (!value_ok || !ix.owned_label(nc.node)).then(|| Write::SetNodeLabel {
        node: node_name.to_string(),
        uid: meta.uid.clone().unwrap_or_default(),
        force: input.settings.force_conflicts,
    });
    Ok(write)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{DpdkDriver, EffectiveDriverOptions};
    use crate::plan::Settings;
    use crate::plan::claims::Claim;
    use crate::plan::index::{ConfigIx, EniIx, PerConfig};
    use crate::plan::tests::{Objects, RES2, config, eni, node, pass, set_owner};

    fn claim(device_index: i32, eni: usize, eni_id: Option<&str>) -> Claim {
        Claim {
            device_index,
            resource_name: RES2.into(),
            driver: DpdkDriver::VfioPci,
            configs: vec![ConfigIx(0)],
            target: Some((EniIx(eni), eni_id.map(str::to_string))),
        }
    }

    fn claims_on_n1(claims: Vec<Claim>) -> Claims {
        Claims::new(
            PerConfig::from(vec![vec![NodeIx(0)]]),
            vec![NodeClaims {
                node: NodeIx(0),
                configs: vec![ConfigIx(0)],
                options: EffectiveDriverOptions::default(),
                claims,
            }],
            Conflicts::none(1),
        )
    }

    fn objects() -> Objects {
        Objects {
            configs: vec![config("c", 0, &[("ng", "x")], &[(2, RES2), (3, RES2)])],
            nodes: vec![node("n1", &[("ng", "x")])],
            enis: vec![
                eni("e2", &[("ng", "x")], 2, 1),
                eni("e3", &[("ng", "x")], 3, 1),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_desired_spec_lists_the_usable_claims_and_the_node_gets_its_label() {
        let objects = objects();
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let claims = claims_on_n1(vec![claim(2, 0, Some("eni-1")), claim(3, 1, None)]);
        let mut enis = NodeEnis::none(1);
        enis.usable.insert(EniIx(0), true);
        enis.usable.insert(EniIx(1), false);
        let out = node_states(&input, &claims, &enis);
        let spec = DPDKNodeStateSpec {
            driver_options: EffectiveDriverOptions::default(),
            devices: vec![DesiredDevice {
                device_index: 2,
                node_eni: "e2".into(),
                eni_id: Some("eni-1".into()),
                pci_address: None,
                resource_name: RES2.into(),
                driver: DpdkDriver::VfioPci,
            }],
            configs: vec!["c".into()],
            revision: None,
        };
        assert_eq!(out.desired.get(&NodeIx(0)), Some(&spec));
        assert_eq!(
            out.writes,
            vec![
                Write::ApplyNodeState {
                    node: "n1".into(),
                    spec,
                    teardown_since: None,
                    rollout: Default::default(),
                },
                Write::SetNodeLabel {
                    node: "n1".into(),
                    uid: "uid-n1".into(),
                    force: false,
                },
            ]
        );
        assert!(out.conflicts[ConfigIx(0)].is_empty());
    }

    #[test]
    fn another_managers_enabled_label_is_a_conflict_not_a_write() {
        let mut objects = objects();
        let n1 = &mut objects.nodes[0];
        n1.labels
            .get_or_insert_with(Default::default)
            .insert(NODE_ENABLED_LABEL.into(), "false".into());
        set_owner(
            n1,
            "someone",
            json!({"f:metadata": {"f:labels": {format!("f:{NODE_ENABLED_LABEL}"): {}}}}),
        );
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let claims = claims_on_n1(vec![claim(2, 0, None)]);
        let mut enis = NodeEnis::none(1);
        enis.usable.insert(EniIx(0), true);
        let out = node_states(&input, &claims, &enis);
        assert!(
            !out.writes
                .iter()
                .any(|w| matches!(w, Write::SetNodeLabel { .. }))
        );
        let k = &out.conflicts[ConfigIx(0)];
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].reason, reason::FIELD_MANAGER_CONFLICT);
        assert_eq!(k[0].manager.as_deref(), Some("someone"));
    }
}
