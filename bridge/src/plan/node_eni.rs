//! Phase 2, NodeENIs: per NodeENI some claim targets, one set of values (the oldest
//! config's), then the checks that block an update (a selector reaching unmatched nodes,
//! a partly mapped multi-subnet NodeENI, another field manager's value), and the apply.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::claims::{ClaimRef, Claims};
use super::index::{ConfigIx, Conflicts, EniIx, Index, NodeIx, PerConfig};
use super::{Kind, PassInput, Write, list_names, reason};
use crate::api::{ConfigConflict, DpdkDriver};
use crate::labels::CONTROLLER_MANAGER;
use crate::ssa::{self, DpdkFields};

/// The output of the NodeENI phase.
pub(crate) struct NodeEnis {
    /// NodeENIs some claim targets, with the claims targeting each.
    pub(crate) claimed: BTreeMap<EniIx, Vec<ClaimRef>>,
    /// Whether a targeted NodeENI's devices may be listed on nodes: driven by us, or
    /// blocked but already saying exactly what we would write.
    pub(crate) usable: HashMap<EniIx, bool>,
    /// Claims dropped because an older config won their NodeENI's values.
    pub(crate) dropped: HashSet<ClaimRef>,
    /// The NodeENIs each config drives (applied, not blocked).
    pub(crate) driven_by: PerConfig<BTreeSet<EniIx>>,
    /// `ApplyNodeEni` writes.
    pub(crate) writes: Vec<Write>,
    pub(crate) conflicts: Conflicts,
    pub(crate) driven: usize,
    pub(crate) conflicted: usize,
}

impl NodeEnis {
    /// No NodeENI claimed.
    pub(crate) fn none(n_configs: usize) -> Self {
        Self {
            claimed: BTreeMap::new(),
            usable: HashMap::new(),
            dropped: HashSet::new(),
            driven_by: PerConfig::filled(n_configs, BTreeSet::new()),
            writes: Vec::new(),
            conflicts: Conflicts::none(n_configs),
            driven: 0,
            conflicted: 0,
        }
    }

    /// The claim's device goes in the node's DPDKNodeState.
    pub(crate) fn device_usable(&self, r: ClaimRef, e: EniIx) -> bool {
        !self.dropped.contains(&r) && self.usable.get(&e).copied().unwrap_or(false)
    }
}

/// The values a NodeENI is given: those of the oldest config claiming it.
struct Winner {
    resource_name: String,
    driver: DpdkDriver,
    config: ConfigIx,
}

/// One targeted NodeENI while its checks run.
struct EniCase<'p> {
    e: EniIx,
    name: &'p str,
    winner: Winner,
    /// The claims that agree with the winner.
    kept: Vec<ClaimRef>,
    /// The configs behind `kept`.
    configs: BTreeSet<ConfigIx>,
}

/// Runs the phase.
pub(crate) fn node_enis(input: &PassInput<'_, '_>, claims: &Claims) -> NodeEnis {
    let ix = &input.index;
    let mut claimed: BTreeMap<EniIx, Vec<ClaimRef>> = BTreeMap::new();
    for (r, e) in claims.targeted() {
        claimed.entry(e).or_default().push(r);
    }
    let mut out = NodeEnis::none(ix.n_configs());
    for (&e, refs) in &claimed {
        let case = pick_winner(ix, claims, e, refs, &mut out);
        let reaches = reaches_unmatched_nodes(ix, claims, &case, &mut out.conflicts);
        let partial = partly_mapped(ix, claims, &case, &mut out.conflicts);
        let owned_by_others = other_managers(input, &case, &mut out.conflicts);
        decide(
            input,
            &case,
            reaches || partial || owned_by_others,
            &mut out,
        );
    }
    out.claimed = claimed;
    out
}

