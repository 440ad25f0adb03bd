//! Phase 2, NodeENIs: per NodeENI some claim targets, one set of values (the oldest
//! config's), then the checks that block an update (a selector reaching unmatched nodes,
//! a partly mapped multi-subnet NodeENI, another field manager's value), and the apply.
//!
//! With [`Settings::enable_after_bound`](super::Settings) `enableDPDK` waits for the node
//! agents (see [`enablement`]): the AWS Multi-ENI Controller's ENI manager binds every
//! enabled attachment that does not say `dpdkBound`, so it must only ever see bound ones.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::claims::{ClaimRef, Claims};
use super::index::{ConfigIx, Conflicts, EniIx, Index, NodeIx, PerConfig};
use super::{Kind, PassInput, Write, list_names, reason};
use crate::api::{ConfigConflict, DpdkDriver, ENIAttachment, NodeENI};
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

/// Which of enableDPDK, dpdkDriver, dpdkResourceName and dpdkPCIAddress already hold what
/// this pass writes (a field it leaves out is fine as it is).
fn live_ok(input: &PassInput<'_, '_>, case: &EniCase<'_>) -> [bool; 4] {
    let eni = input.index.eni(case.e);
    let w = &case.winner;
    let en = enablement(input, eni);
    [
        !en.enable || eni.spec.enable_dpdk == Some(true),
        eni.spec.dpdk_driver.as_deref() == Some(w.driver.as_str()),
        eni.spec.dpdk_resource_name.as_deref() == Some(w.resource_name.as_str()),
        en.pci_address.is_none() || eni.spec.dpdk_pci_address == en.pci_address,
    ]
}

/// The attachment status the Multi-ENI Controller records once the ENI is attached.
pub(crate) const ATTACHED: &str = "attached";

/// What this pass writes to `enableDPDK` and `dpdkPCIAddress`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Enablement {
    pub(crate) enable: bool,
    pub(crate) pci_address: Option<String>,
}

/// Upstream's ENI manager (v1.3.8, `pkg/eni-manager/dpdk/coordinator.go`) binds every
/// `attached` attachment of an enabled NodeENI whose `dpdkBound` is not true, on every
/// node the NodeENI selects (it does not check `nodeID`).
fn upstream_would_bind(a: &ENIAttachment) -> bool {
    a.status.as_deref() == Some(ATTACHED) && a.dpdk_bound != Some(true)
}

/// The one BDF every attached attachment reports (the agents' `dpdkPCIAddress`); none
/// when some report none or they differ (upstream has one spec field for all nodes).
fn reported_pci_address(eni: &NodeENI) -> Option<String> {
    let mut attached = eni
        .status
        .iter()
        .flat_map(|s| s.attachments.iter())
        .filter(|a| a.status.as_deref() == Some(ATTACHED));
    let first = attached.next()?.dpdk_pci_address.clone()?;
    attached
        .all(|a| a.dpdk_pci_address.as_deref() == Some(first.as_str()))
        .then_some(first)
}

/// `enableDPDK` once no attachment is left for upstream to bind, and then for good (a stale
/// status Update erasing `dpdkBound` must not withdraw it); with it, `dpdkPCIAddress` set
/// to the agents' BDF unless someone else set one, so any upstream attempt targets the
/// device our agent already bound. Without `enable_after_bound`: enabled at once, no BDF.
pub(crate) fn enablement(input: &PassInput<'_, '_>, eni: &NodeENI) -> Enablement {
    if !input.settings.enable_after_bound {
        return Enablement {
            enable: true,
            pci_address: None,
        };
    }
    let ours = |path: &[&str; 2]| ssa::owned_by(&eni.metadata, CONTROLLER_MANAGER, path);
    let enabled = eni.spec.enable_dpdk == Some(true) && ours(&ssa::NODEENI_ENABLE_PATH);
    let all_bound = !eni
        .status
        .iter()
        .flat_map(|s| s.attachments.iter())
        .any(upstream_would_bind);
    let enable = enabled || all_bound;
    let pci_address = if ours(&ssa::NODEENI_PCI_PATH) {
        eni.spec.dpdk_pci_address.clone()
    } else if eni.spec.dpdk_pci_address.is_some() || !enable {
        None
    } else {
        reported_pci_address(eni)
    };
    Enablement {
        enable,
        pci_address,
    }
}