/// The oldest config's values win the NodeENI (it has one dpdkResourceName); claims
/// asking for other values are dropped, with a conflict for each config behind them.
fn pick_winner<'p>(
    ix: &Index<'_, 'p>,
    claims: &Claims,
    e: EniIx,
    refs: &[ClaimRef],
    out: &mut NodeEnis,
) -> EniCase<'p> {
    let eni_name = ix.eni_name(e);
    let winner_ref = *refs
        .iter()
        .min_by_key(|&&r| (claims.claim(r).configs[0], claims.claim(r).device_index))
        .unwrap_or(&refs[0]);
    let winner = {
        let cl = claims.claim(winner_ref);
        Winner {
            resource_name: cl.resource_name.clone(),
            driver: cl.driver,
            config: cl.configs[0],
        }
    };
    let mut kept: Vec<ClaimRef> = Vec::new();
    for &r in refs {
        let cl = claims.claim(r);
        if cl.resource_name == winner.resource_name && cl.driver == winner.driver {
            kept.push(r);
            continue;
        }
        let node_name = ix.node_name(r.node);
        let (d, res, drv) = (cl.device_index, &cl.resource_name, cl.driver);
        let (win_res, win_drv) = (&winner.resource_name, winner.driver);
        for &c in &cl.configs {
            let (why, other, msg) = if c == winner.config {
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
                    Some(ix.cname(winner.config).to_string()),
                    format!(
                        "NodeENI {eni_name} (node {node_name} deviceIndex {d}): older DPDKConfig {} sets it to {win_res} ({win_drv}); this config's {res} ({drv}) is not applied",
                        ix.cname(winner.config)
                    ),
                )
            };
            out.conflicts.add(
                c,
                ConfigConflict {
                    reason: why.into(),
                    message: msg,
                    node: Some(node_name.to_string()),
                    device_index: Some(d),
                    node_eni: Some(eni_name.to_string()),
                    other_config: other,
                    ..Default::default()
                },
            );
        }
        out.dropped.insert(r);
    }
    let configs = kept
        .iter()
        .flat_map(|&r| claims.claim(r).configs.iter().copied())
        .collect();
    EniCase {
        e,
        name: eni_name,
        winner,
        kept,
        configs,
    }
}

/// Its selector must not reach nodes outside the claiming configs' selectors.
fn reaches_unmatched_nodes(
    ix: &Index<'_, '_>,
    claims: &Claims,
    case: &EniCase<'_>,
    conflicts: &mut Conflicts,
) -> bool {
    let inside: HashSet<NodeIx> = case
        .configs
        .iter()
        .flat_map(|&c| claims.matched[c].iter().copied())
        .collect();
    let outside: Vec<&str> = ix
        .eni_reach(case.e)
        .into_iter()
        .filter(|n| !inside.contains(n))
        .map(|n| ix.node_name(n))
        .collect();
    if outside.is_empty() {
        return false;
    }
    for &c in &case.configs {
        let msg = format!(
            "NodeENI {} also selects node(s) outside this config's nodeSelector ({}); enabling DPDK on it would bind them too, so it is not updated",
            case.name,
            list_names(&outside, 5)
        );
        conflicts.add(
            c,
            ConfigConflict {
                reason: reason::SELECTOR_REACHES_UNMATCHED_NODES.into(),
                message: msg,
                node: Some(outside[0].to_string()),
                node_eni: Some(case.name.to_string()),
                ..Default::default()
            },
        );
    }
    true
}

/// A multi-subnet NodeENI must be mapped at every index it has on each node.
fn partly_mapped(
    ix: &Index<'_, '_>,
    claims: &Claims,
    case: &EniCase<'_>,
    conflicts: &mut Conflicts,
) -> bool {
    let mut per_node: BTreeMap<NodeIx, (BTreeSet<i32>, BTreeSet<ConfigIx>)> = BTreeMap::new();
    for &r in &case.kept {
        let entry = per_node.entry(r.node).or_default();
        entry.0.insert(claims.claim(r).device_index);
        entry.1.extend(claims.claim(r).configs.iter().copied());
    }
    let mut blocked = false;
    for (n, (mapped, cfgs)) in per_node {
        let node_name = ix.node_name(n);
        let (has, _) = ix.eni_indexes(case.e, node_name);
        let missing: Vec<String> = has.difference(&mapped).map(|d| d.to_string()).collect();
        if missing.is_empty() {
            continue;
        }
        blocked = true;
        let has_s: Vec<String> = has.iter().map(|d| d.to_string()).collect();
        let mapped_s: Vec<String> = mapped.iter().map(|d| d.to_string()).collect();
        for c in cfgs {
            let msg = format!(
                "NodeENI {} has ENIs at deviceIndex {} on node {node_name} but only {} is mapped; enabling DPDK on it would also bind deviceIndex {}",
                case.name,
                has_s.join(","),
                mapped_s.join(","),
                missing.join(",")
            );
            conflicts.add(
                c,
                ConfigConflict {
                    reason: reason::PARTIAL_MULTI_SUBNET.into(),
                    message: msg,
                    node: Some(node_name.into()),
                    device_index: mapped.iter().next().copied(),
                    node_eni: Some(case.name.to_string()),
                    ..Default::default()
                },
            );
        }
    }
    blocked
}