/// A `dpdkPCIAddress` someone else set (it goes in the DPDKNodeState for the agent to
/// check); the one the controller copied from the agents' reports is not fed back.
pub(crate) fn user_pci_address(eni: &NodeENI) -> Option<String> {
    let path = &ssa::NODEENI_PCI_PATH;
    let only_ours = ssa::owned_by(&eni.metadata, CONTROLLER_MANAGER, path)
        && ssa::other_owners(&eni.metadata, path, CONTROLLER_MANAGER).is_empty();
    if only_ours {
        None
    } else {
        eni.spec.dpdk_pci_address.clone()
    }
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
    let en = enablement(input, eni);
    // Ownership matches what the apply sends: a field it leaves out must not be ours.
    let sent = [
        (ssa::NODEENI_ENABLE_PATH, en.enable),
        (ssa::NODEENI_DRIVER_PATH, true),
        (ssa::NODEENI_RESOURCE_PATH, true),
        (ssa::NODEENI_PCI_PATH, en.pci_address.is_some()),
    ];
    let owned = sent
        .iter()
        .all(|(p, s)| ssa::owned_by(&eni.metadata, CONTROLLER_MANAGER, p) == *s);
    if !in_sync || !owned {
        out.writes.push(Write::ApplyNodeEni {
            name: case.name.to_string(),
            uid: eni.metadata.uid.clone().unwrap_or_default(),
            fields: DpdkFields {
                driver: case.winner.driver,
                resource_name: case.winner.resource_name.clone(),
                enable: en.enable,
                pci_address: en.pci_address,
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
    use crate::plan::tests::{Objects, RES2, attach, config, eni, entry, node, pass};
    use serde_json::json;

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
                    enable: true,
                    pci_address: None,
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

    const BDF: &str = "0000:00:06.0";

    /// The seed's shape with the agents' ordering on: NodeENI `e` attached to `n1` and
    /// `n2` at deviceIndex 2, each attachment bound (with `pci`) or not.
    fn after_bound(bound: &[Option<&str>]) -> (Objects, Settings) {
        let mut e = eni("e", &[("ng", "x")], 2, 1);
        for (i, pci) in bound.iter().enumerate() {
            attach(&mut e, &format!("n{}", i + 1), 2);
            let a = &mut e.status.as_mut().expect("status").attachments[i];
            a.dpdk_bound = pci.map(|_| true);
            a.dpdk_pci_address = pci.map(str::to_string);
        }
        let objects = Objects {
            configs: vec![config("c", 0, &[("ng", "x")], &[(2, RES2)])],
            nodes: vec![node("n1", &[("ng", "x")]), node("n2", &[("ng", "x")])],
            enis: vec![e],
            ..Default::default()
        };
        let settings = Settings {
            enable_after_bound: true,
            ..Settings::default()
        };
        (objects, settings)
    }

    fn both_nodes(claims: usize) -> Claims {
        let nodes = vec![NodeIx(0), NodeIx(1)];
        Claims::new(
            PerConfig::from(vec![nodes.clone(); claims]),
            nodes
                .iter()
                .map(|&n| NodeClaims {
                    node: n,
                    configs: vec![ConfigIx(0)],
                    options: EffectiveDriverOptions::default(),
                    claims: vec![claim(2, RES2, 0, 0)],
                })
                .collect(),
            Conflicts::none(claims),
        )
    }

    fn applied(objects: &Objects, settings: &Settings) -> Vec<DpdkFields> {
        let snap = objects.snapshot();
        let input = pass(&snap, settings);
        node_enis(&input, &both_nodes(1))
            .writes
            .into_iter()
            .filter_map(|w| match w {
                Write::ApplyNodeEni { fields, .. } => Some(fields),
                _ => None,
            })
            .collect()
    }

    fn fields(enable: bool, pci: Option<&str>) -> DpdkFields {
        DpdkFields {
            driver: DpdkDriver::VfioPci,
            resource_name: RES2.into(),
            enable,
            pci_address: pci.map(str::to_string),
        }
    }

    #[test]
    fn enable_dpdk_waits_until_every_attached_attachment_is_bound() {
        // n2's agent has not bound yet: upstream's ENI manager would bind it.
        let (objects, settings) = after_bound(&[Some(BDF), None]);
        assert_eq!(applied(&objects, &settings), vec![fields(false, None)]);
        // The same NodeENI with the old ordering: enabled at once, no BDF.
        let legacy = Settings::default();
        assert_eq!(applied(&objects, &legacy), vec![fields(true, None)]);
        // Both bound, on the same BDF: enabled, and the BDF written for upstream to see.
        let (objects, settings) = after_bound(&[Some(BDF), Some(BDF)]);
        assert_eq!(applied(&objects, &settings), vec![fields(true, Some(BDF))]);
        // Different BDFs on different nodes: one spec field cannot say both; none.
        let (objects, settings) = after_bound(&[Some(BDF), Some("0000:00:07.0")]);
        assert_eq!(applied(&objects, &settings), vec![fields(true, None)]);
    }

    #[test]
    fn an_attachment_not_attached_yet_does_not_hold_enable_dpdk() {
        let (mut objects, settings) = after_bound(&[Some(BDF), None]);
        let atts = &mut objects.enis[0].status.as_mut().expect("status").attachments;
        atts[1].status = Some("attaching".into());
        assert_eq!(applied(&objects, &settings), vec![fields(true, Some(BDF))]);
    }

    /// As the API server leaves the NodeENI after our apply of `f`.
    fn live_after(objects: &mut Objects, f: &DpdkFields) {
        let e = &mut objects.enis[0];
        e.spec.enable_dpdk = f.enable.then_some(true);
        e.spec.dpdk_driver = Some(f.driver.as_str().into());
        e.spec.dpdk_resource_name = Some(f.resource_name.clone());
        e.spec.dpdk_pci_address = f.pci_address.clone();
        let mut owned = json!({"f:dpdkDriver": {}, "f:dpdkResourceName": {}});
        if f.enable {
            owned["f:enableDPDK"] = json!({});
        }
        if f.pci_address.is_some() {
            owned["f:dpdkPCIAddress"] = json!({});
        }
        e.metadata.managed_fields = Some(vec![entry(CONTROLLER_MANAGER, json!({"f:spec": owned}))]);
    }

    #[test]
    fn a_stale_status_update_erasing_dpdk_bound_neither_withdraws_nor_rewrites() {
        let (mut objects, settings) = after_bound(&[Some(BDF), Some(BDF)]);
        live_after(&mut objects, &fields(true, Some(BDF)));
        assert!(applied(&objects, &settings).is_empty(), "converged");
        // Upstream's controller copies its in-memory status over ours: dpdk* are gone.
        for a in &mut objects.enis[0].status.as_mut().expect("status").attachments {
            a.dpdk_bound = None;
            a.dpdk_pci_address = None;
        }
        assert!(
            applied(&objects, &settings).is_empty(),
            "enableDPDK and the BDF stay as they are: no write"
        );
        // Waiting for the agents, the first apply leaves enableDPDK out; that is in sync too.
        let (mut waiting, settings) = after_bound(&[None, None]);
        live_after(&mut waiting, &fields(false, None));
        assert!(applied(&waiting, &settings).is_empty());
    }

    #[test]
    fn a_users_pci_address_is_kept_and_fed_to_the_agents_ours_is_not() {
        let (mut objects, settings) = after_bound(&[Some(BDF), Some(BDF)]);
        objects.enis[0].spec.dpdk_pci_address = Some("0000:00:09.0".into());
        objects.enis[0].metadata.managed_fields = Some(vec![entry(
            "platform-team",
            json!({"f:spec": {"f:dpdkPCIAddress": {}}}),
        )]);
        assert_eq!(applied(&objects, &settings), vec![fields(true, None)]);
        assert_eq!(
            user_pci_address(&objects.enis[0]).as_deref(),
            Some("0000:00:09.0")
        );
        live_after(&mut objects, &fields(true, Some(BDF)));
        assert_eq!(
            user_pci_address(&objects.enis[0]),
            None,
            "the agents' own BDF"
        );
    }
}