/// Which of enableDPDK, dpdkDriver and dpdkResourceName already hold the winner's values.
fn live_ok(input: &PassInput<'_, '_>, case: &EniCase<'_>) -> [bool; 3] {
    let eni = input.index.eni(case.e);
    let w = &case.winner;
    [
        eni.spec.enable_dpdk == Some(true),
        eni.spec.dpdk_driver.as_deref() == Some(w.driver.as_str()),
        eni.spec.dpdk_resource_name.as_deref() == Some(w.resource_name.as_str()),
    ]
}

/// Another field manager holding one of our fields with a different value.
fn other_managers(
    input: &PassInput<'_, '_>,
    case: &EniCase<'_>,
    conflicts: &mut Conflicts,
) -> bool {
    if input.settings.force_conflicts {
        return false;
    }
    let eni = input.index.eni(case.e);
    let live_ok = live_ok(input, case);
    let mut managers: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, path) in ssa::NODEENI_PATHS.iter().enumerate() {
        if !live_ok[i] {
            for m in ssa::other_owners(&eni.metadata, path, CONTROLLER_MANAGER) {
                managers.insert((m, format!(".spec.{}", &path[1][2..])));
            }
        }
    }
    for fc in input.index.server_conflicts(
        Kind::NodeEni,
        case.name,
        eni.metadata.resource_version.as_deref(),
    ) {
        managers.insert((fc.manager.clone(), fc.field.clone()));
    }
    if managers.is_empty() {
        return false;
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (m, f) in &managers {
        by_manager.entry(m.as_str()).or_default().push(f.as_str());
    }
    for (m, fields) in by_manager {
        for &c in &case.configs {
            let msg = format!(
                "NodeENI {}: field manager {m:?} owns {} with a different value; not overwritten (run with --force-conflicts to take it over)",
                case.name,
                fields.join(", ")
            );
            conflicts.add(
                c,
                ConfigConflict {
                    reason: reason::FIELD_MANAGER_CONFLICT.into(),
                    message: msg,
                    node_eni: Some(case.name.to_string()),
                    manager: Some(m.to_string()),
                    ..Default::default()
                },
            );
        }
    }
    true
}

/// A blocked NodeENI is not updated, and its devices stay only if it already says exactly
/// this; otherwise it is driven, and applied unless in sync and owned.
fn decide(input: &PassInput<'_, '_>, case: &EniCase<'_>, blocked: bool, out: &mut NodeEnis) {
    let eni = input.index.eni(case.e);
    let in_sync = live_ok(input, case).iter().all(|ok| *ok);
    if blocked {
        out.usable.insert(case.e, in_sync);
        out.conflicted += 1;
        return;
    }
    out.usable.insert(case.e, true);
    out.driven += 1;
    for &c in &case.configs {
        out.driven_by[c].insert(case.e);
    }
    let owned = ssa::NODEENI_PATHS
        .iter()
        .all(|p| ssa::owned_by(&eni.metadata, CONTROLLER_MANAGER, p));
    if !in_sync || !owned {
        out.writes.push(Write::ApplyNodeEni {
            name: case.name.to_string(),
            uid: eni.metadata.uid.clone().unwrap_or_default(),
            fields: DpdkFields {
                driver: case.winner.driver,
                resource_name: case.winner.resource_name.clone(),
            },
            force: input.settings.force_conflicts,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DpdkDriver, EffectiveDriverOptions};
    use crate::plan::Settings;
    use crate::plan::claims::{Claim, NodeClaims};
    use crate::plan::tests::{Objects, RES2, config, eni, node, pass};

    const RES3: &str = "intel.com/intel_sriov_netdevice_3";

    fn claim(device_index: i32, resource: &str, config: usize, eni: usize) -> Claim {
        Claim {
            device_index,
            resource_name: resource.into(),
            driver: DpdkDriver::VfioPci,
            configs: vec![ConfigIx(config)],
            target: Some((EniIx(eni), None)),
        }
    }

    /// Node 0 claimed by the given configs, which select it and nothing else.
    fn claims_on_node_0(configs: usize, claims: Vec<Claim>) -> Claims {
        Claims::new(
            PerConfig::from(vec![vec![NodeIx(0)]; configs]),
            vec![NodeClaims {
                node: NodeIx(0),
                configs: (0..configs).map(ConfigIx).collect(),
                options: EffectiveDriverOptions::default(),
                claims,
            }],
            Conflicts::none(configs),
        )
    }

    #[test]
    fn a_claimed_nodeeni_in_reach_is_applied_with_the_claims_values() {
        let objects = Objects {
            configs: vec![config("c", 0, &[("ng", "x")], &[(2, RES2)])],
            nodes: vec![node("n1", &[("ng", "x")])],
            enis: vec![eni("e", &[("ng", "x")], 2, 1)],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let out = node_enis(&input, &claims_on_node_0(1, vec![claim(2, RES2, 0, 0)]));
        assert_eq!(
            out.writes,
            vec![Write::ApplyNodeEni {
                name: "e".into(),
                uid: "uid-e".into(),
                fields: DpdkFields {
                    driver: DpdkDriver::VfioPci,
                    resource_name: RES2.into(),
                },
                force: false,
            }]
        );
        assert_eq!(out.usable.get(&EniIx(0)), Some(&true));
        assert_eq!(out.driven_by[ConfigIx(0)], BTreeSet::from([EniIx(0)]));
        assert_eq!((out.driven, out.conflicted), (1, 0));
        let r = ClaimRef {
            node: NodeIx(0),
            claim: 0,
        };
        assert_eq!(out.claimed.get(&EniIx(0)), Some(&vec![r]));
        assert!(out.device_usable(r, EniIx(0)));
    }

    #[test]
    fn a_nodeeni_reaching_an_unmatched_node_is_blocked_and_not_applied() {
        let objects = Objects {
            configs: vec![config("c", 0, &[("ng", "x")], &[(2, RES2)])],
            nodes: vec![
                node("n1", &[("ng", "x"), ("pool", "a")]),
                node("n2", &[("pool", "a")]),
            ],
            enis: vec![eni("e", &[("pool", "a")], 2, 1)],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let out = node_enis(&input, &claims_on_node_0(1, vec![claim(2, RES2, 0, 0)]));
        assert!(out.writes.is_empty());
        assert_eq!(out.usable.get(&EniIx(0)), Some(&false), "not in sync");
        assert!(out.driven_by[ConfigIx(0)].is_empty());
        assert_eq!((out.driven, out.conflicted), (0, 1));
        let k = &out.conflicts[ConfigIx(0)];
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].reason, reason::SELECTOR_REACHES_UNMATCHED_NODES);
        assert_eq!(k[0].node.as_deref(), Some("n2"));
    }

    #[test]
    fn the_oldest_configs_values_win_a_nodeeni_and_the_other_claim_is_dropped() {
        // One two-subnet NodeENI (deviceIndex 2 and 3); the older config maps 2, the
        // younger maps 3 to another resource.
        let objects = Objects {
            configs: vec![
                config("old", 0, &[("ng", "x")], &[(2, RES2)]),
                config("young", 10, &[("ng", "x")], &[(3, RES3)]),
            ],
            nodes: vec![node("n1", &[("ng", "x")])],
            enis: vec![eni("e", &[("ng", "x")], 2, 2)],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let claims = claims_on_node_0(2, vec![claim(2, RES2, 0, 0), claim(3, RES3, 1, 0)]);
        let out = node_enis(&input, &claims);
        let dropped = ClaimRef {
            node: NodeIx(0),
            claim: 1,
        };
        assert_eq!(out.dropped, HashSet::from([dropped]));
        assert!(!out.device_usable(dropped, EniIx(0)));
        let young = &out.conflicts[ConfigIx(1)];
        assert_eq!(young.len(), 1);
        assert_eq!(young[0].reason, reason::OVERLAPPING_CONFIG);
        assert_eq!(young[0].other_config.as_deref(), Some("old"));
        // What is left maps deviceIndex 2 only: the NodeENI is partly mapped, so blocked.
        let old = &out.conflicts[ConfigIx(0)];
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].reason, reason::PARTIAL_MULTI_SUBNET);
        assert!(out.writes.is_empty());
        assert_eq!((out.driven, out.conflicted), (0, 1));
    }
}
